//! WireGuard's per-packet and per-batch costs (criterion). Run:
//! `cargo bench --bench wireguard` (or one group: `-- aead`).
//!
//! - `aead/{ring,rustcrypto}/{seal,open}/N`: ChaCha20-Poly1305 of one
//!   N-byte buffer in place, with each crate — the measurement that chose
//!   `ring` for transport data (src/wireguard/crypto.rs).
//! - `seal_batch/N`, `open_batch/N`: one batch of 64 N-byte packets through
//!   the session API a worker calls: one counter reservation and 64 seals;
//!   64 opens, one replay-window lock and 64 accepts. Throughput in bytes
//!   of packet per second on one core.
//! - `replay/...`: the replay window as two workers share one session:
//!   each thread takes every other batch of 64 counters. `mutex_per_batch`
//!   (what `Session::lock_replay` does), `mutex_per_packet`, and
//!   `atomic_per_packet` (a lock-free bitmap with a CAS per packet, the
//!   alternative; written here, self-checked at start against the real
//!   window). `1thread` variants give the uncontended cost. Time per batch
//!   of 64 counters per thread.
//! - `reserve/...`: the send-counter reservation, per batch, by one and by
//!   two threads: the CAS loop `Session::reserve` uses, and a plain
//!   `fetch_add` for comparison.
//! - `lookup/...`: `Node::lookup` of a receiver index (two `ArcSwap` loads
//!   and two `Arc` clones), by one and by two threads: the per-run cost of
//!   finding a datagram's session.
//! - `handshake/...`: what one handshake message costs the receiver: an
//!   initiation with a bad mac1, a cookie reply under load, a full
//!   initiation → response, a response → session.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use encapd::wireguard::replay::{ReplayWindow, WINDOW};
use encapd::wireguard::session::{HEADROOM, TAILROOM};
use encapd::wireguard::{HandshakeOutcome, Limits, Node, NodeConfig, Peer, PeerConfig, PrivateKey, Session};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

const BATCH: usize = 64;
const SIZES: [usize; 3] = [64, 512, 1400];

fn nonce(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    b
}

fn bench_aead(c: &mut Criterion) {
    let key = [0x42u8; 32];
    let ring_key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
    let rc_key = ChaCha20Poly1305::new(&key.into());
    let mut g = c.benchmark_group("aead");
    for len in SIZES {
        let mut buf = vec![0x17u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("ring/seal", len), |b| {
            b.iter(|| {
                ring_key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce(7)), Aad::empty(), black_box(&mut buf)).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("rustcrypto/seal", len), |b| {
            b.iter(|| rc_key.encrypt_in_place_detached(&nonce(7).into(), b"", black_box(&mut buf)).unwrap())
        });
        // Open: a sealed copy each time (the copy is in both).
        let mut sealed = vec![0x17u8; len];
        let ring_tag = ring_key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce(9)), Aad::empty(), &mut sealed).unwrap();
        let mut rc_sealed = vec![0x17u8; len];
        let rc_tag = rc_key.encrypt_in_place_detached(&nonce(9).into(), b"", &mut rc_sealed).unwrap();
        g.bench_function(BenchmarkId::new("ring/open", len), |b| {
            b.iter(|| {
                buf.copy_from_slice(&sealed);
                ring_key
                    .open_in_place_separate_tag(Nonce::assume_unique_for_key(nonce(9)), Aad::empty(), ring_tag, black_box(&mut buf), 0..)
                    .unwrap();
            })
        });
        g.bench_function(BenchmarkId::new("rustcrypto/open", len), |b| {
            b.iter(|| {
                buf.copy_from_slice(&rc_sealed);
                rc_key.decrypt_in_place_detached(&nonce(9).into(), b"", black_box(&mut buf), &rc_tag).unwrap();
            })
        });
    }
    g.finish();
}

