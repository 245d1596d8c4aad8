//! Packet views and builders: IPv4/IPv6 headers, ICMP errors, the internet
//! checksum. Pure byte manipulation: no I/O, no clock, no allocation, no
//! `unsafe`. Every function here takes untrusted bytes and either returns a
//! typed error or a value whose accessors cannot panic.

pub mod checksum;
pub mod icmp;
pub mod ip;
pub mod virtio;
