//! Per-packet decisions, pure: what to do with a packet read from the TUN
//! (egress) and whether to accept a datagram from the underlay (ingress).
//! No syscalls, no clock, no allocation; the engines call these and do the I/O.
//!
//! ICMP errors we generate are written back into the TUN, so the kernel
//! delivers them to the sending container. Their source address is the
//! destination of the offending packet: encapd owns no overlay address, and a
//! local address (what flannel's proxy uses) makes the kernel drop the reply
//! as a martian. The destination is routed through the TUN, so it passes
//! reverse-path filtering. The cost: traceroute shows the destination's
//! address at encapd's hop.

use std::net::IpAddr;

use crate::route::{Prefix, Route, SubnetTable};
use crate::stats::DropReason;
use crate::wire::icmp::{self, IcmpError};
use crate::wire::ip::{self, IpError, IpHeader};

/// The node facts every packet decision needs.
#[derive(Debug, Clone)]
pub struct NodeScope {
    pub own_v4: Prefix,
    pub own_v6: Option<Prefix>,
    /// The largest inner packet one datagram can carry (underlay MTU minus
    /// encapsulation overhead); larger ones get "fragmentation needed".
    pub max_inner: usize,
}

impl NodeScope {
    #[inline]
    pub fn is_own(&self, ip: IpAddr) -> bool {
        self.own_v4.contains(ip) || self.own_v6.is_some_and(|p| p.contains(ip))
    }
}

/// What to do with a packet read from the TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Send it (TTL already decremented) along this route.
    Forward(Route),
    /// Drop it for `reason`; answer the sender with `icmp` if given.
    Reject { reason: DropReason, icmp: Option<IcmpError> },
}

/// Maps a parse failure to its drop counter.
pub fn parse_drop_reason(e: IpError) -> DropReason {
    match e {
        IpError::Empty | IpError::BadVersion(_) => DropReason::Malformed,
        IpError::Truncated => DropReason::Truncated,
        IpError::BadHeaderLength => DropReason::BadHeaderLength,
        IpError::LengthMismatch => DropReason::LengthMismatch,
    }
}

/// Decides the fate of one packet from the TUN; on `Forward` the packet's TTL
/// has been decremented in place. A GSO super-packet (`gso`) is exempt from
/// the size check: its segments are checked after the split.
#[inline]
pub fn classify_egress(packet: &mut [u8], table: &SubnetTable, node: &NodeScope, gso: bool) -> Egress {
    let header = match ip::parse(packet) {
        Ok(h) => h,
        Err(e) => return Egress::Reject { reason: parse_drop_reason(e), icmp: None },
    };
    if !is_forwardable(header.dst) {
        return Egress::Reject { reason: DropReason::NotForwardable, icmp: None };
    }
    if node.is_own(header.dst) {
        // The kernel routes our own subnet to the bridge; one that reaches the
        // TUN has no container behind it, and sending it out would loop.
        return Egress::Reject { reason: DropReason::LocalDestination, icmp: Some(IcmpError::Unreachable) };
    }
    if header.ttl <= 1 {
        return Egress::Reject { reason: DropReason::TtlExpired, icmp: Some(IcmpError::TimeExceeded) };
    }
    let Some(route) = table.lookup(header.dst) else {
        return Egress::Reject { reason: DropReason::NoRoute, icmp: Some(IcmpError::Unreachable) };
    };
    if packet.len() > node.max_inner && !gso {
        let mtu = node.max_inner.min(usize::from(u16::MAX)) as u16;
        return Egress::Reject { reason: DropReason::TooBig, icmp: Some(IcmpError::TooBig { mtu }) };
    }
    ip::decrement_ttl(packet, &header);
    Egress::Forward(*route)
}

/// False for destinations a router never forwards: multicast, limited
/// broadcast, link-local, unspecified.
#[inline]
fn is_forwardable(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_link_local() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unicast_link_local() || a.is_unspecified()),
    }
}

/// Builds the ICMP error for a rejected egress packet into `out` (at least
/// [`icmp::MAX_ERROR_LEN`] bytes). `None` when no error may be sent.
pub fn icmp_reply(kind: IcmpError, offending: &[u8], out: &mut [u8]) -> Option<usize> {
    let header: IpHeader = ip::parse(offending).ok()?;
    icmp::build_error(kind, offending, &header, header.dst, out)
}

