//! A fleet: N nodes on one bridged underlay, each an encapd (udp or vxlan
//! backend) or a Linux kernel VTEP configured exactly as flannel configures
//! `flannel.1` (VNI 1, port 8472, `nolearning`, static neighbour and FDB
//! entries, a route per peer subnet `via <peer .0> onlink`), with pods
//! attached by the CNI plugins from the node's `subnet.env`.
//!
//! ```text
//!            pods ── cni0 node 1 ul ─┐
//!            pods ── cni0 node 2 ul ─┼─ br0 [underlay namespace]
//!            pods ── cni0 node 3 ul ─┘
//! ```
//!
//! Node i (from 0) has underlay address 198.18.0.(i+1)/24, subnets
//! 100.96.(i+1).0/24 and fd00:96:(i+1)::/64, VTEP MAC 02:00:c6:12:00:(i+1).
//! The control source is a peers file per node, or (with
//! [`FleetOptions::etcd_members`]) flannel's lease store in a real etcd
//! cluster on the underlay (198.18.0.254), with an IPv4-only network config
//! (tests/e2e_etcd.rs covers dual-stack etcd networks). Everything lives in
//! namespaces of the fleet's own, removed on drop with every process in
//! them (encapd and etcd stopped by pid first).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cmd::{TempDir, must};
use crate::cni::{self, PodAddrs};
use crate::etcd::EtcdCluster;
use crate::instance::{Encapd, print_log_if_panicking};
use crate::netns::{Namespaces, Permit, ip, ip_batch, ns_exec};
use crate::underlay::Underlay;

/// What runs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// encapd with this backend ("udp" or "vxlan") and I/O engine.
    Encapd { backend: &'static str, engine: &'static str },
    /// A kernel VXLAN device configured as flannel's `flannel.1`.
    KernelVtep,
}

/// One node of the fleet.
#[derive(Debug, Clone)]
pub struct FleetNode {
    pub ns: String,
    pub kind: Kind,
    pub ip: Ipv4Addr,
    /// `100.96.N.0/24` and `fd00:96:N::/64`.
    pub subnet: String,
    pub subnet6: String,
    pub mac: String,
    /// The node's `subnet.env` (encapd writes it; for a kernel VTEP the
    /// fleet writes what flanneld would).
    pub subnet_env: PathBuf,
}

/// A pod attached to a node.
#[derive(Debug, Clone)]
pub struct Pod {
    pub ns: String,
    pub node: usize,
    pub addrs: PodAddrs,
}

/// How [`Fleet::with`] builds a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub kinds: Vec<Kind>,
    /// Workers per encapd.
    pub workers: usize,
    /// `Some(n)`: an etcd cluster of n members on the underlay is every
    /// encapd's control source (flannel's lease layout), and each node's
    /// configured subnet is claimed there.
    pub etcd_members: Option<usize>,
    /// `[control]` lines added to every encapd's configuration (etcd
    /// settings such as `lease_ttl`).
    pub control_extra: String,
    /// `[dataplane]` lines added to every encapd's configuration (say,
    /// `kernel_path = "tc"`).
    pub dataplane_extra: String,
    /// `[control]` lines added to one node's configuration only (node
    /// index -> lines), after [`control_extra`](Self::control_extra).
    pub node_control_extra: BTreeMap<usize, String>,
    /// How the underlay links behave: applied to both ends of every
    /// node's veth to the bridge (default: `$ENCAPD_UNDERLAY`, else veth).
    pub underlay: Underlay,
    /// Permanent neighbour entries on the underlay (every node, etcd) and
    /// between each pod and its node, instead of ARP. A full mesh of N nodes
    /// learns N * (N - 1) underlay entries, and the kernel's neighbour
    /// table has one host-wide limit for all namespaces
    /// (`net.ipv4.neigh.default.gc_thresh3`, 1024 by default, shared with
    /// whatever else runs on the machine): past it the kernel drops packets
    /// ("neighbor table overflow"). Permanent entries are exempt, and the
    /// root namespace's settings stay untouched. For large fleets.
    pub static_neighbours: bool,
}

impl FleetOptions {
    pub fn new(kinds: &[Kind], workers: usize) -> FleetOptions {
        FleetOptions {
            kinds: kinds.to_vec(),
            workers,
            etcd_members: None,
            control_extra: String::new(),
            dataplane_extra: String::new(),
            node_control_extra: BTreeMap::new(),
            underlay: Underlay::from_env(),
            static_neighbours: false,
        }
    }
}

