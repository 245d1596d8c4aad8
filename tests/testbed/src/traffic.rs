//! Test traffic that checks itself end to end: a SHA-256-checksummed one-way
//! TCP transfer ([`tcp_pair`], [`spawn_hashed_transfer`]) and a paced stream
//! of numbered UDP datagrams ([`UdpStream`], [`counted_udp_stream`]) that
//! records when each one arrived and tells lost, duplicated and foreign
//! datagrams apart. Every send and receive is bounded in time.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crate::cmd::wait_for;
use crate::data::{Prng, StreamHash};
use crate::netns::in_netns;

// ---------------------------------------------------------------------------
// Checksummed TCP transfer

/// Connects from namespace `from_ns` to `to` (a listener bound to the
/// unspecified address on `to`'s port in `to_ns`) and returns the two ends
/// `(tx, rx)`: the connecting socket and the accepted one. Connecting and
/// accepting each wait at most 5 s. Both ends get 20 s read (and `tx` write)
/// timeouts, so a stalled transfer fails instead of hanging.
pub fn tcp_pair(from_ns: &str, to_ns: &str, to: SocketAddr) -> (TcpStream, TcpStream) {
    tcp_pairs(from_ns, to_ns, to, 1).pop().expect("one pair")
}

/// [`tcp_pair`] `n` times through one listener, connection by connection
/// (connect() picks each source port, as an application's would).
pub fn tcp_pairs(from_ns: &str, to_ns: &str, to: SocketAddr, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let bind: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, to.port()).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, to.port()).into(),
    };
    let listener = in_netns(to_ns, || TcpListener::bind(bind)).unwrap_or_else(|e| panic!("binding the TCP receiver on {bind}: {e}"));
    listener.set_nonblocking(true).unwrap();
    (0..n)
        .map(|_| {
            let tx = in_netns(from_ns, || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
                .unwrap_or_else(|e| panic!("connecting to {to} through the tunnel: {e}"));
            let rx = wait_for(Duration::from_secs(5), || listener.accept().ok().map(|(s, _)| s)).expect("accepting the connection");
            rx.set_nonblocking(false).unwrap();
            // A stall (not slowness) fails the test instead of hanging it.
            rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            tx.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            tx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            (tx, rx)
        })
        .collect()
}

/// One finished [`spawn_hashed_transfer`]: it was intact when `got == sent`
/// and `got_hash == sent_hash` (the caller asserts what it needs).
#[derive(Debug)]
pub struct Transfer {
    /// Bytes the sender wrote, and their SHA-256 (lowercase hex).
    pub sent: usize,
    pub sent_hash: String,
    /// Bytes the receiver read until EOF, and their SHA-256.
    pub got: usize,
    pub got_hash: String,
    /// When the receiver saw its first byte (`last_byte` if none came) and
    /// when it saw EOF.
    pub first_byte: Instant,
    pub last_byte: Instant,
}

/// The sender and receiver threads of a running [`spawn_hashed_transfer`].
pub struct TransferThreads<'scope> {
    sender: ScopedJoinHandle<'scope, (usize, String)>,
    receiver: ScopedJoinHandle<'scope, (usize, String, Instant, Instant)>,
}

impl TransferThreads<'_> {
    /// Waits for both ends. A panic of either thread (a failed read or
    /// write, the deadline) is re-raised here, the sender's first.
    pub fn join(self) -> Transfer {
        let (sent, sent_hash) = self.sender.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let (got, got_hash, first_byte, last_byte) = self.receiver.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        Transfer { sent, sent_hash, got, got_hash, first_byte, last_byte }
    }
}

