//! IP packets of either version: [`IpPacket`], a view that is an
//! [`Ipv4Packet`] or an [`Ipv6Packet`] by the first nibble; and [`parse`], the data path's check of a complete
//! packet into an [`IpHeader`] of plain values.
//!
//! [`parse`] checks everything a gateway relies on (version, header length,
//! total length equal to the bytes present); nothing after a successful
//! parse can index out of bounds. Options and extension headers are
//! carried, not interpreted.

use std::net::IpAddr;

use super::ipv4::{self, Ipv4Packet};
use super::ipv6::{self, Ipv6Packet};

// Defined where the IPv4 and IPv6 views can import them without importing
// this module (which imports the views); named here too, as
// `ip::IpError` and `ip::PseudoHeader`.
pub use super::checksum::PseudoHeader;
pub use super::ip_error::IpError;

pub const IPV4_HEADER_LEN: usize = ipv4::HEADER_LEN;
pub const IPV6_HEADER_LEN: usize = ipv6::HEADER_LEN;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// A view of an IP packet of either version; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPacket<T: AsRef<[u8]>> {
    V4(Ipv4Packet<T>),
    V6(Ipv6Packet<T>),
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// The view its first nibble names, after that view's `check_len`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<IpPacket<T>, IpError> {
        match buffer.as_ref().first().map(|b| b >> 4) {
            None => Err(IpError::Empty),
            Some(4) => Ipv4Packet::new_checked(buffer).map(IpPacket::V4),
            Some(6) => Ipv6Packet::new_checked(buffer).map(IpPacket::V6),
            Some(v) => Err(IpError::BadVersion(v)),
        }
    }

    #[inline]
    pub fn is_ipv4(&self) -> bool {
        matches!(self, IpPacket::V4(_))
    }

    /// The header length: IHL × 4 for IPv4, 40 for IPv6.
    #[inline]
    pub fn header_len(&self) -> usize {
        match self {
            IpPacket::V4(p) => p.header_len(),
            IpPacket::V6(_) => IPV6_HEADER_LEN,
        }
    }

    /// The length the header announces: the IPv4 total length, or the
    /// fixed header plus the IPv6 payload length.
    #[inline]
    pub fn total_len(&self) -> usize {
        match self {
            IpPacket::V4(p) => usize::from(p.total_len()),
            IpPacket::V6(p) => IPV6_HEADER_LEN + usize::from(p.payload_len()),
        }
    }

    /// The IPv4 protocol or the IPv6 next header (not following extension headers).
    #[inline]
    pub fn protocol(&self) -> u8 {
        match self {
            IpPacket::V4(p) => p.protocol(),
            IpPacket::V6(p) => p.next_header(),
        }
    }

    /// TTL or hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        match self {
            IpPacket::V4(p) => p.ttl(),
            IpPacket::V6(p) => p.hop_limit(),
        }
    }

    #[inline]
    pub fn src_addr(&self) -> IpAddr {
        match self {
            IpPacket::V4(p) => IpAddr::V4(p.src_addr()),
            IpPacket::V6(p) => IpAddr::V6(p.src_addr()),
        }
    }

    #[inline]
    pub fn dst_addr(&self) -> IpAddr {
        match self {
            IpPacket::V4(p) => IpAddr::V4(p.dst_addr()),
            IpPacket::V6(p) => IpAddr::V6(p.dst_addr()),
        }
    }

    /// True for an IPv4 fragment, first or not (an IPv6 fragment has a
    /// fragment extension header, hence no transport protocol here).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        match self {
            IpPacket::V4(p) => p.is_fragment(),
            IpPacket::V6(_) => false,
        }
    }

    /// The pseudo-header of this packet's own payload protocol.
    #[inline]
    pub fn pseudo_header(&self) -> PseudoHeader {
        match self {
            IpPacket::V4(p) => p.pseudo_header(p.protocol()),
            IpPacket::V6(p) => p.pseudo_header(p.next_header()),
        }
    }

    /// The header (IPv4 options included; the IPv6 fixed header).
    #[inline]
    pub fn header(&self) -> &[u8] {
        match self {
            IpPacket::V4(p) => p.header(),
            IpPacket::V6(p) => p.header(),
        }
    }

    /// The payload, up to the length the header announces.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        match self {
            IpPacket::V4(p) => p.payload(),
            IpPacket::V6(p) => p.payload(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IpPacket<T> {
    /// Sets the length field so that the packet is `total_len` bytes long
    /// (IPv4 total length, IPv6 payload length); `total_len` is at least
    /// the header length and at most 65,535 bytes (plus 40 for IPv6).
    #[inline]
    pub fn set_total_len(&mut self, total_len: usize) {
        match self {
            IpPacket::V4(p) => p.set_total_len(total_len as u16),
            IpPacket::V6(p) => p.set_payload_len((total_len - IPV6_HEADER_LEN) as u16),
        }
    }

    /// Recomputes the IPv4 header checksum; IPv6 has none.
    #[inline]
    pub fn fill_checksum(&mut self) {
        if let IpPacket::V4(p) = self {
            p.fill_checksum();
        }
    }

    /// Decrements the TTL or hop limit (at least 1), keeping an IPv4 header
    /// checksum valid (RFC 1624).
    #[inline]
    pub fn decrement_hop_limit(&mut self) {
        match self {
            IpPacket::V4(p) => p.decrement_ttl(),
            IpPacket::V6(p) => p.set_hop_limit(p.hop_limit() - 1),
        }
    }

    /// The payload, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        match self {
            IpPacket::V4(p) => p.payload_mut(),
            IpPacket::V6(p) => p.payload_mut(),
        }
    }
}

