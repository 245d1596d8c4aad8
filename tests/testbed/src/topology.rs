//! The two-node topology with the peers-file control source, one encapd
//! per node:
//!
//! ```text
//! ctrA 100.96.1.2/24 ── nodeA 198.18.0.1 ══ underlay ══ 198.18.0.2 nodeB ── ctrB 100.96.2.3/24
//!      fd00:96:1::2/64                                                    fd00:96:2::3/64
//! ```
//!
//! [`Topology::with`] varies it: another engine or extra configuration per
//! node, and optionally a middle namespace on the underlay whose layer-2
//! forwarder can reorder frames ([`super::middle`]);
//! [`Topology::add_udp_loss`] drops tunnel datagrams at random with
//! nftables. Everything it starts is stopped, and every namespace removed,
//! when it drops; it holds a [`Permit`] while it exists.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cmd::{Output, TempDir, run, wait_for};
use crate::counters::{Counters, metric_value, scrape};
use crate::env::{encapd_bin, encapd_bin_any_user_can_run};
use crate::instance::{Encapd, print_log_if_panicking};
use crate::middle::{Forwarder, Middle, MiddleStats, wire_middle};
use crate::netns::{Permit, ns_exec};
use crate::underlay::Underlay;
use crate::wiring::{Node, PORT, TUN, Wiring};

/// How long a node may take from spawn to forwarding.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`Topology::with`] builds the topology.
#[derive(Debug, Clone)]
pub struct Options {
    /// I/O engine of nodeA's and nodeB's encapd.
    pub engine_a: String,
    pub engine_b: String,
    /// Lines appended to that node's `[dataplane]` section, e.g.
    /// `"offload = \"off\"\n"`.
    pub extra_a: String,
    pub extra_b: String,
    /// Whole sections appended to that node's configuration, e.g.
    /// `"[process]\nuser = \"nobody\"\n"`.
    pub sections_a: String,
    pub sections_b: String,
    /// Lines appended to the other node's entry in that node's peers file,
    /// e.g. `"kernel_decap = true\n"`.
    pub peer_extra_a: String,
    pub peer_extra_b: String,
    /// A middle namespace on the underlay (see [`Middle`]); `None`: the
    /// nodes' underlay veths are directly connected.
    pub middle: Option<Middle>,
    /// How the underlay link behaves (default: `$ENCAPD_UNDERLAY`, else
    /// veth).
    pub underlay: Underlay,
}

impl Options {
    /// Both nodes on `engine`, default configuration, direct underlay (what
    /// [`Topology::new`] builds).
    pub fn new(engine: &str) -> Options {
        Options {
            engine_a: engine.to_owned(),
            engine_b: engine.to_owned(),
            extra_a: String::new(),
            extra_b: String::new(),
            sections_a: String::new(),
            sections_b: String::new(),
            peer_extra_a: String::new(),
            peer_extra_b: String::new(),
            middle: None,
            underlay: Underlay::from_env(),
        }
    }
}

/// ctrA ── nodeA ══ nodeB ── ctrB, one encapd per node (see the module docs).
pub struct Topology {
    /// nodeA's engine (the only one, unless [`Options`] gave nodeB another).
    pub engine: String,
    /// Namespace names.
    pub ctr_a: String,
    pub node_a: String,
    pub node_b: String,
    pub ctr_b: String,
    /// The middle namespace, when [`Options::middle`] asked for one.
    pub mid: Option<String>,
    opts: Options,
    daemons: [Option<Encapd>; 2],
    forwarder: Option<Forwarder>,
    dir: TempDir,
    // Dropped after everything above has stopped: the namespaces go last.
    wiring: Wiring,
    _permit: Permit,
}

/// The control socket beside the node's config, never the host's
/// /run/encapd (where every test's node would look for the same one).
const CONTROL_SOCKET: &str = "control_socket = \"encapd.sock\"\n";

