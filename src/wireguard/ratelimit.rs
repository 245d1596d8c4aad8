//! Per-source rate limiting of handshake messages under load, as
//! wireguard-go and the kernel do it: a token bucket per source address
//! (IPv4 address, or IPv6 /64), 20 messages a second with a burst of 5.
//! It only sees messages whose mac2 proved the sender receives at its
//! address, so one host cannot make a node do more than 20 handshakes'
//! worth of Diffie-Hellman a second, whatever it sends.
//!
//! Bounded: at most [`MAX_SOURCES`] buckets; entries idle for a second are
//! dropped (a bucket that old is full again anyway), and when the table is
//! full a new source is refused until that happens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Messages a second per source.
pub const PER_SECOND: u64 = 20;
/// Messages a source may send at once after being quiet.
pub const BURST: u64 = 5;
/// Sources tracked at once.
pub const MAX_SOURCES: usize = 1 << 16;

const COST: Duration = Duration::from_nanos(1_000_000_000 / PER_SECOND);
const IDLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct Bucket {
    /// Credit in time: one message costs [`COST`], at most `BURST` of them.
    credit: Duration,
    last: Instant,
}

/// The buckets; see the module documentation.
#[derive(Default)]
pub struct RateLimiter {
    buckets: HashMap<[u8; 16], Bucket>,
    last_sweep: Option<Instant>,
}

/// The bucket key: an IPv4 address, or the /64 of an IPv6 one (a host
/// usually holds a whole /64).
fn key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => {
            let mut k = a.octets();
            k[8..].fill(0);
            k
        }
    }
}

impl RateLimiter {
    /// True when a message from `ip` at `now` is within its rate.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.sweep(now);
        let max = COST * BURST as u32;
        let k = key(ip);
        if let Some(b) = self.buckets.get_mut(&k) {
            b.credit = (b.credit + now.saturating_duration_since(b.last)).min(max);
            b.last = now;
            if b.credit >= COST {
                b.credit -= COST;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_SOURCES {
            return false;
        }
        self.buckets.insert(k, Bucket { credit: max - COST, last: now });
        true
    }

    /// Drops buckets idle for a second, at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < IDLE) {
            return;
        }
        self.last_sweep = Some(now);
        self.buckets.retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let mut r = RateLimiter::default();
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        let t0 = Instant::now();
        let burst = (0..10).filter(|_| r.allow(ip, t0)).count();
        assert_eq!(burst, BURST as usize);
        // Over the next two seconds, at most 20 a second more.
        let mut allowed = 0;
        for ms in 1..=2000u64 {
            if r.allow(ip, t0 + Duration::from_millis(ms)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 40);
        // Another source has its own bucket.
        assert!(r.allow("198.18.0.10".parse().unwrap(), t0));
    }

    #[test]
    fn ipv6_sources_share_a_slash_64() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let mut n = 0;
        for i in 0..10u16 {
            if r.allow(IpAddr::V6(format!("fd00:1:2:3::{i:x}").parse().unwrap()), t0) {
                n += 1;
            }
        }
        assert_eq!(n, BURST);
        assert!(r.allow("fd00:1:2:4::1".parse().unwrap(), t0));
    }

    #[test]
    fn the_table_is_bounded_and_swept() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            assert!(r.allow(IpAddr::V4(i.into()), t0));
        }
        assert_eq!(r.len(), MAX_SOURCES);
        assert!(!r.allow("203.0.113.1".parse().unwrap(), t0), "full: a new source waits");
        assert!(r.allow("203.0.113.1".parse().unwrap(), t0 + IDLE), "idle buckets were swept");
        assert_eq!(r.len(), 1);
    }
}
