//! The etcd control source end to end, in network namespaces: Debian's
//! `etcd` runs inside node A's namespace on its underlay address
//! (198.18.0.1), so both nodes reach it over the underlay. Two encapd nodes
//! claim subnets (one configured, one allocated), find each other through
//! their leases and forward; a lease written by hand in flanneld's JSON is
//! routed within 1 s and unrouted within 1 s of its deletion; a restarted
//! node gets its subnet back; an etcd outage under a counted stream loses
//! nothing; a three-member cluster survives a member; malformed leases are
//! skipped and counted. Root only.
//!
//! `bench_etcd_propagation` (ignored; run by bench/etcd_propagation.sh)
//! measures put-to-table latency over 1,000 puts and the start-up load of
//! 5,000 leases.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::traffic::counted_udp_stream;
use common::{Prng, StreamHash, TempDir, in_netns, must, ns_exec, require_root, require_tools, run, wait_for};

const PREFIX: &str = "/coreos.com/network";
const NETWORK_CONFIG: &str = r#"{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}"#;
const METRICS: &str = "127.0.0.1:9285";
/// Client and peer ports of up to three etcd members (all on 198.18.0.1 in node A's namespace).
const MEMBERS: [(u16, u16); 3] = [(2379, 2380), (22379, 22380), (32379, 32380)];

static NEXT: AtomicUsize = AtomicUsize::new(0);
static STALE: std::sync::Once = std::sync::Once::new();

/// Removes `ee<hex pid>_<n>-<role>` namespaces whose creating test process
/// is gone (killed before its Drop ran), with any process left inside.
fn remove_stale_namespaces() {
    let list = run("ip", &["netns", "list"]);
    for ns in list.stdout.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns.strip_prefix("ee").and_then(|r| r.split_once('_')).and_then(|(p, _)| u32::from_str_radix(p, 16).ok()) else {
            continue;
        };
        let role_ok = ["-cA", "-nA", "-nB", "-cB"].iter().any(|r| ns.ends_with(r));
        if !role_ok || pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for p in run("ip", &["netns", "pids", ns]).stdout.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            signal(p, libc::SIGKILL);
        }
        let _ = run("ip", &["netns", "del", ns]);
        eprintln!("removed stale test namespace {ns} (creator pid {pid} is gone)");
    }
}

fn ready() -> bool {
    require_root() && require_tools(&["etcd", "etcdctl"])
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child this test started.
    unsafe { libc::kill(pid, sig) };
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    wait_for(timeout, || child.try_wait().ok().flatten()).is_some()
}

/// SIGTERM, then SIGKILL after `grace`; always reaped.
fn stop_child(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    signal(child.id() as i32, libc::SIGTERM);
    if !wait_exit(child, grace) {
        signal(child.id() as i32, libc::SIGKILL);
        let _ = child.wait();
    }
}

struct Etcd {
    child: Option<Child>,
    name: String,
    data: PathBuf,
    log: PathBuf,
    client: u16,
    peer: u16,
    cluster: String,
}

/// One encapd process.
struct Daemon {
    child: Child,
    log: PathBuf,
}

/// ctrA ── nodeA (etcd) ══ underlay ══ nodeB ── ctrB, with etcd-backed encapd.
struct Net {
    ctr_a: String,
    node_a: String,
    node_b: String,
    ctr_b: String,
    namespaces: Vec<String>,
    etcds: Vec<Etcd>,
    daemons: [Option<Daemon>; 2],
    dir: TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum N {
    A,
    B,
}

impl N {
    fn i(self) -> usize {
        self as usize
    }
    fn sub(self) -> &'static str {
        if self == N::A { "a" } else { "b" }
    }
    fn ip(self) -> &'static str {
        if self == N::A { "198.18.0.1" } else { "198.18.0.2" }
    }
}