/// Streams `total` bytes of `Prng::new(seed)` over one established TCP
/// connection (`tx` writes, `rx` is the accepted end; see [`tcp_pair`]), on two threads of `s`,
/// and hashes what each end saw; [`TransferThreads::join`] returns both.
///
/// The sender writes in 256 KiB chunks, then shuts down its write side and
/// keeps the socket open until the receiver closes; the receiver reads until
/// EOF and closes. Both threads allocate their buffers and hash first, then
/// wait on `ready` (if given) before the first byte, so several transfers can
/// be released together. Read/write timeouts are the sockets' own.
///
/// Either thread panics when a read or write fails, or when `start + limit`
/// has passed before it is done; every message begins with `label` (e.g.
/// `"flow 3: "`, or `""`) and gives the bytes moved so far.
#[allow(clippy::too_many_arguments)] // one transfer's knobs; two call sites
pub fn spawn_hashed_transfer<'scope>(
    s: &'scope Scope<'scope, '_>,
    (mut tx, mut rx): (TcpStream, TcpStream),
    seed: u64,
    total: usize,
    start: Instant,
    limit: Duration,
    label: String,
    ready: Option<&'scope Barrier>,
) -> TransferThreads<'scope> {
    let deadline = start + limit;
    let sender = {
        let label = label.clone();
        s.spawn(move || {
            let mut prng = Prng::new(seed);
            let mut hash = StreamHash::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0usize;
            if let Some(b) = ready {
                b.wait();
            }
            while sent < total {
                assert!(Instant::now() < deadline, "{label}TCP transfer exceeded {limit:?} after {sent} bytes sent");
                let n = buf.len().min(total - sent);
                prng.fill(&mut buf[..n]);
                hash.update(&buf[..n]);
                tx.write_all(&buf[..n]).unwrap_or_else(|e| panic!("{label}TCP send failed after {sent} bytes: {e}"));
                sent += n;
            }
            tx.shutdown(Shutdown::Write).unwrap();
            // Keep the socket open until the receiver is done with it.
            let mut rest = [0u8; 16];
            let _ = tx.read(&mut rest);
            (sent, hash.finish())
        })
    };
    let receiver = s.spawn(move || {
        let mut hash = StreamHash::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let mut first_byte = None;
        if let Some(b) = ready {
            b.wait();
        }
        loop {
            assert!(Instant::now() < deadline, "{label}TCP transfer exceeded {limit:?} after {got} bytes received");
            match rx.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    hash.update(&buf[..n]);
                    got += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{label}TCP receive failed after {got} bytes: {e}"),
            }
        }
        let last_byte = Instant::now();
        drop(rx);
        (got, hash.finish(), first_byte.unwrap_or(last_byte), last_byte)
    });
    TransferThreads { sender, receiver }
}

/// One transfer of `total` bytes of `Prng::new(seed)` from `from_ns` to
/// `to` (listening in `to_ns`) that must finish within `limit`; returns
/// what both ends saw (the caller asserts it was intact).
pub fn hashed_transfer(from_ns: &str, to_ns: &str, to: SocketAddr, seed: u64, total: usize, limit: Duration) -> Transfer {
    let pair = tcp_pair(from_ns, to_ns, to);
    let start = Instant::now();
    std::thread::scope(|s| spawn_hashed_transfer(s, pair, seed, total, start, limit, String::new(), None).join())
}

// ---------------------------------------------------------------------------
// Paced, numbered UDP stream

const STREAM_MAGIC: &[u8; 4] = b"LGIT";
const STREAM_PAYLOAD: usize = 200;

/// Datagram `seq` of a stream: magic, sequence number, then `seq % 251`.
fn stream_payload(seq: u32, buf: &mut [u8; STREAM_PAYLOAD]) {
    buf[..4].copy_from_slice(STREAM_MAGIC);
    buf[4..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..].fill((seq % 251) as u8);
}

/// The sequence number of an intact stream datagram; `None` for anything
/// else (another sender's datagram, or a corrupted one).
fn is_stream_payload(p: &[u8]) -> Option<u32> {
    if p.len() != STREAM_PAYLOAD || &p[..4] != STREAM_MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes(p[4..8].try_into().unwrap());
    p[8..].iter().all(|&b| b == (seq % 251) as u8).then_some(seq)
}

#[derive(Default)]
struct StreamShared {
    /// (sequence number, arrival time) of every stream datagram received.
    arrivals: Mutex<Vec<(u32, Instant)>>,
    /// Datagrams at the stream's port that are not intact stream datagrams.
    foreign: AtomicU64,
    /// Sequence numbers handed to the kernel so far (= the next one).
    sent: AtomicU32,
    send_errors: AtomicU64,
    stop_tx: AtomicBool,
    stop_rx: AtomicBool,
}

/// A running stream: numbered 200-byte datagrams from `from` (port chosen
/// by the kernel, in `from_ns`) to `to` (bound in `to_ns`), paced at
/// `rate` per second until stopped or `max` were sent, with the arrival
/// time of each one recorded. The receiving socket gets a 16 MiB buffer:
/// on a loaded 2-core machine its thread may be descheduled for a while,
/// and the tests measure encapd, not that. Both threads stop on drop.
pub struct UdpStream {
    shared: Arc<StreamShared>,
    max: u32,
    tx: Option<JoinHandle<()>>,
    rx: Option<JoinHandle<()>>,
}

