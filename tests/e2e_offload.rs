//! End-to-end tests of the TUN-offload data path (`[dataplane] offload =
//! "auto"`, the default, with the `uring` and `mmsg` engines): TCP
//! super-packets read from the TUN are split in userspace and sent with UDP
//! GSO; GRO runs received are coalesced back into super-packets. Every
//! transfer is checked end to end by byte count and SHA-256, and the
//! counters must show that offloading really happened. Every test runs on
//! both underlay profiles (`veth::...`, `wire::...`; see
//! `common::underlay`).
//!
//! Root only, in namespaces (see `common::Topology`); without root the tests
//! print "skipped: needs root" and pass, unless `ENCAPD_REQUIRE_ROOT_TESTS=1`.
//! The loss/reordering test needs `ethtool` and `nft` (scripts/test.sh
//! installs them).

use encapd_testbed as common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::traffic::{Transfer, TransferThreads, spawn_hashed_transfer, tcp_pair};
use common::{CTR_A, CTR_A6, CTR_B, CTR_B6, Counters, Middle, Node, Options, Topology, Underlay, require_root};

const MB: usize = 1 << 20;
const GB: usize = 1 << 30;

/// What nodes log when the TUN has offloads (USO may follow), and when not.
const OFFLOADS_ON: &str = "TUN offloads csum+tso4";
const OFFLOADS_OFF: &str = "TUN offloads off";

// ---------------------------------------------------------------------------
// TCP flows with SHA-256 on both ends

/// Opens one TCP connection per address in `to` (listening in `to_ns`,
/// connecting from `from_ns`), then streams `total` pseudo-random bytes over
/// each, all flows at once (released together by a barrier). A flow that
/// stalls for 20 s, or a run longer than `limit`, fails the test. Returns
/// the flows and the wall-clock time of the whole run.
fn tcp_flows(from_ns: &str, to_ns: &str, to: &[SocketAddr], total: usize, seed: u64, limit: Duration) -> (Vec<Transfer>, Duration) {
    let pairs: Vec<_> = to.iter().map(|&dst| tcp_pair(from_ns, to_ns, dst)).collect();
    let barrier = Barrier::new(2 * pairs.len() + 1);
    let start = Instant::now();
    let flows = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .into_iter()
            .enumerate()
            .map(|(i, pair)| {
                let seed = seed.wrapping_add(i as u64 * 0x9e37_79b9);
                spawn_hashed_transfer(s, pair, seed, total, start, limit, format!("flow {i}: "), Some(&barrier))
            })
            .collect();
        barrier.wait();
        handles.into_iter().map(TransferThreads::join).collect()
    });
    (flows, start.elapsed())
}

