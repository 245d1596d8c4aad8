//! Building well-formed IPv4/IPv6 packets with UDP or TCP inside, with
//! correct lengths and checksums: the one packet builder that the unit
//! tests, the offload benchmarks, the fuzz harnesses and the end-to-end
//! tests share. Not used on the data path (it allocates).
//!
//! ```
//! use encapd::wire::build::{Packet, Tcp};
//! let udp = Packet::new([100, 96, 1, 2], [100, 96, 2, 3]).udp(4000, 5000, b"hello");
//! let syn = Packet::new([100, 96, 1, 2], [100, 96, 2, 3]).tcp(Tcp::new(40000, 5201).seq(7).flags(Tcp::SYN), &[]);
//! assert_eq!(udp.len(), 20 + 8 + 5);
//! assert_eq!(syn[33], Tcp::SYN);
//! ```

use std::net::IpAddr;

use super::checksum;
use super::ip::{PROTO_TCP, PROTO_UDP};

/// The IP header of the packets to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ident: u16,
    dont_fragment: bool,
}

/// The TCP header fields of a segment to build (20 bytes plus options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: Vec<u8>,
}

impl Tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const CWR: u8 = 0x80;
    /// NOP, NOP, timestamps (TSval 9, TSecr 7): the 12 option bytes Linux
    /// puts on every segment of a connection.
    pub const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];

    /// An ACK from `sport` to `dport` at sequence 0, window 512, no options.
    pub fn new(sport: u16, dport: u16) -> Tcp {
        Tcp { sport, dport, seq: 0, ack: 77, flags: Tcp::ACK, window: 512, options: Vec::new() }
    }

    pub fn seq(mut self, seq: u32) -> Tcp {
        self.seq = seq;
        self
    }

    pub fn ack(mut self, ack: u32) -> Tcp {
        self.ack = ack;
        self
    }

    pub fn flags(mut self, flags: u8) -> Tcp {
        self.flags = flags;
        self
    }

    pub fn window(mut self, window: u16) -> Tcp {
        self.window = window;
        self
    }

    /// Options (padded with zeros to a multiple of 4 bytes, at most 40).
    pub fn options(mut self, options: &[u8]) -> Tcp {
        let mut o = options[..options.len().min(40)].to_vec();
        o.resize(o.len().div_ceil(4) * 4, 0);
        self.options = o;
        self
    }

    fn header_len(&self) -> usize {
        20 + self.options.len()
    }
}

impl Packet {
    /// A packet from `src` to `dst` (both IPv4 or both IPv6), TTL 64, DF set.
    pub fn new(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Packet {
        Packet { src: src.into(), dst: dst.into(), ttl: 64, ident: 0x1234, dont_fragment: true }
    }

    /// TTL (IPv4) or hop limit (IPv6).
    pub fn ttl(mut self, ttl: u8) -> Packet {
        self.ttl = ttl;
        self
    }

    /// The IPv4 identification field.
    pub fn ident(mut self, ident: u16) -> Packet {
        self.ident = ident;
        self
    }

    pub fn dont_fragment(mut self, df: bool) -> Packet {
        self.dont_fragment = df;
        self
    }

    fn ip_len(&self) -> usize {
        if self.src.is_ipv4() { 20 } else { 40 }
    }

    /// A UDP datagram with `payload`, valid checksums.
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = self.ip(PROTO_UDP, 8 + payload.len());
        let at = self.ip_len();
        p[at..at + 2].copy_from_slice(&sport.to_be_bytes());
        p[at + 2..at + 4].copy_from_slice(&dport.to_be_bytes());
        p[at + 4..at + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[at + 8..].copy_from_slice(payload);
        fix_transport_checksum(&mut p);
        p
    }

    /// A TCP segment with `payload`, valid checksums.
    pub fn tcp(&self, tcp: Tcp, payload: &[u8]) -> Vec<u8> {
        let head = tcp.header_len();
        let mut p = self.ip(PROTO_TCP, head + payload.len());
        let at = self.ip_len();
        let t = &mut p[at..];
        t[0..2].copy_from_slice(&tcp.sport.to_be_bytes());
        t[2..4].copy_from_slice(&tcp.dport.to_be_bytes());
        t[4..8].copy_from_slice(&tcp.seq.to_be_bytes());
        t[8..12].copy_from_slice(&tcp.ack.to_be_bytes());
        t[12] = ((head / 4) as u8) << 4;
        t[13] = tcp.flags;
        t[14..16].copy_from_slice(&tcp.window.to_be_bytes());
        t[20..head].copy_from_slice(&tcp.options);
        t[head..].copy_from_slice(payload);
        fix_transport_checksum(&mut p);
        p
    }

    /// An IP header for `l4_len` bytes of protocol `proto`, zeros behind it.
    fn ip(&self, proto: u8, l4_len: usize) -> Vec<u8> {
        let mut p = vec![0u8; self.ip_len() + l4_len];
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = p.len() as u16;
                p[0] = 0x45;
                p[2..4].copy_from_slice(&total.to_be_bytes());
                p[4..6].copy_from_slice(&self.ident.to_be_bytes());
                p[6] = if self.dont_fragment { 0x40 } else { 0 };
                p[8] = self.ttl;
                p[9] = proto;
                p[12..16].copy_from_slice(&s.octets());
                p[16..20].copy_from_slice(&d.octets());
                fix_ipv4_header_checksum(&mut p);
            }
            (s, d) => {
                let v6 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                p[0] = 0x60;
                p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                p[6] = proto;
                p[7] = self.ttl;
                p[8..24].copy_from_slice(&v6(s).octets());
                p[24..40].copy_from_slice(&v6(d).octets());
            }
        }
        p
    }
}

