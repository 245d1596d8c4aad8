//! The egress half of the forwarding core: TUN reads in, planned UDP sends
//! out. A read is classified (route, TTL, size; an ICMP error where a
//! router would send one), a TSO super-packet is split in place into
//! MTU-sized packets, and the batch is cut into GSO runs. The engine then
//! sends each run and reports how it went.

use std::io;
use std::time::Instant;

use super::ForwardingCore;
use super::clock::BatchTag;
use super::icmp::IcmpVerdict;
use crate::datapath::batch::{MAX_SEGMENTS, REGROUP_MAX_PACKETS, SendRun, group_by_flow, plan_runs};
use crate::datapath::format::{EncapHeader, WireFormat};
use crate::datapath::offload::prepare_egress;
use crate::datapath::packet::{self, Egress};
use crate::route::Route;
use crate::stats::latency::Direction;
use crate::stats::{DropReason, WorkerCounters, bump};
use crate::wire::flow::flow_key;
use crate::wire::virtio::{GSO_NONE, VNET_HDR_LEN, VnetHdr};

/// One inner packet to send: where its bytes lie in the engine's buffers
/// (an engine-defined buffer index and a range in that buffer), the route
/// it takes and its flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub buf: u32,
    pub offset: u32,
    pub len: u32,
    pub route: Route,
    pub flow: u16,
}

/// What became of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// Failed; its packets are counted as `send_failed`.
    Failed,
    /// The kernel refused GSO for this socket (a driver without it): the
    /// core sends unsegmented from now on. Nothing was counted yet: the
    /// engine either sends the run again datagram by datagram, or gives it
    /// up with [`ForwardingCore::send_abandoned`].
    GsoRefused,
}

/// Per-batch egress state, reused from batch to batch.
#[derive(Debug, Default)]
pub(super) struct EgressBatch {
    outgoing: Vec<Outgoing>,
    runs: Vec<SendRun>,
    reads: u64,
    /// [`group_by_flow`]'s sort keys and copy.
    order: Vec<u32>,
    regrouped: Vec<Outgoing>,
}

impl EgressBatch {
    pub(super) fn with_capacity(packets: usize) -> EgressBatch {
        EgressBatch {
            outgoing: Vec::with_capacity(packets),
            runs: Vec::with_capacity(packets),
            reads: 0,
            order: Vec::with_capacity(REGROUP_MAX_PACKETS),
            regrouped: Vec::with_capacity(REGROUP_MAX_PACKETS),
        }
    }
}

impl<W: WireFormat> ForwardingCore<W> {
    /// One TUN read of `len` bytes at the start of `buf`, the engine's buffer
    /// number `buf_id`. `buf` is the whole buffer: a super-packet is split in
    /// place into the room behind it. The packets to send are queued for
    /// [`plan_sends`](Self::plan_sends); the return value is an ICMP error
    /// to write back into the TUN, when the packet earned one.
    #[inline]
    pub fn egress_read(&mut self, buf_id: u32, buf: &mut [u8], len: usize) -> Option<&[u8]> {
        self.egress.reads += 1;
        let len = len.min(buf.len());
        let (start, offload) = if self.vnet_hdr {
            match VnetHdr::decode(&buf[..len]) {
                Some(hdr) => (VNET_HDR_LEN, Some(hdr)),
                None => {
                    WorkerCounters::drop(&self.counters, DropReason::Truncated);
                    return None;
                }
            }
        } else {
            (0, None)
        };
        let gso = offload.is_some_and(|h| h.gso_kind() != GSO_NONE);
        let route = match packet::classify_egress(&mut buf[start..len], &self.table, &self.node, gso) {
            Egress::Forward(route) => route,
            Egress::Reject { reason, icmp } => {
                WorkerCounters::drop(&self.counters, reason);
                let kind = icmp?;
                return match self.icmp.reply(kind, &buf[start..len], self.now) {
                    IcmpVerdict::Send(reply) => Some(reply),
                    IcmpVerdict::RateLimited => {
                        bump(&self.counters.icmp_rate_limited, 1);
                        None
                    }
                    IcmpVerdict::NotAllowed => None,
                };
            }
        };
        // Every segment of a super-packet belongs to the flow of its headers.
        let flow = flow_key(&buf[start..len]);
        let Some(hdr) = offload else {
            self.queue(Outgoing { buf: buf_id, offset: 0, len: len as u32, route, flow });
            return None;
        };
        let split = match prepare_egress(buf, start, len - start, &hdr) {
            Ok(split) => split,
            Err(_) => {
                WorkerCounters::drop(&self.counters, DropReason::BadOffloadHeader);
                return None;
            }
        };
        if split.count > 1 && split.stride > self.node.max_inner {
            self.drop_packets(DropReason::TooBig, split.count as u64);
            return None;
        }
        for i in 0..split.count {
            let (offset, n) = split.segment(i);
            self.queue(Outgoing { buf: buf_id, offset: offset as u32, len: n as u32, route, flow });
        }
        None
    }

