//! The targets' independent oracle: etherparse's reading of the same bytes,
//! and the data path's documented rules written on top of it. Nothing here
//! uses encapd's parsers, views or checksum code, so a mistake in those
//! cannot hide behind a copy of itself.
//!
//! The rules etherparse does not know, each from encapd's documentation:
//! - a complete packet's length field spans the bytes exactly
//!   (`wire::ip::parse`: a datagram or a TUN read holds one packet, no
//!   padding; hence no IPv6 jumbograms either);
//! - IPv4 AH (protocol 51) and IPv6 extension headers are payload: the
//!   data path does not interpret them, so etherparse's complaints about
//!   their contents do not make a packet malformed;
//! - the drop reason of each malformed case (`wire::ip::IpError`).

use std::net::IpAddr;

use encapd::wire::ip::IpError;
use etherparse::LenSource;
use etherparse::checksum::Sum16BitWords;
use etherparse::err::{Layer, LenError};
use etherparse::{Ipv4HeaderSlice, Ipv4Slice, Ipv6HeaderSlice, Ipv6Slice, NetSlice, SlicedPacket, TcpSlice, TransportSlice, UdpSlice};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// The IP header facts of a packet the data path accepts, as etherparse
/// reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFacts {
    pub ipv4: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The IPv4 protocol or the IPv6 fixed header's next header.
    pub protocol: u8,
    pub header_len: usize,
    /// IPv4 fragment offset in 8-byte units (0 for IPv6).
    pub fragment_offset: u16,
    /// IPv4 DF (true for IPv6).
    pub dont_fragment: bool,
}

/// The data path's verdict on one complete IP packet (what `wire::ip::parse`
/// must answer), from etherparse and the rules in the module documentation.
pub fn ip_verdict(p: &[u8]) -> Result<IpFacts, IpError> {
    let facts = match p.first().map(|b| b >> 4) {
        None => return Err(IpError::Empty),
        Some(4) => ipv4_verdict(p)?,
        Some(6) => ipv6_verdict(p)?,
        Some(v) => return Err(IpError::BadVersion(v)),
    };
    Ok(facts)
}

fn ipv4_verdict(p: &[u8]) -> Result<IpFacts, IpError> {
    use etherparse::err::ipv4::{HeaderError, SliceError};
    match Ipv4Slice::from_slice(p) {
        Ok(_) | Err(SliceError::Exts(_)) => {}
        // A complaint about the AH behind a sound IPv4 header (its lengths
        // were checked first).
        Err(SliceError::Len(LenError { layer: Layer::IpAuthHeader, .. })) => {}
        Err(SliceError::Header(HeaderError::HeaderLengthSmallerThanHeader { .. })) => return Err(IpError::BadHeaderLength),
        Err(SliceError::Header(HeaderError::UnexpectedVersion { version_number })) => return Err(IpError::BadVersion(version_number)),
        Err(SliceError::Len(l)) => {
            return Err(match (l.layer, l.len_source) {
                // Shorter than the fixed header, or than the IHL says.
                (Layer::Ipv4Header, _) if l.required_len == 20 => IpError::Truncated,
                (Layer::Ipv4Header, _) => IpError::BadHeaderLength,
                (Layer::Ipv4Packet, LenSource::Ipv4HeaderTotalLen) => IpError::BadHeaderLength,
                (Layer::Ipv4Packet, _) => IpError::LengthMismatch,
                other => panic!("etherparse length error {other:?} not mapped"),
            });
        }
    }
    let h = Ipv4HeaderSlice::from_slice(p).expect("the IPv4 header was accepted above");
    if usize::from(h.total_len()) != p.len() {
        return Err(IpError::LengthMismatch);
    }
    Ok(IpFacts {
        ipv4: true,
        src: h.source_addr().into(),
        dst: h.destination_addr().into(),
        ttl: h.ttl(),
        protocol: h.protocol().0,
        header_len: usize::from(h.ihl()) * 4,
        fragment_offset: h.fragments_offset().value(),
        dont_fragment: h.dont_fragment(),
    })
}

