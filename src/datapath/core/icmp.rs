//! The ICMP errors a router owes the sender of a packet it cannot forward
//! (no route, TTL expired, too big), built into a buffer of the core's own
//! and rate-limited per worker as routers do (RFC 1812 §4.3.2.8): a token
//! bucket of [`ICMP_BURST`] errors refilled at [`ICMP_PER_SECOND`].
//!
//! The engine writes the error back into the TUN, so the kernel delivers it
//! to the sending container (see `datapath::packet` for the choice of its
//! source address).

use std::time::Instant;

use crate::datapath::packet;
use crate::wire::icmp::{self, IcmpError};
use crate::wire::virtio::VNET_HDR_LEN;

/// ICMP errors per second per worker, and the burst allowed above that.
pub const ICMP_PER_SECOND: u32 = 1000;
pub const ICMP_BURST: u32 = 100;

/// What became of an ICMP error a packet earned.
#[derive(Debug, PartialEq, Eq)]
pub enum IcmpVerdict<'a> {
    /// Write these bytes into the TUN (with a zeroed virtio-net header in
    /// front when the TUN expects one).
    Send(&'a [u8]),
    /// Over the rate limit: not sent (counted by the caller).
    RateLimited,
    /// No error may be sent about this packet (an ICMP error, a non-first
    /// fragment, unparseable).
    NotAllowed,
}

/// One worker's ICMP error builder and rate limiter.
#[derive(Debug)]
pub struct IcmpResponder {
    /// A zeroed virtio-net header followed by room for one ICMP error.
    buf: Box<[u8; VNET_HDR_LEN + icmp::MAX_ERROR_LEN]>,
    vnet_hdr: bool,
    tokens: u32,
    refilled: Instant,
}

impl IcmpResponder {
    pub fn new(vnet_hdr: bool, now: Instant) -> IcmpResponder {
        IcmpResponder { buf: Box::new([0; VNET_HDR_LEN + icmp::MAX_ERROR_LEN]), vnet_hdr, tokens: ICMP_BURST, refilled: now }
    }

    /// The `kind` error about `offending`, if the rate limit allows one at `now`.
    pub fn reply(&mut self, kind: IcmpError, offending: &[u8], now: Instant) -> IcmpVerdict<'_> {
        self.refill(now);
        if self.tokens == 0 {
            return IcmpVerdict::RateLimited;
        }
        match packet::icmp_reply(kind, offending, &mut self.buf[VNET_HDR_LEN..]) {
            Some(n) => {
                self.tokens -= 1;
                let start = if self.vnet_hdr { 0 } else { VNET_HDR_LEN };
                IcmpVerdict::Send(&self.buf[start..VNET_HDR_LEN + n])
            }
            None => IcmpVerdict::NotAllowed,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed_ms = now.saturating_duration_since(self.refilled).as_millis() as u64;
        let add = elapsed_ms * u64::from(ICMP_PER_SECOND) / 1000;
        if add > 0 {
            self.tokens = (u64::from(self.tokens) + add).min(u64::from(ICMP_BURST)) as u32;
            self.refilled = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::ip::tests::ipv4_udp;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let t0 = Instant::now();
        let mut r = IcmpResponder::new(false, t0);
        let p = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 64, 10);
        let sent = (0..ICMP_BURST + 50).filter(|_| matches!(r.reply(IcmpError::Unreachable, &p, t0), IcmpVerdict::Send(_))).count();
        assert_eq!(sent, ICMP_BURST as usize, "the burst, then nothing within the same instant");
        assert_eq!(r.reply(IcmpError::Unreachable, &p, t0), IcmpVerdict::RateLimited);
        // 10 ms later, 10 more tokens at 1000/s.
        let t1 = t0 + Duration::from_millis(10);
        let later = (0..50).filter(|_| matches!(r.reply(IcmpError::Unreachable, &p, t1), IcmpVerdict::Send(_))).count();
        assert_eq!(later, 10);
    }

    #[test]
    fn the_virtio_header_is_there_only_when_the_tun_wants_it() {
        let t0 = Instant::now();
        let p = ipv4_udp([100, 96, 1, 2], [100, 96, 9, 9], 64, 10);
        let plain = match IcmpResponder::new(false, t0).reply(IcmpError::Unreachable, &p, t0) {
            IcmpVerdict::Send(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        let with_hdr = match IcmpResponder::new(true, t0).reply(IcmpError::Unreachable, &p, t0) {
            IcmpVerdict::Send(b) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(with_hdr.len(), plain.len() + VNET_HDR_LEN);
        assert!(with_hdr[..VNET_HDR_LEN].iter().all(|&b| b == 0));
        assert_eq!(&with_hdr[VNET_HDR_LEN..], &plain[..]);
        assert_eq!(plain[0] >> 4, 4);
    }

    #[test]
    fn no_error_about_an_error() {
        let t0 = Instant::now();
        let mut r = IcmpResponder::new(false, t0);
        assert_eq!(r.reply(IcmpError::Unreachable, &[0x45, 0], t0), IcmpVerdict::NotAllowed);
    }
}