/// Where the fleet's etcd listens (on the underlay bridge).
pub const ETCD_HOST: &str = "198.18.0.254";
/// flannel's key prefix.
pub const ETCD_PREFIX: &str = "/coreos.com/network";

/// The fleet; see the module documentation.
pub struct Fleet {
    // Dropped in this order: encapd processes, etcd, then namespaces.
    daemons: Vec<Option<Encapd>>,
    pub etcd: Option<EtcdCluster>,
    ns: Namespaces,
    options: FleetOptions,
    pub underlay: String,
    pub nodes: Vec<FleetNode>,
    pub dir: TempDir,
    pods: usize,
    _permit: Permit,
}

/// The VNI and port every VTEP of a fleet uses.
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// The overlay networks.
pub const NETWORK: &str = "100.96.0.0/16";
pub const NETWORK6: &str = "fd00:96::/32";

impl Fleet {
    /// Brings up one node per `kinds` entry and starts every encapd (each
    /// with `workers` workers); waits until all are ready.
    pub fn new(kinds: &[Kind], workers: usize) -> Fleet {
        Fleet::with(FleetOptions::new(kinds, workers))
    }

    /// A fleet as `options` say; every encapd is ready when this returns.
    pub fn with(options: FleetOptions) -> Fleet {
        let kinds = options.kinds.clone();
        assert!(!kinds.is_empty() && kinds.len() < 250, "1 to 249 nodes");
        let permit = Permit::acquire();
        let mut ns = Namespaces::new();
        let dir = TempDir::new(&format!("fleet-{}", ns.prefix()));
        let underlay = ns.add("ful", &[]);
        ip_batch(
            &underlay,
            &[
                "link set lo up",
                &format!("link add br0 address {BRIDGE_MAC} type bridge"),
                "link set br0 up",
                &format!("addr add {ETCD_HOST}/24 dev br0"),
            ],
        );
        let nodes: Vec<FleetNode> =
            kinds.iter().enumerate().map(|(i, &kind)| add_node(&mut ns, &underlay, &dir, i, kind, options.underlay)).collect();
        if options.static_neighbours {
            static_underlay_neighbours(&underlay, &nodes);
        }
        let etcd = options.etcd_members.map(|members| start_etcd(&underlay, members, &kinds));
        let mut fleet = Fleet { daemons: Vec::new(), etcd, ns, options, underlay, nodes, dir, pods: 0, _permit: permit };
        for i in 0..fleet.nodes.len() {
            if fleet.nodes[i].kind == Kind::KernelVtep {
                fleet.configure_kernel_vtep(i);
            }
        }
        fleet.daemons = (0..fleet.nodes.len()).map(|i| fleet.start_encapd(i)).collect();
        for d in fleet.daemons.iter_mut().flatten() {
            d.wait_ready(Duration::from_secs(40));
        }
        fleet
    }

    /// Dual-stack (the peers-file source) or IPv4 only (etcd).
    fn dual_stack(&self) -> bool {
        self.options.etcd_members.is_none()
    }