fn ipv6_verdict(p: &[u8]) -> Result<IpFacts, IpError> {
    use etherparse::err::ipv6::{HeaderError, SliceError};
    match Ipv6Slice::from_slice(p) {
        Ok(_) | Err(SliceError::Exts(_)) => {}
        Err(SliceError::Len(LenError { layer: Layer::Ipv6Header, .. })) => return Err(IpError::Truncated),
        Err(SliceError::Len(LenError { layer: Layer::Ipv6Packet, .. })) => return Err(IpError::LengthMismatch),
        // A complaint about an extension header: payload to the data path.
        Err(SliceError::Len(_)) => {}
        Err(SliceError::Header(HeaderError::UnexpectedVersion { version_number })) => return Err(IpError::BadVersion(version_number)),
    }
    let h = Ipv6HeaderSlice::from_slice(p).expect("the IPv6 header was accepted above");
    if 40 + usize::from(h.payload_length()) != p.len() {
        return Err(IpError::LengthMismatch);
    }
    Ok(IpFacts {
        ipv4: false,
        src: h.source_addr().into(),
        dst: h.destination_addr().into(),
        ttl: h.hop_limit(),
        protocol: h.next_header().0,
        header_len: 40,
        fragment_offset: 0,
        dont_fragment: true,
    })
}

/// What etherparse reads in a complete IP packet that carries TCP or UDP
/// directly behind its fixed header (no AH, no IPv6 extension headers).
#[derive(Debug)]
pub struct L4<'a> {
    pub sliced: SlicedPacket<'a>,
    pub ipv4: bool,
    pub tcp: bool,
    /// The IP header length (IPv4 options included).
    pub ip_len: usize,
    /// IP header + transport header.
    pub head: usize,
    /// The TCP or UDP payload.
    pub payload: &'a [u8],
}

impl<'a> L4<'a> {
    pub fn tcp(&self) -> &TcpSlice<'a> {
        match &self.sliced.transport {
            Some(TransportSlice::Tcp(t)) => t,
            other => panic!("not TCP: {other:?}"),
        }
    }

    pub fn udp(&self) -> &UdpSlice<'a> {
        match &self.sliced.transport {
            Some(TransportSlice::Udp(u)) => u,
            other => panic!("not UDP: {other:?}"),
        }
    }

    /// The IPv4 header (panics for IPv6).
    pub fn ipv4_header(&self) -> etherparse::Ipv4Header {
        match &self.sliced.net {
            Some(NetSlice::Ipv4(v4)) => v4.header().to_header(),
            other => panic!("not IPv4: {other:?}"),
        }
    }

    fn addrs(&self) -> (Vec<u8>, Vec<u8>) {
        match &self.sliced.net {
            Some(NetSlice::Ipv4(v4)) => (v4.header().source().to_vec(), v4.header().destination().to_vec()),
            Some(NetSlice::Ipv6(v6)) => (v6.header().source().to_vec(), v6.header().destination().to_vec()),
            other => panic!("not IP: {other:?}"),
        }
    }

    /// The transport checksum verifies by etherparse's computation (an IPv4
    /// UDP checksum of 0, "none", passes).
    pub fn transport_checksum_ok(&self) -> bool {
        let (src, dst) = self.addrs();
        match &self.sliced.transport {
            Some(TransportSlice::Tcp(t)) => {
                let want = if self.ipv4 {
                    t.calc_checksum_ipv4(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
                } else {
                    t.calc_checksum_ipv6(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
                };
                want.is_ok_and(|c| c == t.checksum())
            }
            Some(TransportSlice::Udp(u)) => {
                if self.ipv4 && u.checksum() == 0 {
                    return true;
                }
                let h = u.to_header();
                let want = if self.ipv4 {
                    h.calc_checksum_ipv4_raw(src[..].try_into().unwrap(), dst[..].try_into().unwrap(), u.payload())
                } else {
                    h.calc_checksum_ipv6_raw(src[..].try_into().unwrap(), dst[..].try_into().unwrap(), u.payload())
                };
                want.is_ok_and(|c| c == u.checksum())
            }
            other => panic!("not TCP or UDP: {other:?}"),
        }
    }

    /// The transport checksum field.
    pub fn checksum_field(&self) -> u16 {
        if self.tcp { self.tcp().checksum() } else { self.udp().checksum() }
    }

    /// Where the transport checksum field lies in the transport header
    /// (RFC 9293 §3.1, RFC 768).
    pub fn checksum_offset(&self) -> usize {
        if self.tcp { 16 } else { 6 }
    }

    /// The folded pseudo-header sum (addresses, protocol, transport length)
    /// by etherparse's arithmetic: what a packet whose checksum is left to
    /// finish carries in its checksum field, as the field reads (network
    /// byte order: `Sum16BitWords` adds native-endian words, so its result
    /// is turned with `to_be`, as etherparse's own checksum functions do —
    /// without it a byte-swapped field passed for a partial checksum, the
    /// offload_split finding of 2026-12-07).
    pub fn partial_checksum(&self) -> u16 {
        let (src, dst) = self.addrs();
        let l4_len = self.sliced_l4_len();
        let sum = Sum16BitWords::new()
            .add_slice(&src)
            .add_slice(&dst)
            .add_2bytes([0, if self.tcp { PROTO_TCP } else { PROTO_UDP }])
            .add_4bytes((l4_len as u32).to_be_bytes());
        (!sum.ones_complement()).to_be()
    }

    fn sliced_l4_len(&self) -> usize {
        match &self.sliced.transport {
            Some(TransportSlice::Tcp(t)) => t.slice().len(),
            Some(TransportSlice::Udp(u)) => u.slice().len(),
            other => panic!("not TCP or UDP: {other:?}"),
        }
    }

    /// The IPv4 header checksum verifies: the one's-complement sum of the
    /// header's bytes as sent, by etherparse's summing (always true for
    /// IPv6, which has none). Not `to_header().calc_header_checksum()`:
    /// etherparse's `Ipv4Header` has no field for the reserved flag bit,
    /// so a header with it set would be summed without it (fuzz finding
    /// `offload_split-ipv4-reserved-flag`).
    pub fn ip_checksum_ok(&self) -> bool {
        match &self.sliced.net {
            Some(NetSlice::Ipv4(v4)) => Sum16BitWords::new().add_slice(v4.header().slice()).ones_complement() == 0,
            _ => true,
        }
    }
}

/// etherparse's reading of `p` as one complete TCP or UDP packet: an IP
/// header whose length spans `p` exactly, not an IPv4 fragment, TCP or UDP
/// directly behind it (a UDP length equal to the rest), or `None`.
pub fn l4(p: &[u8]) -> Option<L4<'_>> {
    let facts = ip_verdict(p).ok()?;
    if facts.fragment_offset != 0 || (facts.protocol != PROTO_TCP && facts.protocol != PROTO_UDP) {
        return None;
    }
    let sliced = SlicedPacket::from_ip(p).ok()?;
    let (head, payload) = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => (facts.header_len + t.header_len(), t.payload()),
        Some(TransportSlice::Udp(u)) if usize::from(u.length()) == p.len() - facts.header_len => (facts.header_len + 8, u.payload()),
        _ => return None,
    };
    // (SlicedPacket has no transport for a fragment with MF set either.)
    Some(L4 { ipv4: facts.ipv4, tcp: facts.protocol == PROTO_TCP, ip_len: facts.header_len, head, payload, sliced })
}

