//! Processes the tests started: signals by pid, waiting with a deadline,
//! stopping (SIGTERM, then SIGKILL). Only children of the test process, not yet reaped, are ever
//! signalled, so a pid can never name someone else's process.

use std::process::{Child, ExitStatus};
use std::time::Duration;

use super::cmd::wait_for;

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
