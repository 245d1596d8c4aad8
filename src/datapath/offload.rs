//! TUN offloads, pure: splitting the GSO super-packets a TUN with
//! `IFF_VNET_HDR` hands us into MTU-sized packets (egress), finishing
//! partial checksums, and coalescing runs of received segments back into
//! super-packets for one TUN write (ingress). No I/O, no allocation once
//! warm; untrusted headers give an [`OffloadError`], never a panic.
//!
//! Each datagram on the wire still carries exactly one ≤ MTU inner packet, so
//! peers without offloads (flannel's proxy, encapd with `offload = "off"`)
//! interoperate.

use crate::wire::checksum;
use crate::wire::ip::{IpPacket, PROTO_TCP, PROTO_UDP};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::virtio::{F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};

/// A virtio-net header that does not describe the packet behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("checksum offsets outside the packet")]
    ChecksumRange,
    #[error("GSO packet with segment size 0 or no payload")]
    EmptySegments,
    #[error("GSO type does not match the packet")]
    TypeMismatch,
    #[error("split segments do not fit the buffer")]
    TooLarge,
    #[error("unknown GSO type")]
    UnknownType,
}

use crate::wire::tcp::flags::{ACK as TCP_ACK, CWR as TCP_CWR, FIN as TCP_FIN, PSH as TCP_PSH};

/// Largest header block (IPv4 with options + TCP with options) we copy.
const MAX_HEADERS: usize = ipv4::MAX_HEADER_LEN + tcp::MAX_HEADER_LEN;
/// Most segments merged into one TUN write (as kernel GRO).
pub const MAX_COALESCE: usize = 64;
/// Largest TUN packet and receive payload a buffer must hold (64 KiB
/// super-packets, for TUN offloads and UDP GRO runs).
pub const BUF_SIZE: usize = 65_536;
/// A buffer a super-packet is split in: virtio header, a 64 KiB
/// super-packet and room for the headers the in-place split adds (a segment
/// size of 536, the IPv4 minimum MSS, needs 123 extra headers of up to 120
/// bytes).
pub const TUN_OFFLOAD_BUF_SIZE: usize = 96 * 1024;