fn assert_intact(flows: &[Transfer], total: usize, what: &str) {
    for (i, f) in flows.iter().enumerate() {
        assert_eq!(f.sent, total, "{what}, flow {i}: sender stopped early");
        assert_eq!(f.got, f.sent, "{what}, flow {i}: receiver got {} bytes of {}", f.got, f.sent);
        assert_eq!(f.got_hash, f.sent_hash, "{what}, flow {i}: SHA-256 of the received data differs from what was sent");
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

fn mbit(bytes: usize, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e6
}

/// One flow of `total` bytes from `from` to `to`; asserts it arrived intact
/// and returns the time it took.
fn transfer(t: &Topology, from: Node, to: SocketAddr, total: usize, seed: u64, limit: Duration, what: &str) -> Duration {
    let (from_ns, to_ns) = match from {
        Node::A => (&t.ctr_a, &t.ctr_b),
        Node::B => (&t.ctr_b, &t.ctr_a),
    };
    let (flows, took) = tcp_flows(from_ns, to_ns, &[to], total, seed, limit);
    assert_intact(&flows, total, what);
    eprintln!("{what}: {} MB in {:.2} s ({:.0} Mbit/s)", total / MB, took.as_secs_f64(), mbit(total, took));
    took
}

// ---------------------------------------------------------------------------
// Counter and log checks

/// Counter growth between two summaries.
fn delta(before: &Counters, after: &Counters) -> Counters {
    let mut d = after.clone();
    d.egress_pkts -= before.egress_pkts;
    d.egress_bytes -= before.egress_bytes;
    d.egress_sends -= before.egress_sends;
    d.ingress_pkts -= before.ingress_pkts;
    d.ingress_bytes -= before.ingress_bytes;
    d.ingress_receives -= before.ingress_receives;
    d.drops_total -= before.drops_total;
    for (reason, n) in d.drops.iter_mut() {
        *n -= before.drop(reason);
    }
    d
}

/// The kernel's packet counters of the node's TUN: `tx` counts what the
/// kernel handed encapd (one per read: a TSO super-packet counts once), `rx`
/// what encapd wrote (a coalesced super-packet counts once).
#[derive(Debug, Clone, Copy)]
struct TunPackets {
    rx: u64,
    tx: u64,
}

fn tun_packets(t: &Topology, node: Node) -> TunPackets {
    let o = common::ns_exec(
        t.ns_of(node),
        &["cat", "/sys/class/net/encap0/statistics/rx_packets", "/sys/class/net/encap0/statistics/tx_packets"],
        Duration::from_secs(10),
    );
    assert!(o.ok(), "reading the TUN statistics of node {node:?}: {}", o.text());
    let n: Vec<u64> = o.stdout.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(n.len(), 2, "unexpected TUN statistics: {:?}", o.stdout);
    TunPackets { rx: n[0], tx: n[1] }
}

/// A node's encapd counters and TUN packet counters at one moment.
#[derive(Debug, Clone)]
struct Snap {
    c: Counters,
    tun: TunPackets,
}

fn snap(t: &mut Topology, node: Node) -> Snap {
    Snap { c: t.counters(node), tun: tun_packets(t, node) }
}

/// Growth between two snapshots.
#[derive(Debug, Clone)]
struct Growth {
    c: Counters,
    tun: TunPackets,
}

fn growth(before: &Snap, after: &Snap) -> Growth {
    Growth { c: delta(&before.c, &after.c), tun: TunPackets { rx: after.tun.rx - before.tun.rx, tx: after.tun.tx - before.tun.tx } }
}

/// Drops other than `not_forwardable` (the kernel's own IPv6 multicast
/// chatter into the TUN). None may happen on a clean underlay: a refused
/// super-packet (`bad_offload_header`), a failed TUN write or send, a
/// malformed coalesced packet would all show here.
fn real_drops(c: &Counters) -> u64 {
    c.drops_total - c.drop("not_forwardable")
}

fn assert_no_drops(t: &mut Topology, what: &str) {
    for node in [Node::A, Node::B] {
        let c = t.counters(node);
        assert_eq!(real_drops(&c), 0, "{what}: unexpected drops on node {node:?}: {c:?}");
    }
}

/// The node's start-up line says whether its TUN has offloads.
fn assert_offloads(t: &Topology, node: Node, on: bool) {
    let log = t.log(node);
    let line =
        log.lines().find(|l| l.contains("TUN offloads")).unwrap_or_else(|| panic!("no start-up line in node {node:?}'s log:\n{log}"));
    let want = if on { OFFLOADS_ON } else { OFFLOADS_OFF };
    assert!(line.contains(want), "node {node:?}: expected {want:?} in its start-up line:\n{line}");
    assert!(line.contains("UDP GSO on"), "node {node:?}: UDP GSO is off:\n{line}");
}

/// The sending node read TSO super-packets from its TUN (far fewer reads
/// than packets forwarded) and sent them in UDP GSO trains (far fewer sends
/// than datagrams): a 64 KiB super-packet is ~45 datagrams in one send.
fn assert_egress_offloaded(g: &Growth, total: usize, what: &str) {
    let c = &g.c;
    assert!(c.egress_bytes >= total as u64, "{what}: the sender's encapd forwarded {} bytes of a {total}-byte transfer", c.egress_bytes);
    assert!(
        c.egress_sends * 4 < c.egress_pkts,
        "{what}: no GSO batching on the sender: {} packets in {} sends",
        c.egress_pkts,
        c.egress_sends
    );
    assert!(
        g.tun.tx * 4 < c.egress_pkts,
        "{what}: no TSO super-packets on the sender: {} packets from {} TUN reads",
        c.egress_pkts,
        g.tun.tx
    );
}

/// The receiving node got UDP GRO runs (fewer receives than packets) and
/// wrote coalesced super-packets to its TUN (fewer writes than packets).
fn assert_ingress_offloaded(g: &Growth, total: usize, what: &str) {
    let c = &g.c;
    assert!(
        c.ingress_bytes >= total as u64,
        "{what}: the receiver's encapd delivered {} bytes of a {total}-byte transfer",
        c.ingress_bytes
    );
    assert!(
        c.ingress_receives * 2 < c.ingress_pkts,
        "{what}: no GRO batching on the receiver: {} packets in {} receives",
        c.ingress_pkts,
        c.ingress_receives
    );
    assert!(g.tun.rx * 2 < c.ingress_pkts, "{what}: no coalescing on the receiver: {} packets in {} TUN writes", c.ingress_pkts, g.tun.rx);
}

fn describe(g: &Growth, egress: bool) -> String {
    if egress {
        format!("{} pkts from {} TUN reads in {} sends", g.c.egress_pkts, g.tun.tx, g.c.egress_sends)
    } else {
        format!("{} pkts in {} receives, {} TUN writes", g.c.ingress_pkts, g.c.ingress_receives, g.tun.rx)
    }
}

// ---------------------------------------------------------------------------
// 1. 1 GB each way, offloads on both nodes

fn bulk_both_ways(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = Topology::with(Options { underlay: u, ..Options::new(engine) });
    assert_offloads(&t, Node::A, true);
    assert_offloads(&t, Node::B, true);
    for (from, to, seed) in [(Node::A, addr(CTR_B, 5201), 0xa11ce), (Node::B, addr(CTR_A, 5202), 0xb0b)] {
        let rx_node = other(from);
        let what = format!("{engine}: 1 GB {from:?} -> {rx_node:?}");
        let (tx0, rx0) = (snap(&mut t, from), snap(&mut t, rx_node));
        transfer(&t, from, to, GB, seed, Duration::from_secs(120), &what);
        let (gtx, grx) = (growth(&tx0, &snap(&mut t, from)), growth(&rx0, &snap(&mut t, rx_node)));
        eprintln!("{what}: sender {}; receiver {}", describe(&gtx, true), describe(&grx, false));
        assert_egress_offloaded(&gtx, GB, &what);
        assert_ingress_offloaded(&grx, GB, &what);
    }
    assert_no_drops(&mut t, &format!("{engine}: bulk"));
}

fn other(node: Node) -> Node {
    if node == Node::A { Node::B } else { Node::A }
}

// ---------------------------------------------------------------------------
// 2. 8 interleaved flows

/// The containers' MTU (1500) is larger than the TUN's (1472): the first
/// full-sized segments of a connection die in nodeA's kernel, which answers
/// with "fragmentation needed". That ICMP is rate-limited, so of several
/// connections started at once only the first learns the path MTU at once;
/// the others wait for a retransmission timeout (~200 ms, long enough for a
/// 32 MB flow to finish). One DF ping of 1500 bytes teaches ctrA the path
/// MTU to ctrB beforehand (flannel avoids this by giving pods the TUN MTU).
fn learn_path_mtu(t: &Topology) {
    let o = t.ping(&t.ctr_a, &["-M", "do", "-s", "1472", "-c", "1", "-W", "2", CTR_B]);
    assert!(o.stdout.contains("mtu = 1472"), "expected \"frag needed, mtu = 1472\" for a 1500-byte ping:\n{}", o.text());
    let route = common::ns_exec(&t.ctr_a, &["ip", "route", "get", CTR_B], Duration::from_secs(10));
    assert!(route.stdout.contains("mtu 1472"), "ctrA did not learn the path MTU to {CTR_B}:\n{}", route.text());
}

const FLOWS: u16 = 8;

fn parallel_flows(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = Topology::with(Options { underlay: u, ..Options::new(engine) });
    assert_offloads(&t, Node::A, true);
    learn_path_mtu(&t);
    let total = 32 * MB;
    let to: Vec<SocketAddr> = (0..FLOWS).map(|i| addr(CTR_B, 5300 + i)).collect();
    let (a0, b0) = (snap(&mut t, Node::A), snap(&mut t, Node::B));
    let (flows, took) = tcp_flows(&t.ctr_a, &t.ctr_b, &to, total, 0xf10e5, Duration::from_secs(90));
    let what = format!("{engine}: {FLOWS} parallel flows");
    assert_intact(&flows, total, &what);
    let all = total * usize::from(FLOWS);
    eprintln!("{what}: {} MB in {:.2} s ({:.0} Mbit/s)", all / MB, took.as_secs_f64(), mbit(all, took));
    // They really ran at the same time: every flow was still receiving when
    // the last one got its first byte.
    let last_start = flows.iter().map(|f| f.first_byte).max().unwrap();
    let first_end = flows.iter().map(|f| f.last_byte).min().unwrap();
    assert!(last_start < first_end, "{what}: the flows did not overlap (one finished before another started)");
    let (ga, gb) = (growth(&a0, &snap(&mut t, Node::A)), growth(&b0, &snap(&mut t, Node::B)));
    eprintln!("{what}: sender {}; receiver {}", describe(&ga, true), describe(&gb, false));
    assert_egress_offloaded(&ga, all, &what);
    assert_ingress_offloaded(&gb, all, &what);
    assert_no_drops(&mut t, &what);
}

// ---------------------------------------------------------------------------
// 3. Interop: offloads on one side only

fn interop(engine: &str, u: Underlay, off: Node) {
    if !require_root() {
        return;
    }
    let mut opts = Options { underlay: u, ..Options::new(engine) };
    match off {
        Node::A => opts.extra_a = "offload = \"off\"\n".to_owned(),
        Node::B => opts.extra_b = "offload = \"off\"\n".to_owned(),
    }
    let on = other(off);
    let mut t = Topology::with(opts);
    assert_offloads(&t, on, true);
    assert_offloads(&t, off, false);
    let total = 200 * MB;
    for (from, to, seed) in [(Node::A, addr(CTR_B, 5401), 0x1a7e), (Node::B, addr(CTR_A, 5402), 0x2b7e)] {
        let rx_node = other(from);
        let what = format!("{engine}: offloads on {on:?} only, {from:?} -> {rx_node:?}");
        let (tx0, rx0) = (snap(&mut t, from), snap(&mut t, rx_node));
        transfer(&t, from, to, total, seed, Duration::from_secs(90), &what);
        let (gtx, grx) = (growth(&tx0, &snap(&mut t, from)), growth(&rx0, &snap(&mut t, rx_node)));
        eprintln!("{what}: sender {}; receiver {}", describe(&gtx, true), describe(&grx, false));
        if from == on {
            // The offloading side splits super-packets into MTU-sized
            // datagrams, which the other side writes to its TUN one by one.
            assert_egress_offloaded(&gtx, total, &what);
            assert!(grx.c.ingress_bytes >= total as u64, "{what}: the receiver delivered {} bytes only", grx.c.ingress_bytes);
            assert!(grx.tun.rx >= grx.c.ingress_pkts, "{what}: the receiver without offloads coalesced packets: {grx:?}");
        } else {
            // MTU-sized packets in, super-packets out to the TUN.
            assert!(gtx.tun.tx >= gtx.c.egress_pkts, "{what}: the sender without offloads read super-packets: {gtx:?}");
            assert_ingress_offloaded(&grx, total, &what);
        }
    }
    assert_no_drops(&mut t, &format!("{engine}: interop"));
}

// ---------------------------------------------------------------------------
// 4. IPv6 inner TCP

fn tcp6(engine: &str, u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = Topology::with(Options { underlay: u, ..Options::new(engine) });
    assert_offloads(&t, Node::A, true);
    let total = 200 * MB;
    let what = format!("{engine}: IPv6 {CTR_A6} -> {CTR_B6}");
    let (a0, b0) = (snap(&mut t, Node::A), snap(&mut t, Node::B));
    transfer(&t, Node::A, addr(CTR_B6, 5501), total, 0x6666, Duration::from_secs(90), &what);
    let (ga, gb) = (growth(&a0, &snap(&mut t, Node::A)), growth(&b0, &snap(&mut t, Node::B)));
    eprintln!("{what}: sender {}; receiver {}", describe(&ga, true), describe(&gb, false));
    assert_egress_offloaded(&ga, total, &what);
    assert_ingress_offloaded(&gb, total, &what);
    assert_no_drops(&mut t, &what);
}

// ---------------------------------------------------------------------------
// 5. Loss and reordering on the underlay

fn loss_and_reorder(engine: &str, u: Underlay) {
    if !require_root() || !common::require_tools(&["ethtool", "nft"]) {
        return;
    }
    // nodeB takes datagrams one by one (so the loss rule drops single
    // datagrams); nodeA keeps GRO, so its encapd coalesces runs that the
    // middle reordered.
    let mut opts = Options { underlay: u, ..Options::new(engine) };
    opts.middle = Some(Middle { reorder_one_in: 100, gro_a: true, gro_b: false });
    let mut t = Topology::with(opts);
    assert_offloads(&t, Node::A, true);
    assert_offloads(&t, Node::B, true);
    t.add_udp_loss(Node::B, 1);
    let total = 100 * MB;

    let what = format!("{engine}: A -> B with 1 % loss and 1 % reordering");
    let (m0, a0) = (t.middle_stats(), snap(&mut t, Node::A));
    transfer(&t, Node::A, addr(CTR_B, 5601), total, 0x1055, Duration::from_secs(100), &what);
    let (m1, ga) = (t.middle_stats(), growth(&a0, &snap(&mut t, Node::A)));
    let dropped = t.udp_loss_dropped(Node::B);
    eprintln!("{what}: {dropped} datagrams dropped by nft at B; middle {m0:?} -> {m1:?}; sender {}", describe(&ga, true));
    assert!(dropped > 0, "{what}: the loss rule dropped nothing");
    // ~1 % of the ~75k data datagrams; far more would mean the rule is wrong.
    assert!(dropped < ga.c.egress_pkts / 20, "{what}: the loss rule dropped {dropped} of {} datagrams", ga.c.egress_pkts);
    assert!(m1.reordered > m0.reordered, "{what}: the middle reordered nothing: {m1:?}");
    assert_egress_offloaded(&ga, total, &what);

    let what = format!("{engine}: B -> A with reordering (and 1 % ACK loss)");
    let (m0, a0, b0) = (t.middle_stats(), snap(&mut t, Node::A), snap(&mut t, Node::B));
    let dropped0 = t.udp_loss_dropped(Node::B);
    transfer(&t, Node::B, addr(CTR_A, 5602), total, 0x2055, Duration::from_secs(100), &what);
    let (m1, ga, gb) = (t.middle_stats(), growth(&a0, &snap(&mut t, Node::A)), growth(&b0, &snap(&mut t, Node::B)));
    let dropped = t.udp_loss_dropped(Node::B) - dropped0;
    eprintln!(
        "{what}: {dropped} ACK datagrams dropped by nft at B; middle {m0:?} -> {m1:?}; sender {}; receiver {}",
        describe(&gb, true),
        describe(&ga, false)
    );
    assert!(m1.reordered > m0.reordered, "{what}: the middle reordered nothing: {m1:?}");
    assert_egress_offloaded(&gb, total, &what);
    // nodeA's veth merged the frames back into GRO runs, reordered ones
    // included, and its encapd coalesced them for the TUN.
    assert_ingress_offloaded(&ga, total, &what);

    // Every frame fitted the forwarder's MTU-sized buffer: the kernel, not
    // the wire, segmented encapd's GSO sends.
    assert_eq!(m1.oversize, 0, "frames larger than the MTU crossed the underlay: {m1:?}");
    // Loss and reordering are not encapd's: it drops nothing itself.
    assert_no_drops(&mut t, &format!("{engine}: loss and reordering"));
}

// ---------------------------------------------------------------------------

/// The engines' tests on one underlay profile (see `common::underlay`):
/// `veth::uring::tcp6`, `wire::mmsg::parallel_flows`, ...
macro_rules! profile_tests {
    ($underlay:ident) => {
        mod $underlay {
            fn u() -> encapd_testbed::Underlay {
                stringify!($underlay).parse().expect("an underlay profile")
            }

            mod uring {
                use super::super as s;
                use super::u;

                #[test]
                fn bulk_1g_both_ways() {
                    s::bulk_both_ways("uring", u());
                }
                #[test]
                fn parallel_flows() {
                    s::parallel_flows("uring", u());
                }
                #[test]
                fn interop_offload_off_on_b() {
                    s::interop("uring", u(), s::Node::B);
                }
                #[test]
                fn tcp6() {
                    s::tcp6("uring", u());
                }
                #[test]
                fn loss_and_reorder() {
                    s::loss_and_reorder("uring", u());
                }
            }

            mod mmsg {
                use super::super as s;
                use super::u;

                #[test]
                fn bulk_1g_both_ways() {
                    s::bulk_both_ways("mmsg", u());
                }
                #[test]
                fn parallel_flows() {
                    s::parallel_flows("mmsg", u());
                }
                #[test]
                fn interop_offload_off_on_a() {
                    s::interop("mmsg", u(), s::Node::A);
                }
                #[test]
                fn tcp6() {
                    s::tcp6("mmsg", u());
                }
            }
        }
    };
}

profile_tests!(veth);
profile_tests!(wire);

/// A topology with a middle namespace forwards (and reorders) and leaves
/// nothing behind: its five namespaces are gone once it is dropped (Drop
/// stops and joins the forwarder thread first).
#[test]
fn zz_middle_topology_cleans_up() {
    if !require_root() || !common::require_tools(&["ethtool"]) {
        return;
    }
    let mut opts = Options::new("uring");
    opts.middle = Some(Middle { reorder_one_in: 2, gro_a: false, gro_b: false });
    let names = {
        let t = Topology::with(opts);
        // `-w`: wait for all four replies (a held-back one may come after
        // ping's usual wait of twice the slowest round trip so far).
        let o = t.ping(&t.ctr_a, &["-c", "4", "-i", "0.05", "-W", "2", "-w", "5", CTR_B]);
        assert!(o.ok() && o.stdout.contains(" 0% packet loss"), "ping across the middle failed:\n{}", o.text());
        let m = t.middle_stats();
        assert!(m.forwarded >= 8 && m.reordered > 0, "the middle forwarder did not forward and reorder the pings: {m:?}");
        let mut names = vec![t.ctr_a.clone(), t.node_a.clone(), t.node_b.clone(), t.ctr_b.clone()];
        names.extend(t.mid.clone());
        names
    };
    assert_eq!(names.len(), 5);
    let left: Vec<String> = common::our_namespaces().into_iter().filter(|ns| names.contains(ns)).collect();
    assert!(left.is_empty(), "namespaces left after Drop: {left:?}");
}
