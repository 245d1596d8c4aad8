//! A bench: the two-node wiring with its containers on one underlay
//! profile, hosting one [`Mode`] after another (what the benchmarks
//! measure on):
//!
//! ```text
//! ctrA 100.96.1.2/24 ── vc nodeA ul ══ underlay ══ ul nodeB vc ── ctrB 100.96.2.3/24
//!      fd00:96:1::2/64                                              fd00:96:2::3/64
//! ```
//!
//! [`Bed::write_configs`] writes a mode's encapd configurations (which a
//! caller may still edit, e.g. for an older build; a userspace WireGuard
//! mode's key files go into the same directory), [`Bed::enter`] sets
//! the mode up on the nodes and returns once a ping crosses it, and the
//! [`Active`] mode it returns is left with [`Active::leave`] (counters
//! asked for, daemons stopped, kernel devices and routes removed) or, on
//! any other exit path, when it drops. The namespaces go when the bed
//! drops (see [`crate::netns`]).
//!
//! Promises: a mode leaves nothing behind for the next one (its routes,
//! VTEPs, daemons, WireGuard devices and TUN devices are gone, learned PMTU exceptions are
//! flushed by the next [`Bed::enter`]); every process it starts is
//! stopped by pid.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cmd::{run, wait_for};
use crate::counters::{SUMMARY_HEADER, scrape};
use crate::instance::Encapd;
use crate::kernel_paths::{self, VTEP, subnets, vtep_mac};
use crate::mode::{Backend, Mode, NodeB, Setup};
use crate::netns::{ip_batch, ns_exec};
use crate::underlay::Underlay;
use crate::wg_peer::{self, WgDevice};
use crate::wiring::{CTR_A, CTR_B, Node, TUN, Wiring};

/// How long encapd may take from spawn to forwarding.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two nodes and their containers on one underlay profile.
pub struct Bed {
    wiring: Wiring,
    pub underlay: Underlay,
}

/// What [`Bed::write_configs`] wrote: per node running encapd, its
/// configuration and peers file.
#[derive(Debug, Clone)]
pub struct Configs {
    pub dir: PathBuf,
    /// (node, `a.toml`/`b.toml`, `peers-a.toml`/`peers-b.toml`).
    pub nodes: Vec<(Node, PathBuf, PathBuf)>,
}

impl Bed {
    /// Namespaces, links and addresses; the underlay set to `underlay`;
    /// neighbour caches warmed (the first IPv6 solicitation on a fresh
    /// veth is lost, which would cost the first test a second).
    pub fn new(underlay: Underlay) -> Bed {
        let wiring = Wiring::build(true, false);
        wiring.apply_underlay(underlay);
        wiring.attach_container(Node::A, "100.96.1.1/24", "100.96.1.2/24", Some(("fd00:96:1::1/64", "fd00:96:1::2/64")));
        wiring.attach_container(Node::B, "100.96.2.1/24", "100.96.2.3/24", Some(("fd00:96:2::1/64", "fd00:96:2::3/64")));
        let bed = Bed { wiring, underlay };
        for (ns, dst) in [
            (bed.ctr_ns(Node::A), "100.96.1.1"),
            (bed.ctr_ns(Node::B), "100.96.2.1"),
            (bed.ctr_ns(Node::A), "fd00:96:1::1"),
            (bed.ctr_ns(Node::B), "fd00:96:2::1"),
            (bed.node_ns(Node::A), Node::B.underlay()),
        ] {
            ping_ok(ns, dst, 3);
        }
        bed
    }

    pub fn node_ns(&self, node: Node) -> &str {
        self.wiring.node_ns(node)
    }

    pub fn ctr_ns(&self, node: Node) -> &str {
        self.wiring.ctr_ns(node)
    }

