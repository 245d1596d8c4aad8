//! The ingress half of the forwarding core: received datagrams in, TUN
//! writes out. A datagram (or a GRO run of them) is cut into datagrams,
//! each unwrapped by the wire format and checked by the ingress filter;
//! with TUN offloads, consecutive segments of one flow are coalesced into
//! a super-packet behind a virtio-net header. The engine writes what the
//! plan says, straight from its receive buffer, and reports how it went.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use super::ForwardingCore;
use super::clock::BatchTag;
use crate::datapath::format::{MAX_REPLY, Unwrapped, WireFormat};
use crate::datapath::offload::{CoalescePlan, PacketRef, complete_partial_checksum, is_super_packet, prepare_egress, super_packet_header};
use crate::datapath::packet::{self, NodeScope};
use crate::route::SubnetTable;
use crate::stats::latency::Direction;
use crate::stats::{DropReason, WorkerCounters, bump};
use crate::wire::arp::Arp;
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

/// A datagram the core answers with (an ARP reply, VXLAN): the engine
/// sends it to `to` from its socket right away.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub to: SocketAddr,
    bytes: [u8; MAX_REPLY],
    len: usize,
}

impl Reply {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Packets the core cut from an inner super-packet into a buffer of its
/// own (only without TUN offloads; allocated on first use).
#[derive(Debug, Default)]
pub(super) struct PendingWrites {
    buf: Vec<u8>,
    /// (offset, length) of each packet in `buf`.
    segments: Vec<(usize, usize)>,
}

impl PendingWrites {
    fn clear(&mut self) {
        self.segments.clear();
    }

    /// Cuts `pkt` as `hdr` describes (exact headers and checksums, as a
    /// TSO split); false when the header does not describe the packet.
    fn cut(&mut self, pkt: &[u8], hdr: &VnetHdr) -> bool {
        // Room for the packet and a header per extra segment (as a TUN
        // read buffer with offloads has).
        self.buf.resize(crate::datapath::offload::TUN_OFFLOAD_BUF_SIZE.max(pkt.len() * 2), 0);
        self.buf[..pkt.len()].copy_from_slice(pkt);
        match prepare_egress(&mut self.buf, 0, pkt.len(), hdr) {
            Ok(split) => {
                self.segments.extend((0..split.count).map(|i| split.segment(i)));
                true
            }
            Err(_) => false,
        }
    }
}

/// Ingress state reused from datagram to datagram.
#[derive(Debug, Default)]
pub(super) struct IngressScratch {
    accepted: Vec<PacketRef>,
    coalesce: CoalescePlan,
    pieces: Vec<Piece>,
    writes: Vec<TunWrite>,
    replies: Vec<Reply>,
    pending: PendingWrites,
}

impl IngressScratch {
    pub(super) fn with_capacity(packets: usize, trust_outer_checksum: bool) -> IngressScratch {
        IngressScratch {
            accepted: Vec::with_capacity(packets),
            coalesce: if trust_outer_checksum { CoalescePlan::trusting_checksums() } else { CoalescePlan::default() },
            pieces: Vec::with_capacity(packets),
            writes: Vec::with_capacity(packets),
            replies: Vec::with_capacity(4),
            pending: PendingWrites::default(),
        }
    }
}

impl<W: WireFormat> ForwardingCore<W> {
    /// One received datagram from `from`, whose payload is `buf[payload]`:
    /// a GRO run of `gro_segment`-byte datagrams when given (the last may be
    /// shorter), or one datagram holding an inner GSO super-packet. Plans
    /// the TUN writes to make and returns how many; each
    /// ([`tun_write`](Self::tun_write)) gathers pieces of `buf`
    /// ([`write_pieces`](Self::write_pieces)), which coalescing may have
    /// rewritten in place. Replies to send and packets to write at once
    /// may come with them ([`replies`](Self::replies),
    /// [`pending_writes`](Self::pending_writes)).
    pub fn ingress_datagram(&mut self, from: Option<SocketAddr>, buf: &mut [u8], payload: Range<usize>, gro_segment: Option<u16>) -> usize {
        self.begin_receive();
        let payload = payload.start.min(buf.len())..payload.end.min(buf.len());
        let Some(from) = from else {
            // An AF_INET/AF_INET6 socket always names the sender; count the impossible.
            WorkerCounters::drop(&self.counters, DropReason::UnknownSender);
            return 0;
        };
        if gro_segment.is_none() && is_super_packet(&buf[payload.clone()], W::HEADER_LEN, self.node.max_inner) {
            self.accept_super_packet(from, buf, payload);
        } else {
            self.accept_datagrams(from, &buf[payload.clone()], payload.start, gro_segment);
            if W::PARTIAL_CHECKSUMS {
                for p in &self.ingress.accepted {
                    complete_partial_checksum(&mut buf[p.offset..p.offset + p.len]);
                }
            }
            self.plan_writes(buf);
        }
        self.latency.batch(Direction::Ingress, self.ingress.accepted.len() as u64);
        self.ingress.writes.len()
    }

