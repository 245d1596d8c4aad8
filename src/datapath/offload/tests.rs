//! The offload paths against etherparse, an independent parser: every
//! segment of a split and every coalesced super-packet is a valid packet by
//! etherparse's reading and checksums, with headers that match the
//! original's field by field, and payloads that add up to the original's.

use etherparse::{NetSlice, TransportSlice};

use super::*;
use crate::wire::build::{Packet, Tcp, fix_transport_checksum as fix_l4_checksum};
use crate::wire::oracle_tests::{L4Oracle, assert_l4_packet_valid, tcp_of};
use crate::wire::virtio::GSO_UDP_L4;

const V4_SRC: [u8; 4] = [100, 96, 1, 2];
const V4_DST: [u8; 4] = [100, 96, 2, 3];

/// A TCP packet (IPv4 or IPv6) with `payload`, 12 bytes of options
/// (NOP NOP timestamp), valid checksums, at sequence `seq` with `flags`.
fn tcp(v4: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let segment = Tcp::new(40000, 5201).seq(seq).flags(flags).options(&Tcp::TIMESTAMPS);
    packet(v4).tcp(segment, payload)
}

fn packet(v4: bool) -> Packet {
    if v4 {
        Packet::new(V4_SRC, V4_DST)
    } else {
        Packet::new("fd00:96:1::2".parse::<std::net::Ipv6Addr>().unwrap(), "fd00:96:2::3".parse::<std::net::Ipv6Addr>().unwrap())
    }
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    packet(true).udp(1111, 2222, payload)
}

/// Asserts, with etherparse as the judge, that `p` is one valid packet
/// with right lengths and checksums.
fn assert_checksums_valid(p: &[u8]) -> L4Oracle<'_> {
    assert_l4_packet_valid(p)
}

/// The IPv4 identification of a packet, as etherparse reads it.
fn ipv4_ident(o: &L4Oracle<'_>) -> u16 {
    match &o.sliced.net {
        Some(NetSlice::Ipv4(v4)) => v4.header().identification(),
        other => panic!("not IPv4: {other:?}"),
    }
}

/// The UDP length field, as etherparse reads it.
fn udp_len(o: &L4Oracle<'_>) -> usize {
    match &o.sliced.transport {
        Some(TransportSlice::Udp(u)) => usize::from(u.length()),
        other => panic!("not UDP: {other:?}"),
    }
}

/// Asserts that a segment's headers are the original's field by field
/// (etherparse's reading), but for what a split changes: lengths, the IPv4
/// ID and header checksum, the TCP sequence number, FIN/PSH/CWR and the
/// transport checksum.
fn assert_headers_match(seg: &L4Oracle<'_>, orig: &L4Oracle<'_>) {
    match (&seg.sliced.net, &orig.sliced.net) {
        (Some(NetSlice::Ipv4(s)), Some(NetSlice::Ipv4(o))) => {
            let (s, o) = (s.header().to_header(), o.header().to_header());
            assert_eq!(
                (s.dscp, s.ecn, s.dont_fragment, s.more_fragments, s.fragment_offset, s.time_to_live, s.protocol),
                (o.dscp, o.ecn, o.dont_fragment, o.more_fragments, o.fragment_offset, o.time_to_live, o.protocol)
            );
            assert_eq!((s.source, s.destination, s.options), (o.source, o.destination, o.options));
        }
        (Some(NetSlice::Ipv6(s)), Some(NetSlice::Ipv6(o))) => {
            let (s, o) = (s.header().to_header(), o.header().to_header());
            assert_eq!(
                (s.traffic_class, s.flow_label, s.next_header, s.hop_limit),
                (o.traffic_class, o.flow_label, o.next_header, o.hop_limit)
            );
            assert_eq!((s.source, s.destination), (o.source, o.destination));
        }
        other => panic!("IP versions differ: {other:?}"),
    }
    match (&seg.sliced.transport, &orig.sliced.transport) {
        (Some(TransportSlice::Tcp(s)), Some(TransportSlice::Tcp(o))) => {
            let (s, o) = (s.to_header(), o.to_header());
            assert_eq!(
                (s.source_port, s.destination_port, s.acknowledgment_number),
                (o.source_port, o.destination_port, o.acknowledgment_number)
            );
            assert_eq!((s.ns, s.ece, s.urg, s.ack, s.rst, s.syn), (o.ns, o.ece, o.urg, o.ack, o.rst, o.syn));
            assert_eq!((s.window_size, s.urgent_pointer, s.options), (o.window_size, o.urgent_pointer, o.options));
        }
        (Some(TransportSlice::Udp(s)), Some(TransportSlice::Udp(o))) => {
            assert_eq!((s.source_port(), s.destination_port()), (o.source_port(), o.destination_port()));
        }
        other => panic!("transports differ: {other:?}"),
    }
}

