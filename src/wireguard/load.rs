//! When a node is under load, decided per worker, and how many handshake
//! messages a worker works on per interval. wireguard-go calls a device
//! under load while its handshake queue is more than 1/8 full and for a
//! second after (device/receive.go); the kernel likewise, at 1/8 of its
//! 4,096 queued handshakes (`wg_packet_handshake_receive_worker` →
//! `under_load`, held for a second). encapd has no handshake queue: the
//! worker that receives a handshake message handles it inline. So the
//! measure here is the rate a worker sees, in fixed windows:
//!
//! - more than [`UNDER_LOAD_AFTER`] handshake messages in one
//!   [`WINDOW`] on one worker puts the whole node under load
//!   ([`super::Node::hold_under_load`]) until [`HOLD`] after the last such
//!   window — the same one-second hysteresis as wireguard-go and the
//!   kernel. Under load, a message without a valid mac2 gets a cookie
//!   reply (no Diffie-Hellman) and mac2-valid ones are rate-limited per
//!   source (`ratelimit.rs`);
//! - past [`BUDGET`] handshake messages in one window, a worker drops the
//!   rest of that window's unread (the caller counts them): this bounds
//!   the CPU a flood can take from transport data, whatever its sources.
//!
//! One [`HandshakeGate`] per worker, owned by it: no lock, no atomic per
//! message; one relaxed `fetch_max` on the node per window that crosses
//! the threshold.

use std::time::{Duration, Instant};

use super::Node;

/// The window handshake messages are counted in, per worker.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Handshake messages one worker may see in one window before the node
/// goes under load (160 a second): a healthy node sees one handshake per
/// peer every two minutes, so a thousand peers come to about 8 a second;
/// a mass restart of peers may cross it, which costs them one cookie
/// round trip.
pub const UNDER_LOAD_AFTER: u32 = 16;
/// How long the node stays under load after the last window that crossed
/// [`UNDER_LOAD_AFTER`] (wireguard-go's and the kernel's one second).
pub const HOLD: Duration = Duration::from_secs(1);
/// Handshake messages one worker works on in one window (640 a second);
/// the rest of the window's are dropped unread. An initiation that
/// passes mac2 and the rate limit costs five X25519 operations (about
/// 0.2 ms in a release build), so this bounds a worker's handshake work
/// at about 13 ms in every 100 ms even when a flood comes from many
/// sources that each answer their cookie; a cookie reply costs a few µs.
pub const BUDGET: u32 = 64;

/// Whether a worker works on a handshake message or drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Handle,
    /// Past this window's [`BUDGET`]: drop it unread.
    OverBudget,
}

/// One worker's count of handshake messages in its current window.
#[derive(Debug)]
pub struct HandshakeGate {
    window_start: Instant,
    seen: u32,
}

impl HandshakeGate {
    pub fn new(now: Instant) -> HandshakeGate {
        HandshakeGate { window_start: now, seen: 0 }
    }

    /// A handshake message arrived at `now` (before any cryptography):
    /// counts it, puts `node` under load when this window crosses
    /// [`UNDER_LOAD_AFTER`], and says whether to work on it.
    #[inline]
    pub fn admit(&mut self, node: &Node, now: Instant) -> Admission {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(1);
        if self.seen == UNDER_LOAD_AFTER + 1 {
            node.hold_under_load(now + HOLD);
        }
        if self.seen > BUDGET { Admission::OverBudget } else { Admission::Handle }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::wireguard::{Limits, NodeConfig, PrivateKey};

    fn node(now: Instant) -> Node {
        let config = NodeConfig { private_key: PrivateKey::from_bytes([7; 32]), limits: Limits::default(), padding_mtu: 0 };
        Node::new(config, now, SystemTime::now())
    }

    #[test]
    fn a_trickle_never_puts_the_node_under_load() {
        let t0 = Instant::now();
        let n = node(t0);
        let mut gate = HandshakeGate::new(t0);
        // UNDER_LOAD_AFTER in every window, for ten seconds.
        for w in 0..100u32 {
            for _ in 0..UNDER_LOAD_AFTER {
                assert_eq!(gate.admit(&n, t0 + WINDOW * w), Admission::Handle);
            }
        }
        assert!(!n.is_under_load_at(t0 + WINDOW * 100));
    }

    #[test]
    fn a_burst_holds_the_node_under_load_for_a_second_after() {
        let t0 = Instant::now();
        let n = node(t0);
        let mut gate = HandshakeGate::new(t0);
        let admitted = (0..1000).filter(|_| gate.admit(&n, t0) == Admission::Handle).count();
        assert_eq!(admitted, BUDGET as usize, "one window works on BUDGET messages, drops the rest");
        assert!(n.is_under_load_at(t0));
        assert!(n.is_under_load_at(t0 + HOLD - Duration::from_millis(1)));
        assert!(!n.is_under_load_at(t0 + HOLD));
        // A new window has a new budget; a busy window extends the hold.
        let t1 = t0 + WINDOW * 5;
        let admitted = (0..100).filter(|_| gate.admit(&n, t1) == Admission::Handle).count();
        assert_eq!(admitted, BUDGET as usize);
        assert!(n.is_under_load_at(t1 + HOLD - Duration::from_millis(1)));
        assert!(!n.is_under_load_at(t1 + HOLD));
    }

    #[test]
    fn the_switch_still_forces_it() {
        let t0 = Instant::now();
        let n = node(t0);
        n.set_under_load(true);
        assert!(n.is_under_load_at(t0 + HOLD * 10));
        n.set_under_load(false);
        assert!(!n.is_under_load_at(t0));
    }
}