    #[inline]
    fn queue(&mut self, packet: Outgoing) {
        self.egress.outgoing.push(packet);
    }

    /// Plans the sends for everything queued since the batch began: runs
    /// of one route, one flow and one segment size, each flow's packets in
    /// order (a batch whose short runs interleave flows is first grouped by
    /// flow: [`group_by_flow`]). Returns how many; each
    /// ([`run`](Self::run)) is one `sendmsg` of its packets
    /// ([`run_packets`](Self::run_packets)), GSO-segmented when
    /// [`SendRun::gso_segment`] says so.
    pub fn plan_sends(&mut self) -> usize {
        let e = &mut self.egress;
        e.runs.clear();
        let max_segments = if self.gso { MAX_SEGMENTS } else { 1 };
        let header = W::HEADER_LEN;
        if max_segments > 1 {
            group_by_flow(&mut e.outgoing, |o| o.flow, &mut e.order, &mut e.regrouped);
        }
        plan_runs(e.outgoing.iter().map(|o| (o.route.endpoint, header + o.len as usize, o.flow)), max_segments, &mut e.runs);
        self.latency.batch(Direction::Egress, e.reads);
        e.reads = 0;
        e.runs.len()
    }

    /// Run `i` of the plan.
    #[inline]
    pub fn run(&self, i: usize) -> SendRun {
        self.egress.runs[i]
    }

    /// The packets of `run`, in order.
    #[inline]
    pub fn run_packets(&self, run: &SendRun) -> &[Outgoing] {
        &self.egress.outgoing[run.first..run.first + run.count]
    }

    /// The flow of `run` (one run, one flow): picks the sender socket.
    #[inline]
    pub fn run_flow(&self, run: &SendRun) -> u16 {
        self.egress.outgoing[run.first].flow
    }

    /// The encapsulation header in front of every packet of `run`.
    #[inline]
    pub fn header_for(&self, run: &SendRun) -> EncapHeader {
        self.format.header(&self.egress.outgoing[run.first].route)
    }

    /// Forgets the batch's queued packets (their buffers may be reused).
    pub fn end_egress_batch(&mut self) {
        self.egress.outgoing.clear();
        self.egress.runs.clear();
    }

    /// A send of `packets` datagrams, GSO-segmented or not, submitted in
    /// batch `tag`, finished with `result` (bytes sent) at `now`.
    pub fn send_done(&mut self, result: io::Result<usize>, packets: usize, segmented: bool, tag: BatchTag, now: Instant) -> SendOutcome {
        match result {
            Ok(bytes) => {
                let inner = bytes.saturating_sub(packets * W::HEADER_LEN);
                bump(&self.counters.egress_packets, packets as u64);
                bump(&self.counters.egress_bytes, inner as u64);
                bump(&self.counters.egress_sends, 1);
                if let Some(elapsed) = self.clock.since(tag, now) {
                    self.latency.latency(Direction::Egress, elapsed, packets as u64);
                }
                SendOutcome::Sent
            }
            Err(e) if segmented && self.gso && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                log::warn!("worker {}: UDP GSO refused ({e}); sending datagrams one by one from now on", self.worker);
                self.gso = false;
                SendOutcome::GsoRefused
            }
            Err(e) => {
                self.drop_packets(DropReason::SendFailed, packets as u64);
                self.log.warn(|| format!("worker {}: UDP send failed: {e}", self.worker));
                SendOutcome::Failed
            }
        }
    }

    /// Packets that could not even be submitted (no free send slot), or a
    /// run refused for GSO that the engine cannot send again.
    pub fn send_abandoned(&mut self, packets: usize, why: &str) {
        self.drop_packets(DropReason::SendFailed, packets as u64);
        self.log.warn(|| format!("worker {}: {packets} packets dropped: {why}", self.worker));
    }

    /// An ICMP error returned by [`egress_read`](Self::egress_read) was
    /// written into the TUN with `result`.
    pub fn icmp_written(&mut self, result: io::Result<usize>) {
        match result {
            Ok(_) => bump(&self.counters.icmp_sent, 1),
            Err(e) => {
                WorkerCounters::drop(&self.counters, DropReason::TunWriteFailed);
                self.log.warn(|| format!("worker {}: writing an ICMP error to the TUN failed: {e}", self.worker));
            }
        }
    }
}