/// Turns a full packet into the super-packet a TUN hands over: the
/// transport checksum replaced by the pseudo-header partial sum.
fn as_gso(mut pkt: Vec<u8>, gso_type: u8, gso_size: u16) -> (Vec<u8>, VnetHdr) {
    let ip = IpPacket::new_checked(&pkt[..]).unwrap();
    let (ip_len, tcp) = (ip.header_len(), ip.protocol() == PROTO_TCP);
    let partial = ip.pseudo_header().partial_checksum(pkt.len() - ip_len);
    let l4 = &mut pkt[ip_len..];
    let off = if tcp {
        TcpPacket::new_unchecked(l4).set_checksum(partial);
        tcp::field::CHECKSUM.start
    } else {
        UdpPacket::new_unchecked(l4).set_checksum(partial);
        udp::field::CHECKSUM.start
    };
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: 0xdead, // never trusted
        gso_size,
        csum_start: ip_len as u16,
        csum_offset: off as u16,
    };
    (pkt, hdr)
}

fn split(pkt: &[u8], hdr: &VnetHdr) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut buf = vec![0u8; 200_000];
    buf[7..7 + pkt.len()].copy_from_slice(pkt);
    let s = prepare_egress(&mut buf, 7, pkt.len(), hdr)?;
    Ok((0..s.count).map(|i| s.segment(i)).map(|(o, l)| buf[o..o + l].to_vec()).collect())
}

/// Flips a bit in the last payload byte of a complete packet, after its
/// checksum was computed.
fn corrupt_payload(p: &mut [u8]) {
    *p.last_mut().unwrap() ^= 0x01;
}

fn payload_pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn tcp4_split_is_exact() {
    let data = payload_pattern(2500);
    let full = tcp(true, 1000, TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR, &data);
    let (pkt, hdr) = as_gso(full.clone(), GSO_TCPV4, 1000);
    let segs = split(&pkt, &hdr).unwrap();
    assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1052, 1052, 552]);
    let orig = assert_l4_packet_valid(&full);
    for (i, s) in segs.iter().enumerate() {
        let seg = assert_checksums_valid(s);
        assert_headers_match(&seg, &orig);
        assert_eq!(ipv4_ident(&seg), 0x1234 + i as u16, "IPv4 ID");
        let t = tcp_of(&seg);
        assert_eq!(t.sequence_number(), 1000 + 1000 * i as u32, "sequence");
        assert_eq!((t.fin(), t.psh()), (i == 2, i == 2), "FIN/PSH only on the last");
        assert_eq!(t.cwr(), i == 0, "CWR only on the first");
        assert_eq!(seg.payload, &data[i * 1000..(i * 1000 + 1000).min(2500)]);
        assert_eq!(t.options(), &Tcp::TIMESTAMPS, "options copied");
    }
}

#[test]
fn tcp6_split_is_exact() {
    let data = payload_pattern(4000);
    let full = tcp(false, u32::MAX - 10, TCP_ACK, &data);
    let (pkt, hdr) = as_gso(full.clone(), GSO_TCPV6, 1400);
    let segs = split(&pkt, &hdr).unwrap();
    assert_eq!(segs.len(), 3);
    let orig = assert_l4_packet_valid(&full);
    for (i, s) in segs.iter().enumerate() {
        let seg = assert_checksums_valid(s);
        assert_headers_match(&seg, &orig);
        assert_eq!(tcp_of(&seg).sequence_number(), (u32::MAX - 10).wrapping_add(1400 * i as u32), "sequence wraps");
        assert_eq!(seg.payload, &data[i * 1400..(i * 1400 + 1400).min(4000)]);
    }
}