fn node_config(node: Node, engine: &str, extra: &str, sections: &str) -> String {
    let (subnet, subnet6) = subnets(node);
    let sections = match sections.contains("[process]\n") {
        true => sections.replacen("[process]\n", &format!("[process]\n{CONTROL_SOCKET}"), 1),
        false => format!("{sections}\n[process]\n{CONTROL_SOCKET}"),
    };
    let sections = sections.as_str();
    let line = |s: &str| if s.is_empty() || s.ends_with('\n') { s.to_owned() } else { format!("{s}\n") };
    format!(
        "[node]\npublic_ip = \"{}\"\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\n\n\
         [network]\ncidr = \"100.96.0.0/16\"\ncidr6 = \"fd00:96::/32\"\n\n\
         [dataplane]\nworkers = 2\nio = \"{engine}\"\n{}\n\
         [control]\nsource = \"file\"\npeers = \"peers.toml\"\nsubnet_env = \"subnet.env\"\n\n{}",
        node.underlay(),
        line(extra),
        line(sections)
    )
}

fn subnets(node: Node) -> (&'static str, &'static str) {
    match node {
        Node::A => ("100.96.1.0/24", "fd00:96:1::/64"),
        Node::B => ("100.96.2.0/24", "fd00:96:2::/64"),
    }
}

/// The peers file of `node`: the other node, with `extra` lines.
pub fn peers_file(node: Node, extra: &str) -> String {
    let peer = node.other();
    let (subnet, subnet6) = subnets(peer);
    format!("[[peer]]\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\npublic_ip = \"{}\"\n{extra}", peer.underlay())
}

impl Topology {
    /// Builds the namespaces and starts both daemons with I/O engine
    /// `engine`; returns once both are forwarding. Panics on any failure
    /// (Drop still cleans up whatever was created).
    pub fn new(engine: &str) -> Topology {
        Topology::with(Options::new(engine))
    }

    /// Like [`new`](Self::new), with per-node engines and configuration and
    /// an optional middle namespace (see [`Options`]).
    pub fn with(opts: Options) -> Topology {
        let permit = Permit::acquire();
        let wiring = Wiring::build(true, opts.middle.is_some());
        wiring.apply_underlay(opts.underlay);
        let mut t = Topology {
            engine: opts.engine_a.clone(),
            ctr_a: wiring.ctr_a.clone(),
            node_a: wiring.node_a.clone(),
            node_b: wiring.node_b.clone(),
            ctr_b: wiring.ctr_b.clone(),
            mid: wiring.mid.clone(),
            dir: TempDir::new(wiring.prefix()),
            opts,
            daemons: [None, None],
            forwarder: None,
            wiring,
            _permit: permit,
        };
        t.wiring.attach_container(Node::A, "100.96.1.1/24", "100.96.1.2/24", Some(("fd00:96:1::1/64", "fd00:96:1::2/64")));
        t.wiring.attach_container(Node::B, "100.96.2.1/24", "100.96.2.3/24", Some(("fd00:96:2::1/64", "fd00:96:2::3/64")));
        if let (Some(md), Some(middle)) = (&t.mid, &t.opts.middle) {
            t.forwarder = Some(wire_middle(md, [&t.node_a, &t.node_b], middle));
        }
        t.start_daemons();
        t
    }

    /// The namespaces and links under the daemons (for the kernel's own
    /// data paths on the same nodes, see [`crate::kernel_paths`]).
    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    /// The I/O engine of the node's encapd.
    pub fn engine_of(&self, node: Node) -> &str {
        match node {
            Node::A => &self.opts.engine_a,
            Node::B => &self.opts.engine_b,
        }
    }

    /// What the middle forwarder has done so far (panics without a middle).
    pub fn middle_stats(&self) -> MiddleStats {
        self.forwarder.as_ref().expect("topology without a middle namespace").stats()
    }

