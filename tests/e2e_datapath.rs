//! End-to-end tests of the data path, run as root inside network namespaces
//! (see `common::Topology`): ctrA ── nodeA(encapd) ══ nodeB(encapd) ── ctrB.
//! Every scenario runs once per I/O engine (`uring`, `mmsg`, `classic`), and
//! once more per degraded `uring` path that older kernels take (each
//! optional io_uring feature forced off with `[dataplane] uring_disable`),
//! and all of that on both underlay profiles (`veth::...` and `wire::...`,
//! see `common::underlay`): a scenario that passes over a veth that hands
//! TSO packets across whole must also pass when the frames cross at the
//! MTU and GRO merges them again.
//!
//! Without root they print "skipped: needs root" and pass, unless
//! `ENCAPD_REQUIRE_ROOT_TESTS=1`. `ENCAPD_BIN` selects another binary (e.g.
//! target/release/encapd); `ENCAPD_TEST_TOPOLOGIES` (default 2) bounds how
//! many topologies run at once.

use encapd_testbed as common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::counters::metric_sum;
use common::kdrops::KernelDrops;
use common::packets::{Packet, fix_ipv4_header_checksum, udp_socket};
use common::traffic::{Transfer, hashed_transfer};
use common::{
    CTR_A, CTR_A6, CTR_B, CTR_B6, Counters, ENCAPD_A, NODE_B_UNDERLAY, Node, Options, Output, Prng, TUN, Topology, Underlay, in_netns, ip,
    require_root, set_rcvbuf,
};

/// The topology for one variant: an engine name, or `uring` with the
/// io_uring features older kernels lack forced off, or busy polling on, on
/// both nodes (checked in nodeA's start-up log, so a variant cannot
/// silently run the full path).
fn topology(variant: &str, underlay: Underlay) -> Topology {
    let (disable, expect) = match variant {
        "uring_no_multishot_read" => {
            ("uring_disable = [\"multishot_read\"]", "io_uring: multishot READ off, multishot RECVMSG on, provided-buffer rings on")
        }
        "uring_no_multishot_recv" => {
            ("uring_disable = [\"multishot_recv\"]", "io_uring: multishot READ on, multishot RECVMSG off, provided-buffer rings on")
        }
        // A kernel older than 5.19 lacks both.
        "uring_no_buf_ring" => (
            "uring_disable = [\"buf_ring\", \"coop_taskrun\"]",
            "io_uring: multishot READ off, multishot RECVMSG off, provided-buffer rings off, cooperative task work off",
        ),
        "uring_busy_poll" => ("busy_poll_us = 200", "busy polling: each worker polls for 200 µs"),
        "uring_trust_outer" => ("ingress_checksum = \"trust-outer\"", "ingress checksums: trust-outer"),
        engine => return Topology::with(Options { underlay, ..Options::new(engine) }),
    };
    let mut opts = Options { underlay, ..Options::new("uring") };
    opts.extra_a = format!("{disable}\n");
    opts.extra_b = opts.extra_a.clone();
    let t = Topology::with(opts);
    let log = t.log(Node::A);
    assert!(log.contains(expect), "{variant}: the start-up log does not show the path under test:\n{log}");
    t
}

fn assert_ping_ok(o: &Output, what: &str) {
    assert!(o.ok(), "{what}: ping failed ({}):\n{}", o.status, o.text());
    assert!(o.stdout.contains(" 0% packet loss"), "{what}: expected no loss:\n{}", o.text());
}

// ---------------------------------------------------------------------------
// 1. ping both ways, IPv4 and IPv6

fn ping(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let before = t.counters(Node::A);
    let args = |dst: &'static str, v6: bool| {
        let mut a = vec!["-c", "3", "-i", "0.2", "-W", "2"];
        if v6 {
            a.insert(0, "-6");
        }
        a.push(dst);
        a
    };
    // Replies start at 64 and cross three routers: the far node's kernel, the
    // far encapd (which decrements like a router) and the near node's kernel.
    for (ns, dst, v6, what) in [
        (&t.ctr_a, CTR_B, false, "ctrA -> ctrB (IPv4)"),
        (&t.ctr_b, CTR_A, false, "ctrB -> ctrA (IPv4)"),
        (&t.ctr_a, CTR_B6, true, "ctrA -> ctrB (IPv6)"),
        (&t.ctr_b, CTR_A6, true, "ctrB -> ctrA (IPv6)"),
    ] {
        let mut o = t.ping(ns, &args(dst, v6));
        if o.ok() && !o.stdout.contains(" 0% packet loss") {
            // One echo of three lost once (seen on wire under a loaded CI
            // machine, with both encapds counting every packet in and out)
            // is reported and the three pings repeated: a data path that
            // loses packets loses them again.
            eprintln!("{what}: a lost echo, pinging again:\n{}", o.text());
            o = t.ping(ns, &args(dst, v6));
        }
        assert_ping_ok(&o, what);
        let replies: Vec<&str> = o.stdout.lines().filter(|l| l.contains("bytes from")).collect();
        assert!(
            replies.len() == 3 && replies.iter().all(|l| l.contains("ttl=61")),
            "{what}: expected ttl=61 in every reply:\n{}",
            o.stdout
        );
    }
    // 12 echo requests/replies crossed nodeA each way; nothing was dropped
    // except, possibly, the kernel's own multicast chatter.
    let after = t.counters(Node::A);
    assert!(after.egress_pkts - before.egress_pkts >= 12, "egress counter did not count the pings: {before:?} -> {after:?}");
    assert!(after.ingress_pkts - before.ingress_pkts >= 12, "ingress counter did not count the pings: {before:?} -> {after:?}");
    let unexpected = filter_drops(&after);
    assert_eq!(unexpected, 0, "unexpected drops on nodeA: {after:?}");
}

