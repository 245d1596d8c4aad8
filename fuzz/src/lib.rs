//! The fuzz targets ([`targets`]), and the fixtures and independent checkers
//! they share.
//!
//! The checkers here deliberately do not reuse encapd's own helpers beyond
//! `wire::checksum` (whose correctness is covered by a proptest against an
//! RFC 1071 reference), so a target compares encapd's answer with a second
//! opinion rather than with itself.

pub mod targets;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use encapd::datapath::packet::NodeScope;
use encapd::route::{PeerSpec, Prefix, Route, SubnetTable, TableScope};
use encapd::wire::checksum;

pub const OWN_V4: &str = "100.96.1.0/24";
pub const OWN_V6: &str = "fd00:96:1::/64";
pub const PEER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const PEER_C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const PEER_PORT: u16 = 8285;

/// The peers of the fixed table: (subnet, underlay IP).
pub fn peer_list() -> Vec<(Prefix, IpAddr)> {
    vec![
        ("100.96.2.0/24".parse().unwrap(), IpAddr::V4(PEER_B)),
        ("fd00:96:2::/64".parse().unwrap(), IpAddr::V4(PEER_B)),
        ("100.96.3.0/24".parse().unwrap(), IpAddr::V4(PEER_C)),
    ]
}

/// The table a node owning 100.96.1.0/24 and fd00:96:1::/64 builds for peers
/// B (100.96.2.0/24, fd00:96:2::/64) and C (100.96.3.0/24).
pub fn table() -> SubnetTable {
    let scope = TableScope {
        own: vec![OWN_V4.parse().unwrap(), OWN_V6.parse().unwrap()],
        networks: vec!["100.96.0.0/16".parse().unwrap(), "fd00:96::/32".parse().unwrap()],
        underlay_ipv4: true,
    };
    let peers: Vec<PeerSpec> = peer_list()
        .into_iter()
        .map(|(subnet, ip)| PeerSpec {
            vtep_mac: None,
            kernel_decap: false,
            subnet,
            endpoint: SocketAddr::new(ip, PEER_PORT),
            origin: subnet.to_string(),
        })
        .collect();
    SubnetTable::build(1, &scope, &peers).expect("fixture table is valid")
}

pub fn node() -> NodeScope {
    NodeScope { own_v4: OWN_V4.parse().unwrap(), own_v6: Some(OWN_V6.parse().unwrap()), max_inner: 1472 }
}

/// Reference longest-prefix match over the fixed peers: a linear scan.
pub fn naive_lookup(dst: IpAddr) -> Option<Route> {
    peer_list().into_iter().filter(|(p, _)| p.contains(dst)).max_by_key(|(p, _)| p.len()).map(|(subnet, ip)| Route {
        vtep_mac: None,
        kernel_decap: false,
        subnet,
        endpoint: SocketAddr::new(ip, PEER_PORT),
    })
}

/// True when `dst` lies in one of the node's own subnets (reference check).
pub fn in_own_subnets(dst: IpAddr) -> bool {
    OWN_V4.parse::<Prefix>().unwrap().contains(dst) || OWN_V6.parse::<Prefix>().unwrap().contains(dst)
}

/// Picks an underlay sender address from one selector byte and the bytes
/// after it: mostly the known peers (so inputs get past the sender check),
/// sometimes an unknown or arbitrary address. Returns the sender and how many
/// bytes were used.
pub fn pick_sender(data: &[u8]) -> (IpAddr, usize) {
    let Some(&sel) = data.first() else { return (IpAddr::V4(PEER_B), 0) };
    match sel % 8 {
        0..=3 => (IpAddr::V4(PEER_B), 1),
        4 | 5 => (IpAddr::V4(PEER_C), 1),
        6 if data.len() >= 5 => (IpAddr::V4(Ipv4Addr::new(data[1], data[2], data[3], data[4])), 5),
        7 if data.len() >= 17 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&data[1..17]);
            (IpAddr::V6(Ipv6Addr::from(o)), 17)
        }
        _ => (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 66)), 1),
    }
}