#[test]
fn udp4_uso_split_is_exact() {
    let data = payload_pattern(3000);
    let full = udp4(&data);
    let (pkt, hdr) = as_gso(full.clone(), GSO_UDP_L4, 1200);
    let segs = split(&pkt, &hdr).unwrap();
    assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1228, 1228, 628]);
    let orig = assert_l4_packet_valid(&full);
    for (i, s) in segs.iter().enumerate() {
        let seg = assert_checksums_valid(s);
        assert_headers_match(&seg, &orig);
        assert_eq!(udp_len(&seg), s.len() - 20, "UDP length");
        assert_eq!(seg.payload, &data[i * 1200..(i * 1200 + 1200).min(3000)]);
    }
}

#[test]
fn size_limits() {
    // One segment: payload fits gso_size.
    let (pkt, hdr) = as_gso(tcp(true, 5, TCP_ACK | TCP_PSH, &payload_pattern(900)), GSO_TCPV4, 1000);
    let segs = split(&pkt, &hdr).unwrap();
    assert_eq!(segs.len(), 1);
    assert!(tcp_of(&assert_checksums_valid(&segs[0])).psh());
    // 64 full segments.
    let (pkt, hdr) = as_gso(tcp(true, 5, TCP_ACK, &payload_pattern(64 * 1000)), GSO_TCPV4, 1000);
    let segs = split(&pkt, &hdr).unwrap();
    assert_eq!(segs.len(), 64);
    assert!(segs.iter().all(|s| s.len() == 1052));
    segs.iter().for_each(|s| {
        assert_checksums_valid(s);
    });
    // Last segment short by one byte.
    let (pkt, hdr) = as_gso(tcp(true, 5, TCP_ACK, &payload_pattern(3 * 1000 - 1)), GSO_TCPV4, 1000);
    assert_eq!(split(&pkt, &hdr).unwrap().last().unwrap().len(), 1051);
}

#[test]
fn malformed_virtio_headers_are_errors() {
    let (pkt, hdr) = as_gso(tcp(true, 1, TCP_ACK, &payload_pattern(3000)), GSO_TCPV4, 1000);
    let with = |f: &dyn Fn(&mut VnetHdr)| {
        let mut h = hdr;
        f(&mut h);
        split(&pkt, &h)
    };
    assert_eq!(with(&|h| h.gso_size = 0), Err(OffloadError::EmptySegments));
    assert_eq!(with(&|h| h.csum_start = 21), Err(OffloadError::ChecksumRange));
    assert_eq!(with(&|h| h.gso_type = GSO_TCPV6), Err(OffloadError::TypeMismatch));
    assert_eq!(with(&|h| h.gso_type = GSO_UDP_L4), Err(OffloadError::TypeMismatch));
    assert_eq!(with(&|h| h.gso_type = 9), Err(OffloadError::UnknownType));
    // Plain packet whose checksum offsets point past the end.
    let mut plain = tcp(true, 1, TCP_ACK, b"abc");
    let len = plain.len();
    let h = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 5000, ..Default::default() };
    assert_eq!(prepare_egress(&mut plain, 0, len, &h), Err(OffloadError::ChecksumRange));
    // Not enough room for the split.
    let mut small = pkt.clone();
    let n = small.len();
    assert_eq!(prepare_egress(&mut small, 0, n, &hdr), Err(OffloadError::TooLarge));
    assert_eq!(prepare_egress(&mut small, 10, n, &hdr), Err(OffloadError::TooLarge));
}

#[test]
fn partial_checksum_is_finished() {
    let mut pkt = udp4(b"hello world");
    let (mut partial, _) = as_gso(pkt.clone(), GSO_NONE, 0);
    let n = partial.len();
    let h = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 6, ..Default::default() };
    assert_eq!(prepare_egress(&mut partial, 0, n, &h), Ok(Split::single(0, n)));
    fix_l4_checksum(&mut pkt);
    assert_eq!(partial, pkt);
}