/// Two nodes after a handshake, with (A's session to B, B's session from A).
fn sessions(limits: Limits) -> (Arc<Session>, Arc<Session>, Instant) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let now = Instant::now();
    let node = |rng: &mut ChaCha20Rng| {
        Node::new(NodeConfig { private_key: PrivateKey::generate(rng), limits, padding_mtu: 1420 }, now, SystemTime::now())
    };
    let (a, b) = (node(&mut rng), node(&mut rng));
    let b_at_a = a.add_peer(PeerConfig::new(*b.public_key()), &mut rng).unwrap();
    let a_at_b = b.add_peer(PeerConfig::new(*a.public_key()), &mut rng).unwrap();
    let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let init = a.send_initiation(&b_at_a, now, &mut rng).unwrap();
    let HandshakeOutcome::Response { message, .. } = b.handle_handshake(&init, src, now, &mut rng).unwrap() else { panic!() };
    let HandshakeOutcome::Established { .. } = a.handle_handshake(&message, src, now, &mut rng).unwrap() else { panic!() };
    let send = Arc::clone(b_at_a.keys().current.as_ref().unwrap());
    let recv = Arc::clone(a_at_b.keys().next.as_ref().unwrap());
    (send, recv, now)
}

fn bench_batches(c: &mut Criterion) {
    // The counter moves by 64 per iteration: make sure no limit is hit.
    let (send, recv, now) = sessions(Limits::default());
    for len in SIZES {
        let stride = HEADROOM + len + TAILROOM;
        let mut buf = vec![0u8; BATCH * stride];
        let mut g = c.benchmark_group("seal_batch");
        g.throughput(Throughput::Bytes((BATCH * len) as u64));
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                let mut batch = send.reserve(BATCH, now).unwrap();
                for slot in buf.chunks_exact_mut(stride) {
                    black_box(batch.seal(slot, len).unwrap());
                }
            })
        });
        g.finish();

        // Open: 64 sealed datagrams, restored before each batch; a fresh
        // receiving window each time would cost a lock too, so the counters
        // are re-sealed far ahead instead: the window slides, as in a stream.
        let mut sealed = vec![0u8; BATCH * stride];
        let mut lens = vec![0usize; BATCH];
        let mut g = c.benchmark_group("open_batch");
        g.throughput(Throughput::Bytes((BATCH * len) as u64));
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut batch = send.reserve(BATCH, now).unwrap();
                    for (slot, n) in sealed.chunks_exact_mut(stride).zip(lens.iter_mut()) {
                        *n = batch.seal(slot, len).unwrap();
                    }
                    buf.copy_from_slice(&sealed);
                    let start = Instant::now();
                    let mut counters = [0u64; BATCH];
                    for ((slot, &n), c) in buf.chunks_exact_mut(stride).zip(lens.iter()).zip(counters.iter_mut()) {
                        *c = recv.open(&mut slot[..n]).unwrap().counter;
                    }
                    let mut window = recv.lock_replay();
                    for c in counters {
                        assert!(window.accept(c));
                    }
                    drop(window);
                    total += start.elapsed();
                }
                total
            })
        });
        g.finish();
    }
}

/// The lock-free alternative: 256 slots of (32-bit block tag, 32-bit
/// bitmap) in one `AtomicU64` each, and the highest counter in another.
/// Marking a counter is a load and a CAS on its slot plus a `fetch_max`.
struct AtomicWindow {
    last: AtomicU64,
    slots: Vec<AtomicU64>,
}

const SLOTS: u64 = 256;
const ATOMIC_WINDOW: u64 = (SLOTS - 1) * 32;

