//! ICMP and ICMPv6 error messages a router sends (RFC 792, RFC 1812 §4.3,
//! RFC 4443): destination unreachable, time exceeded, and fragmentation
//! needed / packet too big.
//!
//! [`build_error`] writes a complete IP packet into a caller's buffer, ready
//! to be written to the TUN, or returns `None` where RFC 1812 §4.3.2.7 and
//! RFC 4443 §2.4(e) forbid an error (in reply to an ICMP error, a non-first
//! fragment, or a packet from an unspecified, multicast or broadcast source).

use std::net::IpAddr;

use super::checksum;
use super::ip::{IPV4_HEADER_LEN, IPV6_HEADER_LEN, IpHeader, PROTO_ICMP, PROTO_ICMPV6};

/// Size of the buffer [`build_error`] needs at most: the IPv6 minimum MTU,
/// which bounds an ICMPv6 error (RFC 4443 §2.4(c)); IPv4 errors stay within
/// 576 bytes (RFC 1812 §4.3.2.3).
pub const MAX_ERROR_LEN: usize = 1280;
const MAX_ERROR_LEN_V4: usize = 576;

/// The error a router reports about a packet it could not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// No route to the destination (ICMP 3/1 host unreachable, ICMPv6 1/0).
    Unreachable,
    /// TTL or hop limit reached zero in transit (ICMP 11/0, ICMPv6 3/0).
    TimeExceeded,
    /// Larger than the next hop's MTU (ICMP 3/4 with the MTU, ICMPv6 2).
    TooBig { mtu: u16 },
}

/// TTL of the errors we originate, the usual Linux default.
const ERROR_TTL: u8 = 64;

/// Writes the error about `offending` (whose parsed header is `header`) into
/// `out`, sourced from `from`, and returns its length. `from` must be of the
/// same family as the offending packet (the caller picks it; see the data
/// path's notes on why it is not a local address). Returns `None` when no
/// error may be sent or `out` is smaller than [`MAX_ERROR_LEN`].
pub fn build_error(kind: IcmpError, offending: &[u8], header: &IpHeader, from: IpAddr, out: &mut [u8]) -> Option<usize> {
    if out.len() < MAX_ERROR_LEN || offending.len() < header.header_len {
        return None;
    }
    match (header.src, from) {
        (IpAddr::V4(src), IpAddr::V4(from)) => {
            if src.is_unspecified() || src.is_multicast() || src.is_broadcast() {
                return None;
            }
            if header.fragment_offset != 0 || is_icmp_error(offending, header, PROTO_ICMP) {
                return None;
            }
            Some(build_v4(kind, offending, from.octets(), src.octets(), out))
        }
        (IpAddr::V6(src), IpAddr::V6(from)) => {
            if src.is_unspecified() || src.is_multicast() {
                return None;
            }
            if is_icmp_error(offending, header, PROTO_ICMPV6) {
                return None;
            }
            Some(build_v6(kind, offending, from.octets(), src.octets(), out))
        }
        _ => None,
    }
}

/// True when the packet is itself an ICMP error (or too short to tell), which
/// must never provoke another error.
fn is_icmp_error(packet: &[u8], header: &IpHeader, icmp_proto: u8) -> bool {
    if header.protocol != icmp_proto {
        return false;
    }
    match packet.get(header.header_len) {
        None => true,
        // ICMPv4 informational types: echo reply 0, echo 8, timestamp 13/14, ...
        Some(&t) if icmp_proto == PROTO_ICMP => matches!(t, 3 | 4 | 5 | 11 | 12),
        // ICMPv6: types below 128 are errors (RFC 4443 §2.1).
        Some(&t) => t < 128,
    }
}