/// Lays packets out back to back as a GRO receive would.
fn batch(pkts: &[Vec<u8>]) -> (Vec<u8>, Vec<PacketRef>) {
    let mut buf = Vec::new();
    let mut refs = Vec::new();
    for p in pkts {
        refs.push(PacketRef { offset: buf.len(), len: p.len() });
        buf.extend_from_slice(p);
    }
    (buf, refs)
}

/// The super-packet a group becomes: first packet whole, then the payloads.
fn assemble(buf: &[u8], refs: &[PacketRef], plan: &CoalescePlan, g: &Group) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, i) in plan.members(g).enumerate() {
        let r = refs[i];
        let skip = if k == 0 { 0 } else { g.head };
        out.extend_from_slice(&buf[r.offset + skip..r.offset + r.len]);
    }
    out
}

#[test]
fn split_then_coalesce_round_trips() {
    for v4 in [true, false] {
        let data = payload_pattern(5000);
        let (pkt, hdr) = as_gso(tcp(v4, 42, TCP_ACK | TCP_PSH, &data), if v4 { GSO_TCPV4 } else { GSO_TCPV6 }, 1300);
        let segs = split(&pkt, &hdr).unwrap();
        let (mut buf, refs) = batch(&segs);
        let mut plan = CoalescePlan::default();
        plan.plan(&buf, &refs, false);
        assert_eq!(plan.groups().len(), 1);
        let g = plan.groups()[0];
        let vh = plan.finish_group(&mut buf, &refs, &g);
        assert_eq!((vh.gso_type, vh.gso_size, vh.flags), (hdr.gso_type, 1300, F_NEEDS_CSUM));
        assert_eq!((vh.csum_start, vh.csum_offset, usize::from(vh.hdr_len)), (hdr.csum_start, 16, if v4 { 52 } else { 72 }));
        let mut rebuilt = assemble(&buf, &refs, &plan, &g);
        // (The IPv4 ID is the first segment's, the original's.)
        assert_eq!(rebuilt, pkt, "coalescing undoes the split");
        // And finishing the partial checksum gives a valid packet.
        let n = rebuilt.len();
        finish_partial_checksum(&mut rebuilt[..n], usize::from(vh.csum_start), 16).unwrap();
        assert_checksums_valid(&rebuilt);
    }
}

#[test]
fn a_completed_udp_checksum_of_zero_is_sent_as_all_ones() {
    // A UDP packet whose field holds the pseudo-header sum, with one
    // payload word chosen so that the finished checksum computes to 0.
    let mut pkt = udp4(&[0, 0]);
    let pseudo = Ipv4Packet::new_unchecked(&pkt[..]).pseudo_header(17);
    let partial = pseudo.partial_checksum(pkt.len() - 20);
    pkt[26..28].copy_from_slice(&partial.to_be_bytes());
    let rest = checksum::checksum(&pkt[20..]);
    pkt[28..30].copy_from_slice(&rest.to_be_bytes());
    assert_eq!(checksum::checksum(&pkt[20..]), 0, "the test packet's checksum must compute to 0");
    finish_partial_checksum(&mut pkt, 20, 6).unwrap();
    // RFC 768: 0 would mean "no checksum"; the kernel writes 0xFFFF.
    assert_eq!(&pkt[26..28], &[0xFF, 0xFF]);
    assert_checksums_valid(&pkt);
}

#[test]
fn udp_coalesces_only_when_allowed() {
    let a = udp4(&payload_pattern(1000));
    let b = udp4(&payload_pattern(1000));
    let c = udp4(&payload_pattern(300));
    let (mut buf, refs) = batch(&[a, b, c]);
    let mut plan = CoalescePlan::default();
    plan.plan(&buf, &refs, false);
    assert_eq!(plan.groups().len(), 3);
    plan.plan(&buf, &refs, true);
    assert_eq!(plan.groups().len(), 1);
    let g = plan.groups()[0];
    let vh = plan.finish_group(&mut buf, &refs, &g);
    assert_eq!((vh.gso_type, vh.gso_size, vh.csum_offset), (GSO_UDP_L4, 1000, 6));
    let mut rebuilt = assemble(&buf, &refs, &plan, &g);
    assert_eq!(rebuilt.len(), 28 + 2300);
    finish_partial_checksum(&mut rebuilt, 20, 6).unwrap();
    assert_checksums_valid(&rebuilt);
}

