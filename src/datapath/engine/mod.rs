//! The three I/O engines behind one worker interface. Each takes a
//! [`WorkerContext`](super::worker::WorkerContext) and loops until the stop
//! flag is set, using [`Forwarder`] for every per-packet decision so that
//! all engines forward, filter and count identically.
//!
//! - `uring`: io_uring, batched TUN reads and writes, multishot receive with
//!   a provided-buffer ring, GSO sends.
//! - `mmsg`: epoll + `recvmmsg` (GRO) + GSO `sendmsg`, one `read`/`write` per
//!   TUN packet (a TUN has no batched syscall without io_uring).
//! - `classic`: `poll` + one `read`/`sendto`/`recv`/`write` per packet, as
//!   flannel's proxy does: the baseline.

pub mod classic;
pub mod mmsg;
pub mod uring;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use crate::datapath::batch::flow_key;
use crate::datapath::offload::{Split, prepare_egress};
use crate::datapath::packet::{self, Egress, NodeScope};
use crate::route::SubnetTable;
use crate::stats::{DropReason, WorkerCounters, bump};
use crate::sys;
use crate::wire::icmp;
use crate::wire::virtio::{GSO_NONE, VNET_HDR_LEN, VnetHdr};

/// How long a worker blocks waiting for I/O before checking its stop flag.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Largest TUN packet and receive payload a buffer must hold (64 KiB
/// super-packets, for TUN offloads and UDP GRO runs).
pub const BUF_SIZE: usize = 65_536;
/// A TUN read buffer with offloads: virtio header, a 64 KiB super-packet and
/// room for the headers the in-place split adds (a segment size of 536, the
/// IPv4 minimum MSS, needs 123 extra headers of up to 120 bytes).
pub const TUN_OFFLOAD_BUF_SIZE: usize = 96 * 1024;

/// ICMP errors per second per worker, as routers rate-limit them
/// (RFC 1812 §4.3.2.8); with a burst allowance.
const ICMP_PER_SECOND: u32 = 1000;
const ICMP_BURST: u32 = 100;

/// The per-packet work shared by all engines: classify egress (answering
/// with ICMP where a router would), filter ingress, count everything.
pub struct Forwarder<'a> {
    pub node: NodeScope,
    pub counters: &'a WorkerCounters,
    /// TUN reads and writes carry a virtio-net header.
    vnet_hdr: bool,
    /// A zeroed virtio-net header followed by room for an ICMP error.
    icmp_buf: Box<[u8; VNET_HDR_LEN + icmp::MAX_ERROR_LEN]>,
    icmp_tokens: u32,
    icmp_refill: Instant,
    log_limit: LogLimiter,
}

impl<'a> Forwarder<'a> {
    pub fn new(node: NodeScope, counters: &'a WorkerCounters, vnet_hdr: bool) -> Self {
        Forwarder {
            node,
            counters,
            vnet_hdr,
            icmp_buf: Box::new([0; VNET_HDR_LEN + icmp::MAX_ERROR_LEN]),
            icmp_tokens: ICMP_BURST,
            icmp_refill: Instant::now(),
            log_limit: LogLimiter::default(),
        }
    }

    /// Decides one TUN packet (a GSO super-packet when `gso`). Returns the
    /// peer to send it to, or handles the rejection (count, ICMP written
    /// synchronously to `tun`) and returns None.
    #[inline]
    pub fn egress(&mut self, table: &SubnetTable, pkt: &mut [u8], tun: BorrowedFd<'_>, gso: bool) -> Option<SocketAddr> {
        match packet::classify_egress(pkt, table, &self.node, gso) {
            Egress::Forward(to) => Some(to),
            Egress::Reject { reason, icmp } => {
                self.counters.drop(reason);
                if let Some(kind) = icmp {
                    self.send_icmp(kind, pkt, tun);
                }
                None
            }
        }
    }

    #[cold]
    fn send_icmp(&mut self, kind: icmp::IcmpError, offending: &[u8], tun: BorrowedFd<'_>) {
        let now = Instant::now();
        let elapsed_ms = now.duration_since(self.icmp_refill).as_millis() as u64;
        if elapsed_ms > 0 {
            let add = (elapsed_ms * u64::from(ICMP_PER_SECOND) / 1000) as u32;
            if add > 0 {
                self.icmp_tokens = (self.icmp_tokens + add).min(ICMP_BURST);
                self.icmp_refill = now;
            }
        }
        if self.icmp_tokens == 0 {
            return;
        }
        if let Some(n) = packet::icmp_reply(kind, offending, &mut self.icmp_buf[VNET_HDR_LEN..]) {
            self.icmp_tokens -= 1;
            let start = if self.vnet_hdr { 0 } else { VNET_HDR_LEN };
            match sys::fd::write(tun, &self.icmp_buf[start..VNET_HDR_LEN + n]) {
                Ok(_) => bump(&self.counters.icmp_sent, 1),
                Err(e) => {
                    self.counters.drop(DropReason::TunWriteFailed);
                    self.log_limit.warn(|| format!("writing an ICMP error to the TUN failed: {e}"));
                }
            }
        }
    }

