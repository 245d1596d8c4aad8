//! The programs a benchmark runs (iperf3, sockperf, the latency probe,
//! perf), inside a namespace or not: clients run to completion within a
//! deadline, servers run in the background until stopped. Every process
//! is ours and is stopped by its pid (SIGTERM, SIGKILL after a grace
//! period) on every exit path, including a panic; none outlives its
//! guard. `ip netns exec` execs the program, so the pid is the program's.
//!
//! [`install_interrupt_handler`] turns SIGINT, SIGTERM and SIGHUP into a
//! flag ([`interrupted`]) that long loops check, so that a run stopped
//! from outside unwinds and cleans up (the guards' `Drop`s run) instead
//! of dying with its namespaces and daemons left behind.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use encapd_testbed::process::stop_child;

static INTERRUPTED: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Sets the flag [`interrupted`] reads on SIGINT, SIGTERM and SIGHUP (a
/// second one of these ends the process at once).
pub fn install_interrupt_handler() -> std::io::Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// Whether a signal asked us to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The command line `args`, inside namespace `ns` when given.
pub fn command(ns: Option<&str>, args: &[String]) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(args);
            c
        }
        None => {
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            c
        }
    };
    c.stdin(Stdio::null());
    c
}

fn file(path: &Path) -> std::io::Result<File> {
    File::create(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// How a client run ended.
#[derive(Debug)]
pub enum Finished {
    Exited(ExitStatus),
    /// Killed at the deadline.
    TimedOut,
    /// Killed because a signal asked us to stop.
    Interrupted,
}

impl Finished {
    pub fn success(&self) -> bool {
        matches!(self, Finished::Exited(s) if s.success())
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finished::Exited(s) => write!(f, "{s}"),
            Finished::TimedOut => f.write_str("killed at its deadline"),
            Finished::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// Runs `args` (in `ns`) with stdout and stderr into files, for at most
/// `deadline`; kills it (by pid) when it overruns or we are interrupted.
pub fn run_to_files(ns: Option<&str>, args: &[String], stdout: &Path, stderr: &Path, deadline: Duration) -> std::io::Result<Finished> {
    let child = command(ns, args).stdout(file(stdout)?).stderr(file(stderr)?).spawn()?;
    Ok(wait_child(child, deadline))
}

/// Runs `args` (in `ns`) and returns its stdout, or what went wrong.
pub fn run_capture(ns: Option<&str>, args: &[String], deadline: Duration) -> Result<String, String> {
    let dir = std::env::temp_dir();
    let tag = format!("encapd-bench-{}-{}", std::process::id(), unique());
    let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
    let result = run_to_files(ns, args, &out, &err, deadline);
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    match result {
        Ok(f) if f.success() => Ok(stdout),
        Ok(f) => Err(format!("`{}` {f}: {}", args.join(" "), stderr.trim())),
        Err(e) => Err(format!("`{}`: {e}", args.join(" "))),
    }
}

fn unique() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn wait_child(mut child: Child, deadline: Duration) -> Finished {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Finished::Exited(st);
        }
        if interrupted() {
            let _ = stop_child(&mut child, Duration::from_secs(1));
            return Finished::Interrupted;
        }
        if Instant::now() >= end {
            let _ = stop_child(&mut child, Duration::from_secs(1));
            return Finished::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A program running in the background (a server), stopped by its pid
/// when dropped.
pub struct Background {
    child: Option<Child>,
}

impl Background {
    /// Starts `args` (in `ns`), stdout and stderr into `log`.
    pub fn start(ns: Option<&str>, args: &[String], log: &Path) -> std::io::Result<Background> {
        let out = file(log)?;
        let err = out.try_clone()?;
        let child = command(ns, args).stdout(out).stderr(err).spawn()?;
        Ok(Background { child: Some(child) })
    }

    /// Starts `args` (in `ns`), stdout discarded, stderr into `log`.
    pub fn start_stderr(ns: Option<&str>, args: &[String], log: &Path) -> std::io::Result<Background> {
        let child = command(ns, args).stdout(Stdio::null()).stderr(file(log)?).spawn()?;
        Ok(Background { child: Some(child) })
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Waits (at most `timeout`) for it to exit on its own; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else { return true };
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, SIGKILL after `grace`; reaped.
    pub fn stop(mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = stop_child(&mut c, grace);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = stop_child(&mut c, Duration::from_secs(1));
        }
    }
}

/// Waits (at most `timeout`) until a socket listens on `port` in `ns`
/// (`udp`: a bound UDP socket), as `ss` sees it.
pub fn wait_port(ns: &str, port: u16, udp: bool, timeout: Duration) -> bool {
    let flags = if udp { "-Hlun" } else { "-Hltn" };
    let filter = format!("sport = :{port}");
    let end = Instant::now() + timeout;
    loop {
        let o = Command::new("ip").args(["netns", "exec", ns, "ss", flags, &filter]).stdin(Stdio::null()).output();
        if o.is_ok_and(|o| o.status.success() && !o.stdout.is_empty()) {
            return true;
        }
        if Instant::now() >= end || interrupted() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `args` as strings (for the builders above).
pub fn argv<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}
