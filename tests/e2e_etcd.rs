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
//! start-up still waits for etcd do not kill encapd. Root only.
//!
//! Put-to-table latency and the start-up load of many leases are measured
//! by `encapd-bench etcd-propagation` (bench/README.md).

use encapd_testbed as common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::cmd::{TempDir, time_until};
use common::counters::{METRICS, SUMMARY_HEADER, metric_value, scrape};
use common::etcd::EtcdCluster;
use common::instance::{Encapd, READY_LINE, print_log_if_panicking};
use common::netns::Permit;
use common::topology::unreachable_from;
use common::traffic::{counted_udp_stream, hashed_transfer};
use common::wiring::Wiring;
use common::{NODE_A_UNDERLAY, NODE_B_UNDERLAY, Node, ns_exec, require_root, require_tools, wait_for};

const PREFIX: &str = "/coreos.com/network";
const NETWORK_CONFIG: &str = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}"#;
/// Start-up with etcd may allocate a subnet and wait for the cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn ready() -> bool {
    require_root() && require_tools(&["etcd", "etcdctl"])
}

/// ctrA ── nodeA (etcd) ══ underlay ══ nodeB ── ctrB, with etcd-backed
/// encapd; IPv6 off (the etcd source routes IPv4 only).
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
        let mut net = Net::without_etcd();
        net.start_etcd(members);
        net.etcdctl(&["put", &format!("{PREFIX}/config"), NETWORK_CONFIG]);
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
        let permit = Permit::acquire();
        let wiring = Wiring::build(false, false);
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
        let members = self.etcd.as_ref().map_or(1, |e| e.endpoints().len());
        let eps = (0..members).map(|i| format!("\"{}\"", EtcdCluster::endpoint_for(NODE_A_UNDERLAY, i))).collect::<Vec<_>>().join(", ");
        let text = format!(
            "[node]\npublic_ip = \"{}\"\n{subnet}\n[dataplane]\nworkers = 1\n{dataplane_extra}\n\
             [control]\nsource = \"etcd\"\nendpoints = [{eps}]\nstate_dir = \"state\"\nsubnet_env = \"subnet.env\"\n{control_extra}\n\
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

    /// Addresses the node's container in the node's subnet (`.1` on the
    /// node, `.2` in the container); returns the container's address.
    fn attach_container(&self, node: Node) -> String {
        let (net, len) = self.subnet_of(node);
        let base = u32::from(net.parse::<Ipv4Addr>().unwrap());
        let (gw, ctr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        self.wiring.attach_container(node, &format!("{gw}/{len}"), &format!("{ctr}/{len}"), None);
        ctr.to_string()
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
    let a_lease = lease(&net, "100.96.1.0-24");
    assert!(a_lease.contains(r#""BackendData":{"EncapdKernelDecap":true}"#), "{a_lease}");
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
    let b_lease = lease(&net, "100.96.2.0-24");
    assert!(b_lease.contains(r#""EncapdKernelDecap":true"#), "{b_lease}");
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