    /// Accepts one inner packet from `from` for the TUN, counting drops.
    #[inline]
    pub fn ingress_ok(&self, table: &SubnetTable, from: IpAddr, pkt: &[u8]) -> bool {
        match packet::check_ingress(from, pkt, table, &self.node) {
            Ok(()) => true,
            Err(reason) => {
                self.counters.drop(reason);
                false
            }
        }
    }

    /// Logs at most one warning per second per worker.
    pub fn warn(&mut self, message: impl FnOnce() -> String) {
        self.log_limit.warn(message);
    }
}

/// Classifies one TUN read (`len` bytes at the start of `whole`), splitting a
/// super-packet in place, and reports each packet to send as (offset, len, peer).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn egress_one(
    fwd: &mut Forwarder<'_>,
    table: &crate::route::SubnetTable,
    whole: &mut [u8],
    len: usize,
    vnet: bool,
    max_inner: usize,
    tun: std::os::fd::BorrowedFd<'_>,
    mut emit: impl FnMut(usize, usize, SocketAddr, u16),
) {
    if !vnet {
        if let Some(to) = fwd.egress(table, &mut whole[..len], tun, false) {
            emit(0, len, to, flow_key(&whole[..len]));
        }
        return;
    }
    let Some(hdr) = VnetHdr::decode(&whole[..len]) else {
        fwd.counters.drop(DropReason::Truncated);
        return;
    };
    let gso = hdr.gso_kind() != GSO_NONE;
    let Some(to) = fwd.egress(table, &mut whole[VNET_HDR_LEN..len], tun, gso) else { return };
    // Every segment of a super-packet belongs to its flow.
    let flow = flow_key(&whole[VNET_HDR_LEN..len]);
    let split: Split = match prepare_egress(whole, VNET_HDR_LEN, len - VNET_HDR_LEN, &hdr) {
        Ok(s) => s,
        Err(_) => {
            fwd.counters.drop(DropReason::BadOffloadHeader);
            return;
        }
    };
    if split.count > 1 && split.stride > max_inner {
        drop_n(fwd.counters, DropReason::TooBig, split.count as u64);
        return;
    }
    for i in 0..split.count {
        let (off, n) = split.segment(i);
        emit(off, n, to, flow);
    }
}

/// Adds `n` drops for `reason`.
pub fn drop_n(counters: &WorkerCounters, reason: DropReason, n: u64) {
    bump(&counters.drops[reason as usize], n);
}

/// Rate-limits a worker's warnings to one per second, counting the rest.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    #[cold]
    pub fn warn(&mut self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!("{} (and {} similar messages suppressed)", message(), self.suppressed);
        } else {
            log::warn!("{}", message());
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Splits a (possibly GRO-coalesced) payload into its datagrams. An empty
/// payload is one empty datagram (which the ingress filter then counts as
/// malformed), never nothing.
#[inline]
pub fn gro_segments(payload: &[u8], segment: Option<u16>) -> GroSegments<'_> {
    let size = match segment {
        Some(s) if s > 0 => usize::from(s),
        _ => payload.len().max(1),
    };
    GroSegments { rest: payload, size, first: true }
}

/// Iterator of [`gro_segments`].
pub struct GroSegments<'a> {
    rest: &'a [u8],
    size: usize,
    first: bool,
}

impl<'a> Iterator for GroSegments<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() && !std::mem::take(&mut self.first) {
            return None;
        }
        self.first = false;
        let (seg, rest) = self.rest.split_at(self.size.min(self.rest.len()));
        self.rest = rest;
        Some(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gro_split_keeps_a_short_tail() {
        let data: Vec<u8> = (0..250u8).collect();
        let parts: Vec<usize> = gro_segments(&data, Some(100)).map(<[u8]>::len).collect();
        assert_eq!(parts, vec![100, 100, 50]);
        assert_eq!(gro_segments(&data, None).count(), 1);
        assert_eq!(gro_segments(&data, Some(0)).count(), 1);
        assert_eq!(gro_segments(&[], None).collect::<Vec<_>>(), vec![&[] as &[u8]], "an empty datagram is still checked");
        assert_eq!(gro_segments(&data[..100], Some(100)).count(), 1);
    }
}
