//! `wire::icmp::build_error` and `datapath::packet::icmp_reply` on arbitrary
//! offending packets, error kinds, sources and output buffer sizes. Every
//! error built must be read by etherparse as a well-formed packet whose
//! checksums (IPv4 header, ICMP / ICMPv6 with its pseudo-header) are right
//! by etherparse's computation, go back to the sender, quote the offending
//! packet and respect the RFC size limits; and an error must be built
//! exactly when the RFC 1812 §4.3.2.7 / RFC 4443 §2.4(e) rules allow one,
//! judged on etherparse's reading of the offending packet.
//!
//! Input: byte 0 = kind (bits 0-1) and flags (bit 2: make the IP length field
//! match, bit 3: pass a source of the other family to `build_error`, bit 4: a
//! too-small output buffer), bytes 1-2 = MTU for "too big", then the packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::oracle::{IpFacts, PROTO_ICMP, PROTO_ICMPV6, assert_icmp_error_ok, ip_verdict};
use crate::shape::fix_ip_length;
use encapd::datapath::packet::icmp_reply;
use encapd::wire::icmp::{IcmpError, MAX_ERROR_LEN, build_error};
use encapd::wire::ip;

/// Whether the rules allow an error about this packet at all.
fn may_answer(packet: &[u8], h: &IpFacts) -> bool {
    match h.src {
        IpAddr::V4(src) => {
            if src.is_unspecified() || src.is_multicast() || src.is_broadcast() || h.fragment_offset != 0 {
                return false;
            }
            h.protocol != PROTO_ICMP || packet.get(h.header_len).is_some_and(|t| !matches!(t, 3 | 4 | 5 | 11 | 12))
        }
        IpAddr::V6(src) => {
            if src.is_unspecified() || src.is_multicast() {
                return false;
            }
            h.protocol != PROTO_ICMPV6 || packet.get(h.header_len).is_some_and(|&t| t >= 128)
        }
    }
}

fn check(kind: IcmpError, reply: &[u8], packet: &[u8], from: IpAddr) {
    let (icmp_type, code, rest) = assert_icmp_error_ok(reply, packet, from);
    let want = match (kind, from.is_ipv4()) {
        (IcmpError::Unreachable, true) => (3, 1),
        (IcmpError::TimeExceeded, true) => (11, 0),
        (IcmpError::TooBig { .. }, true) => (3, 4),
        (IcmpError::Unreachable, false) => (1, 0),
        (IcmpError::TimeExceeded, false) => (3, 0),
        (IcmpError::TooBig { .. }, false) => (2, 0),
    };
    assert_eq!((icmp_type, code), want, "type and code of {kind:?}");
    // The MTU: in the low 16 bits for ICMP (RFC 1191), all 32 for ICMPv6 (RFC 4443 §3.2).
    let mtu = if let IcmpError::TooBig { mtu } = kind { u32::from(mtu) } else { 0 };
    assert_eq!(u32::from_be_bytes(rest), mtu, "the four bytes after the checksum");
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let (sel, mtu) = (data[0], u16::from_be_bytes([data[1], data[2]]));
    let kind = match sel & 3 {
        0 => IcmpError::Unreachable,
        1 => IcmpError::TimeExceeded,
        _ => IcmpError::TooBig { mtu },
    };
    let mut packet = data[3..].to_vec();
    if sel & 4 != 0 {
        fix_ip_length(&mut packet);
    }
    let small = sel & 16 != 0;
    let mut out = vec![0u8; if small { MAX_ERROR_LEN - 1 } else { MAX_ERROR_LEN + 7 }];

    // The data path's entry point: sourced from the offending destination.
    let got = icmp_reply(kind, &packet, &mut out);
    let Ok(h) = ip_verdict(&packet) else {
        assert_eq!(got, None, "an error about an unparsable packet");
        return;
    };
    let expect = !small && may_answer(&packet, &h);
    assert_eq!(got.is_some(), expect, "icmp_reply answered {got:?}, rules say {expect} ({h:?})");
    if let Some(n) = got {
        check(kind, &out[..n], &packet, h.dst);
    }

    // build_error itself, from an arbitrary source of the same or the other family.
    let same = sel & 8 == 0;
    let tail = |k: usize| packet.get(packet.len().saturating_sub(k)..).unwrap_or_default().to_vec();
    let from = match (h.ipv4, same) {
        (true, true) | (false, false) => {
            let t = tail(4);
            IpAddr::V4(Ipv4Addr::new(*t.first().unwrap_or(&1), *t.get(1).unwrap_or(&2), *t.get(2).unwrap_or(&3), *t.get(3).unwrap_or(&4)))
        }
        _ => {
            let mut o = [0u8; 16];
            for (d, s) in o.iter_mut().zip(tail(16)) {
                *d = s;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    };
    out.fill(0);
    let header = ip::parse(&packet).expect("ip::parse accepts what the oracle accepts (the ingress target checks it)");
    let got = build_error(kind, &packet, &header, from, &mut out);
    assert_eq!(got.is_some(), expect && same, "build_error from {from} answered {got:?}");
    if let Some(n) = got {
        check(kind, &out[..n], &packet, from);
    }
}