/// Asserts that `seg`'s headers are `orig`'s field by field (etherparse's
/// reading), but for what cutting or merging changes: the lengths, the
/// IPv4 ID and header checksum, the TCP sequence number, FIN, PSH and CWR,
/// and the transport checksum.
pub fn assert_same_headers(seg: &L4<'_>, orig: &L4<'_>, what: &str) {
    assert_eq!((seg.ipv4, seg.tcp, seg.head), (orig.ipv4, orig.tcp, orig.head), "{what}: header layout");
    match (&seg.sliced.net, &orig.sliced.net) {
        (Some(NetSlice::Ipv4(s)), Some(NetSlice::Ipv4(o))) => {
            let (s, o) = (s.header().to_header(), o.header().to_header());
            assert_eq!(
                (s.dscp, s.ecn, s.dont_fragment, s.more_fragments, s.fragment_offset, s.time_to_live, s.protocol),
                (o.dscp, o.ecn, o.dont_fragment, o.more_fragments, o.fragment_offset, o.time_to_live, o.protocol),
                "{what}: IPv4 header fields"
            );
            assert_eq!((s.source, s.destination, s.options), (o.source, o.destination, o.options), "{what}: IPv4 addresses and options");
        }
        (Some(NetSlice::Ipv6(s)), Some(NetSlice::Ipv6(o))) => {
            let (s, o) = (s.header().to_header(), o.header().to_header());
            assert_eq!(
                (s.traffic_class, s.flow_label, s.next_header, s.hop_limit, s.source, s.destination),
                (o.traffic_class, o.flow_label, o.next_header, o.hop_limit, o.source, o.destination),
                "{what}: IPv6 header fields"
            );
        }
        other => panic!("{what}: IP versions differ: {other:?}"),
    }
    match (&seg.sliced.transport, &orig.sliced.transport) {
        (Some(TransportSlice::Tcp(s)), Some(TransportSlice::Tcp(o))) => {
            let (s, o) = (s.to_header(), o.to_header());
            assert_eq!(
                (s.source_port, s.destination_port, s.acknowledgment_number, s.ns, s.ece, s.urg, s.ack, s.rst, s.syn),
                (o.source_port, o.destination_port, o.acknowledgment_number, o.ns, o.ece, o.urg, o.ack, o.rst, o.syn),
                "{what}: TCP header fields"
            );
            assert_eq!(
                (s.window_size, s.urgent_pointer, s.options),
                (o.window_size, o.urgent_pointer, o.options),
                "{what}: TCP window, urgent, options"
            );
        }
        (Some(TransportSlice::Udp(s)), Some(TransportSlice::Udp(o))) => {
            assert_eq!((s.source_port(), s.destination_port()), (o.source_port(), o.destination_port()), "{what}: UDP ports");
        }
        other => panic!("{what}: transports differ: {other:?}"),
    }
}

