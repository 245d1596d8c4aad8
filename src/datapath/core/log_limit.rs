//! Rate-limited warnings for the hot path: a worker that hits the same
//! failure for every packet must not flood the log (nor pay for formatting
//! a message per packet).

use std::time::{Duration, Instant};

/// At most one warning per second per limiter; the rest are counted and
/// the count is reported with the next warning that gets through.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Logs `message()` unless a warning went out less than a second ago.
    /// The message is only formatted when it is logged.
    #[cold]
    pub fn warn(&mut self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!("{} (and {} similar messages suppressed)", message(), self.suppressed);
        } else {
            log::warn!("{}", message());
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}