    /// Counts one receive and forgets the previous one's plan.
    fn begin_receive(&mut self) {
        bump(&self.counters.ingress_receives, 1);
        let s = &mut self.ingress;
        s.accepted.clear();
        s.pieces.clear();
        s.writes.clear();
        s.replies.clear();
        s.pending.clear();
    }

    /// Inner packets that another stage already took out of their
    /// datagrams and filtered (the WireGuard stage: opened, replay-checked,
    /// cryptokey-routed, destination checked), at `packets` in `buf`, in
    /// arrival order: plans their TUN writes as for any received run
    /// (coalesced behind virtio-net headers with TUN offloads). Returns how
    /// many writes, as [`ingress_datagram`](Self::ingress_datagram) does.
    pub fn ingress_accepted(&mut self, buf: &mut [u8], packets: &[Piece]) -> usize {
        self.begin_receive();
        let s = &mut self.ingress;
        s.accepted.extend(packets.iter().map(|p| PacketRef { offset: p.offset, len: p.len }));
        self.plan_writes(buf);
        self.latency.batch(Direction::Ingress, self.ingress.accepted.len() as u64);
        self.ingress.writes.len()
    }

    /// Unwraps and filters each datagram of a run that starts at `at` in the
    /// engine's buffer: accepted packets, replies, counted drops.
    fn accept_datagrams(&mut self, from: SocketAddr, run: &[u8], mut at: usize, gro_segment: Option<u16>) {
        let s = &mut self.ingress;
        for datagram in gro_segments(run, gro_segment) {
            let verdict = match self.format.unwrap(datagram) {
                Ok(Unwrapped::Packet(r)) => packet::check_ingress(from.ip(), &datagram[r.clone()], &self.table, &self.node)
                    .map(|()| s.accepted.push(PacketRef { offset: at + r.start, len: r.len() })),
                Ok(Unwrapped::ArpRequest(request)) => {
                    answer_arp(&self.format, &self.table, &self.node, from, &request).map(|reply| s.replies.push(reply))
                }
                Err(reason) => Err(reason),
            };
            if let Err(reason) = verdict {
                WorkerCounters::drop(&self.counters, reason);
            }
            at += datagram.len();
        }
    }

