//! `datapath::offload::CoalescePlan` (GRO-style coalescing of received
//! segments into TUN super-packets) on arbitrary batches of valid IP packets,
//! judged by etherparse ([`crate::oracle`]).
//! Checks: every packet lands in exactly one group, in order; `members`
//! yields `count` in-range indices; `finish_group` touches only the group's
//! first packet; a coalesced run is one flow (every header field equal as
//! etherparse reads it, but lengths, IPv4 ID and checksums, sequence
//! number and PSH) with contiguous sequence numbers, members whose own
//! checksums verify by etherparse's computation, and equal-size segments
//! (the last may be short); its super-packet (first packet + the others'
//! payloads) is one valid packet for etherparse once its partial checksum
//! is finished, with the members' payloads in order; and splitting it again
//! with `prepare_egress` gives back exactly the packets that went in
//! (payloads, TCP headers and flags).
//!
//! Input: byte 0 = flags (bit 0: UDP coalescing allowed, bits 1-2: gap bytes
//! between packets in the buffer), then records, each a tag byte and:
//! - tag % 4 in {0, 1}: a u16 (big-endian) length and that many packet bytes
//!   (tag bit 2: make the IP length field match, bit 3: make the TCP/UDP
//!   checksum valid);
//! - tag % 4 == 2: the next segment of the previous packet's flow: a u16
//!   payload length (0: same as the previous one); tag bits 2-3 pick clear
//!   PSH / set PSH / keep flags / skip one sequence number; lengths and
//!   checksums are made valid;
//! - tag % 4 == 3: a copy of the previous packet.
//!
//! Packets that the data path's parse rejects (by the oracle's reading) are
//! dropped before planning, as the engines only coalesce packets that
//! passed `check_ingress`.

use crate::Records;
use crate::oracle::{assert_same_headers, ip_verdict, l4};
use crate::shape::{fix_ip_length, fix_ipv4_checksum, fix_l4_checksum};
use encapd::datapath::offload::{CoalescePlan, MAX_COALESCE, PacketRef, finish_partial_checksum, prepare_egress};
use encapd::wire::virtio::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};
use encapd::wire::{Ipv4Packet, TcpPacket, UdpPacket, tcp};
const MAX_PACKETS: usize = 160;
const MAX_BYTES: usize = 512 * 1024;

/// The next packet of `prev`'s flow with `n` bytes of payload: headers
/// copied (read by etherparse, written through encapd's views), then
/// lengths, sequence number, IPv4 ID and checksums made right.
fn next_segment(prev: &[u8], n: u16, mode: u8) -> Vec<u8> {
    let Some(o) = l4(prev) else { return prev.to_vec() };
    let (head, ip_len, tcp, v4) = (o.head, o.ip_len, o.tcp, o.ipv4);
    let prev_payload = o.payload.len();
    let seq = if tcp { o.tcp().sequence_number() } else { 0 };
    let n = if n == 0 { prev_payload } else { usize::from(n) % 9001 };
    let mut p = prev[..head].to_vec();
    p.extend((0..n).map(|k| (k as u8).wrapping_mul(31) ^ mode));
    if v4 {
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_ident(ip.ident().wrapping_add(1));
    }
    let l4_bytes = &mut p[ip_len..];
    if tcp {
        let mut t = TcpPacket::new_unchecked(l4_bytes);
        let mut seq = seq.wrapping_add(prev_payload as u32);
        match mode & 3 {
            0 => t.set_flags(t.flags() & !tcp::flags::PSH),
            1 => t.set_flags(t.flags() | tcp::flags::PSH),
            2 => {}
            _ => seq = seq.wrapping_add(1),
        }
        t.set_seq_number(seq);
    } else if let Ok(udp_len) = u16::try_from(l4_bytes.len()) {
        UdpPacket::new_unchecked(l4_bytes).set_len(udp_len);
    }
    fix_ip_length(&mut p);
    fix_ipv4_checksum(&mut p);
    fix_l4_checksum(&mut p);
    p
}