/// Checks an ICMP / ICMPv6 error built about `offending` (a packet the data
/// path accepted) with etherparse: one well-formed IP packet within the RFC
/// size limits (576 bytes for ICMP, RFC 1812 §4.3.2.3; 1280 for ICMPv6, RFC
/// 4443 §2.4(c)), from `from` back to the offending packet's source, an
/// error type, every checksum right by etherparse's computation, and as
/// much of the offending packet quoted as fits. Returns the ICMP type,
/// code and the four bytes after the checksum. Panics (a finding) otherwise.
pub fn assert_icmp_error_ok(reply: &[u8], offending: &[u8], from: IpAddr) -> (u8, u8, [u8; 4]) {
    let orig = ip_verdict(offending).expect("the offending packet was accepted before");
    let reply_ip = ip_verdict(reply).unwrap_or_else(|e| panic!("ICMP error does not parse: {e} ({} bytes)", reply.len()));
    assert_eq!(reply_ip.dst, orig.src, "ICMP error must go back to the sender");
    assert_eq!(reply_ip.src, from, "ICMP error must come from the given source");
    let sliced = SlicedPacket::from_ip(reply).unwrap_or_else(|e| panic!("etherparse refuses the ICMP error: {e:?}"));
    let (head, quote, room) = match (&sliced.net, &sliced.transport) {
        (Some(NetSlice::Ipv4(v4)), Some(TransportSlice::Icmpv4(i))) => {
            assert!(reply.len() <= 576, "ICMPv4 error of {} bytes exceeds 576 (RFC 1812 4.3.2.3)", reply.len());
            let h = v4.header();
            assert_eq!(usize::from(h.ihl()) * 4, 20, "no IP options on an error we originate");
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum(), "IPv4 header checksum");
            assert_eq!(i.header().icmp_type.calc_checksum(i.payload()), i.checksum(), "ICMP checksum");
            assert!(matches!((i.type_u8(), i.code_u8()), (3, 1) | (11, 0) | (3, 4)), "type/code {}/{}", i.type_u8(), i.code_u8());
            assert_eq!(i.header_len(), 8, "an error's header is 8 bytes");
            ((i.type_u8(), i.code_u8(), i.bytes5to8()), i.payload(), 576 - 28)
        }
        (Some(NetSlice::Ipv6(v6)), Some(TransportSlice::Icmpv6(i))) => {
            assert!(reply.len() <= 1280, "ICMPv6 error of {} bytes exceeds 1280 (RFC 4443 2.4(c))", reply.len());
            assert!(i.is_checksum_valid(v6.header().source(), v6.header().destination()), "ICMPv6 checksum");
            assert!(matches!((i.type_u8(), i.code_u8()), (1, 0) | (3, 0) | (2, 0)), "type/code {}/{}", i.type_u8(), i.code_u8());
            assert_eq!(i.header_len(), 8, "an error's header is 8 bytes");
            ((i.type_u8(), i.code_u8(), i.bytes5to8()), i.payload(), 1280 - 48)
        }
        other => panic!("not an ICMP error per etherparse: {other:?}"),
    };
    assert_eq!(quote, &offending[..quote.len()], "the quote must be the start of the offending packet");
    assert_eq!(quote.len(), offending.len().min(room), "quote length");
    head
}