/// What a finished [`UdpStream`] saw.
#[derive(Debug)]
pub struct StreamResult {
    /// Datagrams handed to the kernel (a refused send counts here and in
    /// `send_errors`).
    pub sent: u32,
    /// Distinct sequence numbers that arrived intact.
    pub unique: u32,
    /// Repeated or out-of-range sequence numbers.
    pub dups: u32,
    /// Datagrams at the stream's port that were not intact stream datagrams.
    pub foreign: u64,
    pub send_errors: u64,
    /// (sequence number, arrival time) of every stream datagram, in order of arrival.
    pub arrivals: Vec<(u32, Instant)>,
}

impl StreamResult {
    pub fn lost(&self) -> u32 {
        self.sent - self.unique
    }

    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { 100.0 * f64::from(self.lost()) / f64::from(self.sent) }
    }
}

impl UdpStream {
    /// Starts the receiver and the sender (see the type's docs).
    pub fn start(from_ns: &str, from: IpAddr, to_ns: &str, to: SocketAddr, rate: u32, max: u32) -> UdpStream {
        let receiver = in_netns(to_ns, || UdpSocket::bind(to)).unwrap_or_else(|e| panic!("binding the stream receiver {to}: {e}"));
        set_rcvbuf(&receiver, 16 << 20);
        receiver.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let sender = in_netns(from_ns, || UdpSocket::bind((from, 0))).unwrap_or_else(|e| panic!("binding the stream sender {from}: {e}"));
        let shared = Arc::new(StreamShared::default());
        let rx = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || receive_stream(&receiver, &shared))
        };
        let tx = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || send_stream(&sender, to, rate, max, &shared))
        };
        UdpStream { shared, max, tx: Some(tx), rx: Some(rx) }
    }

    /// Datagrams sent so far (= the sequence number of the next one).
    pub fn sent(&self) -> u32 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Stream datagrams received so far (duplicates included).
    pub fn received(&self) -> usize {
        self.shared.arrivals.lock().unwrap().len()
    }

    /// The earliest arrival of a datagram numbered `seq` or later.
    pub fn first_arrival_from(&self, seq: u32) -> Option<Instant> {
        self.shared.arrivals.lock().unwrap().iter().filter(|&&(s, _)| s >= seq).map(|&(_, t)| t).min()
    }

    /// The latest arrival of a datagram numbered below `seq`.
    pub fn last_arrival_before(&self, seq: u32) -> Option<Instant> {
        self.shared.arrivals.lock().unwrap().iter().filter(|&&(s, _)| s < seq).map(|&(_, t)| t).max()
    }

    /// Waits until the stream is flowing (`n` datagrams arrived).
    pub fn wait_flowing(&self, n: usize, timeout: Duration) -> bool {
        wait_for(timeout, || (self.received() >= n).then_some(())).is_some()
    }

    /// Stops sending now, lets the last datagrams arrive (see
    /// [`complete`](Self::complete)), and reports.
    pub fn finish(mut self) -> StreamResult {
        self.shared.stop_tx.store(true, Ordering::Relaxed);
        self.join_sender();
        self.settle_and_report()
    }

    /// Lets the sender send all `max` datagrams, then reports like
    /// [`finish`](Self::finish).
    pub fn complete(mut self) -> StreamResult {
        self.join_sender();
        self.settle_and_report()
    }

    fn join_sender(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    }

    fn settle_and_report(mut self) -> StreamResult {
        // Everything there, or quiet for 1 s (at most 5 s): what was in
        // flight has landed, even if the receiving thread was descheduled
        // for a while on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.received();
        while last < self.sent() as usize && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.received();
            if now == last {
                break;
            }
            last = now;
        }
        self.shared.stop_rx.store(true, Ordering::Relaxed);
        if let Some(rx) = self.rx.take() {
            rx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        let sent = self.sent();
        debug_assert!(sent <= self.max);
        let arrivals = std::mem::take(&mut *self.shared.arrivals.lock().unwrap());
        let mut seen = vec![false; sent as usize];
        let (mut unique, mut dups) = (0u32, 0u32);
        for &(seq, _) in &arrivals {
            match seen.get_mut(seq as usize) {
                Some(s) if !*s => {
                    *s = true;
                    unique += 1;
                }
                _ => dups += 1,
            }
        }
        StreamResult {
            sent,
            unique,
            dups,
            foreign: self.shared.foreign.load(Ordering::Relaxed),
            send_errors: self.shared.send_errors.load(Ordering::Relaxed),
            arrivals,
        }
    }
}

