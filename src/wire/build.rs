//! Building well-formed IPv4/IPv6 packets with UDP or TCP inside, with
//! correct lengths and checksums: the one packet builder that the unit
//! tests, the offload benchmarks, the fuzz harnesses and the end-to-end
//! tests share. Not used on the data path (it allocates).
//!
//! ```
//! use encapd::wire::build::{Packet, Tcp};
//! use encapd::wire::{Ipv4Packet, TcpPacket};
//! let udp = Packet::new([100, 96, 1, 2], [100, 96, 2, 3]).udp(4000, 5000, b"hello");
//! let syn = Packet::new([100, 96, 1, 2], [100, 96, 2, 3]).tcp(Tcp::new(40000, 5201).seq(7).flags(Tcp::SYN), &[]);
//! assert_eq!(udp.len(), 20 + 8 + 5);
//! let ip = Ipv4Packet::new_checked(&syn[..]).unwrap();
//! assert_eq!(TcpPacket::new_checked(ip.payload()).unwrap().flags(), Tcp::SYN);
//! ```

use std::net::IpAddr;

use super::ip::{IpPacket, PROTO_TCP, PROTO_UDP};
use super::ipv4::{self, Ipv4Packet};
use super::ipv6::{self, Ipv6Packet};
use super::tcp::{self, TcpPacket};
use super::udp::{self, UdpPacket};

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
    pub const FIN: u8 = tcp::flags::FIN;
    pub const SYN: u8 = tcp::flags::SYN;
    pub const PSH: u8 = tcp::flags::PSH;
    pub const ACK: u8 = tcp::flags::ACK;
    pub const CWR: u8 = tcp::flags::CWR;
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
        let mut o = options[..options.len().min(tcp::MAX_HEADER_LEN - tcp::HEADER_LEN)].to_vec();
        o.resize(o.len().div_ceil(4) * 4, 0);
        self.options = o;
        self
    }

    fn header_len(&self) -> usize {
        tcp::HEADER_LEN + self.options.len()
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

    /// A UDP datagram with `payload`, valid checksums.
    pub fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = udp::HEADER_LEN + payload.len();
        self.build(PROTO_UDP, len, |l4| {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_src_port(sport);
            u.set_dst_port(dport);
            u.set_len(len as u16);
            u.payload_mut().copy_from_slice(payload);
        })
    }

    /// A TCP segment with `payload`, valid checksums.
    pub fn tcp(&self, tcp: Tcp, payload: &[u8]) -> Vec<u8> {
        self.build(PROTO_TCP, tcp.header_len() + payload.len(), |l4| {
            let mut t = TcpPacket::new_unchecked(l4);
            t.set_src_port(tcp.sport);
            t.set_dst_port(tcp.dport);
            t.set_seq_number(tcp.seq);
            t.set_ack_number(tcp.ack);
            t.set_header_len(tcp.header_len());
            t.set_flags(tcp.flags);
            t.set_window_len(tcp.window);
            t.options_mut().copy_from_slice(&tcp.options);
            t.payload_mut().copy_from_slice(payload);
        })
    }

    /// A packet with an IP header for `l4_len` bytes of protocol `proto`,
    /// which `write_l4` fills in; then every checksum.
    fn build(&self, proto: u8, l4_len: usize, write_l4: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut p = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut p = vec![0u8; ipv4::HEADER_LEN + l4_len];
                let total = p.len() as u16;
                let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
                ip.set_version_and_header_len(ipv4::HEADER_LEN);
                ip.set_total_len(total);
                ip.set_ident(self.ident);
                ip.set_dont_frag(self.dont_fragment);
                ip.set_ttl(self.ttl);
                ip.set_protocol(proto);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
                ip.fill_checksum();
                write_l4(ip.payload_mut());
                p
            }
            (s, d) => {
                let v6 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                let mut p = vec![0u8; ipv6::HEADER_LEN + l4_len];
                let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
                ip.set_version_class_and_flow(0, 0);
                ip.set_payload_len(l4_len as u16);
                ip.set_next_header(proto);
                ip.set_hop_limit(self.ttl);
                ip.set_src_addr(v6(s));
                ip.set_dst_addr(v6(d));
                write_l4(ip.payload_mut());
                p
            }
        };
        fix_transport_checksum(&mut p);
        p
    }
}

