//! Processes the tests started: signals by pid, waiting with a deadline,
//! stopping (SIGTERM, then SIGKILL), and what `/proc` says about their
//! threads. Only children of the test process, not yet reaped, are ever
//! signalled, so a pid can never name someone else's process.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use crate::cmd::wait_for;

/// Sends `sig` to `pid`, a child this test started and has not reaped.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; callers pass the pid
    // of a child they spawned and have not yet reaped, so it cannot name
    // another process.
    unsafe { libc::kill(pid, sig) };
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// True while `child` has not exited.
pub fn running(child: &mut Child) -> bool {
    child.try_wait().ok().flatten().is_none()
}

/// SIGTERM, then SIGKILL if it has not exited after `grace`; always reaped.
/// `Ok` with its status when SIGTERM was enough (or it had already
/// exited), `Err` with the status after SIGKILL otherwise.
pub fn stop_child(child: &mut Child, grace: Duration) -> Result<ExitStatus, ExitStatus> {
    if let Some(st) = child.try_wait().ok().flatten() {
        return Ok(st);
    }
    signal(child.id() as i32, libc::SIGTERM);
    if let Some(st) = wait_child(child, grace) {
        return Ok(st);
    }
    signal(child.id() as i32, libc::SIGKILL);
    Err(child.wait().expect("reaping a killed child"))
}

/// The capability sets of one thread, from `/proc/PID/task/TID/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCaps {
    pub tid: u32,
    /// The thread's name (`comm`), e.g. "encapd-w0".
    pub name: String,
    pub effective: u64,
    pub permitted: u64,
}

impl std::fmt::Display for ThreadCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} CapEff {:#x} CapPrm {:#x}", self.tid, self.name, self.effective, self.permitted)
    }
}

/// Every thread of `pid` with its effective and permitted capabilities.
/// A thread that exits while being read is left out.
pub fn thread_caps(pid: i32) -> Vec<ThreadCaps> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {dir}: {e}"));
    let mut out: Vec<ThreadCaps> = tasks
        .filter_map(|entry| {
            let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(format!("{dir}/{tid}/status")).ok()?;
            let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
            let hex = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
            Some(ThreadCaps {
                tid,
                name: field("Name:").unwrap_or_default().to_owned(),
                effective: hex("CapEff:")?,
                permitted: hex("CapPrm:")?,
            })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}