    /// The container's IPv4 address.
    pub fn ctr_ip(&self, node: Node) -> &'static str {
        match node {
            Node::A => CTR_A,
            Node::B => CTR_B,
        }
    }

    /// `et<pid>_<n>`, shared by the bed's namespace names.
    pub fn prefix(&self) -> &str {
        self.wiring.prefix()
    }

    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    /// The MTU of both container links (both ends), as flannel's CNI sets
    /// the pod MTU to the backend's.
    pub fn set_ctr_mtu(&self, mtu: u32) {
        for node in [Node::A, Node::B] {
            ip_batch(self.ctr_ns(node), &[&format!("link set eth0 mtu {mtu}")]);
            ip_batch(self.node_ns(node), &[&format!("link set vc mtu {mtu}")]);
        }
    }

    /// Forgets learned PMTU and redirect exceptions, so that one mode's
    /// state cannot leak into the next.
    pub fn flush_route_cache(&self) {
        for node in [Node::A, Node::B] {
            for ns in [self.ctr_ns(node), self.node_ns(node)] {
                let _ = run("ip", &["-n", ns, "route", "flush", "cache"]);
                let _ = run("ip", &["-n", ns, "-6", "route", "flush", "cache"]);
            }
        }
    }

    /// Writes the mode's encapd configurations into `dir` (`a.toml`,
    /// `b.toml` and their peers files, for each node that runs encapd),
    /// with `workers` workers. Nothing for a mode without encapd.
    pub fn write_configs(&self, mode: &Mode, workers: usize, dir: &Path) -> Configs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let mut nodes = Vec::new();
        let keys = mode.encapd().is_some_and(|e| e.backend == Backend::Wireguard).then(|| write_node_keys(dir));
        for node in [Node::A, Node::B].into_iter().filter(|&n| mode.runs_encapd_on(n)) {
            let sub = node.sub();
            let config = dir.join(format!("{sub}.toml"));
            let peers = dir.join(format!("peers-{sub}.toml"));
            write(&config, &node_config(mode, node, workers));
            let peer_key = keys.as_ref().map(|k| k[node.other().index()].as_str());
            write(&peers, &peers_file(mode, node, peer_key));
            nodes.push((node, config, peers));
        }
        Configs { dir: dir.to_owned(), nodes }
    }

    /// Sets `mode` up (container MTU `ctr_mtu`, its routes or VTEPs, its
    /// encapd processes from `configs`, run by `encapd_bin`, logs in
    /// `configs.dir/{a,b}.log`) and returns once ctrA reaches ctrB through
    /// it. An error says what failed; whatever was set up is removed.
    pub fn enter(&self, mode: &Mode, configs: &Configs, encapd_bin: &Path, ctr_mtu: u32) -> Result<Active<'_>, String> {
        self.set_ctr_mtu(ctr_mtu);
        self.flush_route_cache();
        let mut active = Active {
            bed: self,
            mode: mode.clone(),
            dir: configs.dir.clone(),
            daemons: Vec::new(),
            wg: Vec::new(),
            setup: Vec::new(),
            done: false,
        };
        match &mode.def.setup {
            Setup::Routing => {
                kernel_paths::route(&self.wiring);
                active.setup.push("plain routes between the node subnets via the underlay (testbed kernel_paths::route)".into());
            }
            Setup::KernelVxlan => {
                for node in [Node::A, Node::B] {
                    kernel_paths::vtep_up(&self.wiring, node);
                }
                active.setup.push(format!(
                    "{VTEP} on both nodes as flannel sets it up (VNI 1, dstport 8472, nolearning; testbed kernel_paths::vtep_up)"
                ));
            }
            Setup::Encapd(e) => {
                if e.node_b == NodeB::KernelVtep {
                    kernel_paths::vtep_up(&self.wiring, Node::B);
                    active.setup.push(format!(
                        "{VTEP} on nodeB as flannel sets it up for a kernel peer; encapd on nodeA with that peer's VTEP MAC {}",
                        vtep_mac(Node::A)
                    ));
                }
                for (node, config, _) in &configs.nodes {
                    let log = configs.dir.join(format!("{}.log", node.sub()));
                    let d = Encapd::spawn_with(self.node_ns(*node), encapd_bin, &[], config, &log, &[]);
                    active.daemons.push((*node, d));
                    active.setup.push(format!("ip netns exec <node{}> encapd run --config {}", node_letter(*node), file_name(config)));
                }
                for (node, d) in &mut active.daemons {
                    wait_ready(d, self.node_ns(*node))?;
                }
            }
            Setup::UserspaceWg(imp) => {
                let pair = wg_peer::Pair::start(*imp, self.node_ns(Node::A), self.node_ns(Node::B), &configs.dir)?;
                active.wg.push((Node::A, pair.a));
                active.wg.push((Node::B, pair.b));
                active.setup.push(format!(
                    "{imp} on both nodes (testbed wg_peer): {} as flanneld lays it out: keys from wg genkey (mode 0600), \
                     listen-port {}, MTU {} − {}, the node subnet's .0/32 (and ::/128) on it, {} and {} routed to it, \
                     the other node as peer (endpoint <its underlay IP>:{}, allowed-ips its subnets, no keepalive); \
                     configured with wg set over the daemon's UAPI socket",
                    wg_peer::DEVICE,
                    wg_peer::WG_PORT,
                    crate::kernel_paths::UNDERLAY_MTU,
                    wg_peer::OVERHEAD,
                    wg_peer::CLUSTER_CIDR,
                    wg_peer::CLUSTER_CIDR6,
                    wg_peer::WG_PORT,
                ));
            }
        }
        self.check_path(mode)?;
        Ok(active)
    }

    /// The route from nodeA to ctrB (and back, for the mixed pair) uses
    /// the mode's device, and a ping from ctrA reaches ctrB.
    fn check_path(&self, mode: &Mode) -> Result<(), String> {
        let dev = match &mode.def.setup {
            Setup::Routing => "ul",
            Setup::KernelVxlan => VTEP,
            Setup::Encapd(_) => TUN,
            Setup::UserspaceWg(_) => wg_peer::DEVICE,
        };
        let via = route_get(self.node_ns(Node::A), CTR_B);
        if !via.contains(&format!("dev {dev} ")) {
            return Err(format!("{}: nodeA's route to {CTR_B} does not use {dev}: {via}", mode.name));
        }
        if mode.encapd().is_some_and(|e| e.node_b == NodeB::KernelVtep) {
            let back = route_get(self.node_ns(Node::B), CTR_A);
            if !back.contains(&format!("dev {VTEP} ")) {
                return Err(format!("{}: nodeB's route back does not use its kernel VTEP {VTEP}: {back}", mode.name));
            }
        }
        if !ping_ok(self.ctr_ns(Node::A), CTR_B, 15) {
            return Err(format!("{}: no ping from ctrA to {CTR_B}", mode.name));
        }
        Ok(())
    }
}

