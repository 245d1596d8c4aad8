//! Signals: caught from the first moment of `run`, so that a SIGHUP,
//! SIGUSR1 or SIGUSR2 sent while start-up still waits (for etcd, up to 30 s) is kept
//! for later instead of killing the process with the default action.
//! SIGINT and SIGTERM keep their default action until the gateway is
//! ready (a stop during start-up simply ends the process: nothing is
//! forwarding yet, and the TUN disappears with it); from then on they stop
//! the gateway cleanly.

use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use super::DaemonError;

/// What the main loop is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Stop(i32),
    Reload,
    PrintCounters,
    /// Start a successor from the binary on disk and hand over to it.
    Upgrade,
}

/// The daemon's signal handlers.
pub struct SignalRequests {
    signals: Signals,
}

/// How often the main loop looks at pending signals and at the workers.
pub const POLL: Duration = Duration::from_millis(50);

impl SignalRequests {
    /// Catches SIGHUP, SIGUSR1 and SIGUSR2 from now on.
    pub fn install() -> Result<SignalRequests, DaemonError> {
        let signals = Signals::new([SIGHUP, SIGUSR1, SIGUSR2])
            .map_err(|source| DaemonError::Io { what: "installing signal handlers".into(), source })?;
        Ok(SignalRequests { signals })
    }

    /// Catches SIGINT and SIGTERM too: from now on they stop cleanly.
    pub fn catch_stop(&self) -> Result<(), DaemonError> {
        for sig in [SIGINT, SIGTERM] {
            self.signals
                .handle()
                .add_signal(sig)
                .map_err(|source| DaemonError::Io { what: "installing signal handlers".into(), source })?;
        }
        Ok(())
    }

    /// The requests pending now, in order of arrival (a stop ends the list).
    pub fn pending(&mut self) -> impl Iterator<Item = Request> + '_ {
        self.signals.pending().filter_map(|sig| match sig {
            SIGINT | SIGTERM => Some(Request::Stop(sig)),
            SIGHUP => Some(Request::Reload),
            SIGUSR1 => Some(Request::PrintCounters),
            SIGUSR2 => Some(Request::Upgrade),
            _ => None,
        })
    }
}
