//! The wire format seam: how an inner IP packet travels inside a UDP
//! datagram. The forwarding core asks a [`WireFormat`] for the bytes that go
//! in front of each inner packet on egress and for the inner packet inside a
//! datagram on ingress; everything else (classification, the ingress filter,
//! GSO runs, coalescing, counting) is the same for every format.
//!
//! Formats: [`flannel_udp`] (flannel's udp backend: the UDP payload is the
//! inner packet, nothing in front).

pub mod flannel_udp;

use std::ops::Range;

use crate::route::Route;
use crate::stats::DropReason;

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

    /// The header for packets sent along `route`.
    fn header(&self, route: &Route) -> EncapHeader;

    /// Where the inner packet lies within one received datagram (not a GRO
    /// run: one datagram), or why the datagram is dropped.
    fn inner(&self, datagram: &[u8]) -> Result<Range<usize>, DropReason>;
}