    /// Writes node `i`'s lease in etcd exactly as flanneld's vxlan backend
    /// writes its own (for a kernel VTEP node, which has no flanneld here).
    pub fn put_flanneld_lease(&self, i: usize) {
        let etcd = self.etcd.as_ref().expect("a fleet with etcd");
        let n = &self.nodes[i];
        let key = format!("{ETCD_PREFIX}/subnets/{}", n.subnet.replace('/', "-"));
        let value = format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{VNI},"VtepMAC":"{}"}}}}"#,
            n.ip, n.mac
        );
        etcd.etcdctl(&["put", &key, &value]);
    }

    /// Stops node `i`'s encapd (SIGTERM); returns its exit status.
    pub fn stop_encapd(&mut self, i: usize) -> ExitStatus {
        self.daemons[i].take().expect("encapd running").stop()
    }

    /// Starts node `i`'s encapd again (same configuration) and waits until ready.
    pub fn restart_encapd(&mut self, i: usize) {
        assert!(self.daemons[i].is_none(), "node {i}'s encapd is running");
        self.daemons[i] = self.start_encapd(i);
        if let Some(d) = self.daemons[i].as_mut() {
            d.wait_ready(Duration::from_secs(40));
        }
    }

    /// `encapd run --config <node i's config> --takeover` with `bin`
    /// (default: the binary under test) while node `i`'s encapd runs: the
    /// successor takes the predecessor's TUN queues and sockets, and the
    /// predecessor exits 0 once the successor forwards. Returns the time
    /// from the successor's start to the predecessor's exit, or what went
    /// wrong (the predecessor still running after `timeout`, or exiting
    /// non-zero, or the successor gone); either way node `i` then runs
    /// whichever process is alive.
    pub fn take_over(&mut self, i: usize, bin: Option<&Path>, timeout: Duration) -> Result<Duration, String> {
        let sub = self.dir.path().join(format!("node{i}"));
        let bin = bin.map(Path::to_path_buf).unwrap_or_else(crate::env::encapd_bin);
        let mut old = self.daemons[i].take().unwrap_or_else(|| panic!("node {i} runs no encapd"));
        let started = Instant::now();
        let mut new = Encapd::spawn_with(&self.nodes[i].ns, &bin, &["--takeover"], &sub.join("encapd.toml"), &sub.join("encapd.log"), &[]);
        let status = crate::cmd::wait_for(timeout, || old.exited());
        let took = started.elapsed();
        match status {
            None => {
                // Keep the predecessor (it still forwards); stop the successor.
                drop(new);
                self.daemons[i] = Some(old);
                Err(format!("node {i}: the old encapd still runs {timeout:?} after its successor started"))
            }
            Some(st) if !st.success() || !new.alive() => {
                let alive = new.alive();
                self.daemons[i] = Some(new);
                Err(format!("node {i}: takeover failed (old exited {st}, new {})", if alive { "running" } else { "exited" }))
            }
            Some(_) => {
                self.daemons[i] = Some(new);
                Ok(took)
            }
        }
    }

    /// The pid of node `i`'s encapd, if it runs one.
    pub fn encapd_pid(&self, i: usize) -> Option<i32> {
        self.daemons.get(i)?.as_ref().map(Encapd::pid)
    }

    /// Node `i`'s lease key in etcd (flannel's layout).
    pub fn lease_key(&self, i: usize) -> String {
        format!("{ETCD_PREFIX}/subnets/{}", self.nodes[i].subnet.replace('/', "-"))
    }

    /// Node `i`'s encapd log (every process the node ran, appended).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}/encapd.log"))
    }

    /// How the fleet was built.
    pub fn options(&self) -> &FleetOptions {
        &self.options
    }

    /// Permanent entries between node `node`'s bridge and the pod (see
    /// [`FleetOptions::static_neighbours`]).
    fn static_pod_neighbours(&self, node: usize, pod_ns: &str, pod_ip: Ipv4Addr) {
        let node_ns = &self.nodes[node].ns;
        let gw = first_address(&self.nodes[node].subnet);
        let (pod_mac, gw_mac) = (link_mac(pod_ns, "eth0"), link_mac(node_ns, "cni0"));
        ip(pod_ns, &["neigh", "replace", &gw, "lladdr", &gw_mac, "dev", "eth0", "nud", "permanent"]);
        ip(node_ns, &["neigh", "replace", &pod_ip.to_string(), "lladdr", &pod_mac, "dev", "cni0", "nud", "permanent"]);
    }

    /// The encapd of node `i` (panics for a kernel VTEP node).
    pub fn encapd(&mut self, i: usize) -> &mut Encapd {
        self.daemons[i].as_mut().unwrap_or_else(|| panic!("node {i} runs no encapd"))
    }

    /// Node `i`'s `/metrics` text (encapd nodes).
    pub fn metrics(&self, i: usize) -> String {
        crate::counters::scrape(&self.nodes[i].ns).unwrap_or_else(|| panic!("no /metrics from node {i}"))
    }

    /// The sum of `name`'s series on node `i` that match `filter`.
    pub fn metric(&self, i: usize, name: &str, filter: &[(&str, &str)]) -> f64 {
        crate::counters::metric_sum(&self.metrics(i), name, filter)
    }

    /// Creates a pod namespace and attaches it to node `node` with the CNI
    /// bridge plugin, configured from the node's subnet.env.
    pub fn add_pod(&mut self, node: usize) -> Pod {
        self.pods += 1;
        let role = format!("fp{}x{}", node + 1, self.pods);
        let pod_ns = self.ns.add(&role, &["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]);
        ip(&pod_ns, &["link", "set", "lo", "up"]);
        let addrs = cni::add(&self.nodes[node].ns, &pod_ns, &self.cni_config(node));
        if self.options.static_neighbours {
            self.static_pod_neighbours(node, &pod_ns, addrs.ip);
        }
        Pod { ns: pod_ns, node, addrs }
    }

    /// CNI DEL of `pod`; its namespace stays (empty) until the fleet drops.
    pub fn del_pod(&self, pod: &Pod) {
        cni::del(&self.nodes[pod.node].ns, &pod.ns, &self.cni_config(pod.node));
    }

    fn cni_config(&self, node: usize) -> String {
        let data = self.dir.path().join(format!("cni-{node}"));
        std::fs::create_dir_all(&data).unwrap();
        cni::delegate(&self.nodes[node].subnet_env, &data)
    }

    /// One ping from `from_ns` to `to` answered within 2 s.
    pub fn ping_ok(&self, from_ns: &str, to: IpAddr) -> bool {
        let args = if to.is_ipv6() { vec!["ping", "-6", "-c", "1", "-W", "2"] } else { vec!["ping", "-c", "1", "-W", "2"] };
        let to = to.to_string();
        let mut args = args;
        args.push(&to);
        ns_exec(from_ns, &args, Duration::from_secs(5)).ok()
    }

    /// Node `i`'s VXLAN endpoint.
    pub fn vtep(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.nodes[i].ip), VXLAN_PORT)
    }

    fn start_encapd(&self, i: usize) -> Option<Encapd> {
        let Kind::Encapd { backend, engine } = self.nodes[i].kind else { return None };
        let node = &self.nodes[i];
        let sub = self.dir.path().join(format!("node{i}"));
        let vxlan = backend == "vxlan";
        let vtep = if vxlan { format!("vtep_mac = \"{}\"\n", node.mac) } else { String::new() };
        let (v6_node, v6_net) = if self.dual_stack() {
            (format!("subnet6 = \"{}\"\n", node.subnet6), format!("cidr6 = \"{NETWORK6}\"\n"))
        } else {
            (String::new(), String::new())
        };
        let control = match &self.etcd {
            None => "source = \"file\"\npeers = \"peers.toml\"\n".to_owned(),
            Some(etcd) => {
                let eps: Vec<String> = etcd.endpoints().iter().map(|e| format!("\"{e}\"")).collect();
                format!("source = \"etcd\"\nendpoints = [{}]\nstate_dir = \"state\"\n", eps.join(", "))
            }
        };
        let config = format!(
            "[node]\npublic_ip = \"{}\"\nsubnet = \"{}\"\n{v6_node}{vtep}\n\
             [network]\ncidr = \"{NETWORK}\"\n{v6_net}backend = \"{backend}\"\n\n\
             [dataplane]\nworkers = {}\nio = \"{engine}\"\n{}\n\
             [control]\n{control}subnet_env = \"subnet.env\"\n{}{}\n\n\
             [process]\ncontrol_socket = \"encapd.sock\"\n",
            node.ip,
            node.subnet,
            self.options.workers,
            self.options.dataplane_extra,
            self.options.control_extra,
            self.options.node_control_extra.get(&i).map(String::as_str).unwrap_or("")
        );
        std::fs::write(sub.join("encapd.toml"), config).unwrap();
        std::fs::write(sub.join("peers.toml"), self.peers_file(i, vxlan)).unwrap();
        Some(Encapd::spawn(&node.ns, &sub.join("encapd.toml"), &sub.join("encapd.log"), &[]))
    }

    /// The peers file of encapd node `i`: every other node, with its VTEP
    /// MAC for vxlan (a udp node lists only udp peers, a vxlan node only
    /// VTEPs: the two cannot talk), and whether it decapsulates in its
    /// kernel.
    pub fn peers_file(&self, i: usize, vxlan: bool) -> String {
        let mut text = String::new();
        for (_, n) in self.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            let is_vtep = matches!(n.kind, Kind::KernelVtep | Kind::Encapd { backend: "vxlan", .. });
            if is_vtep != vxlan {
                continue;
            }
            text += &format!("[[peer]]\nsubnet = \"{}\"\npublic_ip = \"{}\"\n", n.subnet, n.ip);
            if self.dual_stack() {
                text += &format!("subnet6 = \"{}\"\n", n.subnet6);
            }
            if vxlan {
                text += &format!("vtep_mac = \"{}\"\n", n.mac);
            }
            // A kernel VTEP decapsulates in its kernel; an encapd node
            // does when the fleet runs the kernel path on every encapd
            // (with "auto" too: the nodes share one kernel, so either all
            // attach or none does, and then no one sends in the kernel).
            let kernel_path = ["kernel_path = \"tc\"", "kernel_path = \"auto\""];
            if matches!(n.kind, Kind::KernelVtep) || kernel_path.iter().any(|k| self.options.dataplane_extra.contains(k)) {
                text += "kernel_decap = true\n";
            }
        }
        if text.is_empty() { "peer = []\n".into() } else { text }
    }

    /// `flannel.1` on node `i`, and a route, neighbour and FDB entry for
    /// every other VTEP, exactly as flanneld's vxlan backend installs them
    /// (flanneld sets `IFLA_VXLAN_UDP_CSUM` to 0: no outer UDP checksum,
    /// where `ip link` leaves the kernel's default, `udpcsum`).
    fn configure_kernel_vtep(&self, i: usize) {
        let n = &self.nodes[i];
        let mut lines = vec![
            format!(
                "link add flannel.1 address {} type vxlan id {VNI} local {} dev ul dstport {VXLAN_PORT} nolearning noudpcsum",
                n.mac, n.ip
            ),
            "link set flannel.1 mtu 1450".into(),
            format!("addr add {}/32 dev flannel.1", network_address(&n.subnet)),
            "link set flannel.1 up".into(),
        ];
        if self.dual_stack() {
            lines.push(format!("addr add {}/128 dev flannel.1 nodad", network_address(&n.subnet6)));
        }
        let peers: Vec<&FleetNode> =
            self.nodes.iter().filter(|p| p.ns != n.ns && !matches!(p.kind, Kind::Encapd { backend: "udp", .. })).collect();
        for peer in &peers {
            lines.extend(kernel_routes_to(peer, self.dual_stack()));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        ip_batch(&n.ns, &refs);
        for peer in &peers {
            kernel_fdb_to(&n.ns, peer);
        }
        let v6 = if self.dual_stack() {
            format!("FLANNEL_IPV6_NETWORK={NETWORK6}\nFLANNEL_IPV6_SUBNET={}/64\n", first_address(&n.subnet6))
        } else {
            String::new()
        };
        let env = format!(
            "FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET={}/24\n{v6}FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
            first_address(&n.subnet)
        );
        std::fs::write(&n.subnet_env, env).unwrap();
    }
}