// ---------------------------------------------------------------------------
// 2. bulk TCP: SHA-256 of what was sent equals SHA-256 of what arrived

const TCP_SEED: u64 = 0x5eed_e9ca_9d00_0001;

fn check_tcp(engine: &str, u: Underlay, v6: bool, total: usize) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let to: SocketAddr =
        if v6 { (CTR_B6.parse::<Ipv6Addr>().unwrap(), 5201).into() } else { (CTR_B.parse::<Ipv4Addr>().unwrap(), 5201).into() };
    let before = t.counters(Node::A);
    let start = Instant::now();
    let Transfer { sent, sent_hash, got, got_hash, .. } =
        hashed_transfer(&t.ctr_a, &t.ctr_b, to, TCP_SEED, total, Duration::from_secs(150));
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{engine}: TCP {} {} MB in {secs:.2} s ({:.0} Mbit/s)",
        if v6 { "IPv6" } else { "IPv4" },
        total >> 20,
        total as f64 * 8.0 / secs / 1e6
    );
    assert_eq!(sent, total);
    assert_eq!(got, sent, "receiver got {got} bytes of {sent}");
    assert_eq!(got_hash, sent_hash, "SHA-256 of received data differs from what was sent");
    // The bytes really went through encapd on nodeA (not some other path).
    let after = t.counters(Node::A);
    assert!(
        after.egress_bytes - before.egress_bytes >= total as u64,
        "nodeA encapd egress bytes grew by {} only, for a {total}-byte transfer",
        after.egress_bytes - before.egress_bytes
    );
}

fn tcp(engine: &str, u: Underlay) {
    check_tcp(engine, u, false, 100 << 20);
}

fn tcp6(engine: &str, u: Underlay) {
    check_tcp(engine, u, true, 20 << 20);
}

// ---------------------------------------------------------------------------
// 3. UDP datagrams of several sizes, up to the MTU, all intact

const UDP_MAGIC: &[u8; 4] = b"ENCP";

fn udp_payload(seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[..4].copy_from_slice(UDP_MAGIC);
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    p[8..10].copy_from_slice(&(size as u16).to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(10) {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) as u8;
    }
    p
}

/// Sends `bursts` of datagrams (sizes given) from ctrA to ctrB, each burst
/// back to back, `pause` between bursts; asserts every datagram arrives
/// once and intact (panicking with both nodes' counters otherwise).
/// Sends `bursts` and checks every datagram arrived intact, once. A loss
/// is tolerated only when the kernel counted at least as many drops
/// meanwhile (on nodeB's or ctrB's links, in ctrB's UDP layer, or in a
/// CPU's receive backlog, which other tests on the machine share): the
/// callers assert separately that both gateways forwarded every packet.
fn check_udp(t: &mut Topology, v6: bool, bursts: &[Vec<usize>], pause: Duration) {
    let namespaces = [t.node_b.as_str(), t.ctr_b.as_str()];
    let before = KernelDrops::read(&namespaces);
    if let Err((lost, e)) = send_udp(t, v6, bursts, pause) {
        let dropped = KernelDrops::read(&namespaces).since(&before);
        let counters = format!("nodeA: {:?}\nnodeB: {:?}", t.counters(Node::A), t.counters(Node::B));
        assert!(lost as u64 <= dropped.total(), "{e}\nkernel drops meanwhile: {dropped:?}\n{counters}");
        eprintln!("tolerated, the kernel counted the drops ({dropped:?}): {e}\n{counters}");
    }
}

/// Sends `bursts` from ctrA to ctrB; on loss, returns how many datagrams
/// were lost and which.
fn send_udp(t: &Topology, v6: bool, bursts: &[Vec<usize>], pause: Duration) -> Result<(), (usize, String)> {
    let (bind, dst): (SocketAddr, SocketAddr) = if v6 {
        ((Ipv6Addr::UNSPECIFIED, 9001).into(), (CTR_B6.parse::<Ipv6Addr>().unwrap(), 9001).into())
    } else {
        ((Ipv4Addr::UNSPECIFIED, 9000).into(), (CTR_B.parse::<Ipv4Addr>().unwrap(), 9000).into())
    };
    let src: SocketAddr = if v6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let rx = in_netns(&t.ctr_b, || UdpSocket::bind(bind)).unwrap();
    let tx = in_netns(&t.ctr_a, || UdpSocket::bind(src)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    set_rcvbuf(&rx, 16 << 20);
    let sizes: Vec<usize> = bursts.iter().flatten().copied().collect();
    let expected = sizes.len();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut seen = vec![false; expected];
            let mut buf = [0u8; 65536];
            let mut count = 0;
            while count < expected {
                let n = match rx.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                    Err(e) => panic!("UDP receive: {e}"),
                };
                assert!(n >= 10 && &buf[..4] == UDP_MAGIC, "foreign datagram of {n} bytes");
                let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                let size = usize::from(u16::from_be_bytes([buf[8], buf[9]]));
                assert!((seq as usize) < expected, "datagram with unknown sequence number {seq}");
                assert_eq!(n, size, "datagram {seq} arrived with {n} bytes instead of {size}");
                assert!(buf[..n] == udp_payload(seq, size)[..], "datagram {seq} ({size} bytes) arrived corrupted");
                assert!(!seen[seq as usize], "datagram {seq} arrived twice");
                seen[seq as usize] = true;
                count += 1;
            }
            seen
        });
        let mut seq = 0u32;
        for burst in bursts {
            for &size in burst {
                let p = udp_payload(seq, size);
                let n = tx.send_to(&p, dst).unwrap_or_else(|e| panic!("sending a {size}-byte datagram: {e}"));
                assert_eq!(n, size);
                seq += 1;
            }
            std::thread::sleep(pause);
        }
        let seen = receiver.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let missing: Vec<String> =
            seen.iter().enumerate().filter(|&(_, &s)| !s).map(|(i, _)| format!("#{i} ({} bytes)", sizes[i])).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err((
                missing.len(),
                format!("{} of {expected} datagrams lost ({}): {:?}", missing.len(), if v6 { "IPv6" } else { "IPv4" }, missing),
            ))
        }
    })
}

