//! One `encapd run` process inside a namespace, as the tests drive it:
//! started by pid (`ip netns exec` execs the binary, so the child's pid is
//! encapd's), its output appended to a log file, "ready" read from that
//! log, counters asked for with SIGUSR1, stopped with SIGTERM (SIGKILL
//! after 5 s) by [`Encapd::stop`] or on drop, on every exit path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::wait_for;
use crate::counters::{Counters, SUMMARY_HEADER, parse_counters};
use crate::env::encapd_bin;
use crate::process::{running, signal, stop_child};

/// What encapd logs once it forwards.
pub const READY_LINE: &str = "ready: forwarding";

/// How long a stop may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running encapd.
pub struct Encapd {
    ns: String,
    child: Child,
    pid: i32,
    log: PathBuf,
    /// Ready lines already in the log when this process was started (the
    /// log is shared with earlier runs of the same node).
    ready_before: usize,
}

impl Encapd {
    /// Starts `encapd run --config <config>` in namespace `ns` with
    /// `RUST_LOG=info` and `env`, stdout and stderr appended to `log`.
    pub fn spawn(ns: &str, config: &Path, log: &Path, env: &[(&str, &str)]) -> Encapd {
        Encapd::spawn_with(ns, &encapd_bin(), &[], config, log, env)
    }

    /// Like [`spawn`](Self::spawn), with binary `bin` and `args` after
    /// `run --config <config>` (say, `--takeover`).
    pub fn spawn_with(ns: &str, bin: &Path, args: &[&str], config: &Path, log: &Path, env: &[(&str, &str)]) -> Encapd {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let ready_before = std::fs::read_to_string(log).unwrap_or_default().matches(READY_LINE).count();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("cloning a file handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning encapd in {ns}: {e}"));
        let pid = child.id() as i32;
        Encapd { ns: ns.to_owned(), child, pid, log: log.to_owned(), ready_before }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Everything logged to this process's log file so far (earlier runs
    /// of the same node included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        running(&mut self.child)
    }

    /// The exit status, once it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        signal(self.pid, sig);
    }

    /// Waits until `ip netns exec` has exec'd encapd (the pid runs the
    /// binary under test), so that a signal reaches encapd itself.
    pub fn wait_exec(&mut self, timeout: Duration) {
        let want = std::fs::canonicalize(encapd_bin()).unwrap_or_else(|_| encapd_bin());
        let exe = format!("/proc/{}/exe", self.pid);
        let ok = wait_for(timeout, || (std::fs::read_link(&exe).ok()? == want).then_some(()));
        assert!(ok.is_some(), "pid {} in {} did not become {} within {timeout:?}:\n{}", self.pid, self.ns, want.display(), self.log());
    }

    /// True once this process has logged that it forwards.
    pub fn is_ready(&self) -> bool {
        self.log().matches(READY_LINE).count() > self.ready_before
    }

    /// Waits (at most `timeout`) until this process forwards; panics if it
    /// exits or times out first. Returns the log.
    pub fn wait_ready(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                panic!("encapd in {} exited during start-up ({st}):\n{}", self.ns, self.log());
            }
            let log = self.log();
            if log.matches(READY_LINE).count() > self.ready_before {
                return log;
            }
            assert!(Instant::now() < deadline, "encapd in {} not ready within {timeout:?}:\n{log}", self.ns);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks for the counters (SIGUSR1) and parses the summary printed;
    /// waits at most 5 s for it.
    pub fn counters(&mut self) -> Counters {
        if let Some(st) = self.exited() {
            panic!("encapd in {} has exited ({st}):\n{}", self.ns, self.log());
        }
        let before = self.log().matches(SUMMARY_HEADER).count();
        self.signal(libc::SIGUSR1);
        wait_for(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&self.log).ok()?;
            if text.matches(SUMMARY_HEADER).count() <= before {
                return None;
            }
            parse_counters(&text)
        })
        .unwrap_or_else(|| panic!("no counter summary from encapd in {} within 5 s:\n{}", self.ns, self.log()))
    }

    /// SIGTERM; returns the exit status. Panics if it does not exit within
    /// 5 s (after killing it).
    pub fn stop(mut self) -> ExitStatus {
        match stop_child(&mut self.child, STOP_GRACE) {
            Ok(st) => st,
            Err(_) => panic!("encapd in {} did not exit within {STOP_GRACE:?} of SIGTERM:\n{}", self.ns, self.log()),
        }
    }

    /// SIGTERM, SIGKILL after 5 s; `Ok` with the exit status when SIGTERM
    /// was enough, `Err` with it after SIGKILL (for callers that report a
    /// stuck daemon instead of panicking).
    pub fn try_stop(mut self) -> Result<ExitStatus, ExitStatus> {
        stop_child(&mut self.child, STOP_GRACE)
    }

    /// SIGKILL (no clean-up of its own); returns once it is reaped.
    pub fn kill(mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("reaping encapd")
    }
}

impl Drop for Encapd {
    fn drop(&mut self) {
        // Killed after the grace period, if need be; nothing to report here.
        let _ = stop_child(&mut self.child, STOP_GRACE);
    }
}

/// Prints a log file to stderr under a heading, when the test is failing
/// (called from the Drop of whatever owns the process).
pub fn print_log_if_panicking(label: &str, log: &Path) {
    if std::thread::panicking() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        eprintln!("---- {label} ----\n{text}----");
    }
}