/// What flanneld installs on a kernel VTEP for one peer VTEP (`ip` batch
/// lines): the route `via <peer .0> onlink` and the permanent neighbour
/// entry of that `.0`, IPv4 and IPv6. The FDB entry is [`kernel_fdb_to`].
pub fn kernel_routes_to(peer: &FleetNode, dual_stack: bool) -> Vec<String> {
    let (gw, gw6) = (network_address(&peer.subnet), network_address(&peer.subnet6));
    let mut lines = vec![
        format!("neigh replace {gw} lladdr {} dev flannel.1 nud permanent", peer.mac),
        format!("route add {} via {gw} dev flannel.1 onlink", peer.subnet),
    ];
    if dual_stack {
        lines.push(format!("neigh replace {gw6} lladdr {} dev flannel.1 nud permanent", peer.mac));
        lines.push(format!("route add {} via {gw6} dev flannel.1 onlink", peer.subnet6));
    }
    lines
}

/// The FDB entry flanneld installs on kernel VTEP `ns` for a peer: its MAC
/// is behind its public IP.
pub fn kernel_fdb_to(ns: &str, peer: &FleetNode) {
    must("bridge", &["-n", ns, "fdb", "append", &peer.mac, "dev", "flannel.1", "dst", &peer.ip.to_string(), "self", "permanent"]);
}

