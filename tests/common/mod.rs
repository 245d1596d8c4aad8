//! Shared harness for the integration tests: temp dirs, commands with
//! timeouts, and (for the root-only end-to-end tests) a two-node topology of
//! network namespaces with one `encapd` per node.
//!
//! Safety rules the harness enforces: every address, route, sysctl and link
//! it creates lives inside a namespace it created itself (links are created
//! directly inside their namespaces); nothing touches the root namespace.
//! Namespaces are named `et<pid-hex>_<n>-<role>`, removed in `Drop`, and
//! namespaces left behind by a test process that no longer exists (killed
//! with SIGKILL, so `Drop` never ran) are removed on the next run.
//!
//! [`Topology::with`] varies the topology: another engine or extra
//! `[dataplane]` lines per node, and optionally a middle namespace on the
//! underlay whose layer-2 forwarder (a thread of the test process) can
//! reorder frames; [`Topology::add_udp_loss`] drops tunnel datagrams at
//! random with nftables. [`traffic`] has self-checking test traffic (a
//! checksummed TCP transfer, a counted UDP stream).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

pub mod prometheus;
pub mod traffic;

/// The overlay/underlay plan of [`Topology`].
pub const CTR_A: &str = "100.96.1.2";
pub const CTR_B: &str = "100.96.2.3";
pub const CTR_A6: &str = "fd00:96:1::2";
pub const CTR_B6: &str = "fd00:96:2::3";
pub const NODE_A_UNDERLAY: &str = "198.18.0.1";
pub const NODE_B_UNDERLAY: &str = "198.18.0.2";
pub const TUN: &str = "encap0";
pub const PORT: u16 = 8285;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The `encapd` binary under test: `$ENCAPD_BIN` if set (e.g. the release
/// build), else the binary cargo built for this test run.
pub fn encapd_bin() -> PathBuf {
    match std::env::var_os("ENCAPD_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_encapd")),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("ENCAPD_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("root-only test skipped but ENCAPD_REQUIRE_ROOT_TESTS=1 ({why})");
    }
    eprintln!("skipped: {why}");
    false
}

/// True when the caller may run a root-only test. Otherwise prints
/// "skipped: ..." and returns false, or panics when
/// `ENCAPD_REQUIRE_ROOT_TESTS=1` demands that root tests really run.
pub fn require_root() -> bool {
    if !is_root() {
        return skip_or_fail("needs root");
    }
    require_tools(&["ip", "ping", "sysctl"])
}

/// True when every program in `tools` is in PATH. Otherwise prints
/// "skipped: ..." and returns false, or panics when
/// `ENCAPD_REQUIRE_ROOT_TESTS=1` (scripts/test.sh installs them).
pub fn require_tools(tools: &[&str]) -> bool {
    for tool in tools {
        if !in_path(tool) {
            return skip_or_fail(&format!("needs `{tool}` in PATH"));
        }
    }
    true
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Temporary directories

/// A directory under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("encapd-test-{}-{}-{tag}", std::process::id(), next_id()));
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

// ---------------------------------------------------------------------------
// Commands

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

/// Runs `cmd` to completion, killing it (by its pid) and panicking if it
/// takes longer than `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let start = Instant::now();
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
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

/// Runs a command inside network namespace `ns` (`ip netns exec`, which
/// fails rather than falling back to the root namespace).
pub fn ns_exec(ns: &str, args: &[&str], timeout: Duration) -> Output {
    run_cmd(Command::new("ip").args(["netns", "exec", ns]).args(args), timeout)
}

/// `ip -n ns args...`, panicking on failure.
pub fn ip(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    must("ip", &full)
}

/// Several `ip` commands in one process (`ip -n ns -batch -`).
fn ip_batch(ns: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ip -batch");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(lines.join("\n").as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ip -n {ns} -batch timed out");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "ip -n {ns} -batch failed ({status}): {err}\ncommands:\n{}", lines.join("\n"));
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

// ---------------------------------------------------------------------------
// Network namespaces

fn enter_netns(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: setns only reads the fd, which `f` keeps open for the call; it
    // changes the network namespace of the calling thread alone.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs `f` on a fresh thread that has entered network namespace `ns`, so the
/// sockets `f` creates belong to `ns` (they stay there when returned).
pub fn in_netns<T: Send, F: FnOnce() -> T + Send>(ns: &str, f: F) -> T {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn_scoped(s, || {
                enter_netns(ns);
                f()
            })
            .expect("spawning a netns thread");
        match handle.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        }
    })
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `et<hex pid>_<n>-<role>` → the pid of the test process that made it.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix("et")?;
    let (pid, rest) = rest.split_once('_')?;
    let (n, role) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || !["cA", "nA", "nB", "cB", "md"].contains(&role) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

fn list_netns() -> Vec<String> {
    let o = run("ip", &["netns", "list"]);
    o.stdout.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// Removes namespaces (and the processes in them) left by test processes of
/// ours that died without cleaning up. Only names of our own pattern whose
/// creating process no longer exists are touched.
fn remove_stale_namespaces() {
    for ns in list_netns() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        let pids = run("ip", &["netns", "pids", &ns]);
        for p in pids.stdout.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions; `p` is a
            // process inside a namespace that a dead test run of ours created.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = run("ip", &["netns", "del", &ns]);
        eprintln!("removed stale test namespace {ns} (creator pid {pid} is gone)");
    }
}

