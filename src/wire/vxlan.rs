//! VXLAN (RFC 7348) as flannel's vxlan backend and the Linux kernel use it:
//! an 8-byte VXLAN header (flags `0x08`: "VNI valid", a 24-bit VNI) in a UDP
//! datagram (flannel's port 8472), then an Ethernet frame whose destination
//! is the receiving VTEP's MAC, then the IP packet — or, between VTEPs that
//! lost their static neighbour entries, an ARP request or reply
//! ([`crate::wire::arp`]).
//!
//! [`VxlanPacket`] is the view of the VXLAN header; its payload is the
//! inner [`EthernetFrame`](super::EthernetFrame).
//! [`VxlanPacket::check_len`] accepts any buffer of at least 8 bytes, after
//! which no accessor panics (see the [module promise](crate::wire)).
//! [`parse`] reads both headers into a [`Frame`] and checks the VNI flag;
//! [`write_header`] writes them. Nothing here allocates.

use super::ethernet::{self, EthernetFrame};
use super::{Truncated, read_u32, write_u32};

pub use super::ethernet::{BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Mac, MacError};

/// Byte offsets of the VXLAN header's fields.
pub mod field {
    use std::ops::Range;

    pub const FLAGS: usize = 0;
    /// 24 reserved bits after the flags.
    pub const RESERVED0: Range<usize> = 1..4;
    /// The VNI (high 24 bits) and 8 reserved bits.
    pub const VNI_RESERVED1: Range<usize> = 4..8;
}

/// VXLAN header + Ethernet header: the bytes in front of every inner IP
/// packet inside the UDP payload.
pub const HEADER_LEN: usize = VXLAN_LEN + ETHERNET_LEN;
pub const VXLAN_LEN: usize = 8;
pub const ETHERNET_LEN: usize = ethernet::HEADER_LEN;
/// flannel's (and the kernel's `dstport 8472`) VXLAN port.
pub const FLANNEL_PORT: u16 = 8472;
/// The "I" flag: the VNI field is valid (RFC 7348 §5).
pub const FLAG_VNI: u8 = 0x08;

/// A view of a VXLAN header in `buffer`; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> VxlanPacket<T> {
        VxlanPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<VxlanPacket<T>, Truncated> {
        let packet = VxlanPacket::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte VXLAN header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Truncated> {
        Truncated::check("VXLAN", self.buffer.as_ref().len(), VXLAN_LEN)
    }

    /// The buffer, given back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The "I" flag: the VNI is valid.
    #[inline]
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// The 24-bit VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VNI_RESERVED1.start) >> 8
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[VXLAN_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte and clears the reserved bits after it.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = value;
        b[field::RESERVED0].fill(0);
    }

    /// Sets the VNI (its low 24 bits) and clears the reserved byte after it.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        write_u32(self.buffer.as_mut(), field::VNI_RESERVED1.start, vni << 8);
    }

    /// The inner Ethernet frame, to write.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[VXLAN_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for VxlanPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Why a datagram is not a VXLAN frame encapd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    #[error("shorter than the VXLAN and Ethernet headers")]
    Truncated,
    #[error("VXLAN flags without the VNI bit")]
    BadFlags,
}

/// The headers of one VXLAN datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub vni: u32,
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

/// Reads the VXLAN and Ethernet headers of `datagram`; the Ethernet payload
/// starts at [`HEADER_LEN`]. (An 802.1Q tag is not expected between VTEPs
/// and is reported as its ethertype, 0x8100.)
#[inline]
pub fn parse(datagram: &[u8]) -> Result<Frame, VxlanError> {
    let headers = datagram.get(..HEADER_LEN).ok_or(VxlanError::Truncated)?;
    let vxlan = VxlanPacket::new_unchecked(headers);
    if !vxlan.vni_valid() {
        return Err(VxlanError::BadFlags);
    }
    let ethernet = EthernetFrame::new_unchecked(vxlan.payload());
    Ok(Frame { vni: vxlan.vni(), dst: ethernet.dst_addr(), src: ethernet.src_addr(), ethertype: ethernet.ethertype() })
}

/// Writes the VXLAN and Ethernet headers of a frame into `out[..HEADER_LEN]`.
pub fn write_header(out: &mut [u8; HEADER_LEN], frame: &Frame) {
    let mut vxlan = VxlanPacket::new_unchecked(&mut out[..]);
    vxlan.set_flags(FLAG_VNI);
    vxlan.set_vni(frame.vni);
    let mut ethernet = EthernetFrame::new_unchecked(vxlan.payload_mut());
    ethernet.set_dst_addr(frame.dst);
    ethernet.set_src_addr(frame.src);
    ethernet.set_ethertype(frame.ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as `tcpdump -XX` shows a kernel VTEP's (flannel.1, VNI 1).
    const KERNEL_FRAME: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, // VXLAN: I flag, VNI 1
        0x02, 0x00, 0xc6, 0x12, 0x00, 0x01, // dst MAC
        0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44, // src MAC
        0x08, 0x00, // IPv4
    ];

    #[test]
    fn the_view_reads_and_writes_the_header() {
        let v = VxlanPacket::new_checked(&KERNEL_FRAME[..]).unwrap();
        assert_eq!((v.flags(), v.vni_valid(), v.vni()), (0x08, true, 1));
        assert_eq!(v.payload(), &KERNEL_FRAME[8..]);
        let mut buf = [0xffu8; 8];
        let mut w = VxlanPacket::new_unchecked(&mut buf[..]);
        w.set_flags(FLAG_VNI);
        w.set_vni(0x00ab_cdef);
        assert_eq!(buf, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0], "reserved bits cleared");
        assert_eq!(VxlanPacket::new_checked(&KERNEL_FRAME[..7]), Err(Truncated { header: "VXLAN", len: 7, need: 8 }));
    }

    #[test]
    fn parses_and_writes_the_kernel_layout() {
        let f = parse(&KERNEL_FRAME).unwrap();
        assert_eq!(f.vni, 1);
        assert_eq!(f.dst, "02:00:c6:12:00:01".parse().unwrap());
        assert_eq!(f.src.to_string(), "c6:d2:32:6f:8f:44");
        assert_eq!(f.ethertype, ETHERTYPE_IPV4);
        let mut out = [0u8; HEADER_LEN];
        write_header(&mut out, &f);
        assert_eq!(out, KERNEL_FRAME);
        let big = Frame { vni: 0x00ab_cdef, ..f };
        write_header(&mut out, &big);
        assert_eq!(parse(&out).unwrap().vni, 0x00ab_cdef, "24-bit VNI round-trips");
    }

    #[test]
    fn refuses_short_or_flagless_headers() {
        assert_eq!(parse(&KERNEL_FRAME[..21]), Err(VxlanError::Truncated));
        let mut no_vni = KERNEL_FRAME;
        no_vni[0] = 0;
        assert_eq!(parse(&no_vni), Err(VxlanError::BadFlags));
    }
}