/// The facts about a packet the data path needs, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// IPv4 protocol, or IPv6 next header (not following extension headers).
    pub protocol: u8,
    pub header_len: usize,
    pub total_len: usize,
    /// IPv4 DF bit; always true for IPv6, which routers never fragment.
    pub dont_fragment: bool,
    /// IPv4 fragment offset in 8-byte units (0 for IPv6 and first fragments).
    pub fragment_offset: u16,
}

impl IpHeader {
    pub fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }
}

/// Parses and validates the header of a complete IP packet: what
/// [`IpPacket::new_checked`] accepts, and a length field that spans the
/// packet exactly (a datagram or a TUN read holds one packet, no padding).
#[inline]
pub fn parse(packet: &[u8]) -> Result<IpHeader, IpError> {
    let ip = IpPacket::new_checked(packet)?;
    if ip.total_len() != packet.len() {
        return Err(IpError::LengthMismatch);
    }
    let (dont_fragment, fragment_offset) = match &ip {
        IpPacket::V4(p) => (p.dont_frag(), p.frag_offset()),
        IpPacket::V6(_) => (true, 0),
    };
    Ok(IpHeader {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        ttl: ip.hop_limit(),
        protocol: ip.protocol(),
        header_len: ip.header_len(),
        total_len: packet.len(),
        dont_fragment,
        fragment_offset,
    })
}

