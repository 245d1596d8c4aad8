//! The TCP header (RFC 9293 §3.1) as a view over a buffer: [`TcpPacket`].
//! The buffer is the whole segment (the IP payload): TCP has no length
//! field of its own.
//!
//! [`TcpPacket::check_len`] accepts a buffer that holds at least the
//! 20-byte fixed header, with a data offset of at least 5 whose header
//! (options included) fits the buffer. After it, no accessor panics (see
//! the [module promise](crate::wire)). Options are carried, not interpreted.

use super::checksum;
use super::checksum::PseudoHeader;
use super::{read_u16, read_u32, write_u16, write_u32};

/// Byte offsets of the fixed header's fields.
pub mod field {
    use std::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset (high nibble, in 32-bit words) and 4 reserved bits.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// The control bits in the flags byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The fixed header, without options.
pub const HEADER_LEN: usize = 20;
/// The largest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// Why bytes are not a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    #[error("shorter than the 20-byte TCP header")]
    Truncated,
    #[error("TCP data offset {0} is below 5 or beyond the segment")]
    BadDataOffset(u8),
}

/// A view of a TCP segment in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, TcpError> {
        let packet = TcpPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and the header length
    /// the data offset announces, which must be at least 20 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<(), TcpError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(TcpError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > data.len() {
            return Err(TcpError::BadDataOffset(data[field::DATA_OFFSET] >> 4));
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

    /// The source and destination ports as they lie in the header (a flow
    /// compares them as one word).
    #[inline]
    pub fn ports(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SRC_PORT.start..field::DST_PORT.end]
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// The header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The 4 reserved bits after the data offset.
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFFSET] & 0x0f
    }

    /// The control bits ([`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    #[inline]
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW.start)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The options between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum verifies over `pseudo` and the segment.
    #[inline]
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        let segment = self.buffer.as_ref();
        checksum::finish(checksum::accumulate(pseudo.sum(segment.len()), segment)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, value);
    }

    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM.start, value);
    }

    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM.start, value);
    }

    /// Sets the data offset for a header of `header_len` bytes (a multiple
    /// of 4, 20 to 60), keeping the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, header_len: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (((header_len / 4) as u8) << 4) | (*b & 0x0f);
    }

    /// Sets the control bits ([`flags`]).
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW.start, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, value);
    }

    /// Computes the checksum over `pseudo` and the segment and writes it.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        self.set_checksum(0);
        let segment = self.buffer.as_ref();
        let c = checksum::finish(checksum::accumulate(pseudo.sum(segment.len()), segment));
        self.set_checksum(c);
    }

    /// The options, to write.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The payload, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::PROTO_TCP;

    /// 100.96.1.2 → 100.96.2.3 (the pseudo-header's addresses).
    const ADDRS: [u8; 8] = [100, 96, 1, 2, 100, 96, 2, 3];

    /// Port 40000 → 5201, seq 1000, ack 77, 32-byte header (NOP NOP
    /// timestamps 9/7), ACK|PSH, window 512, 3 bytes of payload; checksum
    /// 0x2fb4 over the IPv4 pseudo-header (RFC 9293 §3.1, summed by hand).
    const SEGMENT: [u8; 35] = [
        0x9c, 0x40, 0x14, 0x51, // ports
        0x00, 0x00, 0x03, 0xe8, // seq 1000
        0x00, 0x00, 0x00, 0x4d, // ack 77
        0x80, 0x18, 0x02, 0x00, // data offset 8, ACK|PSH, window 512
        0x2f, 0xb4, 0x00, 0x00, // checksum, urgent 0
        1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7, // NOP NOP timestamps
        b'a', b'b', b'c',
    ];

    fn pseudo() -> PseudoHeader {
        PseudoHeader::new(&ADDRS, PROTO_TCP, true)
    }

    #[test]
    fn reads_every_field() {
        let t = TcpPacket::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.seq_number(), t.ack_number()), (40000, 5201, 1000, 77));
        assert_eq!((t.header_len(), t.reserved(), t.flags()), (32, 0, flags::ACK | flags::PSH));
        assert_eq!((t.fin(), t.syn(), t.psh(), t.ack()), (false, false, true, true));
        assert_eq!((t.window_len(), t.checksum(), t.urgent_at()), (512, 0x2fb4, 0));
        assert_eq!(t.ports(), &SEGMENT[..4]);
        assert_eq!(t.options(), &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
        assert_eq!(t.payload(), b"abc");
        assert!(t.verify_checksum(&pseudo()));
    }

    #[test]
    fn writes_the_same_bytes() {
        let mut buf = [0u8; 35];
        let mut t = TcpPacket::new_unchecked(&mut buf[..]);
        t.set_src_port(40000);
        t.set_dst_port(5201);
        t.set_seq_number(1000);
        t.set_ack_number(77);
        t.set_header_len(32);
        t.set_flags(flags::ACK | flags::PSH);
        t.set_window_len(512);
        t.set_urgent_at(0);
        t.options_mut().copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
        t.payload_mut().copy_from_slice(b"abc");
        t.fill_checksum(&pseudo());
        assert_eq!(buf, SEGMENT);
        buf[34] ^= 1;
        assert!(!TcpPacket::new_unchecked(&buf[..]).verify_checksum(&pseudo()));
    }

    #[test]
    fn refuses_short_or_lying_data_offsets() {
        let check = |b: &[u8]| TcpPacket::new_checked(b).map(|_| ());
        assert_eq!(check(&SEGMENT[..19]), Err(TcpError::Truncated));
        assert_eq!(check(&SEGMENT[..31]), Err(TcpError::BadDataOffset(8)), "options beyond the segment");
        for doff in 0..5u8 {
            let mut short = SEGMENT;
            short[12] = doff << 4;
            assert_eq!(check(&short), Err(TcpError::BadDataOffset(doff)), "a header below 20 bytes (RFC 9293 §3.1)");
        }
        let mut reserved = SEGMENT;
        reserved[12] |= 0x0f;
        let mut t = TcpPacket::new_checked(&mut reserved[..]).unwrap();
        t.set_header_len(20);
        assert_eq!((t.header_len(), t.reserved()), (20, 0x0f), "the data offset setter keeps the reserved bits");
    }
}
