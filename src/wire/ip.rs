//! IPv4 and IPv6 header views over untrusted bytes.
//!
//! [`parse`] checks everything a gateway relies on (version, header length,
//! total length equal to the bytes present) and returns an [`IpHeader`] of
//! plain values; nothing after a successful parse can index out of bounds.
//! Options and extension headers are carried, not interpreted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Why bytes are not a well-formed IP packet. Each maps to one drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// zero-length packet
    #[error("empty packet")]
    Empty,
    /// first nibble is neither 4 nor 6
    #[error("IP version {0} is neither 4 nor 6")]
    BadVersion(u8),
    /// shorter than the fixed header
    #[error("truncated IP header")]
    Truncated,
    /// IPv4 IHL below 5 or beyond the packet
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// the length field disagrees with the bytes present
    #[error("IP length field disagrees with the packet size")]
    LengthMismatch,
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

/// Parses and validates the header of a complete IP packet.
pub fn parse(packet: &[u8]) -> Result<IpHeader, IpError> {
    let first = *packet.first().ok_or(IpError::Empty)?;
    match first >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        v => Err(IpError::BadVersion(v)),
    }
}

fn parse_v4(p: &[u8]) -> Result<IpHeader, IpError> {
    if p.len() < IPV4_HEADER_LEN {
        return Err(IpError::Truncated);
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN || header_len > p.len() {
        return Err(IpError::BadHeaderLength);
    }
    let total_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total_len < header_len {
        return Err(IpError::BadHeaderLength);
    }
    if total_len != p.len() {
        return Err(IpError::LengthMismatch);
    }
    let frag = u16::from_be_bytes([p[6], p[7]]);
    Ok(IpHeader {
        src: IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15])),
        dst: IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19])),
        ttl: p[8],
        protocol: p[9],
        header_len,
        total_len,
        dont_fragment: frag & 0x4000 != 0,
        fragment_offset: frag & 0x1fff,
    })
}

fn parse_v6(p: &[u8]) -> Result<IpHeader, IpError> {
    if p.len() < IPV6_HEADER_LEN {
        return Err(IpError::Truncated);
    }
    let payload_len = usize::from(u16::from_be_bytes([p[4], p[5]]));
    // A zero payload length means a jumbogram (RFC 2675), which never fits a
    // UDP datagram or a TUN read of ours: treat it as a mismatch like any other.
    if IPV6_HEADER_LEN + payload_len != p.len() {
        return Err(IpError::LengthMismatch);
    }
    let addr = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&p[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok(IpHeader {
        src: addr(8),
        dst: addr(24),
        ttl: p[7],
        protocol: p[6],
        header_len: IPV6_HEADER_LEN,
        total_len: p.len(),
        dont_fragment: true,
        fragment_offset: 0,
    })
}

/// Decrements the TTL / hop limit of a packet that [`parse`] accepted, fixing
/// the IPv4 header checksum incrementally (RFC 1624). The caller has checked
/// that the TTL is at least 2.
pub fn decrement_ttl(packet: &mut [u8], header: &IpHeader) {
    if header.is_ipv4() {
        let old = u16::from_be_bytes([packet[8], packet[9]]);
        packet[8] = header.ttl - 1;
        let new = u16::from_be_bytes([packet[8], packet[9]]);
        let check = u16::from_be_bytes([packet[10], packet[11]]);
        packet[10..12].copy_from_slice(&checksum::update16(check, old, new).to_be_bytes());
    } else {
        packet[7] = header.ttl - 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        assert_eq!(parse(&[]), Err(IpError::Empty));
        assert_eq!(parse(&[0x55; 30]), Err(IpError::BadVersion(5)));
        assert_eq!(parse(&good[..19]), Err(IpError::Truncated));
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(parse(&bad_ihl), Err(IpError::BadHeaderLength));
        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f; // 60-byte header in a 32-byte packet
        assert_eq!(parse(&long_ihl), Err(IpError::BadHeaderLength));
        assert_eq!(parse(&good[..good.len() - 1]), Err(IpError::LengthMismatch));
        let mut short_total = good.clone();
        short_total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse(&short_total), Err(IpError::BadHeaderLength));
        let v6 = ipv6_udp(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, 1, 8);
        assert_eq!(parse(&v6[..39]), Err(IpError::Truncated));
        assert_eq!(parse(&v6[..50]), Err(IpError::LengthMismatch));
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], 64, 0);
        let h = parse(&p).unwrap();
        decrement_ttl(&mut p, &h);
        assert_eq!(p[8], 63);
        assert_eq!(checksum::checksum(&p[..20]), 0);
    }
}