/// `per_size` datagrams of each size, one at a time.
fn one_by_one(sizes: &[usize], per_size: usize) -> Vec<Vec<usize>> {
    sizes.iter().flat_map(|&s| std::iter::repeat_n(vec![s], per_size)).collect()
}

fn udp(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    // TUN MTU 1472 (underlay 1500 - 28): the largest UDP payload is
    // 1472 - 28 over IPv4 and 1472 - 48 over IPv6.
    let mtu = tun_mtu(&t, Node::A);
    assert_eq!(mtu, 1472, "TUN MTU on nodeA");
    let before = t.counters(Node::A);
    check_udp(&mut t, false, &one_by_one(&[64, 512, 1444], 200), Duration::from_micros(500));
    check_udp(&mut t, true, &one_by_one(&[64, 512, 1424], 200), Duration::from_micros(500));
    let after = t.counters(Node::A);
    assert!(after.egress_pkts - before.egress_pkts >= 1200, "{before:?} -> {after:?}");
    assert_eq!(after.drop("too_big"), 0, "an MTU-sized datagram was refused: {after:?}");
}

/// Bursts shaped to exercise batching: runs of equal sizes (sent as one
/// GSO send, and coalesced by GRO on the far side) ending in a shorter
/// datagram (a GSO tail) or a larger one (which must start a new run).
fn udp_burst(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let mut prng = Prng::new(0xb0b5);
    let mut bursts = Vec::new();
    let (mut packets, mut bytes) = (0u64, 0u64);
    for v6 in [false, true] {
        let max = if v6 { 1424 } else { 1444 };
        bursts.clear();
        for _ in 0..100 {
            let size = [64, 200, 700, 1200, max][(prng.next_u64() % 5) as usize];
            let run = 1 + (prng.next_u64() % 40) as usize;
            let mut burst = vec![size; run];
            match prng.next_u64() % 3 {
                0 => burst.push(size / 2),
                1 => burst.push(max),
                _ => {}
            }
            bursts.push(burst);
        }
        check_udp(&mut t, v6, &bursts, Duration::from_millis(3));
        let header = if v6 { 48 } else { 28 };
        packets += bursts.iter().flatten().count() as u64;
        bytes += bursts.iter().flatten().map(|&s| (s + header) as u64).sum::<u64>();
    }
    // Both gateways counted exactly these inner packets and bytes.
    let (a, b) = (t.counters(Node::A), t.counters(Node::B));
    eprintln!("{engine}: udp_burst: {packets} packets, {bytes} bytes; nodeA {a:?}; nodeB {b:?}");
    assert_eq!((a.egress_pkts, a.egress_bytes), (packets, bytes), "nodeA egress counters");
    assert_eq!((b.ingress_pkts, b.ingress_bytes), (packets, bytes), "nodeB ingress counters");
}

/// Many flows between one pair of containers spread over both workers of
/// the receiving node (the sockets' reuseport group steers by the inner
/// flow; every datagram has the same outer addresses and ports, so the
/// kernel's own choice would put them all on one socket), and each flow
/// stays on one worker.
fn flows_spread_over_workers(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    const FLOWS: u16 = 64;
    const PER_FLOW: u64 = 20;
    let mut t = topology(engine, u);
    let before = t.counters(Node::B);
    let receiver = in_netns(&t.ctr_b, || UdpSocket::bind((CTR_B, 9300))).unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let senders: Vec<UdpSocket> = (0..FLOWS).map(|_| udp_socket(&t.ctr_a, CTR_A)).collect();
    let mut buf = [0u8; 256];
    let mut got = 0u64;
    for round in 0..PER_FLOW {
        for s in &senders {
            s.send_to(&round.to_be_bytes(), (CTR_B, 9300)).unwrap();
        }
        // Paced by what arrives, so no queue overflows on a busy machine.
        for _ in 0..FLOWS {
            match receiver.recv(&mut buf) {
                Ok(_) => got += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("receiving: {e}"),
            }
        }
    }
    let sent = u64::from(FLOWS) * PER_FLOW;
    let after = t.counters_until(Node::B, Duration::from_secs(5), |c| c.ingress_pkts - before.ingress_pkts >= sent);
    let per_worker: Vec<u64> = after.per_worker.iter().zip(&before.per_worker).map(|(a, b)| a.1 - b.1).collect();
    eprintln!("{engine}: {sent} datagrams in {FLOWS} flows, {got} received; nodeB ingress per worker {per_worker:?}");
    let total: u64 = per_worker.iter().sum();
    assert!(total >= sent, "nodeB ingress {per_worker:?} < {sent} sent");
    assert_eq!(per_worker.len(), 2);
    for &n in &per_worker {
        assert!(n >= sent / 4, "flows not spread over the workers: {per_worker:?}");
        // Each worker carries whole flows (unless a stray packet, such as
        // IPv6 neighbour discovery, crossed during the test).
        if total == sent {
            assert_eq!(n % PER_FLOW, 0, "a flow was split across workers: {per_worker:?}");
        }
    }
}

