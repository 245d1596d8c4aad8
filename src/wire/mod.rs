//! Packet views and builders: IPv4/IPv6 headers, ICMP errors, the internet
//! checksum, the virtio-net header, the flow hash. Pure byte manipulation:
//! no I/O, no clock, no `unsafe`, no allocation on the data path. Every
//! function here takes untrusted bytes and either returns a typed error or
//! a value whose accessors cannot panic. [`build`] makes test packets.

pub mod build;
pub mod checksum;
pub mod flow;
pub mod icmp;
pub mod ip;
pub mod virtio;
pub mod vxlan;
pub mod wireguard;