fn node_letter(node: Node) -> &'static str {
    match node {
        Node::A => "A",
        Node::B => "B",
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `ip route get DST` in `ns`, first line.
fn route_get(ns: &str, dst: &str) -> String {
    run("ip", &["-n", ns, "route", "get", dst]).stdout.lines().next().unwrap_or_default().to_owned() + " "
}

/// True once one of `tries` single pings (1 s each, 0.2 s apart) from
/// `ns` to `dst` is answered.
pub fn ping_ok(ns: &str, dst: &str, tries: u32) -> bool {
    (0..tries).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        ns_exec(ns, &["ping", "-n", "-c", "1", "-W", "1", dst], Duration::from_secs(5)).ok()
    })
}

/// Waits until `d` logs that it forwards and its TUN exists.
fn wait_ready(d: &mut Encapd, ns: &str) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(st) = d.exited() {
            return Err(format!("encapd in {ns} exited during start-up ({st}):\n{}", tail(&d.log(), 20)));
        }
        if d.is_ready() && run("ip", &["-n", ns, "link", "show", TUN]).ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("encapd in {ns} not forwarding within {READY_TIMEOUT:?}:\n{}", tail(&d.log(), 20)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The configuration of `node`'s encapd in `mode`. The control socket and
/// `subnet.env` sit beside it, never in the host's `/run`; `/metrics`
/// listens on its default, the node namespace's loopback.
pub fn node_config(mode: &Mode, node: Node, workers: usize) -> String {
    let e = mode.encapd().expect("an encapd mode");
    let (subnet, subnet6) = subnets(node);
    let sub = node.sub();
    let node_lines = match e.backend {
        Backend::Vxlan => format!("vtep_mac = \"{}\"\n", vtep_mac(node)),
        Backend::Wireguard => format!("private_key_file = \"{}\"\n", key_file_name(node)),
        Backend::Udp => String::new(),
    };
    let mut dataplane = format!("tun = \"{TUN}\"\nworkers = {workers}\nio = \"{}\"\n", e.engine);
    for line in mode.dataplane_lines(node, workers) {
        dataplane += &line;
        dataplane.push('\n');
    }
    format!(
        "[node]\npublic_ip = \"{}\"\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\n{node_lines}\n\
         [network]\ncidr = \"100.96.0.0/16\"\ncidr6 = \"fd00:96::/32\"\nbackend = \"{}\"\nport = {}\n\n\
         [dataplane]\n{dataplane}\n\
         [control]\nsource = \"file\"\npeers = \"peers-{sub}.toml\"\nsubnet_env = \"subnet-{sub}.env\"\n\n\
         [process]\ncontrol_socket = \"{sub}.sock\"\n",
        node.underlay(),
        e.backend.name(),
        e.backend.port(),
    )
}

/// `node`'s peers file in `mode`: the other node, with its VTEP MAC for
/// the vxlan backend, its public key `peer_key` for the wireguard backend,
/// and the mode's peer lines.
pub fn peers_file(mode: &Mode, node: Node, peer_key: Option<&str>) -> String {
    let e = mode.encapd().expect("an encapd mode");
    let peer = node.other();
    let (subnet, subnet6) = subnets(peer);
    let mut text = format!("[[peer]]\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\npublic_ip = \"{}\"\n", peer.underlay());
    if e.backend == Backend::Vxlan {
        text += &format!("vtep_mac = \"{}\"\n", vtep_mac(peer));
    }
    if let Some(key) = peer_key {
        text += &format!("public_key = \"{key}\"\n");
    }
    for line in e.peer {
        text += line;
        text.push('\n');
    }
    text
}

/// `node`'s private key file in a wireguard mode's directory (relative
/// to its configuration, which encapd resolves it against).
fn key_file_name(node: Node) -> String {
    format!("{}.key", node.sub())
}

/// A fresh key pair per node for a wireguard mode: each private key from
/// the kernel's random source, written to [`key_file_name`] in `dir`
/// (mode 0600 from creation, owned by the user running the bench, as
/// encapd requires; never copied into a committed run). Returns the public
/// keys, indexed by [`Node::index`].
fn write_node_keys(dir: &Path) -> [String; 2] {
    [Node::A, Node::B].map(|node| {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .unwrap_or_else(|e| panic!("reading /dev/urandom: {e}"));
        let key = encapd::wireguard::PrivateKey::from_bytes(seed);
        let path = dir.join(key_file_name(node));
        let _ = std::fs::remove_file(&path);
        wg_peer::write_private(&path, format!("{}\n", &*key.to_base64()).as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        key.public_key().to_string()
    })
}

/// A mode set up on a [`Bed`]; see [`Active::leave`].
pub struct Active<'b> {
    bed: &'b Bed,
    mode: Mode,
    dir: PathBuf,
    daemons: Vec<(Node, Encapd)>,
    /// The userspace WireGuard daemons of a [`Setup::UserspaceWg`] mode.
    wg: Vec<(Node, WgDevice)>,
    /// What was set up, one line per step (for a run's command log).
    pub setup: Vec<String>,
    done: bool,
}

/// What [`Active::leave`] found on the way out.
#[derive(Debug, Default)]
pub struct Left {
    /// Per encapd node: its log, with the counter summary it printed on
    /// SIGUSR1 just before it was stopped.
    pub logs: Vec<(Node, String)>,
    /// `ip -s link show` of the kernel VTEP (nodeA's in the kernel pair,
    /// nodeB's in the mixed pair): its packet and drop counts.
    pub vtep_stats: Option<(Node, String)>,
    /// Per node of a userspace WireGuard mode: the implementation's name,
    /// its log, and `wg show` just before it was stopped (handshakes,
    /// transfer counts).
    pub wg_logs: Vec<(Node, &'static str, String)>,
    /// Problems on the way out (a daemon that needed SIGKILL or exited
    /// non-zero, a TUN left behind).
    pub problems: Vec<String>,
}

impl Active<'_> {
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The pids of the mode's encapd processes (none without encapd).
    pub fn encapd_pids(&self) -> Vec<i32> {
        self.daemons.iter().map(|(_, d)| d.pid()).collect()
    }

    /// The pids of the mode's userspace WireGuard daemons (none in other
    /// modes).
    pub fn wg_pids(&self) -> Vec<i32> {
        self.wg.iter().map(|(_, d)| d.pid()).collect()
    }

    /// `node`'s userspace WireGuard daemon (in a [`Setup::UserspaceWg`]
    /// mode), e.g. for `wg show`.
    pub fn wg_device(&self, node: Node) -> Option<&WgDevice> {
        self.wg.iter().find(|(n, _)| *n == node).map(|(_, d)| d)
    }

    /// The nodes that run encapd.
    pub fn encapd_nodes(&self) -> Vec<Node> {
        self.daemons.iter().map(|(n, _)| *n).collect()
    }

    /// The line each encapd logged about its engine (engine, GSO/GRO,
    /// TUN offloads granted).
    pub fn engine_lines(&self) -> Vec<(Node, String)> {
        self.daemons.iter().filter_map(|(n, d)| d.log().lines().find_map(|l| l.find("engine ").map(|i| (*n, l[i..].to_owned())))).collect()
    }

    /// `node`'s `/metrics` text (`None` without encapd there, or when it
    /// does not answer).
    pub fn metrics(&self, node: Node) -> Option<String> {
        self.daemons.iter().any(|(n, _)| *n == node).then(|| scrape(self.bed.node_ns(node))).flatten()
    }

    /// Asks every encapd for its counters (SIGUSR1; the summary goes to
    /// its log), stops it, and removes the mode's devices and routes.
    pub fn leave(mut self) -> Left {
        let mut left = Left::default();
        for (_, d) in &self.daemons {
            let before = d.log().matches(SUMMARY_HEADER).count();
            d.signal(libc::SIGUSR1);
            let _ = wait_for(Duration::from_secs(2), || (d.log().matches(SUMMARY_HEADER).count() > before).then_some(()));
        }
        self.stop_daemons(&mut left);
        self.stop_wg(&mut left);
        left.vtep_stats = match &self.mode.def.setup {
            Setup::KernelVxlan => Some((Node::A, kernel_paths::vtep_stats(&self.bed.wiring, Node::A))),
            Setup::Encapd(e) if e.node_b == NodeB::KernelVtep => Some((Node::B, kernel_paths::vtep_stats(&self.bed.wiring, Node::B))),
            _ => None,
        };
        self.teardown();
        left
    }

    fn stop_daemons(&mut self, left: &mut Left) {
        for (node, d) in self.daemons.drain(..) {
            let ns = self.bed.node_ns(node).to_owned();
            let log_path = self.dir.join(format!("{}.log", node.sub()));
            let status: Result<ExitStatus, ExitStatus> = d.try_stop();
            match status {
                Ok(st) if st.success() => {}
                Ok(st) => left.problems.push(format!("encapd on node{} exited with {st}", node_letter(node))),
                Err(_) => left.problems.push(format!("encapd on node{} ignored SIGTERM for 5 s and was killed", node_letter(node))),
            }
            if wait_for(Duration::from_secs(5), || (!run("ip", &["-n", &ns, "link", "show", TUN]).ok()).then_some(())).is_none() {
                left.problems.push(format!("{TUN} still present in {ns} after encapd exited"));
            }
            left.logs.push((node, std::fs::read_to_string(&log_path).unwrap_or_default()));
        }
    }

    fn stop_wg(&mut self, left: &mut Left) {
        for (node, d) in self.wg.drain(..) {
            let (imp, show) = (d.implementation(), d.show());
            let stopped = d.stop();
            match stopped.status {
                Ok(st) if st.success() => {}
                Ok(st) => left.problems.push(format!("{imp} on node{} exited with {st}", node_letter(node))),
                Err(_) => left.problems.push(format!("{imp} on node{} ignored SIGTERM for 5 s and was killed", node_letter(node))),
            }
            if !stopped.device_gone {
                left.problems.push(format!("{} still present on node{} after {imp} exited", wg_peer::DEVICE, node_letter(node)));
            }
            left.wg_logs.push((node, imp.name(), format!("{}\n# wg show {} before the stop:\n{show}", stopped.log, wg_peer::DEVICE)));
        }
    }

    fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        for (_, d) in self.daemons.drain(..) {
            let _ = d.try_stop();
        }
        // Each stops its daemon by pid; its device goes with the TUN.
        self.wg.clear();
        match &self.mode.def.setup {
            Setup::Routing => kernel_paths::unroute(&self.bed.wiring),
            Setup::KernelVxlan => {
                for node in [Node::A, Node::B] {
                    kernel_paths::vtep_down(&self.bed.wiring, node);
                }
            }
            Setup::Encapd(e) if e.node_b == NodeB::KernelVtep => kernel_paths::vtep_down(&self.bed.wiring, Node::B),
            Setup::Encapd(_) | Setup::UserspaceWg(_) => {}
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{encapd_bin, require_root, require_tools};

    /// A wireguard mode's files are what encapd accepts: each node's key
    /// readable with the daemon's checks, and each peers file naming the
    /// other node's public key (so the two can handshake).
    #[test]
    fn a_wireguard_mode_writes_keys_encapd_accepts() {
        let mode = Mode::named(crate::mode::WIREGUARD).unwrap();
        let dir = crate::cmd::TempDir::new("bed-wg");
        let public = write_node_keys(dir.path());
        assert_ne!(public[0], public[1]);
        for node in [Node::A, Node::B] {
            let path = dir.path().join(format!("{}.toml", node.sub()));
            let config = encapd::config::Config::parse(&node_config(&mode, node, 2), &path).unwrap_or_else(|e| panic!("{e}"));
            let key = config.wireguard_private_key().unwrap_or_else(|e| panic!("{e}")).expect("a wireguard node's key");
            assert_eq!(key.public_key().to_string(), public[node.index()]);
            let peers = peers_file(&mode, node.other(), Some(&public[node.index()]));
            let defaults = encapd::config::PeerDefaults { port: 51820, vxlan: false, wireguard: true };
            let specs = encapd::config::parse_peers(&peers, "peers.toml", defaults).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(specs.len(), 2, "one peer, IPv4 and IPv6: {peers}");
            for spec in &specs {
                let wg = spec.wireguard.as_ref().expect("the peer's key");
                assert_eq!(wg.public_key.to_string(), public[node.index()], "{peers}");
            }
        }
    }

    fn has_link(bed: &Bed, node: Node, dev: &str) -> bool {
        run("ip", &["-n", bed.node_ns(node), "link", "show", dev]).ok()
    }

    /// Each kind of setup comes up (enter checks the route and a ping) and
    /// leaves nothing behind for the next mode, on both profiles.
    #[test]
    fn every_kind_of_mode_comes_up_and_leaves_nothing_behind() {
        if !require_root() || !require_tools(&["ethtool", "bridge"]) {
            return;
        }
        let dir = crate::cmd::TempDir::new("bed-test");
        for (underlay, name) in [
            (Underlay::Veth, "routing"),
            (Underlay::Wire, "vxlan-kernel"),
            (Underlay::Wire, "encapd-vxlan-mixed"),
            (Underlay::Veth, "wireguard"),
        ] {
            let bed = Bed::new(underlay);
            let mode = Mode::named(name).unwrap();
            let configs = bed.write_configs(&mode, 1, &dir.path().join(name));
            assert_eq!(configs.nodes.len(), usize::from(mode.runs_encapd_on(Node::A)) + usize::from(mode.runs_encapd_on(Node::B)));
            let active = bed
                .enter(&mode, &configs, &encapd_bin(), mode.ctr_mtu(crate::kernel_paths::UNDERLAY_MTU))
                .unwrap_or_else(|e| panic!("{name} on {underlay}: {e}"));
            assert_eq!(active.encapd_pids().len(), configs.nodes.len());
            let left = active.leave();
            assert!(left.problems.is_empty(), "{name}: {:?}", left.problems);
            for node in [Node::A, Node::B] {
                assert!(!has_link(&bed, node, VTEP) && !has_link(&bed, node, TUN), "{name} left a device on {node:?}");
                let routes = run("ip", &["-n", bed.node_ns(node), "route"]).stdout;
                assert!(!routes.contains(subnets(node.other()).0), "{name} left a route on {node:?}: {routes}");
            }
            if name == "encapd-vxlan-mixed" {
                let (_, stats) = left.vtep_stats.expect("the kernel VTEP's statistics");
                assert!(stats.contains(VTEP), "{stats}");
            }
            println!("{name} on {underlay}: came up and left cleanly");
        }
    }
}