/// Namespaces this process created (any test), for checks after cleanup.
pub fn our_namespaces() -> Vec<String> {
    list_netns().into_iter().filter(|ns| owner_pid(ns) == Some(std::process::id())).collect()
}

// ---------------------------------------------------------------------------
// Concurrency limit: at most N topologies at once (CPU-heavy tests would
// starve each other on a small machine).

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

fn max_topologies() -> usize {
    std::env::var("ENCAPD_TEST_TOPOLOGIES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2)
}

pub struct Permit(());

impl Permit {
    pub fn acquire() -> Permit {
        let max = max_topologies();
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= max {
            used = SLOT_FREED.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Permit(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        SLOT_FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------
// Counters printed by encapd on SIGUSR1

/// The "total" line and drop reasons of one counter summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub egress_pkts: u64,
    pub egress_bytes: u64,
    pub egress_sends: u64,
    pub ingress_pkts: u64,
    pub ingress_bytes: u64,
    pub ingress_receives: u64,
    pub icmp: u64,
    pub icmp_rate_limited: u64,
    pub drops_total: u64,
    pub table_version: u64,
    pub drops: BTreeMap<String, u64>,
    pub tables_published: u64,
    pub reload_failures: u64,
    /// Per worker, in worker order: (egress packets, ingress packets).
    pub per_worker: Vec<(u64, u64)>,
}

impl Counters {
    /// The count for one drop reason (0 when not listed).
    pub fn drop(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

const SUMMARY_HEADER: &str = "encapd counters:";
const SUMMARY_END: &str = "  control   tables published";

/// Numbers in `text` in order (e.g. "egress 5 pkts 460 bytes" → [5, 460]).
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()
}

/// Parses the last complete summary block in `log`, if any.
pub fn parse_counters(log: &str) -> Option<Counters> {
    let start = log.rfind(SUMMARY_HEADER)?;
    let block = &log[start..];
    let end = block.find(SUMMARY_END)?;
    let end_line = block[end..].find('\n').map(|i| end + i)?;
    let block = &block[..end_line];
    let mut c = Counters::default();
    let mut saw_total = false;
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("  worker") {
            let n = numbers(rest);
            assert_eq!(n.len(), 11, "unexpected worker line: {line:?}");
            assert_eq!(n[0] as usize, c.per_worker.len(), "workers out of order: {line:?}");
            c.per_worker.push((n[1], n[4]));
        } else if let Some(rest) = line.strip_prefix("  total") {
            let n = numbers(rest);
            assert_eq!(n.len(), 10, "unexpected total line: {line:?}");
            (c.egress_pkts, c.egress_bytes, c.egress_sends) = (n[0], n[1], n[2]);
            (c.ingress_pkts, c.ingress_bytes, c.ingress_receives) = (n[3], n[4], n[5]);
            (c.icmp, c.icmp_rate_limited, c.drops_total, c.table_version) = (n[6], n[7], n[8], n[9]);
            saw_total = true;
        } else if let Some(rest) = line.strip_prefix("  drops ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
                panic!("unexpected drops line: {line:?}");
            };
            c.drops.insert(name.to_owned(), n.parse().unwrap_or_else(|_| panic!("unexpected drops line: {line:?}")));
        } else if let Some(rest) = line.strip_prefix("  control") {
            let n = numbers(rest);
            assert_eq!(n.len(), 2, "unexpected control line: {line:?}");
            (c.tables_published, c.reload_failures) = (n[0], n[1]);
        }
    }
    assert!(saw_total, "summary without a total line:\n{block}");
    let listed: u64 = c.drops.values().sum();
    assert_eq!(listed, c.drops_total, "drop reasons do not add up to the total:\n{block}");
    Some(c)
}

// ---------------------------------------------------------------------------
// The two-node topology

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    fn index(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
        }
    }
}

struct Daemon {
    child: Child,
    pid: i32,
    log: PathBuf,
    /// "ready" lines already in the log when this daemon was started.
    ready_before: usize,
}

const READY_LINE: &str = "ready: forwarding";

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child we
    // spawned and have not yet reaped, so it cannot name another process.
    unsafe { libc::kill(pid, sig) };
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// How [`Topology::with`] builds the topology.
#[derive(Debug, Clone)]
pub struct Options {
    /// I/O engine of nodeA's and nodeB's encapd.
    pub engine_a: String,
    pub engine_b: String,
    /// Lines appended to that node's `[dataplane]` section, e.g.
    /// `"offload = \"off\"\n"`.
    pub extra_a: String,
    pub extra_b: String,
    /// A middle namespace on the underlay (see [`Middle`]); `None`: the
    /// nodes' underlay veths are directly connected.
    pub middle: Option<Middle>,
}

impl Options {
    /// Both nodes on `engine`, default configuration, direct underlay (what
    /// [`Topology::new`] builds).
    pub fn new(engine: &str) -> Options {
        Options { engine_a: engine.to_owned(), engine_b: engine.to_owned(), extra_a: String::new(), extra_b: String::new(), middle: None }
    }
}

/// A third namespace between the nodes on the underlay:
/// `nodeA(ul 198.18.0.1/24) ── ula [mid] ulb ── (ul 198.18.0.2/24) nodeB`.
/// A thread of the test process inside it forwards every frame received on
/// one veth to the other (AF_PACKET), optionally reordering. GSO, TSO, UDP
/// segmentation and transmit checksum offload are off on the middle veths
/// and on the nodes' underlay veths, so the kernel segments encapd's UDP GSO
/// sends before the wire and every frame fits an MTU-sized buffer (an
/// oversized frame is counted, see [`MiddleStats::oversize`], and dropped).
#[derive(Debug, Clone, Default)]
pub struct Middle {
    /// Hold back one frame in `reorder_one_in` (per direction) and send it
    /// right after the next frame of that direction (or after 1 ms of
    /// silence). 0: never reorder.
    pub reorder_one_in: u32,
    /// Turn GRO on at the receive side of nodeA's / nodeB's underlay veth
    /// (with a 100 µs `gro_flush_timeout`), so that encapd there still
    /// receives UDP GRO runs (and coalesces them) although frames arrive one
    /// by one. Off: every datagram reaches the node's socket (and its
    /// netfilter hooks) on its own.
    pub gro_a: bool,
    pub gro_b: bool,
}

/// What the middle forwarder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MiddleStats {
    /// Frames sent on to the other side (held-back ones included).
    pub forwarded: u64,
    /// Frames held back and sent after a later frame.
    pub reordered: u64,
    /// Frames larger than an MTU-sized buffer (dropped; should stay 0).
    pub oversize: u64,
    /// Sends the kernel refused (e.g. the peer veth's queue was full).
    pub send_errors: u64,
}

