//! The middle namespace of a topology that asks for one: a layer-2
//! forwarder between the nodes' underlay veths, run as a thread of the
//! test process (AF_PACKET sockets), that can reorder frames. It counts
//! what it does ([`MiddleStats`]) and stops, joined, when its
//! [`Forwarder`] is stopped or dropped.
//!
//! `nodeA(ul 198.18.0.1/24) ── ula [mid] ulb ── (ul 198.18.0.2/24) nodeB`

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::netns::{enter_netns, ip_batch, ns_exec};
use crate::traffic::set_rcvbuf;

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
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    counters: Arc<ForwarderCounters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    pub fn stats(&self) -> MiddleStats {
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
    pub fn stop(&mut self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.thread.take()?;
        let err = handle.join().err()?;
        Some(err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default())
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(msg) = self.stop() {
            eprintln!("warning: the middle forwarder panicked: {msg}");
        }
    }
}

/// Brings up the middle namespace `md`'s veths (`ula`, `ulb`), turns off
/// the offloads that would put frames larger than the MTU on the wire
/// there and on the nodes' underlay veths (`ul` in `nodes`), sets GRO on
/// the nodes as `middle` asks, and starts the forwarder.
pub fn wire_middle(md: &str, nodes: [&str; 2], middle: &Middle) -> Forwarder {
    ip_batch(md, &["link set lo up", "link set ula up", "link set ulb up"]);
    let no_segmentation = ["gso", "off", "tso", "off", "tx-udp-segmentation", "off", "tx", "off"];
    for dev in ["ula", "ulb"] {
        ethtool_k(md, dev, &[&no_segmentation[..], &["gro", "off"]].concat());
    }
    for (ns, gro) in [(nodes[0], middle.gro_a), (nodes[1], middle.gro_b)] {
        // GRO on a veth without XDP turns on its NAPI receive path. The
        // forwarder sends one frame per syscall, so every NAPI poll sees
        // a single frame: GRO only merges frames when it may hold them
        // across polls for a while (here up to 100 µs).
        ethtool_k(ns, "ul", &[&no_segmentation[..], &["gro", if gro { "on" } else { "off" }]].concat());
        if gro {
            let o = ns_exec(ns, &["sh", "-c", "echo 100000 > /sys/class/net/ul/gro_flush_timeout"], Duration::from_secs(10));
            assert!(o.ok(), "setting gro_flush_timeout on ul in {ns}: {}", o.text());
        }
    }
    start_forwarder(md, middle.reorder_one_in)
}

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
