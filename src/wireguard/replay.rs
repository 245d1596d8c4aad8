//! The transport replay window (whitepaper §5.4.6, RFC 6479's bitmap): a
//! receiver accepts a counter once, and only while it is no more than
//! [`WINDOW`] behind the highest counter accepted so far; it never accepts
//! a counter at or beyond the session's message limit.
//!
//! The bitmap is a ring of 128 64-bit blocks (8,192 bits, 8,128 usable:
//! one block is the one being cleared as the window slides), the size
//! wireguard-go and the kernel use, so that reordering across the workers
//! of a batched receive path (up to thousands of packets) is not mistaken
//! for replay. Sliding forward clears at most the whole ring, so every
//! operation is O(1) in the counter's distance.
//!
//! One window belongs to one session and is not synchronised: the session
//! keeps it behind a mutex that a worker takes once per batch
//! (`Session::lock_replay`). Why a lock per batch beats a lock-free
//! bitmap with an atomic per packet is measured in bench/wireguard.rs and
//! written down in docs/wireguard.md.

const BLOCK_BITS: u64 = 64;
const BLOCKS: usize = 128;
const BLOCK_MASK: u64 = BLOCKS as u64 - 1;

/// How far behind the highest accepted counter a counter may be and still
/// be accepted (when not seen before).
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// The counters seen in a sliding window; see the module documentation.
#[derive(Clone)]
pub struct ReplayWindow {
    /// The highest counter accepted (0 before any: counter 0 is still
    /// accepted once, its bit being clear).
    last: u64,
    ring: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { last: 0, ring: [0; BLOCKS] }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow").field("last", &self.last).finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Accepts `counter` (returns true) if it is below `limit`, not too
    /// old and not seen before, and marks it seen. Call only for counters
    /// of packets that authenticated: a forged counter must not move the
    /// window.
    #[inline]
    pub fn accept(&mut self, counter: u64, limit: u64) -> bool {
        if counter >= limit {
            return false;
        }
        let block = counter / BLOCK_BITS;
        if counter > self.last {
            // Slide forward: clear the blocks between the old top block and
            // the new one (all of them when the jump is a whole ring).
            let current = self.last / BLOCK_BITS;
            let diff = (block - current).min(BLOCKS as u64);
            for i in current + 1..=current + diff {
                self.ring[(i & BLOCK_MASK) as usize] = 0;
            }
            self.last = counter;
        } else if self.last - counter > WINDOW {
            return false;
        }
        let slot = &mut self.ring[(block & BLOCK_MASK) as usize];
        let bit = 1u64 << (counter % BLOCK_BITS);
        let fresh = *slot & bit == 0;
        *slot |= bit;
        fresh
    }

    /// The highest counter accepted so far.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The rule written out naively: every counter ever accepted, and the
    /// highest.
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
        last: Option<u64>,
    }

    impl Model {
        fn accept(&mut self, c: u64, limit: u64) -> bool {
            if c >= limit || self.seen.contains(&c) {
                return false;
            }
            if let Some(last) = self.last
                && c < last
                && last - c > WINDOW
            {
                return false;
            }
            self.seen.insert(c);
            self.last = Some(self.last.map_or(c, |l| l.max(c)));
            true
        }
    }

    #[test]
    fn rfc6479_basics() {
        let mut w = ReplayWindow::default();
        let limit = u64::MAX;
        assert!(w.accept(0, limit));
        assert!(!w.accept(0, limit));
        assert!(w.accept(2, limit));
        assert!(w.accept(1, limit));
        assert!(!w.accept(1, limit));
        assert!(w.accept(WINDOW + 2, limit));
        // 2 is exactly WINDOW behind: still in; 1 is one further: out.
        assert!(!w.accept(2, limit));
        assert!(!w.accept(1, limit));
        assert!(w.accept(3, limit));
        // A jump of more than the ring clears everything behind it.
        assert!(w.accept(1_000_000, limit));
        assert!(!w.accept(1_000_000 - WINDOW - 1, limit));
        assert!(w.accept(1_000_000 - WINDOW, limit));
        assert!(w.accept(999_999, limit));
        assert!(!w.accept(999_999, limit));
    }

    #[test]
    fn window_edges_are_exact() {
        let mut w = ReplayWindow::default();
        let mut m = Model::default();
        for c in [10_000u64, 10_000 - WINDOW, 10_000 - WINDOW - 1, 10_000 - WINDOW + 1, 9_999] {
            assert_eq!(w.accept(c, u64::MAX), m.accept(c, u64::MAX), "counter {c}");
        }
    }

    #[test]
    fn the_limit_is_never_accepted() {
        let limit = u64::MAX - (1 << 13);
        let mut w = ReplayWindow::default();
        assert!(w.accept(limit - 1, limit));
        assert!(!w.accept(limit, limit));
        assert!(!w.accept(u64::MAX, limit));
        assert!(!w.accept(limit - 1, limit));
        assert!(w.accept(limit - 2, limit));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Any sequence of counters (mostly near each other, with jumps)
        /// gets the same verdicts as the naive model.
        #[test]
        fn matches_the_naive_model(
            start in 0u64..u64::MAX / 2,
            steps in proptest::collection::vec((-9000i64..9000, 0u8..16), 1..400),
        ) {
            let limit = start + 200_000;
            let mut w = ReplayWindow::default();
            let mut m = Model::default();
            let mut c = start;
            for (delta, kind) in steps {
                c = match kind {
                    0 => c + 70_000,             // a jump past the whole ring
                    1 => limit - 1,              // the last valid counter
                    2 => limit,                  // the limit itself
                    _ => c.saturating_add_signed(delta).max(start),
                };
                prop_assert_eq!(w.accept(c, limit), m.accept(c, limit), "counter {}", c);
            }
        }
    }
}
