//! The etcd control source end to end, in network namespaces: Debian's
//! `etcd` runs inside node A's namespace on its underlay address
//! (198.18.0.1), so both nodes reach it over the underlay (see
//! `common::etcd`). Two encapd nodes claim subnets (one configured, one
//! allocated), find each other through their leases and forward; a lease
//! written by hand in flanneld's JSON is routed within 1 s and unrouted
//! within 1 s of its deletion; a restarted node gets its subnet back; an
//! etcd outage under a counted stream loses nothing; a three-member cluster
//! survives a member; malformed leases are skipped and counted; a node cut
//! off while its watched revision is compacted lists the leases again; a
//! short-lived lease is renewed before it expires; SIGHUP and SIGUSR1 while
//! start-up still waits for etcd do not kill encapd. Dual stack: two nodes
//! claim IPv4 and IPv6 subnets in a dual-stack network and carry IPv6
//! between their containers; a node joins a cluster whose other lease was
//! written in flanneld's exact dual-stack format (udp: both subnets
//! routed; vxlan with `PublicIPv6`: the IPv4 subnet only, and the log says
//! why); the lease says `EncapdKernelDecap` only once the kernel path is
//! attached (etcd's revision history shows the claim without it).
//! WireGuard: two `backend = "wireguard"` nodes in a network whose
//! `Backend.Type` is "wireguard" publish flannel's wireguard lease
//! (`BackendData.PublicKey`) and reach each other through it. Root only.
//!
//! Put-to-table latency and the start-up load of many leases are measured
//! by `encapd-bench etcd-propagation` (bench/README.md).

use encapd_testbed as common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::cmd::{TempDir, time_until};
use common::counters::{METRICS, SUMMARY_HEADER, metric_value, scrape};
use common::etcd::EtcdCluster;
use common::instance::{Encapd, READY_LINE, print_log_if_panicking};
use common::netns::Permit;
use common::topology::unreachable_from;
use common::traffic::{counted_udp_stream, hashed_transfer};
use common::wireguard_keys::WireGuardKeys;
use common::wiring::Wiring;
use common::{NODE_A_UNDERLAY, NODE_B_UNDERLAY, Node, ns_exec, require_root, require_tools, wait_for};

const PREFIX: &str = "/coreos.com/network";
const NETWORK_CONFIG: &str = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}"#;
/// A dual-stack network, as flannel documents one (udp backend).
const DUAL_STACK_CONFIG: &str = r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:96::/32","Backend":{"Type":"udp"}}"#;
/// Start-up with etcd may allocate a subnet and wait for the cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn ready() -> bool {
    require_root() && require_tools(&["etcd", "etcdctl"])
}

/// ctrA ── nodeA (etcd) ══ underlay ══ nodeB ── ctrB, with etcd-backed
/// encapd; IPv6 off in the namespaces unless the network is dual-stack.
struct Net {
    daemons: [Option<Encapd>; 2],
    /// `None` until [`Net::start_etcd`] (a test may start encapd first).
    etcd: Option<EtcdCluster>,
    dir: TempDir,
    // Dropped after the processes above: the namespaces go last.
    wiring: Wiring,
    _permit: Permit,
}

impl Net {
    /// Namespaces and underlay, `members` etcd members with the network
    /// config written; no encapd yet.
    fn new(members: usize) -> Net {
        Net::with_network(members, NETWORK_CONFIG)
    }

