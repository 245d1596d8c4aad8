//! flannel's udp backend format: the UDP payload is the raw inner IPv4 or
//! IPv6 packet, nothing in front (flannel `pkg/backend/udp`, default port
//! 8285). Whether the payload is a well-formed IP packet is the ingress
//! filter's question, asked the same way for every format.

use super::{EncapHeader, Unwrapped, WireFormat};
use crate::route::Route;
use crate::stats::DropReason;
use crate::wire::arp::Arp;

/// Raw IP in UDP.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlannelUdp;

impl WireFormat for FlannelUdp {
    const HEADER_LEN: usize = 0;
    /// flanneld and encapd always send full checksums.
    const PARTIAL_CHECKSUMS: bool = false;

    #[inline]
    fn header(&self, _route: &Route) -> EncapHeader {
        EncapHeader::EMPTY
    }

    #[inline]
    fn unwrap(&self, datagram: &[u8]) -> Result<Unwrapped, DropReason> {
        Ok(Unwrapped::Packet(0..datagram.len()))
    }

    fn arp_reply(&self, _request: &Arp, _out: &mut [u8]) -> Option<usize> {
        None
    }
}