#[test]
fn never_coalesces_across_gaps_flags_or_options() {
    let d = payload_pattern(1000);
    let mut plan = CoalescePlan::default();
    let groups = |pkts: &[Vec<u8>], plan: &mut CoalescePlan| {
        let (buf, refs) = batch(pkts);
        plan.plan(&buf, &refs, true);
        plan.groups().iter().map(|g| g.count).collect::<Vec<_>>()
    };
    // Contiguous: one group.
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &d), tcp(true, 1000, TCP_ACK, &d), tcp(true, 2000, TCP_ACK, &d)], &mut plan), vec![3]);
    // A gap in sequence numbers.
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &d), tcp(true, 1500, TCP_ACK, &d)], &mut plan), vec![1, 1]);
    // PSH ends the run; FIN/SYN never join.
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK | TCP_PSH, &d), tcp(true, 1000, TCP_ACK, &d)], &mut plan), vec![1, 1]);
    assert_eq!(
        groups(&[tcp(true, 0, TCP_ACK, &d), tcp(true, 1000, TCP_ACK | TCP_PSH, &d), tcp(true, 2000, TCP_ACK, &d)], &mut plan),
        vec![2, 1]
    );
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &d), tcp(true, 1000, TCP_ACK | TCP_FIN, &d)], &mut plan), vec![1, 1]);
    // Differing options (timestamp) or ACK number.
    let mut ts = Tcp::TIMESTAMPS;
    ts[7] = 8; // TSval 8
    let other_ts = packet(true).tcp(Tcp::new(40000, 5201).seq(1000).options(&ts), &d);
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &d), other_ts], &mut plan), vec![1, 1]);
    let other_ack = packet(true).tcp(Tcp::new(40000, 5201).seq(1000).ack(99).options(&Tcp::TIMESTAMPS), &d);
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &d), other_ack], &mut plan), vec![1, 1]);
    // A larger segment after a smaller one; a short one closes the run.
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &d[..500]), tcp(true, 500, TCP_ACK, &d)], &mut plan), vec![1, 1]);
    assert_eq!(
        groups(&[tcp(true, 0, TCP_ACK, &d), tcp(true, 1000, TCP_ACK, &d[..10]), tcp(true, 1010, TCP_ACK, &d)], &mut plan),
        vec![2, 1]
    );
    // Pure ACKs (no payload) stand alone.
    assert_eq!(groups(&[tcp(true, 0, TCP_ACK, &[]), tcp(true, 0, TCP_ACK, &[])], &mut plan), vec![1, 1]);
}

/// Fuzzer finding: a TCP data offset below 5 (header shorter than 20 bytes)
/// must be refused, not split or merged past the header.
#[test]
fn tcp_data_offset_below_five_is_refused() {
    for doff in 2u8..5 {
        let (mut pkt, hdr) = as_gso(tcp(true, 1, TCP_ACK, &payload_pattern(3000)), GSO_TCPV4, 1000);
        TcpPacket::new_unchecked(Ipv4Packet::new_unchecked(&mut pkt[..]).payload_mut()).set_header_len(usize::from(doff) * 4);
        assert_eq!(split(&pkt, &hdr), Err(OffloadError::TypeMismatch), "data offset {doff}");
        let (buf, refs) = batch(&[pkt.clone(), pkt]);
        let mut plan = CoalescePlan::default();
        plan.plan(&buf, &refs, false);
        assert!(plan.groups().iter().all(|g| g.count == 1), "data offset {doff} never coalesced");
    }
}