    /// Drops `percent` % of the tunnel datagrams (UDP to port 8285) that
    /// reach the node's own input hook, at random (nftables `numgen`), in a
    /// table `encapd_test_loss` with a counter (see
    /// [`udp_loss_dropped`](Self::udp_loss_dropped)).
    pub fn add_udp_loss(&self, node: Node, percent: u32) {
        let ns = self.ns_of(node).to_owned();
        let script = format!(
            "table inet encapd_test_loss {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             udp dport {PORT} numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        );
        let path = self.dir.write(&format!("loss-{}.nft", node.sub()), &script);
        let o = ns_exec(&ns, &["nft", "-f", path.to_str().unwrap()], Duration::from_secs(10));
        assert!(o.ok(), "nft -f in {ns} failed: {}\n{script}", o.text());
    }

    /// Packets the node's loss rule has dropped so far (its nftables counter).
    pub fn udp_loss_dropped(&self, node: Node) -> u64 {
        let ns = self.ns_of(node);
        let o = ns_exec(ns, &["nft", "list", "table", "inet", "encapd_test_loss"], Duration::from_secs(10));
        assert!(o.ok(), "nft list in {ns} failed: {}", o.text());
        let line = o.stdout.lines().find(|l| l.contains("numgen") && l.contains("counter packets")).unwrap_or_else(|| {
            panic!("no loss rule with a counter in {ns}:\n{}", o.stdout);
        });
        let rest = line.split("counter packets").nth(1).unwrap();
        rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected nft counter line {line:?}"))
    }

    /// `node`'s peers file as this topology wrote it at the start.
    pub fn peers_file(&self, node: Node) -> String {
        let extra = match node {
            Node::A => &self.opts.peer_extra_a,
            Node::B => &self.opts.peer_extra_b,
        };
        peers_file(node, extra)
    }

    fn start_daemons(&mut self) {
        for node in [Node::A, Node::B] {
            let (engine, extra, sections) = match node {
                Node::A => (&self.opts.engine_a, &self.opts.extra_a, &self.opts.sections_a),
                Node::B => (&self.opts.engine_b, &self.opts.extra_b, &self.opts.sections_b),
            };
            let config = node_config(node, engine, extra, sections);
            self.dir.write(&format!("{}/encapd.toml", node.sub()), &config);
            self.dir.write(&format!("{}/peers.toml", node.sub()), &self.peers_file(node));
        }
        for node in [Node::A, Node::B] {
            self.spawn_node(node, &[]);
        }
        for node in [Node::A, Node::B] {
            self.wait_node_ready(node);
        }
    }

    /// Starts the node's encapd (stopped before) with its configuration and
    /// `env` added to its environment; does not wait (see
    /// [`wait_node_ready`](Self::wait_node_ready)).
    pub fn spawn_node(&mut self, node: Node, env: &[(&str, &str)]) {
        assert!(self.daemons[node.index()].is_none(), "encapd ({node:?}) is still running");
        let dir = self.dir.path().join(node.sub());
        // Appended to, so a restarted daemon's log follows the first one's.
        let sections = match node {
            Node::A => &self.opts.sections_a,
            Node::B => &self.opts.sections_b,
        };
        // A daemon that switches user re-executes its binary as that user.
        let bin = match sections.contains("user = ") {
            true => encapd_bin_any_user_can_run(self.dir.path()),
            false => encapd_bin(),
        };
        let d = Encapd::spawn_with(self.ns_of(node), &bin, &[], &dir.join("encapd.toml"), &dir.join("encapd.log"), env);
        self.daemons[node.index()] = Some(d);
    }

    /// Waits until the node's encapd forwards (at most 10 s) with the TUN
    /// up and the engine under test running.
    pub fn wait_node_ready(&mut self, node: Node) {
        let engine = self.engine_of(node).to_owned();
        let ns = self.ns_of(node).to_owned();
        let log = self.daemon_mut(node).wait_ready(READY_TIMEOUT);
        assert!(run("ip", &["-n", &ns, "link", "show", TUN]).ok(), "encapd in {ns} is ready but {TUN} does not exist:\n{log}");
        // Guard against a silent fallback: the engine under test must be the one running.
        assert!(log.contains(&format!("engine {engine} ")), "encapd in {ns} does not run the {engine} engine:\n{log}");
    }

    /// Starts the node's encapd again (after [`stop_node`](Self::stop_node)
    /// or [`kill_node`](Self::kill_node)) with the same configuration and
    /// waits until it forwards; returns how long that took.
    pub fn start_node(&mut self, node: Node) -> Duration {
        let started = Instant::now();
        self.spawn_node(node, &[]);
        self.wait_node_ready(node);
        started.elapsed()
    }

    /// SIGKILL to the node's encapd (no clean-up of its own); returns once it is reaped.
    pub fn kill_node(&mut self, node: Node) -> ExitStatus {
        self.daemons[node.index()].take().expect("daemon already stopped").kill()
    }

    /// SIGTERM to the node's encapd; returns its exit status. Panics if it
    /// does not exit within 5 s (after killing it).
    pub fn stop_node(&mut self, node: Node) -> ExitStatus {
        self.daemons[node.index()].take().expect("daemon already stopped").stop()
    }

    fn daemon(&self, node: Node) -> &Encapd {
        self.daemons[node.index()].as_ref().expect("daemon was stopped")
    }

    fn daemon_mut(&mut self, node: Node) -> &mut Encapd {
        self.daemons[node.index()].as_mut().expect("daemon was stopped")
    }

    pub fn ns_of(&self, node: Node) -> &str {
        self.wiring.node_ns(node)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of a node's encapd (panics if it was stopped).
    pub fn pid(&self, node: Node) -> i32 {
        self.daemon(node).pid()
    }

    /// Sends `sig` to the node's encapd.
    pub fn signal(&self, node: Node, sig: i32) {
        self.daemon(node).signal(sig);
    }

    /// Everything the node's encapd has logged so far.
    pub fn log(&self, node: Node) -> String {
        std::fs::read_to_string(self.dir.path().join(node.sub()).join("encapd.log")).unwrap_or_default()
    }

    /// The node's `/metrics` text (panics when encapd does not answer).
    pub fn scrape(&self, node: Node) -> String {
        scrape(self.ns_of(node)).unwrap_or_else(|| panic!("GET /metrics on {node:?} failed:\n{}", self.log(node)))
    }

    /// The value of the node's unlabelled metric `name` (`None` when absent).
    pub fn metric(&self, node: Node, name: &str) -> Option<f64> {
        metric_value(&self.scrape(node), name)
    }

    /// Asks the node's encapd for its counters (SIGUSR1) and parses the
    /// summary it prints; waits at most 5 s for it.
    pub fn counters(&mut self, node: Node) -> Counters {
        self.daemon_mut(node).counters()
    }

    /// Polls the node's counters until `pred` holds (at most `timeout`);
    /// returns the last counters read either way.
    pub fn counters_until(&mut self, node: Node, timeout: Duration, pred: impl Fn(&Counters) -> bool) -> Counters {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.counters(node);
            if pred(&c) || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Replaces the node's peers file atomically (write a sibling, rename
    /// over it), as config managers do.
    pub fn replace_peers(&self, node: Node, text: &str) {
        replace_file(&self.dir.path().join(node.sub()).join("peers.toml"), text);
    }

    /// `ping` from a namespace; returns what it printed (never panics on a
    /// failed ping: callers assert on the output).
    pub fn ping(&self, ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["ping"];
        full.extend_from_slice(args);
        ns_exec(ns, &full, Duration::from_secs(30))
    }

    /// True when a ping from ctrA to `dst` is answered "unreachable" within
    /// 300 ms (no peer owns it); false when it is forwarded silently.
    pub fn unreachable(&self, dst: &str) -> bool {
        unreachable_from(&self.ctr_a, dst)
    }

    /// Waits (at most `timeout`) until [`unreachable`](Self::unreachable)
    /// says `want` for `dst`.
    pub fn wait_unreachable(&self, dst: &str, want: bool, timeout: Duration) -> bool {
        wait_for(timeout, || (self.unreachable(dst) == want).then_some(())).is_some()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut f) = self.forwarder.take() {
            let stats = f.stats();
            if let Some(msg) = f.stop() {
                eprintln!("warning: the middle forwarder panicked: {msg}");
            }
            if panicking {
                eprintln!("---- middle forwarder: {stats:?} ----");
            }
        }
        for node in [Node::A, Node::B] {
            drop(self.daemons[node.index()].take());
            let label = format!("encapd log, node {node:?} ({})", self.engine_of(node));
            print_log_if_panicking(&label, &self.dir.path().join(node.sub()).join("encapd.log"));
        }
    }
}

/// Replaces `path` atomically: writes a sibling, renames it over `path`.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming {} over {}: {e}", tmp.display(), path.display()));
}

/// True when a ping from namespace `ns` to `dst` is answered "unreachable"
/// within 300 ms.
pub fn unreachable_from(ns: &str, dst: &str) -> bool {
    let o = ns_exec(ns, &["ping", "-n", "-c", "1", "-W", "0.3", dst], Duration::from_secs(5));
    o.text().to_lowercase().contains("unreachable")
}
