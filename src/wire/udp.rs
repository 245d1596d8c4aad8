//! The UDP header (RFC 768) as a view over a buffer: [`UdpPacket`].
//!
//! [`UdpPacket::check_len`] accepts a buffer of at least 8 bytes whose
//! length field is 8 or more and fits the buffer, or is 0, which (as
//! etherparse and RFC 2675 §4 read it) leaves the length to the IP layer:
//! the datagram is then the whole buffer. Bytes beyond the length are not
//! payload. After it, no accessor panics (see the
//! [module promise](crate::wire)).

use super::checksum;
use super::checksum::PseudoHeader;
use super::{read_u16, write_u16};

/// Byte offsets of the header's fields.
pub mod field {
    use std::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    /// Header and payload, in bytes.
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

pub const HEADER_LEN: usize = 8;

/// Why bytes are not a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("shorter than the 8-byte UDP header")]
    Truncated,
    #[error("UDP length {0} is below 8 or beyond the datagram")]
    BadLength(u16),
}

/// A view of a UDP datagram in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, UdpError> {
        let packet = UdpPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and the length it announces.
    #[inline]
    pub fn check_len(&self) -> Result<(), UdpError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(UdpError::Truncated);
        }
        let len = self.len();
        if len != 0 && (usize::from(len) < HEADER_LEN || usize::from(len) > data.len()) {
            return Err(UdpError::BadLength(len));
        }
        Ok(())
    }

    /// The buffer, given back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The length field (header and payload; 0: see the module documentation).
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a header field, not a collection
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The datagram's length in bytes: the length field, or the whole
    /// buffer when it is 0.
    #[inline]
    pub fn datagram_len(&self) -> usize {
        match self.len() {
            0 => self.buffer.as_ref().len(),
            n => usize::from(n),
        }
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The source and destination ports as they lie in the header (a flow
    /// compares them as one word).
    #[inline]
    pub fn ports(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SRC_PORT.start..field::DST_PORT.end]
    }

    /// The payload, up to the datagram's length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.datagram_len()]
    }

    /// True when the checksum verifies over `pseudo` and the datagram; a
    /// checksum of 0 under IPv4 means "none" and passes (RFC 768). (Under
    /// IPv6 a zero checksum is invalid, RFC 8200 §8.1, and fails here
    /// unless the sum happens to verify.)
    #[inline]
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        if pseudo.is_ipv4() && self.checksum() == 0 {
            return true;
        }
        let datagram = &self.buffer.as_ref()[..self.datagram_len()];
        checksum::finish(checksum::accumulate(pseudo.sum(datagram.len()), datagram)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, value);
    }

    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes the checksum over `pseudo` and the datagram and writes it;
    /// a sum of 0 is sent as 0xffff, since 0 means "none" (RFC 768).
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let datagram = &self.buffer.as_ref()[..self.datagram_len()];
        let c = checksum::finish(checksum::accumulate(pseudo.sum(datagram.len()), datagram));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.datagram_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::PROTO_UDP;

    /// 100.96.1.2 → 100.96.2.3 (the pseudo-header's addresses).
    const ADDRS: [u8; 8] = [100, 96, 1, 2, 100, 96, 2, 3];

    /// Port 1234 → 5678, length 12, 4 bytes of payload; checksum 0x7b73
    /// over the IPv4 pseudo-header (RFC 768, summed by hand).
    const DATAGRAM: [u8; 12] = [0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x7b, 0x73, 0xde, 0xad, 0xbe, 0xef];

    fn pseudo() -> PseudoHeader {
        PseudoHeader::new(&ADDRS, PROTO_UDP, true)
    }

    #[test]
    fn reads_every_field() {
        let u = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len(), u.datagram_len(), u.checksum()), (1234, 5678, 12, 12, 0x7b73));
        assert_eq!(u.ports(), &DATAGRAM[..4]);
        assert_eq!(u.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(u.verify_checksum(&pseudo()));
    }

    #[test]
    fn writes_the_same_bytes() {
        let mut buf = [0u8; 12];
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_src_port(1234);
        u.set_dst_port(5678);
        u.set_len(12);
        u.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        u.fill_checksum(&pseudo());
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn checksums_zero_and_corruption() {
        let mut buf = DATAGRAM;
        buf[9] ^= 1;
        assert!(!UdpPacket::new_unchecked(&buf[..]).verify_checksum(&pseudo()));
        let mut u = UdpPacket::new_unchecked(&mut buf[..]);
        u.set_checksum(0);
        assert!(u.verify_checksum(&pseudo()), "0 is 'no checksum' under IPv4");
        let v6 = PseudoHeader::new(&[0; 32], PROTO_UDP, false);
        assert!(!u.verify_checksum(&v6), "but not under IPv6");
    }

    #[test]
    fn refuses_short_or_lying_lengths() {
        let check = |b: &[u8]| UdpPacket::new_checked(b).map(|_| ());
        assert_eq!(check(&DATAGRAM[..7]), Err(UdpError::Truncated));
        assert_eq!(check(&DATAGRAM[..11]), Err(UdpError::BadLength(12)));
        let mut short = DATAGRAM;
        short[5] = 7;
        assert_eq!(check(&short), Err(UdpError::BadLength(7)));
        short[5] = 8;
        assert_eq!(UdpPacket::new_checked(&short[..]).unwrap().payload(), &[] as &[u8], "bytes past the length are not payload");
        short[5] = 0;
        assert_eq!(UdpPacket::new_checked(&short[..]).unwrap().payload().len(), 4, "length 0: the buffer decides");
    }
}
