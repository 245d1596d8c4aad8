//! `datapath::offload::CoalescePlan` (GRO-style coalescing of received
//! segments into TUN super-packets) on arbitrary batches of valid IP packets.
//! Checks: every packet lands in exactly one group, in order; `members`
//! yields `count` in-range indices; `finish_group` touches only the group's
//! first packet; a coalesced run is one flow with contiguous sequence numbers
//! and equal-size segments (the last may be short), its super-packet (first
//! packet + the others' payloads) parses, its finished partial checksum
//! verifies, and splitting it again with `prepare_egress` gives back exactly
//! the packets that went in (payloads, TCP headers and flags).
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
//! Packets that `ip::parse` rejects are dropped before planning, as the
//! engines only coalesce packets that passed `check_ingress`.

use crate::{Records, fix_ip_length, fix_ipv4_checksum, fix_l4_checksum, l4_checksum_ok, layout, tcp_seq};
use encapd::datapath::offload::{CoalescePlan, MAX_COALESCE, PacketRef, finish_partial_checksum, prepare_egress};
use encapd::wire::checksum;
use encapd::wire::ip::{self, PROTO_TCP};
use encapd::wire::virtio::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VnetHdr};

const TCP_PSH: u8 = 0x08;
const MAX_PACKETS: usize = 160;
const MAX_BYTES: usize = 512 * 1024;

/// The next packet of `prev`'s flow with `n` bytes of payload.
fn next_segment(prev: &[u8], n: u16, mode: u8) -> Vec<u8> {
    let Some(l) = layout(prev) else { return prev.to_vec() };
    let head = l.head();
    let prev_payload = prev.len() - head;
    let n = if n == 0 { prev_payload } else { usize::from(n) % 9001 };
    let mut p = prev[..head].to_vec();
    p.extend((0..n).map(|k| (k as u8).wrapping_mul(31) ^ mode));
    let t = l.ip_len;
    if l.proto == PROTO_TCP {
        let mut seq = tcp_seq(prev, &l).wrapping_add(prev_payload as u32);
        match mode & 3 {
            0 => p[t + 13] &= !TCP_PSH,
            1 => p[t + 13] |= TCP_PSH,
            2 => {}
            _ => seq = seq.wrapping_add(1),
        }
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    } else if let Ok(udp_len) = u16::try_from(8 + n) {
        p[t + 4..t + 6].copy_from_slice(&udp_len.to_be_bytes());
    }
    if l.v4 {
        let id = u16::from_be_bytes([p[4], p[5]]).wrapping_add(1);
        p[4..6].copy_from_slice(&id.to_be_bytes());
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
    pkts.retain(|p| ip::parse(p).is_ok());
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
    let l = layout(orig[0]).expect("coalesced packets have well-formed TCP/UDP headers");
    let head = l.head();
    let tcp = l.proto == PROTO_TCP;
    assert!(tcp || udp, "UDP coalesced without USO");
    let want_type = match (tcp, l.v4) {
        (true, true) => GSO_TCPV4,
        (true, false) => GSO_TCPV6,
        (false, _) => GSO_UDP_L4,
    };
    assert_eq!(hdr.flags, F_NEEDS_CSUM);
    assert_eq!(hdr.gso_type, want_type);
    assert_eq!(usize::from(hdr.hdr_len), head, "hdr_len");
    assert_eq!(usize::from(hdr.csum_start), l.ip_len, "csum_start");
    assert_eq!(hdr.csum_offset, if tcp { 16 } else { 6 }, "csum_offset");
    let gso = usize::from(hdr.gso_size);
    assert!(gso > 0);
    if l.v4 {
        assert_eq!(l.ip_len, 20, "coalesced IPv4 packets carry no options");
    }

    // One flow, contiguous, equal-size segments but the last.
    let addr = if l.v4 { 12..20 } else { 8..40 };
    let mut seq = if tcp { tcp_seq(orig[0], &l) } else { 0 };
    for (k, p) in orig.iter().enumerate() {
        let lm = layout(p).unwrap_or_else(|| panic!("member {k} has malformed headers"));
        assert_eq!((lm.v4, lm.proto, lm.head()), (l.v4, l.proto, head), "member {k} header layout");
        assert_eq!(p[addr.clone()], orig[0][addr.clone()], "member {k} addresses");
        assert_eq!(p[l.ip_len..l.ip_len + 4], orig[0][l.ip_len..l.ip_len + 4], "member {k} ports");
        // Coalescing gives the run a fresh checksum, so a member's own must verify
        // (an IPv4 UDP checksum of 0 means none).
        let no_udp_csum = l.v4 && !tcp && p[l.ip_len + 6..l.ip_len + 8] == [0, 0];
        assert!(no_udp_csum || l4_checksum_ok(p, l.v4, l.proto, &p[l.ip_len..]), "member {k} with a bad transport checksum was coalesced");
        let pay = p.len() - head;
        assert!(pay > 0 && pay <= gso, "member {k} payload {pay}, segment size {gso}");
        assert!(k + 1 == orig.len() || pay == gso, "member {k} of {} is short ({pay} < {gso})", orig.len());
        if tcp {
            assert_eq!(tcp_seq(p, &lm), seq, "member {k} sequence number not contiguous");
            seq = seq.wrapping_add(pay as u32);
            assert!(k + 1 == orig.len() || p[l.ip_len + 13] & TCP_PSH == 0, "PSH before the end of a run");
        }
    }

    // The super-packet the engines write: the rewritten first packet, then
    // the others without their headers.
    let mut sup = after[range(members[0])].to_vec();
    for p in &orig[1..] {
        sup.extend_from_slice(&p[head..]);
    }
    let h = ip::parse(&sup).unwrap_or_else(|e| panic!("super-packet of {} members does not parse: {e}", orig.len()));
    assert_eq!(h.total_len, sup.len());
    if l.v4 {
        assert_eq!(checksum::checksum(&sup[..20]), 0, "super-packet IPv4 header checksum");
    }
    let mut finished = sup.clone();
    finish_partial_checksum(&mut finished, usize::from(hdr.csum_start), usize::from(hdr.csum_offset)).expect("checksum offsets in range");
    assert!(l4_checksum_ok(&finished, l.v4, l.proto, &finished[l.ip_len..]), "finished partial checksum does not verify");

    // Splitting it again (as the kernel's GSO would) gives back the members.
    let mut room = vec![0u8; sup.len() + orig.len() * head];
    room[..sup.len()].copy_from_slice(&sup);
    let split = prepare_egress(&mut room, 0, sup.len(), hdr).unwrap_or_else(|e| panic!("coalesced super-packet does not split: {e}"));
    assert_eq!(split.count, orig.len(), "split into a different number of segments");
    for (k, p) in orig.iter().enumerate() {
        let (off, n) = split.segment(k);
        let seg = &room[off..off + n];
        assert_eq!(seg[head..], p[head..], "segment {k} payload differs from member {k}");
        let (a, b) = (&seg[l.ip_len..head], &p[l.ip_len..head]);
        if tcp {
            for i in (0..a.len()).filter(|i| !(16..18).contains(i)) {
                assert_eq!(a[i], b[i], "segment {k} TCP header byte {i} differs from member {k}");
            }
        } else {
            assert_eq!(a[..4], b[..4], "segment {k} ports");
        }
    }
}
