//! `encapd-bench latency`: an open-loop UDP request/response probe.
//!
//! The client sends requests on a fixed schedule from one thread whatever
//! the replies do, and receives on another. Every request carries its
//! sequence number and its *intended* send time, and RTT = receive time −
//! intended send time: a stall anywhere (sender, path, server, receiver)
//! delays every request scheduled during it, and each of them shows up in
//! the distribution with the time it waited. That is the correction for
//! coordinated omission; `--closed-loop` measures the uncorrected way (one
//! request in flight, timed from its actual send, as ping does), which
//! records a stall once, for comparison.
//!
//! The server echoes in batches; `--hold-ms` delays every reply (a known
//! delay) and `--stall-ms` stops it answering once (a known stall), both
//! for testing the client.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use encapd_bench::report;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::sys::{Batch, big_buffers, precise_timers};

// ---------------------------------------------------------------------------
// Server

/// What the server does besides echoing.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Every reply is delayed by this much (others are not held up).
    pub hold: Duration,
    /// Exit after this long (None: run until killed).
    pub exit_after: Option<Duration>,
    /// Stop reading once, for `.0`, `.1` after the first request arrived:
    /// what arrives meanwhile queues in the socket's receive buffer.
    pub stall: Option<(Duration, Duration)>,
}

/// Replies due later, handed to a thread that sends each on time.
type Delayed = mpsc::Sender<(Instant, Vec<u8>, SocketAddr)>;

pub fn server(cfg: &ServerConfig) -> Result<()> {
    use std::os::fd::AsRawFd;
    precise_timers();
    let sock = UdpSocket::bind(cfg.bind).with_context(|| format!("bind {}", cfg.bind))?;
    big_buffers(&sock);
    let deadline = cfg.exit_after.map(|d| Instant::now() + d);
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    println!("listening {}", sock.local_addr()?);
    std::io::stdout().flush()?;
    let delayed = if cfg.hold.is_zero() { None } else { Some(reply_thread(&sock)?) };
    let mut stall = StallOnce::new(cfg.stall);
    // Batched: one recvmmsg takes whatever has arrived (up to 64), one
    // sendmmsg answers it all, so the responder costs little per request.
    let mut batch = Batch::new(64, 65536);
    let fd = sock.as_raw_fd();
    while deadline.is_none_or(|d| Instant::now() < d) {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e).context("recvmmsg"),
        };
        match &delayed {
            None => batch.reply_all(fd, n),
            Some(tx) => queue_replies(&batch, n, Instant::now() + cfg.hold, tx)?,
        }
        stall.maybe_stall(Instant::now());
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

/// With a hold time, replies are queued (in arrival order, which is also
/// due order) to a sender thread.
fn reply_thread(sock: &UdpSocket) -> Result<Delayed> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
    let out = sock.try_clone()?;
    thread::Builder::new().name("hold".into()).spawn(move || {
        for (due, data, to) in rx {
            sleep_until(due);
            let _ = out.send_to(&data, to);
        }
    })?;
    Ok(tx)
}

fn queue_replies(batch: &Batch, n: usize, due: Instant, tx: &Delayed) -> Result<()> {
    for i in 0..n {
        let Some(from) = batch.source(i) else { continue };
        if tx.send((due, batch.datagram(i).to_vec(), from)).is_err() {
            bail!("reply thread exited");
        }
    }
    Ok(())
}

/// The server's one stall (`--stall-ms`), timed from the first request.
struct StallOnce {
    plan: Option<(Duration, Duration)>,
    first: Option<Instant>,
}

impl StallOnce {
    fn new(plan: Option<(Duration, Duration)>) -> StallOnce {
        StallOnce { plan, first: None }
    }