    /// [`new`](Self::new) with `config` as etcd's network config (IPv6 on
    /// in the namespaces when it says `EnableIPv6`).
    fn with_network(members: usize, config: &str) -> Net {
        let mut net = Net::wired(config.contains(r#""EnableIPv6":true"#));
        net.start_etcd(members);
        net.etcdctl(&["put", &format!("{PREFIX}/config"), config]);
        net
    }

    /// One etcd member, node A on 100.96.1.0/24 and node B on
    /// 100.96.2.0/24 with their containers attached, once a ping from ctrA
    /// reaches ctrB; returns the containers' addresses too.
    fn forwarding() -> (Net, String, String) {
        let mut net = Net::new(1);
        net.start(Node::A, Some("100.96.1.0/24"));
        net.start(Node::B, Some("100.96.2.0/24"));
        let ctr_a = net.attach_container(Node::A);
        let ctr_b = net.attach_container(Node::B);
        assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "ping {ctr_a} -> {ctr_b}:\n{}", net.log(Node::A));
        (net, ctr_a, ctr_b)
    }

    /// Namespaces and underlay only.
    fn without_etcd() -> Net {
        Net::wired(false)
    }

    /// Namespaces and underlay, IPv6 on or off.
    fn wired(ipv6: bool) -> Net {
        let permit = Permit::acquire();
        let wiring = Wiring::build(ipv6, false);
        Net { daemons: [None, None], etcd: None, dir: TempDir::new(wiring.prefix()), wiring, _permit: permit }
    }

    /// Starts `members` etcd members (no keys written).
    fn start_etcd(&mut self, members: usize) {
        assert!(self.etcd.is_none(), "etcd already started");
        self.etcd = Some(EtcdCluster::start(&self.wiring.node_a, NODE_A_UNDERLAY, members));
    }

    fn etcd(&mut self) -> &mut EtcdCluster {
        self.etcd.as_mut().expect("etcd not started")
    }

    /// etcdctl against the running members; panics on failure.
    fn etcdctl(&self, args: &[&str]) -> String {
        self.etcd.as_ref().expect("etcd not started").etcdctl(args)
    }

    /// Writes the node's configuration: etcd source on the members' client
    /// ports (whether or not they run yet), `subnet` if given, and
    /// `control_extra` lines in `[control]`.
    fn write_config(&self, node: Node, subnet: Option<&str>, control_extra: &str) {
        self.write_config_with(node, subnet, control_extra, "");
    }

    /// [`write_config`](Self::write_config) with `dataplane_extra` lines in
    /// `[dataplane]`.
    fn write_config_with(&self, node: Node, subnet: Option<&str>, control_extra: &str, dataplane_extra: &str) {
        let subnet = subnet.map(|s| format!("subnet = \"{s}\"\n")).unwrap_or_default();
        self.write_config_lines(node, &subnet, "", control_extra, dataplane_extra);
    }

    /// The node's etcd configuration with these lines in `[node]`,
    /// `[network]`, `[control]` and `[dataplane]`.
    fn write_config_lines(&self, node: Node, node_extra: &str, network_extra: &str, control_extra: &str, dataplane_extra: &str) {
        let members = self.etcd.as_ref().map_or(1, |e| e.endpoints().len());
        let eps = (0..members).map(|i| format!("\"{}\"", EtcdCluster::endpoint_for(NODE_A_UNDERLAY, i))).collect::<Vec<_>>().join(", ");
        let control = format!("source = \"etcd\"\nendpoints = [{eps}]\nstate_dir = \"state\"\n{control_extra}");
        self.write_node_config(node, node_extra, network_extra, &control, dataplane_extra);
    }

    /// The node's configuration file: public IP and `node_extra` in
    /// `[node]`, `network_extra`, `control` (which source), one worker,
    /// subnet.env and metrics at the usual places.
    fn write_node_config(&self, node: Node, node_extra: &str, network_extra: &str, control: &str, dataplane_extra: &str) {
        let text = format!(
            "[node]\npublic_ip = \"{}\"\n{node_extra}\n[network]\n{network_extra}\n[dataplane]\nworkers = 1\n{dataplane_extra}\n\
             [control]\n{control}\nsubnet_env = \"subnet.env\"\n\n\
             [metrics]\nlisten = \"{METRICS}\"\n\n[process]\ncontrol_socket = \"encapd.sock\"\n",
            node.underlay()
        );
        self.dir.write(&format!("{}/encapd.toml", node.sub()), &text);
    }

    /// Writes the node's config and starts its encapd; waits until it forwards.
    fn start(&mut self, node: Node, subnet: Option<&str>) {
        self.start_with(node, subnet, "");
    }

    /// [`start`](Self::start) with `dataplane_extra` lines in `[dataplane]`.
    fn start_with(&mut self, node: Node, subnet: Option<&str>, dataplane_extra: &str) {
        self.write_config_with(node, subnet, "", dataplane_extra);
        self.spawn(node);
        self.wait_ready(node);
    }

    /// Starts the node's encapd on the configuration written before.
    fn spawn(&mut self, node: Node) {
        assert!(self.daemons[node.index()].is_none(), "encapd {node:?} is running");
        let dir = self.dir.path().join(node.sub());
        self.daemons[node.index()] = Some(Encapd::spawn(self.wiring.node_ns(node), &dir.join("encapd.toml"), &dir.join("encapd.log"), &[]));
    }

    fn daemon(&mut self, node: Node) -> &mut Encapd {
        self.daemons[node.index()].as_mut().expect("encapd was stopped")
    }

    fn log(&self, node: Node) -> String {
        std::fs::read_to_string(self.dir.path().join(node.sub()).join("encapd.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, node: Node) {
        self.daemon(node).wait_ready(READY_TIMEOUT);
    }

    fn stop(&mut self, node: Node) {
        if let Some(d) = self.daemons[node.index()].take() {
            d.stop();
        }
    }

    fn alive(&mut self, node: Node) -> bool {
        self.daemons[node.index()].as_mut().is_some_and(Encapd::alive)
    }

    /// The node's subnet.env.
    fn subnet_env(&self, node: Node) -> String {
        std::fs::read_to_string(self.dir.path().join(node.sub()).join("subnet.env")).unwrap_or_default()
    }

    /// The node's subnet as its subnet.env says (`FLANNEL_SUBNET` is `.1/len`).
    fn subnet_of(&self, node: Node) -> (String, u8) {
        let env = self.subnet_env(node);
        let line = env.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET=")).unwrap_or_else(|| panic!("no FLANNEL_SUBNET in {env:?}"));
        let (addr, len) = line.split_once('/').unwrap();
        let a: Ipv4Addr = addr.parse().unwrap();
        (Ipv4Addr::from(u32::from(a) - 1).to_string(), len.parse().unwrap())
    }

    /// The node's IPv6 subnet as its subnet.env says (`FLANNEL_IPV6_SUBNET`
    /// is `::1/len`), if it has one.
    fn subnet6_of(&self, node: Node) -> Option<(Ipv6Addr, u8)> {
        let env = self.subnet_env(node);
        let line = env.lines().find_map(|l| l.strip_prefix("FLANNEL_IPV6_SUBNET="))?;
        let (addr, len) = line.split_once('/').unwrap();
        let a: Ipv6Addr = addr.parse().unwrap();
        Some((Ipv6Addr::from(u128::from(a) - 1), len.parse().unwrap()))
    }

    /// Addresses the node's container in the node's subnet (`.1` on the
    /// node, `.2` in the container), and in its IPv6 subnet (`::1`, `::2`)
    /// when subnet.env has one; returns the container's addresses.
    fn attach_container(&self, node: Node) -> String {
        self.attach_dual_stack_container(node).0
    }

    fn attach_dual_stack_container(&self, node: Node) -> (String, Option<String>) {
        let (net, len) = self.subnet_of(node);
        let base = u32::from(net.parse::<Ipv4Addr>().unwrap());
        let (gw, ctr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let v6 = self.subnet6_of(node).map(|(net6, len6)| {
            let base = u128::from(net6);
            (format!("{}/{len6}", Ipv6Addr::from(base + 1)), format!("{}/{len6}", Ipv6Addr::from(base + 2)))
        });
        let v6_refs = v6.as_ref().map(|(g, c)| (g.as_str(), c.as_str()));
        self.wiring.attach_container(node, &format!("{gw}/{len}"), &format!("{ctr}/{len}"), v6_refs);
        (ctr.to_string(), v6.map(|(_, c)| c.split('/').next().unwrap().to_owned()))
    }

    /// The value of `<prefix>/subnets/<name>` (panics when it is missing).
    fn lease(&self, name: &str) -> String {
        let value = self.etcdctl(&["get", "--print-value-only", &format!("{PREFIX}/subnets/{name}")]);
        assert!(!value.trim().is_empty(), "no lease {name}:\n{}", self.etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]));
        value.trim().to_owned()
    }

    /// Puts `<prefix>/subnets/<name>` = `value` on a fresh etcd lease of
    /// 24 h, as flanneld's `createSubnet` does.
    fn put_on_lease(&self, name: &str, value: &str) {
        let granted = self.etcdctl(&["lease", "grant", "86400"]);
        // "lease 694d7f2a9e7c1b0e granted with TTL(86400s)"
        let id = granted.split_whitespace().nth(1).unwrap_or_else(|| panic!("etcdctl lease grant: {granted}"));
        self.etcdctl(&["put", &format!("--lease={id}"), &format!("{PREFIX}/subnets/{name}"), value]);
    }

    /// The value of an unlabelled metric of the node (`None` when absent or unreadable).
    fn metric(&self, node: Node, name: &str) -> Option<f64> {
        metric_value(&scrape(self.wiring.node_ns(node))?, name)
    }

    /// True when a ping from ctrA to `dst` is answered "unreachable" within 300 ms.
    fn unreachable(&self, dst: &str) -> bool {
        unreachable_from(&self.wiring.ctr_a, dst)
    }

    fn ping_ok(&self, from_ctr: &str, dst: &str) -> bool {
        ns_exec(from_ctr, &["ping", "-n", "-c", "1", "-W", "1", dst], Duration::from_secs(5)).ok()
    }

    /// Waits (at most 5 s) until a ping from `from_ctr` to `dst` is answered.
    fn wait_ping(&self, from_ctr: &str, dst: &str) -> bool {
        wait_for(Duration::from_secs(5), || self.ping_ok(from_ctr, dst).then_some(())).is_some()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in [Node::A, Node::B] {
            drop(self.daemons[node.index()].take());
            print_log_if_panicking(&format!("encapd log, node {node:?}"), &self.dir.path().join(node.sub()).join("encapd.log"));
        }
    }
}

/// Sends 8 MiB over TCP from `from_ns` to `to:9200` and checks SHA-256.
fn checksummed_transfer(from_ns: &str, to_ns: &str, to: &str) {
    let total = 8 << 20;
    let to = SocketAddr::new(to.parse().unwrap(), 9200);
    let t = hashed_transfer(from_ns, to_ns, to, 42, total, Duration::from_secs(60));
    assert_eq!((t.sent, t.got), (total, total), "bytes sent and received");
    assert_eq!(t.got_hash, t.sent_hash, "SHA-256 of the received stream");
}

fn udp_lease(ip: &str) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null}}"#)
}