/// Decrements the TTL / hop limit of a packet that [`parse`] accepted, fixing
/// the IPv4 header checksum incrementally (RFC 1624). The caller has checked
/// that the TTL is at least 2.
#[inline]
pub fn decrement_ttl(packet: &mut [u8], header: &IpHeader) {
    if header.is_ipv4() {
        Ipv4Packet::new_unchecked(packet).decrement_ttl();
    } else {
        Ipv6Packet::new_unchecked(packet).set_hop_limit(header.ttl - 1);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// A valid IPv4/UDP packet from `src` to `dst` with `payload_len` bytes
    /// of payload (ports 1234 → 5678), built by [`crate::wire::build`].
    pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], ttl: u8, payload_len: usize) -> Vec<u8> {
        crate::wire::build::Packet::new(src, dst).ttl(ttl).udp(1234, 5678, &vec![0; payload_len])
    }

    /// The IPv6 equivalent of [`ipv4_udp`].
    pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, payload_len: usize) -> Vec<u8> {
        crate::wire::build::Packet::new(src, dst).ttl(hop).udp(1234, 5678, &vec![0; payload_len])
    }

    #[test]
    fn parses_ipv4() {
        let p = ipv4_udp([100, 96, 1, 2], [100, 96, 2, 3], 64, 10);
        let h = parse(&p).unwrap();
        assert_eq!(h.src, "100.96.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "100.96.2.3".parse::<IpAddr>().unwrap());
        assert_eq!((h.ttl, h.protocol, h.header_len, h.total_len), (64, PROTO_UDP, 20, 38));
        assert!(h.dont_fragment);
    }

    #[test]
    fn parses_ipv6() {
        let p = ipv6_udp("fd00::1".parse().unwrap(), "fd00:1::2".parse().unwrap(), 9, 3);
        let h = parse(&p).unwrap();
        assert_eq!(h.dst, "fd00:1::2".parse::<IpAddr>().unwrap());
        assert_eq!((h.ttl, h.total_len), (9, 51));
    }

    #[test]
    fn rejects_malformed() {
        let good = ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 64, 4);
        let edited = |edit: &dyn Fn(&mut Ipv4Packet<&mut [u8]>)| {
            let mut p = good.clone();
            edit(&mut Ipv4Packet::new_unchecked(&mut p[..]));
            p
        };
        assert_eq!(parse(&[]), Err(IpError::Empty));
        assert_eq!(parse(&[0x55; 30]), Err(IpError::BadVersion(5)));
        assert_eq!(parse(&good[..19]), Err(IpError::Truncated));
        assert_eq!(parse(&edited(&|p| p.set_version_and_header_len(16))), Err(IpError::BadHeaderLength));
        // A 60-byte header in a 32-byte packet.
        assert_eq!(parse(&edited(&|p| p.set_version_and_header_len(60))), Err(IpError::BadHeaderLength));
        assert_eq!(parse(&good[..good.len() - 1]), Err(IpError::LengthMismatch));
        assert_eq!(parse(&edited(&|p| p.set_total_len(10))), Err(IpError::BadHeaderLength));
        let mut padded = good.clone();
        padded.push(0);
        assert_eq!(parse(&padded), Err(IpError::LengthMismatch), "a complete packet has no padding");
        let v6 = ipv6_udp(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 1, 8);
        assert_eq!(parse(&v6[..39]), Err(IpError::Truncated));
        assert_eq!(parse(&v6[..50]), Err(IpError::LengthMismatch));
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], 64, 0);
        let h = parse(&p).unwrap();
        decrement_ttl(&mut p, &h);
        let v4 = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v4.ttl(), 63);
        assert!(v4.verify_checksum());
    }

    #[test]
    fn either_version_through_one_view() {
        let mut p = ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], 9, 4);
        let mut ip = IpPacket::new_checked(&mut p[..]).unwrap();
        assert!(ip.is_ipv4());
        assert_eq!((ip.header_len(), ip.total_len(), ip.protocol(), ip.hop_limit()), (20, 32, PROTO_UDP, 9));
        assert_eq!((ip.src_addr(), ip.dst_addr()), (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        assert_eq!(ip.payload().len(), 12);
        ip.decrement_hop_limit();
        ip.set_total_len(32);
        ip.fill_checksum();
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
        let mut p6 = ipv6_udp(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 9, 4);
        let mut ip = IpPacket::new_checked(&mut p6[..]).unwrap();
        assert_eq!((ip.is_ipv4(), ip.header_len(), ip.total_len(), ip.is_fragment()), (false, 40, 52, false));
        ip.decrement_hop_limit();
        ip.set_total_len(50);
        assert_eq!(Ipv6Packet::new_unchecked(&p6[..]).payload_len(), 10);
        assert_eq!(Ipv6Packet::new_unchecked(&p6[..]).hop_limit(), 8);
        assert_eq!(IpPacket::new_checked(&[0x75u8; 60][..]), Err(IpError::BadVersion(7)));
    }

    #[test]
    fn the_pseudo_header_sums_as_rfc_768_and_8200_say() {
        // RFC 768: source, destination, zero, protocol, UDP length.
        let v4 = PseudoHeader::new(&[10, 0, 0, 1, 10, 0, 0, 2], PROTO_UDP, true);
        let by_hand = crate::wire::checksum::accumulate(0, &[10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12]);
        assert_eq!(crate::wire::checksum::finish(v4.sum(12)), crate::wire::checksum::finish(by_hand));
        assert_eq!(v4.partial_checksum(12), !crate::wire::checksum::finish(by_hand));
        // RFC 8200 §8.1: addresses, 32-bit length, three zeros, next header.
        let addrs = [[0xfd; 16], [0x01; 16]].concat();
        let v6 = PseudoHeader::new(&addrs, PROTO_TCP, false);
        let by_hand = crate::wire::checksum::accumulate(crate::wire::checksum::accumulate(0, &addrs), &[0, 0, 0, 40, 0, 0, 0, 6]);
        assert_eq!(crate::wire::checksum::finish(v6.sum(40)), crate::wire::checksum::finish(by_hand));
        assert!(v4.is_ipv4() && !v6.is_ipv4());
    }
}