/// Finishes a `NEEDS_CSUM` checksum: the field at `start + offset` holds
/// the pseudo-header sum; the sum over `pkt[start..]` completes it. A
/// result of 0 is written as 0xFFFF, as the kernel's `skb_checksum_help`
/// does: the same value in ones' complement for every checksum that
/// verifies by summing, and the only right one for UDP, where a zero field
/// means "no checksum" (RFC 768) and over IPv6 is dropped (RFC 8200 §8.1).
pub fn finish_partial_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start.checked_add(offset).filter(|f| f + 2 <= pkt.len()).ok_or(OffloadError::ChecksumRange)?;
    let sum = match checksum::checksum(&pkt[start..]) {
        0 => 0xFFFF,
        sum => sum,
    };
    pkt[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Layout of the IP and transport headers of a packet, from the views.
#[derive(Debug, Clone, Copy)]
struct Headers {
    v4: bool,
    ip_len: usize,
    proto: u8,
    l4_len: usize,
}

impl Headers {
    /// The IP view of `pkt`, whose headers these are.
    #[inline]
    fn ip<T: AsRef<[u8]>>(&self, pkt: T) -> IpPacket<T> {
        if self.v4 { IpPacket::V4(Ipv4Packet::new_unchecked(pkt)) } else { IpPacket::V6(Ipv6Packet::new_unchecked(pkt)) }
    }
}

/// The headers of a TCP or UDP packet that the views accept whole: an IP
/// header whose length field spans exactly the bytes present (as
/// `ip::parse` requires of every packet the data path forwards), not an
/// IPv4 fragment (its transport checksum covers bytes of other packets, and
/// only a whole datagram can be cut or merged), then a TCP header of at
/// least 20 bytes or a UDP header whose length is the rest. Anything else
/// is not offloaded.
#[inline]
fn headers(pkt: &[u8]) -> Option<Headers> {
    let ip = IpPacket::new_checked(pkt).ok().filter(|ip| ip.total_len() == pkt.len() && !ip.is_fragment())?;
    let l4 = ip.payload();
    let l4_len = match ip.protocol() {
        PROTO_TCP => TcpPacket::new_checked(l4).ok()?.header_len(),
        // Exact, as kernel GRO wants it: a UDP length short of the IP
        // payload would leave bytes that no checksum covered, and a merge
        // would make them payload. Nor 0, which the view (like etherparse)
        // reads as "the rest" (RFC 2675 jumbograms): no packet of 64 KiB
        // or less may carry it, and IPv4 receivers drop it.
        PROTO_UDP => UdpPacket::new_checked(l4).ok().filter(|u| usize::from(u.len()) == l4.len()).map(|_| udp::HEADER_LEN)?,
        _ => return None,
    };
    Some(Headers { v4: ip.is_ipv4(), ip_len: ip.header_len(), proto: ip.protocol(), l4_len })
}

/// True when the transport checksum of a complete packet verifies (an IPv4
/// UDP checksum of 0 means "none" and passes).
#[inline]
fn l4_checksum_valid(pkt: &[u8], h: &Headers) -> bool {
    let pseudo = h.ip(pkt).pseudo_header();
    let l4 = &pkt[h.ip_len..];
    if h.proto == PROTO_TCP {
        TcpPacket::new_unchecked(l4).verify_checksum(&pseudo)
    } else {
        UdpPacket::new_unchecked(l4).verify_checksum(&pseudo)
    }
}

/// Where the segments of a split super-packet lie in the buffer: `count`
/// packets at `start + i * stride`, each `stride` long but the last
/// (`last_len`). Exactly the layout one UDP GSO send with segment size
/// `stride` wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub start: usize,
    pub stride: usize,
    pub count: usize,
    pub last_len: usize,
}

impl Split {
    /// Offset and length of segment `i`.
    pub fn segment(&self, i: usize) -> (usize, usize) {
        let len = if i + 1 == self.count { self.last_len } else { self.stride };
        (self.start + i * self.stride, len)
    }

    /// A packet that needed no split.
    pub fn single(start: usize, len: usize) -> Split {
        Split { start, stride: len, count: 1, last_len: len }
    }
}