/// Sixteen TCP streams from ctrA to ctrB at once, as `iperf3 -P` opens
/// them: connect() takes the source ports (Linux hands connect() even
/// ones). Both workers of the receiving node must carry some of them, on
/// both underlay profiles, and every stream must arrive intact. With
/// sixteen streams a fair hash leaves a worker without one in 2 of 65,536
/// runs; the bound is one stream's share, halved. (That the hash spreads
/// consecutive even ports, which a parity-bound hash did not, is the unit
/// test `sys::steering::tests::connects_even_ports_spread_too`; here the
/// ports connect() picks are spread too widely to show it every time.)
fn tcp_streams_spread_over_workers(u: Underlay) {
    if !require_root() {
        return;
    }
    const STREAMS: u64 = 16;
    const EACH: usize = 8 << 20;
    let mut t = topology("uring", u);
    let before = t.counters(Node::B);
    let to: SocketAddr = (CTR_B.parse::<Ipv4Addr>().unwrap(), 5201).into();
    let pairs = common::traffic::tcp_pairs(&t.ctr_a, &t.ctr_b, to, STREAMS as usize);
    let ports: Vec<u16> = pairs.iter().map(|(tx, _)| tx.local_addr().unwrap().port()).collect();
    let start = Instant::now();
    let ready = std::sync::Barrier::new(2 * pairs.len());
    let ready = &ready;
    let done: Vec<Transfer> = std::thread::scope(|s| {
        let threads: Vec<_> = pairs
            .into_iter()
            .enumerate()
            .map(|(i, pair)| {
                common::traffic::spawn_hashed_transfer(
                    s,
                    pair,
                    TCP_SEED + i as u64,
                    EACH,
                    start,
                    Duration::from_secs(120),
                    format!("stream {i}: "),
                    Some(ready),
                )
            })
            .collect();
        threads.into_iter().map(|th| th.join()).collect()
    });
    for (i, d) in done.iter().enumerate() {
        assert_eq!((d.got, &d.got_hash), (d.sent, &d.sent_hash), "stream {i} (port {}) arrived damaged", ports[i]);
    }
    let after = t.counters(Node::B);
    let per_worker: Vec<u64> = after.per_worker.iter().zip(&before.per_worker).map(|(a, b)| a.1 - b.1).collect();
    let total: u64 = per_worker.iter().sum();
    eprintln!("{u}: {STREAMS} TCP streams from ports {ports:?}; nodeB ingress packets per worker {per_worker:?}");
    for &n in &per_worker {
        assert!(n * STREAMS * 2 >= total, "the streams did not spread over nodeB's workers: {per_worker:?} (ports {ports:?})");
    }
}

#[test]
fn veth_tcp_streams_spread_over_workers() {
    tcp_streams_spread_over_workers(Underlay::Veth);
}

#[test]
fn wire_tcp_streams_spread_over_workers() {
    tcp_streams_spread_over_workers(Underlay::Wire);
}

fn tun_mtu(t: &Topology, node: Node) -> u32 {
    let o = ip(t.ns_of(node), &["-o", "link", "show", TUN]);
    let words: Vec<&str> = o.stdout.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "mtu").expect("mtu in ip link output");
    words[i + 1].parse().unwrap()
}

// ---------------------------------------------------------------------------
// 4. ICMP errors a router sends: time exceeded, unreachable, too big

fn icmp(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    // Warm up neighbour entries so the timings below measure encapd only.
    assert_ping_ok(&t.ping(&t.ctr_a, &["-c", "1", "-W", "2", CTR_B]), "warm-up");
    assert_ping_ok(&t.ping(&t.ctr_a, &["-6", "-c", "1", "-W", "2", CTR_B6]), "warm-up IPv6");
    let c0 = t.counters(Node::A);

    // TTL 2: nodeA's kernel forwards it with TTL 1, encapd answers.
    let o = t.ping(&t.ctr_a, &["-c", "1", "-W", "2", "-t", "2", CTR_B]);
    assert!(!o.ok() && o.stdout.contains("Time to live exceeded"), "expected time exceeded:\n{}", o.text());
    assert!(o.stdout.contains(&format!("From {CTR_B}")), "time exceeded should come from the destination address:\n{}", o.text());
    let o = t.ping(&t.ctr_a, &["-6", "-c", "1", "-W", "2", "-t", "2", CTR_B6]);
    assert!(!o.ok() && o.stdout.contains("Time exceeded"), "expected IPv6 time exceeded:\n{}", o.text());
    let c1 = t.counters(Node::A);
    assert_eq!(c1.drop("ttl_expired") - c0.drop("ttl_expired"), 2, "{c0:?} -> {c1:?}");

    // No lease for the destination: unreachable, at once (no 5 s timeout).
    for (v6, dst) in [(false, "100.96.7.7"), (true, "fd00:96:7::7")] {
        let mut args = vec!["-c", "1", "-W", "5", dst];
        if v6 {
            args.insert(0, "-6");
        }
        let o = t.ping(&t.ctr_a, &args);
        assert!(!o.ok() && o.stdout.to_lowercase().contains("unreachable"), "expected unreachable for {dst}:\n{}", o.text());
        assert!(o.elapsed < Duration::from_millis(1500), "ping {dst} took {:?}: the unreachable error did not reach the sender", o.elapsed);
    }
    let o = t.ping(&t.ctr_a, &["-c", "2", "-W", "2", "100.96.7.7"]);
    assert!(!o.ok() && o.stdout.contains("Unreachable"), "expected unreachable:\n{}", o.text());
    let c2 = t.counters(Node::A);
    assert_eq!(c2.drop("no_route") - c1.drop("no_route"), 4, "{c1:?} -> {c2:?}");

    // Larger than the underlay can carry: raise the TUN MTU so the kernel
    // hands encapd a 1500-byte packet; encapd must answer with mtu = 1472.
    ip(&t.node_a, &["link", "set", TUN, "mtu", "1500"]);
    let o = t.ping(&t.ctr_a, &["-M", "do", "-s", "1472", "-c", "1", "-W", "2", CTR_B]);
    assert!(
        !o.ok() && o.stdout.contains("Frag needed") && o.stdout.contains("mtu = 1472"),
        "expected frag needed (mtu = 1472):\n{}",
        o.text()
    );
    let o = t.ping(&t.ctr_a, &["-6", "-M", "do", "-s", "1452", "-c", "1", "-W", "2", CTR_B6]);
    assert!(
        !o.ok() && o.stdout.contains("Packet too big") && o.stdout.contains("mtu=1472"),
        "expected packet too big (mtu=1472):\n{}",
        o.text()
    );
    let c3 = t.counters(Node::A);
    assert_eq!(c3.drop("too_big") - c2.drop("too_big"), 2, "{c2:?} -> {c3:?}");
    assert!(c3.icmp - c0.icmp >= 8, "ICMP errors sent: {} -> {}", c0.icmp, c3.icmp);

    // A packet that fits still goes through.
    assert_ping_ok(&t.ping(&t.ctr_a, &["-M", "do", "-s", "1444", "-c", "1", "-W", "2", CTR_B]), "MTU-sized ping");
}