    /// Called after each batch: sleeps, without reading, once it is time.
    fn maybe_stall(&mut self, now: Instant) {
        let Some((length, after)) = self.plan else { return };
        let first = *self.first.get_or_insert(now);
        if now >= first + after {
            self.plan = None;
            thread::sleep(length);
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
/// Magic, session, sequence number, send time (ns after the start): the
/// intended one, or the actual one with `--closed-loop`.
pub const HEADER: usize = 24;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub target: SocketAddr,
    pub rate: f64,
    pub duration: f64,
    pub size: usize,
    pub grace: f64,
    /// One request in flight, timed from its actual send: the measurement
    /// with coordinated omission, for comparison.
    pub closed_loop: bool,
}

impl ClientConfig {
    pub fn validate(&self) -> Result<(), String> {
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

    /// When request `seq` is due, in ns after the start.
    fn due(&self, seq: u64) -> u64 {
        (seq as f64 * 1e9 / self.rate) as u64
    }
}

/// The client's result, as written to PREFIX.json and printed with --json.
#[derive(Debug, Serialize)]
struct Summary {
    target: String,
    size: usize,
    duration_s: f64,
    /// False with `--closed-loop`.
    coordinated_omission_corrected: bool,
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

pub fn client(cfg: &ClientConfig, out: Option<&Path>, json: bool) -> Result<()> {
    precise_timers();
    let (h, s) = if cfg.closed_loop { run_closed_loop(cfg)? } else { run_open_loop(cfg)? };
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
        print_line(&summary);
    }
    Ok(())
}

fn print_line(summary: &Summary) {
    let f = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "{}: offered {:.0} pps, achieved {:.0} pps, sent {}, received {}, lost {} ({:.3} %); RTT µs p50 {} p90 {} p99 {} p99.9 {} max {}{}",
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
        f(summary.max_us),
        if summary.coordinated_omission_corrected { "" } else { " (closed loop: coordinated omission NOT corrected)" }
    );
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

/// A UDP socket connected to the target, with large buffers and a short
/// receive timeout (so that receivers notice the end of the run).
fn connected_socket(target: SocketAddr) -> Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let sock = UdpSocket::bind(bind).context("bind client socket")?;
    big_buffers(&sock);
    sock.connect(target).with_context(|| format!("connect {target}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    Ok(sock)
}

/// Tells this run's replies from a previous run's stragglers.
fn session_id() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id().rotate_left(16)) | 1
}

fn encode(buf: &mut [u8], session: u32, seq: u64, at_ns: u64) {
    buf[0..4].copy_from_slice(&MAGIC);
    buf[4..8].copy_from_slice(&session.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..24].copy_from_slice(&at_ns.to_le_bytes());
}

/// (sequence number, send time) of one of this session's replies.
fn decode(buf: &[u8], session: u32) -> Option<(u64, u64)> {
    if buf.len() < HEADER || buf[0..4] != MAGIC || buf[4..8] != session.to_le_bytes() {
        return None;
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(buf[r].try_into().expect("8 bytes"));
    Some((word(8..16), word(16..24)))
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("histogram")
}

/// Records one RTT in µs, rounded up.
fn record(h: &mut Histogram<u64>, rtt: Duration) {
    h.saturating_record((rtt.as_nanos() as u64).div_ceil(1000).max(1));
}

/// State the open-loop sender shares with the receiver.
struct Shared {
    start: Instant,
    sent: AtomicU64,
    /// ns after `start` at which the sender finished; u64::MAX while sending.
    done_at: AtomicU64,
    failed: AtomicBool,
}

/// The corrected measurement: a sender thread on the fixed schedule, this
/// thread receiving; RTT from each request's intended send time.
fn run_open_loop(cfg: &ClientConfig) -> Result<(Histogram<u64>, Received)> {
    let sock = connected_socket(cfg.target)?;
    let session = session_id();
    let shared = Arc::new(Shared {
        start: Instant::now() + Duration::from_millis(5),
        sent: AtomicU64::new(0),
        done_at: AtomicU64::new(u64::MAX),
        failed: AtomicBool::new(false),
    });
    let sender = spawn_sender(cfg.clone(), sock.try_clone()?, session, Arc::clone(&shared))?;
    let (h, mut r) = receive_open_loop(cfg, &sock, session, &shared)?;
    let (errors, span) = sender.join().map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    r.sent = shared.sent.load(Ordering::Acquire);
    r.send_errors = errors;
    r.send_span = span;
    Ok((h, r))
}

/// Every request that is due goes out at once (one sendmmsg when the
/// sender fell behind), then the thread sleeps until the next one is due:
/// the schedule never waits for replies. Returns (send errors, send span).
fn spawn_sender(cfg: ClientConfig, sock: UdpSocket, session: u32, shared: Arc<Shared>) -> Result<thread::JoinHandle<(u64, Duration)>> {
    let handle = thread::Builder::new().name("send".into()).spawn(move || {
        use std::os::fd::AsRawFd;
        let n = cfg.requests();
        let mut batch = Batch::new(64, cfg.size);
        let fd = sock.as_raw_fd();
        let (mut errors, mut seq) = (0u64, 0u64);
        while seq < n {
            sleep_until(shared.start + Duration::from_nanos(cfg.due(seq)));
            let now = shared.start.elapsed().as_nanos() as u64;
            let mut k = 0;
            while seq + (k as u64) < n && k < batch.capacity() && cfg.due(seq + k as u64) <= now {
                let s = seq + k as u64;
                encode(batch.slot_mut(k), session, s, cfg.due(s));
                k += 1;
            }
            let k = k.max(1); // the first one is due by construction
            // ECONNREFUSED (an earlier ICMP) and the like: counted, and lost.
            errors += (k - batch.send_connected(fd, k, cfg.size)) as u64;
            seq += k as u64;
            shared.sent.store(seq, Ordering::Release);
            if shared.failed.load(Ordering::Relaxed) {
                break;
            }
        }
        let span = shared.start.elapsed() + Duration::from_nanos(cfg.due(1));
        shared.done_at.store(shared.start.elapsed().as_nanos() as u64, Ordering::Release);
        (errors, span)
    })?;
    Ok(handle)
}

/// Receives until every sent request is answered or the grace time after
/// the last send is over.
fn receive_open_loop(cfg: &ClientConfig, sock: &UdpSocket, session: u32, shared: &Shared) -> Result<(Histogram<u64>, Received)> {
    use std::os::fd::AsRawFd;
    let mut h = new_histogram()?;
    let mut got = vec![false; cfg.requests() as usize];
    let mut r = Received::default();
    let mut batch = Batch::new(64, cfg.size.max(HEADER));
    let grace = Duration::from_secs_f64(cfg.grace);
    loop {
        match batch.recv(sock.as_raw_fd()) {
            Ok(count) => {
                let now = Instant::now();
                for i in 0..count {
                    let Some((seq, intended)) = decode(batch.datagram(i), session) else { continue };
                    let Some(slot) = got.get_mut(seq as usize) else { continue };
                    if std::mem::replace(slot, true) {
                        r.duplicates += 1;
                        continue;
                    }
                    r.received += 1;
                    record(&mut h, now.saturating_duration_since(shared.start + Duration::from_nanos(intended)));
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(e).context("recvmmsg");
            }
        }
        let done_at = shared.done_at.load(Ordering::Acquire);
        if done_at != u64::MAX {
            let sent = shared.sent.load(Ordering::Acquire);
            if r.received >= sent || shared.start.elapsed() >= Duration::from_nanos(done_at) + grace {
                return Ok((h, r));
            }
        }
    }
}

/// The uncorrected measurement, kept to show what the correction is for:
/// one request in flight, sent when it is due (at once when the previous
/// reply came late) and timed from its actual send, as ping or a
/// request/response benchmark does. A stall of the server then delays one
/// request; those that would have been sent meanwhile leave late, and their
/// wait is never measured.
fn run_closed_loop(cfg: &ClientConfig) -> Result<(Histogram<u64>, Received)> {
    let sock = connected_socket(cfg.target)?;
    let session = session_id();
    let grace = Duration::from_secs_f64(cfg.grace);
    let (mut h, mut r) = (new_histogram()?, Received::default());
    let (mut req, mut reply) = (vec![0u8; cfg.size], vec![0u8; 65536]);
    let start = Instant::now();
    for seq in 0..cfg.requests() {
        sleep_until(start + Duration::from_nanos(cfg.due(seq)));
        let sent_at = Instant::now();
        encode(&mut req, session, seq, 0);
        r.sent += 1;
        if sock.send(&req).is_err() {
            r.send_errors += 1;
            continue;
        }
        if await_reply(&sock, &mut reply, session, seq, sent_at + grace)? {
            r.received += 1;
            record(&mut h, sent_at.elapsed());
        }
    }
    r.send_span = start.elapsed();
    Ok((h, r))
}

/// Waits for the reply to `seq` until `deadline`; earlier replies that come
/// late are skipped. True when it came.
fn await_reply(sock: &UdpSocket, buf: &mut [u8], session: u32, seq: u64, deadline: Instant) -> Result<bool> {
    while Instant::now() < deadline {
        match sock.recv(buf) {
            Ok(n) if decode(&buf[..n], session).is_some_and(|(s, _)| s == seq) => return Ok(true),
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e).context("recv"),
        }
    }
    Ok(false)
}

fn summarize(cfg: &ClientConfig, h: &Histogram<u64>, r: &Received) -> Summary {
    let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
    let lost = r.sent.saturating_sub(r.received);
    Summary {
        target: cfg.target.to_string(),
        size: cfg.size,
        duration_s: cfg.duration,
        coordinated_omission_corrected: !cfg.closed_loop,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: f64, duration: f64, size: usize) -> ClientConfig {
        ClientConfig { target: "127.0.0.1:9".parse().unwrap(), rate, duration, size, grace: 1.0, closed_loop: false }
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
