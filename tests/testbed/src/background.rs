//! Background traffic between a fleet's pods that counts every datagram
//! and checks every byte, while something else happens to the fleet (a
//! rolling upgrade): counted UDP streams at a fixed rate, and a few
//! rate-limited TCP transfers with SHA-256 on both ends and their longest
//! receive gap. It runs until [`Background::finish`]; the report says
//! every datagram lost, duplicated or reordered.
//!
//! Threads: one sender for all UDP streams (a 5 ms tick; its own longest
//! stall is reported, so that a gap caused by the harness being descheduled
//! on a busy machine is not blamed on encapd), one receiver per pod, and a
//! sender and a receiver per TCP transfer. Sockets are created inside the
//! pods' namespaces; every thread is joined by `finish` (or on drop).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::netns::in_netns;
use crate::stats::ms;
use crate::traffic::{set_rcvbuf, tcp_pair};

const UDP_PORT: u16 = 5300;
const TCP_PORT: u16 = 5400;
/// stream id (u16) and sequence number (u32), big-endian, then padding.
const HEADER: usize = 6;
const TICK: Duration = Duration::from_millis(5);
/// After the senders stop: how long datagrams in flight may take.
const DRAIN: Duration = Duration::from_secs(2);

/// What [`Background::start`] sends.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundOptions {
    /// UDP streams sent by every pod.
    pub streams: usize,
    /// Datagrams per second per stream.
    pub udp_rate: u32,
    /// Datagram size (payload bytes).
    pub size: usize,
    /// TCP transfers (between pods half the fleet apart).
    pub tcp: usize,
    /// Bytes per second per TCP transfer.
    pub tcp_rate: u64,
    /// The senders stop by themselves after this long.
    pub max_duration: Duration,
}

/// What the traffic saw; [`ok`](Self::ok) when nothing was lost and every
/// transfer arrived intact.
#[derive(Debug, Clone, Default)]
pub struct BackgroundReport {
    pub seconds: f64,
    pub udp_streams: usize,
    pub udp_rate: u32,
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_lost: u64,
    pub udp_dups: u64,
    pub udp_reordered: u64,
    pub udp_send_errors: u64,
    pub tcp_transfers: usize,
    pub tcp_ok: usize,
    pub tcp_bytes: u64,
    pub tcp_max_gap_ms: f64,
    pub tcp_retransmitted_segments: u64,
    pub harness_max_stall_ms: f64,
}

impl BackgroundReport {
    pub fn ok(&self) -> bool {
        self.udp_lost == 0 && self.tcp_ok == self.tcp_transfers
    }