#[test]
fn two_nodes_allocate_discover_forward_and_follow_hand_written_leases() {
    if !ready() {
        return;
    }
    let mut net = Net::new(1);
    net.start(Node::A, Some("100.96.1.0/24"));
    net.start(Node::B, None);
    let (sa, sb) = (net.subnet_of(Node::A), net.subnet_of(Node::B));
    assert_eq!(sa, ("100.96.1.0".to_owned(), 24));
    assert_ne!(sa, sb, "distinct subnets");
    assert!(sb.0.starts_with("100.96.") && sb.1 == 24, "B allocated a /24 of the network: {sb:?}");
    let env = net.subnet_env(Node::B);
    assert!(
        env.contains("FLANNEL_NETWORK=100.96.0.0/16\n") && env.contains("FLANNEL_MTU=1472\n") && env.contains("FLANNEL_IPMASQ=false\n"),
        "{env}"
    );
    // The leases are flannel's, byte for byte.
    let leases = net.etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
    for (node, (s, l)) in [(Node::A, &sa), (Node::B, &sb)] {
        let want = format!("{PREFIX}/subnets/{s}-{l}\n{}\n", udp_lease(node.underlay()));
        assert!(leases.contains(&want), "lease of {node:?} in:\n{leases}");
    }
    let ctr_a = net.attach_container(Node::A);
    let ctr_b = net.attach_container(Node::B);
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "ping {ctr_a} -> {ctr_b}:\n{}", net.log(Node::A));
    assert!(net.ping_ok(&net.wiring.ctr_b, &ctr_a), "ping back");
    checksummed_transfer(&net.wiring.ctr_a, &net.wiring.ctr_b, &ctr_b);
    assert_eq!(net.metric(Node::A, "encapd_control_connected"), Some(1.0));

    // A node encapd never saw, in flanneld's exact JSON (it points at B's
    // underlay address: packets to it are forwarded, so "routed" means no
    // ICMP unreachable any more).
    assert!(net.unreachable("100.96.200.1"), "not routed before its lease exists");
    let routes = net.metric(Node::A, "encapd_routes").unwrap();
    let key = format!("{PREFIX}/subnets/100.96.200.0-24");
    net.etcdctl(&["put", &key, &udp_lease("198.18.0.2")]);
    let took = time_until(Duration::from_secs(1), || net.metric(Node::A, "encapd_routes") == Some(routes + 1.0));
    assert!(took.is_some(), "hand-written lease not routed within 1 s:\n{}", net.log(Node::A));
    assert!(!net.unreachable("100.96.200.1"), "routed after the put");
    net.etcdctl(&["del", &key]);
    let took = time_until(Duration::from_secs(1), || net.metric(Node::A, "encapd_routes") == Some(routes));
    assert!(took.is_some(), "deleted lease still routed after 1 s:\n{}", net.log(Node::A));
    assert!(net.unreachable("100.96.200.1"), "unreachable after the delete");

    // A restarted node gets its subnet back.
    net.stop(Node::B);
    net.start(Node::B, None);
    assert_eq!(net.subnet_of(Node::B), sb, "B's subnet after a restart");
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "ping after B's restart");
    // ... also when only its lease (not its state file) remembers it.
    net.stop(Node::B);
    std::fs::remove_dir_all(net.dir.path().join("b/state")).unwrap();
    net.start(Node::B, None);
    assert_eq!(net.subnet_of(Node::B), sb, "B's subnet after a restart without its state file");
}

/// The kernel path learns from the leases whom it may send to: a node
/// with `kernel_path = "tc"` says so in its lease (`EncapdKernelDecap`);
/// one without writes flanneld's value, and a kernel-path peer reaches it
/// through its workers, intact. When that node restarts with the kernel
/// path, its new lease lets the peer's kernel path carry the traffic.
#[test]
fn the_leases_tell_the_kernel_path_which_peers_decapsulate_in_the_kernel() {
    if !ready() {
        return;
    }
    const KERNEL_PATH: &str = "kernel_path = \"tc\"\n";
    let mut net = Net::new(1);
    net.start_with(Node::A, Some("100.96.1.0/24"), KERNEL_PATH);
    net.start(Node::B, Some("100.96.2.0/24"));
    let lease = |net: &Net, subnet: &str| net.etcdctl(&["get", "--print-value-only", &format!("{PREFIX}/subnets/{subnet}")]);
    // The lease says so once the programs are attached, shortly after ready.
    let announced = |net: &Net, subnet: &str| lease(net, subnet).contains(r#""BackendData":{"EncapdKernelDecap":true}"#);
    let said = time_until(Duration::from_secs(5), || announced(&net, "100.96.1.0-24"));
    assert!(said.is_some(), "{}", lease(&net, "100.96.1.0-24"));
    assert_eq!(lease(&net, "100.96.2.0-24").trim(), udp_lease(NODE_B_UNDERLAY), "without the kernel path: flanneld's value");
    let ctr_a = net.attach_container(Node::A);
    let ctr_b = net.attach_container(Node::B);
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "ping {ctr_a} -> {ctr_b}:\n{}", net.log(Node::A));
    let kernel_egress = |net: &Net| {
        let text = scrape(net.wiring.node_ns(Node::A)).unwrap_or_default();
        common::counters::metric_sum(&text, "encapd_kernel_packets_total", &[("direction", "egress")])
    };
    checksummed_transfer(&net.wiring.ctr_a, &net.wiring.ctr_b, &ctr_b);
    assert_eq!(kernel_egress(&net), 0.0, "nodeA's kernel path sent to a node that reads datagrams in user space");

    // B comes back with the kernel path: its lease says so, and A's kernel
    // path takes over the traffic to it.
    net.stop(Node::B);
    net.start_with(Node::B, Some("100.96.2.0/24"), KERNEL_PATH);
    let said = time_until(Duration::from_secs(5), || announced(&net, "100.96.2.0-24"));
    assert!(said.is_some(), "{}", lease(&net, "100.96.2.0-24"));
    let pinged = kernel_egress(&net);
    let in_kernel =
        wait_for(Duration::from_secs(5), || (net.ping_ok(&net.wiring.ctr_a, &ctr_b) && kernel_egress(&net) > pinged).then_some(()));
    assert!(in_kernel.is_some(), "no ping to B through nodeA's kernel path after B's restart:\n{}", net.log(Node::A));
    let before = kernel_egress(&net);
    checksummed_transfer(&net.wiring.ctr_a, &net.wiring.ctr_b, &ctr_b);
    let carried = kernel_egress(&net) - before;
    assert!(carried >= 100.0, "nodeA's kernel path carried the 8 MiB to B: {carried} packets");
}