/// Datagrams of the flood that earn ICMP errors: more than the limit lets
/// through (a burst of 100, then 1,000/s per worker) in the time they take.
const FLOOD: u32 = 5_000;
const UNROUTED: Ipv4Addr = Ipv4Addr::new(100, 96, 7, 7);

/// A raw ICMP socket in `ns`: it receives a copy of every ICMP message
/// addressed there. (std has no raw-socket type; `UdpSocket`'s `recv` and
/// read timeout are plain socket calls that work on any datagram socket.)
fn icmp_listener(ns: &str) -> UdpSocket {
    let fd = in_netns(ns, || {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
        assert!(raw >= 0, "socket(SOCK_RAW, IPPROTO_ICMP): {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(raw) }
    });
    let sock = UdpSocket::from(fd);
    set_rcvbuf(&sock, 8 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    sock
}

/// Destination-unreachable errors about packets to `dst` that arrive at
/// `sock`, until none has come for 500 ms.
fn count_unreachables(sock: &UdpSocket, dst: Ipv4Addr) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok(len) = sock.recv(&mut buf) {
        // IP header, ICMP type/code/checksum/unused, then the offending
        // packet's IP header (its destination at bytes 16..20).
        let p = &buf[..len];
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let quoted_dst = ihl + 8 + 16;
        if p.len() >= quoted_dst + 4 && p[ihl] == 3 && p[quoted_dst..quoted_dst + 4] == dst.octets() {
            n += 1;
        }
    }
    n
}

/// nodeA's ICMP figures from `/metrics`, per worker: (errors sent,
/// errors over the rate limit), and the `no_route` drops (each of which
/// earned an error).
fn icmp_figures(t: &Topology) -> (Vec<(f64, f64)>, f64) {
    let text = t.scrape(Node::A);
    let per_worker = ["0", "1"]
        .map(|w| {
            let sent = metric_sum(&text, "encapd_icmp_sent_total", &[("worker", w)]);
            (sent, metric_sum(&text, "encapd_icmp_rate_limited_total", &[("worker", w)]))
        })
        .to_vec();
    (per_worker, metric_sum(&text, "encapd_drops_total", &[("reason", "no_route")]))
}

/// ICMP errors are rate-limited per worker (a bucket of 100, refilled at
/// 1,000/s), and every error the limit holds back is counted: a flood of
/// datagrams from ctrA to an overlay address no peer owns earns one error
/// each; at most the limit is sent (per worker: 100 + 1,000/s over the
/// time between the two readings), the sender receives every one sent,
/// and sent + rate-limited = the datagrams that earned one (the
/// `no_route` drops). The SIGUSR1 summary says the same as `/metrics`.
fn icmp_rate_limit(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let listener = icmp_listener(&t.ctr_a);
    let tx = udp_socket(&t.ctr_a, CTR_A);
    // Idle for longer than a bucket takes to fill (100 ms).
    std::thread::sleep(Duration::from_millis(300));
    let window = Instant::now();
    let (w0, no_route0) = icmp_figures(&t);
    let flood_start = Instant::now();
    for seq in 0..FLOOD {
        // One flow, as fast as the socket takes them; a refused send (an
        // error reported back on the socket) just sends nothing.
        let _ = tx.send_to(&seq.to_be_bytes(), (UNROUTED, 9));
    }
    let flood_time = flood_start.elapsed();
    let received = count_unreachables(&listener, UNROUTED);
    let (w1, no_route1) = icmp_figures(&t);
    let window = window.elapsed();
    let per_worker: Vec<(u64, u64)> = w1.iter().zip(&w0).map(|(a, b)| ((a.0 - b.0) as u64, (a.1 - b.1) as u64)).collect();
    let earned = (no_route1 - no_route0) as u64;
    let sent: u64 = per_worker.iter().map(|w| w.0).sum();
    let limited: u64 = per_worker.iter().map(|w| w.1).sum();
    eprintln!(
        "{engine}: {FLOOD} datagrams to {UNROUTED} in {:.0} ms; {earned} earned an ICMP error: {sent} sent, {limited} rate-limited \
         (per worker sent/limited {per_worker:?}) within {:.0} ms; {received} received by the sender",
        flood_time.as_secs_f64() * 1e3,
        window.as_secs_f64() * 1e3
    );
    assert!(earned >= u64::from(FLOOD) / 2, "only {earned} of {FLOOD} datagrams reached encapd");
    assert_eq!(sent + limited, earned, "every datagram that earned an ICMP error was answered or counted as rate-limited");
    let bound = 100 + (window.as_secs_f64() * 1000.0).ceil() as u64;
    for (w, &(w_sent, _)) in per_worker.iter().enumerate() {
        assert!(w_sent <= bound, "worker {w} sent {w_sent} ICMP errors in {window:?} (limit {bound})");
    }
    assert!(sent >= 100, "the burst of 100 was not sent: {sent}");
    assert!(limited > 0, "the flood never reached the limit: {sent} sent");
    assert_eq!(received, sent, "ICMP errors sent by encapd vs received by the sender");
    let c = t.counters(Node::A);
    let (w2, _) = icmp_figures(&t);
    let total = |i: usize| w2.iter().map(|w| if i == 0 { w.0 } else { w.1 }).sum::<f64>() as u64;
    assert_eq!((c.icmp, c.icmp_rate_limited), (total(0), total(1)), "the SIGUSR1 summary vs /metrics");
}

// ---------------------------------------------------------------------------
// 5. Ingress filter: crafted datagrams from the underlay

const INNER_PORT: u16 = 7777;

fn inner(src: [u8; 4], dst: [u8; 4], tag: &str) -> Vec<u8> {
    Packet::new(src, dst).udp(40000, INNER_PORT, tag.as_bytes())
}

fn inner6(src: Ipv6Addr, dst: Ipv6Addr, tag: &str) -> Vec<u8> {
    Packet::new(src, dst).udp(40000, INNER_PORT, tag.as_bytes())
}

/// Sends `datagram` to nodeA's encapd from `sock` and waits until the drop
/// counter `reason` has risen by one; asserts nothing else was counted.
fn expect_drop(t: &mut Topology, sock: &UdpSocket, datagram: &[u8], reason: &str, case: &str) {
    let before = t.counters(Node::A);
    sock.send_to(datagram, ENCAPD_A).unwrap_or_else(|e| panic!("{case}: send: {e}"));
    let after = t.counters_until(Node::A, Duration::from_secs(3), |c| c.drop(reason) > before.drop(reason));
    assert_eq!(after.drop(reason), before.drop(reason) + 1, "{case}: drop counter {reason} did not rise by 1: {before:?} -> {after:?}");
    assert_eq!(filter_drops(&after), filter_drops(&before) + 1, "{case}: other drop counters moved too: {before:?} -> {after:?}");
    assert_eq!(after.ingress_pkts, before.ingress_pkts, "{case}: a rejected datagram was written to the TUN");
}

/// Drops other than `not_forwardable` (the kernel's own IPv6 multicast
/// chatter into the TUN, which arrives at any time).
fn filter_drops(c: &Counters) -> u64 {
    c.drops_total - c.drop("not_forwardable")
}

fn ingress_filter(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let (a, b, nowhere, spoof) = ([100, 96, 1, 2], [100, 96, 2, 3], [100, 96, 3, 3], [100, 96, 9, 9]);

    let listener = in_netns(&t.ctr_a, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, INNER_PORT))).unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let node_b = t.node_b.clone();
    let from_b = udp_socket(&node_b, NODE_B_UNDERLAY);
    ip(&node_b, &["addr", "add", "198.18.0.66/24", "dev", "ul", "nodad"]);
    let from_stranger = udp_socket(&node_b, "198.18.0.66");

    expect_drop(&mut t, &from_stranger, &inner(b, a, "BAD unknown sender"), "unknown_sender", "unknown sender");
    expect_drop(&mut t, &from_b, &inner(spoof, a, "BAD spoofed"), "spoofed_source", "spoofed inner source");
    expect_drop(&mut t, &from_b, &inner(b, nowhere, "BAD wrong dst"), "wrong_destination", "wrong inner destination");
    let mut v5 = inner(b, a, "BAD version 5");
    v5[0] = 0x55;
    expect_drop(&mut t, &from_b, &v5, "malformed", "IP version 5");
    let good = inner(b, a, "BAD truncated");
    expect_drop(&mut t, &from_b, &good[..10], "truncated", "10-byte truncated packet");
    let mut ihl4 = inner(b, a, "BAD ihl 4");
    ihl4[0] = 0x44;
    expect_drop(&mut t, &from_b, &ihl4, "bad_header_length", "IHL 4");
    let mut long = inner(b, a, "BAD length");
    let claimed = (long.len() + 8) as u16;
    long[2..4].copy_from_slice(&claimed.to_be_bytes());
    fix_ipv4_header_checksum(&mut long);
    expect_drop(&mut t, &from_b, &long, "length_mismatch", "total length beyond the datagram");

    // Positive control: the same kind of datagram from the right peer with
    // a source in its subnet is delivered.
    let before = t.counters(Node::A);
    from_b.send_to(&inner(b, a, "GOOD"), ENCAPD_A).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match listener.recv_from(&mut buf) {
            Ok((n, from)) => {
                got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                if got.iter().any(|(p, _)| p == "GOOD") {
                    // Linger briefly to catch anything that should not come.
                    std::thread::sleep(Duration::from_millis(300));
                    while let Ok((n, from)) = listener.recv_from(&mut buf) {
                        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
                    }
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("receive at ctrA: {e}"),
        }
    }
    let payloads: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(payloads, ["GOOD"], "ctrA must receive the legitimate datagram and nothing else");
    assert_eq!(got[0].1, SocketAddr::from(([100, 96, 2, 3], 40000)), "inner source preserved");
    let after = t.counters(Node::A);
    assert_eq!(after.ingress_pkts, before.ingress_pkts + 1, "{before:?} -> {after:?}");
    assert_eq!(filter_drops(&after), filter_drops(&before), "{before:?} -> {after:?}");

    // The same for IPv6 inner packets.
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = (CTR_A6.parse().unwrap(), CTR_B6.parse().unwrap());
    let listener6 = in_netns(&t.ctr_a, || UdpSocket::bind((a6, INNER_PORT))).unwrap();
    listener6.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let spoof6: Ipv6Addr = "fd00:96:9::9".parse().unwrap();
    expect_drop(&mut t, &from_b, &inner6(spoof6, a6, "BAD spoofed6"), "spoofed_source", "spoofed IPv6 source");
    let elsewhere6: Ipv6Addr = "fd00:96:3::3".parse().unwrap();
    expect_drop(&mut t, &from_b, &inner6(b6, elsewhere6, "BAD dst6"), "wrong_destination", "wrong IPv6 destination");
    let mut short6 = inner6(b6, a6, "BAD length6");
    short6.truncate(short6.len() - 2);
    expect_drop(&mut t, &from_b, &short6, "length_mismatch", "IPv6 payload length beyond the datagram");
    expect_drop(&mut t, &from_stranger, &inner6(b6, a6, "BAD stranger6"), "unknown_sender", "IPv6 from unknown sender");
    from_b.send_to(&inner6(b6, a6, "GOOD6"), ENCAPD_A).unwrap();
    let (n, from) = listener6.recv_from(&mut buf).expect("the legitimate IPv6 datagram was not delivered to ctrA");
    assert_eq!(&buf[..n], b"GOOD6", "ctrA must receive the legitimate IPv6 datagram and nothing else");
    assert_eq!(from, SocketAddr::from((b6, 40000)));

    // And ordinary traffic still flows both ways.
    assert_ping_ok(&t.ping(&t.ctr_b, &["-c", "2", "-i", "0.2", "-W", "2", CTR_A]), "ping after the filter tests");
}

