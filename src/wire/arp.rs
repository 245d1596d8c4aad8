//! ARP for IPv4 over Ethernet (RFC 826), which a VTEP that lost its static
//! neighbour entry sends inside VXLAN: the view [`ArpPacket`] and the
//! request or reply it holds, [`Arp`].
//!
//! The view has the fixed layout of Ethernet/IPv4 ARP (6-byte hardware and
//! 4-byte protocol addresses); [`ArpPacket::check_len`] accepts any buffer
//! of at least 28 bytes, after which no accessor panics (see the
//! [module promise](crate::wire)). [`parse_arp`] is what says whether the
//! bytes really are Ethernet/IPv4 ARP.

use std::net::Ipv4Addr;

use super::ethernet::{ETHERTYPE_IPV4, Mac};
use super::{Truncated, read_u16, write_u16};

/// Byte offsets of the fields (Ethernet/IPv4 layout).
pub mod field {
    use std::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// An ARP packet for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;
/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, Truncated> {
        let packet = ArpPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 28 bytes of Ethernet/IPv4 ARP.
    #[inline]
    pub fn check_len(&self) -> Result<(), Truncated> {
        Truncated::check("ARP", self.buffer.as_ref().len(), ARP_LEN)
    }

    /// The buffer, given back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    #[inline]
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE.start)
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    #[inline]
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER.start)
    }

    #[inline]
    pub fn sender_hardware_addr(&self) -> Mac {
        Mac::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[field::SPA];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> Mac {
        Mac::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        let d = &self.buffer.as_ref()[field::TPA];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware and protocol types and lengths of Ethernet/IPv4 ARP.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        write_u16(b, field::HTYPE.start, HTYPE_ETHERNET);
        write_u16(b, field::PTYPE.start, ETHERTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    #[inline]
    pub fn set_operation(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::OPER.start, value);
    }

    #[inline]
    pub fn set_sender_hardware_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_sender_protocol_addr(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac.0);
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// An ARP request or reply (IPv4 over Ethernet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub request: bool,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

/// Reads an ARP request or reply for IPv4 over Ethernet; `None` for
/// anything else (other hardware or protocol types, other operations,
/// too short).
pub fn parse_arp(bytes: &[u8]) -> Option<Arp> {
    let p = ArpPacket::new_checked(bytes).ok()?;
    let ethernet_ipv4 =
        (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len()) == (HTYPE_ETHERNET, ETHERTYPE_IPV4, 6, 4);
    if !ethernet_ipv4 {
        return None;
    }
    let request = match p.operation() {
        ARP_REQUEST => true,
        ARP_REPLY => false,
        _ => return None,
    };
    Some(Arp {
        request,
        sender_mac: p.sender_hardware_addr(),
        sender_ip: p.sender_protocol_addr(),
        target_mac: p.target_hardware_addr(),
        target_ip: p.target_protocol_addr(),
    })
}

/// Writes `arp` as 28 bytes into `out`.
pub fn write_arp(out: &mut [u8; ARP_LEN], arp: &Arp) {
    let mut p = ArpPacket::new_unchecked(&mut out[..]);
    p.set_ethernet_ipv4();
    p.set_operation(if arp.request { ARP_REQUEST } else { ARP_REPLY });
    p.set_sender_hardware_addr(arp.sender_mac);
    p.set_sender_protocol_addr(arp.sender_ip);
    p.set_target_hardware_addr(arp.target_mac);
    p.set_target_protocol_addr(arp.target_ip);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Who has 100.96.1.0? Tell 100.96.2.0" from c6:d2:32:6f:8f:44, as a
    /// kernel VTEP sends it (RFC 826 layout).
    const REQUEST: [u8; ARP_LEN] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44, 100, 96, 2, 0, // sender
        0, 0, 0, 0, 0, 0, 100, 96, 1, 0, // target
    ];

    fn request() -> Arp {
        Arp {
            request: true,
            sender_mac: "c6:d2:32:6f:8f:44".parse().unwrap(),
            sender_ip: Ipv4Addr::new(100, 96, 2, 0),
            target_mac: Mac::default(),
            target_ip: Ipv4Addr::new(100, 96, 1, 0),
        }
    }

    #[test]
    fn reads_and_writes_the_rfc_layout() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!((p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len(), p.operation()), (1, 0x0800, 6, 4, 1));
        assert_eq!(parse_arp(&REQUEST), Some(request()));
        let mut out = [0u8; ARP_LEN];
        write_arp(&mut out, &request());
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn rejects_other_kinds_and_short_input() {
        let mut rarp = REQUEST;
        rarp[7] = 3; // RARP request
        assert_eq!(parse_arp(&rarp), None);
        let mut other_hw = REQUEST;
        other_hw[1] = 6; // IEEE 802
        assert_eq!(parse_arp(&other_hw), None);
        assert_eq!(parse_arp(&REQUEST[..27]), None);
        assert!(ArpPacket::new_checked(&REQUEST[..27]).is_err());
        let reply = Arp { request: false, ..request() };
        let mut out = [0u8; ARP_LEN];
        write_arp(&mut out, &reply);
        assert_eq!(parse_arp(&out), Some(reply));
    }
}