#[derive(Default)]
struct ForwarderCounters {
    forwarded: AtomicU64,
    reordered: AtomicU64,
    oversize: AtomicU64,
    send_errors: AtomicU64,
}

/// The running middle forwarder: stop flag, counters, thread.
struct Forwarder {
    stop: Arc<AtomicBool>,
    counters: Arc<ForwarderCounters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn stats(&self) -> MiddleStats {
        let c = &self.counters;
        MiddleStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
            oversize: c.oversize.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread (it polls the flag at least every 50 ms) and joins
    /// it; returns its panic message, if it panicked.
    fn stop(&mut self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.thread.take()?;
        let err = handle.join().err()?;
        Some(err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
    }
}

/// ctrA ── nodeA ══ nodeB ── ctrB, one encapd per node (see the module docs).
pub struct Topology {
    /// nodeA's engine (the only one, unless [`Options`] gave nodeB another).
    pub engine: String,
    /// Namespace names.
    pub ctr_a: String,
    pub node_a: String,
    pub node_b: String,
    pub ctr_b: String,
    /// The middle namespace, when [`Options::middle`] asked for one.
    pub mid: Option<String>,
    opts: Options,
    namespaces: Vec<String>,
    daemons: [Option<Daemon>; 2],
    forwarder: Option<Forwarder>,
    dir: TempDir,
    _permit: Permit,
}

fn node_config(public_ip: &str, subnet: &str, subnet6: &str, engine: &str, extra: &str) -> String {
    let mut extra = extra.to_owned();
    if !extra.is_empty() && !extra.ends_with('\n') {
        extra.push('\n');
    }
    format!(
        "[node]\npublic_ip = \"{public_ip}\"\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\n\n\
         [network]\ncidr = \"100.96.0.0/16\"\ncidr6 = \"fd00:96::/32\"\n\n\
         [dataplane]\nworkers = 2\nio = \"{engine}\"\n{extra}\n\
         [control]\nsource = \"file\"\npeers = \"peers.toml\"\nsubnet_env = \"subnet.env\"\n\n\
         [process]\ncontrol_socket = \"encapd.sock\"\n"
    )
}

fn peers_file(subnet: &str, subnet6: &str, public_ip: &str) -> String {
    format!("[[peer]]\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\npublic_ip = \"{public_ip}\"\n")
}

static STALE_CLEANUP: Once = Once::new();

impl Topology {
    /// Builds the namespaces and starts both daemons with I/O engine
    /// `engine`; returns once both are forwarding. Panics on any failure
    /// (Drop still cleans up whatever was created).
    pub fn new(engine: &str) -> Topology {
        Topology::with(Options::new(engine))
    }

    /// Like [`new`](Self::new), with per-node engines and configuration and
    /// an optional middle namespace (see [`Options`]).
    pub fn with(opts: Options) -> Topology {
        let permit = Permit::acquire();
        STALE_CLEANUP.call_once(remove_stale_namespaces);
        let prefix = format!("et{:x}_{}", std::process::id(), next_id());
        let mut t = Topology {
            engine: opts.engine_a.clone(),
            ctr_a: format!("{prefix}-cA"),
            node_a: format!("{prefix}-nA"),
            node_b: format!("{prefix}-nB"),
            ctr_b: format!("{prefix}-cB"),
            mid: opts.middle.as_ref().map(|_| format!("{prefix}-md")),
            opts,
            namespaces: Vec::new(),
            daemons: [None, None],
            forwarder: None,
            dir: TempDir::new(&prefix),
            _permit: permit,
        };
        t.build_namespaces();
        t.start_daemons();
        t
    }

    /// The I/O engine of the node's encapd.
    pub fn engine_of(&self, node: Node) -> &str {
        match node {
            Node::A => &self.opts.engine_a,
            Node::B => &self.opts.engine_b,
        }
    }

    fn build_namespaces(&mut self) {
        let mut all = vec![self.ctr_a.clone(), self.node_a.clone(), self.node_b.clone(), self.ctr_b.clone()];
        all.extend(self.mid.clone());
        for ns in &all {
            must("ip", &["netns", "add", ns]);
            self.namespaces.push(ns.clone());
            // DAD off before any link exists: new links copy `default`.
            let mut sysctls = vec!["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"];
            if ns == &self.node_a || ns == &self.node_b {
                sysctls.extend(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1"]);
            }
            if Some(ns) == self.mid.as_ref() {
                // A pure layer-2 box: its own stack stays silent.
                sysctls.extend(["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
            }
            let mut args = vec!["sysctl", "-q", "-w"];
            args.extend(sysctls);
            let o = ns_exec(ns, &args, Duration::from_secs(10));
            assert!(o.ok(), "sysctl in {ns} failed: {}", o.text());
        }
        let (ca, na, nb, cb) = (&self.ctr_a, &self.node_a, &self.node_b, &self.ctr_b);
        // Every veth is created directly inside its namespaces.
        must("ip", &["link", "add", "eth0", "netns", ca, "type", "veth", "peer", "name", "vc", "netns", na]);
        match &self.mid {
            None => {
                must("ip", &["link", "add", "ul", "netns", na, "type", "veth", "peer", "name", "ul", "netns", nb]);
            }
            Some(md) => {
                must("ip", &["link", "add", "name", "ul", "netns", na, "type", "veth", "peer", "name", "ula", "netns", md]);
                must("ip", &["link", "add", "name", "ulb", "netns", md, "type", "veth", "peer", "name", "ul", "netns", nb]);
            }
        }
        must("ip", &["link", "add", "vc", "netns", nb, "type", "veth", "peer", "name", "eth0", "netns", cb]);
        let s = |v: &[&str]| v.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        ip_batch(
            ca,
            &s(&[
                "link set lo up",
                "link set eth0 up",
                "addr add 100.96.1.2/24 dev eth0",
                "addr add fd00:96:1::2/64 dev eth0 nodad",
                "route add default via 100.96.1.1",
                "route add ::/0 via fd00:96:1::1",
            ]),
        );
        ip_batch(
            na,
            &s(&[
                "link set lo up",
                "link set vc up",
                "link set ul up",
                "addr add 100.96.1.1/24 dev vc",
                "addr add fd00:96:1::1/64 dev vc nodad",
                "addr add 198.18.0.1/24 dev ul",
            ]),
        );
        ip_batch(
            nb,
            &s(&[
                "link set lo up",
                "link set vc up",
                "link set ul up",
                "addr add 100.96.2.1/24 dev vc",
                "addr add fd00:96:2::1/64 dev vc nodad",
                "addr add 198.18.0.2/24 dev ul",
            ]),
        );
        ip_batch(
            cb,
            &s(&[
                "link set lo up",
                "link set eth0 up",
                "addr add 100.96.2.3/24 dev eth0",
                "addr add fd00:96:2::3/64 dev eth0 nodad",
                "route add default via 100.96.2.1",
                "route add ::/0 via fd00:96:2::1",
            ]),
        );
        if let Some(middle) = self.opts.middle.clone() {
            self.build_middle(&middle);
        }
    }

    /// Brings up the middle namespace's veths, turns off the offloads that
    /// would put frames larger than the MTU on the wire, and starts the
    /// forwarder.
    fn build_middle(&mut self, middle: &Middle) {
        let md = self.mid.clone().unwrap();
        ip_batch(&md, &["link set lo up".to_owned(), "link set ula up".to_owned(), "link set ulb up".to_owned()]);
        let no_segmentation = ["gso", "off", "tso", "off", "tx-udp-segmentation", "off", "tx", "off"];
        for dev in ["ula", "ulb"] {
            ethtool_k(&md, dev, &[&no_segmentation[..], &["gro", "off"]].concat());
        }
        for (ns, gro) in [(self.node_a.clone(), middle.gro_a), (self.node_b.clone(), middle.gro_b)] {
            // GRO on a veth without XDP turns on its NAPI receive path. The
            // forwarder sends one frame per syscall, so every NAPI poll sees
            // a single frame: GRO only merges frames when it may hold them
            // across polls for a while (here up to 100 µs).
            ethtool_k(&ns, "ul", &[&no_segmentation[..], &["gro", if gro { "on" } else { "off" }]].concat());
            if gro {
                let o = ns_exec(&ns, &["sh", "-c", "echo 100000 > /sys/class/net/ul/gro_flush_timeout"], Duration::from_secs(10));
                assert!(o.ok(), "setting gro_flush_timeout on ul in {ns}: {}", o.text());
            }
        }
        self.forwarder = Some(start_forwarder(&md, middle.reorder_one_in));
    }

    /// What the middle forwarder has done so far (panics without a middle).
    pub fn middle_stats(&self) -> MiddleStats {
        self.forwarder.as_ref().expect("topology without a middle namespace").stats()
    }

    /// Drops `percent` % of the tunnel datagrams (UDP to port 8285) that
    /// reach the node's own input hook, at random (nftables `numgen`), in a
    /// table `encapd_test_loss` with a counter (see
    /// [`udp_loss_dropped`](Self::udp_loss_dropped)).
    pub fn add_udp_loss(&self, node: Node, percent: u32) {
        let ns = self.ns_of(node).to_owned();
        let script = format!(
            "table inet encapd_test_loss {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             udp dport {PORT} numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        );
        let path = self.dir.write(&format!("loss-{}.nft", if node == Node::A { "a" } else { "b" }), &script);
        let o = ns_exec(&ns, &["nft", "-f", path.to_str().unwrap()], Duration::from_secs(10));
        assert!(o.ok(), "nft -f in {ns} failed: {}\n{script}", o.text());
    }

    /// Packets the node's loss rule has dropped so far (its nftables counter).
    pub fn udp_loss_dropped(&self, node: Node) -> u64 {
        let ns = self.ns_of(node);
        let o = ns_exec(ns, &["nft", "list", "table", "inet", "encapd_test_loss"], Duration::from_secs(10));
        assert!(o.ok(), "nft list in {ns} failed: {}", o.text());
        let line = o.stdout.lines().find(|l| l.contains("numgen") && l.contains("counter packets")).unwrap_or_else(|| {
            panic!("no loss rule with a counter in {ns}:\n{}", o.stdout);
        });
        let rest = line.split("counter packets").nth(1).unwrap();
        rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected nft counter line {line:?}"))
    }

    fn start_daemons(&mut self) {
        let (ea, eb) = (self.opts.engine_a.clone(), self.opts.engine_b.clone());
        let (xa, xb) = (self.opts.extra_a.clone(), self.opts.extra_b.clone());
        self.dir.write("a/encapd.toml", &node_config(NODE_A_UNDERLAY, "100.96.1.0/24", "fd00:96:1::/64", &ea, &xa));
        self.dir.write("a/peers.toml", &peers_file("100.96.2.0/24", "fd00:96:2::/64", NODE_B_UNDERLAY));
        self.dir.write("b/encapd.toml", &node_config(NODE_B_UNDERLAY, "100.96.2.0/24", "fd00:96:2::/64", &eb, &xb));
        self.dir.write("b/peers.toml", &peers_file("100.96.1.0/24", "fd00:96:1::/64", NODE_A_UNDERLAY));
        for node in [Node::A, Node::B] {
            self.spawn_daemon(node);
        }
        for node in [Node::A, Node::B] {
            self.wait_ready(node);
        }
    }

    fn spawn_daemon(&mut self, node: Node) {
        let ns = self.ns_of(node).to_owned();
        let sub = if node == Node::A { "a" } else { "b" };
        let config = self.dir.path().join(sub).join("encapd.toml");
        let log = self.dir.path().join(sub).join("encapd.log");
        // Appended to, so a restarted daemon's log follows the first one's.
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        // `ip netns exec` execs the binary: the child's pid is encapd's.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(encapd_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning encapd in {ns}: {e}"));
        let pid = child.id() as i32;
        let ready_before = std::fs::read_to_string(&log).unwrap_or_default().matches(READY_LINE).count();
        self.daemons[node.index()] = Some(Daemon { child, pid, log, ready_before });
    }

    /// Starts the node's encapd again (after [`stop_node`](Self::stop_node)
    /// or [`kill_node`](Self::kill_node)) with the same configuration and
    /// waits until it forwards; returns how long that took.
    pub fn start_node(&mut self, node: Node) -> Duration {
        assert!(self.daemons[node.index()].is_none(), "encapd ({node:?}) is still running");
        let started = Instant::now();
        self.spawn_daemon(node);
        self.wait_ready(node);
        started.elapsed()
    }

    /// SIGKILL to the node's encapd (no clean-up of its own); returns once it is reaped.
    pub fn kill_node(&mut self, node: Node) -> ExitStatus {
        let mut d = self.daemons[node.index()].take().expect("daemon already stopped");
        signal(d.pid, libc::SIGKILL);
        d.child.wait().expect("reaping encapd")
    }

    fn wait_ready(&mut self, node: Node) {
        let ns = self.ns_of(node).to_owned();
        let engine = self.engine_of(node).to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = self.daemons[node.index()].as_mut().unwrap();
            if let Some(st) = d.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&d.log).unwrap_or_default();
                panic!("encapd in {ns} exited during start-up ({st}):\n{log}");
            }
            let log = std::fs::read_to_string(&d.log).unwrap_or_default();
            if log.matches(READY_LINE).count() > d.ready_before && run("ip", &["-n", &ns, "link", "show", TUN]).ok() {
                // Guard against a silent fallback: the engine under test must be the one running.
                assert!(log.contains(&format!("engine {engine} ")), "encapd in {ns} does not run the {engine} engine:\n{log}");
                return;
            }
            if Instant::now() > deadline {
                panic!("encapd in {ns} not ready within 10 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ns_of(&self, node: Node) -> &str {
        match node {
            Node::A => &self.node_a,
            Node::B => &self.node_b,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of a node's encapd (panics if it was stopped).
    pub fn pid(&self, node: Node) -> i32 {
        self.daemons[node.index()].as_ref().expect("daemon was stopped").pid
    }

    /// Everything the node's encapd has logged so far.
    pub fn log(&self, node: Node) -> String {
        let sub = if node == Node::A { "a" } else { "b" };
        std::fs::read_to_string(self.dir.path().join(sub).join("encapd.log")).unwrap_or_default()
    }

    /// Asks the node's encapd for its counters (SIGUSR1) and parses the
    /// summary it prints; waits at most 5 s for it.
    pub fn counters(&mut self, node: Node) -> Counters {
        let d = self.daemons[node.index()].as_mut().expect("daemon was stopped");
        if let Some(st) = d.child.try_wait().unwrap() {
            panic!("encapd ({node:?}) has exited ({st}):\n{}", std::fs::read_to_string(&d.log).unwrap_or_default());
        }
        let (pid, log) = (d.pid, d.log.clone());
        let before = std::fs::read_to_string(&log).unwrap_or_default().matches(SUMMARY_HEADER).count();
        signal(pid, libc::SIGUSR1);
        wait_for(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&log).ok()?;
            if text.matches(SUMMARY_HEADER).count() <= before {
                return None;
            }
            parse_counters(&text)
        })
        .unwrap_or_else(|| panic!("no counter summary from encapd ({node:?}) within 5 s:\n{}", self.log(node)))
    }

    /// Polls the node's counters until `pred` holds (at most `timeout`);
    /// returns the last counters read either way.
    pub fn counters_until(&mut self, node: Node, timeout: Duration, pred: impl Fn(&Counters) -> bool) -> Counters {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.counters(node);
            if pred(&c) || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// SIGTERM to the node's encapd; returns its exit status. Panics if it
    /// does not exit within 5 s (after killing it).
    pub fn stop_node(&mut self, node: Node) -> ExitStatus {
        let mut d = self.daemons[node.index()].take().expect("daemon already stopped");
        signal(d.pid, libc::SIGTERM);
        match wait_child(&mut d.child, Duration::from_secs(5)) {
            Some(st) => st,
            None => {
                signal(d.pid, libc::SIGKILL);
                let _ = d.child.wait();
                panic!("encapd ({node:?}) did not exit within 5 s of SIGTERM:\n{}", std::fs::read_to_string(&d.log).unwrap_or_default());
            }
        }
    }

    /// `ping` from a namespace; returns what it printed (never panics on a
    /// failed ping: callers assert on the output).
    pub fn ping(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ping"];
        full.extend_from_slice(args);
        ns_exec(ns, &full, Duration::from_secs(30))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut f) = self.forwarder.take() {
            let stats = f.stats();
            if let Some(msg) = f.stop() {
                eprintln!("warning: the middle forwarder panicked: {msg}");
            }
            if panicking {
                eprintln!("---- middle forwarder: {stats:?} ----");
            }
        }
        for (i, slot) in self.daemons.iter_mut().enumerate() {
            if let Some(mut d) = slot.take() {
                signal(d.pid, libc::SIGTERM);
                if wait_child(&mut d.child, Duration::from_secs(5)).is_none() {
                    signal(d.pid, libc::SIGKILL);
                    let _ = d.child.wait();
                }
                if panicking {
                    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
                    let (name, engine) = if i == 0 { ("A", &self.opts.engine_a) } else { ("B", &self.opts.engine_b) };
                    eprintln!("---- encapd log, node {name} ({engine}) ----\n{log}----");
                }
            }
        }
        for ns in self.namespaces.drain(..) {
            let o = Command::new("ip").args(["netns", "del", &ns]).stdout(Stdio::null()).stderr(Stdio::piped()).output();
            if let Ok(o) = o
                && !o.status.success()
            {
                eprintln!("warning: ip netns del {ns}: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The middle namespace's layer-2 forwarder

/// `ethtool -K dev settings...` inside `ns`, verified with `ethtool -k`
/// (a feature the driver cannot change makes ethtool fail, which panics).
fn ethtool_k(ns: &str, dev: &str, settings: &[&str]) {
    let mut args = vec!["ethtool", "-K", dev];
    args.extend_from_slice(settings);
    let o = ns_exec(ns, &args, Duration::from_secs(10));
    assert!(o.ok(), "`ethtool -K {dev} {}` in {ns} failed: {}", settings.join(" "), o.text());
    let shown = ns_exec(ns, &["ethtool", "-k", dev], Duration::from_secs(10));
    assert!(shown.ok(), "ethtool -k {dev} in {ns}: {}", shown.text());
    let long_name = |short: &str| {
        match short {
            "gso" => "generic-segmentation-offload",
            "tso" => "tcp-segmentation-offload",
            "gro" => "generic-receive-offload",
            "tx" => "tx-checksumming",
            other => other,
        }
        .to_owned()
    };
    for pair in settings.chunks(2) {
        let want = format!("{}: {}", long_name(pair[0]), pair[1]);
        assert!(
            shown.stdout.lines().any(|l| l.trim().starts_with(&want)),
            "{dev} in {ns}: expected `{want}` after ethtool -K:\n{}",
            shown.stdout
        );
    }
}

const PACKET_OUTGOING: u8 = 4;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Larger than any frame of a 1500-byte MTU; a longer one is oversize.
const FRAME_BUF: usize = 2048;

/// An AF_PACKET raw socket that receives every frame of interface `dev`
/// (in the calling thread's namespace) and sends raw frames out of it.
fn packet_socket(dev: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex != 0, "if_nametoindex({dev}): {}", std::io::Error::last_os_error());
    // Protocol 0 until bound: the socket receives nothing from other
    // interfaces in between.
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    assert!(raw >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a live sockaddr_ll of the given size; the fd is open.
    let rc = unsafe {
        libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
    };
    assert_eq!(rc, 0, "bind(AF_PACKET, {dev}): {}", std::io::Error::last_os_error());
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the given size.
    // Best effort: the receive loop skips outgoing frames anyway.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    set_rcvbuf(&fd, 8 << 20);
    fd
}

/// Starts the forwarder thread inside namespace `ns` (interfaces `ula`, `ulb`);
/// returns once its sockets are bound.
fn start_forwarder(ns: &str, reorder_one_in: u32) -> Forwarder {
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(ForwarderCounters::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let thread = {
        let (ns, stop, counters) = (ns.to_owned(), Arc::clone(&stop), Arc::clone(&counters));
        std::thread::Builder::new()
            .name(format!("l2fwd-{ns}"))
            .spawn(move || {
                enter_netns(&ns);
                let socks = [packet_socket("ula"), packet_socket("ulb")];
                let _ = ready_tx.send(());
                forward_loop(&socks, reorder_one_in, &stop, &counters);
            })
            .expect("spawning the forwarder thread")
    };
    let mut f = Forwarder { stop, counters, thread: Some(thread) };
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let msg = f.stop().unwrap_or_else(|| "not ready within 10 s".to_owned());
        panic!("the middle forwarder in {ns} did not start: {msg}");
    }
    f
}

/// Sends one frame; a refused send (full queue on the far veth) is a loss.
fn send_frame(fd: &std::os::fd::OwnedFd, frame: &[u8], counters: &ForwarderCounters) {
    // SAFETY: `frame` is a live slice for the duration of the call.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n == frame.len() as isize {
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.send_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Frames received on `socks[i]` go out of `socks[1 - i]`, until `stop`.
fn forward_loop(socks: &[std::os::fd::OwnedFd; 2], reorder_one_in: u32, stop: &AtomicBool, counters: &ForwarderCounters) {
    let mut buf = vec![0u8; FRAME_BUF];
    // Per direction: frames seen, and the frame held back (if any).
    let mut seen = [0u64; 2];
    let mut held: [Option<Vec<u8>>; 2] = [None, None];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            libc::pollfd { fd: socks[0].as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: socks[1].as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // A held frame waits at most ~1 ms for a successor.
        let timeout = if held.iter().any(Option::is_some) { 1 } else { 50 };
        // SAFETY: `fds` is a live array of two pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        if rc == 0 {
            for (dir, slot) in held.iter_mut().enumerate() {
                if let Some(frame) = slot.take() {
                    send_frame(&socks[1 - dir], &frame, counters);
                    counters.reordered.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        for dir in 0..2 {
            if fds[dir].revents == 0 {
                continue;
            }
            // A bounded drain per wakeup keeps both directions moving.
            for _ in 0..256 {
                // SAFETY: sockaddr_ll is plain data; all-zero is valid.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `from` are live and as long as stated;
                // MSG_TRUNC makes the result the frame's real length.
                let n = unsafe {
                    libc::recvfrom(
                        socks[dir].as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut from_len,
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.kind() {
                        std::io::ErrorKind::WouldBlock => break,
                        std::io::ErrorKind::Interrupted => continue,
                        _ => panic!("recvfrom(AF_PACKET): {e}"),
                    }
                }
                if from.sll_pkttype == PACKET_OUTGOING {
                    continue;
                }
                let n = n as usize;
                if n > buf.len() {
                    counters.oversize.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                seen[dir] += 1;
                if reorder_one_in > 0 && held[dir].is_none() && seen[dir] % u64::from(reorder_one_in) == 0 {
                    held[dir] = Some(buf[..n].to_vec());
                    continue;
                }
                send_frame(&socks[1 - dir], &buf[..n], counters);
                if let Some(frame) = held[dir].take() {
                    send_frame(&socks[1 - dir], &frame, counters);
                    counters.reordered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Sets a socket's receive buffer to `bytes` (SO_RCVBUFFORCE, which root may
/// use beyond net.core.rmem_max), so a receiver thread that is briefly
/// descheduled on a busy machine does not lose datagrams in its own socket.
pub fn set_rcvbuf(sock: &impl AsRawFd, bytes: i32) {
    let set = |opt| {
        // SAFETY: the fd is open for the duration of the call (borrowed from
        // `sock`), and the option value points to a live i32 of the given size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 {
        assert_eq!(set(libc::SO_RCVBUF), 0, "setsockopt(SO_RCVBUF): {}", std::io::Error::last_os_error());
    }
}

// ---------------------------------------------------------------------------
// Packet crafting (for the ingress-filter tests)

/// The Internet checksum (RFC 1071) of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A complete IPv4/UDP packet with valid header and UDP checksums.
pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = ttl;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = inet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + udp_len);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[20..]);
    let mut uc = inet_checksum(&pseudo);
    if uc == 0 {
        uc = 0xffff;
    }
    p[26..28].copy_from_slice(&uc.to_be_bytes());
    p
}

/// A complete IPv6/UDP packet with a valid UDP checksum.
pub fn ipv6_udp(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, sport: u16, dport: u16, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = vec![0u8; 40 + udp_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = hop_limit;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p[44..46].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    let mut pseudo = Vec::with_capacity(40 + udp_len);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&p[40..]);
    let mut uc = inet_checksum(&pseudo);
    if uc == 0 {
        uc = 0xffff;
    }
    p[46..48].copy_from_slice(&uc.to_be_bytes());
    p
}

/// Recomputes the IPv4 header checksum after editing header fields.
pub fn fix_ipv4_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let ihl = ihl.clamp(20, p.len().min(60));
    p[10] = 0;
    p[11] = 0;
    let c = inet_checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

// ---------------------------------------------------------------------------
// SHA-256 of a stream

/// SHA-256 of a byte stream. Uses the system's `sha256sum` (hardware
/// accelerated, so the hash does not limit a bulk transfer in an unoptimized
/// test build), else the `sha2` crate.
pub struct StreamHash {
    inner: HashInner,
}

enum HashInner {
    Process { child: Child, stdin: Option<std::process::ChildStdin> },
    InProcess(sha2::Sha256),
}

impl StreamHash {
    pub fn new() -> StreamHash {
        let child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn();
        let inner = match child {
            Ok(mut child) => {
                let stdin = child.stdin.take();
                HashInner::Process { child, stdin }
            }
            Err(_) => HashInner::InProcess(sha2::Digest::new()),
        };
        StreamHash { inner }
    }

    pub fn update(&mut self, data: &[u8]) {
        use std::io::Write;
        match &mut self.inner {
            HashInner::Process { stdin, .. } => stdin.as_mut().unwrap().write_all(data).expect("feeding sha256sum"),
            HashInner::InProcess(h) => sha2::Digest::update(h, data),
        }
    }

    /// The digest as lowercase hex.
    pub fn finish(mut self) -> String {
        match &mut self.inner {
            HashInner::Process { child, stdin } => {
                drop(stdin.take());
                let mut out = String::new();
                child.stdout.take().unwrap().read_to_string(&mut out).expect("reading sha256sum");
                let status = wait_child(child, Duration::from_secs(10)).expect("sha256sum did not exit");
                assert!(status.success(), "sha256sum failed: {status}");
                let hex = out.split_whitespace().next().unwrap_or_default().to_owned();
                assert_eq!(hex.len(), 64, "unexpected sha256sum output {out:?}");
                hex
            }
            HashInner::InProcess(h) => {
                let d = sha2::Digest::finalize(std::mem::take(h));
                d.iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }
}

impl Default for StreamHash {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StreamHash {
    fn drop(&mut self) {
        if let HashInner::Process { child, stdin } = &mut self.inner {
            drop(stdin.take());
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random data

/// xorshift64*: cheap, deterministic bytes for bulk transfers.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let log = "noise\nencapd counters:\n  worker 0  egress 0 pkts 0 bytes in 0 sends | ingress 0 pkts 0 bytes in 0 receives | icmp 6 (0 rate-limited) | drops 6 | table v1\n  \
                   total     egress 5 pkts 460 bytes in 4 sends | ingress 3 pkts 300 bytes in 2 receives | icmp 1 (4 rate-limited) | drops 7 | table v1\n  \
                   drops no_route           2\n  drops ttl_expired        5\n  control   tables published 0 | reload failures 3\nmore\n";
        let c = parse_counters(log).unwrap();
        assert_eq!((c.egress_pkts, c.egress_bytes, c.egress_sends), (5, 460, 4));
        assert_eq!((c.ingress_pkts, c.ingress_bytes, c.ingress_receives), (3, 300, 2));
        assert_eq!((c.icmp, c.icmp_rate_limited, c.drops_total, c.table_version), (1, 4, 7, 1));
        assert_eq!(c.drop("no_route"), 2);
        assert_eq!(c.drop("ttl_expired"), 5);
        assert_eq!(c.drop("too_big"), 0);
        assert_eq!(c.reload_failures, 3);
        // An incomplete block (still being written) is not parsed.
        assert!(parse_counters("encapd counters:\n  total     egress 5 pkts").is_none());
    }

    #[test]
    fn stream_hash_is_sha256() {
        let mut h = StreamHash::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let h = StreamHash { inner: HashInner::InProcess(sha2::Digest::new()) };
        assert_eq!(h.finish(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn checksums_verify() {
        let p = ipv4_udp([100, 96, 2, 3], [100, 96, 1, 2], 1000, 7777, 64, b"hello");
        assert_eq!(inet_checksum(&p[..20]), 0);
        assert_eq!(owner_pid("et1a2b_3-nA"), Some(0x1a2b));
        assert_eq!(owner_pid("edf301-nodeA"), None);
        assert_eq!(owner_pid("et1a2b_3-foo"), None);
        assert_eq!(owner_pid("et1a2b_3-md"), Some(0x1a2b));
    }
}