/// Recomputes the IPv4 header checksum (after editing header fields).
/// Does nothing to an IPv6 packet or one too short for its header. Lenient
/// on purpose, for tests that break packets and then make the header
/// checksum right again: an IHL below 5 is summed as 5, and the total
/// length is not looked at.
pub fn fix_ipv4_header_checksum(p: &mut [u8]) {
    if p.first().is_none_or(|b| b >> 4 != 4) || p.len() < ipv4::HEADER_LEN {
        return;
    }
    let header_len = Ipv4Packet::new_unchecked(&*p).header_len().max(ipv4::HEADER_LEN);
    let Some(header) = p.get_mut(..header_len) else { return };
    // A view of the header alone: its checksum is over these bytes.
    let mut ip = Ipv4Packet::new_unchecked(header);
    ip.set_checksum(0);
    let c = super::checksum::checksum(ip.as_ref());
    ip.set_checksum(c);
}

/// Recomputes the UDP or TCP checksum of a complete packet (after editing
/// it). Does nothing to other protocols or packets whose IP, TCP or UDP
/// header is not well-formed.
pub fn fix_transport_checksum(p: &mut [u8]) {
    let Ok(mut ip) = IpPacket::new_checked(p) else { return };
    let pseudo = ip.pseudo_header();
    match ip.protocol() {
        PROTO_UDP => {
            if let Ok(mut u) = UdpPacket::new_checked(ip.payload_mut()) {
                u.fill_checksum(&pseudo);
            }
        }
        PROTO_TCP => {
            if let Ok(mut t) = TcpPacket::new_checked(ip.payload_mut()) {
                t.fill_checksum(&pseudo);
            }
        }
        _ => {}
    }
}

/// True when the transport checksum of a complete UDP or TCP packet
/// verifies (an IPv4 UDP checksum of 0, "none", passes).
pub fn transport_checksum_ok(p: &[u8]) -> bool {
    let Ok(ip) = IpPacket::new_checked(p) else { return false };
    let pseudo = ip.pseudo_header();
    match ip.protocol() {
        PROTO_UDP => UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.verify_checksum(&pseudo)),
        PROTO_TCP => TcpPacket::new_checked(ip.payload()).is_ok_and(|t| t.verify_checksum(&pseudo)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::wire::ip;
    use crate::wire::oracle_tests::assert_l4_packet_valid;

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
            assert_eq!(assert_l4_packet_valid(&u).payload, &[7; 33], "etherparse reads it whole");
            let t = Packet::new(src, dst).tcp(Tcp::new(40000, 5201).seq(5).options(&Tcp::TIMESTAMPS), &[1; 100]);
            assert_eq!(ip::parse(&t).unwrap().protocol, PROTO_TCP);
            assert!(transport_checksum_ok(&t));
            assert_eq!(assert_l4_packet_valid(&t).payload, &[1; 100]);
            let ip = IpPacket::new_checked(&t[..]).unwrap();
            assert_eq!(TcpPacket::new_checked(ip.payload()).unwrap().header_len(), 32, "data offset counts the options");
        }
    }

    #[test]
    fn editing_then_fixing_checksums() {
        let mut p = Packet::new([10, 0, 0, 1], [10, 0, 0, 2]).udp(1, 2, b"abc");
        *p.last_mut().unwrap() ^= 0xff;
        assert!(!transport_checksum_ok(&p));
        fix_transport_checksum(&mut p);
        assert!(transport_checksum_ok(&p));
        Ipv4Packet::new_unchecked(&mut p[..]).set_ttl(3);
        assert!(!Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
        fix_ipv4_header_checksum(&mut p);
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
        // A header length below 20 is summed as 20, for tests that break it.
        Ipv4Packet::new_unchecked(&mut p[..]).set_version_and_header_len(16);
        fix_ipv4_header_checksum(&mut p);
        assert_eq!(crate::wire::checksum::checksum(&p[..20]), 0);
        // Too short or not IP: left alone, no panic.
        let mut short = vec![0x45, 0, 0];
        fix_ipv4_header_checksum(&mut short);
        fix_transport_checksum(&mut short);
        assert!(!transport_checksum_ok(&short));
    }
}