/// Prepares the packet at `buf[start..start + len]` described by `hdr` for
/// sending: a plain packet gets its partial checksum finished; a GSO
/// super-packet is cut, in place, into segments with their own IP and
/// transport headers (lengths, IPv4 ID and checksum, TCP sequence numbers,
/// FIN/PSH only on the last and CWR only on the first segment, full
/// transport checksums). `buf.len()` is the room available: the split adds
/// one header per extra segment. A super-packet whose headers the views do
/// not accept whole (lengths that disagree with the bytes, a TCP header
/// below 20 bytes, an IPv4 fragment) is a [`OffloadError::TypeMismatch`].
pub fn prepare_egress(buf: &mut [u8], start: usize, len: usize, hdr: &VnetHdr) -> Result<Split, OffloadError> {
    let end = start.checked_add(len).filter(|&e| e <= buf.len()).ok_or(OffloadError::TooLarge)?;
    let kind = hdr.gso_kind();
    if kind == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            finish_partial_checksum(&mut buf[start..end], usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
        }
        return Ok(Split::single(start, len));
    }
    let h = headers(&buf[start..end]).ok_or(OffloadError::TypeMismatch)?;
    let type_ok = match kind {
        GSO_TCPV4 => h.v4 && h.proto == PROTO_TCP,
        GSO_TCPV6 => !h.v4 && h.proto == PROTO_TCP,
        GSO_UDP_L4 => h.proto == PROTO_UDP,
        _ => return Err(OffloadError::UnknownType),
    };
    if !type_ok {
        return Err(OffloadError::TypeMismatch);
    }
    if hdr.flags & F_NEEDS_CSUM != 0 && usize::from(hdr.csum_start) != h.ip_len {
        return Err(OffloadError::ChecksumRange);
    }
    let head = h.ip_len + h.l4_len;
    if head > MAX_HEADERS {
        return Err(OffloadError::TooLarge);
    }
    let payload = len - head;
    let g = usize::from(hdr.gso_size);
    if g == 0 || payload == 0 {
        return Err(OffloadError::EmptySegments);
    }
    let count = payload.div_ceil(g);
    if start + count * head + payload > buf.len() {
        return Err(OffloadError::TooLarge);
    }
    let mut tmpl = [0u8; MAX_HEADERS];
    tmpl[..head].copy_from_slice(&buf[start..start + head]);
    let id0 = if h.v4 { Ipv4Packet::new_unchecked(&tmpl[..]).ident() } else { 0 };
    let seq0 = if h.proto == PROTO_TCP { TcpPacket::new_unchecked(&tmpl[h.ip_len..head]).seq_number() } else { 0 };
    let stride = head + g;
    for i in (0..count).rev() {
        let chunk = if i + 1 == count { payload - i * g } else { g };
        let seg = start + i * stride;
        // Move the payload up to make room for the headers before it.
        buf.copy_within(start + head + i * g..start + head + i * g + chunk, seg + head);
        let s = &mut buf[seg..seg + head + chunk];
        s[..head].copy_from_slice(&tmpl[..head]);
        let mut ip = h.ip(&mut *s);
        ip.set_total_len(head + chunk);
        if let IpPacket::V4(v4) = &mut ip {
            v4.set_ident(id0.wrapping_add(i as u16));
        }
        ip.fill_checksum();
        let pseudo = ip.pseudo_header();
        let l4 = ip.payload_mut();
        if h.proto == PROTO_TCP {
            let mut t = TcpPacket::new_unchecked(l4);
            t.set_seq_number(seq0.wrapping_add((i * g) as u32));
            let mut flags = t.flags();
            if i + 1 != count {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i != 0 {
                flags &= !TCP_CWR;
            }
            t.set_flags(flags);
            t.fill_checksum(&pseudo);
        } else {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_len((udp::HEADER_LEN + chunk) as u16);
            u.fill_checksum(&pseudo);
        }
    }
    Ok(Split { start, stride, count, last_len: head + (payload - (count - 1) * g) })
}

/// One packet of a receive batch, as a range of the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef {
    pub offset: usize,
    pub len: usize,
}

/// Completes the transport checksum of a received packet that carries only
/// its pseudo-header sum, as a kernel VTEP's packets do when they crossed
/// veth (the skb stayed `CHECKSUM_PARTIAL` from the sending socket on, and
/// a UDP socket hands it over as it is). Returns true when it did.
///
/// A packet whose checksum verifies, or that is not TCP or UDP, is left
/// alone; so is one whose checksum field is neither right nor exactly the
/// pseudo-header sum (it is corrupt: the kernel will drop it). Taking a
/// field equal to the pseudo-header sum for "partial" misreads a corrupt
/// packet with probability 2^-16, the strength of the checksum itself.
pub fn complete_partial_checksum(pkt: &mut [u8]) -> bool {
    let Some(h) = headers(pkt) else { return false };
    if l4_checksum_valid(pkt, &h) {
        return false;
    }
    let pseudo = h.ip(&*pkt).pseudo_header();
    let partial = pseudo.partial_checksum(pkt.len() - h.ip_len);
    let l4 = &mut pkt[h.ip_len..];
    if h.proto == PROTO_TCP {
        let mut t = TcpPacket::new_unchecked(l4);
        if t.checksum() != partial {
            return false;
        }
        t.fill_checksum(&pseudo);
    } else {
        let mut u = UdpPacket::new_unchecked(l4);
        if u.checksum() != partial {
            return false;
        }
        u.fill_checksum(&pseudo);
    }
    true
}

