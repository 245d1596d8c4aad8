//! The wireguard backend end to end, as root in namespaces (see
//! `common::Topology`): ctrA ── nodeA(encapd) ══ nodeB(encapd) ── ctrB,
//! both nodes with `backend = "wireguard"` and keys from
//! `common::wireguard_keys`, on both underlay profiles (`veth::...`,
//! `wire::...`):
//!
//! - traffic: ping both ways (IPv4 and IPv6), a TCP stream each way whose
//!   SHA-256 matches, UDP at 64, 512 and 1,392 bytes (the largest a 1,420
//!   TUN MTU carries);
//! - hostile input: the test itself is a third WireGuard peer (the
//!   protocol core in process, on an address of nodeB's underlay) that
//!   completes a handshake with nodeA, then sends valid, replayed,
//!   tampered, truncated, unknown-index and wrong-type datagrams and one
//!   whose inner source lies in nodeB's subnet: each refused one is counted
//!   by its reason and none is delivered to ctrA;
//! - handshakes and restarts: the first ping from nodeA's side makes nodeA
//!   initiate; nodeB restarted (all its sessions gone) must initiate to
//!   reach ctrA again; nodeA restarted likewise;
//! - a handshake flood: the third peer sends nodeA initiations with valid
//!   mac1s and fresh ephemerals from one source for 10 s while ctrB streams
//!   UDP and TCP to ctrA: nodeA goes under load and answers with cookie
//!   replies (counted), the flood gets at most the rate limit's worth of
//!   responses, the legitimate streams keep flowing and complete; figures
//!   (delivery before/during/after, nodeA's CPU time, cookies, handshakes
//!   dropped over budget) are printed.
//!
//! Without root they skip, unless `ENCAPD_REQUIRE_ROOT_TESTS=1`.

use encapd_testbed as common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::packets::{Packet, udp_socket};
use common::traffic::{Transfer, hashed_transfer, sized_udp_delivered};
use common::wireguard_keys::WireGuardKeys;
use common::{CTR_A, CTR_A6, CTR_B, CTR_B6, Node, Options, Topology, Underlay, in_netns, ip, require_root, set_rcvbuf};
use encapd::wireguard::{HandshakeOutcome, Limits, Node as WgNode, NodeConfig, PeerConfig, PrivateKey};
use rand_core::OsRng;

/// nodeA's WireGuard address and port.
const NODE_A_WG: (&str, u16) = ("198.18.0.1", 51820);
/// The third peer (this test) on nodeB's underlay, and its subnet.
const INTRUDER_IP: &str = "198.18.0.66";
const INTRUDER_SUBNET: &str = "100.96.3.0/24";

/// Two wireguard nodes; `extra_peer_a`: more lines for nodeA's peers file.
fn topology(u: Underlay, keys: &WireGuardKeys, extra_peer_a: &str) -> Topology {
    let opts = Options {
        underlay: u,
        node_lines_a: WireGuardKeys::node_lines(&keys.a),
        node_lines_b: WireGuardKeys::node_lines(&keys.b),
        network_lines_a: WireGuardKeys::network_lines(),
        network_lines_b: WireGuardKeys::network_lines(),
        peer_extra_a: format!("{}{extra_peer_a}", WireGuardKeys::peer_line(&keys.b)),
        peer_extra_b: WireGuardKeys::peer_line(&keys.a),
        ..Options::new("mmsg")
    };
    Topology::with(opts)
}