impl Net {
    /// Namespaces, underlay and `members` etcd processes (network config
    /// written); no encapd yet.
    fn new(members: usize) -> Net {
        STALE.call_once(remove_stale_namespaces);
        let prefix = format!("ee{:x}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut net = Net {
            ctr_a: format!("{prefix}-cA"),
            node_a: format!("{prefix}-nA"),
            node_b: format!("{prefix}-nB"),
            ctr_b: format!("{prefix}-cB"),
            namespaces: Vec::new(),
            etcds: Vec::new(),
            daemons: [None, None],
            dir: TempDir::new(&prefix),
        };
        for ns in [net.ctr_a.clone(), net.node_a.clone(), net.node_b.clone(), net.ctr_b.clone()] {
            must("ip", &["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let o =
                ns_exec(&ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.disable_ipv6=1"], Duration::from_secs(10));
            assert!(o.ok(), "sysctl in {ns}: {}", o.text());
        }
        let (ca, na, nb, cb) = (&net.ctr_a, &net.node_a, &net.node_b, &net.ctr_b);
        must("ip", &["link", "add", "eth0", "netns", ca, "type", "veth", "peer", "name", "vc", "netns", na]);
        must("ip", &["link", "add", "ul", "netns", na, "type", "veth", "peer", "name", "ul", "netns", nb]);
        must("ip", &["link", "add", "vc", "netns", nb, "type", "veth", "peer", "name", "eth0", "netns", cb]);
        for (ns, addr) in [(na, "198.18.0.1/24"), (nb, "198.18.0.2/24")] {
            for args in [
                &["link", "set", "lo", "up"][..],
                &["link", "set", "ul", "up"],
                &["link", "set", "vc", "up"],
                &["addr", "add", addr, "dev", "ul"],
            ] {
                must("ip", &[&["-n", ns][..], args].concat());
            }
        }
        for ns in [ca, cb] {
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
            must("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        }
        let members = &MEMBERS[..members];
        let cluster = members.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://198.18.0.1:{p}")).collect::<Vec<_>>().join(",");
        for (i, &(client, peer)) in members.iter().enumerate() {
            let e = Etcd {
                child: None,
                name: format!("m{i}"),
                data: net.dir.path().join(format!("etcd{i}")),
                log: net.dir.path().join(format!("etcd{i}.log")),
                client,
                peer,
                cluster: cluster.clone(),
            };
            net.etcds.push(e);
            net.start_etcd(i);
        }
        net.wait_etcd_healthy(&(0..members.len()).collect::<Vec<_>>());
        net.etcdctl(&["put", &format!("{PREFIX}/config"), NETWORK_CONFIG]);
        net
    }

    fn start_etcd(&mut self, i: usize) {
        let ns = self.node_a.clone();
        let e = &mut self.etcds[i];
        assert!(e.child.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&e.log).unwrap();
        let client_url = format!("http://198.18.0.1:{}", e.client);
        let peer_url = format!("http://198.18.0.1:{}", e.peer);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "etcd", "--name", &e.name, "--data-dir"])
            .arg(&e.data)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &e.cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "encapd-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning etcd");
        e.child = Some(child);
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://198.18.0.1:{}", self.etcds[i].client)
    }

    fn endpoints(&self) -> Vec<String> {
        (0..self.etcds.len()).map(|i| self.endpoint(i)).collect()
    }

    fn wait_etcd_healthy(&mut self, members: &[usize]) {
        let eps = members.iter().map(|&i| self.endpoint(i)).collect::<Vec<_>>().join(",");
        let ok = wait_for(Duration::from_secs(20), || {
            let o = ns_exec(
                &self.node_a,
                &["etcdctl", "--endpoints", &eps, "--command-timeout=1s", "endpoint", "health"],
                Duration::from_secs(10),
            );
            o.ok().then_some(())
        });
        if ok.is_none() {
            let logs: String = self.etcds.iter().map(|e| std::fs::read_to_string(&e.log).unwrap_or_default()).collect();
            panic!("etcd ({eps}) not healthy within 20 s:\n{logs}");
        }
    }

    /// Stops member `i` (SIGTERM, by pid).
    fn stop_etcd(&mut self, i: usize) {
        if let Some(mut c) = self.etcds[i].child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// SIGKILL to member `i`.
    fn kill_etcd(&mut self, i: usize) {
        if let Some(mut c) = self.etcds[i].child.take() {
            signal(c.id() as i32, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// etcdctl against the running members; panics on failure.
    fn etcdctl(&self, args: &[&str]) -> String {
        let eps = (0..self.etcds.len()).filter(|&i| self.etcds[i].child.is_some()).map(|i| self.endpoint(i)).collect::<Vec<_>>().join(",");
        let mut full = vec!["etcdctl", "--endpoints", &eps, "--command-timeout=3s"];
        full.extend_from_slice(args);
        let o = ns_exec(&self.node_a, &full, Duration::from_secs(15));
        assert!(o.ok(), "etcdctl {args:?}: {}", o.text());
        o.stdout
    }

    fn config_text(&self, node: N, subnet: Option<&str>, endpoints: &[String]) -> String {
        let subnet = subnet.map(|s| format!("subnet = \"{s}\"\n")).unwrap_or_default();
        let eps = endpoints.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "[node]\npublic_ip = \"{}\"\n{subnet}\n[dataplane]\nworkers = 1\n\n\
             [control]\nsource = \"etcd\"\nendpoints = [{eps}]\nstate_dir = \"state\"\nsubnet_env = \"subnet.env\"\n\n\
             [metrics]\nlisten = \"{METRICS}\"\n\n[process]\ncontrol_socket = \"encapd.sock\"\n",
            node.ip()
        )
    }

    fn ns(&self, node: N) -> &str {
        if node == N::A { &self.node_a } else { &self.node_b }
    }

    /// Writes the node's config and starts its encapd; waits until it forwards.
    fn start(&mut self, node: N, subnet: Option<&str>) {
        let text = self.config_text(node, subnet, &self.endpoints());
        let config = self.dir.write(&format!("{}/encapd.toml", node.sub()), &text);
        self.spawn(node, &config);
        self.wait_ready(node);
    }

    fn spawn(&mut self, node: N, config: &Path) {
        let log = self.dir.path().join(node.sub()).join("encapd.log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(node)])
            .arg(common::encapd_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("spawning encapd");
        self.daemons[node.i()] = Some(Daemon { child, log });
    }

    fn log(&self, node: N) -> String {
        std::fs::read_to_string(self.dir.path().join(node.sub()).join("encapd.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, node: N) {
        let before = self.log(node).matches("ready: forwarding").count();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = self.daemons[node.i()].as_mut().unwrap();
            if let Some(st) = d.child.try_wait().unwrap() {
                self.daemons[node.i()] = None;
                panic!("encapd {node:?} exited during start-up ({st}):\n{}", self.log(node));
            }
            let log = std::fs::read_to_string(&d.log).unwrap_or_default();
            if log.matches("ready: forwarding").count() > before {
                return;
            }
            assert!(Instant::now() < deadline, "encapd {node:?} not ready within 20 s:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self, node: N) {
        if let Some(mut d) = self.daemons[node.i()].take() {
            stop_child(&mut d.child, Duration::from_secs(5));
        }
    }

    fn alive(&mut self, node: N) -> bool {
        self.daemons[node.i()].as_mut().is_some_and(|d| d.child.try_wait().ok().flatten().is_none())
    }

    /// The node's subnet as its subnet.env says (`FLANNEL_SUBNET` is `.1/len`).
    fn subnet_env(&self, node: N) -> String {
        std::fs::read_to_string(self.dir.path().join(node.sub()).join("subnet.env")).unwrap_or_default()
    }

    fn subnet_of(&self, node: N) -> (String, u8) {
        let env = self.subnet_env(node);
        let line = env.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET=")).unwrap_or_else(|| panic!("no FLANNEL_SUBNET in {env:?}"));
        let (addr, len) = line.split_once('/').unwrap();
        let a: std::net::Ipv4Addr = addr.parse().unwrap();
        let net = std::net::Ipv4Addr::from(u32::from(a) - 1);
        (net.to_string(), len.parse().unwrap())
    }

    /// Gives the node's container (and the node's bridge side) addresses in
    /// the node's subnet: `.1` on the node, `.2` in the container.
    fn attach_container(&self, node: N) -> String {
        let (net, len) = self.subnet_of(node);
        let base = u32::from(net.parse::<std::net::Ipv4Addr>().unwrap());
        let gw = std::net::Ipv4Addr::from(base + 1).to_string();
        let ctr = std::net::Ipv4Addr::from(base + 2).to_string();
        let (ns, cns) = if node == N::A { (&self.node_a, &self.ctr_a) } else { (&self.node_b, &self.ctr_b) };
        must("ip", &["-n", ns, "addr", "add", &format!("{gw}/{len}"), "dev", "vc"]);
        must("ip", &["-n", cns, "addr", "add", &format!("{ctr}/{len}"), "dev", "eth0"]);
        must("ip", &["-n", cns, "route", "add", "default", "via", &gw]);
        ctr
    }

    fn scrape(&self, node: N) -> String {
        let addr: SocketAddr = METRICS.parse().unwrap();
        in_netns(self.ns(node), || encapd::stats::scrape::fetch(addr)).unwrap_or_default()
    }

    /// The value of an unlabelled metric (`None` when absent or unreadable).
    fn metric(&self, node: N, name: &str) -> Option<f64> {
        let text = self.scrape(node);
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
    }

    /// True when a ping from ctrA to `dst` is answered "unreachable" within 300 ms.
    fn unreachable(&self, dst: &str) -> bool {
        let o = ns_exec(&self.ctr_a, &["ping", "-n", "-c", "1", "-W", "0.3", dst], Duration::from_secs(5));
        o.text().to_lowercase().contains("unreachable")
    }

    fn ping_ok(&self, from_ctr: &str, dst: &str) -> bool {
        ns_exec(from_ctr, &["ping", "-n", "-c", "1", "-W", "1", dst], Duration::from_secs(5)).ok()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for node in [N::A, N::B] {
            if let Some(mut d) = self.daemons[node.i()].take() {
                stop_child(&mut d.child, Duration::from_secs(5));
            }
            if panicking {
                eprintln!("---- encapd log, node {node:?} ----\n{}----", self.log(node));
            }
        }
        for i in 0..self.etcds.len() {
            self.stop_etcd(i);
            if panicking {
                eprintln!("---- etcd {i} log ----\n{}----", std::fs::read_to_string(&self.etcds[i].log).unwrap_or_default());
            }
        }
        for ns in self.namespaces.drain(..) {
            let o = run("ip", &["netns", "del", &ns]);
            if !o.ok() {
                eprintln!("warning: ip netns del {ns}: {}", o.text());
            }
        }
    }
}

/// Sends `bytes` of pseudo-random data from `from_ns` to `to:port` over TCP
/// and compares SHA-256 digests of what was sent and received.
fn checksummed_transfer(from_ns: &str, to_ns: &str, to: &str, bytes: usize) {
    let listener = in_netns(to_ns, || TcpListener::bind((to, 9200)).unwrap());
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut h = StreamHash::new();
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n;
        }
        (total, h.finish())
    });
    let to_owned = to.to_owned();
    let mut stream =
        in_netns(from_ns, || TcpStream::connect_timeout(&format!("{to_owned}:9200").parse().unwrap(), Duration::from_secs(5)).unwrap());
    stream.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut prng = Prng::new(42);
    let mut h = StreamHash::new();
    let mut buf = vec![0u8; 65536];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        prng.fill(&mut buf[..n]);
        stream.write_all(&buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n;
    }
    drop(stream);
    let sent = h.finish();
    let (total, got) = receiver.join().unwrap();
    assert_eq!(total, bytes, "bytes received");
    assert_eq!(got, sent, "SHA-256 of the received stream");
}

/// Waits (at most `timeout`) until `f` holds; returns how long it took.
fn time_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    wait_for(timeout, || f().then_some(())).map(|_| start.elapsed())
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
    net.start(N::A, Some("100.96.1.0/24"));
    net.start(N::B, None);
    let (sa, sb) = (net.subnet_of(N::A), net.subnet_of(N::B));
    assert_eq!(sa, ("100.96.1.0".to_owned(), 24));
    assert_ne!(sa, sb, "distinct subnets");
    assert!(sb.0.starts_with("100.96.") && sb.1 == 24, "B allocated a /24 of the network: {sb:?}");
    let env = net.subnet_env(N::B);
    assert!(
        env.contains("FLANNEL_NETWORK=100.96.0.0/16\n") && env.contains("FLANNEL_MTU=1472\n") && env.contains("FLANNEL_IPMASQ=false\n"),
        "{env}"
    );
    // The leases are flannel's, byte for byte.
    let leases = net.etcdctl(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
    for (node, (s, l)) in [(N::A, &sa), (N::B, &sb)] {
        let want = format!("{PREFIX}/subnets/{s}-{l}\n{}\n", udp_lease(node.ip()));
        assert!(leases.contains(&want), "lease of {node:?} in:\n{leases}");
    }
    let ctr_a = net.attach_container(N::A);
    let ctr_b = net.attach_container(N::B);
    assert!(
        wait_for(Duration::from_secs(5), || net.ping_ok(&net.ctr_a, &ctr_b).then_some(())).is_some(),
        "ping {ctr_a} -> {ctr_b}:\n{}",
        net.log(N::A)
    );
    assert!(net.ping_ok(&net.ctr_b, &ctr_a), "ping back");
    checksummed_transfer(&net.ctr_a, &net.ctr_b, &ctr_b, 8 << 20);
    assert_eq!(net.metric(N::A, "encapd_control_connected"), Some(1.0));

    // A node encapd never saw, in flanneld's exact JSON (it points at B's
    // underlay address: packets to it are forwarded, so "routed" means no
    // ICMP unreachable any more).
    assert!(net.unreachable("100.96.200.1"), "not routed before its lease exists");
    let routes = net.metric(N::A, "encapd_routes").unwrap();
    let key = format!("{PREFIX}/subnets/100.96.200.0-24");
    net.etcdctl(&["put", &key, &udp_lease("198.18.0.2")]);
    let took = time_until(Duration::from_secs(1), || net.metric(N::A, "encapd_routes") == Some(routes + 1.0));
    assert!(took.is_some(), "hand-written lease not routed within 1 s:\n{}", net.log(N::A));
    assert!(!net.unreachable("100.96.200.1"), "routed after the put");
    net.etcdctl(&["del", &key]);
    let took = time_until(Duration::from_secs(1), || net.metric(N::A, "encapd_routes") == Some(routes));
    assert!(took.is_some(), "deleted lease still routed after 1 s:\n{}", net.log(N::A));
    assert!(net.unreachable("100.96.200.1"), "unreachable after the delete");

    // A restarted node gets its subnet back.
    net.stop(N::B);
    net.start(N::B, None);
    assert_eq!(net.subnet_of(N::B), sb, "B's subnet after a restart");
    assert!(wait_for(Duration::from_secs(5), || net.ping_ok(&net.ctr_a, &ctr_b).then_some(())).is_some(), "ping after B's restart");
    // ... also when only its lease (not its state file) remembers it.
    net.stop(N::B);
    std::fs::remove_dir_all(net.dir.path().join("b/state")).unwrap();
    net.start(N::B, None);
    assert_eq!(net.subnet_of(N::B), sb, "B's subnet after a restart without its state file");
}

/// Sends `count` numbered datagrams from `from` (in `ns_a`) to `to:9100` (in
/// `ns_b`) at `rate` per second while `during` runs; returns (sent, received).
fn counted_stream(ns_a: &str, from: &str, ns_b: &str, to: &str, count: u32, rate: u32, during: impl FnOnce()) -> (u32, u32) {
    let (from, to) = (from.parse().unwrap(), SocketAddr::new(to.parse().unwrap(), 9100));
    let (sent, got, _) = counted_udp_stream(ns_a, from, ns_b, to, count, rate, false, during);
    (sent, got)
}

#[test]
fn etcd_outage_of_10_s_loses_nothing_and_the_gauge_shows_it() {
    if !ready() {
        return;
    }
    let mut net = Net::new(1);
    net.start(N::A, Some("100.96.1.0/24"));
    net.start(N::B, Some("100.96.2.0/24"));
    let ctr_a = net.attach_container(N::A);
    let ctr_b = net.attach_container(N::B);
    assert!(wait_for(Duration::from_secs(5), || net.ping_ok(&net.ctr_a, &ctr_b).then_some(())).is_some(), "ping before the outage");
    let (ns_a, ns_b) = (net.ctr_a.clone(), net.ctr_b.clone());
    let mut outage_seen = [false, false];
    let mut after = None;
    let (sent, got) = counted_stream(&ns_a, &ctr_a, &ns_b, &ctr_b, 15_000, 1_000, || {
        std::thread::sleep(Duration::from_secs(1));
        net.stop_etcd(0);
        let stopped = Instant::now();
        for node in [N::A, N::B] {
            outage_seen[node.i()] =
                wait_for(Duration::from_secs(5), || (net.metric(node, "encapd_control_connected") == Some(0.0)).then_some(())).is_some();
        }
        std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
        net.start_etcd(0);
        net.wait_etcd_healthy(&[0]);
        let routes = net.metric(N::A, "encapd_routes").unwrap();
        // A lease written right after etcd returns is seen.
        net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.201.0-24"), &udp_lease("198.18.0.2")]);
        after = time_until(Duration::from_secs(10), || {
            net.metric(N::A, "encapd_routes") == Some(routes + 1.0) && net.metric(N::A, "encapd_control_connected") == Some(1.0)
        });
    });
    assert_eq!(outage_seen, [true, true], "encapd_control_connected must drop to 0 on both nodes during the outage");
    assert!(after.is_some(), "lease put after etcd returned was not seen:\n{}", net.log(N::A));
    assert_eq!(net.metric(N::B, "encapd_control_connected"), Some(1.0), "B reconnected");
    assert_eq!(got, sent, "datagrams lost during the etcd outage");
    assert!(net.alive(N::A) && net.alive(N::B));
    eprintln!("outage: {sent} datagrams, none lost; lease after return seen in {after:?}");
}

#[test]
fn three_member_cluster_keeps_the_watch_when_a_member_dies() {
    if !ready() {
        return;
    }
    let mut net = Net::new(3);
    net.start(N::A, Some("100.96.1.0/24"));
    net.start(N::B, None);
    for node in [N::A, N::B] {
        let known = wait_for(Duration::from_secs(5), || (net.metric(node, "encapd_routes") == Some(1.0)).then_some(()));
        assert!(known.is_some(), "{node:?} did not learn the other node's lease:\n{}", net.log(node));
    }
    // Kill each member in turn (one down at a time, quorum kept): whichever
    // member encapd watches through dies once.
    for (victim, third) in [(0usize, 202u32), (1, 203), (2, 204)] {
        net.kill_etcd(victim);
        let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        net.wait_etcd_healthy(&others);
        let before = [net.metric(N::A, "encapd_routes").unwrap(), net.metric(N::B, "encapd_routes").unwrap()];
        net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.{third}.0-24"), &udp_lease("198.18.0.2")]);
        for node in [N::A, N::B] {
            let seen = time_until(Duration::from_secs(10), || net.metric(node, "encapd_routes") == Some(before[node.i()] + 1.0));
            assert!(seen.is_some(), "member {victim} down: lease 100.96.{third}.0/24 not seen by {node:?}:\n{}", net.log(node));
            eprintln!("member {victim} killed: lease seen by {node:?} in {seen:?}");
        }
        net.start_etcd(victim);
        net.wait_etcd_healthy(&[0, 1, 2]);
    }
    assert!(net.alive(N::A) && net.alive(N::B));
}

#[test]
fn malformed_leases_are_skipped_counted_and_harmless() {
    if !ready() {
        return;
    }
    let mut net = Net::new(1);
    net.start(N::A, Some("100.96.1.0/24"));
    net.start(N::B, Some("100.96.2.0/24"));
    net.attach_container(N::A);
    let ctr_b = net.attach_container(N::B);
    assert!(wait_for(Duration::from_secs(5), || net.ping_ok(&net.ctr_a, &ctr_b).then_some(())).is_some(), "ping before");
    assert_eq!(net.metric(N::A, "encapd_control_malformed_leases_total"), Some(0.0));
    let routes = net.metric(N::A, "encapd_routes").unwrap();
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
    for node in [N::A, N::B] {
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
    let log = net.log(N::A);
    for (name, _) in bad {
        assert!(log.contains(&format!("skipping lease {PREFIX}/subnets/{name} ")), "no log line for {name}:\n{log}");
    }
    assert_eq!(log.matches("subnets/100.96.213.0-24: its holder runs the \"vxlan\" backend").count(), 1, "{log}");
    assert!(net.alive(N::A) && net.alive(N::B), "daemons still running");
    assert!(net.ping_ok(&net.ctr_a, &ctr_b), "still routing");
    assert!(!net.unreachable("100.96.214.1"), "the dual-stack lease is routed");
    assert!(net.unreachable("100.96.210.1"), "a malformed lease is not routed");
    // Every new malformed write is counted.
    net.etcdctl(&["put", &format!("{PREFIX}/subnets/100.96.210.0-24"), "still not json"]);
    assert!(
        time_until(Duration::from_secs(2), || net.metric(N::A, "encapd_control_malformed_leases_total") == Some(bad.len() as f64 + 1.0))
            .is_some(),
        "a new malformed write is counted"
    );
    // Malformed leases already in etcd at start-up are counted too, and do not stop the start.
    net.stop(N::A);
    net.start(N::A, Some("100.96.1.0/24"));
    assert_eq!(net.metric(N::A, "encapd_control_malformed_leases_total"), Some(bad.len() as f64));
    assert!(wait_for(Duration::from_secs(5), || net.ping_ok(&net.ctr_a, &ctr_b).then_some(())).is_some(), "routing after the restart");
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
    net.start(N::A, Some("100.64.0.0/24"));
    let ns = net.node_a.clone();
    let endpoint = net.endpoint(0);
    let puts: usize = std::env::var("ENCAPD_BENCH_PUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let addr: SocketAddr = METRICS.parse().unwrap();
    let version = move || -> u64 {
        let text = encapd::stats::scrape::fetch(addr).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("encapd_table_version ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
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
    net.stop(N::A);
    let endpoint = net.endpoint(0);
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
    let config = net.dir.path().join("a/encapd.toml");
    let start = Instant::now();
    net.spawn(N::A, &config);
    net.wait_ready(N::A);
    let ready_after = start.elapsed();
    let routes = in_netns(&ns, || {
        wait_for(Duration::from_secs(30), || {
            let text = encapd::stats::scrape::fetch(addr).ok()?;
            let r: f64 = text.lines().find_map(|l| l.strip_prefix("encapd_routes "))?.trim().parse().ok()?;
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