    /// One datagram holding an inner TCP super-packet (a kernel VTEP's TSO
    /// packet that crossed veth unsegmented; the socket gives no UDP_GRO
    /// size for it): filtered as one packet, then handed to the TUN whole to
    /// be cut to our MTU by the kernel (with offloads), or cut here into the
    /// core's own buffer and written at once (without).
    fn accept_super_packet(&mut self, from: SocketAddr, buf: &mut [u8], payload: Range<usize>) {
        let datagram = &buf[payload.clone()];
        let inner = match self.format.unwrap(datagram) {
            Ok(Unwrapped::Packet(r)) => packet::check_ingress(from.ip(), &datagram[r.clone()], &self.table, &self.node).map(|()| r),
            Ok(Unwrapped::ArpRequest(_)) => Err(DropReason::UnsupportedFrame),
            Err(reason) => Err(reason),
        };
        let r = match inner {
            Ok(r) => payload.start + r.start..payload.start + r.end,
            Err(reason) => return WorkerCounters::drop(&self.counters, reason),
        };
        let Some(hdr) = super_packet_header(&mut buf[r.clone()], self.node.max_inner) else {
            // A UDP super-packet: cut anywhere else than where its sender
            // meant, its datagrams would change. Larger than our MTU, it is
            // dropped like any packet too big.
            return WorkerCounters::drop(&self.counters, DropReason::TooBig);
        };
        let packets = (r.len() - usize::from(hdr.hdr_len)).div_ceil(usize::from(hdr.gso_size));
        let s = &mut self.ingress;
        s.accepted.push(PacketRef { offset: r.start, len: r.len() });
        if self.vnet_hdr {
            s.pieces.push(Piece { offset: r.start, len: r.len() });
            let (packets, inner_bytes) = (packets.min(usize::from(u16::MAX)) as u16, r.len() as u32);
            s.writes.push(TunWrite { vnet_hdr: Some(hdr.encode()), first_piece: 0, piece_count: 1, packets, inner_bytes });
        } else if !s.pending.cut(&buf[r], &hdr) {
            WorkerCounters::drop(&self.counters, DropReason::BadOffloadHeader);
        }
    }

    /// Turns the accepted packets into TUN writes: one each without
    /// offloads, else coalesced runs behind virtio-net headers.
    fn plan_writes(&mut self, buf: &mut [u8]) {
        let s = &mut self.ingress;
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
    }

    /// Packets the core cut itself (an inner super-packet, without TUN
    /// offloads), for the engine to write into the TUN at once, one
    /// [`pending_write`](Self::pending_write) each.
    pub fn pending_writes(&self) -> usize {
        self.ingress.pending.segments.len()
    }

    /// Pending packet `i`.
    pub fn pending_write(&self, i: usize) -> &[u8] {
        let (offset, len) = self.ingress.pending.segments[i];
        &self.ingress.pending.buf[offset..offset + len]
    }

    /// A pending packet was written with `result`.
    pub fn pending_written(&mut self, result: io::Result<usize>, now: Instant) {
        let tag = self.clock.current();
        let bytes = result.as_ref().map(|&n| n as u32).unwrap_or(0);
        self.tun_written(result, 1, bytes, tag, now);
    }

    /// The datagrams to answer the last received one with (ARP replies);
    /// the engine sends each and reports with [`reply_sent`](Self::reply_sent).
    pub fn replies(&self) -> usize {
        self.ingress.replies.len()
    }

    /// Reply `i` of the last received datagram.
    pub fn reply(&self, i: usize) -> Reply {
        self.ingress.replies[i]
    }

    /// A reply was sent with `result`.
    pub fn reply_sent(&mut self, result: io::Result<usize>) {
        match result {
            Ok(_) => bump(&self.counters.arp_replies, 1),
            Err(e) => {
                WorkerCounters::drop(&self.counters, DropReason::SendFailed);
                self.log.warn(|| format!("worker {}: sending an ARP reply failed: {e}", self.worker));
            }
        }
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

/// The reply to a peer VTEP's ARP request, if it may have one: the peer is
/// known, asks from an address in a subnet it owns (the anti-spoof rule of
/// the ingress filter) and for an address in ours; the answer goes to that
/// peer's endpoint.
fn answer_arp<W: WireFormat>(
    format: &W,
    table: &SubnetTable,
    node: &NodeScope,
    from: SocketAddr,
    request: &Arp,
) -> Result<Reply, DropReason> {
    if !table.is_known_sender(from.ip()) {
        return Err(DropReason::UnknownSender);
    }
    let to = match table.lookup(IpAddr::V4(request.sender_ip)) {
        Some(route) if route.endpoint.ip() == from.ip() => route.endpoint,
        _ => return Err(DropReason::SpoofedSource),
    };
    if !node.is_own(IpAddr::V4(request.target_ip)) {
        return Err(DropReason::WrongDestination);
    }
    let mut reply = Reply { to, bytes: [0; MAX_REPLY], len: 0 };
    reply.len = format.arp_reply(request, &mut reply.bytes).ok_or(DropReason::UnsupportedFrame)?;
    Ok(reply)
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
