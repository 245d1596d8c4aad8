//! The ingress half of the forwarding core: received datagrams in, TUN
//! writes out. A datagram (or a GRO run of them) is cut into datagrams,
//! each unwrapped by the wire format and checked by the ingress filter;
//! with TUN offloads, consecutive segments of one flow are coalesced into
//! a super-packet behind a virtio-net header. The engine writes what the
//! plan says, straight from its receive buffer, and reports how it went.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use super::ForwardingCore;
use super::clock::BatchTag;
use crate::datapath::format::WireFormat;
use crate::datapath::offload::{CoalescePlan, PacketRef};
use crate::datapath::packet;
use crate::stats::latency::Direction;
use crate::stats::{DropReason, WorkerCounters, bump};
use crate::wire::virtio::{VNET_HDR_LEN, VnetHdr};

/// A byte range of the engine's receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub offset: usize,
    pub len: usize,
}

/// One write into the TUN: an optional virtio-net header, then its pieces
/// ([`ForwardingCore::write_pieces`]) gathered into one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunWrite {
    /// Present exactly when the TUN expects a virtio-net header.
    pub vnet_hdr: Option<[u8; VNET_HDR_LEN]>,
    first_piece: usize,
    piece_count: usize,
    /// Inner packets the write carries (more than one when coalesced), and
    /// their bytes as received (a coalesced write is shorter by the headers
    /// it merged).
    pub packets: u16,
    pub inner_bytes: u32,
}

/// Ingress state reused from datagram to datagram.
#[derive(Debug, Default)]
pub(super) struct IngressScratch {
    accepted: Vec<PacketRef>,
    coalesce: CoalescePlan,
    pieces: Vec<Piece>,
    writes: Vec<TunWrite>,
}

impl IngressScratch {
    pub(super) fn with_capacity(packets: usize) -> IngressScratch {
        IngressScratch {
            accepted: Vec::with_capacity(packets),
            coalesce: CoalescePlan::default(),
            pieces: Vec::with_capacity(packets),
            writes: Vec::with_capacity(packets),
        }
    }
}

impl<W: WireFormat> ForwardingCore<W> {
    /// One received datagram from `from`, whose payload is `buf[payload]`:
    /// a GRO run of `gro_segment`-byte datagrams when given (the last may be
    /// shorter). Plans the TUN writes to make and returns how many; each
    /// ([`tun_write`](Self::tun_write)) gathers pieces of `buf`
    /// ([`write_pieces`](Self::write_pieces)), which coalescing may have
    /// rewritten in place.
    pub fn ingress_datagram(&mut self, from: Option<SocketAddr>, buf: &mut [u8], payload: Range<usize>, gro_segment: Option<u16>) -> usize {
        bump(&self.counters.ingress_receives, 1);
        let s = &mut self.ingress;
        s.accepted.clear();
        s.pieces.clear();
        s.writes.clear();
        let payload = payload.start.min(buf.len())..payload.end.min(buf.len());
        match from {
            Some(from) => {
                let mut at = payload.start;
                for datagram in gro_segments(&buf[payload.clone()], gro_segment) {
                    let inner = self.format.inner(datagram).and_then(|r| {
                        let inner = &datagram[r.clone()];
                        packet::check_ingress(from.ip(), inner, &self.table, &self.node).map(|()| r)
                    });
                    match inner {
                        Ok(r) => s.accepted.push(PacketRef { offset: at + r.start, len: r.len() }),
                        Err(reason) => WorkerCounters::drop(&self.counters, reason),
                    }
                    at += datagram.len();
                }
            }
            // An AF_INET/AF_INET6 socket always names the sender; count the impossible.
            None => WorkerCounters::drop(&self.counters, DropReason::UnknownSender),
        }
        self.latency.batch(Direction::Ingress, s.accepted.len() as u64);
        if !self.vnet_hdr {
            for p in &s.accepted {
                let at = s.pieces.len();
                s.pieces.push(Piece { offset: p.offset, len: p.len });
                s.writes.push(TunWrite { vnet_hdr: None, first_piece: at, piece_count: 1, packets: 1, inner_bytes: p.len as u32 });
            }
        } else if s.accepted.len() == 1 {
            // Nothing to coalesce with: skip the plan (it verifies checksums).
            let p = s.accepted[0];
            s.pieces.push(Piece { offset: p.offset, len: p.len });
            let hdr = Some(VnetHdr::default().encode());
            s.writes.push(TunWrite { vnet_hdr: hdr, first_piece: 0, piece_count: 1, packets: 1, inner_bytes: p.len as u32 });
        } else if !s.accepted.is_empty() {
            s.coalesce.plan(buf, &s.accepted, self.uso);
            for g in s.coalesce.groups() {
                let hdr = s.coalesce.finish_group(buf, &s.accepted, g);
                let start = s.pieces.len();
                let mut inner = 0;
                for (k, i) in s.coalesce.members(g).enumerate() {
                    let p = s.accepted[i];
                    // Later segments go in without their headers: the first
                    // packet's headers now describe the whole.
                    let skip = if k == 0 { 0 } else { usize::from(hdr.hdr_len) };
                    s.pieces.push(Piece { offset: p.offset + skip, len: p.len - skip });
                    inner += p.len;
                }
                s.writes.push(TunWrite {
                    vnet_hdr: Some(hdr.encode()),
                    first_piece: start,
                    piece_count: s.pieces.len() - start,
                    packets: g.count as u16,
                    inner_bytes: inner as u32,
                });
            }
        }
        s.writes.len()
    }

    /// Write `i` of the plan made by the last [`ingress_datagram`](Self::ingress_datagram).
    #[inline]
    pub fn tun_write(&self, i: usize) -> TunWrite {
        self.ingress.writes[i]
    }

    /// The byte ranges of the receive buffer that `write` gathers, in order.
    #[inline]
    pub fn write_pieces(&self, write: &TunWrite) -> &[Piece] {
        &self.ingress.pieces[write.first_piece..write.first_piece + write.piece_count]
    }

    /// A TUN write carrying `packets` inner packets (`inner_bytes` as
    /// received), submitted in batch `tag`, finished with `result` at `now`.
    pub fn tun_written(&mut self, result: io::Result<usize>, packets: u16, inner_bytes: u32, tag: BatchTag, now: Instant) {
        match result {
            Ok(_) => {
                bump(&self.counters.ingress_packets, u64::from(packets));
                bump(&self.counters.ingress_bytes, u64::from(inner_bytes));
                if let Some(elapsed) = self.clock.since(tag, now) {
                    self.latency.latency(Direction::Ingress, elapsed, u64::from(packets));
                }
            }
            Err(e) => {
                self.drop_packets(DropReason::TunWriteFailed, u64::from(packets));
                self.log.warn(|| format!("worker {}: TUN write failed: {e}", self.worker));
            }
        }
    }

    /// A TUN write that could not even be submitted (no free write slot).
    pub fn tun_write_abandoned(&mut self, packets: u16) {
        self.drop_packets(DropReason::TunWriteFailed, u64::from(packets));
        self.log.warn(|| format!("worker {}: no free TUN write slot; {packets} packets dropped", self.worker));
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
