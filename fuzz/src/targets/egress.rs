//! `datapath::packet::classify_egress` on arbitrary TUN reads, compared with a
//! reference model of the router's decision; then the in-place edit is
//! checked (only the TTL and the IPv4 header checksum may change, and only on
//! `Forward`), and every ICMP error it asks for is built with `icmp_reply` and
//! verified.
//!
//! Input: byte 0 = flags (bit 0: make the IP length field match the bytes,
//! bit 1: make the IPv4 header checksum valid, bit 2: the packet is a GSO
//! super-packet), then the packet.

use std::net::IpAddr;
use std::sync::LazyLock;

use crate::{assert_icmp_error_ok, fix_ip_length, fix_ipv4_checksum, in_own_subnets, naive_lookup};
use encapd::datapath::packet::{Egress, NodeScope, classify_egress, icmp_reply};
use encapd::route::SubnetTable;
use encapd::stats::DropReason;
use encapd::wire::checksum;
use encapd::wire::icmp::{IcmpError, MAX_ERROR_LEN};
use encapd::wire::ip::{self, IpError};

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
    let h = match ip::parse(packet) {
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
        Egress::Forward(_) => {
            let h = ip::parse(&before).expect("forwarded packet parses");
            let after = ip::parse(&packet).expect("forwarded packet still parses after the TTL decrement");
            assert_eq!(after.ttl, h.ttl - 1, "TTL decremented by one");
            assert_eq!((after.src, after.dst, after.protocol, after.total_len), (h.src, h.dst, h.protocol, h.total_len));
            let may_change: &[usize] = if h.is_ipv4() { &[8, 10, 11] } else { &[7] };
            for (i, (a, b)) in before.iter().zip(&packet).enumerate() {
                assert!(a == b || may_change.contains(&i), "byte {i} changed ({a:#04x} -> {b:#04x}) on forward");
            }
            if h.is_ipv4() && checksum::checksum(&before[..h.header_len]) == 0 {
                assert_eq!(
                    checksum::checksum(&packet[..h.header_len]),
                    0,
                    "IPv4 header checksum no longer verifies after the TTL decrement"
                );
            }
        }
        Egress::Reject { icmp, .. } => {
            assert_eq!(packet, before, "a rejected packet must be left untouched");
            if let Some(kind) = icmp {
                let h = ip::parse(&packet).expect("only parsed packets get an ICMP error");
                let mut out = [0u8; MAX_ERROR_LEN];
                if let Some(n) = icmp_reply(kind, &packet, &mut out) {
                    assert!(n <= out.len());
                    assert_icmp_error_ok(&out[..n], &packet, h.dst);
                }
            }
        }
    }
}