/// The virtio-net header that hands `pkt`, one inner TCP super-packet, to
/// the TUN to be cut into segments of at most `max_packet` bytes by the
/// kernel: what a kernel VTEP's TSO packet is when it crossed veth
/// unsegmented and a UDP socket delivered it whole. (The socket says
/// nothing about its segment size — the UDP_GRO size describes UDP GSO
/// only — so the segments are cut to fit our MTU, which the receiver's
/// MSS, derived from that MTU, admits.) The transport checksum field is set
/// to the pseudo-header sum, which the kernel completes per segment
/// (`NEEDS_CSUM`). `None` when it is not TCP — a UDP super-packet's
/// datagram boundaries are unknown, so it cannot be cut — or a fragment,
/// or has no room for a segment.
pub fn super_packet_header(pkt: &mut [u8], max_packet: usize) -> Option<VnetHdr> {
    let h = headers(pkt)?;
    if h.proto != PROTO_TCP {
        return None;
    }
    let head = h.ip_len + h.l4_len;
    if max_packet <= head || pkt.len() <= head || head > MAX_HEADERS {
        return None;
    }
    let partial = h.ip(&*pkt).pseudo_header().partial_checksum(pkt.len() - h.ip_len);
    TcpPacket::new_unchecked(&mut pkt[h.ip_len..]).set_checksum(partial);
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if h.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: head as u16,
        gso_size: (max_packet - head).min(usize::from(u16::MAX)) as u16,
        csum_start: h.ip_len as u16,
        csum_offset: tcp::field::CHECKSUM.start as u16,
    })
}

/// Whether `datagram` (one UDP payload behind `header_len` bytes of
/// encapsulation) is one inner packet longer than `max_packet`: a GSO
/// super-packet delivered unsegmented. Its IP total length spans the whole
/// payload (a run of datagrams is cut by the UDP_GRO size before this).
pub fn is_super_packet(datagram: &[u8], header_len: usize, max_packet: usize) -> bool {
    let Some(inner) = datagram.get(header_len..) else { return false };
    IpPacket::new_checked(inner).is_ok_and(|ip| ip.total_len() == inner.len() && inner.len() > max_packet)
}

/// A run of packets to be written to the TUN as one (super-)packet.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// Index (into the batch) of the first packet; the others follow via
    /// [`CoalescePlan::members`].
    pub first: usize,
    last: usize,
    pub count: usize,
    head: usize,
    gso_size: usize,
    total: usize,
    next_seq: u32,
    closed: bool,
    tcp: bool,
    v4: bool,
}

/// The result of [`CoalescePlan::plan`]: groups in order of their first
/// packet; packet order within a flow is kept.
#[derive(Debug)]
pub struct CoalescePlan {
    groups: Vec<Group>,
    next: Vec<usize>,
    /// Verify each segment's transport checksum before it may be merged
    /// (the default); see [`CoalescePlan::trusting_checksums`].
    verify_checksums: bool,
}

impl Default for CoalescePlan {
    fn default() -> Self {
        CoalescePlan { groups: Vec::new(), next: Vec::new(), verify_checksums: true }
    }
}

const NONE: usize = usize::MAX;