#[test]
fn etcd_outage_of_10_s_loses_nothing_and_the_gauge_shows_it() {
    if !ready() {
        return;
    }
    let (mut net, ctr_a, ctr_b) = Net::forwarding();
    let (ns_a, ns_b) = (net.wiring.ctr_a.clone(), net.wiring.ctr_b.clone());
    let mut outage_seen = [false, false];
    let mut after = None;
    let (from, to) = (ctr_a.parse().unwrap(), SocketAddr::new(ctr_b.parse().unwrap(), 9100));
    let r = counted_udp_stream(&ns_a, from, &ns_b, to, 15_000, 1_000, || {
        std::thread::sleep(Duration::from_secs(1));
        net.etcd().stop_member(0);
        let stopped = Instant::now();
        for node in [Node::A, Node::B] {
            outage_seen[node.index()] =
                wait_for(Duration::from_secs(5), || (net.metric(node, "encapd_control_connected") == Some(0.0)).then_some(())).is_some();
        }
        std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
        net.etcd().start_member(0);
        net.etcd().wait_healthy(&[0]);
        let routes = net.metric(Node::A, "encapd_routes").unwrap();
        // A lease written right after etcd returns is seen.
        net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.201.0-24"), &udp_lease("198.18.0.2")]);
        after = time_until(Duration::from_secs(10), || {
            net.metric(Node::A, "encapd_routes") == Some(routes + 1.0) && net.metric(Node::A, "encapd_control_connected") == Some(1.0)
        });
    });
    assert_eq!(outage_seen, [true, true], "encapd_control_connected must drop to 0 on both nodes during the outage");
    assert!(after.is_some(), "lease put after etcd returned was not seen:\n{}", net.log(Node::A));
    assert_eq!(net.metric(Node::B, "encapd_control_connected"), Some(1.0), "B reconnected");
    assert_eq!((r.unique, r.foreign), (r.sent, 0), "datagrams lost during the etcd outage");
    assert!(net.alive(Node::A) && net.alive(Node::B));
    eprintln!("outage: {} datagrams, none lost; lease after return seen in {after:?}", r.sent);
}

#[test]
fn three_member_cluster_keeps_the_watch_when_a_member_dies() {
    if !ready() {
        return;
    }
    let mut net = Net::new(3);
    net.start(Node::A, Some("100.96.1.0/24"));
    net.start(Node::B, None);
    for node in [Node::A, Node::B] {
        let known = wait_for(Duration::from_secs(5), || (net.metric(node, "encapd_routes") == Some(1.0)).then_some(()));
        assert!(known.is_some(), "{node:?} did not learn the other node's lease:\n{}", net.log(node));
    }
    // Kill each member in turn (one down at a time, quorum kept): whichever
    // member encapd watches through dies once.
    for (victim, third) in [(0usize, 202u32), (1, 203), (2, 204)] {
        net.etcd().kill_member(victim);
        let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        net.etcd().wait_healthy(&others);
        let before = [net.metric(Node::A, "encapd_routes").unwrap(), net.metric(Node::B, "encapd_routes").unwrap()];
        net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.{third}.0-24"), &udp_lease("198.18.0.2")]);
        for node in [Node::A, Node::B] {
            let seen = time_until(Duration::from_secs(10), || net.metric(node, "encapd_routes") == Some(before[node.index()] + 1.0));
            assert!(seen.is_some(), "member {victim} down: lease 100.96.{third}.0/24 not seen by {node:?}:\n{}", net.log(node));
            eprintln!("member {victim} killed: lease seen by {node:?} in {seen:?}");
        }
        net.etcd().start_member(victim);
        net.etcd().wait_healthy(&[0, 1, 2]);
    }
    assert!(net.alive(Node::A) && net.alive(Node::B));
}

