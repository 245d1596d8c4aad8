//! Test hooks of the handover, read from the environment. They exist so
//! that the end-to-end tests can put a process into a known state before
//! killing it, and can speak another protocol version; nothing sets them in
//! normal operation.
//!
//! - `ENCAPD_TEST_PAUSE_HANDOVER=<step>`: the process sleeps (30 s, logging
//!   `test hook: pausing the handover at <step>` first) when it reaches the
//!   named step. Steps of the successor: `after-fds` (it holds every fd,
//!   nothing started), `before-ready` (its workers forward, the running
//!   daemon's too), `before-done` (the running daemon is paused and has sent
//!   its counters). Steps of the running daemon: `before-fds` (it has
//!   accepted the successor, no fd sent yet), `before-pause` (the successor
//!   said it is ready), `before-released` (its workers are parked).
//! - `ENCAPD_TEST_HANDOVER_VERSION=<n>`: a successor (or `encapd upgrade`)
//!   claims to speak protocol version `n` only.

use std::time::Duration;

use super::protocol::{SUPPORTED, VersionRange};

const PAUSE_VAR: &str = "ENCAPD_TEST_PAUSE_HANDOVER";
const VERSION_VAR: &str = "ENCAPD_TEST_HANDOVER_VERSION";
const PAUSE_FOR: Duration = Duration::from_secs(30);

/// The named handover steps a test can pause at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    AfterFds,
    BeforeReady,
    BeforeDone,
    BeforeFds,
    BeforePause,
    BeforeReleased,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::AfterFds => "after-fds",
            Step::BeforeReady => "before-ready",
            Step::BeforeDone => "before-done",
            Step::BeforeFds => "before-fds",
            Step::BeforePause => "before-pause",
            Step::BeforeReleased => "before-released",
        }
    }
}

/// Sleeps at `step` if the test hook names it.
pub fn pause_at(step: Step) {
    if std::env::var(PAUSE_VAR).is_ok_and(|v| v == step.name()) {
        log::warn!("test hook: pausing the handover at {} for {} s", step.name(), PAUSE_FOR.as_secs());
        std::thread::sleep(PAUSE_FOR);
    }
}

/// The protocol versions to offer: this build's, unless the test hook says otherwise.
pub fn offered_versions() -> VersionRange {
    match std::env::var(VERSION_VAR).ok().and_then(|v| v.parse::<u32>().ok()) {
        Some(v) => VersionRange { min: v, max: v },
        None => SUPPORTED,
    }
}