/// Pings `dst` from `ns` once a second until one echo comes back (the
/// first packets of a peer without a session start the handshake and are
/// dropped); returns how long that took. Panics after 30 s.
fn ping_until_answered(t: &Topology, ns: &str, dst: &str, v6: bool) -> Duration {
    let start = Instant::now();
    let mut args = vec!["-c", "1", "-W", "1", dst];
    if v6 {
        args.insert(0, "-6");
    }
    loop {
        let o = t.ping(ns, &args);
        if o.ok() {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{ns} -> {dst}: no echo within 30 s:\n{}", o.text());
    }
}

fn assert_three_pings(t: &Topology, ns: &str, dst: &str, v6: bool) {
    // `-w`: wait for all three replies; without it ping stops waiting for
    // the last one after twice the slowest round trip so far, which a
    // loaded machine can exceed.
    let mut args = vec!["-c", "3", "-i", "0.2", "-W", "2", "-w", "5", dst];
    if v6 {
        args.insert(0, "-6");
    }
    let o = t.ping(ns, &args);
    assert!(o.ok() && o.stdout.contains(" 0% packet loss"), "{ns} -> {dst}: expected three echoes:\n{}", o.text());
}

// ---------------------------------------------------------------------------
// 1. Traffic: ping, TCP with matching SHA-256, UDP at three sizes

fn traffic(u: Underlay) {
    if !require_root() {
        return;
    }
    let keys = WireGuardKeys::new(0x3a11_0001 + u as u64);
    let mut t = topology(u, &keys, "");
    let took = ping_until_answered(&t, &t.ctr_a, CTR_B, false);
    eprintln!("first echo ctrA -> ctrB after {took:?} (nodeA initiated the handshake)");
    for (ns, dst, v6) in [(&t.ctr_a, CTR_B, false), (&t.ctr_b, CTR_A, false), (&t.ctr_a, CTR_B6, true), (&t.ctr_b, CTR_A6, true)] {
        assert_three_pings(&t, ns, dst, v6);
    }
    for (from, to_ns, to) in [
        (t.ctr_a.clone(), t.ctr_b.clone(), SocketAddr::from((CTR_B.parse::<Ipv4Addr>().unwrap(), 5201))),
        (t.ctr_b.clone(), t.ctr_a.clone(), SocketAddr::from((CTR_A.parse::<Ipv4Addr>().unwrap(), 5202))),
    ] {
        let total = 64 << 20;
        let start = Instant::now();
        let Transfer { sent, sent_hash, got, got_hash, .. } =
            hashed_transfer(&from, &to_ns, to, 0x03a1_17c9, total, Duration::from_secs(150));
        let secs = start.elapsed().as_secs_f64();
        eprintln!("TCP {from} -> {to}: {got} bytes in {secs:.2} s ({:.2} Gbit/s)", got as f64 * 8.0 / secs / 1e9);
        assert_eq!((sent, got), (total, total), "TCP {from} -> {to}: not everything arrived");
        assert_eq!(sent_hash, got_hash, "TCP {from} -> {to}: SHA-256 differs");
    }
    for size in [64, 512, 1392] {
        let sent = 300;
        let to = SocketAddr::new(CTR_B.parse().unwrap(), 7000);
        let got = sized_udp_delivered(&t.ctr_a, CTR_A.parse().unwrap(), &t.ctr_b, to, size, sent, 1000);
        eprintln!("UDP {size} B ctrA -> ctrB: {got} of {sent} arrived intact");
        // Allow for a rare loss on a loaded machine; a data path that breaks
        // a size loses all of them.
        assert!(got * 10 >= sent * 9, "UDP {size} B: only {got} of {sent} arrived");
    }
    let c = t.counters(Node::A);
    for reason in ["wg_decrypt", "wg_replayed", "wg_spoofed_source", "wg_unknown_index"] {
        assert_eq!(c.drop(reason), 0, "nodeA dropped {reason} in clean traffic: {c:?}");
    }
}

// ---------------------------------------------------------------------------
// 2. Hostile input from a third peer

/// The test as a WireGuard peer of nodeA: the protocol core in process.
struct Intruder {
    node: WgNode,
    peer: std::sync::Arc<encapd::wireguard::Peer>,
    sock: UdpSocket,
}

impl Intruder {
    /// Completes a handshake with nodeA from `sock`.
    fn connect(key: PrivateKey, node_a: encapd::wireguard::PublicKey, sock: UdpSocket) -> Intruder {
        let node =
            WgNode::new(NodeConfig { private_key: key, limits: Limits::default(), padding_mtu: 1420 }, Instant::now(), SystemTime::now());
        let peer = node.add_peer(PeerConfig::new(node_a), &mut OsRng).unwrap();
        let init = node.send_initiation(&peer, Instant::now(), &mut OsRng).expect("an initiation");
        sock.send_to(&init, NODE_A_WG).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let (n, from) = sock.recv_from(&mut buf).expect("nodeA answers the initiation within 5 s");
        match node.handle_handshake(&buf[..n], from, Instant::now(), &mut OsRng) {
            Ok(HandshakeOutcome::Established { .. }) => {}
            other => panic!("nodeA's answer did not complete the handshake: {other:?}"),
        }
        Intruder { node, peer, sock }
    }

    /// A transport message carrying `inner`, under the current session.
    fn seal(&self, inner: &[u8]) -> Vec<u8> {
        let now = Instant::now();
        let ring = self.peer.keys();
        let session = ring.sending(now).expect("a session");
        let mut batch = session.reserve(1, now).unwrap();
        let mut buf = vec![0u8; 16 + inner.len() + 31];
        buf[16..16 + inner.len()].copy_from_slice(inner);
        let n = batch.seal(&mut buf, inner.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn send(&self, datagram: &[u8]) {
        self.sock.send_to(datagram, NODE_A_WG).unwrap();
    }
}

fn inner(src: [u8; 4], tag: &str) -> Vec<u8> {
    Packet::new(src, [100, 96, 1, 2]).udp(40000, 7777, tag.as_bytes())
}

/// Receives what reaches ctrA's port 7777 until 500 ms of silence.
fn delivered(sock: &UdpSocket) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

fn hostile_input(u: Underlay) {
    if !require_root() {
        return;
    }
    let keys = WireGuardKeys::new(0x3a11_0101 + u as u64);
    let intruder_key = PrivateKey::from_bytes([0x5c; 32]);
    let extra = format!(
        "\n[[peer]]\nsubnet = \"{INTRUDER_SUBNET}\"\npublic_ip = \"{INTRUDER_IP}\"\npublic_key = \"{}\"\n",
        intruder_key.public_key()
    );
    let mut t = topology(u, &keys, &extra);
    ip(&t.node_b, &["addr", "add", &format!("{INTRUDER_IP}/24"), "dev", "ul", "nodad"]);
    let listener = in_netns(&t.ctr_a, || UdpSocket::bind((CTR_A, 7777))).unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let intruder = Intruder::connect(intruder_key, keys.a.public_key, udp_socket(&t.node_b, INTRUDER_IP));

    // A valid packet is delivered (and confirms nodeA's side of the session).
    let valid = intruder.seal(&inner([100, 96, 3, 5], "valid-1"));
    intruder.send(&valid);
    assert_eq!(delivered(&listener), ["valid-1"], "a valid packet from the third peer is delivered");

    let mut tampered = intruder.seal(&inner([100, 96, 3, 5], "tampered"));
    tampered[20] ^= 0x01;
    let mut unknown_index = intruder.seal(&inner([100, 96, 3, 5], "unknown-index"));
    unknown_index[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    let mut wrong_type = intruder.seal(&inner([100, 96, 3, 5], "wrong-type"));
    wrong_type[0] = 9;
    let spoofed = intruder.seal(&inner([100, 96, 2, 3], "spoofed"));
    let truncated = intruder.seal(&inner([100, 96, 3, 5], "truncated"))[..24].to_vec();
    let cases: [(&str, &[u8], &str); 6] = [
        ("replayed", &valid, "wg_replayed"),
        ("tampered", &tampered, "wg_decrypt"),
        ("truncated", &truncated, "wg_truncated"),
        ("unknown index", &unknown_index, "wg_unknown_index"),
        ("wrong type", &wrong_type, "wg_unknown_type"),
        ("inner source in nodeB's subnet (cryptokey routing)", &spoofed, "wg_spoofed_source"),
    ];
    for (case, datagram, reason) in cases {
        let before = t.counters(Node::A);
        intruder.send(datagram);
        let after = t.counters_until(Node::A, Duration::from_secs(5), |c| c.drop(reason) > before.drop(reason));
        assert_eq!(after.drop(reason), before.drop(reason) + 1, "{case}: {reason} did not rise by one: {before:?} -> {after:?}");
        assert_eq!(after.ingress_pkts, before.ingress_pkts, "{case}: written to the TUN");
        eprintln!("{case}: counted as {reason}");
    }
    assert!(delivered(&listener).is_empty(), "a refused datagram reached ctrA");
    // The session survives the abuse.
    intruder.send(&intruder.seal(&inner([100, 96, 3, 5], "valid-2")));
    assert_eq!(delivered(&listener), ["valid-2"]);
    drop(intruder.node);
}

// ---------------------------------------------------------------------------
// 3. Each side initiates; recovery after a restart

fn restarts(u: Underlay) {
    if !require_root() {
        return;
    }
    let keys = WireGuardKeys::new(0x3a11_0201 + u as u64);
    let mut t = topology(u, &keys, "");
    let took = ping_until_answered(&t, &t.ctr_a, CTR_B, false);
    eprintln!("nodeA initiated: first echo after {took:?}");
    assert_three_pings(&t, &t.ctr_b, CTR_A, false);

    // nodeB restarted knows no session: its packets need a handshake it starts.
    t.stop_node(Node::B);
    t.start_node(Node::B);
    let took = ping_until_answered(&t, &t.ctr_b, CTR_A, false);
    eprintln!("nodeB restarted and initiated: first echo ctrB -> ctrA after {took:?}");
    assert_three_pings(&t, &t.ctr_a, CTR_B, false);

    t.stop_node(Node::A);
    t.start_node(Node::A);
    let took = ping_until_answered(&t, &t.ctr_a, CTR_B6, true);
    eprintln!("nodeA restarted and initiated: first echo ctrA -> ctrB (IPv6) after {took:?}");
    assert_three_pings(&t, &t.ctr_b, CTR_A6, true);
}

// ---------------------------------------------------------------------------
// 4. A handshake flood from one source while a legitimate stream flows

/// How long the flood lasts, and at most how many datagrams a second it sends.
const FLOOD_SECS: u64 = 10;
const FLOOD_PER_SECOND: u64 = 20_000;
/// Distinct initiations the flood cycles through (each with its own
/// ephemeral key and a valid mac1 for nodeA; building one costs the test
/// a few Diffie-Hellman operations, so they are made once).
const FLOOD_POOL: usize = 64;

/// Phases of the legitimate UDP stream.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

/// nodeA's encapd's CPU time so far (user + system), from /proc/PID/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // Ticks of USER_HZ, which is 100 on every Linux architecture this runs on.
    Duration::from_millis(ticks * 10)
}

/// A UDP stream ctrB -> ctrA at about 1,000 datagrams a second, each
/// tagged with the phase it was sent in; counts sent and received per phase.
struct LegitStream {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    sent: Arc<[AtomicU64; 3]>,
    got: Arc<[AtomicU64; 3]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LegitStream {
    fn start(t: &Topology) -> LegitStream {
        let rx = in_netns(&t.ctr_a, || UdpSocket::bind((CTR_A, 7100))).unwrap();
        set_rcvbuf(&rx, 4 << 20);
        rx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let tx = udp_socket(&t.ctr_b, CTR_B);
        let (phase, stop) = (Arc::new(AtomicU8::new(BEFORE)), Arc::new(AtomicBool::new(false)));
        let (sent, got): (Arc<[AtomicU64; 3]>, Arc<[AtomicU64; 3]>) = (Arc::new(Default::default()), Arc::new(Default::default()));
        let sender = {
            let (phase, stop, sent) = (phase.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let p = phase.load(Ordering::Relaxed);
                    let _ = tx.send_to(&[p; 512], (CTR_A, 7100));
                    sent[usize::from(p)].fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let receiver = {
            let (stop, got) = (stop.clone(), got.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                loop {
                    match rx.recv(&mut buf) {
                        Ok(512) if buf[0] <= AFTER && buf[..512].iter().all(|&b| b == buf[0]) => {
                            got[usize::from(buf[0])].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) if stop.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
            })
        };
        LegitStream { phase, stop, sent, got, threads: vec![sender, receiver] }
    }

    fn set_phase(&self, p: u8) {
        self.phase.store(p, Ordering::Relaxed);
    }

    /// Stops both threads (the receiver after 200 ms of silence); (sent, received) per phase.
    fn finish(mut self) -> [(u64, u64); 3] {
        self.stop.store(true, Ordering::Relaxed);
        for th in self.threads.drain(..) {
            th.join().expect("a stream thread");
        }
        [0, 1, 2].map(|i| (self.sent[i].load(Ordering::Relaxed), self.got[i].load(Ordering::Relaxed)))
    }
}

impl Drop for LegitStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handshake_flood(u: Underlay) {
    if !require_root() {
        return;
    }
    let keys = WireGuardKeys::new(0x3a11_0401 + u as u64);
    let flooder_key = PrivateKey::from_bytes([0x6d; 32]);
    let extra = format!(
        "\n[[peer]]\nsubnet = \"{INTRUDER_SUBNET}\"\npublic_ip = \"{INTRUDER_IP}\"\npublic_key = \"{}\"\n",
        flooder_key.public_key()
    );
    let mut t = topology(u, &keys, &extra);
    ip(&t.node_b, &["addr", "add", &format!("{INTRUDER_IP}/24"), "dev", "ul", "nodad"]);
    let took = ping_until_answered(&t, &t.ctr_b, CTR_A, false);
    eprintln!("session nodeB -> nodeA up after {took:?}");

    // The flood's initiations: a configured peer's (so an answered one
    // would cost nodeA a full handshake), each from a fresh node.
    let pool: Vec<Vec<u8>> = (0..FLOOD_POOL)
        .map(|_| {
            let node = WgNode::new(
                NodeConfig { private_key: flooder_key.clone(), limits: Limits::default(), padding_mtu: 1420 },
                Instant::now(),
                SystemTime::now(),
            );
            let peer = node.add_peer(PeerConfig::new(keys.a.public_key), &mut OsRng).unwrap();
            node.send_initiation(&peer, Instant::now(), &mut OsRng).expect("an initiation").to_vec()
        })
        .collect();
    let flood = udp_socket(&t.node_b, INTRUDER_IP);
    set_rcvbuf(&flood, 8 << 20);
    let flood_over = Arc::new(AtomicBool::new(false));
    let replies = {
        let rx = flood.try_clone().unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let over = flood_over.clone();
        // Counts what nodeA sends back by message type (2 response, 3
        // cookie reply) until 500 ms of silence after the flood.
        std::thread::spawn(move || {
            let (mut responses, mut cookies) = (0u64, 0u64);
            let mut buf = [0u8; 256];
            let deadline = Instant::now() + Duration::from_secs(FLOOD_SECS + 300);
            while Instant::now() < deadline {
                match rx.recv(&mut buf) {
                    Ok(92) if buf[0] == 2 => responses += 1,
                    Ok(64) if buf[0] == 3 => cookies += 1,
                    Ok(_) => {}
                    Err(_) if over.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            (responses, cookies)
        })
    };

    let stream = LegitStream::start(&t);
    // Before: a TCP transfer and 3 s of the UDP stream.
    let (ctr_a, ctr_b) = (t.ctr_a.clone(), t.ctr_b.clone());
    let tcp = |port: u16, seed: u64| {
        let total = 8 << 20;
        let start = Instant::now();
        let Transfer { sent, sent_hash, got, got_hash, .. } = hashed_transfer(
            &ctr_b,
            &ctr_a,
            SocketAddr::from((CTR_A.parse::<Ipv4Addr>().unwrap(), port)),
            seed,
            total,
            Duration::from_secs(150),
        );
        let secs = start.elapsed().as_secs_f64();
        assert_eq!((sent, got), (total, total), "TCP ctrB -> ctrA: not everything arrived");
        assert_eq!(sent_hash, got_hash, "TCP ctrB -> ctrA: SHA-256 differs");
        got as f64 * 8.0 / secs / 1e6
    };
    let tcp_before = tcp(5211, 0x3a11_f100);
    let pid = t.pid(Node::A);
    let cpu_quiet = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let cpu_quiet = cpu_time(pid) - cpu_quiet;
    let before = t.counters(Node::A);

    // During: the flood, with the UDP stream and a TCP transfer beside it.
    stream.set_phase(DURING);
    let flood_start = Instant::now();
    let cpu_at_flood = cpu_time(pid);
    let (sent_flood, tcp_during) = std::thread::scope(|s| {
        let flooder = s.spawn(|| {
            let mut sent = 0u64;
            let per_tick = FLOOD_PER_SECOND / 100;
            while flood_start.elapsed() < Duration::from_secs(FLOOD_SECS) && sent < FLOOD_SECS * FLOOD_PER_SECOND {
                let tick = Instant::now();
                for _ in 0..per_tick {
                    let _ = flood.send_to(&pool[sent as usize % FLOOD_POOL], NODE_A_WG);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
            }
            sent
        });
        let tcp_during = tcp(5212, 0x3a11_f200);
        (flooder.join().expect("the flooder"), tcp_during)
    });
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let cpu_flood = cpu_time(pid) - cpu_at_flood;
    let during = t.counters(Node::A);
    stream.set_phase(AFTER);
    flood_over.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let phases = stream.finish();
    let (responses, cookies_seen) = replies.join().expect("the reply counter");

    let cookie_replies = during.drop("wg_cookie_reply") - before.drop("wg_cookie_reply");
    let overload = during.drop("wg_handshake_overload") - before.drop("wg_handshake_overload");
    let rate_limited = during.drop("wg_rate_limited") - before.drop("wg_rate_limited");
    let refused: u64 = ["wg_replayed_initiation", "wg_initiation_flood"].iter().map(|r| during.drop(r) - before.drop(r)).sum();
    let pct = |(s, g): (u64, u64)| if s == 0 { 0.0 } else { 100.0 * (s.saturating_sub(g)) as f64 / s as f64 };
    eprintln!("flood ({}): {sent_flood} initiations from {INTRUDER_IP} in {flood_secs:.1} s", u.name());
    eprintln!(
        "  nodeA: {cookie_replies} cookie replies (wg_cookie_reply), {overload} dropped over the workers' budget \
         (wg_handshake_overload), {rate_limited} rate-limited, {refused} replayed/too-soon initiations refused; \
         the flooder received {responses} responses and {cookies_seen} cookie replies"
    );
    eprintln!(
        "  nodeA encapd CPU: {:.2} s in {flood_secs:.1} s of flood with the TCP transfer ({:.0} % of one core); \
         {:.2} s in the 3 s before it with the UDP stream alone ({:.0} %)",
        cpu_flood.as_secs_f64(),
        100.0 * cpu_flood.as_secs_f64() / flood_secs,
        cpu_quiet.as_secs_f64(),
        100.0 * cpu_quiet.as_secs_f64() / 3.0
    );
    for (name, p) in [("before", phases[0]), ("during", phases[1]), ("after", phases[2])] {
        eprintln!("  legit UDP ctrB -> ctrA {name} the flood: {} of {} delivered ({:.1} % lost)", p.1, p.0, pct(p));
    }
    eprintln!("  legit TCP ctrB -> ctrA 8 MiB: {tcp_before:.0} Mbit/s before, {tcp_during:.0} Mbit/s during the flood");

    assert!(cookie_replies > 0, "nodeA never answered the flood with a cookie reply: {during:?}");
    assert!(cookies_seen > 0, "no cookie reply reached the flooder ({cookie_replies} counted as sent)");
    let rate_bound = encapd::wireguard::ratelimit::PER_SECOND * (FLOOD_SECS + 2) + encapd::wireguard::ratelimit::BURST;
    assert!(
        responses <= rate_bound && responses < sent_flood,
        "the flood got {responses} responses to {sent_flood} initiations (at most {rate_bound} allowed)"
    );
    assert!(phases[1].1 > 0, "no legitimate datagram was delivered during the flood: {phases:?}");
    assert!(phases[2].1 > 0, "no legitimate datagram was delivered after the flood: {phases:?}");
    assert_three_pings(&t, &t.ctr_a, CTR_B, false);
    assert_three_pings(&t, &t.ctr_b, CTR_A, false);
}

macro_rules! underlay_tests {
    ($($profile:ident => $underlay:expr),*) => {$(
        mod $profile {
            #[test]
            fn traffic() {
                super::traffic($underlay);
            }
            #[test]
            fn hostile_input() {
                super::hostile_input($underlay);
            }
            #[test]
            fn restarts() {
                super::restarts($underlay);
            }
            #[test]
            fn handshake_flood() {
                super::handshake_flood($underlay);
            }
        }
    )*};
}

underlay_tests!(veth => super::Underlay::Veth, wire => super::Underlay::Wire);

// ---------------------------------------------------------------------------
// 4. A figure, on demand: one TCP stream through wireguard nodes and
// through clear-text `uring` udp nodes, side by side in one run.

/// `iperf3 -c` from ctrA to ctrB for `secs` seconds; the receiver's Gbit/s.
fn iperf3_gbits(t: &Topology, secs: u32) -> f64 {
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &t.ctr_b, "iperf3", "-s", "-1", "-B", CTR_B])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    std::thread::sleep(Duration::from_millis(500));
    let o =
        common::ns_exec(&t.ctr_a, &["iperf3", "-c", CTR_B, "-t", &secs.to_string(), "-f", "g"], Duration::from_secs(u64::from(secs) + 30));
    if common::process::wait_child(&mut server, Duration::from_secs(5)).is_none() {
        let _ = common::process::stop_child(&mut server, Duration::from_secs(1));
    }
    assert!(o.ok(), "iperf3 -c: {}", o.text());
    let line = o.stdout.lines().find(|l| l.contains("receiver")).unwrap_or_else(|| panic!("no receiver line:\n{}", o.stdout));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "Gbits/sec").expect("Gbits/sec");
    words[at - 1].parse().expect("a number")
}

#[test]
#[ignore = "a figure, not a check: run with --ignored --nocapture (ENCAPD_BIN=target/release/encapd for meaningful numbers)"]
fn tcp1_figure_wireguard_vs_udp() {
    if !require_root() || !common::require_tools(&["iperf3"]) {
        return;
    }
    let u = Underlay::from_env();
    let mut rows = Vec::new();
    for rep in 0..3 {
        let keys = WireGuardKeys::new(0x3a11_0301 + rep);
        let wg = {
            let t = topology(u, &keys, "");
            ping_until_answered(&t, &t.ctr_a, CTR_B, false);
            iperf3_gbits(&t, 10)
        };
        let udp = {
            let t = Topology::with(Options { underlay: u, ..Options::new("uring") });
            iperf3_gbits(&t, 10)
        };
        eprintln!(
            "rep {rep} ({}): TCP 1 stream, 10 s: wireguard {wg:.2} Gbit/s, uring udp {udp:.2} Gbit/s, ratio {:.2}",
            u.name(),
            wg / udp
        );
        rows.push((wg, udp));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wg, udp) = (median(rows.iter().map(|r| r.0).collect()), median(rows.iter().map(|r| r.1).collect()));
    eprintln!("median of 3 ({}): wireguard {wg:.2} Gbit/s, uring udp {udp:.2} Gbit/s, ratio {:.2}", u.name(), wg / udp);
}