#[test]
fn malformed_leases_are_skipped_counted_and_harmless() {
    if !ready() {
        return;
    }
    let (mut net, _, ctr_b) = Net::forwarding();
    assert_eq!(net.metric(Node::A, "encapd_control_malformed_leases_total"), Some(0.0));
    let routes = net.metric(Node::A, "encapd_routes").unwrap();
    let bad: [(&str, &str); 6] = [
        ("100.96.210.0-24", "not json"),
        ("100.96.211.0-24", r#"{"PublicIP":5}"#),
        ("100.96.212.0-24", r#"{"PublicIP":"198.18.0.2","BackendType":7}"#),
        ("10.1.0.0-24", r#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#),
        ("garbage", r#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#),
        ("100.96.215.7-24", r#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#),
    ];
    for (name, value) in bad {
        net.etcdctl(&["put", &format!("{PREFIX}/subnets/{name}"), value]);
    }
    // A lease of another backend is skipped (logged once), not counted.
    let vxlan =
        r#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
    net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.213.0-24"), vxlan]);
    // A dual-stack key parses; then a good lease after all the bad ones.
    net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.214.0-24&fc00::-64"), &udp_lease("198.18.0.2")]);
    for node in [Node::A, Node::B] {
        let counted = time_until(Duration::from_secs(3), || {
            net.metric(node, "encapd_control_malformed_leases_total") == Some(bad.len() as f64)
                && net.metric(node, "encapd_routes") == Some(routes + 1.0)
        });
        assert!(
            counted.is_some(),
            "{node:?}: malformed {:?}, routes {:?}:\n{}",
            net.metric(node, "encapd_control_malformed_leases_total"),
            net.metric(node, "encapd_routes"),
            net.log(node)
        );
    }
    let log = net.log(Node::A);
    for (name, _) in bad {
        assert!(log.contains(&format!("skipping lease {PREFIX}/subnets/{name} ")), "no log line for {name}:\n{log}");
    }
    assert_eq!(log.matches("subnets/100.96.213.0-24: its holder runs the \"vxlan\" backend").count(), 1, "{log}");
    assert!(net.alive(Node::A) && net.alive(Node::B), "daemons still running");
    assert!(net.ping_ok(&net.wiring.ctr_a, &ctr_b), "still routing");
    assert!(!net.unreachable("100.96.214.1"), "the dual-stack lease is routed");
    assert!(net.unreachable("100.96.210.1"), "a malformed lease is not routed");
    // Every new malformed write is counted.
    net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.210.0-24"), "still not json"]);
    assert!(
        time_until(Duration::from_secs(2), || net.metric(Node::A, "encapd_control_malformed_leases_total") == Some(bad.len() as f64 + 1.0))
            .is_some(),
        "a new malformed write is counted"
    );
    // Malformed leases already in etcd at start-up are counted too, and do not stop the start.
    net.stop(Node::A);
    net.start(Node::A, Some("100.96.1.0/24"));
    assert_eq!(net.metric(Node::A, "encapd_control_malformed_leases_total"), Some(bad.len() as f64));
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "routing after the restart");
}

/// SIGHUP and SIGUSR1 are caught from encapd's first moment, so that
/// neither kills it while start-up still waits for etcd (up to 30 s):
/// node A is signalled while etcd is unreachable, node B while etcd is up
/// but has no network config yet. Both stay alive, become ready once the
/// config is written, serve the SIGUSR1 they were sent (a counter summary
/// follows the ready line) and forward. SIGTERM keeps its default action
/// until ready: it ends a waiting start-up at once. (Before the fix the
/// handlers were installed only once ready, and the default action of
/// SIGHUP or SIGUSR1 ended the process.)
#[test]
fn sighup_and_sigusr1_during_start_up_do_not_kill_it() {
    if !ready() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let mut net = Net::without_etcd();
    net.write_config(Node::A, Some("100.96.1.0/24"), "");
    net.write_config(Node::B, Some("100.96.2.0/24"), "");

    // SIGTERM during start-up: the default action, at once.
    net.spawn(Node::A);
    net.daemon(Node::A).wait_exec(Duration::from_secs(5));
    net.daemon(Node::A).signal(libc::SIGTERM);
    let ended = wait_for(Duration::from_secs(2), || net.daemon(Node::A).exited());
    assert_eq!(ended.and_then(|st| st.signal()), Some(libc::SIGTERM), "SIGTERM during start-up:\n{}", net.log(Node::A));
    net.daemons[Node::A.index()] = None;

    // etcd unreachable: A retries, and is signalled meanwhile.
    net.spawn(Node::A);
    net.daemon(Node::A).wait_exec(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    signal_start_up(&mut net, Node::A, "while etcd was unreachable");

    // etcd up without the network config: B says it waits for it, and is
    // signalled meanwhile (A too, again).
    net.start_etcd(1);
    net.spawn(Node::B);
    let waiting = wait_for(Duration::from_secs(10), || net.log(Node::B).contains("config does not exist").then_some(()));
    assert!(waiting.is_some(), "B does not say it waits for the network config:\n{}", net.log(Node::B));
    signal_start_up(&mut net, Node::B, "while the network config was missing");
    signal_start_up(&mut net, Node::A, "while the network config was missing");

    // The config appears: both finish starting, and serve the SIGUSR1 they kept.
    net.etcdctl(&["put", &format!("{PREFIX}/config"), NETWORK_CONFIG]);
    for node in [Node::A, Node::B] {
        net.wait_ready(node);
        let served = wait_for(Duration::from_secs(3), || {
            let log = net.log(node);
            let ready_at = log.rfind(READY_LINE)?;
            log[ready_at..].contains(SUMMARY_HEADER).then_some(())
        });
        assert!(served.is_some(), "{node:?}: the SIGUSR1 sent during start-up was not served once ready:\n{}", net.log(node));
    }
    let ctr_a = net.attach_container(Node::A);
    let ctr_b = net.attach_container(Node::B);
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "ping A -> B after the signalled start-up");
    assert!(net.ping_ok(&net.wiring.ctr_b, &ctr_a), "ping B -> A");
}

/// Sends SIGHUP and SIGUSR1 to the node's encapd, still starting, and
/// checks a second later that it neither died nor became ready.
fn signal_start_up(net: &mut Net, node: Node, when: &str) {
    for sig in [libc::SIGHUP, libc::SIGUSR1] {
        net.daemon(node).signal(sig);
    }
    std::thread::sleep(Duration::from_secs(1));
    let d = net.daemon(node);
    assert_eq!(d.exited(), None, "{node:?}: SIGHUP and SIGUSR1 {when} ended encapd:\n{}", d.log());
    assert!(!d.is_ready(), "{node:?} ready {when}");
}

/// Cuts the node off etcd (nftables in its namespace: its packets to the
/// client port are refused with a TCP reset, etcd's answers dropped), or
/// joins it again.
fn cut_off_etcd(net: &Net, node: Node, cut: bool) {
    let ns = net.wiring.node_ns(node);
    let o = if cut {
        let rules = format!(
            "table inet encapd_test_cut {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
             ip daddr {NODE_A_UNDERLAY} tcp dport 2379 reject with tcp reset\n  }}\n  chain input {{\n    \
             type filter hook input priority 0; policy accept;\n    ip saddr {NODE_A_UNDERLAY} tcp sport 2379 drop\n  }}\n}}\n"
        );
        let path = net.dir.write(&format!("cut-{}.nft", node.sub()), &rules);
        ns_exec(ns, &["nft", "-f", path.to_str().unwrap()], Duration::from_secs(10))
    } else {
        ns_exec(ns, &["nft", "delete", "table", "inet", "encapd_test_cut"], Duration::from_secs(10))
    };
    assert!(o.ok(), "nft in {ns}: {}", o.text());
}

/// etcd's current revision.
fn revision(net: &Net) -> i64 {
    let v = net.etcd.as_ref().expect("etcd").etcdctl_json(&["get", &format!("{PREFIX}/config")]);
    v["header"]["revision"].as_i64().unwrap_or_else(|| panic!("no revision in {v}"))
}

