//! The wire format seam: how an inner IP packet travels inside a UDP
//! datagram. The forwarding core asks a [`WireFormat`] for the bytes that go
//! in front of each inner packet on egress and for the inner packet inside a
//! datagram on ingress; everything else (classification, the ingress filter,
//! GSO runs, coalescing, counting) is the same for every format.
//!
//! Formats: [`flannel_udp`] (flannel's udp backend: the UDP payload is the
//! inner packet, nothing in front) and [`vxlan`] (flannel's vxlan backend, as
//! a kernel VTEP speaks it: VXLAN and Ethernet headers in front, and ARP
//! between VTEPs).

pub mod flannel_udp;
pub mod vxlan;

use std::ops::Range;

use crate::route::Route;
use crate::stats::DropReason;
use crate::wire::arp::Arp;

/// What one received datagram holds, once unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unwrapped {
    /// An inner IP packet, at this range of the datagram.
    Packet(Range<usize>),
    /// A peer VTEP asks which MAC an address has (VXLAN): the core checks
    /// who asks and for what, and answers with [`WireFormat::arp_reply`].
    ArpRequest(Arp),
}

/// Most bytes a format puts in front of an inner packet (what the send
/// paths of `sys` leave room for).
pub const MAX_HEADER: usize = crate::sys::udp::MAX_ENCAP_HEADER;

/// The bytes a format puts in front of every inner packet sent along one
/// route; the same for every packet of a GSO run (one run, one route).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncapHeader {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl EncapHeader {
    pub const EMPTY: EncapHeader = EncapHeader { bytes: [0; MAX_HEADER], len: 0 };

    /// A header of `bytes` (at most [`MAX_HEADER`] long; longer is cut).
    pub fn new(bytes: &[u8]) -> EncapHeader {
        let len = bytes.len().min(MAX_HEADER);
        let mut p = EncapHeader { bytes: [0; MAX_HEADER], len: len as u8 };
        p.bytes[..len].copy_from_slice(&bytes[..len]);
        p
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One encapsulation format, as the forwarding core uses it. Pure: no I/O.
pub trait WireFormat {
    /// Bytes in front of every inner packet inside the UDP payload.
    const HEADER_LEN: usize;

    /// Peers may send inner packets whose transport checksum holds only the
    /// pseudo-header sum (a kernel VTEP whose packets crossed veth); the
    /// core completes those on receive.
    const PARTIAL_CHECKSUMS: bool;

    /// The header for packets sent along `route`.
    fn header(&self, route: &Route) -> EncapHeader;

    /// What one received datagram (not a GRO run: one datagram) holds, or
    /// why it is dropped.
    fn unwrap(&self, datagram: &[u8]) -> Result<Unwrapped, DropReason>;

    /// The datagram answering `request` with this node's VTEP MAC, written
    /// into `out` (at least [`MAX_REPLY`] bytes); its length. `None` for a
    /// format without address resolution.
    fn arp_reply(&self, request: &Arp, out: &mut [u8]) -> Option<usize>;
}

/// Room for the longest reply a format builds (VXLAN + Ethernet + ARP).
pub const MAX_REPLY: usize = 64;
