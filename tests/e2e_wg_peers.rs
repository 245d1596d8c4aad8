//! The testbed's WireGuard peers work, before encapd interoperates with
//! them: wireguard-go and boringtun, each on both nodes of the two-node
//! bench as the benchmark's `wireguard-go` and `boringtun` modes set them
//! up (`flannel-wg` laid out as flanneld lays it out, see
//! `common::wg_peer`), and the two implementations against each other
//! through the one-sided API an encapd interop test uses
//! (`WgDevice::start`, `start_facing_encapd`, `WgPeerSpec::facing_encapd`).
//! Root only.
//!
//! Each pair: ctrA and ctrB ping each other (IPv4 and IPv6), 64 MiB of
//! TCP cross each way with matching SHA-256, the route between the
//! nodes is `flannel-wg`, and WireGuard's own counters (`wg show
//! transfer`) account for the bytes — so the data went through the
//! tunnel, encrypted, not around it. Leaving the mode stops both daemons
//! by SIGTERM and leaves no device behind.

use encapd_testbed as common;

use std::net::SocketAddr;
use std::time::Duration;

use common::bed::{Bed, ping_ok};
use common::kernel_paths::UNDERLAY_MTU;
use common::mode::Mode;
use common::traffic::hashed_transfer;
use common::wg_peer::{self, DEVICE, Layout, WgDevice, WgImpl, WgPeerSpec, start_facing_encapd};
use common::wiring::{CTR_A, CTR_A6, CTR_B, CTR_B6, Node};
use common::{TempDir, run};

const BYTES: usize = 64 << 20;
/// Generous: a userspace WireGuard pair moves a few hundred Mbit/s here,
/// far less on a loaded machine.
const TRANSFER_LIMIT: Duration = Duration::from_secs(180);

/// Bytes `wg show transfer` counts (received, sent) for the peer with
/// key `peer` on `dev`.
fn transfer(dev: &WgDevice, peer: &str) -> (u64, u64) {
    let o = dev.wg(&["show", DEVICE, "transfer"]);
    assert!(o.ok(), "wg show transfer: {}", o.text());
    let line = o.stdout.lines().find(|l| l.starts_with(peer)).unwrap_or_else(|| panic!("no peer {peer} in: {}", o.stdout));
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    (f[0], f[1])
}

fn route_dev(bed: &Bed, node: Node, dst: &str) -> String {
    run("ip", &["-n", bed.node_ns(node), "route", "get", dst]).stdout
}

/// Pings both ways (IPv4, IPv6) and moves 64 MiB of TCP each way between
/// the containers, checking each transfer's SHA-256.
fn traffic_both_ways(bed: &Bed, what: &str) {
    for (from, to) in [(Node::A, CTR_B), (Node::B, CTR_A), (Node::A, CTR_B6), (Node::B, CTR_A6)] {
        assert!(ping_ok(bed.ctr_ns(from), to, 10), "{what}: no ping from ctr{from:?} to {to}");
    }
    for (seed, from, to, dst) in [(1, Node::A, Node::B, CTR_B), (2, Node::B, Node::A, CTR_A)] {
        let addr: SocketAddr = format!("{dst}:5001").parse().unwrap();
        let t = hashed_transfer(bed.ctr_ns(from), bed.ctr_ns(to), addr, seed, BYTES, TRANSFER_LIMIT);
        let secs = t.last_byte.duration_since(t.first_byte).as_secs_f64();
        println!("{what}: {} MiB ctr{from:?} -> ctr{to:?} in {secs:.2} s ({:.2} Gbit/s)", BYTES >> 20, BYTES as f64 * 8.0 / secs / 1e9);
        assert_eq!((t.got, &t.got_hash), (t.sent, &t.sent_hash), "{what}: ctr{from:?} -> ctr{to:?} not intact");
        assert_eq!(t.sent, BYTES);
    }
}