fn build_v4(kind: IcmpError, offending: &[u8], from: [u8; 4], to: [u8; 4], out: &mut [u8]) -> usize {
    let quote = offending.len().min(MAX_ERROR_LEN_V4 - IPV4_HEADER_LEN - 8);
    let total = IPV4_HEADER_LEN + 8 + quote;
    let (icmp_type, code, rest) = match kind {
        IcmpError::Unreachable => (3, 1, [0; 4]),
        IcmpError::TimeExceeded => (11, 0, [0; 4]),
        IcmpError::TooBig { mtu } => {
            let m = mtu.to_be_bytes();
            (3, 4, [0, 0, m[0], m[1]])
        }
    };
    let ip = &mut out[..IPV4_HEADER_LEN];
    ip.copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, ERROR_TTL, PROTO_ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&from);
    ip[16..20].copy_from_slice(&to);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let icmp = &mut out[IPV4_HEADER_LEN..total];
    icmp[..8].copy_from_slice(&[icmp_type, code, 0, 0, rest[0], rest[1], rest[2], rest[3]]);
    icmp[8..].copy_from_slice(&offending[..quote]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    total
}

fn build_v6(kind: IcmpError, offending: &[u8], from: [u8; 16], to: [u8; 16], out: &mut [u8]) -> usize {
    let quote = offending.len().min(MAX_ERROR_LEN - IPV6_HEADER_LEN - 8);
    let icmp_len = 8 + quote;
    let total = IPV6_HEADER_LEN + icmp_len;
    let (icmp_type, code, rest) = match kind {
        IcmpError::Unreachable => (1, 0, [0; 4]),
        IcmpError::TimeExceeded => (3, 0, [0; 4]),
        IcmpError::TooBig { mtu } => (2, 0, u32::from(mtu).to_be_bytes()),
    };
    let ip = &mut out[..IPV6_HEADER_LEN];
    ip[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, PROTO_ICMPV6, ERROR_TTL]);
    ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    ip[8..24].copy_from_slice(&from);
    ip[24..40].copy_from_slice(&to);

    let icmp = &mut out[IPV6_HEADER_LEN..total];
    icmp[..8].copy_from_slice(&[icmp_type, code, 0, 0, rest[0], rest[1], rest[2], rest[3]]);
    icmp[8..].copy_from_slice(&offending[..quote]);
    // Pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
    let mut sum = checksum::accumulate(0, &from);
    sum = checksum::accumulate(sum, &to);
    sum = checksum::accumulate(sum, &(icmp_len as u32).to_be_bytes());
    sum = checksum::accumulate(sum, &[0, 0, 0, PROTO_ICMPV6]);
    let c = checksum::finish(checksum::accumulate(sum, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::{self, tests::*};
    use std::net::Ipv6Addr;

    fn v4_checksums_ok(p: &[u8]) {
        assert_eq!(checksum::checksum(&p[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum::checksum(&p[20..]), 0, "ICMP checksum");
    }

    #[test]
    fn unreachable_v4_is_well_formed() {
        let orig = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 63, 100);
        let h = ip::parse(&orig).unwrap();
        let mut out = [0u8; MAX_ERROR_LEN];
        let n = build_error(IcmpError::Unreachable, &orig, &h, h.dst, &mut out).unwrap();
        let reply = &out[..n];
        let rh = ip::parse(reply).unwrap();
        assert_eq!((rh.src, rh.dst, rh.protocol), (h.dst, h.src, PROTO_ICMP));
        assert_eq!(&reply[20..22], &[3, 1]);
        assert_eq!(&reply[28..], &orig[..]);
        v4_checksums_ok(reply);
    }

    #[test]
    fn too_big_v4_carries_mtu_and_quote_is_capped() {
        let orig = ipv4_udp([100, 96, 1, 2], [100, 96, 2, 3], 63, 1400);
        let h = ip::parse(&orig).unwrap();
        let mut out = [0u8; MAX_ERROR_LEN];
        let n = build_error(IcmpError::TooBig { mtu: 1472 }, &orig, &h, h.dst, &mut out).unwrap();
        assert_eq!(n, 576);
        assert_eq!(&out[20..22], &[3, 4]);
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), 1472);
        v4_checksums_ok(&out[..n]);
    }

    #[test]
    fn time_exceeded_v6_checksum_verifies() {
        let src: Ipv6Addr = "fd00:96:1::2".parse().unwrap();
        let dst: Ipv6Addr = "fd00:96:2::3".parse().unwrap();
        let orig = ipv6_udp(src, dst, 1, 2000 - 48);
        let h = ip::parse(&orig).unwrap();
        let mut out = [0u8; MAX_ERROR_LEN];
        let n = build_error(IcmpError::TimeExceeded, &orig, &h, h.dst, &mut out).unwrap();
        assert_eq!(n, MAX_ERROR_LEN);
        let rh = ip::parse(&out[..n]).unwrap();
        assert_eq!((rh.dst, rh.protocol), (IpAddr::V6(src), PROTO_ICMPV6));
        assert_eq!(out[40], 3);
        let mut sum = checksum::accumulate(0, &out[8..40]);
        sum = checksum::accumulate(sum, &((n - 40) as u32).to_be_bytes());
        sum = checksum::accumulate(sum, &[0, 0, 0, PROTO_ICMPV6]);
        assert_eq!(checksum::finish(checksum::accumulate(sum, &out[40..n])), 0);
    }

    #[test]
    fn packet_too_big_v6_has_32bit_mtu() {
        let orig = ipv6_udp("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 9, 1500);
        let h = ip::parse(&orig).unwrap();
        let mut out = [0u8; MAX_ERROR_LEN];
        build_error(IcmpError::TooBig { mtu: 1452 }, &orig, &h, h.dst, &mut out).unwrap();
        assert_eq!((out[40], out[41]), (2, 0));
        assert_eq!(u32::from_be_bytes([out[44], out[45], out[46], out[47]]), 1452);
    }

    #[test]
    fn never_answers_errors_fragments_or_multicast() {
        let mut out = [0u8; MAX_ERROR_LEN];
        // An ICMP destination-unreachable in transit.
        let mut icmp_err = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 63, 8);
        icmp_err[9] = PROTO_ICMP;
        icmp_err[20] = 3;
        let h = ip::parse(&icmp_err).unwrap();
        assert_eq!(build_error(IcmpError::Unreachable, &icmp_err, &h, h.dst, &mut out), None);
        // An echo request does get an answer.
        icmp_err[20] = 8;
        let h = ip::parse(&icmp_err).unwrap();
        assert!(build_error(IcmpError::Unreachable, &icmp_err, &h, h.dst, &mut out).is_some());
        // A non-first fragment does not.
        let mut frag = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 63, 8);
        frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        let h = ip::parse(&frag).unwrap();
        assert_eq!(build_error(IcmpError::Unreachable, &frag, &h, h.dst, &mut out), None);
        // Nor a multicast source, nor a too-small output buffer, nor mixed families.
        let mcast = ipv4_udp([224, 0, 0, 1], [100, 96, 9, 9], 63, 8);
        let h = ip::parse(&mcast).unwrap();
        assert_eq!(build_error(IcmpError::Unreachable, &mcast, &h, h.dst, &mut out), None);
        let ok = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 63, 8);
        let h = ip::parse(&ok).unwrap();
        assert_eq!(build_error(IcmpError::Unreachable, &ok, &h, h.dst, &mut out[..100]), None);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(build_error(IcmpError::Unreachable, &ok, &h, v6, &mut out), None);
        // ICMPv6 errors (type < 128) are not answered either.
        let mut v6err = ipv6_udp("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 9, 8);
        v6err[6] = PROTO_ICMPV6;
        v6err[40] = 1;
        let h = ip::parse(&v6err).unwrap();
        assert_eq!(build_error(IcmpError::TimeExceeded, &v6err, &h, h.dst, &mut out), None);
    }
}