/// Makes the IP length field agree with the bytes present (IPv4 total
/// length, IPv6 payload length), so the fuzzer reaches the logic behind the
/// length check more often. Lengths that do not fit the field are left alone.
pub fn fix_ip_length(pkt: &mut [u8]) {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 4 => {
            if let Ok(total) = u16::try_from(pkt.len()) {
                pkt[2..4].copy_from_slice(&total.to_be_bytes());
            }
        }
        Some(6) if pkt.len() >= 40 => {
            if let Ok(payload) = u16::try_from(pkt.len() - 40) {
                pkt[4..6].copy_from_slice(&payload.to_be_bytes());
            }
        }
        _ => {}
    }
}

/// Rewrites the IPv4 header checksum so the header verifies.
pub fn fix_ipv4_checksum(pkt: &mut [u8]) {
    if pkt.first().map(|b| b >> 4) != Some(4) || pkt.len() < 20 {
        return;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 || ihl > pkt.len() {
        return;
    }
    pkt[10..12].fill(0);
    let c = checksum::checksum(&pkt[..ihl]);
    pkt[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The one's-complement sum of the transport pseudo-header and `l4` verifies
/// (folds to all ones), for a packet whose IP header is `ip` (IPv4 from the
/// source-address offset, IPv6 fixed header).
pub fn l4_checksum_ok(ip: &[u8], v4: bool, proto: u8, l4: &[u8]) -> bool {
    let mut sum = if v4 { checksum::accumulate(0, &ip[12..20]) } else { checksum::accumulate(0, &ip[8..40]) };
    sum = checksum::accumulate(sum, &[0, proto]);
    sum = checksum::accumulate(sum, &(l4.len() as u32).to_be_bytes());
    checksum::finish(checksum::accumulate(sum, l4)) == 0
}

/// Checks an ICMP / ICMPv6 error built about `offending` (a packet that
/// `ip::parse` accepted): well-formed, within the RFC size limits, addressed
/// back to the offending packet's source from `from`, quoting its start, with
/// every checksum valid. Panics (a fuzz finding) otherwise.
pub fn assert_icmp_error_ok(reply: &[u8], offending: &[u8], from: IpAddr) {
    use encapd::wire::icmp::MAX_ERROR_LEN;
    use encapd::wire::ip::{self, PROTO_ICMP, PROTO_ICMPV6};

    let orig = ip::parse(offending).expect("offending packet parsed before");
    let h = ip::parse(reply).unwrap_or_else(|e| panic!("ICMP error does not parse: {e} ({} bytes)", reply.len()));
    assert!(reply.len() <= MAX_ERROR_LEN, "ICMP error of {} bytes", reply.len());
    assert_eq!(h.dst, orig.src, "ICMP error must go back to the sender");
    assert_eq!(h.src, from, "ICMP error must come from the given source");
    if h.is_ipv4() {
        assert!(reply.len() <= 576, "ICMPv4 error of {} bytes exceeds 576 (RFC 1812 4.3.2.3)", reply.len());
        assert_eq!(h.protocol, PROTO_ICMP);
        assert_eq!(h.header_len, 20);
        assert_eq!(checksum::checksum(&reply[..20]), 0, "IPv4 header checksum");
        assert_eq!(checksum::checksum(&reply[20..]), 0, "ICMP checksum");
        assert!(reply.len() >= 28);
        assert_eq!(&reply[28..], &offending[..reply.len() - 28], "quote must be the start of the offending packet");
        assert!(matches!((reply[20], reply[21]), (3, 1) | (11, 0) | (3, 4)), "type/code {}/{}", reply[20], reply[21]);
    } else {
        assert_eq!(h.protocol, PROTO_ICMPV6);
        assert!(l4_checksum_ok(reply, false, PROTO_ICMPV6, &reply[40..]), "ICMPv6 checksum");
        assert!(reply.len() >= 48);
        assert_eq!(&reply[48..], &offending[..reply.len() - 48], "quote must be the start of the offending packet");
        assert!(matches!((reply[40], reply[41]), (1, 0) | (3, 0) | (2, 0)), "type/code {}/{}", reply[40], reply[41]);
    }
    // As much of the offending packet as fits is quoted.
    let quoted = reply.len() - if h.is_ipv4() { 28 } else { 48 };
    let room = if h.is_ipv4() { 576 - 28 } else { MAX_ERROR_LEN - 48 };
    assert_eq!(quoted, offending.len().min(room), "quote length");
}

/// Layout of a TCP or UDP packet as the standards define it (a second
/// opinion on encapd's own header parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub v4: bool,
    pub ip_len: usize,
    pub proto: u8,
    /// TCP data offset × 4 (20..=60) or 8 for UDP.
    pub l4_len: usize,
}

impl Layout {
    pub fn head(&self) -> usize {
        self.ip_len + self.l4_len
    }
}

/// The layout of a TCP/UDP packet, or `None` when its headers are not
/// well-formed: IPv4 IHL below 5, a TCP data offset below 5 (RFC 9293
/// §3.1: the header is at least 20 bytes), or headers beyond the bytes present.
pub fn layout(pkt: &[u8]) -> Option<Layout> {
    use encapd::wire::ip::{PROTO_TCP, PROTO_UDP};
    let first = *pkt.first()?;
    let (v4, ip_len, proto) = match first >> 4 {
        4 => (true, usize::from(first & 0x0f) * 4, *pkt.get(9)?),
        6 => (false, 40, *pkt.get(6)?),
        _ => return None,
    };
    if ip_len < 20 || pkt.len() < ip_len {
        return None;
    }
    let l4_len = match proto {
        PROTO_TCP => usize::from(*pkt.get(ip_len + 12)? >> 4) * 4,
        PROTO_UDP => 8,
        _ => return None,
    };
    if (proto == PROTO_TCP && l4_len < 20) || pkt.len() < ip_len + l4_len {
        return None;
    }
    Some(Layout { v4, ip_len, proto, l4_len })
}

/// TCP sequence number of a packet with layout `l`.
pub fn tcp_seq(pkt: &[u8], l: &Layout) -> u32 {
    let t = l.ip_len;
    u32::from_be_bytes([pkt[t + 4], pkt[t + 5], pkt[t + 6], pkt[t + 7]])
}

/// Splits `data` into length-prefixed records: each is a big-endian u16
/// length and that many bytes (the last one takes what is left).
pub struct Records<'a>(pub &'a [u8]);

impl<'a> Records<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// Rewrites the TCP/UDP checksum of a packet so that the transport sum
/// verifies. Lenient on purpose: a TCP header too short to hold the checksum
/// field (data offset below 5) gets the sum fixed through its
/// acknowledgment-number word instead, so the fuzzer can also build packets
/// that are malformed in that way yet pass checksum validation. Packets
/// that are not TCP/UDP, or too short, are left alone.
pub fn fix_l4_checksum(pkt: &mut [u8]) {
    use encapd::wire::ip::{PROTO_TCP, PROTO_UDP};
    let (v4, ip_len, proto) = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => (true, usize::from(pkt[0] & 0x0f) * 4, pkt[9]),
        Some(6) if pkt.len() >= 40 => (false, 40, pkt[6]),
        _ => return,
    };
    if ip_len < 20 || ip_len > pkt.len() {
        return;
    }
    let l4_len = pkt.len() - ip_len;
    let field = match proto {
        PROTO_UDP if l4_len >= 8 => ip_len + 6,
        PROTO_TCP if l4_len >= 18 => ip_len + 16,
        PROTO_TCP if l4_len >= 10 => ip_len + 8,
        _ => return,
    };
    pkt[field..field + 2].fill(0);
    let mut sum = if v4 { checksum::accumulate(0, &pkt[12..20]) } else { checksum::accumulate(0, &pkt[8..40]) };
    sum = checksum::accumulate(sum, &[0, proto]);
    sum = checksum::accumulate(sum, &(l4_len as u32).to_be_bytes());
    let mut c = checksum::finish(checksum::accumulate(sum, &pkt[ip_len..]));
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
}