/// Recomputes the IPv4 header checksum (after editing header fields).
/// Does nothing to an IPv6 packet or one too short for its header.
pub fn fix_ipv4_header_checksum(p: &mut [u8]) {
    if p.first().is_none_or(|b| b >> 4 != 4) {
        return;
    }
    let ihl = (usize::from(p[0] & 0x0f) * 4).clamp(20, 60);
    if p.len() < ihl {
        return;
    }
    p[10..12].fill(0);
    let c = checksum::checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the UDP or TCP checksum of a complete packet (after editing
/// it). Does nothing to other protocols or packets too short to hold it.
pub fn fix_transport_checksum(p: &mut [u8]) {
    let Some((ip_len, proto)) = l4_start(p) else { return };
    let field = ip_len + if proto == PROTO_TCP { 16 } else { 6 };
    if p.len() < field + 2 {
        return;
    }
    p[field..field + 2].fill(0);
    let c = checksum::finish(checksum::accumulate(pseudo_header_sum(p, ip_len, proto), &p[ip_len..]));
    let c = if proto == PROTO_UDP && c == 0 { 0xffff } else { c };
    p[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

/// True when the transport checksum of a complete UDP or TCP packet
/// verifies (an IPv4 UDP checksum of 0, "none", passes).
pub fn transport_checksum_ok(p: &[u8]) -> bool {
    let Some((ip_len, proto)) = l4_start(p) else { return false };
    if proto == PROTO_UDP && p[0] >> 4 == 4 && p.get(ip_len + 6..ip_len + 8) == Some(&[0, 0]) {
        return true;
    }
    checksum::finish(checksum::accumulate(pseudo_header_sum(p, ip_len, proto), &p[ip_len..])) == 0
}

/// Where the transport header starts and which protocol it is.
fn l4_start(p: &[u8]) -> Option<(usize, u8)> {
    let (ip_len, proto) = match p.first()? >> 4 {
        4 => (usize::from(p[0] & 0x0f) * 4, *p.get(9)?),
        6 => (40, *p.get(6)?),
        _ => return None,
    };
    ((proto == PROTO_TCP || proto == PROTO_UDP) && p.len() >= ip_len + 8).then_some((ip_len, proto))
}

fn pseudo_header_sum(p: &[u8], ip_len: usize, proto: u8) -> u64 {
    let addrs = if p[0] >> 4 == 4 { &p[12..20] } else { &p[8..40] };
    let sum = checksum::accumulate(0, addrs);
    let sum = checksum::accumulate(sum, &[0, proto]);
    checksum::accumulate(sum, &((p.len() - ip_len) as u32).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::wire::ip;

    #[test]
    fn udp_and_tcp_parse_and_verify() {
        for (src, dst) in [
            (IpAddr::from([100, 96, 1, 2]), IpAddr::from([100, 96, 2, 3])),
            ("fd00:96:1::2".parse::<Ipv6Addr>().unwrap().into(), "fd00:96:2::3".parse::<Ipv6Addr>().unwrap().into()),
        ] {
            let u = Packet::new(src, dst).ttl(9).udp(1, 2, &[7; 33]);
            let h = ip::parse(&u).unwrap();
            assert_eq!((h.src, h.dst, h.ttl, h.protocol, h.total_len), (src, dst, 9, PROTO_UDP, u.len()));
            assert!(transport_checksum_ok(&u));
            let t = Packet::new(src, dst).tcp(Tcp::new(40000, 5201).seq(5).options(&Tcp::TIMESTAMPS), &[1; 100]);
            assert_eq!(ip::parse(&t).unwrap().protocol, PROTO_TCP);
            assert!(transport_checksum_ok(&t));
            if src.is_ipv4() {
                assert_eq!(checksum::checksum(&t[..20]), 0);
                assert_eq!(t[20 + 12] >> 4, 8, "data offset counts the options");
            }
        }
    }

    #[test]
    fn editing_then_fixing_checksums() {
        let mut p = Packet::new([10, 0, 0, 1], [10, 0, 0, 2]).udp(1, 2, b"abc");
        p[30] ^= 0xff;
        assert!(!transport_checksum_ok(&p));
        fix_transport_checksum(&mut p);
        assert!(transport_checksum_ok(&p));
        p[8] = 3;
        fix_ipv4_header_checksum(&mut p);
        assert_eq!(checksum::checksum(&p[..20]), 0);
        // Too short or not IP: left alone, no panic.
        let mut short = vec![0x45, 0, 0];
        fix_ipv4_header_checksum(&mut short);
        fix_transport_checksum(&mut short);
        assert!(!transport_checksum_ok(&short));
    }
}
