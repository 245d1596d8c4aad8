//! `encapd-bench`: the measurement tools behind `bench/run.sh`.
//!
//! - `encapd-bench latency server --bind ADDR:PORT [--hold-ms N]`: UDP echo
//!   responder; `--hold-ms` delays every reply by N ms without holding up
//!   other requests (a known delay, for testing the client).
//! - `encapd-bench latency client --target ADDR:PORT --rate PPS --duration SECS`:
//!   open-loop UDP request/response latency probe. Requests go out on a
//!   fixed schedule from one thread whatever the replies do; a second thread
//!   receives. RTT = receive time − *intended* send time, so a stall delays
//!   every request scheduled during it and shows up in the distribution
//!   (no coordinated omission). Writes `PREFIX.hgrm` (HdrHistogram
//!   percentile distribution, µs) and `PREFIX.json`.
//! - `encapd-bench report DIR`: render `DIR/report.md` and its charts
//!   (the same code as `encapd report DIR`).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use encapd::report;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "encapd-bench", version, about = "Measurement tools for encapd benchmarks: latency probe and reports")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop UDP request/response latency probe.
    Latency {
        #[command(subcommand)]
        role: Role,
    },
    /// Render DIR/report.md and its SVG charts from a bench/run.sh run directory.
    Report {
        /// The run directory (holds results.csv).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Echo every request back to its sender.
    Server {
        /// Address to bind, e.g. 100.96.2.3:7000 (port 0: any; the bound address is printed).
        #[arg(long, value_name = "ADDR:PORT")]
        bind: SocketAddr,
        /// Delay every reply by this many milliseconds (other requests are not held up).
        #[arg(long, value_name = "N", default_value_t = 0)]
        hold_ms: u64,
        /// Exit after this many seconds (default: run until killed).
        #[arg(long, value_name = "SECS")]
        exit_after: Option<f64>,
    },
    /// Send requests at a fixed rate and record round-trip times.
    Client {
        /// The server's address.
        #[arg(long, value_name = "ADDR:PORT")]
        target: SocketAddr,
        /// Requests per second (the offered rate; requests are not held back by late replies).
        #[arg(long, value_name = "PPS")]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, value_name = "SECS")]
        duration: f64,
        /// UDP payload bytes per request (at least 24).
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        size: usize,
        /// Write PREFIX.hgrm and PREFIX.json.
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
        /// Print the JSON summary on stdout (default: one human-readable line).
        #[arg(long)]
        json: bool,
        /// Seconds after the last request during which replies still count.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        grace: f64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Latency { role: Role::Server { bind, hold_ms, exit_after } } => server(bind, hold_ms, exit_after),
        Command::Latency { role: Role::Client { target, rate, duration, size, out, json, grace } } => {
            let cfg = ClientConfig { target, rate, duration, size, grace };
            if let Err(e) = cfg.validate() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            client(&cfg, out.as_deref(), json)
        }
        Command::Report { dir } => match report::render(&dir) {
            Ok(summary) => {
                println!("{}", summary.report.display());
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("{e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------
// System tweaks (the only unsafe code here)

/// Nanosecond timer slack, so that the pacing sleeps wake on time (the
/// default slack is 50 µs). Inherited by threads spawned afterwards.
fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no
    // memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
}

/// Large socket buffers (4 MiB; beyond rmem_max/wmem_max when privileged),
/// so that a burst of replies is not dropped before the receiver runs.
fn big_buffers(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        for opt in [force, plain] {
            // SAFETY: the fd is open for the duration of the call and the
            // option value points to a live c_int of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Server

fn server(bind: SocketAddr, hold_ms: u64, exit_after: Option<f64>) -> Result<()> {
    use std::os::fd::AsRawFd;
    precise_timers();
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    big_buffers(&sock);
    let deadline = exit_after.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    println!("listening {}", sock.local_addr()?);
    std::io::stdout().flush()?;

    let hold = Duration::from_millis(hold_ms);
    // With a hold time, replies are queued (in arrival order, which is also
    // due order) to a sender thread.
    let delayed = if hold.is_zero() {
        None
    } else {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
        let out = sock.try_clone()?;
        thread::Builder::new().name("hold".into()).spawn(move || {
            for (due, data, to) in rx {
                sleep_until(due);
                let _ = out.send_to(&data, to);
            }
        })?;
        Some(tx)
    };
    // Batched: one recvmmsg takes whatever has arrived (up to 64), one
    // sendmmsg answers it all, so the responder costs little per request.
    let mut batch = mmsg::Batch::new(64, 65536);
    let fd = sock.as_raw_fd();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("recvmmsg"),
        };
        match &delayed {
            None => batch.reply_all(fd, n),
            Some(tx) => {
                let due = Instant::now() + hold;
                for i in 0..n {
                    let Some(from) = batch.source(i) else { continue };
                    if tx.send((due, batch.datagram(i).to_vec(), from)).is_err() {
                        bail!("reply thread exited");
                    }
                }
            }
        }
    }
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

// ---------------------------------------------------------------------------
// Client

const MAGIC: [u8; 4] = *b"EBLP";
const HEADER: usize = 24; // magic, session, sequence, intended send time (ns)

#[derive(Debug, Clone)]
struct ClientConfig {
    target: SocketAddr,
    rate: f64,
    duration: f64,
    size: usize,
    grace: f64,
}

impl ClientConfig {
    fn validate(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 10_000_000.0) {
            return Err(format!("--rate {}: expected 0 < PPS <= 10000000", self.rate));
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 3600.0) {
            return Err(format!("--duration {}: expected 0 < SECS <= 3600", self.duration));
        }
        if self.size < HEADER || self.size > 65507 {
            return Err(format!("--size {}: expected {HEADER}..=65507 bytes", self.size));
        }
        if !(self.grace.is_finite() && (0.0..=60.0).contains(&self.grace)) {
            return Err(format!("--grace {}: expected 0..=60 seconds", self.grace));
        }
        if self.requests() > 100_000_000 {
            return Err("rate × duration exceeds 100 million requests".into());
        }
        Ok(())
    }

    fn requests(&self) -> u64 {
        ((self.rate * self.duration).round() as u64).max(1)
    }
}

/// The client's result, as written to PREFIX.json and printed with --json.
#[derive(Debug, Serialize)]
struct Summary {
    target: String,
    size: usize,
    duration_s: f64,
    offered_pps: f64,
    achieved_pps: f64,
    sent: u64,
    send_errors: u64,
    received: u64,
    lost: u64,
    loss_pct: f64,
    duplicates: u64,
    count: u64,
    min_us: Option<u64>,
    p50_us: Option<u64>,
    p90_us: Option<u64>,
    p99_us: Option<u64>,
    #[serde(rename = "p99.9_us")]
    p99_9_us: Option<u64>,
    #[serde(rename = "p99.99_us")]
    p99_99_us: Option<u64>,
    max_us: Option<u64>,
    mean_us: Option<f64>,
    stddev_us: Option<f64>,
}

struct Shared {
    start: Instant,
    sent: AtomicU64,
    /// ns after `start` at which the sender finished; u64::MAX while sending.
    done_at: AtomicU64,
    failed: AtomicBool,
}

fn client(cfg: &ClientConfig, out: Option<&Path>, json: bool) -> Result<()> {
    precise_timers();
    let (h, s) = run_client(cfg)?;
    let summary = summarize(cfg, &h, &s);
    if let Some(prefix) = out {
        let hgrm = with_suffix(prefix, "hgrm");
        std::fs::write(&hgrm, report::hgrm::percentile_distribution(&h, report::hgrm::TICKS_PER_HALF_DISTANCE, 1.0))
            .with_context(|| format!("write {}", hgrm.display()))?;
        let js = with_suffix(prefix, "json");
        std::fs::write(&js, serde_json::to_string_pretty(&summary)? + "\n").with_context(|| format!("write {}", js.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let f = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{}: offered {:.0} pps, achieved {:.0} pps, sent {}, received {}, lost {} ({:.3} %); RTT µs p50 {} p90 {} p99 {} p99.9 {} max {}",
            summary.target,
            summary.offered_pps,
            summary.achieved_pps,
            summary.sent,
            summary.received,
            summary.lost,
            summary.loss_pct,
            f(summary.p50_us),
            f(summary.p90_us),
            f(summary.p99_us),
            f(summary.p99_9_us),
            f(summary.max_us)
        );
    }
    Ok(())
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Counters from the receive side.
#[derive(Debug, Default)]
struct Received {
    received: u64,
    duplicates: u64,
    sent: u64,
    send_errors: u64,
    /// Time from start to the last send, plus one interval.
    send_span: Duration,
}

fn run_client(cfg: &ClientConfig) -> Result<(Histogram<u64>, Received)> {
    let bind: SocketAddr = if cfg.target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let sock = UdpSocket::bind(bind).context("bind client socket")?;
    big_buffers(&sock);
    sock.connect(cfg.target).with_context(|| format!("connect {}", cfg.target))?;
    sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    let tx_sock = sock.try_clone()?;
    let n = cfg.requests();
    let session: u32 = {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (t.subsec_nanos() ^ std::process::id().rotate_left(16)) | 1
    };
    let shared = Arc::new(Shared {
        start: Instant::now() + Duration::from_millis(5),
        sent: AtomicU64::new(0),
        done_at: AtomicU64::new(u64::MAX),
        failed: AtomicBool::new(false),
    });

    let sender = {
        let shared = Arc::clone(&shared);
        let size = cfg.size;
        let interval = 1e9 / cfg.rate;
        thread::Builder::new().name("send".into()).spawn(move || -> (u64, Duration) {
            use std::os::fd::AsRawFd;
            // Every request that is due goes out at once (one sendmmsg when
            // the sender fell behind), then the thread sleeps until the next
            // one is due: the schedule never waits for replies.
            let mut batch = mmsg::Batch::new(64, size);
            let fd = tx_sock.as_raw_fd();
            let mut errors = 0u64;
            let mut seq = 0u64;
            let offset = |seq: u64| (seq as f64 * interval) as u64;
            while seq < n {
                sleep_until(shared.start + Duration::from_nanos(offset(seq)));
                let now = shared.start.elapsed().as_nanos() as u64;
                let mut k = 0;
                while seq + (k as u64) < n && k < batch.capacity() && offset(seq + k as u64) <= now {
                    let s = seq + k as u64;
                    let buf = batch.slot_mut(k);
                    buf[0..4].copy_from_slice(&MAGIC);
                    buf[4..8].copy_from_slice(&session.to_le_bytes());
                    buf[8..16].copy_from_slice(&s.to_le_bytes());
                    buf[16..24].copy_from_slice(&offset(s).to_le_bytes());
                    k += 1;
                }
                let k = k.max(1); // the first one is due by construction
                // ECONNREFUSED (an earlier ICMP) and the like: counted, and lost.
                errors += (k - batch.send_connected(fd, k, size)) as u64;
                seq += k as u64;
                shared.sent.store(seq, Ordering::Release);
            }
            let span = shared.start.elapsed() + Duration::from_nanos(interval as u64);
            shared.done_at.store(shared.start.elapsed().as_nanos() as u64, Ordering::Release);
            (errors, span)
        })?
    };

    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("histogram")?;
    let mut got = vec![false; n as usize];
    let mut r = Received::default();
    let mut batch = mmsg::Batch::new(64, cfg.size.max(HEADER));
    let fd = {
        use std::os::fd::AsRawFd;
        sock.as_raw_fd()
    };
    let grace = Duration::from_secs_f64(cfg.grace);
    loop {
        match batch.recv(fd) {
            Ok(count) => {
                let now = Instant::now();
                for i in 0..count {
                    let buf = batch.datagram(i);
                    if buf.len() < HEADER || buf[0..4] != MAGIC || buf[4..8] != session.to_le_bytes() {
                        continue;
                    }
                    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
                    let intended = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
                    let Some(slot) = got.get_mut(seq as usize) else { continue };
                    if *slot {
                        r.duplicates += 1;
                        continue;
                    }
                    *slot = true;
                    r.received += 1;
                    let rtt_ns = now.saturating_duration_since(shared.start + Duration::from_nanos(intended)).as_nanos() as u64;
                    h.saturating_record(rtt_ns.div_ceil(1000).max(1));
                }
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::ConnectionRefused => {}
                _ => {
                    shared.failed.store(true, Ordering::Relaxed);
                    return Err(e).context("recvmmsg");
                }
            },
        }
        let done_at = shared.done_at.load(Ordering::Acquire);
        if done_at != u64::MAX {
            let sent = shared.sent.load(Ordering::Acquire);
            if r.received >= sent || shared.start.elapsed() >= Duration::from_nanos(done_at) + grace {
                break;
            }
        }
    }
    let (errors, span) = sender.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    r.sent = shared.sent.load(Ordering::Acquire);
    r.send_errors = errors;
    r.send_span = span;
    Ok((h, r))
}

fn summarize(cfg: &ClientConfig, h: &Histogram<u64>, r: &Received) -> Summary {
    let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
    let lost = r.sent.saturating_sub(r.received);
    Summary {
        target: cfg.target.to_string(),
        size: cfg.size,
        duration_s: cfg.duration,
        offered_pps: cfg.rate,
        achieved_pps: if r.send_span.is_zero() { 0.0 } else { round3(r.sent as f64 / r.send_span.as_secs_f64()) },
        sent: r.sent,
        send_errors: r.send_errors,
        received: r.received,
        lost,
        loss_pct: if r.sent == 0 { 0.0 } else { round3(100.0 * lost as f64 / r.sent as f64) },
        duplicates: r.duplicates,
        count: h.len(),
        min_us: (!h.is_empty()).then(|| h.min()),
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p99_9_us: q(0.999),
        p99_99_us: q(0.9999),
        max_us: (!h.is_empty()).then(|| h.max()),
        mean_us: (!h.is_empty()).then(|| round3(h.mean())),
        stddev_us: (!h.is_empty()).then(|| round3(h.stdev())),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------
// Batched datagram I/O (recvmmsg/sendmmsg)

mod mmsg {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    /// `n` message slots of `slot` bytes each, with the iovecs, addresses and
    /// headers that point into them. The vectors are allocated once and
    /// never resized, so the pointers stay valid for the batch's lifetime
    /// (moving the struct does not move their heap storage).
    pub struct Batch {
        bufs: Vec<u8>,
        slot: usize,
        iov: Vec<libc::iovec>,
        names: Vec<libc::sockaddr_storage>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl Batch {
        pub fn new(n: usize, slot: usize) -> Batch {
            let mut bufs = vec![0u8; n * slot];
            let mut iov: Vec<libc::iovec> =
                (0..n).map(|i| libc::iovec { iov_base: bufs[i * slot..].as_mut_ptr().cast(), iov_len: slot }).collect();
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            let mut names: Vec<libc::sockaddr_storage> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            let hdrs = (0..n)
                .map(|i| {
                    // SAFETY: mmsghdr is plain old data; all-zero is valid.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    h.msg_hdr.msg_iov = &mut iov[i];
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            Batch { bufs, slot, iov, names, hdrs }
        }

        pub fn capacity(&self) -> usize {
            self.hdrs.len()
        }

        pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
            &mut self.bufs[i * self.slot..(i + 1) * self.slot]
        }

        /// Receives up to `capacity()` datagrams: blocks (up to the socket's
        /// receive timeout) for the first, then takes what is queued.
        pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
            for (i, h) in self.hdrs.iter_mut().enumerate() {
                self.iov[i].iov_len = self.slot;
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at live buffers, iovecs and
            // addresses owned by `self` with the lengths set above; the
            // kernel writes at most that much into each.
            let rc = unsafe {
                libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), self.hdrs.len() as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
            };
            if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
        }

        /// Datagram `i` of the last `recv` (truncated to the slot size).
        pub fn datagram(&self, i: usize) -> &[u8] {
            let len = (self.hdrs[i].msg_len as usize).min(self.slot);
            &self.bufs[i * self.slot..i * self.slot + len]
        }

        /// Source address of datagram `i` of the last `recv`.
        pub fn source(&self, i: usize) -> Option<SocketAddr> {
            let ss = &self.names[i];
            match i32::from(ss.ss_family) {
                libc::AF_INET => {
                    // SAFETY: the family says the storage holds a sockaddr_in,
                    // which is smaller than and aligned like sockaddr_storage.
                    let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
                }
                libc::AF_INET6 => {
                    // SAFETY: as above, for sockaddr_in6.
                    let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                    let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
                }
                _ => None,
            }
        }

        /// Echoes datagrams `0..n` of the last `recv` to their sources
        /// (best effort: a datagram that cannot be sent is skipped).
        pub fn reply_all(&mut self, fd: RawFd, n: usize) {
            for i in 0..n {
                self.iov[i].iov_len = (self.hdrs[i].msg_len as usize).min(self.slot);
            }
            self.send(fd, n);
        }

        /// Sends slots `0..n`, `len` bytes each, on a connected socket;
        /// returns how many went out.
        pub fn send_connected(&mut self, fd: RawFd, n: usize, len: usize) -> usize {
            for i in 0..n {
                self.iov[i].iov_len = len.min(self.slot);
                self.hdrs[i].msg_hdr.msg_namelen = 0;
            }
            self.send(fd, n)
        }

        fn send(&mut self, fd: RawFd, n: usize) -> usize {
            let mut done = 0;
            let mut sent = 0;
            while done < n {
                // SAFETY: headers done..n point at live buffers, iovecs and
                // addresses owned by `self`; the kernel only reads them.
                let rc = unsafe { libc::sendmmsg(fd, self.hdrs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0) };
                if rc > 0 {
                    done += rc as usize;
                    sent += rc as usize;
                } else if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                } else {
                    done += 1; // skip the datagram that failed
                }
            }
            sent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: f64, duration: f64, size: usize) -> ClientConfig {
        ClientConfig { target: "127.0.0.1:9".parse().unwrap(), rate, duration, size, grace: 1.0 }
    }

    #[test]
    fn validation() {
        assert!(cfg(500.0, 2.0, 64).validate().is_ok());
        assert!(cfg(0.0, 2.0, 64).validate().is_err());
        assert!(cfg(500.0, 0.0, 64).validate().is_err());
        assert!(cfg(500.0, 2.0, 23).validate().is_err());
        assert_eq!(cfg(500.0, 2.0, 64).requests(), 1000);
        assert_eq!(cfg(0.1, 2.0, 64).requests(), 1);
    }

    #[test]
    fn summary_counts_loss_and_percentiles() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=100u64 {
            h.record(v).unwrap();
        }
        let r = Received { received: 100, duplicates: 0, sent: 104, send_errors: 0, send_span: Duration::from_millis(208) };
        let s = summarize(&cfg(500.0, 0.2, 64), &h, &r);
        assert_eq!(s.lost, 4);
        assert_eq!(s.p50_us, Some(50));
        assert_eq!(s.p99_us, Some(99));
        assert_eq!(s.max_us, Some(100));
        assert_eq!(s.achieved_pps, 500.0);
        let js = serde_json::to_string(&s).unwrap();
        assert!(js.contains("\"p99.9_us\":100"), "{js}");
    }
}
