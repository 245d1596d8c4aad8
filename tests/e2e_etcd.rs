//! The etcd control source end to end, in network namespaces: Debian's
//! `etcd` runs inside node A's namespace on its underlay address
//! (198.18.0.1), so both nodes reach it over the underlay (see
//! `common::etcd`). Two encapd nodes claim subnets (one configured, one
//! allocated), find each other through their leases and forward; a lease
//! written by hand in flanneld's JSON is routed within 1 s and unrouted
//! within 1 s of its deletion; a restarted node gets its subnet back; an
//! etcd outage under a counted stream loses nothing; a three-member cluster
//! survives a member; malformed leases are skipped and counted. Root only.
//!
//! `bench_etcd_propagation` (ignored; run by bench/etcd_propagation.sh)
//! measures put-to-table latency over 1,000 puts and the start-up load of
//! 5,000 leases.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::cmd::{TempDir, time_until};
use common::counters::{METRICS, metric_value, scrape};
use common::encapd::{Encapd, print_log_if_panicking};
use common::etcd::EtcdCluster;
use common::netns::Permit;
use common::topology::unreachable_from;
use common::traffic::{counted_udp_stream, hashed_transfer};
use common::wiring::Wiring;
use common::{NODE_A_UNDERLAY, Node, in_netns, ns_exec, require_root, require_tools, wait_for};

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
        let subnet = subnet.map(|s| format!("subnet = \"{s}\"\n")).unwrap_or_default();
        let members = self.etcd.as_ref().map_or(1, |e| e.endpoints().len());
        let eps = (0..members).map(|i| format!("\"{}\"", EtcdCluster::endpoint_for(NODE_A_UNDERLAY, i))).collect::<Vec<_>>().join(", ");
        let text = format!(
            "[node]\npublic_ip = \"{}\"\n{subnet}\n[dataplane]\nworkers = 1\n\n\
             [control]\nsource = \"etcd\"\nendpoints = [{eps}]\nstate_dir = \"state\"\nsubnet_env = \"subnet.env\"\n{control_extra}\n\
             [metrics]\nlisten = \"{METRICS}\"\n",
            node.underlay()
        );
        self.dir.write(&format!("{}/encapd.toml", node.sub()), &text);
    }

    /// Writes the node's config and starts its encapd; waits until it forwards.
    fn start(&mut self, node: Node, subnet: Option<&str>) {
        self.write_config(node, subnet, "");
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
    assert_eq!(log.matches("subnets/100.96.213.0-24: backend \"vxlan\"").count(), 1, "{log}");
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

/// Benchmark, run by bench/etcd_propagation.sh: put → table change latency
/// over 1,000 puts (median, p99) and the start-up load of 5,000 leases.
#[test]
#[ignore]
fn bench_etcd_propagation() {
    if !ready() {
        return;
    }
    let mut net = Net::new(1);
    net.etcdctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"100.64.0.0/10","Backend":{"Type":"udp"}}"#]);
    net.start(Node::A, Some("100.64.0.0/24"));
    let ns = net.wiring.node_a.clone();
    let endpoint = net.etcd().endpoint(0);
    let puts: usize = std::env::var("ENCAPD_BENCH_PUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let addr: SocketAddr = METRICS.parse().unwrap();
    let version = move || -> u64 {
        let text = encapd::stats::scrape::fetch(addr).unwrap_or_default();
        metric_value(&text, "encapd_table_version").unwrap_or(0.0) as u64
    };
    let name = |i: usize| format!("{PREFIX}/subnets/100.{}.{}.0-24", 64 + (i + 1) / 256, (i + 1) % 256);
    let mut lat = in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await.unwrap();
            let mut lat = Vec::with_capacity(puts);
            for i in 0..puts {
                let before = version();
                let start = Instant::now();
                client.put(name(i), udp_lease("198.18.0.2"), None).await.unwrap();
                while version() <= before {
                    assert!(start.elapsed() < Duration::from_secs(5), "put {i} not applied within 5 s");
                }
                lat.push(start.elapsed());
            }
            lat
        })
    });
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "etcd put -> table published ({} puts): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );

    // Start-up with 5,000 leases present.
    let total: usize = std::env::var("ENCAPD_BENCH_LEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    net.stop(Node::A);
    let endpoint = net.etcd().endpoint(0);
    in_netns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await.unwrap();
            for chunk in (puts..total).collect::<Vec<_>>().chunks(100) {
                let ops: Vec<etcd_client::TxnOp> =
                    chunk.iter().map(|&i| etcd_client::TxnOp::put(name(i), udp_lease("198.18.0.2"), None)).collect();
                client.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
            }
        })
    });
    let start = Instant::now();
    net.spawn(Node::A);
    net.wait_ready(Node::A);
    let ready_after = start.elapsed();
    let routes = in_netns(&ns, || {
        wait_for(Duration::from_secs(30), || {
            let text = encapd::stats::scrape::fetch(addr).ok()?;
            let r = metric_value(&text, "encapd_routes")?;
            (r as usize >= total).then_some(r)
        })
    });
    let loaded = start.elapsed();
    assert!(routes.is_some(), "{total} leases not loaded within 30 s");
    println!(
        "start-up with {total} leases in etcd: ready (forwarding, table with all leases) after {:.0} ms; /metrics shows {total} routes after {:.0} ms",
        ready_after.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3
    );
}