impl CoalescePlan {
    /// A plan that merges segments without verifying their transport
    /// checksums: for datagrams whose bytes a verified outer UDP checksum
    /// already covered end to end, from the sending gateway, which wrote
    /// every inner checksum itself (`[dataplane] ingress_checksum =
    /// "trust-outer"`). A segment that was corrupt before that gateway is
    /// then merged and gets a fresh checksum from the kernel: the risk the
    /// setting accepts.
    pub fn trusting_checksums() -> Self {
        CoalescePlan { verify_checksums: false, ..CoalescePlan::default() }
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Batch indices of a group's packets, in order.
    pub fn members(&self, g: &Group) -> impl Iterator<Item = usize> + '_ {
        let mut at = g.first;
        std::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let cur = at;
            at = self.next[cur];
            Some(cur)
        })
    }

    /// Groups `packets` (ranges of `buf`, all already validated IP packets)
    /// into coalescable runs: TCP segments of one flow with contiguous
    /// sequence numbers, equal flags (ACK, PSH only last), ACK number, window,
    /// options and IP fields; and, when `udp` is allowed (the TUN has USO),
    /// same-flow UDP datagrams of equal size. Anything else stands alone.
    pub fn plan(&mut self, buf: &[u8], packets: &[PacketRef], udp: bool) {
        self.groups.clear();
        self.next.clear();
        self.next.resize(packets.len(), NONE);
        for (i, p) in packets.iter().enumerate() {
            let pkt = &buf[p.offset..p.offset + p.len];
            // Once per packet: the key may cost a checksum over the packet.
            let key = coalesce_key(pkt, udp, self.verify_checksums);
            let joined = match &key {
                Some(k) => self.try_join(buf, packets, i, pkt, k),
                None => false,
            };
            if !joined {
                let (head, tcp, v4, next_seq, closed, gso_size) = match key {
                    Some(k) => {
                        let seg = pkt.len() - k.head;
                        (k.head, k.tcp, k.v4, k.seq.wrapping_add(seg as u32), k.ends_group || seg == 0, seg)
                    }
                    None => (0, false, false, 0, true, 0),
                };
                self.groups.push(Group { first: i, last: i, count: 1, head, gso_size, total: pkt.len(), next_seq, closed, tcp, v4 });
            }
        }
    }

    fn try_join(&mut self, buf: &[u8], packets: &[PacketRef], i: usize, pkt: &[u8], k: &Key) -> bool {
        let seg = pkt.len() - k.head;
        if seg == 0 {
            return false;
        }
        for g in self.groups.iter_mut().rev() {
            if g.closed || g.tcp != k.tcp || g.v4 != k.v4 || g.head != k.head {
                continue;
            }
            let first = &packets[g.first];
            let fp = &buf[first.offset..first.offset + first.len];
            if !same_flow(fp, pkt, k) {
                continue;
            }
            // A flow's packets are in order: only its newest group may grow.
            if (k.tcp && k.seq != g.next_seq) || seg > g.gso_size || g.count >= MAX_COALESCE || g.total + seg > 65_535 {
                g.closed = true;
                return false;
            }
            self.next[g.last] = i;
            g.last = i;
            g.count += 1;
            g.total += seg;
            g.next_seq = k.seq.wrapping_add(seg as u32);
            // A short segment or a PSH ends the run (as GRO does).
            g.closed = seg < g.gso_size || k.ends_group;
            return true;
        }
        false
    }

    /// Turns group `g` into one super-packet: rewrites the first packet's IP
    /// length (and IPv4 checksum), takes PSH from the last segment, and puts
    /// the pseudo-header sum in the transport checksum for the kernel to
    /// finish. Returns the virtio header to write before it; a group of one
    /// is left untouched with an empty header.
    pub fn finish_group(&self, buf: &mut [u8], packets: &[PacketRef], g: &Group) -> VnetHdr {
        if g.count == 1 {
            return VnetHdr::default();
        }
        // Coalesced IPv4 packets have no options, so the IP header length is fixed.
        let ip_len = if g.v4 { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
        let last = packets[g.last];
        let last_flags = if g.tcp { TcpPacket::new_unchecked(&buf[last.offset + ip_len..last.offset + last.len]).flags() } else { 0 };
        let first = packets[g.first];
        let pkt = &mut buf[first.offset..first.offset + first.len];
        let Some(h) = headers(pkt) else { return VnetHdr::default() };
        // The first packet's headers now describe the whole run: its length
        // field spans bytes beyond this buffer, so only fixed fields are
        // touched through the view from here on.
        let mut ip = h.ip(&mut *pkt);
        ip.set_total_len(g.total);
        ip.fill_checksum();
        let l4_total = g.total - h.ip_len;
        let partial = ip.pseudo_header().partial_checksum(l4_total);
        let l4 = &mut pkt[h.ip_len..];
        let (gso_type, csum_offset) = if h.proto == PROTO_TCP {
            let mut t = TcpPacket::new_unchecked(l4);
            t.set_flags(t.flags() | (last_flags & TCP_PSH));
            t.set_checksum(partial);
            (if h.v4 { GSO_TCPV4 } else { GSO_TCPV6 }, tcp::field::CHECKSUM.start as u16)
        } else {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_len(l4_total as u16);
            u.set_checksum(partial);
            (GSO_UDP_L4, udp::field::CHECKSUM.start as u16)
        };
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: g.head as u16,
            gso_size: g.gso_size as u16,
            csum_start: h.ip_len as u16,
            csum_offset,
        }
    }
}

