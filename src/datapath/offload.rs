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
use crate::wire::ip::{PROTO_TCP, PROTO_UDP};
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

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// Largest header block (IPv4 with options + TCP with options) we copy.
const MAX_HEADERS: usize = 60 + 60;
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
/// the pseudo-header sum; the sum over `pkt[start..]` completes it.
pub fn finish_partial_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start.checked_add(offset).filter(|f| f + 2 <= pkt.len()).ok_or(OffloadError::ChecksumRange)?;
    let sum = checksum::checksum(&pkt[start..]);
    pkt[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Layout of the IP and transport headers of a packet.
#[derive(Debug, Clone, Copy)]
struct Headers {
    v4: bool,
    ip_len: usize,
    proto: u8,
    l4_len: usize,
}

fn headers(pkt: &[u8]) -> Option<Headers> {
    let first = *pkt.first()?;
    let (v4, ip_len, proto) = match first >> 4 {
        4 => (true, usize::from(first & 0x0f) * 4, *pkt.get(9)?),
        6 => (false, 40, *pkt.get(6)?),
        _ => return None,
    };
    if ip_len < 20 || pkt.len() < ip_len {
        return None;
    }
    let l4_len = match proto {
        PROTO_TCP => usize::from(*pkt.get(ip_len + 12)? >> 4) * 4,
        PROTO_UDP => 8,
        _ => return None,
    };
    // A TCP header is at least 20 bytes (data offset ≥ 5); everything
    // below assumes the fixed fields are there.
    let min = if proto == PROTO_TCP { 20 } else { 8 };
    if l4_len < min || pkt.len() < ip_len + l4_len {
        return None;
    }
    Some(Headers { v4, ip_len, proto, l4_len })
}

/// The accumulated pseudo-header (addresses, protocol, transport length)
/// of the packet whose IP header starts `pkt_ip`.
fn pseudo_sum(pkt_ip: &[u8], h: &Headers, l4_total: usize) -> u64 {
    let addrs = if h.v4 { &pkt_ip[12..20] } else { &pkt_ip[8..40] };
    let sum = checksum::accumulate(0, addrs);
    let sum = checksum::accumulate(sum, &[0, h.proto]);
    checksum::accumulate(sum, &(l4_total as u32).to_be_bytes())
}

/// The final transport checksum from its accumulated parts (UDP's 0 is
/// sent as 0xffff: 0 means "no checksum").
fn l4_final(sum: u64, h: &Headers) -> u16 {
    let c = checksum::finish(sum);
    if h.proto == PROTO_UDP && c == 0 { 0xffff } else { c }
}

/// Transport checksum over the pseudo-header and `l4` (whose checksum field
/// must be zero).
fn l4_checksum(pkt_ip: &[u8], h: &Headers, l4: &[u8]) -> u16 {
    l4_final(checksum::accumulate(pseudo_sum(pkt_ip, h, l4.len()), l4), h)
}

/// True when the transport checksum of a complete packet verifies (an IPv4
/// UDP checksum of 0 means "none" and passes).
fn l4_checksum_valid(pkt: &[u8], h: &Headers) -> bool {
    let l4 = &pkt[h.ip_len..];
    if h.v4 && h.proto == PROTO_UDP && l4[6] == 0 && l4[7] == 0 {
        return true;
    }
    checksum::finish(checksum::accumulate(pseudo_sum(pkt, h, l4.len()), l4)) == 0
}

/// The folded pseudo-header sum (not complemented) a `NEEDS_CSUM` packet
/// carries in its checksum field.
fn pseudo_partial(pkt: &[u8], h: &Headers, l4_total: usize) -> u16 {
    !checksum::finish(pseudo_sum(pkt, h, l4_total))
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
/// one header per extra segment.
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
    let id0 = u16::from_be_bytes([tmpl[4], tmpl[5]]);
    let l4 = h.ip_len;
    let seq0 = u32::from_be_bytes([tmpl[l4 + 4], tmpl[l4 + 5], tmpl[l4 + 6], tmpl[l4 + 7]]);
    let stride = head + g;
    for i in (0..count).rev() {
        let chunk = if i + 1 == count { payload - i * g } else { g };
        let seg = start + i * stride;
        // Move the payload up to make room for the headers before it.
        buf.copy_within(start + head + i * g..start + head + i * g + chunk, seg + head);
        let s = &mut buf[seg..seg + head + chunk];
        s[..head].copy_from_slice(&tmpl[..head]);
        if h.v4 {
            s[2..4].copy_from_slice(&((head + chunk) as u16).to_be_bytes());
            s[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            s[10..12].fill(0);
            let c = checksum::checksum(&s[..h.ip_len]);
            s[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            s[4..6].copy_from_slice(&((h.l4_len + chunk) as u16).to_be_bytes());
        }
        let (ip, l4b) = s.split_at_mut(h.ip_len);
        let field = if h.proto == PROTO_TCP {
            l4b[4..8].copy_from_slice(&seq0.wrapping_add((i * g) as u32).to_be_bytes());
            if i + 1 != count {
                l4b[13] &= !(TCP_FIN | TCP_PSH);
            }
            if i != 0 {
                l4b[13] &= !TCP_CWR;
            }
            16
        } else {
            l4b[4..6].copy_from_slice(&((8 + chunk) as u16).to_be_bytes());
            6
        };
        l4b[field..field + 2].fill(0);
        let c = l4_checksum(ip, &h, l4b);
        l4b[field..field + 2].copy_from_slice(&c.to_be_bytes());
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
    if h.v4 && u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return false; // a fragment: its checksum covers the whole datagram
    }
    if l4_checksum_valid(pkt, &h) {
        return false;
    }
    let field = h.ip_len + if h.proto == PROTO_TCP { 16 } else { 6 };
    let l4_total = pkt.len() - h.ip_len;
    if pkt[field..field + 2] != pseudo_partial(pkt, &h, l4_total).to_be_bytes() {
        return false;
    }
    pkt[field..field + 2].fill(0);
    let (ip, l4) = pkt.split_at_mut(h.ip_len);
    let c = l4_checksum(ip, &h, l4);
    l4[field - h.ip_len..field - h.ip_len + 2].copy_from_slice(&c.to_be_bytes());
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
    if h.proto != PROTO_TCP || (h.v4 && u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0) {
        return None;
    }
    let head = h.ip_len + h.l4_len;
    if max_packet <= head || pkt.len() <= head || head > MAX_HEADERS {
        return None;
    }
    let partial = pseudo_partial(pkt, &h, pkt.len() - h.ip_len);
    pkt[h.ip_len + 16..h.ip_len + 18].copy_from_slice(&partial.to_be_bytes());
    Some(VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if h.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: head as u16,
        gso_size: (max_packet - head).min(usize::from(u16::MAX)) as u16,
        csum_start: h.ip_len as u16,
        csum_offset: 16,
    })
}

/// Whether `datagram` (one UDP payload behind `header_len` bytes of
/// encapsulation) is one inner packet longer than `max_packet`: a GSO
/// super-packet delivered unsegmented. Its IP total length spans the whole
/// payload (a run of datagrams is cut by the UDP_GRO size before this).
pub fn is_super_packet(datagram: &[u8], header_len: usize, max_packet: usize) -> bool {
    let Some(inner) = datagram.get(header_len..) else { return false };
    let total = match inner.first().map(|b| b >> 4) {
        Some(4) if inner.len() >= 20 => usize::from(u16::from_be_bytes([inner[2], inner[3]])),
        Some(6) if inner.len() >= 40 => 40 + usize::from(u16::from_be_bytes([inner[4], inner[5]])),
        _ => return false,
    };
    total == inner.len() && total > max_packet
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
        let ip_len = if g.v4 { 20 } else { 40 };
        let last_flags = if g.tcp { buf[packets[g.last].offset + ip_len + 13] } else { 0 };
        let first = packets[g.first];
        let pkt = &mut buf[first.offset..first.offset + first.len];
        let Some(h) = headers(pkt) else { return VnetHdr::default() };
        if h.v4 {
            pkt[2..4].copy_from_slice(&(g.total as u16).to_be_bytes());
            pkt[10..12].fill(0);
            let c = checksum::checksum(&pkt[..h.ip_len]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            pkt[4..6].copy_from_slice(&((g.total - 40) as u16).to_be_bytes());
        }
        let l4_total = g.total - h.ip_len;
        let partial = pseudo_partial(pkt, &h, l4_total);
        let l4 = h.ip_len;
        let (gso_type, csum_offset) = if h.proto == PROTO_TCP {
            pkt[l4 + 13] |= last_flags & TCP_PSH;
            pkt[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
            (if h.v4 { GSO_TCPV4 } else { GSO_TCPV6 }, 16)
        } else {
            pkt[l4 + 4..l4 + 6].copy_from_slice(&(l4_total as u16).to_be_bytes());
            pkt[l4 + 6..l4 + 8].copy_from_slice(&partial.to_be_bytes());
            (GSO_UDP_L4, 6)
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
    if h.v4 {
        // No options, not a fragment.
        let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
        if h.ip_len != 20 || frag & 0x3fff != 0 {
            return None;
        }
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
    let l4 = &pkt[h.ip_len..];
    match h.proto {
        PROTO_TCP => {
            let flags = l4[13];
            if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
                return None;
            }
            Some(Key {
                tcp: true,
                v4: h.v4,
                head: h.ip_len + h.l4_len,
                seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                ends_group: flags & TCP_PSH != 0,
            })
        }
        PROTO_UDP if udp => Some(Key { tcp: false, v4: h.v4, head: h.ip_len + 8, seq: 0, ends_group: false }),
        _ => None,
    }
}

/// Same addresses, ports and the header fields that must match for a merge.
fn same_flow(a: &[u8], b: &[u8], k: &Key) -> bool {
    let ip = if k.v4 { 20 } else { 40 };
    let ip_same = if k.v4 {
        // version/IHL/TOS, flags (DF), TTL, protocol, addresses.
        a[0..2] == b[0..2] && a[6] == b[6] && a[8..10] == b[8..10] && a[12..20] == b[12..20]
    } else {
        a[0..4] == b[0..4] && a[6..8] == b[6..8] && a[8..40] == b[8..40]
    };
    if !ip_same {
        return false;
    }
    if k.tcp {
        // Ports, then ACK number, data offset, window, urgent and options;
        // flags may differ only in PSH.
        a[ip..ip + 4] == b[ip..ip + 4]
            && a[ip + 8..ip + 13] == b[ip + 8..ip + 13]
            && (a[ip + 13] | TCP_PSH) == (b[ip + 13] | TCP_PSH)
            && a[ip + 14..ip + 16] == b[ip + 14..ip + 16]
            && a[ip + 18..k.head] == b[ip + 18..k.head]
    } else {
        a[ip..ip + 4] == b[ip..ip + 4]
    }
}

#[cfg(test)]
mod tests;
