//! ICMP (RFC 792) and ICMPv6 (RFC 4443): the message view [`IcmpPacket`],
//! and the error messages a router sends (RFC 1812 §4.3): destination
//! unreachable, time exceeded, and fragmentation needed / packet too big.
//!
//! Both versions share the message layout (type, code, checksum, four
//! bytes whose meaning depends on the type, then the body), so one view
//! serves both; only the checksum differs (ICMPv6 covers a pseudo-header).
//! [`IcmpPacket::check_len`] accepts any buffer of at least 8 bytes; after
//! it, no accessor panics (see the [module promise](crate::wire)).
//!
//! [`build_error`] writes a complete IP packet into a caller's buffer, ready
//! to be written to the TUN, or returns `None` where RFC 1812 §4.3.2.7 and
//! RFC 4443 §2.4(e) forbid an error (in reply to an ICMP error, a non-first
//! fragment, or a packet from an unspecified, multicast or broadcast source).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ip::{IPV4_HEADER_LEN, IPV6_HEADER_LEN, IpHeader, PROTO_ICMP, PROTO_ICMPV6, PseudoHeader};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::{Truncated, read_u16, read_u32, write_u16, write_u32};

/// Byte offsets of the message header's fields.
pub mod field {
    use std::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Unused, a pointer, an MTU, or an echo's identifier and sequence
    /// number, depending on the type.
    pub const REST_OF_HEADER: Range<usize> = 4..8;
}

/// The message header: type, code, checksum and the rest of the header.
pub const HEADER_LEN: usize = 8;

/// ICMP types that are errors (RFC 792, RFC 1812 §4.3.2.7: never answered
/// with another error): destination unreachable 3, source quench 4,
/// redirect 5, time exceeded 11, parameter problem 12.
pub fn is_icmpv4_error(msg_type: u8) -> bool {
    matches!(msg_type, 3 | 4 | 5 | 11 | 12)
}

/// ICMPv6 types below 128 are errors (RFC 4443 §2.1).
pub fn is_icmpv6_error(msg_type: u8) -> bool {
    msg_type < 128
}

/// A view of an ICMP or ICMPv6 message in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> IcmpPacket<T> {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<IcmpPacket<T>, Truncated> {
        let packet = IcmpPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte message header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Truncated> {
        Truncated::check("ICMP", self.buffer.as_ref().len(), HEADER_LEN)
    }

    /// The buffer, given back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The four bytes after the checksum as one number: the next-hop MTU
    /// of an ICMP "fragmentation needed" (in its low 16 bits, RFC 1191) or
    /// the MTU of an ICMPv6 "packet too big" (RFC 4443 §3.2).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER.start)
    }

    /// The body: for an error, the start of the packet it is about.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum verifies: over the message alone for ICMP
    /// (`pseudo` is `None`), over the pseudo-header too for ICMPv6.
    #[inline]
    pub fn verify_checksum(&self, pseudo: Option<&PseudoHeader>) -> bool {
        let message = self.buffer.as_ref();
        let sum = pseudo.map_or(0, |p| p.sum(message.len()));
        checksum::finish(checksum::accumulate(sum, message)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST_OF_HEADER.start, value);
    }

    /// Computes the checksum (see [`verify_checksum`](IcmpPacket::verify_checksum)) and writes it.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: Option<&PseudoHeader>) {
        self.set_checksum(0);
        let message = self.buffer.as_ref();
        let sum = pseudo.map_or(0, |p| p.sum(message.len()));
        let c = checksum::finish(checksum::accumulate(sum, message));
        self.set_checksum(c);
    }

    /// The body, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for IcmpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

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
/// DSCP CS6 ("network control"), which Linux gives the ICMP errors it sends.
const ERROR_TOS: u8 = 0xc0;

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
            Some(build_v4(kind, offending, from, src, out))
        }
        (IpAddr::V6(src), IpAddr::V6(from)) => {
            if src.is_unspecified() || src.is_multicast() {
                return None;
            }
            if is_icmp_error(offending, header, PROTO_ICMPV6) {
                return None;
            }
            Some(build_v6(kind, offending, from, src, out))
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
        Some(&t) if icmp_proto == PROTO_ICMP => is_icmpv4_error(t),
        Some(&t) => is_icmpv6_error(t),
    }
}

/// The type, code and rest of header of `kind` (ICMP or ICMPv6 numbers).
fn type_code_rest(kind: IcmpError, v4: bool) -> (u8, u8, u32) {
    match (kind, v4) {
        (IcmpError::Unreachable, true) => (3, 1, 0),
        (IcmpError::TimeExceeded, true) => (11, 0, 0),
        (IcmpError::TooBig { mtu }, true) => (3, 4, u32::from(mtu)),
        (IcmpError::Unreachable, false) => (1, 0, 0),
        (IcmpError::TimeExceeded, false) => (3, 0, 0),
        (IcmpError::TooBig { mtu }, false) => (2, 0, u32::from(mtu)),
    }
}

/// Writes the ICMP message of `kind` quoting `quote` into `message`
/// (exactly 8 + `quote.len()` bytes) with its checksum.
fn write_message(message: &mut [u8], kind: IcmpError, quote: &[u8], pseudo: Option<&PseudoHeader>) {
    let (msg_type, code, rest) = type_code_rest(kind, pseudo.is_none());
    let mut icmp = IcmpPacket::new_unchecked(message);
    icmp.set_msg_type(msg_type);
    icmp.set_msg_code(code);
    icmp.set_rest_of_header(rest);
    icmp.payload_mut().copy_from_slice(quote);
    icmp.fill_checksum(pseudo);
}

fn build_v4(kind: IcmpError, offending: &[u8], from: Ipv4Addr, to: Ipv4Addr, out: &mut [u8]) -> usize {
    let quote = &offending[..offending.len().min(MAX_ERROR_LEN_V4 - IPV4_HEADER_LEN - HEADER_LEN)];
    let total = IPV4_HEADER_LEN + HEADER_LEN + quote.len();
    let mut ip = Ipv4Packet::new_unchecked(&mut out[..total]);
    ip.set_version_and_header_len(IPV4_HEADER_LEN);
    ip.set_dscp_ecn(ERROR_TOS);
    ip.set_total_len(total as u16);
    ip.set_ident(0);
    ip.set_flags_and_frag_offset(0);
    ip.set_ttl(ERROR_TTL);
    ip.set_protocol(PROTO_ICMP);
    ip.set_src_addr(from);
    ip.set_dst_addr(to);
    ip.fill_checksum();
    write_message(ip.payload_mut(), kind, quote, None);
    total
}

fn build_v6(kind: IcmpError, offending: &[u8], from: Ipv6Addr, to: Ipv6Addr, out: &mut [u8]) -> usize {
    let quote = &offending[..offending.len().min(MAX_ERROR_LEN - IPV6_HEADER_LEN - HEADER_LEN)];
    let icmp_len = HEADER_LEN + quote.len();
    let total = IPV6_HEADER_LEN + icmp_len;
    let mut ip = Ipv6Packet::new_unchecked(&mut out[..total]);
    ip.set_version_class_and_flow(0, 0);
    ip.set_payload_len(icmp_len as u16);
    ip.set_next_header(PROTO_ICMPV6);
    ip.set_hop_limit(ERROR_TTL);
    ip.set_src_addr(from);
    ip.set_dst_addr(to);
    let pseudo = ip.pseudo_header(PROTO_ICMPV6);
    write_message(ip.payload_mut(), kind, quote, Some(&pseudo));
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