fn add_node(ns: &mut Namespaces, underlay: &str, dir: &TempDir, i: usize, kind: Kind, profile: Underlay) -> FleetNode {
    let sysctls = [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ];
    let node_ns = ns.add(&format!("fn{}", i + 1), &sysctls);
    let ip_addr = Ipv4Addr::new(198, 18, 0, (i + 1) as u8);
    let port = format!("v{}", i + 1);
    // The pods' bridge exists before the first pod, with a MAC of its own: a
    // Linux bridge without one takes its lowest port's MAC and changes it
    // when that port goes, under the other pods' ARP caches (the bridge
    // plugin then uses the bridge as it finds it).
    let bridge_mac = format!("02:00:64:60:{:02x}:01", i + 1);
    ip_batch(
        &node_ns,
        &[
            "link set lo up",
            &format!("link add ul address {} type veth peer name {port} netns {underlay}", underlay_mac(i)),
            &format!("link add cni0 address {bridge_mac} type bridge"),
        ],
    );
    ip_batch(underlay, &[&format!("link set {port} master br0"), &format!("link set {port} up")]);
    ip_batch(&node_ns, &[&format!("addr add {ip_addr}/24 dev ul"), "link set ul up"]);
    profile.apply(&node_ns, "ul");
    profile.apply(underlay, &port);
    let sub = dir.path().join(format!("node{i}"));
    std::fs::create_dir_all(&sub).unwrap();
    FleetNode {
        ns: node_ns,
        kind,
        ip: ip_addr,
        subnet: format!("100.96.{}.0/24", i + 1),
        subnet6: format!("fd00:96:{:x}::/64", i + 1),
        mac: format!("02:00:c6:12:00:{:02x}", i + 1),
        subnet_env: sub.join("subnet.env"),
    }
}

