//! Crafted packets and the sockets that carry them. The packets come from
//! encapd's own builder (`encapd::wire::build`, re-exported here), the one
//! packet builder of the crate: well-formed IPv4/IPv6 with UDP or TCP and
//! correct lengths and checksums. A test that needs a malformed packet
//! builds a good one and breaks it itself, where the reader sees how.

use std::net::UdpSocket;

pub use encapd::wire::build::{Packet, Tcp, fix_ipv4_header_checksum, fix_transport_checksum, transport_checksum_ok};

use crate::netns::in_netns;

/// A UDP socket bound to address `addr` (port chosen by the kernel) in
/// namespace `ns`: e.g. nodeB's underlay address, to send datagrams to
/// nodeA's encapd as its peer would.
pub fn udp_socket(ns: &str, addr: &str) -> UdpSocket {
    in_netns(ns, || UdpSocket::bind((addr, 0))).unwrap_or_else(|e| panic!("binding a UDP socket to {addr} in {ns}: {e}"))
}
