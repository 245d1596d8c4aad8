//! The views, the builder and the ICMP errors checked against etherparse,
//! an independent implementation, on generated packets: every field, and
//! that `new_checked` accepts exactly what etherparse accepts as a
//! well-formed header. Also the shared oracle the other modules' tests use
//! ([`assert_l4_packet_valid`]).
//!
//! Intended differences, each pinned by a test here:
//! - IPv4 protocol 51 (AH) and IPv6 extension headers (next header 0, 43,
//!   44, 51, 60): etherparse parses them and refuses malformed ones; the
//!   views carry them as payload. The generators leave these numbers out.
//! - IPv6 payload length 0 with bytes behind the header: etherparse reads
//!   the rest of the buffer as a jumbogram payload (RFC 2675); the view
//!   reads an empty payload, and `ip::parse` refuses the packet, since a
//!   jumbogram never fits a datagram or a TUN read of ours.
//! - A UDP length of 0 (accepted by both: the datagram is the rest of the
//!   buffer): etherparse sums the 0 into the checksum's pseudo-header, the
//!   view the datagram's real length, as RFC 2675 §4 has jumbograms do.
//! - ICMPv4 timestamp messages (types 13 and 14, code 0) whose length is
//!   not 20: etherparse refuses them; `IcmpPacket` only promises the 8-byte
//!   message header, for every type.
//! - ARP: etherparse accepts any hardware and protocol address lengths;
//!   `ArpPacket` is the fixed Ethernet/IPv4 layout (28 bytes), and
//!   `parse_arp` takes exactly the Ethernet/IPv4 requests and replies.
//! - VXLAN: etherparse has no VXLAN; the inner Ethernet frame is compared.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Ethernet2HeaderSlice, Icmpv4Slice, Icmpv6Slice, Ipv4Slice, Ipv6Slice, NetSlice, SlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};
use proptest::prelude::*;

use super::arp::{self, ArpPacket};
use super::build::{Packet, Tcp};
use super::ethernet::EthernetFrame;
use super::icmp::{self, IcmpError, IcmpPacket};
use super::ip::{self, IpPacket, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, PseudoHeader};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::tcp::TcpPacket;
use super::udp::UdpPacket;
use super::vxlan::{self, Frame, Mac, VxlanPacket};

/// What etherparse reads in a complete IP packet carrying TCP or UDP.
#[derive(Debug)]
pub(crate) struct L4Oracle<'a> {
    pub sliced: SlicedPacket<'a>,
    /// TCP or UDP payload.
    pub payload: &'a [u8],
}

/// Asserts, with etherparse as the judge, that `p` is one complete IPv4 or
/// IPv6 packet (length field = bytes present) carrying TCP or UDP, whose
/// IPv4 header checksum and transport checksum are what etherparse
/// computes (an IPv4 UDP checksum of 0, "none", passes). Returns
/// etherparse's reading for field-by-field comparisons.
pub(crate) fn assert_l4_packet_valid(p: &[u8]) -> L4Oracle<'_> {
    let sliced = SlicedPacket::from_ip(p).unwrap_or_else(|e| panic!("etherparse refuses the packet: {e:?}"));
    let (ipv4, l4, src, dst) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            assert_eq!(usize::from(h.total_len()), p.len(), "IPv4 total length");
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum(), "IPv4 header checksum (etherparse's sum)");
            (true, v4.payload().payload, h.source().to_vec(), h.destination().to_vec())
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            assert_eq!(40 + usize::from(h.payload_length()), p.len(), "IPv6 payload length");
            (false, v6.payload().payload, h.source().to_vec(), h.destination().to_vec())
        }
        other => panic!("not an IP packet per etherparse: {other:?}"),
    };
    let payload = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = if ipv4 {
                t.calc_checksum_ipv4(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
            } else {
                t.calc_checksum_ipv6(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
            };
            assert_eq!(want.unwrap(), t.checksum(), "TCP checksum (etherparse's sum)");
            t.payload()
        }
        Some(TransportSlice::Udp(u)) => {
            assert_eq!(usize::from(u.length()), l4.len(), "UDP length");
            if !(ipv4 && u.checksum() == 0) {
                let h = u.to_header();
                let want = if ipv4 {
                    h.calc_checksum_ipv4_raw(src[..].try_into().unwrap(), dst[..].try_into().unwrap(), u.payload())
                } else {
                    h.calc_checksum_ipv6_raw(src[..].try_into().unwrap(), dst[..].try_into().unwrap(), u.payload())
                };
                assert_eq!(want.unwrap(), u.checksum(), "UDP checksum (etherparse's sum)");
            }
            u.payload()
        }
        other => panic!("not TCP or UDP per etherparse: {other:?}"),
    };
    L4Oracle { sliced, payload }
}

