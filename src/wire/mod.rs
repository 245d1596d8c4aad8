//! Packet views and builders: IPv4/IPv6, UDP, TCP, ICMP, VXLAN, Ethernet
//! and ARP, the internet checksum, the virtio-net header, the flow hash.
//! Pure byte manipulation: no I/O, no clock, no `unsafe`, no allocation on
//! the data path. [`build`] makes test packets.
//!
//! # Views (smoltcp style)
//!
//! Each header has a view over a buffer `T: AsRef<[u8]>`
//! ([`Ipv4Packet`], [`Ipv6Packet`], [`IpPacket`] for either, [`UdpPacket`],
//! [`TcpPacket`], [`IcmpPacket`], [`VxlanPacket`], [`EthernetFrame`],
//! [`ArpPacket`]): named getters, setters when `T: AsMut<[u8]>` as well,
//! `payload()` / `payload_mut()`, and checksum helpers where the header has
//! a checksum. A view is the buffer and nothing else: construction and
//! every accessor are `#[inline]` reads and writes at fixed offsets, as
//! cheap as indexing the slice by hand.
//!
//! - `new_unchecked(buffer)` wraps without looking: for bytes this crate
//!   wrote itself or already checked.
//! - `new_checked(buffer)` is `new_unchecked` followed by `check_len()`:
//!   untrusted bytes that are too short, or whose length fields (IPv4
//!   header and total length, IPv6 payload length, UDP length, TCP data
//!   offset) point outside the buffer or below the fixed header, give a
//!   typed error naming what is wrong.
//!
//! **The promise:** once `check_len()` has returned `Ok` for a buffer, no
//! getter, no setter and neither `payload()` nor `payload_mut()` of that
//! view panics, whatever the bytes hold. The one way to break it is to
//! change a length field with a setter (`set_header_len`, `set_total_len`,
//! `set_payload_len`, `set_len`) to a value the buffer does not back; until
//! `check_len()` passes again, only the fixed-offset fields are safe to
//! touch. The builders set lengths to what they wrote.
//!
//! What `new_checked` accepts, and what every getter reads, is
//! property-tested against etherparse, an independent implementation
//! (`oracle_tests.rs`, test builds only), with every intended difference
//! written down there. Each view's own file ends with byte-array tests.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod ip;
pub mod ip_error;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod virtio;
pub mod vxlan;
pub mod wireguard;

#[cfg(test)]
pub(crate) mod oracle_tests;

pub use arp::ArpPacket;
pub use ethernet::EthernetFrame;
pub use icmp::IcmpPacket;
pub use ip::IpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vxlan::VxlanPacket;

/// Bytes shorter than the fixed-size header of the view asked for (ICMP,
/// VXLAN, Ethernet, ARP: headers without length fields of their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{header} header truncated: {len} bytes, {need} needed")]
pub struct Truncated {
    pub header: &'static str,
    pub len: usize,
    pub need: usize,
}

impl Truncated {
    /// `Ok` when `len` bytes hold a `need`-byte `header`.
    #[inline]
    pub(crate) fn check(header: &'static str, len: usize, need: usize) -> Result<(), Truncated> {
        if len < need { Err(Truncated { header, len, need }) } else { Ok(()) }
    }
}

/// A big-endian u16 at `at` (the views' one read primitive for 16 bits).
#[inline]
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// A big-endian u32 at `at`.
#[inline]
pub(crate) fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}