impl AtomicWindow {
    fn new() -> AtomicWindow {
        AtomicWindow { last: AtomicU64::new(0), slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn accept(&self, c: u64, limit: u64) -> bool {
        if c >= limit {
            return false;
        }
        let last = self.last.load(Ordering::Acquire);
        if c < last && last - c > ATOMIC_WINDOW {
            return false;
        }
        let block = c >> 5;
        let tag = block as u32;
        let bit = 1u32 << (c & 31);
        let slot = &self.slots[(block % SLOTS) as usize];
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            let (ctag, bits) = ((cur >> 32) as u32, cur as u32);
            let new = if ctag == tag {
                if bits & bit != 0 {
                    return false;
                }
                (u64::from(tag) << 32) | u64::from(bits | bit)
            } else if (tag.wrapping_sub(ctag) as i32) > 0 {
                (u64::from(tag) << 32) | u64::from(bit)
            } else {
                return false;
            };
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.last.fetch_max(c, Ordering::AcqRel);
        true
    }
}

/// The alternative must be a window too: same verdicts as ReplayWindow on
/// a reordered stream with replays (within the smaller of the two windows).
fn self_check_atomic_window() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (w, mut r) = (AtomicWindow::new(), ReplayWindow::default());
    let mut c = 1000u64;
    for _ in 0..200_000 {
        use rand_core::RngCore;
        let x = rng.next_u32();
        c = match x % 8 {
            0 => c.saturating_sub(u64::from(x >> 8) % 4000),
            1 => c + u64::from(x >> 8) % 100,
            _ => c + 1,
        };
        assert!(ATOMIC_WINDOW.min(WINDOW) > 4000);
        assert_eq!(w.accept(c, u64::MAX), r.accept(c, u64::MAX), "counter {c}");
    }
}

/// Runs `work(thread, batch)` for `iters` batches on each of `threads`
/// threads, batch numbers interleaved (thread t gets t, t + threads, ...);
/// the wall time of the whole, divided per batch per thread by criterion.
fn run_threads(threads: u64, iters: u64, work: &(dyn Fn(u64) + Sync)) -> Duration {
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    work(i * threads + t);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn bench_replay(c: &mut Criterion) {
    self_check_atomic_window();
    let limit = u64::MAX - (1 << 13);
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(BATCH as u64));
    for threads in [1u64, 2] {
        g.bench_function(format!("mutex_per_batch/{threads}thread"), |b| {
            b.iter_custom(|iters| {
                let w = Mutex::new(ReplayWindow::default());
                run_threads(threads, iters, &|batch| {
                    let mut guard = w.lock().unwrap();
                    for c in batch * BATCH as u64..(batch + 1) * BATCH as u64 {
                        black_box(guard.accept(c, limit));
                    }
                })
            })
        });
        g.bench_function(format!("mutex_per_packet/{threads}thread"), |b| {
            b.iter_custom(|iters| {
                let w = Mutex::new(ReplayWindow::default());
                run_threads(threads, iters, &|batch| {
                    for c in batch * BATCH as u64..(batch + 1) * BATCH as u64 {
                        black_box(w.lock().unwrap().accept(c, limit));
                    }
                })
            })
        });
        g.bench_function(format!("atomic_per_packet/{threads}thread"), |b| {
            b.iter_custom(|iters| {
                let w = AtomicWindow::new();
                run_threads(threads, iters, &|batch| {
                    for c in batch * BATCH as u64..(batch + 1) * BATCH as u64 {
                        black_box(w.accept(c, limit));
                    }
                })
            })
        });
    }
    g.finish();
}

fn bench_reserve(c: &mut Criterion) {
    let mut g = c.benchmark_group("reserve");
    for threads in [1u64, 2] {
        g.bench_function(format!("session_cas/{threads}thread"), |b| {
            b.iter_custom(|iters| {
                let (send, _, now) = sessions(Limits::default());
                run_threads(threads, iters, &|_| {
                    black_box(send.reserve(BATCH, now).unwrap().remaining());
                })
            })
        });
        g.bench_function(format!("fetch_add/{threads}thread"), |b| {
            b.iter_custom(|iters| {
                let counter = AtomicU64::new(0);
                run_threads(threads, iters, &|_| {
                    black_box(counter.fetch_add(BATCH as u64, Ordering::Relaxed));
                })
            })
        });
    }
    g.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let mut f = handshake_fixture();
    let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let init = f.a.send_initiation(&f.b_at_a, f.now, &mut f.rng).unwrap();
    let Ok(HandshakeOutcome::Response { message, .. }) = f.b.handle_handshake(&init, src, f.now, &mut f.rng) else { panic!() };
    assert!(matches!(f.a.handle_handshake(&message, src, f.now, &mut f.rng), Ok(HandshakeOutcome::Established { .. })));
    let index = f.b_at_a.keys().current.as_ref().unwrap().local_index();
    let mut g = c.benchmark_group("lookup");
    for threads in [1u64, 2] {
        g.bench_function(format!("{threads}thread"), |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, &|_| {
                    black_box(f.a.lookup(black_box(index)).unwrap());
                })
            })
        });
    }
    g.finish();
}

