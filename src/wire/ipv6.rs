//! The IPv6 fixed header (RFC 8200 §3) as a view over a buffer:
//! [`Ipv6Packet`].
//!
//! [`Ipv6Packet::check_len`] accepts a buffer that starts with a version-6
//! header and holds the payload its payload length announces (bytes beyond
//! it are allowed; [`crate::wire::ip::parse`] is the stricter check the data
//! path uses). A payload length of 0 means an empty payload here: jumbograms
//! (RFC 2675) never fit a UDP datagram or a TUN read of ours. After it, no
//! accessor panics (see the [module promise](crate::wire)). Extension
//! headers are payload to this view: `next_header` is the fixed header's.

use std::net::Ipv6Addr;

use super::checksum::PseudoHeader;
use super::ip_error::IpError;
use super::{read_u16, read_u32, write_u16, write_u32};

/// Byte offsets of the header's fields.
pub mod field {
    use std::ops::Range;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// The fixed header.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>, IpError> {
        let packet = Ipv6Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a version-6 header and the payload
    /// length it announces.
    #[inline]
    pub fn check_len(&self) -> Result<(), IpError> {
        let data = self.buffer.as_ref();
        let first = *data.first().ok_or(IpError::Empty)?;
        if first >> 4 != 6 {
            return Err(IpError::BadVersion(first >> 4));
        }
        if data.len() < HEADER_LEN {
            return Err(IpError::Truncated);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > data.len() {
            return Err(IpError::LengthMismatch);
        }
        Ok(())
    }

    /// The buffer, given back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// The payload length field: the bytes after the fixed header.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN.start)
    }

    /// The header after the fixed one (`ip::PROTO_*` or an extension header).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr_at(field::SRC_ADDR.start))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr_at(field::DST_ADDR.start))
    }

    #[inline]
    fn addr_at(&self, at: usize) -> [u8; 16] {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        octets
    }

    /// The source and destination addresses as they lie in the header,
    /// what the transport pseudo-header sums.
    #[inline]
    pub fn addr_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SRC_ADDR.start..field::DST_ADDR.end]
    }

    /// The pseudo-header of a `next_header` payload in this packet
    /// (RFC 8200 §8.1), for the transport checksum.
    #[inline]
    pub fn pseudo_header(&self, next_header: u8) -> PseudoHeader {
        PseudoHeader::new(self.addr_bytes(), next_header, false)
    }

    /// The fixed header.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The payload: the payload length's bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, `traffic_class` and `flow_label` (its low 20 bits).
    #[inline]
    pub fn set_version_class_and_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW.start, word);
    }

    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::PAYLOAD_LEN.start, value);
    }

    #[inline]
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv6Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv6/TCP, fd00:96:1::2 → fd00:96:2::3, traffic class 0xb8 (EF),
    /// flow label 0x12345, hop limit 9, 4 bytes of payload.
    const PACKET: [u8; 44] = [
        0x6b, 0x81, 0x23, 0x45, // version 6, class 0xb8, flow 0x12345
        0x00, 0x04, 0x06, 0x09, // payload length 4, TCP, hop limit 9
        0xfd, 0x00, 0x00, 0x96, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // source
        0xfd, 0x00, 0x00, 0x96, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, // destination
        1, 2, 3, 4, // payload
    ];

    #[test]
    fn reads_every_field() {
        let p = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0xb8, 0x12345));
        assert_eq!((p.payload_len(), p.next_header(), p.hop_limit()), (4, 6, 9));
        assert_eq!(p.src_addr(), "fd00:96:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fd00:96:2::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.addr_bytes(), &PACKET[8..40]);
        assert_eq!(p.header(), &PACKET[..40]);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn writes_the_same_bytes() {
        let mut buf = [0u8; 44];
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version_class_and_flow(0xb8, 0x12345);
        p.set_payload_len(4);
        p.set_next_header(6);
        p.set_hop_limit(9);
        p.set_src_addr("fd00:96:1::2".parse().unwrap());
        p.set_dst_addr("fd00:96:2::3".parse().unwrap());
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn refuses_short_or_lying_headers() {
        let check = |b: &[u8]| Ipv6Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&[]), Err(IpError::Empty));
        assert_eq!(check(&[0x45; 60]), Err(IpError::BadVersion(4)));
        assert_eq!(check(&PACKET[..39]), Err(IpError::Truncated));
        assert_eq!(check(&PACKET[..43]), Err(IpError::LengthMismatch), "payload length beyond the buffer");
        let mut padded = PACKET.to_vec();
        padded.push(0);
        assert_eq!(Ipv6Packet::new_checked(&padded[..]).unwrap().payload(), &[1, 2, 3, 4]);
    }
}