/// A node whose watch resumes from a revision etcd has compacted lists the
/// leases again: node B is cut off etcd, a lease it routes is deleted and
/// another written meanwhile, and the history is compacted past the
/// revision B watched; once B is back, etcd refuses its watch as compacted,
/// B lists again, routes the new lease and no longer the deleted one.
/// Node A, connected throughout, follows the same changes from its watch.
#[test]
fn a_node_cut_off_during_a_compaction_lists_the_leases_again() {
    if !ready() || !require_tools(&["nft"]) {
        return;
    }
    let (net, _, ctr_b) = Net::forwarding();
    // X and Y point at A's underlay address: B forwards to them, so
    // "routed" means no ICMP unreachable at ctrB.
    let (x_key, x_addr) = (format!("{PREFIX}/subnets/100.96.230.0-24"), "100.96.230.1");
    let (y_key, y_addr) = (format!("{PREFIX}/subnets/100.96.231.0-24"), "100.96.231.1");
    net.etcdctl(&["put", &x_key, &udp_lease(NODE_A_UNDERLAY)]);
    let routed = time_until(Duration::from_secs(5), || net.metric(Node::B, "encapd_routes") == Some(2.0));
    assert!(routed.is_some(), "B does not route X before the cut:\n{}", net.log(Node::B));

    cut_off_etcd(&net, Node::B, true);
    let gone = time_until(Duration::from_secs(10), || net.metric(Node::B, "encapd_control_connected") == Some(0.0));
    assert!(gone.is_some(), "B still connected to etcd after the cut:\n{}", net.log(Node::B));
    net.etcdctl(&["del", &x_key]);
    net.etcdctl(&["put", &y_key, &udp_lease(NODE_A_UNDERLAY)]);
    net.etcdctl(&["put", &y_key, &udp_lease(NODE_A_UNDERLAY)]);
    let rev = revision(&net);
    net.etcdctl(&["compact", &rev.to_string()]);
    assert!(!net.log(Node::B).contains("was compacted"), "B saw a compaction while cut off");
    // B still routes the old set meanwhile.
    assert!(!unreachable_from(&net.wiring.ctr_b, x_addr), "B dropped X while cut off");

    cut_off_etcd(&net, Node::B, false);
    // Routed now: Y (written while B was away) but no longer X (deleted
    // meanwhile). The watch cannot deliver those events any more: they
    // were compacted away, so only a new listing can.
    let caught_up =
        time_until(Duration::from_secs(15), || !unreachable_from(&net.wiring.ctr_b, y_addr) && unreachable_from(&net.wiring.ctr_b, x_addr));
    assert!(caught_up.is_some(), "B did not catch up with the leases after the compaction:\n{}", net.log(Node::B));
    assert!(net.log(Node::B).contains("was compacted"), "B does not say its revision was compacted:\n{}", net.log(Node::B));
    let connected = time_until(Duration::from_secs(5), || net.metric(Node::B, "encapd_control_connected") == Some(1.0));
    assert!(connected.is_some(), "B not connected again:\n{}", net.log(Node::B));
    assert_eq!(net.metric(Node::B, "encapd_routes"), Some(2.0), "B routes A and Y");
    assert!(!net.log(Node::A).contains("was compacted"), "A, never cut off, had no reason to list again");
    assert!(!net.unreachable(y_addr) && net.unreachable(x_addr), "A follows X and Y from its watch");
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b), "ping after the re-list");
    eprintln!("compaction at revision {rev}: B caught up {caught_up:?} after it was joined again");
}

/// The lease ID of `key` (`None` when the key does not exist).
fn lease_of(net: &Net, key: &str) -> Option<i64> {
    let v = net.etcd.as_ref().expect("etcd").etcdctl_json(&["get", key]);
    v["kvs"].as_array()?.first().map(|kv| kv["lease"].as_i64().unwrap_or(0))
}

