//! Running programs with a deadline, and temporary directories: every
//! command the harness runs is killed (by its pid) and reported if it
//! overruns, so a hung tool fails the test instead of hanging the suite;
//! every temporary directory is removed when its guard drops.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A number no other caller in this process gets: with the pid, it makes
/// names (directories, namespaces) unique per run.
pub fn unique_id() -> usize {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// stdout and stderr together, for assertions and messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion (stdin empty), killing it (by its pid) and
/// panicking if it takes longer than `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Output {
    run_cmd_with_input(cmd, &[], timeout)
}

/// Like [`run_cmd`], with `input` written to the command's stdin.
pub fn run_cmd_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let start = Instant::now();
    let stdin = if input.is_empty() { Stdio::null() } else { Stdio::piped() };
    let mut child =
        cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    // Both pipes are drained on threads, so a chatty child never blocks
    // while we feed its stdin or wait for it.
    let out_thread = drain(child.stdout.take().unwrap());
    let err_thread = drain(child.stderr.take().unwrap());
    if let Some(mut stdin) = child.stdin.take() {
        // A child that exits without reading everything is not our error:
        // its status says what happened.
        let _ = stdin.write_all(input);
    }
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Output { status, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap(), elapsed }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Runs `program args...` (timeout 20 s).
pub fn run(program: &str, args: &[&str]) -> Output {
    run_cmd(Command::new(program).args(args), Duration::from_secs(20))
}

/// Runs `program args...` and panics unless it succeeds.
pub fn must(program: &str, args: &[&str]) -> Output {
    let o = run(program, args);
    assert!(o.ok(), "`{program} {}` failed ({}): {}", args.join(" "), o.status, o.text());
    o
}

/// Polls `f` every 20 ms until it returns `Some`, or `None` after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most `timeout`) until `f` holds; returns how long it took.
pub fn time_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    wait_for(timeout, || f().then_some(())).map(|_| start.elapsed())
}

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("encapd-test-{}-{}-{tag}", std::process::id(), unique_id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