impl Drop for UdpStream {
    fn drop(&mut self) {
        self.shared.stop_tx.store(true, Ordering::Relaxed);
        self.shared.stop_rx.store(true, Ordering::Relaxed);
        if let Some(tx) = self.tx.take() {
            let _ = tx.join();
        }
        if let Some(rx) = self.rx.take() {
            let _ = rx.join();
        }
    }
}

fn send_stream(sender: &UdpSocket, to: SocketAddr, rate: u32, max: u32, shared: &StreamShared) {
    let start = Instant::now();
    let mut payload = [0u8; STREAM_PAYLOAD];
    for seq in 0..max {
        if shared.stop_tx.load(Ordering::Relaxed) {
            break;
        }
        let due = start + Duration::from_secs_f64(f64::from(seq) / f64::from(rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream_payload(seq, &mut payload);
        if sender.send_to(&payload, to).is_err() {
            shared.send_errors.fetch_add(1, Ordering::Relaxed);
        }
        shared.sent.store(seq + 1, Ordering::Relaxed);
    }
}

fn receive_stream(receiver: &UdpSocket, shared: &StreamShared) {
    let mut buf = [0u8; 2048];
    while !shared.stop_rx.load(Ordering::Relaxed) {
        match receiver.recv(&mut buf) {
            Ok(n) => match is_stream_payload(&buf[..n]) {
                Some(seq) => shared.arrivals.lock().unwrap().push((seq, Instant::now())),
                None => {
                    shared.foreign.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => panic!("stream receive: {e}"),
        }
    }
}

/// Sends `count` stream datagrams from `from` (in `from_ns`) to `to` (in
/// `to_ns`) at `rate` per second while `during` runs on the calling
/// thread; returns once all were sent and have arrived (or nothing came
/// for 1 s).
pub fn counted_udp_stream(
    from_ns: &str,
    from: IpAddr,
    to_ns: &str,
    to: SocketAddr,
    count: u32,
    rate: u32,
    during: impl FnOnce(),
) -> StreamResult {
    let stream = UdpStream::start(from_ns, from, to_ns, to, rate, count);
    during();
    stream.complete()
}

/// Sends `count` UDP datagrams of exactly `size` payload bytes (at least 4:
/// a sequence number, then a pattern derived from it) from `from` in
/// `from_ns` to `to` in `to_ns`, at about `rate` per second, and returns how
/// many distinct ones arrived whole and unchanged (waiting until nothing
/// came for 0.5 s): datagram sizes that a tunnel must carry without
/// truncating, padding or reordering bytes.
pub fn sized_udp_delivered(from_ns: &str, from: IpAddr, to_ns: &str, to: SocketAddr, size: usize, count: u32, rate: u32) -> u32 {
    assert!(size >= 4, "a sized datagram carries a 4-byte sequence number");
    let rx = in_netns(to_ns, || UdpSocket::bind(to)).unwrap_or_else(|e| panic!("binding {to} in {to_ns}: {e}"));
    set_rcvbuf(&rx, 8 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(500))).expect("a read timeout");
    let tx = in_netns(from_ns, || UdpSocket::bind((from, 0))).unwrap_or_else(|e| panic!("binding {from} in {from_ns}: {e}"));
    let pattern = |seq: u32| (seq % 251) as u8;
    let gap = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    for seq in 0..count {
        let mut payload = vec![pattern(seq); size];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        tx.send_to(&payload, to).unwrap_or_else(|e| panic!("sending to {to}: {e}"));
        if let Some(wait) = (start + gap * (seq + 1)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let mut got = std::collections::BTreeSet::new();
    let mut buf = vec![0u8; size + 1];
    while let Ok(n) = rx.recv(&mut buf) {
        let seq = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
        if n == size && buf[4..n].iter().all(|&b| b == pattern(seq)) {
            got.insert(seq);
        }
    }
    got.len() as u32
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