/// A GSO super-packet must be one whole datagram with lengths that agree:
/// an IPv4 fragment, or an IP or UDP length that disagrees with the bytes,
/// is refused rather than cut.
#[test]
fn fragments_and_lying_lengths_are_not_split() {
    let (tcp4, hdr) = as_gso(tcp(true, 1, TCP_ACK, &payload_pattern(3000)), GSO_TCPV4, 1000);
    let mut fragment = tcp4.clone();
    Ipv4Packet::new_unchecked(&mut fragment[..]).set_more_frags(true);
    assert_eq!(split(&fragment, &hdr), Err(OffloadError::TypeMismatch));
    let mut short_total = tcp4.clone();
    let n = short_total.len() as u16;
    Ipv4Packet::new_unchecked(&mut short_total[..]).set_total_len(n - 1);
    assert_eq!(split(&short_total, &hdr), Err(OffloadError::TypeMismatch));
    let (udp, uhdr) = as_gso(udp4(&payload_pattern(3000)), GSO_UDP_L4, 1000);
    let with_udp_len = |len: u16| {
        let mut p = udp.clone();
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        UdpPacket::new_unchecked(ip.payload_mut()).set_len(len);
        p
    };
    let right = (udp.len() - 20) as u16;
    assert_eq!(split(&with_udp_len(right - 1), &uhdr), Err(OffloadError::TypeMismatch));
    // Fuzzer finding (fuzz/regressions/offload_split-udp-length-zero.bin): a
    // UDP length of 0, "the rest" to the view, was taken for the datagram's.
    assert_eq!(split(&with_udp_len(0), &uhdr), Err(OffloadError::TypeMismatch));
    assert!(split(&with_udp_len(right), &uhdr).is_ok());
    assert!(split(&tcp4, &hdr).is_ok());
    // Nor are such datagrams coalesced (offload_coalesce-udp-length-zero.bin).
    let zero = || {
        let mut p = udp4(&payload_pattern(1000));
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        UdpPacket::new_unchecked(ip.payload_mut()).set_len(0);
        fix_l4_checksum(&mut p);
        p
    };
    let (buf, refs) = batch(&[zero(), zero()]);
    let mut plan = CoalescePlan::default();
    plan.plan(&buf, &refs, true);
    assert_eq!(plan.groups().len(), 2, "UDP length 0 is never merged");
}

#[test]
fn segments_with_bad_checksums_are_never_merged() {
    let d = payload_pattern(1000);
    let mut bad = tcp(true, 1000, TCP_ACK, &d);
    corrupt_payload(&mut bad);
    let pkts = [tcp(true, 0, TCP_ACK, &d), bad, tcp(true, 2000, TCP_ACK, &d)];
    let (buf, refs) = batch(&pkts);
    let mut plan = CoalescePlan::default();
    plan.plan(&buf, &refs, true);
    let counts: Vec<usize> = plan.groups().iter().map(|g| g.count).collect();
    assert_eq!(counts, vec![1, 1, 1], "the corrupt segment stands alone, so the kernel drops it");
    let mut bad_udp = udp4(&d);
    corrupt_payload(&mut bad_udp);
    let (buf, refs) = batch(&[udp4(&d), bad_udp, udp4(&d)]);
    plan.plan(&buf, &refs, true);
    assert!(plan.groups().iter().all(|g| g.count == 1 || plan.members(g).all(|i| i != 1)), "corrupt UDP never merged");
}

/// `ingress_checksum = "trust-outer"`: the outer checksum vouched for the
/// bytes, so segments merge without a checksum pass, the documented risk
/// included; everything else that decides a merge still holds.
#[test]
fn a_trusting_plan_merges_without_verifying_and_still_checks_the_flow() {
    let d = payload_pattern(1000);
    let mut bad = tcp(true, 1000, TCP_ACK, &d);
    corrupt_payload(&mut bad);
    let mut plan = CoalescePlan::trusting_checksums();
    let (buf, refs) = batch(&[tcp(true, 0, TCP_ACK, &d), bad, tcp(true, 2000, TCP_ACK, &d)]);
    plan.plan(&buf, &refs, true);
    assert_eq!(plan.groups().iter().map(|g| g.count).collect::<Vec<_>>(), vec![3], "no checksum pass: one run");
    let (buf, refs) = batch(&[tcp(true, 0, TCP_ACK, &d), tcp(true, 1500, TCP_ACK, &d), tcp(true, 2500, TCP_ACK | TCP_FIN, &d)]);
    plan.plan(&buf, &refs, true);
    assert_eq!(plan.groups().iter().map(|g| g.count).collect::<Vec<_>>(), vec![1, 1, 1], "gaps and FIN still split runs");
}

