//! flannel's udp backend format: the UDP payload is the raw inner IPv4 or
//! IPv6 packet, nothing in front (flannel `pkg/backend/udp`, default port
//! 8285). Whether the payload is a well-formed IP packet is the ingress
//! filter's question, asked the same way for every format.

use std::ops::Range;

use super::{EncapHeader, WireFormat};
use crate::route::Route;
use crate::stats::DropReason;

/// Raw IP in UDP.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlannelUdp;

impl WireFormat for FlannelUdp {
    const HEADER_LEN: usize = 0;

    #[inline]
    fn header(&self, _route: &Route) -> EncapHeader {
        EncapHeader::EMPTY
    }

    #[inline]
    fn inner(&self, datagram: &[u8]) -> Result<Range<usize>, DropReason> {
        Ok(0..datagram.len())
    }
}