/// The TCP header etherparse reads in a packet that
/// [`assert_l4_packet_valid`] accepted.
pub(crate) fn tcp_of<'a>(o: &'a L4Oracle<'_>) -> &'a TcpSlice<'a> {
    match &o.sliced.transport {
        Some(TransportSlice::Tcp(t)) => t,
        other => panic!("not TCP: {other:?}"),
    }
}

/// Extension headers etherparse parses after IPv4 (AH) or IPv6.
const EXTENSION_HEADERS: [u8; 5] = [0, 43, 44, 51, 60];

/// A protocol number that is not an extension header for etherparse.
fn protocol() -> impl Strategy<Value = u8> {
    prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP), Just(PROTO_ICMP), Just(PROTO_ICMPV6), any::<u8>()]
        // The next number that is not an extension header (43 + 1 is one too).
        .prop_map(|p| (p..=u8::MAX).find(|q| !EXTENSION_HEADERS.contains(q)).unwrap_or(PROTO_UDP))
}

/// Up to 100 bytes that start like an IPv4 header: version mostly 4, an
/// IHL, a total length near the buffer's, a non-extension protocol.
fn ipv4_bytes() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(any::<u8>(), 0..100), 0u8..16, any::<bool>(), -8i32..8, protocol(), any::<u8>()).prop_map(
        |(mut b, ihl, v4, slack, proto, version)| {
            if let Some(first) = b.first_mut() {
                *first = (if v4 { 4 } else { version >> 4 } << 4) | ihl;
            }
            if b.len() >= 4 {
                let total = (b.len() as i32 + slack).clamp(0, 0xffff) as u16;
                b[2..4].copy_from_slice(&total.to_be_bytes());
            }
            if b.len() >= 10 {
                b[9] = proto;
            }
            b
        },
    )
}

/// Up to 100 bytes that start like an IPv6 header.
fn ipv6_bytes() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(any::<u8>(), 0..100), any::<bool>(), -8i32..8, protocol(), any::<u8>()).prop_map(
        |(mut b, v6, slack, next, version)| {
            if let Some(first) = b.first_mut() {
                *first = (if v6 { 0x60 } else { version & 0xf0 }) | (*first & 0x0f);
            }
            if b.len() >= 6 {
                let payload = (b.len() as i32 - 40 + slack).clamp(0, 0xffff) as u16;
                b[4..6].copy_from_slice(&payload.to_be_bytes());
            }
            if b.len() >= 7 {
                b[6] = next;
            }
            b
        },
    )
}

/// Up to 60 bytes for a transport header: a UDP length or a TCP data
/// offset near the buffer's length.
fn transport_bytes() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(any::<u8>(), 0..60), -12i32..4, 0u8..16).prop_map(|(mut b, slack, doff)| {
        if b.len() >= 6 {
            let len = (b.len() as i32 + slack).clamp(0, 0xffff) as u16;
            b[4..6].copy_from_slice(&len.to_be_bytes());
        }
        if b.len() >= 13 {
            b[12] = (doff << 4) | (b[12] & 0x0f);
        }
        b
    })
}

fn addrs() -> impl Strategy<Value = ([u8; 16], [u8; 16])> {
    (any::<[u8; 16]>(), any::<[u8; 16]>())
}