fn packets(data: &[u8]) -> (u8, Vec<Vec<u8>>) {
    let mut r = Records(data);
    let flags = r.byte().unwrap_or(0);
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    while let Some(tag) = r.byte() {
        if pkts.len() >= MAX_PACKETS || total >= MAX_BYTES {
            break;
        }
        let pkt = match (tag & 3, pkts.last()) {
            (2, Some(prev)) => next_segment(prev, r.u16().unwrap_or(0), tag >> 2),
            (3, Some(prev)) => prev.clone(),
            _ => {
                let n = r.u16().unwrap_or(0);
                let mut p = r.bytes(usize::from(n)).to_vec();
                if tag & 4 != 0 {
                    fix_ip_length(&mut p);
                }
                if tag & 8 != 0 {
                    fix_l4_checksum(&mut p);
                }
                p
            }
        };
        total += pkt.len();
        pkts.push(pkt);
    }
    pkts.retain(|p| ip_verdict(p).is_ok());
    (flags, pkts)
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let (flags, pkts) = packets(data);
    let udp = flags & 1 != 0;
    let gap = usize::from((flags >> 1) & 3);
    let mut buf = Vec::new();
    let mut refs = Vec::with_capacity(pkts.len());
    for p in &pkts {
        buf.extend(std::iter::repeat_n(0xa5, gap));
        refs.push(PacketRef { offset: buf.len(), len: p.len() });
        buf.extend_from_slice(p);
    }
    buf.extend(std::iter::repeat_n(0x5a, gap));

    let mut plan = CoalescePlan::default();
    plan.plan(&buf, &refs, udp);
    let groups = plan.groups().to_vec();
    let mut seen = vec![false; refs.len()];
    let mut last_first = None;
    let mut members_of = Vec::with_capacity(groups.len());
    for g in &groups {
        let members: Vec<usize> = plan.members(g).take(refs.len() + 1).collect();
        assert_eq!(members.len(), g.count, "members() disagrees with count");
        assert!(g.count >= 1 && g.count <= MAX_COALESCE, "group of {}", g.count);
        assert_eq!(members[0], g.first);
        assert!(members.windows(2).all(|w| w[0] < w[1]), "members out of order: {members:?}");
        for &m in &members {
            assert!(m < refs.len(), "member index {m} out of range");
            assert!(!seen[m], "packet {m} in two groups");
            seen[m] = true;
        }
        assert!(last_first < Some(g.first), "groups not in order of their first packet");
        last_first = Some(g.first);
        members_of.push(members);
    }
    assert!(seen.iter().all(|&s| s), "a packet was left out of every group");

    let before = buf.clone();
    let mut touched = vec![false; buf.len()];
    for (g, members) in groups.iter().zip(&members_of) {
        let hdr = plan.finish_group(&mut buf, &refs, g);
        let first = refs[g.first];
        if g.count == 1 {
            assert_eq!(hdr, VnetHdr::default(), "a group of one gets no offload header");
            continue;
        }
        touched[first.offset..first.offset + first.len].fill(true);
        check_run(&before, &buf, &refs, members, &hdr, udp);
    }
    for (i, t) in touched.iter().enumerate() {
        assert!(*t || before[i] == buf[i], "finish_group changed byte {i}, outside the first packets of coalesced groups");
    }
}

