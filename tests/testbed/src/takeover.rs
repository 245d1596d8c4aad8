//! What the takeover suite (`tests/e2e_takeover.rs`) needs beyond the
//! rest of the harness: encapd processes started with any arguments
//! ([`Gateway`], stopped by pid on every exit path), successors an encapd
//! started itself ([`Orphan`]), a snapshot of the TUN device
//! ([`TunState`]), node A's chain of successors ([`Succession`]), a fake
//! service manager on a `NOTIFY_SOCKET` that records each sender's pid
//! ([`FakeManager`]) and the longest pause in a stream's arrivals
//! ([`longest_gap`]).

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::process::signal;
use crate::{Counters, Node, TUN, Topology, encapd_bin, must, parse_counters, wait_for};

/// The line encapd logs once it forwards.
pub const READY: &str = crate::instance::READY_LINE;
/// The test hook that pauses a process at a named step of the handover
/// (see `src/daemon/takeover/hooks.rs`).
pub const PAUSE_HOOK: &str = "ENCAPD_TEST_PAUSE_HANDOVER";
/// The test hook that makes a successor offer another protocol version.
pub const VERSION_HOOK: &str = "ENCAPD_TEST_HANDOVER_VERSION";

/// True once process `pid` has exited with all its threads (gone, or a
/// zombie not yet reaped whose other threads are gone too).
pub fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(status) => {
            let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
            matches!(field("State:").chars().next(), Some('Z' | 'X')) && field("Threads:") == "1"
        }
    }
}

/// Open fds of process `pid`.
pub fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap_or_else(|e| panic!("listing /proc/{pid}/fd: {e}")).count()
}

/// An encapd started by the test, with its own log; SIGTERM (then
/// SIGKILL) on drop if it still runs.
pub struct Gateway {
    child: Child,
    pub pid: i32,
    pub log: PathBuf,
}