#[test]
fn interleaved_flows_coalesce_separately_in_order() {
    let d = payload_pattern(800);
    let flow_b = |seq| {
        let mut p = tcp(true, seq, TCP_ACK, &d);
        TcpPacket::new_unchecked(Ipv4Packet::new_unchecked(&mut p[..]).payload_mut()).set_src_port(40001);
        fix_l4_checksum(&mut p);
        p
    };
    let pkts = [tcp(true, 0, TCP_ACK, &d), flow_b(5000), tcp(true, 800, TCP_ACK, &d), flow_b(5800), tcp(true, 1600, TCP_ACK, &d)];
    let (buf, refs) = batch(&pkts);
    let mut plan = CoalescePlan::default();
    plan.plan(&buf, &refs, false);
    let members: Vec<Vec<usize>> = plan.groups().iter().map(|g| plan.members(g).collect()).collect();
    assert_eq!(members, vec![vec![0, 2, 4], vec![1, 3]]);
}

proptest::proptest! {
    #[test]
    fn split_keeps_every_byte(len in 1usize..20_000, gso in 64u16..3000, v4 in proptest::bool::ANY) {
        let data = payload_pattern(len);
        let (pkt, hdr) = as_gso(tcp(v4, 7, TCP_ACK | TCP_PSH, &data), if v4 { GSO_TCPV4 } else { GSO_TCPV6 }, gso);
        let segs = split(&pkt, &hdr).unwrap();
        proptest::prop_assert_eq!(segs.len(), len.div_ceil(usize::from(gso)));
        let full = tcp(v4, 7, TCP_ACK | TCP_PSH, &data);
        let orig = assert_l4_packet_valid(&full);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let seg = assert_checksums_valid(s);
            assert_headers_match(&seg, &orig);
            let t = tcp_of(&seg);
            proptest::prop_assert_eq!(t.sequence_number(), 7u32.wrapping_add(joined.len() as u32));
            proptest::prop_assert_eq!(t.psh(), i + 1 == segs.len(), "PSH only on the last");
            proptest::prop_assert!(seg.payload.len() <= usize::from(gso));
            joined.extend_from_slice(seg.payload);
        }
        proptest::prop_assert_eq!(joined, data);
    }

    /// A split run coalesced again is the original super-packet, which
    /// etherparse reads as valid once its partial checksum is finished.
    #[test]
    fn coalescing_a_split_gives_back_the_original(len in 1usize..30_000, gso in 200u16..3000, v4 in proptest::bool::ANY, psh in proptest::bool::ANY) {
        let data = payload_pattern(len);
        let flags = if psh { TCP_ACK | TCP_PSH } else { TCP_ACK };
        let full = tcp(v4, 9, flags, &data);
        let (pkt, hdr) = as_gso(full.clone(), if v4 { GSO_TCPV4 } else { GSO_TCPV6 }, gso);
        let segs = split(&pkt, &hdr).unwrap();
        let (mut buf, refs) = batch(&segs);
        let mut plan = CoalescePlan::default();
        plan.plan(&buf, &refs, false);
        let mut rebuilt = Vec::new();
        for g in plan.groups().to_vec() {
            let vh = plan.finish_group(&mut buf, &refs, &g);
            let mut sup = assemble(&buf, &refs, &plan, &g);
            if g.count > 1 {
                let n = sup.len();
                finish_partial_checksum(&mut sup[..n], usize::from(vh.csum_start), usize::from(vh.csum_offset)).unwrap();
            }
            let o = assert_checksums_valid(&sup);
            rebuilt.extend_from_slice(o.payload);
        }
        proptest::prop_assert_eq!(plan.groups().len(), segs.len().div_ceil(MAX_COALESCE), "one group per MAX_COALESCE segments");
        proptest::prop_assert_eq!(rebuilt, data);
        if segs.len() <= MAX_COALESCE {
            let g = plan.groups()[0];
            let mut sup = assemble(&buf, &refs, &plan, &g);
            if g.count > 1 {
                let n = sup.len();
                finish_partial_checksum(&mut sup[..n], usize::from(hdr.csum_start), usize::from(hdr.csum_offset)).unwrap();
            }
            proptest::prop_assert_eq!(sup, full, "byte for byte the packet that was split");
        }
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400), hdr in proptest::collection::vec(proptest::num::u8::ANY, 10), cut in proptest::collection::vec(0usize..400, 0..6)) {
        let h = VnetHdr::decode(&hdr).unwrap();
        let mut buf = bytes.clone();
        buf.resize(bytes.len() + 600, 0);
        let _ = prepare_egress(&mut buf, 0, bytes.len(), &h);
        // Coalescing any prefix-cut of the bytes as a batch.
        let mut refs = Vec::new();
        let mut at = 0;
        for c in cut {
            let end = (at + c).min(bytes.len());
            refs.push(PacketRef { offset: at, len: end - at });
            at = end;
        }
        let mut plan = CoalescePlan::default();
        plan.plan(&bytes, &refs, true);
        let groups: Vec<Group> = plan.groups().to_vec();
        let mut b = bytes.clone();
        for g in &groups {
            let _ = plan.finish_group(&mut b, &refs, g);
        }
    }
}

