//! [`IpError`]: why bytes are not a well-formed IP packet, the one error
//! of the IPv4 and IPv6 views and of [`super::ip::parse`]. A module of its
//! own so that the views and the version-dispatching `ip` module can both
//! use it without importing each other.

/// Why bytes are not a well-formed IP packet. Each maps to one drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// zero-length packet
    #[error("empty packet")]
    Empty,
    /// first nibble is neither 4 nor 6 (or not the version asked for)
    #[error("IP version {0} is neither 4 nor 6")]
    BadVersion(u8),
    /// shorter than the fixed header
    #[error("truncated IP header")]
    Truncated,
    /// IPv4 IHL below 5 or beyond the packet, or a total length below it
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// the length field disagrees with the bytes present
    #[error("IP length field disagrees with the packet size")]
    LengthMismatch,
}