/// A short lease (`lease_ttl` 10 s, `renew_margin` 7 s: renewed every 3 s)
/// keeps the node's key alive past its first TTL: the key never
/// disappears, its lease ID changes with every renewal, the first lease is
/// gone (revoked), the log says "renewed", and node B routes A throughout.
#[test]
fn a_short_lease_is_renewed_before_it_expires() {
    if !ready() {
        return;
    }
    let mut net = Net::new(1);
    net.write_config(Node::A, Some("100.96.1.0/24"), "lease_ttl = 10\nrenew_margin = 7\n");
    net.spawn(Node::A);
    net.wait_ready(Node::A);
    let claimed = Instant::now();
    let key = format!("{PREFIX}/subnets/100.96.1.0-24");
    let first = lease_of(&net, &key).expect("A's lease key after start-up");
    assert_ne!(first, 0, "A's key has no lease");
    net.start(Node::B, Some("100.96.2.0/24"));
    let ctr_a = net.attach_container(Node::A);
    net.attach_container(Node::B);

    // Watch past the first lease's expiry (10 s after the claim, plus margin).
    let mut leases = vec![first];
    let mut missing = 0;
    let mut b_lost_a = 0;
    while claimed.elapsed() < Duration::from_secs(14) {
        match lease_of(&net, &key) {
            Some(id) if leases.last() != Some(&id) => leases.push(id),
            Some(_) => {}
            None => missing += 1,
        }
        if net.metric(Node::B, "encapd_routes") != Some(1.0) {
            b_lost_a += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let renewed = net.log(Node::A).matches("renewed").count();
    eprintln!("leases of {key} over 14 s: {leases:x?}; 'renewed' logged {renewed} times");
    assert_eq!(missing, 0, "A's key disappeared (its lease expired) in {missing} samples:\n{}", net.log(Node::A));
    assert!(
        leases.len() >= 3,
        "the lease was renewed {} times in 14 s (every 3 s expected): {leases:x?}\n{}",
        leases.len() - 1,
        net.log(Node::A)
    );
    assert!(renewed >= 2, "the log says \"renewed\" {renewed} times:\n{}", net.log(Node::A));
    let old = net.etcdctl(&["lease", "timetolive", &format!("{first:x}")]);
    assert!(old.contains("already expired"), "the first lease outlived its renewal: {old}");
    assert_eq!(b_lost_a, 0, "B stopped routing A in {b_lost_a} samples during the renewals");
    assert!(net.wait_ping(&net.wiring.ctr_b, &ctr_a), "ping B -> A after the renewals");
}

/// The lease says `EncapdKernelDecap` only once the kernel path's programs
/// are attached. The node claims its subnet from etcd (none configured):
/// the programs need that subnet, so the claim comes first, without the
/// flag; etcd's history of the key shows that value at the claim's
/// revision and the flag at a later one, written after the log says the
/// kernel path is attached.
#[test]
fn the_lease_announces_kernel_decap_only_once_the_kernel_path_is_attached() {
    if !ready() {
        return;
    }
    let mut net = Net::new(1);
    net.start_with(Node::A, None, "kernel_path = \"tc\"\n");
    let (subnet, len) = net.subnet_of(Node::A);
    let name = format!("{subnet}-{len}");
    let key = format!("{PREFIX}/subnets/{name}");
    let announced = time_until(Duration::from_secs(5), || net.lease(&name).contains(r#""EncapdKernelDecap":true"#));
    assert!(announced.is_some(), "the lease never says EncapdKernelDecap: {}\n{}", net.lease(&name), net.log(Node::A));
    assert_eq!(
        net.lease(&name),
        r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"udp","BackendData":{"EncapdKernelDecap":true}}"#
    );
    let kv = &net.etcd.as_ref().unwrap().etcdctl_json(&["get", &key])["kvs"][0];
    let (created, modified) = (kv["create_revision"].as_i64().unwrap(), kv["mod_revision"].as_i64().unwrap());
    assert!(modified > created, "the key was written once (revisions {created}, {modified})");
    let claimed = net.etcdctl(&["get", "--print-value-only", &format!("--rev={created}"), &key]);
    assert_eq!(claimed.trim(), udp_lease(NODE_A_UNDERLAY), "the value the subnet was claimed with (revision {created})");
    let log = net.log(Node::A);
    let attached = log.find("kernel path attached").unwrap_or_else(|| panic!("no \"kernel path attached\" in the log:\n{log}"));
    let rewritten = log.find(&format!("lease {key} now reads")).unwrap_or_else(|| panic!("no lease rewrite in the log:\n{log}"));
    assert!(attached < rewritten, "the lease was rewritten before the kernel path was attached:\n{log}");
    eprintln!("claimed at revision {created} without the flag; announced at revision {modified}, {announced:?} after ready");
}

/// Two nodes in a dual-stack network: A with a configured IPv4 and IPv6
/// subnet, B with both allocated. Each key is `<v4>-<len>&<v6>-<len>` with
/// flanneld's udp value, subnet.env has the IPv6 pair, the containers reach
/// each other over IPv6 (ping both ways, an 8 MiB TCP transfer), and a
/// restarted B gets both subnets back, also without its state file.
#[test]
fn dual_stack_nodes_claim_ipv4_and_ipv6_subnets_and_carry_ipv6() {
    if !ready() {
        return;
    }
    let mut net = Net::with_network(1, DUAL_STACK_CONFIG);
    net.write_config_lines(Node::A, "subnet = \"100.96.1.0/24\"\nsubnet6 = \"fd00:96:1::/64\"\n", "", "", "");
    net.spawn(Node::A);
    net.wait_ready(Node::A);
    net.start(Node::B, None);
    assert_eq!(net.lease("100.96.1.0-24&fd00:96:1::-64"), udp_lease(NODE_A_UNDERLAY), "A's key and value");
    let (b4, b4len) = net.subnet_of(Node::B);
    let (b6, b6len) = net.subnet6_of(Node::B).unwrap_or_else(|| panic!("no FLANNEL_IPV6_SUBNET:\n{}", net.subnet_env(Node::B)));
    assert_eq!((b4len, b6len), (24, 64), "flannel's default subnet lengths");
    let b6_net: u128 = u128::from(b6);
    let network6 = u128::from("fd00:96::".parse::<Ipv6Addr>().unwrap());
    assert!(b6_net >> 96 == network6 >> 96 && b6_net != network6 && b6 != "fd00:96:1::".parse::<Ipv6Addr>().unwrap(), "{b6}");
    assert_eq!(net.lease(&format!("{b4}-24&{b6}-64")), udp_lease(NODE_B_UNDERLAY), "B's key and value");
    let env = net.subnet_env(Node::B);
    assert!(
        env.contains("FLANNEL_IPV6_NETWORK=fd00:96::/32\n")
            && env.contains(&format!("FLANNEL_IPV6_SUBNET={}/64\n", Ipv6Addr::from(b6_net + 1))),
        "{env}"
    );
    let keys = net.etcdctl(&["get", "--prefix", "--keys-only", &format!("{PREFIX}/subnets/")]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 2, "one key per node:\n{keys}");

    let (_, ctr_a6) = net.attach_dual_stack_container(Node::A);
    let (_, ctr_b6) = net.attach_dual_stack_container(Node::B);
    let (ctr_a6, ctr_b6) = (ctr_a6.unwrap(), ctr_b6.unwrap());
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b6), "ping {ctr_a6} -> {ctr_b6}:\n{}", net.log(Node::A));
    assert!(net.ping_ok(&net.wiring.ctr_b, &ctr_a6), "ping back over IPv6");
    checksummed_transfer(&net.wiring.ctr_a, &net.wiring.ctr_b, &ctr_b6);
    assert_eq!(net.metric(Node::A, "encapd_routes"), Some(2.0), "B's two subnets");

    net.stop(Node::B);
    std::fs::remove_dir_all(net.dir.path().join("b/state")).unwrap();
    net.start(Node::B, None);
    assert_eq!(
        (net.subnet_of(Node::B).0, net.subnet6_of(Node::B)),
        (b4, Some((b6, 64))),
        "B's subnets after a restart without its state file"
    );
    assert!(net.wait_ping(&net.wiring.ctr_a, &ctr_b6), "ping over IPv6 after B's restart");
}

/// Node B is a node whose lease etcd holds in flanneld's exact format (put
/// by the test on a 24 h lease, as `createSubnet` does; B itself runs
/// encapd from a peers file), `backend` "udp" or "vxlan"; node A joins
/// with etcd, with a configured subnet pair. Returns the containers'
/// addresses (IPv4, IPv6) on A and B.
fn join_a_flanneld_format_cluster(net: &mut Net, backend: &str, b_value: &str) -> [(String, String); 2] {
    let vxlan = backend == "vxlan";
    let mac = |node: Node| if vxlan { format!("vtep_mac = \"02:00:c6:12:00:0{}\"\n", node.index() + 1) } else { String::new() };
    net.dir.write(
        "b/peers.toml",
        &format!(
            "[[peer]]\nsubnet = \"100.96.1.0/24\"\nsubnet6 = \"fd00:96:1::/64\"\npublic_ip = \"{NODE_A_UNDERLAY}\"\n{}",
            if vxlan { "vtep_mac = \"02:00:c6:12:00:01\"\n" } else { "" }
        ),
    );
    net.write_node_config(
        Node::B,
        &format!("subnet = \"100.96.2.0/24\"\nsubnet6 = \"fd00:96:2::/64\"\n{}", mac(Node::B)),
        &format!("cidr = \"100.96.0.0/16\"\ncidr6 = \"fd00:96::/32\"\nbackend = \"{backend}\"\n"),
        "source = \"file\"\npeers = \"peers.toml\"\n",
        "",
    );
    net.spawn(Node::B);
    net.wait_ready(Node::B);
    net.put_on_lease("100.96.2.0-24&fd00:96:2::-64", b_value);
    net.write_config_lines(
        Node::A,
        &format!("subnet = \"100.96.1.0/24\"\nsubnet6 = \"fd00:96:1::/64\"\n{}", mac(Node::A)),
        &format!("backend = \"{backend}\"\n"),
        "",
        "",
    );
    net.spawn(Node::A);
    net.wait_ready(Node::A);
    [Node::A, Node::B].map(|node| {
        let (v4, v6) = net.attach_dual_stack_container(node);
        (v4, v6.expect("an IPv6 subnet in subnet.env"))
    })
}

/// A node joins a dual-stack udp cluster whose other lease is exactly what
/// flanneld's udp backend writes there (`RegisterNetwork` acquires it with
/// `PublicIP` only: `"PublicIPv6":null`; `AcquireLease` still allocates the
/// IPv6 subnet of the key): both subnets are routed at start, to
/// `PublicIP`, and the containers reach each other over IPv4 and IPv6.
#[test]
fn a_node_joins_a_cluster_with_flanneld_s_dual_stack_udp_lease() {
    if !ready() {
        return;
    }
    let mut net = Net::with_network(1, DUAL_STACK_CONFIG);
    let flanneld_udp = r#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#;
    let [(a4, a6), (b4, b6)] = join_a_flanneld_format_cluster(&mut net, "udp", flanneld_udp);
    assert_eq!(net.metric(Node::A, "encapd_routes"), Some(2.0), "B's two subnets, from the start:\n{}", net.log(Node::A));
    for (from, to) in [(&net.wiring.ctr_a, &b4), (&net.wiring.ctr_a, &b6), (&net.wiring.ctr_b, &a4), (&net.wiring.ctr_b, &a6)] {
        assert!(net.wait_ping(from, to), "ping {from} -> {to}:\n{}", net.log(Node::A));
    }
    checksummed_transfer(&net.wiring.ctr_b, &net.wiring.ctr_a, &a6);
    assert_eq!(net.lease("100.96.1.0-24&fd00:96:1::-64"), udp_lease(NODE_A_UNDERLAY), "A's lease is flanneld's udp value");
}

/// A node joins a dual-stack vxlan cluster whose other lease is what
/// flanneld's vxlan backend writes there (`newSubnetAttrs`: `PublicIPv6`
/// and the `BackendV6Data` of its second VTEP on the IPv6 underlay):
/// encapd routes that lease's IPv4 subnet (to `PublicIP`, with
/// `BackendData.VtepMAC`) and not its IPv6 one, which flanneld expects
/// over an IPv6 underlay that encapd does not speak: a ping to it is
/// answered "unreachable" at once, and the log says why.
#[test]
fn a_node_joins_a_cluster_with_flanneld_s_dual_stack_vxlan_lease() {
    if !ready() {
        return;
    }
    let config = r#"{"Network":"100.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:96::/32","Backend":{"Type":"vxlan"}}"#;
    let mut net = Net::with_network(1, config);
    let flanneld_vxlan = r#"{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:18::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:c6:12:00:02"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:c6:12:01:02"}}"#;
    let [(a4, _), (b4, b6)] = join_a_flanneld_format_cluster(&mut net, "vxlan", flanneld_vxlan);
    assert_eq!(net.metric(Node::A, "encapd_routes"), Some(1.0), "B's IPv4 subnet only:\n{}", net.log(Node::A));
    assert!(net.wait_ping(&net.wiring.ctr_a, &b4), "ping A -> {b4}:\n{}", net.log(Node::A));
    assert!(net.ping_ok(&net.wiring.ctr_b, &a4), "ping B -> {a4}");
    assert!(net.unreachable(&b6), "B's IPv6 subnet is not routed");
    let log = net.log(Node::A);
    let said = "takes IPv6 traffic at PublicIPv6 fd00:18::2 (VTEP 02:00:c6:12:01:02) over an IPv6 underlay";
    assert_eq!(log.matches(said).count(), 1, "the log says why, once:\n{log}");
    assert_eq!(
        net.lease("100.96.1.0-24&fd00:96:1::-64"),
        r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:c6:12:00:01","EncapdKernelDecap":false}}"#,
        "A's lease: flanneld's vxlan value without an IPv6 VTEP"
    );
}

/// flannel's wireguard network config.
const WIREGUARD_CONFIG: &str = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"wireguard"}}"#;

