//! `datapath::packet::check_ingress` on arbitrary datagram payloads from
//! known, unknown and arbitrary underlay senders, compared with a reference
//! model of the filter: etherparse's reading of the packet
//! ([`crate::oracle::ip_verdict`]) and a linear-scan longest-prefix match
//! over the fixed peers. `wire::ip::parse` itself is compared with
//! etherparse too: the same verdict, and on success the same fields.
//!
//! Input: byte 0 = flags (bit 0: make the IP length field match the bytes),
//! then a sender selector (see `pick_sender`), then the inner packet.

use std::net::IpAddr;
use std::sync::LazyLock;

use crate::oracle::ip_verdict;
use crate::shape::fix_ip_length;
use crate::{PEER_B, PEER_C, in_own_subnets, naive_lookup, pick_sender};
use encapd::datapath::packet::{NodeScope, check_ingress};
use encapd::route::SubnetTable;
use encapd::stats::DropReason;
use encapd::wire::ip::{self, IpError};

static FIXTURE: LazyLock<(SubnetTable, NodeScope)> = LazyLock::new(|| (crate::table(), crate::node()));

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (sender, used) = pick_sender(rest);
    let mut packet = rest[used..].to_vec();
    if flags & 1 != 0 {
        fix_ip_length(&mut packet);
    }
    let (table, node) = &*FIXTURE;
    assert_parse_agrees(&packet);
    let got = check_ingress(sender, &packet, table, node);

    let expected = if sender != IpAddr::V4(PEER_B) && sender != IpAddr::V4(PEER_C) {
        Err(DropReason::UnknownSender)
    } else {
        match ip_verdict(&packet) {
            Err(IpError::Empty | IpError::BadVersion(_)) => Err(DropReason::Malformed),
            Err(IpError::Truncated) => Err(DropReason::Truncated),
            Err(IpError::BadHeaderLength) => Err(DropReason::BadHeaderLength),
            Err(IpError::LengthMismatch) => Err(DropReason::LengthMismatch),
            Ok(h) => {
                if naive_lookup(h.src).map(|r| r.endpoint.ip()) != Some(sender) {
                    Err(DropReason::SpoofedSource)
                } else if !in_own_subnets(h.dst) {
                    Err(DropReason::WrongDestination)
                } else {
                    Ok(())
                }
            }
        }
    };
    assert_eq!(got, expected, "check_ingress from {sender} disagrees with the reference model");

    if got.is_ok() {
        // Everything accepted is well-formed per etherparse, for us, from the sender's subnet.
        let h = ip_verdict(&packet).expect("accepted packet must parse");
        assert!(node.is_own(h.dst) && in_own_subnets(h.dst), "accepted packet for {} is not for this node", h.dst);
        assert_eq!(table.lookup(h.src).map(|r| r.endpoint.ip()), Some(sender));
        assert!(h.header_len <= packet.len());
    }
}

/// `wire::ip::parse` gives etherparse's verdict, and on success the same
/// header fields.
fn assert_parse_agrees(packet: &[u8]) {
    match (ip::parse(packet), ip_verdict(packet)) {
        (Ok(h), Ok(f)) => {
            assert_eq!(
                (h.src, h.dst, h.ttl, h.protocol),
                (f.src, f.dst, f.ttl, f.protocol),
                "ip::parse reads other fields than etherparse"
            );
            assert_eq!(
                (h.header_len, h.total_len, h.fragment_offset, h.dont_fragment),
                (f.header_len, packet.len(), f.fragment_offset, f.dont_fragment)
            );
            assert_eq!(h.is_ipv4(), f.ipv4);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "ip::parse and the oracle refuse for different reasons"),
        (got, want) => panic!("ip::parse says {got:?}, etherparse and the documented rules {want:?}"),
    }
}