#[test]
fn a_partial_checksum_from_a_kernel_vtep_is_completed_and_nothing_else_is_touched() {
    for v4 in [true, false] {
        let full = tcp(v4, 1000, TCP_ACK, &payload_pattern(700));
        let (partial, _) = as_gso(full.clone(), GSO_NONE, 0);
        let mut partial = partial;
        assert!(complete_partial_checksum(&mut partial));
        assert_eq!(partial, full, "completed exactly as the sender would have");
        let mut again = full.clone();
        assert!(!complete_partial_checksum(&mut again), "a full checksum is left alone");
        let mut corrupt = full.clone();
        corrupt_payload(&mut corrupt);
        let before = corrupt.clone();
        assert!(!complete_partial_checksum(&mut corrupt), "a corrupt packet is not 'fixed'");
        assert_eq!(corrupt, before);
    }
    let (mut udp, _) = as_gso(udp4(&payload_pattern(100)), GSO_NONE, 0);
    assert!(complete_partial_checksum(&mut udp));
    assert_checksums_valid(&udp);
}

#[test]
fn a_kernel_super_packet_is_recognised_and_handed_to_the_tun_for_cutting() {
    let payload = payload_pattern(20_000);
    let pkt = tcp(true, 5000, TCP_ACK, &payload);
    let mut datagram = vec![0x08u8; 22];
    datagram.extend_from_slice(&pkt);
    assert!(is_super_packet(&datagram, 22, 1450));
    assert!(!is_super_packet(&datagram[..datagram.len() - 1], 22, 1450), "a total length that does not span the payload");
    let small = tcp(true, 5000, TCP_ACK, &payload[..1000]);
    let mut one = vec![0x08u8; 22];
    one.extend_from_slice(&small);
    assert!(!is_super_packet(&one, 22, 1450), "one ordinary packet");
    let mut inner = pkt.clone();
    let hdr = super_packet_header(&mut inner, 1450).unwrap();
    // 20 IP + 32 TCP: segments of 1,398 bytes fill a 1,450-byte MTU.
    assert_eq!((hdr.gso_type, hdr.gso_size, hdr.csum_start, hdr.csum_offset, hdr.flags), (GSO_TCPV4, 1398, 20, 16, F_NEEDS_CSUM));
    // What the kernel does with it: the same segments a TSO split makes.
    let segments = split(&inner, &hdr).unwrap();
    assert_eq!(segments.len(), 20_000usize.div_ceil(1398));
    for s in &segments {
        assert!(s.len() <= 1450);
        assert_checksums_valid(s);
    }
    let mut udp = udp4(&payload[..5000]);
    assert!(super_packet_header(&mut udp, 1450).is_none(), "a UDP super-packet's datagram boundaries are unknown");
}
