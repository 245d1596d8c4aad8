//! Test traffic that checks itself end to end: a SHA-256-checksummed one-way
//! TCP transfer ([`tcp_pair`], [`spawn_hashed_transfer`]) and a paced stream of numbered
//! UDP datagrams ([`counted_udp_stream`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use super::{Prng, StreamHash, in_netns, set_rcvbuf, wait_for};

// ---------------------------------------------------------------------------
// Checksummed TCP transfer

/// Connects from namespace `from_ns` to `to` (a listener bound to the
/// unspecified address on `to`'s port in `to_ns`) and returns the two ends
/// `(tx, rx)`: the connecting socket and the accepted one. Connecting and
/// accepting each wait at most 5 s. Both ends get 20 s read (and `tx` write)
/// timeouts, so a stalled transfer fails instead of hanging.
pub fn tcp_pair(from_ns: &str, to_ns: &str, to: SocketAddr) -> (TcpStream, TcpStream) {
    let bind: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, to.port()).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, to.port()).into(),
    };
    let listener = in_netns(to_ns, || TcpListener::bind(bind)).unwrap_or_else(|e| panic!("binding the TCP receiver on {bind}: {e}"));
    let tx = in_netns(from_ns, || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connecting to {to} through the tunnel: {e}"));
    listener.set_nonblocking(true).unwrap();
    let rx = wait_for(Duration::from_secs(5), || listener.accept().ok().map(|(s, _)| s)).expect("accepting the connection");
    rx.set_nonblocking(false).unwrap();
    // A stall (not slowness) fails the test instead of hanging it.
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tx.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    tx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (tx, rx)
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

// ---------------------------------------------------------------------------
// Paced, numbered UDP stream

/// Sends `count` datagrams of 200 bytes from `from` (port chosen by the
/// kernel, in namespace `from_ns`) to `to` (bound in `to_ns`), paced at
/// `rate` per second, while `during` runs on the calling thread; returns
/// `(sent, received, duplicates)` once the sender is done and the receiver
/// has everything or has heard nothing for 2 s.
///
/// Each datagram carries its sequence number (0..count, 4 bytes big-endian)
/// and then 196 bytes of `seq % 251`. `received` counts distinct sequence
/// numbers; `duplicates` counts repeats and numbers out of range. With
/// `check_payload`, the receiver panics ("datagram N corrupted") on a
/// datagram whose filler bytes differ (re-raised here). The receiving socket
/// gets a 16 MiB buffer: on a loaded 2-core machine its thread may be
/// descheduled for a while, and the tests measure encapd, not that.
#[allow(clippy::too_many_arguments)] // one stream's knobs; two call sites
pub fn counted_udp_stream(
    from_ns: &str,
    from: IpAddr,
    to_ns: &str,
    to: SocketAddr,
    count: u32,
    rate: u32,
    check_payload: bool,
    during: impl FnOnce(),
) -> (u32, u32, u32) {
    let receiver = in_netns(to_ns, || UdpSocket::bind(to).unwrap());
    set_rcvbuf(&receiver, 16 << 20);
    receiver.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sender = in_netns(from_ns, || UdpSocket::bind((from, 0)).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let recv_thread = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut seen = vec![false; count as usize];
            let (mut got, mut dups) = (0u32, 0u32);
            let mut buf = [0u8; 2048];
            let mut quiet_since: Option<Instant> = None;
            loop {
                match receiver.recv(&mut buf) {
                    Ok(n) if n >= 4 => {
                        quiet_since = None;
                        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                        if check_payload {
                            assert!(buf[4..n].iter().all(|&b| b == (seq % 251) as u8), "datagram {seq} corrupted");
                        }
                        if seq < seen.len() && !std::mem::replace(&mut seen[seq], true) {
                            got += 1;
                        } else {
                            dups += 1;
                        }
                    }
                    _ => {
                        if done.load(Ordering::Relaxed) {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if got == count || since.elapsed() > Duration::from_secs(2) {
                                return (got, dups);
                            }
                        }
                    }
                }
            }
        })
    };
    let send_thread = std::thread::spawn(move || {
        let start = Instant::now();
        let mut payload = [0u8; 200];
        for seq in 0..count {
            let due = start + Duration::from_secs_f64(f64::from(seq) / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            payload[..4].copy_from_slice(&seq.to_be_bytes());
            payload[4..].fill((seq % 251) as u8);
            sender.send_to(&payload, to).unwrap();
        }
        count
    });
    during();
    let sent = send_thread.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let (got, dups) = recv_thread.join().unwrap();
    (sent, got, dups)
}