/// An etcd cluster on the underlay with flannel's network config for the
/// fleet's backend (vxlan if any node is a VTEP).
fn start_etcd(underlay: &str, members: usize, kinds: &[Kind]) -> EtcdCluster {
    let etcd = EtcdCluster::start(underlay, ETCD_HOST, members);
    let vxlan = kinds.iter().any(|k| matches!(k, Kind::KernelVtep | Kind::Encapd { backend: "vxlan", .. }));
    let backend = if vxlan { format!(r#"{{"Type":"vxlan","VNI":{VNI}}}"#) } else { r#"{"Type":"udp"}"#.into() };
    etcd.etcdctl(&["put", &format!("{ETCD_PREFIX}/config"), &format!(r#"{{"Network":"{NETWORK}","Backend":{backend}}}"#)]);
    etcd
}

/// `100.96.3.0/24` -> `100.96.3.0`.
fn network_address(prefix: &str) -> String {
    prefix.split('/').next().unwrap().to_owned()
}

/// `100.96.3.0/24` -> `100.96.3.1`; `fd00:96:3::/64` -> `fd00:96:3::1`.
fn first_address(prefix: &str) -> String {
    match network_address(prefix).parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) + 1).to_string(),
        IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) + 1).to_string(),
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (i, d) in self.daemons.iter_mut().enumerate() {
            if let Some(d) = d.take() {
                print_log_if_panicking(&format!("encapd on fleet node {i}"), &self.dir.path().join(format!("node{i}/encapd.log")));
                drop(d);
            }
        }
    }
}

/// The MAC of node `i`'s underlay interface (its VTEP has another,
/// [`FleetNode::mac`]).
fn underlay_mac(i: usize) -> String {
    format!("02:00:c6:12:01:{:02x}", i + 1)
}

/// The underlay bridge's MAC (etcd's address is on it).
const BRIDGE_MAC: &str = "02:00:c6:12:01:fe";

/// A permanent neighbour entry for every other node (and etcd) on every
/// node's underlay, and for every node on the bridge (see
/// [`FleetOptions::static_neighbours`]).
fn static_underlay_neighbours(underlay: &str, nodes: &[FleetNode]) {
    for (i, n) in nodes.iter().enumerate() {
        let mut lines = vec![format!("neigh replace {ETCD_HOST} lladdr {BRIDGE_MAC} dev ul nud permanent")];
        for (j, peer) in nodes.iter().enumerate().filter(|(j, _)| *j != i) {
            lines.push(format!("neigh replace {} lladdr {} dev ul nud permanent", peer.ip, underlay_mac(j)));
        }
        ip_batch(&n.ns, &lines.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let lines: Vec<String> =
        nodes.iter().enumerate().map(|(j, n)| format!("neigh replace {} lladdr {} dev br0 nud permanent", n.ip, underlay_mac(j))).collect();
    ip_batch(underlay, &lines.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The MAC of `dev` in namespace `ns`.
fn link_mac(ns: &str, dev: &str) -> String {
    let o = must("ip", &["-n", ns, "-br", "link", "show", "dev", dev]);
    o.stdout.split_whitespace().nth(2).unwrap_or_else(|| panic!("no MAC in {:?}", o.stdout)).to_owned()
}