/// Checks one coalesced run against the packets that went into it.
fn check_run(before: &[u8], after: &[u8], refs: &[PacketRef], members: &[usize], hdr: &VnetHdr, udp: bool) {
    let range = |m: usize| refs[m].offset..refs[m].offset + refs[m].len;
    let orig: Vec<&[u8]> = members.iter().map(|&m| &before[range(m)]).collect();
    let first = l4(orig[0]).expect("coalesced packets are whole TCP/UDP packets per etherparse");
    let (head, tcp) = (first.head, first.tcp);
    assert!(tcp || udp, "UDP coalesced without USO");
    let want_type = match (tcp, first.ipv4) {
        (true, true) => GSO_TCPV4,
        (true, false) => GSO_TCPV6,
        (false, _) => GSO_UDP_L4,
    };
    assert_eq!(hdr.flags, F_NEEDS_CSUM);
    assert_eq!(hdr.gso_type, want_type);
    assert_eq!(usize::from(hdr.hdr_len), head, "hdr_len");
    assert_eq!(usize::from(hdr.csum_start), first.ip_len, "csum_start");
    assert_eq!(usize::from(hdr.csum_offset), first.checksum_offset(), "csum_offset");
    let gso = usize::from(hdr.gso_size);
    assert!(gso > 0);
    if first.ipv4 {
        assert_eq!(first.ip_len, 20, "coalesced IPv4 packets carry no options");
    }

    // One flow, contiguous, equal-size segments but the last, each valid.
    let mut seq = if tcp { first.tcp().sequence_number() } else { 0 };
    let mut payloads = Vec::new();
    for (k, p) in orig.iter().enumerate() {
        let m = l4(p).unwrap_or_else(|| panic!("member {k} is not a whole TCP/UDP packet per etherparse"));
        assert_same_headers(&m, &first, &format!("member {k}"));
        // Coalescing gives the run a fresh checksum, so a member's own must verify.
        assert!(m.transport_checksum_ok(), "member {k} with a bad transport checksum was coalesced");
        let pay = m.payload.len();
        assert!(pay > 0 && pay <= gso, "member {k} payload {pay}, segment size {gso}");
        assert!(k + 1 == orig.len() || pay == gso, "member {k} of {} is short ({pay} < {gso})", orig.len());
        if tcp {
            let t = m.tcp();
            assert_eq!(t.sequence_number(), seq, "member {k} sequence number not contiguous");
            seq = seq.wrapping_add(pay as u32);
            assert!(k + 1 == orig.len() || !t.psh(), "PSH before the end of a run");
            assert!(!(t.fin() || t.syn() || t.rst() || t.urg()), "member {k}: only ACK and PSH may be set");
            assert!(t.ack(), "member {k} without ACK");
        }
        payloads.extend_from_slice(m.payload);
    }

    // The super-packet the engines write: the rewritten first packet, then
    // the others without their headers; valid per etherparse once finished.
    let mut sup = after[range(members[0])].to_vec();
    for p in &orig[1..] {
        sup.extend_from_slice(&p[head..]);
    }
    let mut finished = sup.clone();
    finish_partial_checksum(&mut finished, usize::from(hdr.csum_start), usize::from(hdr.csum_offset)).expect("checksum offsets in range");
    let s = l4(&finished).unwrap_or_else(|| panic!("super-packet of {} members is not a whole TCP/UDP packet per etherparse", orig.len()));
    assert!(s.ip_checksum_ok(), "super-packet IPv4 header checksum");
    assert!(s.transport_checksum_ok(), "finished partial checksum does not verify by etherparse's sum");
    assert_same_headers(&s, &first, "super-packet");
    assert_eq!(s.payload, &payloads[..], "the super-packet's payload is not the members' in order");
    if tcp {
        let last = l4(orig[orig.len() - 1]).unwrap();
        assert_eq!(s.tcp().sequence_number(), first.tcp().sequence_number());
        assert_eq!(s.tcp().psh(), last.tcp().psh(), "PSH is the last member's");
    }

    // Splitting it again (as the kernel's GSO would) gives back the members.
    let mut room = vec![0u8; sup.len() + orig.len() * head];
    room[..sup.len()].copy_from_slice(&sup);
    let split = prepare_egress(&mut room, 0, sup.len(), hdr).unwrap_or_else(|e| panic!("coalesced super-packet does not split: {e}"));
    assert_eq!(split.count, orig.len(), "split into a different number of segments");
    for (k, p) in orig.iter().enumerate() {
        let (off, n) = split.segment(k);
        let seg = &room[off..off + n];
        assert_eq!(seg[head..], p[head..], "segment {k} payload differs from member {k}");
        let (a, b) = (l4(seg).expect("a split segment is valid"), l4(p).unwrap());
        assert_same_headers(&a, &b, &format!("segment {k} against member {k}"));
        if tcp {
            let (ta, tb) = (a.tcp().to_header(), b.tcp().to_header());
            assert_eq!(
                (ta.sequence_number, ta.psh, ta.fin, ta.cwr),
                (tb.sequence_number, tb.psh, tb.fin, tb.cwr),
                "segment {k} TCP header differs from member {k}"
            );
        }
    }
}
