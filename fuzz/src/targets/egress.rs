//! `datapath::packet::classify_egress` on arbitrary TUN reads, compared with a
//! reference model of the router's decision on etherparse's reading of the
//! packet ([`crate::oracle::ip_verdict`]); then the in-place edit is checked
//! with etherparse (on `Forward` every header field and the payload stay as
//! they were but the TTL, one less, and the IPv4 header checksum, which
//! still verifies if it did; on `Reject` nothing changes), and every ICMP
//! error it asks for is built with `icmp_reply` and verified with
//! etherparse.
//!
//! Input: byte 0 = flags (bit 0: make the IP length field match the bytes,
//! bit 1: make the IPv4 header checksum valid, bit 2: the packet is a GSO
//! super-packet), then the packet.

use std::net::IpAddr;
use std::sync::LazyLock;

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};

use crate::oracle::{assert_icmp_error_ok, ip_verdict};
use crate::shape::{fix_ip_length, fix_ipv4_checksum};
use crate::{in_own_subnets, naive_lookup};
use encapd::datapath::packet::{Egress, NodeScope, classify_egress, icmp_reply};
use encapd::route::SubnetTable;
use encapd::stats::DropReason;
use encapd::wire::icmp::{IcmpError, MAX_ERROR_LEN};
use encapd::wire::ip::IpError;

static FIXTURE: LazyLock<(SubnetTable, NodeScope)> = LazyLock::new(|| (crate::table(), crate::node()));

fn forwardable(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_link_local() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unicast_link_local() || a.is_unspecified()),
    }
}

/// What the router must decide, from the specification.
fn reference(packet: &[u8], gso: bool, max_inner: usize) -> Egress {
    let reject = |reason, icmp| Egress::Reject { reason, icmp };
    let h = match ip_verdict(packet) {
        Ok(h) => h,
        Err(IpError::Empty | IpError::BadVersion(_)) => return reject(DropReason::Malformed, None),
        Err(IpError::Truncated) => return reject(DropReason::Truncated, None),
        Err(IpError::BadHeaderLength) => return reject(DropReason::BadHeaderLength, None),
        Err(IpError::LengthMismatch) => return reject(DropReason::LengthMismatch, None),
    };
    if !forwardable(h.dst) {
        return reject(DropReason::NotForwardable, None);
    }
    if in_own_subnets(h.dst) {
        return reject(DropReason::LocalDestination, Some(IcmpError::Unreachable));
    }
    if h.ttl <= 1 {
        return reject(DropReason::TtlExpired, Some(IcmpError::TimeExceeded));
    }
    let Some(to) = naive_lookup(h.dst) else { return reject(DropReason::NoRoute, Some(IcmpError::Unreachable)) };
    if packet.len() > max_inner && !gso {
        return reject(DropReason::TooBig, Some(IcmpError::TooBig { mtu: max_inner as u16 }));
    }
    Egress::Forward(to)
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut packet = rest.to_vec();
    if flags & 1 != 0 {
        fix_ip_length(&mut packet);
    }
    if flags & 2 != 0 {
        fix_ipv4_checksum(&mut packet);
    }
    let gso = flags & 4 != 0;
    let (table, node) = &*FIXTURE;
    let before = packet.clone();
    let verdict = classify_egress(&mut packet, table, node, gso);
    assert_eq!(packet.len(), before.len(), "classify_egress changed the packet length");
    assert_eq!(verdict, reference(&before, gso, node.max_inner), "classify_egress disagrees with the reference model");

    match verdict {
        Egress::Forward(_) => assert_only_ttl_changed(&before, &packet),
        Egress::Reject { icmp, .. } => {
            assert_eq!(packet, before, "a rejected packet must be left untouched");
            if let Some(kind) = icmp {
                let h = ip_verdict(&packet).expect("only well-formed packets get an ICMP error");
                let mut out = [0u8; MAX_ERROR_LEN];
                if let Some(n) = icmp_reply(kind, &packet, &mut out) {
                    assert!(n <= out.len());
                    assert_icmp_error_ok(&out[..n], &packet, h.dst);
                }
            }
        }
    }
}

/// A forwarded packet, read by etherparse before and after: the TTL is one
/// less, every other header field, the options and the payload are as they
/// were, and an IPv4 header checksum that verified still verifies.
fn assert_only_ttl_changed(before: &[u8], after: &[u8]) {
    assert_eq!(before.len(), after.len());
    let (b, a) = (ip_verdict(before).expect("forwarded packet parses"), ip_verdict(after).expect("forwarded packet still parses"));
    assert_eq!(a.ttl, b.ttl - 1, "TTL decremented by one");
    assert_eq!(after[b.header_len..], before[b.header_len..], "the payload changed on forward");
    if b.ipv4 {
        let (mut b, a) =
            (Ipv4HeaderSlice::from_slice(before).unwrap().to_header(), Ipv4HeaderSlice::from_slice(after).unwrap().to_header());
        let verified = b.calc_header_checksum() == b.header_checksum;
        b.time_to_live -= 1;
        b.header_checksum = a.header_checksum;
        assert_eq!(a, b, "IPv4 header fields other than TTL and checksum changed on forward");
        if verified {
            assert_eq!(a.calc_header_checksum(), a.header_checksum, "IPv4 header checksum no longer verifies after the TTL decrement");
        }
    } else {
        let (mut b, a) =
            (Ipv6HeaderSlice::from_slice(before).unwrap().to_header(), Ipv6HeaderSlice::from_slice(after).unwrap().to_header());
        b.hop_limit -= 1;
        assert_eq!(a, b, "IPv6 header fields other than the hop limit changed on forward");
    }
}