/// A zero-length datagram from a peer is malformed: dropped and counted.
fn ingress_empty_datagram(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let from_b = udp_socket(&t.node_b, NODE_B_UNDERLAY);
    let before = t.counters(Node::A);
    from_b.send_to(&[], ENCAPD_A).unwrap();
    // The datagram was received...
    let mid = t.counters_until(Node::A, Duration::from_secs(3), |c| c.ingress_receives > before.ingress_receives);
    assert_eq!(mid.ingress_receives, before.ingress_receives + 1, "the empty datagram was not received: {before:?} -> {mid:?}");
    // ...and must be accounted for as malformed, not vanish uncounted.
    let after = t.counters_until(Node::A, Duration::from_secs(1), |c| c.drop("malformed") > before.drop("malformed"));
    assert_eq!(after.drop("malformed"), before.drop("malformed") + 1, "empty datagram not counted as malformed: {before:?} -> {after:?}");
    assert_eq!(after.ingress_pkts, before.ingress_pkts);
    assert_ping_ok(&t.ping(&t.ctr_b, &["-c", "1", "-W", "2", CTR_A]), "ping after the empty datagram");
}

// ---------------------------------------------------------------------------
// Peers file changes reach the workers (and bad ones are refused)

fn wait_log(t: &Topology, node: Node, needle: &str) {
    common::wait_for(Duration::from_secs(5), || t.log(node).contains(needle).then_some(()))
        .unwrap_or_else(|| panic!("encapd ({node:?}) never logged {needle:?}:\n{}", t.log(node)));
}