impl Gateway {
    /// `encapd ARGS...` inside `ns`, with `env` added, logging to `log` (appended).
    pub fn spawn(ns: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> Gateway {
        let file = OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(encapd_bin()).args(args).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning encapd {args:?} in {ns}: {e}"));
        // `ip netns exec` execs the binary: the child's pid is encapd's.
        Gateway { pid: child.id() as i32, child, log: log.to_owned() }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `line` more than `before` times; panics
    /// (with the log) if the process exits first or `timeout` passes.
    pub fn wait_line_after(&mut self, line: &str, before: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().matches(line).count() > before {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("encapd (pid {}) exited ({st}) before logging {line:?}:\n{}", self.pid, self.log_text());
            }
            assert!(Instant::now() < deadline, "encapd (pid {}) did not log {line:?} within {timeout:?}:\n{}", self.pid, self.log_text());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn wait_line(&mut self, line: &str, timeout: Duration) {
        self.wait_line_after(line, 0, timeout);
    }

    /// Its exit status, waiting at most `timeout` (panics after).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_for(timeout, || self.child.try_wait().ok().flatten()) {
            Some(st) => st,
            None => panic!("encapd (pid {}) did not exit within {timeout:?}:\n{}", self.pid, self.log_text()),
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// SIGUSR1, then the counter summary it prints.
    pub fn counters(&mut self) -> Counters {
        let before = self.log_text().matches("encapd counters:").count();
        signal(self.pid, libc::SIGUSR1);
        wait_for(Duration::from_secs(5), || {
            let text = self.log_text();
            (text.matches("encapd counters:").count() > before).then(|| parse_counters(&text)).flatten()
        })
        .unwrap_or_else(|| panic!("no counters from encapd (pid {}):\n{}", self.pid, self.log_text()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.running() {
            signal(self.pid, libc::SIGTERM);
            if wait_for(Duration::from_secs(5), || self.child.try_wait().ok().flatten()).is_none() {
                signal(self.pid, libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- encapd pid {} ({}) ----\n{}----", self.pid, self.log.display(), self.log_text());
        }
    }
}

/// A process this test did not start but must not leave behind (a
/// successor an encapd started): SIGTERM, then SIGKILL, by pid.
pub struct Orphan(pub i32);

impl Drop for Orphan {
    fn drop(&mut self) {
        if exited(self.0) {
            return;
        }
        signal(self.0, libc::SIGTERM);
        if wait_for(Duration::from_secs(5), || exited(self.0).then_some(())).is_none() {
            signal(self.0, libc::SIGKILL);
        }
    }
}

/// What the kernel says about the TUN device in a namespace: the link
/// (index, name, flags, MTU, queue length), its addresses and its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunState {
    pub link: String,
    pub addrs: Vec<String>,
    pub routes: Vec<String>,
}

pub fn tun_state(ns: &str) -> TunState {
    let lines = |args: &[&str]| -> Vec<String> {
        let o = must("ip", &[&["-n", ns][..], args].concat());
        let mut l: Vec<String> = o.stdout.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        l.sort();
        l
    };
    let link = lines(&["-o", "link", "show", "dev", TUN]).join(" ");
    let addrs = lines(&["-o", "addr", "show", "dev", TUN]);
    let mut routes = lines(&["route", "show", "dev", TUN]);
    routes.extend(lines(&["-6", "route", "show", "dev", TUN]));
    TunState { link, addrs, routes }
}

pub fn tun_present(ns: &str) -> bool {
    super::run("ip", &["-n", ns, "link", "show", "dev", TUN]).ok()
}

/// Node A's encapd, taken over again and again: the topology's process
/// first, then each successor this test started.
pub struct Succession {
    pub current: Option<Gateway>,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub generation: usize,
}

/// One completed takeover, timed.
#[derive(Debug, Clone, Copy)]
pub struct Handover {
    /// When the successor was started, and when it logged ready.
    pub spawned: Instant,
    pub ready: Instant,
    /// When the old process was seen gone.
    pub old_gone: Instant,
    pub old_pid: i32,
    pub new_pid: i32,
    /// The successor's generation (1 for the first takeover).
    pub generation: usize,
}

impl Succession {
    pub fn new(t: &Topology, dir: &Path) -> Succession {
        Succession { current: None, config: t.dir().join("a/encapd.toml"), dir: dir.to_owned(), generation: 0 }
    }

    pub fn pid(&self, t: &Topology) -> i32 {
        self.current.as_ref().map_or_else(|| t.pid(Node::A), |g| g.pid)
    }

    /// Starts `encapd run --takeover` in node A (with `env`), waits until it
    /// forwards and the process it replaced has exited 0.
    pub fn take_over_with(&mut self, t: &mut Topology, env: &[(&str, &str)]) -> Handover {
        let old_pid = self.pid(t);
        self.generation += 1;
        let log = self.dir.join(format!("successor-{}.log", self.generation));
        let config = self.config.to_str().unwrap().to_owned();
        let spawned = Instant::now();
        let mut next = Gateway::spawn(&t.node_a, &["run", "--config", &config, "--takeover"], env, &log);
        next.wait_line(READY, Duration::from_secs(20));
        let ready = Instant::now();
        assert!(next.log_text().contains(&format!("takeover from pid {old_pid} complete")), "{}", next.log_text());
        wait_for(Duration::from_secs(10), || exited(old_pid).then_some(()))
            .unwrap_or_else(|| panic!("encapd pid {old_pid} still runs 10 s after its successor {} took over", next.pid));
        let old_gone = Instant::now();
        let status = match self.current.take() {
            None => t.stop_node(Node::A),
            Some(mut old) => old.wait_exit(Duration::from_secs(5)),
        };
        assert!(status.success(), "encapd pid {old_pid} exited with {status} after handing over");
        let new_pid = next.pid;
        self.current = Some(next);
        Handover { spawned, ready, old_gone, old_pid, new_pid, generation: self.generation }
    }

    /// The log of generation `g` (0: the topology's first encapd).
    pub fn log_of(&self, t: &Topology, g: usize) -> String {
        match g {
            0 => t.log(Node::A),
            g => std::fs::read_to_string(self.dir.join(format!("successor-{g}.log"))).unwrap_or_default(),
        }
    }

    /// Prints both logs of takeover `h` (what each process did when).
    pub fn print_logs(&self, t: &Topology, h: &Handover) {
        let tail = |text: String| text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        println!("---- pid {} (generation {}), last lines ----\n{}", h.old_pid, h.generation - 1, tail(self.log_of(t, h.generation - 1)));
        println!("---- pid {} (generation {}) ----\n{}", h.new_pid, h.generation, self.log_of(t, h.generation));
    }

    pub fn take_over(&mut self, t: &mut Topology) -> Handover {
        self.take_over_with(t, &[])
    }
}

/// One notification a [`FakeManager`] received.
#[derive(Debug, Clone)]
pub struct Notification {
    pub pid: i32,
    pub text: String,
    pub fds: usize,
    pub at: Instant,
    /// Whether the process named in `MAINPID=` (if any) was alive then.
    pub main_alive: Option<bool>,
    /// Whether `watch` (see [`FakeManager::watch`]) was alive then.
    pub watched_alive: bool,
}

/// A service manager's notification socket (`sd_notify(3)`): records each
/// datagram with the sender's pid (`SCM_CREDENTIALS`) and closes the fds
/// that come with it (which is how a barrier is answered).
pub struct FakeManager {
    pub path: PathBuf,
    pub received: Arc<Mutex<Vec<Notification>>>,
    watched: Arc<std::sync::atomic::AtomicI32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeManager {
    pub fn start(dir: &Path) -> FakeManager {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let one: libc::c_int = 1;
        // SAFETY: the option value points at a live c_int of the size given.
        let rc = unsafe { libc::setsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, (&one as *const libc::c_int).cast(), 4) };
        assert_eq!(rc, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let watched = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, watched, stop) = (Arc::clone(&received), Arc::clone(&watched), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = receive_notification(&sock, watched.load(Ordering::Relaxed)) {
                        received.lock().unwrap().push(n);
                    }
                }
            })
        };
        FakeManager { path, received, watched, stop, thread: Some(thread) }
    }

    /// Records, with every later notification, whether `pid` was alive.
    pub fn watch(&self, pid: i32) {
        self.watched.store(pid, Ordering::Relaxed);
    }

    pub fn all(&self) -> Vec<Notification> {
        self.received.lock().unwrap().clone()
    }

    /// The first notification from `pid` containing `text`, waiting up to `timeout`.
    pub fn wait(&self, pid: i32, text: &str, timeout: Duration) -> Notification {
        wait_for(timeout, || self.all().into_iter().find(|n| n.pid == pid && n.text.contains(text)))
            .unwrap_or_else(|| panic!("no {text:?} from pid {pid} within {timeout:?}; got {:#?}", self.all()))
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One datagram with its credentials and fds (closed), or `None` on timeout.
fn receive_notification(sock: &UnixDatagram, watched: i32) -> Option<Notification> {
    let mut buf = [0u8; 4096];
    let mut control = [0u64; 64];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in msg points at live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return None;
    }
    let at = Instant::now();
    let (mut pid, mut fds) = (0, 0);
    // SAFETY: msg was just filled in by recvmsg over `control`; the CMSG
    // macros stay within msg_controllen; each fd received is ours to close.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                pid = (data as *const libc::ucred).read_unaligned().pid;
            } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    drop(OwnedFd::from_raw_fd((data as *const i32).add(i).read_unaligned()));
                    fds += 1;
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    let main_alive = text.lines().find_map(|l| l.strip_prefix("MAINPID=")).and_then(|p| p.parse::<i32>().ok()).map(|p| !exited(p));
    Some(Notification { pid, text, fds, at, main_alive, watched_alive: watched != 0 && !exited(watched) })
}

/// The longest time between two consecutive arrivals (in arrival order)
/// of a stream's datagrams within `[from, to]`; `arrivals` as
/// [`StreamResult::arrivals`](super::traffic::StreamResult) has them.
pub fn longest_gap(arrivals: &[(u32, Instant)], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = arrivals.iter().map(|a| a.1).filter(|t| *t >= from && *t <= to).collect();
    times.sort();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}