proptest! {
    #[test]
    fn ipv4_matches_etherparse(b in ipv4_bytes()) {
        let ours = Ipv4Packet::new_checked(&b[..]);
        let theirs = Ipv4Slice::from_slice(&b);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "acceptance differs: {:?} vs {:?}", ours.err(), theirs.err());
        let (Ok(p), Ok(e)) = (ours, theirs) else { return Ok(()) };
        let h = e.header();
        prop_assert_eq!(p.version(), h.version());
        prop_assert_eq!(p.header_len(), usize::from(h.ihl()) * 4);
        prop_assert_eq!(p.dscp_ecn(), (h.dcp().value() << 2) | h.ecn().value());
        prop_assert_eq!(p.total_len(), h.total_len());
        prop_assert_eq!(p.ident(), h.identification());
        prop_assert_eq!((p.dont_frag(), p.more_frags(), p.frag_offset()), (h.dont_fragment(), h.more_fragments(), h.fragments_offset().value()));
        prop_assert_eq!(p.is_fragment(), h.is_fragmenting_payload());
        prop_assert_eq!((p.ttl(), p.protocol(), p.checksum()), (h.ttl(), h.protocol().0, h.header_checksum()));
        prop_assert_eq!((p.src_addr(), p.dst_addr()), (h.source_addr(), h.destination_addr()));
        prop_assert_eq!(p.options(), h.options());
        prop_assert_eq!(p.payload(), e.payload().payload);
        prop_assert_eq!(p.verify_checksum(), h.to_header().calc_header_checksum() == h.header_checksum());
        // The data path's parse: the same, with the total length exact.
        prop_assert_eq!(ip::parse(&b).is_ok(), usize::from(h.total_len()) == b.len());
    }

    #[test]
    fn ipv6_matches_etherparse(b in ipv6_bytes()) {
        let ours = Ipv6Packet::new_checked(&b[..]);
        let theirs = Ipv6Slice::from_slice(&b);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "acceptance differs: {:?} vs {:?}", ours.err(), theirs.err());
        let (Ok(p), Ok(e)) = (ours, theirs) else { return Ok(()) };
        let h = e.header();
        prop_assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (h.version(), h.traffic_class(), h.flow_label().value()));
        prop_assert_eq!((p.payload_len(), p.next_header(), p.hop_limit()), (h.payload_length(), h.next_header().0, h.hop_limit()));
        prop_assert_eq!((p.src_addr(), p.dst_addr()), (h.source_addr(), h.destination_addr()));
        if p.payload_len() == 0 {
            // The jumbogram difference (module documentation).
            prop_assert!(p.payload().is_empty());
        } else {
            prop_assert_eq!(p.payload(), e.payload().payload);
        }
        prop_assert_eq!(ip::parse(&b).is_ok(), 40 + usize::from(h.payload_length()) == b.len());
    }

    #[test]
    fn ip_packet_dispatches_like_etherparse(b in prop_oneof![ipv4_bytes(), ipv6_bytes()]) {
        let ours = IpPacket::new_checked(&b[..]);
        let theirs = etherparse::IpSlice::from_slice(&b);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "acceptance differs: {:?} vs {:?}", ours.err(), theirs.err());
        if let (Ok(p), Ok(e)) = (ours, theirs) {
            prop_assert_eq!(p.is_ipv4(), e.ipv4().is_some());
            prop_assert_eq!((p.src_addr(), p.dst_addr()), (e.source_addr(), e.destination_addr()));
            prop_assert_eq!(p.protocol(), e.payload_ip_number().0);
        }
    }

    #[test]
    fn udp_matches_etherparse(b in transport_bytes(), (src, dst) in addrs(), v4 in any::<bool>()) {
        let ours = UdpPacket::new_checked(&b[..]);
        let theirs = UdpSlice::from_slice(&b);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "acceptance differs: {:?} vs {:?}", ours.err(), theirs.err());
        let (Ok(u), Ok(e)) = (ours, theirs) else { return Ok(()) };
        prop_assert_eq!((u.src_port(), u.dst_port(), u.len(), u.checksum()), (e.source_port(), e.destination_port(), e.length(), e.checksum()));
        prop_assert_eq!(u.payload(), e.payload());
        let h = e.to_header();
        let (want, pseudo) = if v4 {
            let (s, d) = (src[..4].try_into().unwrap(), dst[..4].try_into().unwrap());
            (h.calc_checksum_ipv4_raw(s, d, e.payload()).unwrap(), PseudoHeader::new(&[src[..4].to_vec(), dst[..4].to_vec()].concat(), PROTO_UDP, true))
        } else {
            (h.calc_checksum_ipv6_raw(src, dst, e.payload()).unwrap(), PseudoHeader::new(&[src, dst].concat(), PROTO_UDP, false))
        };
        if u.len() == 0 {
            // The UDP length 0 difference (module documentation).
            return Ok(());
        }
        prop_assert_eq!(u.verify_checksum(&pseudo), want == e.checksum() || (v4 && e.checksum() == 0));
        let mut filled = b.clone();
        UdpPacket::new_unchecked(&mut filled[..]).fill_checksum(&pseudo);
        prop_assert_eq!(UdpPacket::new_unchecked(&filled[..]).checksum(), want, "fill_checksum writes etherparse's sum");
    }

    #[test]
    fn tcp_matches_etherparse(b in transport_bytes(), (src, dst) in addrs(), v4 in any::<bool>()) {
        let ours = TcpPacket::new_checked(&b[..]);
        let theirs = TcpSlice::from_slice(&b);
        prop_assert_eq!(ours.is_ok(), theirs.is_ok(), "acceptance differs: {:?} vs {:?}", ours.err(), theirs.err());
        let (Ok(t), Ok(e)) = (ours, theirs) else { return Ok(()) };
        prop_assert_eq!((t.src_port(), t.dst_port(), t.seq_number(), t.ack_number()), (e.source_port(), e.destination_port(), e.sequence_number(), e.acknowledgment_number()));
        prop_assert_eq!((t.header_len(), t.reserved() & 1 == 1), (usize::from(e.data_offset()) * 4, e.ns()));
        let f = t.flags();
        prop_assert_eq!(
            [f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0, f & 16 != 0, f & 32 != 0, f & 64 != 0, f & 128 != 0],
            [e.fin(), e.syn(), e.rst(), e.psh(), e.ack(), e.urg(), e.ece(), e.cwr()]
        );
        prop_assert_eq!((t.fin(), t.syn(), t.psh(), t.ack()), (e.fin(), e.syn(), e.psh(), e.ack()));
        prop_assert_eq!((t.window_len(), t.checksum(), t.urgent_at()), (e.window_size(), e.checksum(), e.urgent_pointer()));
        prop_assert_eq!(t.options(), e.options());
        prop_assert_eq!(t.payload(), e.payload());
        let (want, pseudo) = if v4 {
            let (s, d) = (src[..4].try_into().unwrap(), dst[..4].try_into().unwrap());
            (e.calc_checksum_ipv4(s, d).unwrap(), PseudoHeader::new(&[src[..4].to_vec(), dst[..4].to_vec()].concat(), PROTO_TCP, true))
        } else {
            (e.calc_checksum_ipv6(src, dst).unwrap(), PseudoHeader::new(&[src, dst].concat(), PROTO_TCP, false))
        };
        prop_assert_eq!(t.verify_checksum(&pseudo), want == e.checksum());
        let mut filled = b.clone();
        TcpPacket::new_unchecked(&mut filled[..]).fill_checksum(&pseudo);
        prop_assert_eq!(TcpPacket::new_unchecked(&filled[..]).checksum(), want, "fill_checksum writes etherparse's sum");
    }

    #[test]
    fn icmp_matches_etherparse(b in prop::collection::vec(any::<u8>(), 0..40), (src, dst) in addrs()) {
        let ours = IcmpPacket::new_checked(&b[..]);
        let timestamp = b.len() >= 2 && matches!(b[0], 13 | 14) && b[1] == 0 && b.len() != 20;
        match Icmpv4Slice::from_slice(&b) {
            Ok(e) => {
                let i = ours.expect("etherparse accepts it");
                prop_assert_eq!((i.msg_type(), i.msg_code(), i.checksum()), (e.type_u8(), e.code_u8(), e.checksum()));
                prop_assert_eq!(i.verify_checksum(None), e.header().icmp_type.calc_checksum(e.payload()) == e.checksum());
            }
            // The timestamp difference (module documentation).
            Err(_) => prop_assert!(ours.is_err() || timestamp, "the view accepts what etherparse refuses"),
        }
        let ours = IcmpPacket::new_checked(&b[..]);
        prop_assert_eq!(ours.is_ok(), Icmpv6Slice::from_slice(&b).is_ok());
        if let (Ok(i), Ok(e)) = (ours, Icmpv6Slice::from_slice(&b)) {
            prop_assert_eq!((i.msg_type(), i.msg_code(), i.checksum()), (e.type_u8(), e.code_u8(), e.checksum()));
            let pseudo = PseudoHeader::new(&[src, dst].concat(), PROTO_ICMPV6, false);
            prop_assert_eq!(i.verify_checksum(Some(&pseudo)), e.is_checksum_valid(src, dst));
            prop_assert_eq!(i.payload(), e.payload());
        }
    }

    #[test]
    fn ethernet_and_arp_match_etherparse(b in prop::collection::vec(any::<u8>(), 0..40), arp_like in any::<bool>()) {
        let mut b = b;
        if arp_like && b.len() >= 8 {
            b[..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
            b[6] = 0;
            b[7] %= 4;
        }
        let ours = EthernetFrame::new_checked(&b[..]);
        prop_assert_eq!(ours.is_ok(), Ethernet2HeaderSlice::from_slice(&b).is_ok());
        if let (Ok(f), Ok(e)) = (ours, Ethernet2HeaderSlice::from_slice(&b)) {
            prop_assert_eq!((f.dst_addr().0, f.src_addr().0, f.ethertype()), (e.destination(), e.source(), e.ether_type().0));
        }
        let theirs = etherparse::ArpPacketSlice::from_slice(&b);
        match arp::parse_arp(&b) {
            Some(a) => {
                let e = theirs.expect("etherparse accepts what parse_arp accepts");
                prop_assert_eq!((e.hw_addr_type().0, e.proto_addr_type().0, e.hw_addr_size(), e.proto_addr_size()), (1, 0x0800, 6, 4));
                prop_assert_eq!(e.operation().0, if a.request { 1 } else { 2 });
                prop_assert_eq!((e.sender_hw_addr(), e.sender_protocol_addr()), (&a.sender_mac.0[..], &a.sender_ip.octets()[..]));
                prop_assert_eq!((e.target_hw_addr(), e.target_protocol_addr()), (&a.target_mac.0[..], &a.target_ip.octets()[..]));
                let p = ArpPacket::new_checked(&b[..]).unwrap();
                prop_assert_eq!(p.operation(), e.operation().0);
            }
            None => {
                // The ARP difference: only Ethernet/IPv4 requests and replies.
                let ethernet_ipv4_op = theirs.is_ok_and(|e| {
                    (e.hw_addr_type().0, e.proto_addr_type().0, e.hw_addr_size(), e.proto_addr_size()) == (1, 0x0800, 6, 4)
                        && matches!(e.operation().0, 1 | 2)
                });
                prop_assert!(!ethernet_ipv4_op, "parse_arp refuses an Ethernet/IPv4 request or reply");
            }
        }
    }

    /// A VXLAN header written by `write_header` and read back by the view,
    /// with the inner Ethernet header as etherparse reads it.
    #[test]
    fn vxlan_frames_round_trip_and_hold_what_etherparse_reads(vni in 0u32..(1 << 24), dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), ethertype in any::<u16>()) {
        let frame = Frame { vni, dst: Mac(dst), src: Mac(src), ethertype };
        let mut h = [0u8; vxlan::HEADER_LEN];
        vxlan::write_header(&mut h, &frame);
        prop_assert_eq!(vxlan::parse(&h), Ok(frame));
        let v = VxlanPacket::new_checked(&h[..]).unwrap();
        prop_assert_eq!((v.flags(), v.vni()), (vxlan::FLAG_VNI, vni));
        prop_assert_eq!(&h[1..4], &[0, 0, 0], "reserved bits zero (RFC 7348 §5)");
        prop_assert_eq!(h[7], 0);
        let e = Ethernet2HeaderSlice::from_slice(v.payload()).unwrap();
        prop_assert_eq!((e.destination(), e.source(), e.ether_type().0), (dst, src, ethertype));
    }

    /// The builder's packets, read by etherparse: every field as asked,
    /// every checksum right by etherparse's computation.
    #[test]
    fn built_packets_are_what_etherparse_reads(
        v4 in any::<bool>(), (src, dst) in addrs(), ttl in any::<u8>(), ident in any::<u16>(), df in any::<bool>(),
        sport in any::<u16>(), dport in any::<u16>(), payload in prop::collection::vec(any::<u8>(), 0..300),
        tcp in any::<bool>(), seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(), window in any::<u16>(),
        options in prop::collection::vec(any::<u8>(), 0..41),
    ) {
        let (s, d): (IpAddr, IpAddr) = if v4 {
            (Ipv4Addr::from(<[u8; 4]>::try_from(&src[..4]).unwrap()).into(), Ipv4Addr::from(<[u8; 4]>::try_from(&dst[..4]).unwrap()).into())
        } else {
            (Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into())
        };
        let b = Packet::new(s, d).ttl(ttl).ident(ident).dont_fragment(df);
        let p = if tcp {
            b.tcp(Tcp::new(sport, dport).seq(seq).ack(ack).flags(flags).window(window).options(&options), &payload)
        } else {
            b.udp(sport, dport, &payload)
        };
        let o = assert_l4_packet_valid(&p);
        prop_assert_eq!(o.payload, &payload[..]);
        match &o.sliced.net {
            Some(NetSlice::Ipv4(e)) => {
                let h = e.header();
                prop_assert_eq!((h.ttl(), h.identification(), h.dont_fragment(), h.more_fragments()), (ttl, ident, df, false));
                prop_assert_eq!((IpAddr::from(h.source_addr()), IpAddr::from(h.destination_addr())), (s, d));
            }
            Some(NetSlice::Ipv6(e)) => {
                let h = e.header();
                prop_assert_eq!(h.hop_limit(), ttl);
                prop_assert_eq!((IpAddr::from(h.source_addr()), IpAddr::from(h.destination_addr())), (s, d));
            }
            other => prop_assert!(false, "{:?}", other),
        }
        match &o.sliced.transport {
            Some(TransportSlice::Tcp(t)) => {
                prop_assert_eq!((t.source_port(), t.destination_port(), t.sequence_number(), t.acknowledgment_number()), (sport, dport, seq, ack));
                prop_assert_eq!((t.slice()[13], t.window_size()), (flags, window));
                let mut padded = options[..options.len().min(40)].to_vec();
                padded.resize(padded.len().div_ceil(4) * 4, 0);
                prop_assert_eq!(t.options(), &padded[..]);
            }
            Some(TransportSlice::Udp(u)) => prop_assert_eq!((u.source_port(), u.destination_port()), (sport, dport)),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// ICMP errors about generated packets, read by etherparse: the right
    /// type and code, a valid checksum by etherparse's computation, the
    /// quote, and addressed back to the sender.
    #[test]
    fn icmp_errors_are_what_etherparse_reads(v4 in any::<bool>(), kind in 0u8..3, mtu in any::<u16>(), len in 0usize..1500) {
        let (src, dst): (IpAddr, IpAddr) = if v4 {
            ([100, 96, 1, 2].into(), [100, 96, 9, 9].into())
        } else {
            ("fd00:96:1::2".parse::<Ipv6Addr>().unwrap().into(), "fd00:96:9::9".parse::<Ipv6Addr>().unwrap().into())
        };
        let orig = Packet::new(src, dst).udp(1, 2, &vec![7; len]);
        let kind = [IcmpError::Unreachable, IcmpError::TimeExceeded, IcmpError::TooBig { mtu }][usize::from(kind)];
        let header = ip::parse(&orig).unwrap();
        let mut out = [0u8; icmp::MAX_ERROR_LEN];
        let n = icmp::build_error(kind, &orig, &header, dst, &mut out).unwrap();
        let e = SlicedPacket::from_ip(&out[..n]).unwrap();
        let (from, to) = match &e.net {
            Some(NetSlice::Ipv4(i)) => {
                let h = i.header();
                prop_assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                prop_assert_eq!(usize::from(h.total_len()), n);
                prop_assert!(n <= 576);
                (IpAddr::from(h.source_addr()), IpAddr::from(h.destination_addr()))
            }
            Some(NetSlice::Ipv6(i)) => {
                let h = i.header();
                prop_assert_eq!(40 + usize::from(h.payload_length()), n);
                (IpAddr::from(h.source_addr()), IpAddr::from(h.destination_addr()))
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!((from, to), (dst, src));
        match &e.transport {
            Some(TransportSlice::Icmpv4(i)) => {
                let want: (u8, u8) = match kind { IcmpError::Unreachable => (3, 1), IcmpError::TimeExceeded => (11, 0), IcmpError::TooBig { .. } => (3, 4) };
                prop_assert_eq!((i.type_u8(), i.code_u8()), want);
                prop_assert_eq!(i.header().icmp_type.calc_checksum(i.payload()), i.checksum());
                if let IcmpError::TooBig { mtu } = kind {
                    prop_assert_eq!(&i.slice()[6..8], &mtu.to_be_bytes()[..], "next-hop MTU (RFC 1191)");
                }
                prop_assert_eq!(i.payload(), &orig[..i.payload().len()]);
            }
            Some(TransportSlice::Icmpv6(i)) => {
                let want: (u8, u8) = match kind { IcmpError::Unreachable => (1, 0), IcmpError::TimeExceeded => (3, 0), IcmpError::TooBig { .. } => (2, 0) };
                prop_assert_eq!((i.type_u8(), i.code_u8()), want);
                let (IpAddr::V6(f), IpAddr::V6(t)) = (from, to) else { unreachable!() };
                prop_assert!(i.is_checksum_valid(f.octets(), t.octets()));
                if let IcmpError::TooBig { mtu } = kind {
                    prop_assert_eq!(&i.slice()[4..8], &u32::from(mtu).to_be_bytes()[..], "MTU (RFC 4443 §3.2)");
                }
                prop_assert_eq!(i.payload(), &orig[..i.payload().len()]);
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }
}

/// The intended differences, pinned.
#[test]
fn documented_differences_from_etherparse() {
    // IPv6 payload length 0 with bytes behind the header: a jumbogram to
    // etherparse, an empty payload to the view, refused by ip::parse.
    let mut jumbo = Packet::new("fd00::1".parse::<Ipv6Addr>().unwrap(), "fd00::2".parse::<Ipv6Addr>().unwrap()).udp(1, 2, b"abcd");
    Ipv6Packet::new_unchecked(&mut jumbo[..]).set_payload_len(0);
    assert_eq!(Ipv6Slice::from_slice(&jumbo).unwrap().payload().payload.len(), 12);
    assert!(Ipv6Packet::new_checked(&jumbo[..]).unwrap().payload().is_empty());
    assert!(ip::parse(&jumbo).is_err());
    // A UDP length of 0: both take the buffer as the datagram, but only the
    // view sums its real length into the pseudo-header (RFC 2675 §4).
    let zero_len = [0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 0, 0xde, 0xad];
    let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let theirs = UdpSlice::from_slice(&zero_len).unwrap();
    let mut ours = zero_len;
    UdpPacket::new_unchecked(&mut ours[..]).fill_checksum(&PseudoHeader::new(&[src, dst].concat(), PROTO_UDP, true));
    let real_len = theirs.to_header().calc_checksum_ipv4_raw(src, dst, theirs.payload()).unwrap();
    assert_eq!((theirs.payload().len(), UdpPacket::new_checked(&ours[..]).unwrap().payload().len()), (2, 2));
    assert_ne!(UdpPacket::new_unchecked(&ours[..]).checksum(), real_len, "etherparse sums the 0");
    // An ICMPv4 timestamp request of the wrong length: the view takes it.
    let timestamp = [13, 0, 0, 0, 0, 0, 0, 0, 1, 2];
    assert!(Icmpv4Slice::from_slice(&timestamp).is_err());
    assert!(IcmpPacket::new_checked(&timestamp[..]).is_ok());
    // A malformed IPv4 authentication header: the view carries it as payload.
    let mut ah = Packet::new([10, 0, 0, 1], [10, 0, 0, 2]).udp(1, 2, b"");
    Ipv4Packet::new_unchecked(&mut ah[..]).set_protocol(51);
    assert!(Ipv4Slice::from_slice(&ah).is_err());
    assert!(Ipv4Packet::new_checked(&ah[..]).is_ok());
}
