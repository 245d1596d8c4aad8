//! The IPv4 header (RFC 791) as a view over a buffer: [`Ipv4Packet`].
//!
//! [`Ipv4Packet::check_len`] accepts a buffer that starts with a version-4
//! header whose IHL is at least 5 and fits the buffer, and whose total
//! length covers the header and fits the buffer (bytes beyond it, such as
//! Ethernet padding, are allowed; [`crate::wire::ip::parse`] is the stricter
//! check the data path uses). After it, no accessor panics (see the
//! [module promise](crate::wire)). Options are carried, not interpreted.

use std::net::Ipv4Addr;

use super::checksum;
use super::checksum::PseudoHeader;
use super::ip_error::IpError;
use super::{read_u16, write_u16};

/// Byte offsets of the fixed header's fields.
pub mod field {
    use std::ops::Range;

    /// Version (high nibble) and IHL, the header length in 32-bit words.
    pub const VER_IHL: usize = 0;
    /// DSCP (high six bits) and ECN.
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (reserved, DF, MF) and the fragment offset in 8-byte units.
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// The fixed header, without options.
pub const HEADER_LEN: usize = 20;
/// The largest header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// A view of an IPv4 packet in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, IpError> {
        let packet = Ipv4Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header is an IPv4 header the buffer holds whole and
    /// that the total length lies between the header length and the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), IpError> {
        let data = self.buffer.as_ref();
        let first = *data.first().ok_or(IpError::Empty)?;
        if first >> 4 != 4 {
            return Err(IpError::BadVersion(first >> 4));
        }
        if data.len() < HEADER_LEN {
            return Err(IpError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > data.len() {
            return Err(IpError::BadHeaderLength);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(IpError::BadHeaderLength);
        }
        if total_len > data.len() {
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
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length field: header and payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOTAL_LEN.start)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// The flags and fragment offset word as it lies in the header.
    #[inline]
    pub fn flags_and_frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS_FRAG.start)
    }