/// A node B, A's initiations to it, and A's peer entry for B.
struct HandshakeFixture {
    a: Node,
    b: Node,
    b_at_a: Arc<Peer>,
    rng: ChaCha20Rng,
    now: Instant,
}

fn handshake_fixture() -> HandshakeFixture {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let now = Instant::now();
    let limits = Limits { initiation_min_interval: Duration::ZERO, rekey_timeout: Duration::ZERO, ..Limits::default() };
    let node = |rng: &mut ChaCha20Rng| {
        Node::new(NodeConfig { private_key: PrivateKey::generate(rng), limits, padding_mtu: 1420 }, now, SystemTime::now())
    };
    let (a, b) = (node(&mut rng), node(&mut rng));
    let b_at_a = a.add_peer(PeerConfig::new(*b.public_key()), &mut rng).unwrap();
    b.add_peer(PeerConfig::new(*a.public_key()), &mut rng).unwrap();
    HandshakeFixture { a, b, b_at_a, rng, now }
}

fn bench_handshake(c: &mut Criterion) {
    let src: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let mut g = c.benchmark_group("handshake");
    let mut f = handshake_fixture();
    let mut bad = f.a.send_initiation(&f.b_at_a, f.now, &mut f.rng).unwrap();
    bad[120] ^= 1;
    g.bench_function("initiation_bad_mac1", |b| b.iter(|| black_box(f.b.handle_handshake(&bad, src, f.now, &mut f.rng).unwrap_err())));
    f.b.set_under_load(true);
    let init = f.a.send_initiation(&f.b_at_a, f.now, &mut f.rng).unwrap();
    g.bench_function("initiation_cookie_reply", |b| {
        b.iter(|| matches!(f.b.handle_handshake(&init, src, f.now, &mut f.rng), Ok(HandshakeOutcome::CookieReply(_))))
    });
    f.b.set_under_load(false);
    // A full initiation -> response: every iteration a new initiation (a
    // later timestamp), made outside the timing.
    g.bench_function("initiation_to_response", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let t = f.now + Duration::from_millis(20 * (i + 1));
                let init = f.a.send_initiation(&f.b_at_a, t, &mut f.rng).unwrap();
                let start = Instant::now();
                assert!(matches!(f.b.handle_handshake(&init, src, t, &mut f.rng), Ok(HandshakeOutcome::Response { .. })));
                total += start.elapsed();
            }
            f.now += Duration::from_millis(20 * (iters + 1));
            total
        })
    });
    g.bench_function("response_to_session", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let t = f.now + Duration::from_millis(20 * (i + 1));
                let init = f.a.send_initiation(&f.b_at_a, t, &mut f.rng).unwrap();
                let Ok(HandshakeOutcome::Response { message, .. }) = f.b.handle_handshake(&init, src, t, &mut f.rng) else { panic!() };
                let start = Instant::now();
                assert!(matches!(f.a.handle_handshake(&message, src, t, &mut f.rng), Ok(HandshakeOutcome::Established { .. })));
                total += start.elapsed();
            }
            f.now += Duration::from_millis(20 * (iters + 1));
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench_aead, bench_batches, bench_replay, bench_reserve, bench_lookup, bench_handshake);
criterion_main!(benches);