/// Accepts a datagram payload from `sender` for the TUN, or says why not.
/// Accepted: the sender is a peer's public IP, the payload is one well-formed
/// IP packet, its source lies in a subnet that this very sender owns, and its
/// destination lies in one of our subnets.
#[inline]
pub fn check_ingress(sender: IpAddr, packet: &[u8], table: &SubnetTable, node: &NodeScope) -> Result<(), DropReason> {
    if !table.is_known_sender(sender) {
        return Err(DropReason::UnknownSender);
    }
    let header = ip::parse(packet).map_err(parse_drop_reason)?;
    match table.lookup(header.src) {
        Some(route) if route.endpoint.ip() == sender => {}
        _ => return Err(DropReason::SpoofedSource),
    }
    if !node.is_own(header.dst) {
        return Err(DropReason::WrongDestination);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::route::{PeerSpec, TableScope};
    use crate::wire::ip::tests::{ipv4_udp, ipv6_udp};
    use crate::wire::{Ipv4Packet, Ipv6Packet};

    fn node() -> NodeScope {
        NodeScope { own_v4: "100.96.1.0/24".parse().unwrap(), own_v6: Some("fd00:96:1::/64".parse().unwrap()), max_inner: 1472 }
    }

    fn table() -> SubnetTable {
        let scope = TableScope {
            own: vec!["100.96.1.0/24".parse().unwrap()],
            networks: vec!["100.96.0.0/16".parse().unwrap(), "fd00:96::/32".parse().unwrap()],
            underlay_ipv4: true,
        };
        let peer = |s: &str, ip: &str| PeerSpec {
            wireguard: None,
            vtep_mac: None,
            kernel_decap: false,
            subnet: s.parse().unwrap(),
            endpoint: SocketAddr::new(ip.parse().unwrap(), 8285),
            origin: s.into(),
        };
        SubnetTable::build(
            1,
            &scope,
            &[peer("100.96.2.0/24", "198.18.0.2"), peer("fd00:96:2::/64", "198.18.0.2"), peer("100.96.3.0/24", "198.18.0.3")],
        )
        .unwrap()
    }

    const B: &str = "198.18.0.2";

    #[test]
    fn forwards_and_decrements_ttl() {
        let mut p = ipv4_udp([100, 96, 1, 2], [100, 96, 2, 3], 64, 100);
        let to_b = |subnet: &str| {
            Egress::Forward(Route {
                vtep_mac: None,
                kernel_decap: false,
                public_key: None,
                subnet: subnet.parse().unwrap(),
                endpoint: "198.18.0.2:8285".parse().unwrap(),
            })
        };
        assert_eq!(classify_egress(&mut p, &table(), &node(), false), to_b("100.96.2.0/24"));
        let v4 = Ipv4Packet::new_checked(&p).unwrap();
        assert_eq!(v4.ttl(), 63);
        assert!(v4.verify_checksum(), "the header checksum follows the TTL");
        let mut p6 = ipv6_udp("fd00:96:1::2".parse().unwrap(), "fd00:96:2::3".parse().unwrap(), 64, 10);
        assert_eq!(classify_egress(&mut p6, &table(), &node(), false), to_b("fd00:96:2::/64"));
        assert_eq!(Ipv6Packet::new_checked(&p6).unwrap().hop_limit(), 63);
    }

    #[test]
    fn rejects_with_the_right_icmp() {
        let (t, n) = (table(), node());
        let reject = |reason, icmp| Egress::Reject { reason, icmp };
        let mut p = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 64, 10);
        assert_eq!(classify_egress(&mut p, &t, &n, false), reject(DropReason::NoRoute, Some(IcmpError::Unreachable)));
        let mut p = ipv4_udp([100, 96, 1, 2], [100, 96, 2, 3], 1, 10);
        assert_eq!(classify_egress(&mut p, &t, &n, false), reject(DropReason::TtlExpired, Some(IcmpError::TimeExceeded)));
        let mut p = ipv4_udp([100, 96, 1, 2], [100, 96, 2, 3], 64, 1500);
        assert_eq!(classify_egress(&mut p, &t, &n, false), reject(DropReason::TooBig, Some(IcmpError::TooBig { mtu: 1472 })));
        let mut p = ipv4_udp([100, 96, 1, 2], [100, 96, 1, 9], 64, 10);
        assert_eq!(classify_egress(&mut p, &t, &n, false), reject(DropReason::LocalDestination, Some(IcmpError::Unreachable)));
        let mut p = vec![0x45, 0, 0];
        assert_eq!(classify_egress(&mut p, &t, &n, false), reject(DropReason::Truncated, None));
        let mut mld = ipv6_udp("fe80::1".parse().unwrap(), "ff02::16".parse().unwrap(), 1, 10);
        assert_eq!(classify_egress(&mut mld, &t, &n, false), reject(DropReason::NotForwardable, None));
        let mut bcast = ipv4_udp([100, 96, 1, 2], [255, 255, 255, 255], 1, 10);
        assert_eq!(classify_egress(&mut bcast, &t, &n, false), reject(DropReason::NotForwardable, None));
    }

    #[test]
    fn icmp_reply_goes_back_to_the_sender() {
        let p = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 64, 10);
        let mut out = [0u8; icmp::MAX_ERROR_LEN];
        let n = icmp_reply(IcmpError::Unreachable, &p, &mut out).unwrap();
        let h = ip::parse(&out[..n]).unwrap();
        assert_eq!(h.dst, "100.96.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.src, "100.96.9.9".parse::<IpAddr>().unwrap(), "sourced from the unreachable destination, never a local address");
    }

    #[test]
    fn ingress_filter_reasons() {
        let (t, n) = (table(), node());
        let from_b: IpAddr = B.parse().unwrap();
        let good = ipv4_udp([100, 96, 2, 3], [100, 96, 1, 2], 63, 10);
        assert_eq!(check_ingress(from_b, &good, &t, &n), Ok(()));
        let good6 = ipv6_udp("fd00:96:2::3".parse().unwrap(), "fd00:96:1::2".parse().unwrap(), 63, 10);
        assert_eq!(check_ingress(from_b, &good6, &t, &n), Ok(()));
        assert_eq!(check_ingress("198.18.0.66".parse().unwrap(), &good, &t, &n), Err(DropReason::UnknownSender));
        // Peer C (198.18.0.3) claiming to be from B's subnet.
        assert_eq!(check_ingress("198.18.0.3".parse().unwrap(), &good, &t, &n), Err(DropReason::SpoofedSource));
        let unowned = ipv4_udp([100, 96, 77, 3], [100, 96, 1, 2], 63, 10);
        assert_eq!(check_ingress(from_b, &unowned, &t, &n), Err(DropReason::SpoofedSource));
        let elsewhere = ipv4_udp([100, 96, 2, 3], [100, 96, 3, 2], 63, 10);
        assert_eq!(check_ingress(from_b, &elsewhere, &t, &n), Err(DropReason::WrongDestination));
        assert_eq!(check_ingress(from_b, &[], &t, &n), Err(DropReason::Malformed));
        assert_eq!(check_ingress(from_b, &[0x75; 40], &t, &n), Err(DropReason::Malformed));
        assert_eq!(check_ingress(from_b, &good[..10], &t, &n), Err(DropReason::Truncated));
        assert_eq!(check_ingress(from_b, &good[..30], &t, &n), Err(DropReason::LengthMismatch));
        let mut bad_ihl = good.clone();
        Ipv4Packet::new_unchecked(&mut bad_ihl).set_version_and_header_len(12);
        assert_eq!(check_ingress(from_b, &bad_ihl, &t, &n), Err(DropReason::BadHeaderLength));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic either direction, and nothing the
        /// filter accepts fails to parse.
        #[test]
        fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let (t, n) = (table(), node());
            if check_ingress(B.parse().unwrap(), &data, &t, &n).is_ok() {
                proptest::prop_assert!(ip::parse(&data).is_ok());
            }
            let _ = classify_egress(&mut data, &t, &n, false);
        }
    }
}