#[test]
fn wireguard_nodes_publish_and_route_flannels_wireguard_lease() {
    if !ready() {
        return;
    }
    let keys = WireGuardKeys::new(0x3a11_0401);
    let mut net = Net::with_network(1, WIREGUARD_CONFIG);
    for (node, key, subnet) in [(Node::A, &keys.a, "100.96.1.0/24"), (Node::B, &keys.b, "100.96.2.0/24")] {
        let node_lines = format!("subnet = \"{subnet}\"\n{}", WireGuardKeys::node_lines(key));
        net.write_config_lines(node, &node_lines, &WireGuardKeys::network_lines(), "", "");
        net.spawn(node);
        net.wait_ready(node);
    }
    // Each lease is flanneld's wireguard lease, with the node's public key.
    for (name, ip, key) in [("100.96.1.0-24", NODE_A_UNDERLAY, &keys.a), ("100.96.2.0-24", NODE_B_UNDERLAY, &keys.b)] {
        let want = format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"wireguard","BackendData":{{"PublicKey":"{}"}}}}"#,
            key.public_key
        );
        assert_eq!(net.lease(name), want);
    }
    let _ctr_a = net.attach_container(Node::A);
    let ctr_b = net.attach_container(Node::B);
    // The first packets start the handshake (and are dropped, counted).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !net.wait_ping(&net.wiring.ctr_a, &ctr_b) {
        assert!(Instant::now() < deadline, "ping ctrA -> {ctr_b} through the wireguard leases:\n{}", net.log(Node::A));
    }
    assert!(net.log(Node::A).contains(&format!("wireguard: peer {} added", keys.b.public_key)), "{}", net.log(Node::A));
}