    /// DF, "don't fragment".
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_and_frag_offset() & FLAG_DF != 0
    }

    /// MF, "more fragments".
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_and_frag_offset() & FLAG_MF != 0
    }

    /// The fragment offset in 8-byte units (0 for unfragmented packets and
    /// first fragments).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_and_frag_offset() & FRAG_OFFSET
    }

    /// True for any fragment, first or not (MF set or an offset): its
    /// transport checksum covers bytes of other packets.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_frag_offset() & (FLAG_MF | FRAG_OFFSET) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (`ip::PROTO_*`).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[12], d[13], d[14], d[15])
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[16], d[17], d[18], d[19])
    }

    /// The source and destination addresses as they lie in the header,
    /// what the transport pseudo-header sums.
    #[inline]
    pub fn addr_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SRC_ADDR.start..field::DST_ADDR.end]
    }

    /// True when the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The pseudo-header of a `protocol` payload in this packet
    /// (RFC 768, RFC 9293 §3.1), for the transport checksum.
    #[inline]
    pub fn pseudo_header(&self, protocol: u8) -> PseudoHeader {
        PseudoHeader::new(self.addr_bytes(), protocol, true)
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

    /// The payload: from the end of the header to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and a header of `header_len` bytes (a multiple of 4,
    /// 20 to 60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::TOTAL_LEN.start, value);
    }

    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, value);
    }

    /// Sets the flags and fragment offset word as a whole.
    #[inline]
    pub fn set_flags_and_frag_offset(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS_FRAG.start, value);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let word = self.flags_and_frag_offset() & !FLAG_DF;
        self.set_flags_and_frag_offset(if value { word | FLAG_DF } else { word });
    }

    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let word = self.flags_and_frag_offset() & !FLAG_MF;
        self.set_flags_and_frag_offset(if value { word | FLAG_MF } else { word });
    }

    /// Sets the fragment offset (8-byte units; the top three bits are cut).
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        let word = self.flags_and_frag_offset() & !FRAG_OFFSET;
        self.set_flags_and_frag_offset(word | (value & FRAG_OFFSET));
    }

    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Decrements the TTL (which must be at least 1) and fixes the header
    /// checksum incrementally (RFC 1624 eqn. 3): a header whose checksum
    /// verified still verifies, without summing it again.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let old = read_u16(self.buffer.as_ref(), field::TTL);
        self.set_ttl(self.ttl() - 1);
        let new = read_u16(self.buffer.as_ref(), field::TTL);
        self.set_checksum(checksum::update16(self.checksum(), old, new));
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
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv4/UDP, 100.96.1.2 → 100.96.2.3, ID 0x1234, DF, TTL 64, 4 bytes
    /// of UDP payload; header checksum 0x5cd4 (RFC 1071, summed by hand).
    const PACKET: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, // version 4, IHL 5; TOS 0; total length 32
        0x12, 0x34, 0x40, 0x00, // ID; DF, offset 0
        0x40, 0x11, 0x5c, 0xd4, // TTL 64, UDP; checksum
        100, 96, 1, 2, // source
        100, 96, 2, 3, // destination
        0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0c, 0x00, 0x00, // UDP header
        0xde, 0xad, 0xbe, 0xef, // UDP payload
    ];

    #[test]
    fn reads_every_field() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.version(), p.header_len(), p.dscp_ecn(), p.total_len()), (4, 20, 0, 32));
        assert_eq!((p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment()), (0x1234, true, false, 0, false));
        assert_eq!((p.ttl(), p.protocol(), p.checksum()), (64, 17, 0x5cd4));
        assert_eq!((p.src_addr(), p.dst_addr()), (Ipv4Addr::new(100, 96, 1, 2), Ipv4Addr::new(100, 96, 2, 3)));
        assert_eq!(p.addr_bytes(), &PACKET[12..20]);
        assert!(p.verify_checksum());
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn writes_the_same_bytes() {
        let mut buf = [0u8; 32];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(20);
        p.set_total_len(32);
        p.set_ident(0x1234);
        p.set_dont_frag(true);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(100, 96, 1, 2));
        p.set_dst_addr(Ipv4Addr::new(100, 96, 2, 3));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&PACKET[20..]);
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn fragment_fields_and_ttl_decrement() {
        let mut buf = PACKET;
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_dont_frag(false);
        p.set_more_frags(true);
        p.set_frag_offset(0x1fff);
        assert_eq!((p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment()), (false, true, 0x1fff, true));
        assert_eq!(p.flags_and_frag_offset(), 0x3fff);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
        p.fill_checksum();
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum(), "the incremental update keeps the checksum valid");
    }

    #[test]
    fn refuses_short_or_lying_headers() {
        let check = |b: &[u8]| Ipv4Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&[]), Err(IpError::Empty));
        assert_eq!(check(&[0x65; 40]), Err(IpError::BadVersion(6)));
        assert_eq!(check(&PACKET[..19]), Err(IpError::Truncated));
        let mut ihl4 = PACKET;
        ihl4[0] = 0x44;
        assert_eq!(check(&ihl4), Err(IpError::BadHeaderLength));
        let mut ihl_past_end = PACKET;
        ihl_past_end[0] = 0x49; // 36-byte header in 32 bytes
        assert_eq!(check(&ihl_past_end), Err(IpError::BadHeaderLength));
        let mut total_below_header = PACKET;
        total_below_header[3] = 19;
        assert_eq!(check(&total_below_header), Err(IpError::BadHeaderLength));
        assert_eq!(check(&PACKET[..31]), Err(IpError::LengthMismatch), "total length beyond the buffer");
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 12, "bytes past the total length are not payload");
    }

    #[test]
    fn options_lie_between_header_and_payload() {
        let mut buf = [0u8; 28];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(24);
        p.set_total_len(28);
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.payload_mut().copy_from_slice(&[9; 4]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.header_len(), p.options(), p.payload()), (24, &[1, 1, 1, 0][..], &[9; 4][..]));
    }
}