/// `imp` on both nodes, as the benchmark's mode of that name sets it up.
fn pair_carries_traffic(imp: WgImpl) {
    if !wg_peer::require(imp) {
        return;
    }
    let bed = Bed::new(common::Underlay::Veth);
    let dir = TempDir::new(&format!("wg-pair-{imp}"));
    let mode = Mode::named(imp.name()).unwrap();
    let configs = bed.write_configs(&mode, 1, dir.path());
    assert!(configs.nodes.is_empty(), "no encapd in {imp}'s mode");
    let active = bed.enter(&mode, &configs, &common::encapd_bin(), mode.ctr_mtu(UNDERLAY_MTU)).unwrap_or_else(|e| panic!("{imp}: {e}"));
    assert_eq!(active.wg_pids().len(), 2);
    for node in [Node::A, Node::B] {
        let key = std::fs::metadata(dir.path().join(format!("wg-{}.key", node.sub()))).expect("the private key file");
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600, "{imp}: key file mode");
        let via = route_dev(&bed, node, if node == Node::A { CTR_B } else { CTR_A });
        assert!(via.contains(&format!("dev {DEVICE} ")), "{imp}: node{node:?} does not route through {DEVICE}: {via}");
        let link = run("ip", &["-n", bed.node_ns(node), "link", "show", DEVICE]).stdout;
        assert!(link.contains("mtu 1420 "), "{imp}: {DEVICE} MTU is not underlay - 80: {link}");
    }
    traffic_both_ways(&bed, imp.name());
    let (dev_a, dev_b) = (active.wg_device(Node::A).unwrap(), active.wg_device(Node::B).unwrap());
    let (rx, tx) = transfer(dev_a, dev_b.public_key());
    println!("{imp} on nodeA: {rx} bytes received, {tx} sent (wg show transfer)");
    assert!(tx >= BYTES as u64 && rx >= BYTES as u64, "{imp}: the transfers did not go through WireGuard: rx {rx}, tx {tx}");
    let left = active.leave();
    assert!(left.problems.is_empty(), "{imp}: {:?}", left.problems);
    assert_eq!(left.wg_logs.len(), 2);
    for (node, name, log) in &left.wg_logs {
        assert_eq!(*name, imp.name());
        assert!(log.contains("latest handshake"), "{imp} node{node:?} never completed a handshake:\n{log}");
    }
    for node in [Node::A, Node::B] {
        assert!(!run("ip", &["-n", bed.node_ns(node), "link", "show", DEVICE]).ok(), "{imp}: {DEVICE} left on node{node:?}");
        assert!(!route_dev(&bed, node, CTR_B).contains(DEVICE), "{imp}: a route through {DEVICE} left on node{node:?}");
    }
}

#[test]
fn wireguard_go_pair_carries_pings_and_tcp_intact() {
    pair_carries_traffic(WgImpl::WireguardGo);
}

#[test]
fn boringtun_pair_carries_pings_and_tcp_intact() {
    pair_carries_traffic(WgImpl::Boringtun);
}

/// wireguard-go on nodeA and boringtun on nodeB, each set up the way an
/// encapd interop test sets up its peer: start one side, read its public
/// key, give it the other node's key, public IP and subnets
/// (`WgPeerSpec::facing_encapd`). `wg show transfer` on nodeA must
/// account for the 64 MiB each way: the bytes went through WireGuard.
#[test]
fn wireguard_go_and_boringtun_interoperate_through_the_one_sided_api() {
    if !wg_peer::require(WgImpl::WireguardGo) || !wg_peer::require(WgImpl::Boringtun) {
        return;
    }
    let bed = Bed::new(common::Underlay::Veth);
    bed.set_ctr_mtu(UNDERLAY_MTU - wg_peer::OVERHEAD);
    let dir = TempDir::new("wg-mixed");
    // nodeA as an encapd test starts its peer before encapd's key is
    // known; nodeB as start_facing_encapd does it once the key is.
    let a = WgDevice::start(WgImpl::WireguardGo, bed.node_ns(Node::A), &Layout::of(Node::A), dir.path(), "wg-go-a").unwrap();
    let (sub_a, sub_a6) = common::kernel_paths::subnets(Node::A);
    let (sub_b, sub_b6) = common::kernel_paths::subnets(Node::B);
    let facing_a = WgPeerSpec::facing_encapd(a.public_key(), Node::A.underlay(), sub_a, Some(sub_a6));
    let b =
        start_facing_encapd(WgImpl::Boringtun, bed.node_ns(Node::B), &Layout::of(Node::B), &facing_a, dir.path(), "boringtun-b").unwrap();
    a.add_peer(&WgPeerSpec::facing_encapd(b.public_key(), Node::B.underlay(), sub_b, Some(sub_b6))).unwrap();
    traffic_both_ways(&bed, "wireguard-go <-> boringtun");
    let (rx, tx) = transfer(&a, b.public_key());
    println!("wireguard-go on nodeA: {rx} bytes received, {tx} sent (wg show transfer)");
    assert!(tx >= BYTES as u64 && rx >= BYTES as u64, "the transfers did not go through WireGuard: rx {rx}, tx {tx}");
    for (name, stopped) in [("wireguard-go", a.stop()), ("boringtun", b.stop())] {
        assert!(stopped.status.is_ok(), "{name} needed SIGKILL:\n{}", stopped.log);
        assert!(stopped.device_gone, "{name} left {DEVICE} behind");
    }
}
