//! Batch timestamps for the in-gateway latency histograms, taken once per
//! batch and carried through asynchronous operations as a 16-bit tag.
//!
//! An engine starts a batch with the time its completions were reaped
//! ([`BatchClock::start`] returns the batch's tag); an operation submitted
//! in that batch carries the tag, and when it completes, the time since the
//! batch started is one latency sample. The last 256 batches' start times
//! are kept, so an operation that completes more than 255 batches later
//! records nothing rather than a wrong value.

use std::time::{Duration, Instant};

/// Identifies the batch an operation was submitted in.
pub type BatchTag = u16;

/// Start times of the most recent batches.
#[derive(Debug)]
pub struct BatchClock {
    current: BatchTag,
    starts: [Instant; 256],
}

impl BatchClock {
    pub fn new(now: Instant) -> BatchClock {
        BatchClock { current: 0, starts: [now; 256] }
    }

    /// Starts the next batch at `now` and returns its tag.
    #[inline]
    pub fn start(&mut self, now: Instant) -> BatchTag {
        self.current = self.current.wrapping_add(1);
        self.starts[usize::from(self.current as u8)] = now;
        self.current
    }

    /// The tag of the batch in progress.
    #[inline]
    pub fn current(&self) -> BatchTag {
        self.current
    }

    /// Time from the start of batch `tag` to `now`, if that batch is recent
    /// enough to be remembered.
    #[inline]
    pub fn since(&self, tag: BatchTag, now: Instant) -> Option<Duration> {
        (self.current.wrapping_sub(tag) < 255).then(|| now.saturating_duration_since(self.starts[usize::from(tag as u8)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_255_batches() {
        let t0 = Instant::now();
        let mut clock = BatchClock::new(t0);
        let first = clock.start(t0);
        let later = t0 + Duration::from_millis(5);
        assert_eq!(clock.since(first, later), Some(Duration::from_millis(5)));
        for _ in 0..254 {
            clock.start(t0);
        }
        assert!(clock.since(first, later).is_some(), "254 batches later the start is still known");
        clock.start(t0);
        assert_eq!(clock.since(first, later), None, "255 batches later its slot may be reused: no sample");
    }
}