fn peers_reload(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    let good = std::fs::read_to_string(t.dir().join("a/peers.toml")).unwrap();
    assert_ping_ok(&t.ping(&t.ctr_a, &["-c", "1", "-W", "2", CTR_B]), "ping before any change");

    // A peer claiming our own subnet: the whole change is refused.
    let before = t.counters(Node::A);
    t.replace_peers(Node::A, &format!("{good}\n[[peer]]\nsubnet = \"100.96.1.0/25\"\npublic_ip = \"198.18.0.9\"\n"));
    let after = t.counters_until(Node::A, Duration::from_secs(5), |c| c.reload_failures > before.reload_failures);
    assert!(after.reload_failures > before.reload_failures, "a peers file claiming our subnet was not refused: {after:?}");
    assert_eq!(after.tables_published, 0, "a refused change published a table: {after:?}");
    assert_ping_ok(&t.ping(&t.ctr_a, &["-c", "1", "-W", "2", CTR_B]), "ping after a refused change");

    // No peers at all: B's subnet becomes unreachable, and B an unknown sender.
    t.replace_peers(Node::A, "peer = []\n");
    wait_log(&t, Node::A, "subnet table version 2 published");
    let c0 = t.counters(Node::A);
    let o = t.ping(&t.ctr_a, &["-c", "1", "-W", "3", CTR_B]);
    assert!(!o.ok() && o.stdout.contains("Unreachable"), "expected unreachable once the peer is gone:\n{}", o.text());
    let o = t.ping(&t.ctr_b, &["-c", "1", "-W", "1", CTR_A]);
    assert!(!o.ok(), "nodeA still accepts traffic from a removed peer:\n{}", o.text());
    let c1 = t.counters(Node::A);
    assert!(c1.drop("no_route") > c0.drop("no_route"), "{c0:?} -> {c1:?}");
    assert!(c1.drop("unknown_sender") > c0.drop("unknown_sender"), "{c0:?} -> {c1:?}");

    // Back again.
    t.replace_peers(Node::A, &good);
    wait_log(&t, Node::A, "subnet table version 3 published");
    assert_ping_ok(&t.ping(&t.ctr_a, &["-c", "2", "-i", "0.2", "-W", "2", CTR_B]), "ping after restoring the peer");
    let c2 = t.counters(Node::A);
    assert_eq!(c2.tables_published, 2, "{c2:?}");
    assert_eq!(c2.table_version, 3, "workers still use an old table: {c2:?}");
}