    /// `PREFIX_key=value` figures, in a fixed order.
    pub fn figures(&self, prefix: &str) -> Vec<(String, String)> {
        let f = |k: &str, v: String| (format!("{prefix}_{k}"), v);
        vec![
            f("seconds", format!("{:.1}", self.seconds)),
            f("udp_streams", self.udp_streams.to_string()),
            f("udp_rate", self.udp_rate.to_string()),
            f("udp_sent", self.udp_sent.to_string()),
            f("udp_received", self.udp_received.to_string()),
            f("udp_lost", self.udp_lost.to_string()),
            f("udp_dups", self.udp_dups.to_string()),
            f("udp_reordered", self.udp_reordered.to_string()),
            f("udp_send_errors", self.udp_send_errors.to_string()),
            f("tcp_transfers", self.tcp_transfers.to_string()),
            f("tcp_ok", self.tcp_ok.to_string()),
            f("tcp_bytes", self.tcp_bytes.to_string()),
            f("tcp_max_gap_ms", format!("{:.1}", self.tcp_max_gap_ms)),
            f("tcp_retransmitted_segments", self.tcp_retransmitted_segments.to_string()),
            f("harness_max_stall_ms", format!("{:.1}", self.harness_max_stall_ms)),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    src: usize,
    dst: usize,
}

/// Per stream at the receiver.
#[derive(Debug, Default)]
struct Received {
    seen: Vec<bool>,
    received: u64,
    dups: u64,
    reordered: u64,
    highest: Option<u32>,
}

struct UdpSent {
    sent: Vec<u64>,
    errors: Vec<u64>,
    stall: Duration,
    seconds: f64,
}

struct TcpSide {
    bytes: u64,
    hash: [u8; 32],
    max_gap: Duration,
    error: String,
}

/// Running traffic; see the module documentation.
pub struct Background {
    pods: Vec<(String, Ipv4Addr)>,
    streams: Vec<Stream>,
    tcp_ends: Vec<(usize, usize)>,
    opts: BackgroundOptions,
    stop: Arc<AtomicBool>,
    rx_stop: Arc<AtomicBool>,
    udp_sender: Option<JoinHandle<UdpSent>>,
    udp_receivers: Vec<JoinHandle<HashMap<u16, Received>>>,
    tcp: Vec<(JoinHandle<TcpSide>, JoinHandle<TcpSide>)>,
    retrans_before: Vec<u64>,
}

/// The stream offsets: pod i sends to pods i + offset, spread over the fleet.
fn offsets(n: usize, streams: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for k in 0..streams {
        let off = (1 + k * (n / streams.max(1)).max(1)) % n;
        if off != 0 && !out.contains(&off) {
            out.push(off);
        }
    }
    out
}

/// (source, destination) of the TCP transfers: pods half the fleet apart.
fn tcp_ends(n: usize, tcp: usize) -> Vec<(usize, usize)> {
    (0..tcp.min(n))
        .map(|k| {
            let src = k * n / tcp.max(1);
            let dst = (src + n / 2 + k) % n;
            (src, if dst == src { (src + 1) % n } else { dst })
        })
        .collect()
}

/// Tcp RetransSegs of namespace `ns` (`/proc/thread-self/net` is the
/// reading thread's namespace).
fn retransmitted(ns: &str) -> u64 {
    in_netns(ns, || {
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
        let rows: Vec<Vec<&str>> = text.lines().filter(|l| l.starts_with("Tcp:")).map(|l| l.split_whitespace().collect()).collect();
        let col = rows.first().and_then(|h| h.iter().position(|&c| c == "RetransSegs"));
        col.and_then(|c| rows.get(1)?.get(c)?.parse().ok()).unwrap_or(0)
    })
}

/// 64 KiB of deterministic data the TCP senders repeat.
fn block() -> Arc<Vec<u8>> {
    let d = Sha256::digest(b"encapd");
    Arc::new(d.iter().copied().cycle().take(64 << 10).collect())
}

impl Background {
    /// Starts the traffic between `pods` (namespace, address).
    pub fn start(pods: &[(String, Ipv4Addr)], opts: BackgroundOptions) -> Background {
        let n = pods.len();
        assert!(n >= 2, "traffic needs two pods");
        let offs = offsets(n, opts.streams);
        let streams: Vec<Stream> = (0..n).flat_map(|i| offs.iter().map(move |off| Stream { src: i, dst: (i + off) % n })).collect();
        assert!(streams.len() <= usize::from(u16::MAX), "too many streams");
        let stop = Arc::new(AtomicBool::new(false));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let socks: Vec<UdpSocket> = pods
            .iter()
            .map(|(ns, ip)| {
                let s = in_netns(ns, || UdpSocket::bind((*ip, UDP_PORT))).unwrap_or_else(|e| panic!("UDP socket in {ns}: {e}"));
                set_rcvbuf(&s, 8 << 20);
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                s
            })
            .collect();
        let udp_receivers = socks
            .iter()
            .map(|s| {
                let (s, rx_stop) = (s.try_clone().expect("dup"), rx_stop.clone());
                std::thread::spawn(move || receive_udp(&s, &rx_stop))
            })
            .collect();
        let tcp_ends = tcp_ends(n, opts.tcp);
        let retrans_before = tcp_ends.iter().map(|&(src, _)| retransmitted(&pods[src].0)).collect();
        let data = block();
        let started = Instant::now();
        let tcp = tcp_ends
            .iter()
            .enumerate()
            .map(|(k, &(src, dst))| {
                let to = SocketAddr::from((pods[dst].1, TCP_PORT + k as u16));
                let (tx, rx) = tcp_pair(&pods[src].0, &pods[dst].0, to);
                let (stop_tx, done_rx) = (stop.clone(), stop.clone());
                let (data, rate) = (data.clone(), opts.tcp_rate);
                let max = opts.max_duration;
                let sender = std::thread::spawn(move || send_tcp(tx, &data, rate, started, max, &stop_tx));
                let receiver = std::thread::spawn(move || receive_tcp(rx, &done_rx));
                (sender, receiver)
            })
            .collect();
        let addrs: Vec<SocketAddr> = pods.iter().map(|(_, ip)| SocketAddr::from((*ip, UDP_PORT))).collect();
        let (stop_udp, list) = (stop.clone(), streams.clone());
        let (rate, size, max) = (opts.udp_rate, opts.size.max(HEADER), opts.max_duration);
        let udp_sender = Some(std::thread::spawn(move || send_udp(&socks, &addrs, &list, rate, size, started, max, &stop_udp)));
        eprintln!(
            "traffic: {} UDP streams of {}/s ({} B), {} TCP transfers of {} B/s; until stopped or {:?}",
            streams.len(),
            opts.udp_rate,
            size,
            tcp_ends.len(),
            opts.tcp_rate,
            opts.max_duration
        );
        Background { pods: pods.to_vec(), streams, tcp_ends, opts, stop, rx_stop, udp_sender, udp_receivers, tcp, retrans_before }
    }

    /// Stops the senders, lets what is in flight arrive, and reports.
    pub fn finish(mut self) -> BackgroundReport {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.udp_sender.take().expect("finished once").join().expect("the UDP sender panicked");
        std::thread::sleep(DRAIN);
        self.rx_stop.store(true, Ordering::SeqCst);
        let mut by_stream: HashMap<u16, Received> = HashMap::new();
        for h in self.udp_receivers.drain(..) {
            by_stream.extend(h.join().expect("a UDP receiver panicked"));
        }
        let mut r = BackgroundReport {
            seconds: sent.seconds,
            udp_streams: self.streams.len(),
            udp_rate: self.opts.udp_rate,
            tcp_transfers: self.tcp_ends.len(),
            harness_max_stall_ms: ms(sent.stall),
            ..BackgroundReport::default()
        };
        for (sid, st) in self.streams.iter().enumerate() {
            let got = by_stream.remove(&(sid as u16)).unwrap_or_default();
            let (s, errs) = (sent.sent[sid], sent.errors[sid]);
            r.udp_sent += s;
            r.udp_received += got.received;
            r.udp_lost += s.saturating_sub(got.received);
            r.udp_dups += got.dups;
            r.udp_reordered += got.reordered;
            r.udp_send_errors += errs;
            if got.received != s || errs > 0 {
                let missing: Vec<u64> = (0..s).filter(|&q| !got.seen.get(q as usize).copied().unwrap_or(false)).take(10).collect();
                eprintln!(
                    "traffic: stream {sid} {} -> {}: sent {s} received {} send errors {errs}; first missing {missing:?}",
                    self.pods[st.src].0, self.pods[st.dst].0, got.received
                );
            }
        }
        for (k, (sender, receiver)) in self.tcp.drain(..).enumerate() {
            let tx = sender.join().expect("a TCP sender panicked");
            let rx = receiver.join().expect("a TCP receiver panicked");
            let ok = tx.error.is_empty() && rx.error.is_empty() && tx.bytes > 0 && tx.bytes == rx.bytes && tx.hash == rx.hash;
            let (src, dst) = self.tcp_ends[k];
            eprintln!(
                "traffic: tcp {k} {} -> {}: sent {} received {} sha256 {} longest gap {:.1} ms {}{}",
                self.pods[src].0,
                self.pods[dst].0,
                tx.bytes,
                rx.bytes,
                if ok { "match" } else { "MISMATCH" },
                ms(rx.max_gap),
                tx.error,
                rx.error
            );
            r.tcp_ok += usize::from(ok);
            r.tcp_bytes += rx.bytes;
            r.tcp_max_gap_ms = r.tcp_max_gap_ms.max(ms(rx.max_gap));
        }
        r.tcp_retransmitted_segments =
            self.tcp_ends.iter().zip(&self.retrans_before).map(|(&(src, _), b)| retransmitted(&self.pods[src].0).saturating_sub(*b)).sum();
        r
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rx_stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.udp_sender.take() {
            let _ = h.join();
        }
        for h in self.udp_receivers.drain(..) {
            let _ = h.join();
        }
        for (a, b) in self.tcp.drain(..) {
            let _ = (a.join(), b.join());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn send_udp(
    socks: &[UdpSocket],
    addrs: &[SocketAddr],
    streams: &[Stream],
    rate: u32,
    size: usize,
    started: Instant,
    max: Duration,
    stop: &AtomicBool,
) -> UdpSent {
    let mut sent = vec![0u64; streams.len()];
    let mut errors = vec![0u64; streams.len()];
    let mut payload = vec![0xa5u8; size];
    let mut last = Instant::now();
    let mut stall = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < max {
        let now = Instant::now();
        let gap = now - last;
        if gap > Duration::from_millis(100) {
            eprintln!("traffic: harness stalled {:.0} ms at {:.2} s", ms(gap), started.elapsed().as_secs_f64());
        }
        stall = stall.max(gap);
        last = now;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        for (sid, st) in streams.iter().enumerate() {
            let mut burst = 0;
            while sent[sid] < due && burst < 200 {
                payload[..2].copy_from_slice(&(sid as u16).to_be_bytes());
                payload[2..HEADER].copy_from_slice(&(sent[sid] as u32).to_be_bytes());
                if socks[st.src].send_to(&payload, addrs[st.dst]).is_err() {
                    errors[sid] += 1;
                    break;
                }
                sent[sid] += 1;
                burst += 1;
            }
        }
        std::thread::sleep(TICK);
    }
    UdpSent { sent, errors, stall, seconds: started.elapsed().as_secs_f64() }
}

fn receive_udp(sock: &UdpSocket, stop: &AtomicBool) -> HashMap<u16, Received> {
    let mut by_stream: HashMap<u16, Received> = HashMap::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => continue,
            Err(e) => panic!("receiving the counted UDP streams: {e}"),
        };
        if n < HEADER {
            continue;
        }
        let sid = u16::from_be_bytes([buf[0], buf[1]]);
        let seq = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
        let r = by_stream.entry(sid).or_default();
        let i = seq as usize;
        if i >= r.seen.len() {
            r.seen.resize(i + 4096, false);
        }
        if r.seen[i] {
            r.dups += 1;
            continue;
        }
        r.seen[i] = true;
        r.received += 1;
        match r.highest {
            Some(h) if seq < h => r.reordered += 1,
            _ => r.highest = Some(seq),
        }
    }
    by_stream
}

fn send_tcp(mut tx: std::net::TcpStream, data: &[u8], rate: u64, started: Instant, max: Duration, stop: &AtomicBool) -> TcpSide {
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut error = String::new();
    // Short write timeouts, so that the stop flag is seen while the
    // network stalls; a timed-out write may still have written part.
    let _ = tx.set_write_timeout(Some(Duration::from_millis(200)));
    while !stop.load(Ordering::SeqCst) && started.elapsed() < max {
        let want = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while bytes < want && !stop.load(Ordering::SeqCst) {
            let off = (bytes % data.len() as u64) as usize;
            let len = (want - bytes).min((data.len() - off) as u64) as usize;
            match tx.write(&data[off..off + len]) {
                Ok(k) => {
                    hash.update(&data[off..off + k]);
                    bytes += k as u64;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => break,
                Err(e) => {
                    error = format!("send: {e}");
                    break;
                }
            }
        }
        if !error.is_empty() {
            break;
        }
        std::thread::sleep(TICK);
    }
    if let Err(e) = tx.shutdown(Shutdown::Write)
        && error.is_empty()
    {
        error = format!("shutdown: {e}");
    }
    TcpSide { bytes, hash: hash.finalize().into(), max_gap: Duration::ZERO, error }
}

fn receive_tcp(mut rx: std::net::TcpStream, sender_done: &AtomicBool) -> TcpSide {
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut max_gap = Duration::ZERO;
    let mut last: Option<Instant> = None;
    let mut error = String::new();
    let mut stopped_at: Option<Instant> = None;
    let _ = rx.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if sender_done.load(Ordering::SeqCst) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            if at.elapsed() > DRAIN + Duration::from_secs(20) {
                error = "no end of stream within 22 s of the stop".into();
                break;
            }
        }
        match rx.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let now = Instant::now();
                if let Some(l) = last
                    && !sender_done.load(Ordering::SeqCst)
                {
                    max_gap = max_gap.max(now - l);
                }
                last = Some(now);
                hash.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => {
                error = format!("receive: {e}");
                break;
            }
        }
    }
    TcpSide { bytes, hash: hash.finalize().into(), max_gap, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_transfers_spread_over_the_fleet() {
        assert_eq!(offsets(16, 2), vec![1, 9]);
        assert_eq!(offsets(2, 2), vec![1]);
        assert_eq!(tcp_ends(16, 3), vec![(0, 8), (5, 14), (10, 4)]);
        assert_eq!(tcp_ends(2, 3), vec![(0, 1), (0, 1)]);
    }
}