/// What decides whether a packet may join a run.
struct Key {
    tcp: bool,
    v4: bool,
    head: usize,
    seq: u32,
    /// PSH (or any flag beyond ACK/PSH) closes the run after this packet.
    ends_group: bool,
}

fn coalesce_key(pkt: &[u8], udp: bool, verify_checksum: bool) -> Option<Key> {
    let h = headers(pkt)?;
    // IPv4: no options (and, as `headers` has it, not a fragment).
    if h.v4 && h.ip_len != ipv4::HEADER_LEN {
        return None;
    }
    if h.proto == PROTO_UDP && !udp {
        return None;
    }
    // A merged packet gets a fresh checksum from the kernel (NEEDS_CSUM), so
    // a segment whose own checksum is wrong must never be merged: it is
    // written as it is and the kernel drops it, as kernel GRO would.
    if verify_checksum && !l4_checksum_valid(pkt, &h) {
        return None;
    }
    let head = h.ip_len + h.l4_len;
    if h.proto == PROTO_UDP {
        return Some(Key { tcp: false, v4: h.v4, head, seq: 0, ends_group: false });
    }
    let t = TcpPacket::new_unchecked(&pkt[h.ip_len..]);
    let flags = t.flags();
    if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    Some(Key { tcp: true, v4: h.v4, head, seq: t.seq_number(), ends_group: flags & TCP_PSH != 0 })
}

/// Same addresses, ports and the header fields that must match for a merge
/// (of two packets whose headers [`coalesce_key`] accepted with the same
/// layout `k`).
fn same_flow(a: &[u8], b: &[u8], k: &Key) -> bool {
    let ip_same = if k.v4 {
        let (a, b) = (Ipv4Packet::new_unchecked(a), Ipv4Packet::new_unchecked(b));
        // Header length, TOS, flags (DF; neither is a fragment), TTL,
        // protocol, addresses: all but the length, ID and checksum.
        a.header_len() == b.header_len()
            && a.dscp_ecn() == b.dscp_ecn()
            && a.flags_and_frag_offset() == b.flags_and_frag_offset()
            && a.ttl() == b.ttl()
            && a.protocol() == b.protocol()
            && a.addr_bytes() == b.addr_bytes()
    } else {
        let (a, b) = (Ipv6Packet::new_unchecked(a), Ipv6Packet::new_unchecked(b));
        a.traffic_class() == b.traffic_class()
            && a.flow_label() == b.flow_label()
            && a.next_header() == b.next_header()
            && a.hop_limit() == b.hop_limit()
            && a.addr_bytes() == b.addr_bytes()
    };
    if !ip_same {
        return false;
    }
    let ip_len = if k.v4 { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
    if k.tcp {
        // Ports, ACK number, data offset and reserved bits, window, urgent
        // pointer and options; flags may differ only in PSH.
        let (a, b) = (TcpPacket::new_unchecked(&a[ip_len..]), TcpPacket::new_unchecked(&b[ip_len..]));
        a.ports() == b.ports()
            && a.ack_number() == b.ack_number()
            && a.header_len() == b.header_len()
            && a.reserved() == b.reserved()
            && (a.flags() | TCP_PSH) == (b.flags() | TCP_PSH)
            && a.window_len() == b.window_len()
            && a.urgent_at() == b.urgent_at()
            && a.options() == b.options()
    } else {
        UdpPacket::new_unchecked(&a[ip_len..]).ports() == UdpPacket::new_unchecked(&b[ip_len..]).ports()
    }
}

#[cfg(test)]
mod tests;