// ---------------------------------------------------------------------------
// 6. Clean stop

fn clean_stop(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = topology(engine, u);
    assert_ping_ok(&t.ping(&t.ctr_a, &["-c", "1", "-W", "2", CTR_B]), "ping before stopping");
    for node in [Node::A, Node::B] {
        let start = Instant::now();
        let status = t.stop_node(node);
        assert_eq!(status.code(), Some(0), "encapd ({node:?}) exit status on SIGTERM: {status}\n{}", t.log(node));
        // Every read and receive was cancelled and reaped before the buffers
        // were freed (by `ASYNC_CANCEL_ANY`, or one by one without it).
        assert!(!t.log(node).contains("still in flight at shutdown"), "io_uring teardown incomplete:\n{}", t.log(node));
        assert!(start.elapsed() < Duration::from_secs(5));
        let ns = t.ns_of(node).to_owned();
        let o = common::run("ip", &["-n", &ns, "link", "show", TUN]);
        assert!(!o.ok(), "{TUN} still exists in {ns} after encapd stopped:\n{}", o.stdout);
        let log = t.log(node);
        let summary: Counters = common::parse_counters(&log).expect("a final counter summary on exit");
        assert!(summary.egress_pkts >= 1 && summary.ingress_pkts >= 1, "final summary misses the ping: {summary:?}");
    }
    // With both gateways gone, the overlay is down.
    let o = t.ping(&t.ctr_a, &["-c", "1", "-W", "1", CTR_B]);
    assert!(!o.ok(), "ping succeeded with encapd stopped:\n{}", o.text());
}

macro_rules! engine_tests {
    ($underlay:ident [$spread:meta]: $($engine:ident),*) => {
        mod $underlay {$(
        mod $engine {
            use super::super as s;

            fn u() -> encapd_testbed::Underlay {
                stringify!($underlay).parse().expect("an underlay profile")
            }

            #[test]
            fn ping() {
                s::ping(stringify!($engine), u());
            }
            #[test]
            fn tcp() {
                s::tcp(stringify!($engine), u());
            }
            #[test]
            fn tcp6() {
                s::tcp6(stringify!($engine), u());
            }
            #[test]
            fn udp() {
                s::udp(stringify!($engine), u());
            }
            #[test]
            fn udp_burst() {
                s::udp_burst(stringify!($engine), u());
            }
            #[test]
            fn icmp() {
                s::icmp(stringify!($engine), u());
            }
            #[test]
            fn icmp_rate_limit() {
                s::icmp_rate_limit(stringify!($engine), u());
            }
            #[test]
            fn ingress_filter() {
                s::ingress_filter(stringify!($engine), u());
            }
            #[test]
            fn ingress_empty_datagram() {
                s::ingress_empty_datagram(stringify!($engine), u());
            }
            #[test]
            fn peers_reload() {
                s::peers_reload(stringify!($engine), u());
            }
            #[test]
            #[$spread]
            fn flows_spread_over_workers() {
                s::flows_spread_over_workers(stringify!($engine), u());
            }
            #[test]
            fn clean_stop() {
                s::clean_stop(stringify!($engine), u());
            }
        }
        )*}
    };
}

// Every variant on both underlay profiles (see common::underlay): `veth::uring::tcp`, `wire::uring::tcp`, ...
// The attribute in brackets goes on flows_spread_over_workers
// (`cfg(all())`: none).
engine_tests!(
    veth [cfg(all())]:
    uring,
    uring_no_multishot_read,
    uring_no_multishot_recv,
    uring_no_buf_ring,
    uring_busy_poll,
    uring_trust_outer,
    mmsg,
    classic
);
// On the wire profile the receiving veth runs GRO, which merges the
// datagrams of one outer 4-tuple into one packet before the reuseport
// group steers it by its first datagram's inner flow. When every flow
// between two nodes shared the outer 4-tuple, a flow's datagrams landed
// on both workers ([657, 623] of 64 flows x 20: not whole flows); with
// `source_ports = "flow"` (the default) a source port carries the flows
// of one receiving worker only, and each flow stays on one worker again.
engine_tests!(
    wire [cfg(all())]:
    uring,
    uring_no_multishot_read,
    uring_no_multishot_recv,
    uring_no_buf_ring,
    uring_busy_poll,
    uring_trust_outer,
    mmsg,
    classic
);

/// Runs last by name order within a single-threaded run, but is valid at any
/// time: no namespace of a *finished* topology may remain. (Namespaces of
/// topologies still running in other test threads are expected.)
#[test]
fn zz_no_namespace_leak_from_a_finished_topology() {
    if !require_root() {
        return;
    }
    let names = {
        let t = Topology::new("classic");
        vec![t.ctr_a.clone(), t.node_a.clone(), t.node_b.clone(), t.ctr_b.clone()]
    };
    let left: Vec<String> = common::our_namespaces().into_iter().filter(|ns| names.contains(ns)).collect();
    assert!(left.is_empty(), "namespaces left after Drop: {left:?}");
}
