//! TAI64N timestamps (djb's libtai format, whitepaper §5.1): 8 bytes of
//! seconds since 1970 plus 2^62 + 10, then 4 bytes of nanoseconds, both
//! big-endian, so that byte order is time order. A handshake initiation
//! carries one; a responder accepts an initiation from a peer only when its
//! timestamp is later than every one it accepted from that peer before,
//! which makes a replayed initiation useless.

use std::time::Duration;

/// The label of 1970-01-01 00:00:10 TAI (libtai): the second count's offset.
const TAI64_EPOCH: u64 = (1 << 62) + 10;
/// Nanoseconds are rounded down to a multiple of 2^24 (about 16.8 ms), as
/// wireguard-go and the kernel do, so a timestamp does not reveal the
/// sender's clock more precisely than the 50 initiations per second a
/// responder accepts (`Limits::initiation_min_interval`).
const WHITENER_MASK: u32 = (1 << 24) - 1;

/// A TAI64N timestamp; `Ord` is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tai64N([u8; 12]);

impl Tai64N {
    /// The timestamp `since_unix_epoch` after 1970 (UTC, leap seconds
    /// ignored as every implementation ignores them), whitened.
    pub fn from_unix(since_unix_epoch: Duration) -> Tai64N {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&(TAI64_EPOCH + since_unix_epoch.as_secs()).to_be_bytes());
        b[8..].copy_from_slice(&(since_unix_epoch.subsec_nanos() & !WHITENER_MASK).to_be_bytes());
        Tai64N(b)
    }

    pub const fn from_bytes(bytes: [u8; 12]) -> Tai64N {
        Tai64N(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_libtai() {
        let t = Tai64N::from_unix(Duration::new(1, 0x0300_0000));
        assert_eq!(t.as_bytes(), &[0x40, 0, 0, 0, 0, 0, 0, 11, 0x03, 0, 0, 0]);
    }

    #[test]
    fn order_is_time_order_at_whitened_granularity() {
        let a = Tai64N::from_unix(Duration::new(100, 999_999_999));
        let b = Tai64N::from_unix(Duration::new(101, 0));
        assert!(a < b);
        // Within one 2^24 ns step the timestamps are equal: a second
        // initiation in the same ~16.8 ms counts as a replay.
        assert_eq!(Tai64N::from_unix(Duration::new(5, 1 << 24)), Tai64N::from_unix(Duration::new(5, (1 << 25) - 1)));
        assert!(Tai64N::from_unix(Duration::new(5, 1 << 24)) < Tai64N::from_unix(Duration::new(5, 1 << 25)));
        assert!(Tai64N::default() < Tai64N::from_unix(Duration::ZERO));
    }
}
