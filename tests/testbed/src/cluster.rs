//! The simulated fleet as a scenario: N encapd nodes (udp backend, uring,
//! one worker) on one bridged underlay sharing an etcd cluster (flannel's
//! lease store), a pod per node, and the measurements made on it. What
//! `encapd-bench fleet` runs and `tests/e2e_cluster.rs` asserts on.
//!
//! ```text
//!   pod 1 ── cni0 [node 1: encapd] ul 198.18.0.1 ─┐
//!   pod 2 ── cni0 [node 2: encapd] ul 198.18.0.2 ─┼─ br0 [underlay: etcd ×3 on 198.18.0.254]
//!   ...                                           │
//!   pod N ── cni0 [node N: encapd] ul 198.18.0.N ─┘
//! ```
//!
//! Steps (run in the order given, on one fleet brought up once):
//! - [`Step::Check`]: full-mesh reachability, ICMP echo from every pod to
//!   every other ([`crate::mesh`]).
//! - [`Step::JoinLeave`]: `rounds` times, a node's encapd stops and its
//!   lease is deleted (time until every other node's table drops it), then
//!   it starts again (time from its lease put, and from its process start,
//!   until every other node routes to it), and its pod reaches every other
//!   pod both ways; then once, the last node (whose lease is short) stops
//!   and the time from its lease's expiry until every other node dropped it
//!   is measured ([`crate::converge`]).
//! - [`Step::RollingUpgrade`]: every node in turn, `encapd run --takeover`
//!   while counted UDP streams and TCP transfers run
//!   ([`crate::background`]); nothing may be lost.
//! - [`Step::Resources`]: RSS, threads and fds of every encapd, etcd's RSS.
//!
//! Figures are `key=value` ([`Figures`]; the keys are those the shell
//! version printed, so committed runs stay comparable); a failed check is
//! recorded and the scenario goes on, so one run reports everything.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::background::{Background, BackgroundOptions};
use crate::converge::{self, EtcdWatch, Sample, unix_now};
use crate::fleet::{ETCD_HOST, ETCD_PREFIX, Fleet, FleetOptions, Kind, Pod};
use crate::mesh::{self, MeshOptions};
use crate::stats::{Figures, Percentiles, ms};
use crate::underlay::Underlay;

/// How the scenario is built and driven.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Fleet size (2 to 200).
    pub nodes: usize,
    /// Join/leave rounds (at most nodes - 1).
    pub rounds: usize,
    /// Lease TTL (s) of the last node, whose lease is seen to expire (≥ 10,
    /// encapd's minimum).
    pub lease_ttl: u64,
    /// UDP streams sent by every pod during the upgrade.
    pub streams: usize,
    /// Datagrams per second per stream.
    pub udp_rate: u32,
    /// TCP transfers during the upgrade.
    pub tcp: usize,
    /// Bytes per second per TCP transfer.
    pub tcp_rate: u64,
    /// The binary nodes are upgraded to (default: the binary under test).
    pub upgrade_bin: Option<PathBuf>,
    /// The underlay profile of every node's link to the bridge.
    pub underlay: Underlay,
    /// Echo figures as `FIGURE key=value` on stdout.
    pub echo: bool,
}

impl ClusterOptions {
    /// The defaults of `encapd-bench fleet` for `nodes` nodes.
    pub fn new(nodes: usize) -> ClusterOptions {
        ClusterOptions {
            nodes,
            rounds: 3,
            lease_ttl: 15,
            streams: 2,
            udp_rate: 100,
            tcp: 3,
            tcp_rate: 2_000_000,
            upgrade_bin: None,
            underlay: Underlay::from_env(),
            echo: false,
        }
    }

    /// What is wrong with these options, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=200).contains(&self.nodes) {
            return Err(format!("--nodes must be 2 to 200, not {}", self.nodes));
        }
        if self.rounds > self.nodes - 1 {
            return Err(format!("--rounds must be 0 to nodes - 1 ({}), not {}", self.nodes - 1, self.rounds));
        }
        if self.lease_ttl < 10 {
            return Err(format!("--lease-ttl must be at least 10 (encapd's minimum), not {}", self.lease_ttl));
        }
        if self.streams == 0 || self.udp_rate == 0 || self.tcp_rate == 0 {
            return Err("--streams, --udp-rate and --tcp-rate must be positive".into());
        }
        Ok(())
    }
}

/// One step of the scenario (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Check,
    JoinLeave,
    RollingUpgrade,
    Resources,
}

impl Step {
    /// Every measuring step, in order (`all`).
    pub const ALL: [Step; 4] = [Step::Check, Step::JoinLeave, Step::RollingUpgrade, Step::Resources];
}

/// One row of `resources.txt`.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub node: usize,
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

/// The fleet of the scenario, up, with one pod per node.
pub struct Cluster {
    pub fleet: Fleet,
    pub pods: Vec<Pod>,
    pub opts: ClusterOptions,
    pub figures: Figures,
    /// Every convergence sample (`convergence.txt`).
    pub samples: Vec<Sample>,
    /// Per node (`resources.txt`), after [`Step::Resources`].
    pub resources: Vec<Resources>,
}

const UDP_UPLINK: Kind = Kind::Encapd { backend: "udp", engine: "uring" };
/// How often convergence polls each node's `/metrics`.
const POLL: Duration = Duration::from_millis(10);

impl Cluster {
    /// Brings the fleet up: etcd ×3, every encapd ready, every table
    /// complete, a pod on every node. Figures `nodes`, `setup_s`.
    pub fn up(opts: ClusterOptions) -> Cluster {
        let started = Instant::now();
        let n = opts.nodes;
        let mut fo = FleetOptions::new(&vec![UDP_UPLINK; n], 1);
        fo.etcd_members = Some(3);
        fo.underlay = opts.underlay;
        fo.static_neighbours = true;
        fo.node_control_extra.insert(n - 1, format!("lease_ttl = {}\nrenew_margin = {}\n", opts.lease_ttl, opts.lease_ttl / 3));
        eprintln!("fleet: {n} nodes, etcd x3 on {ETCD_HOST}, underlay {}", opts.underlay);
        let fleet = Fleet::with(fo);
        eprintln!("fleet: encapds ready in {:.0} s; waiting for every table to hold {} routes", started.elapsed().as_secs_f64(), n - 1);
        let mut figures = Figures::new(opts.echo);
        let all: Vec<usize> = (0..n).collect();
        let (_, pending) = converge::wait_routes(&node_list(&fleet, &all), n - 1, Duration::from_secs(60), POLL);
        assert!(pending.is_empty(), "the fleet did not converge: {pending:?}");
        let mut fleet = fleet;
        let pods: Vec<Pod> = (0..n).map(|i| fleet.add_pod(i)).collect();
        figures.add("nodes", n);
        figures.add("setup_s", started.elapsed().as_secs());
        eprintln!("fleet up in {:.0} s: pods {} .. {}", started.elapsed().as_secs_f64(), pods[0].addrs.ip, pods[n - 1].addrs.ip);
        Cluster { fleet, pods, opts, figures, samples: Vec::new(), resources: Vec::new() }
    }

    /// Runs `steps` in order.
    pub fn run(&mut self, steps: &[Step]) {
        for step in steps {
            match step {
                Step::Check => self.check("mesh"),
                Step::JoinLeave => self.join_leave(),
                Step::RollingUpgrade => self.rolling_upgrade(),
                Step::Resources => self.resources(),
            }
        }
    }

    fn pod_list(&self) -> Vec<(String, Ipv4Addr)> {
        self.pods.iter().map(|p| (p.ns.clone(), p.addrs.ip)).collect()
    }

    fn etcd_addr() -> SocketAddr {
        SocketAddr::from((ETCD_HOST.parse::<Ipv4Addr>().expect("an address"), 2379))
    }

    /// The full mesh; figures `PREFIX_pairs`, `_ok`, `_failed`, `_seconds`,
    /// `_rtt_p50_ms`, ...
    pub fn check(&mut self, prefix: &str) {
        let n = self.opts.nodes;
        eprintln!("check ({prefix}): full mesh, {} pod pairs", n * (n - 1));
        let r = mesh::probe(&self.pod_list(), None, MeshOptions::default());
        self.figures.add(format!("{prefix}_pairs"), r.pairs);
        self.figures.add(format!("{prefix}_ok"), r.ok);
        self.figures.add(format!("{prefix}_failed"), r.failed.len());
        self.figures.add(format!("{prefix}_seconds"), format!("{:.2}", r.seconds));
        self.figures.extend(r.rtt_ms.figures(&format!("{prefix}_rtt")));
        if !r.failed.is_empty() {
            self.figures.fail(format!("full mesh ({prefix}): {} of {} pairs unanswered", r.failed.len(), r.pairs));
        }
    }

    /// Times a convergence of every node but `except` to `routes` routes:
    /// `event` runs while every other node is polled and returns the
    /// reference times (label, Unix seconds) the samples are measured from,
    /// the first one logged.
    fn converge(
        &mut self,
        except: usize,
        routes: usize,
        timeout: Duration,
        what: &str,
        event: impl FnOnce(&mut Fleet) -> Result<Vec<(&'static str, f64)>, String>,
    ) {
        let others: Vec<usize> = (0..self.opts.nodes).filter(|&i| i != except).collect();
        let nodes = node_list(&self.fleet, &others);
        let fleet = &mut self.fleet;
        let ((seen, pending), refs) = std::thread::scope(|s| {
            let poll = s.spawn(|| converge::wait_routes(&nodes, routes, timeout, POLL));
            let refs = event(fleet);
            (poll.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), refs)
        });
        let refs = match refs {
            Ok(r) => r,
            Err(e) => return self.figures.fail(format!("{what} of node {except}: {e}")),
        };
        for (i, e) in &pending {
            eprintln!("  {what}: node {i} did not reach {routes} routes within {timeout:?} ({e})");
        }
        if !pending.is_empty() {
            self.figures.fail(format!("{what} of node {except}: {} nodes did not converge", pending.len()));
        }
        for (n, (label, t0)) in refs.into_iter().enumerate() {
            let samples = converge::samples(label, &seen, t0);
            if n == 0 {
                let (p, o) = converge::summary(&samples, label);
                eprintln!(
                    "  {label}: {} of {} nodes converged; published p50 {} p99 {} ms, observed p50 {} p99 {} ms",
                    seen.len(),
                    others.len(),
                    show(p.p50),
                    show(p.p99),
                    show(o.p50),
                    show(o.p99)
                );
            }
            self.samples.extend(samples);
        }
    }

    /// Node `k` joins again: its encapd starts while every other node is
    /// polled; samples `join` (from its lease put, seen by an etcd watch
    /// opened before the start) and `join-start` (from its process start);
    /// then its pod must reach every other pod, both ways.
    fn join(&mut self, k: usize) {
        let n = self.opts.nodes;
        let key = self.fleet.lease_key(k);
        let watch = match EtcdWatch::open(&self.fleet.underlay, Cluster::etcd_addr(), &key) {
            Ok(w) => w,
            Err(e) => return self.figures.fail(format!("the etcd watch for node {k}'s join: {e}")),
        };
        self.converge(k, n - 1, Duration::from_secs(60), "join", move |fleet| {
            let waiter = std::thread::spawn(move || watch.wait_event(Duration::from_secs(60)));
            let start = unix_now();
            fleet.restart_encapd(k);
            let put = waiter.join().map_err(|_| "the etcd watch panicked".to_owned())??;
            Ok(vec![("join", put), ("join-start", start)])
        });
        let r = mesh::probe(&self.pod_list(), Some(&[k]), MeshOptions::default());
        if !r.failed.is_empty() {
            self.figures.fail(format!("reachability to and from node {k} after its join: {} pairs unanswered", r.failed.len()));
        }
    }

    pub fn join_leave(&mut self) {
        let n = self.opts.nodes;
        let rounds = self.opts.rounds;
        for r in 0..rounds {
            // Nodes spread over the fleet, never the short-lease one.
            let k = (r * (n - 1)) / rounds;
            eprintln!("join-leave round {}/{rounds}: node {k} leaves (stop + delete its lease) and joins again", r + 1);
            let st = self.fleet.stop_encapd(k);
            if !st.success() {
                self.figures.fail(format!("encapd on node {k} exited with {st} on SIGTERM"));
            }
            let (ul, key) = (self.fleet.underlay.clone(), self.fleet.lease_key(k));
            self.converge(k, n - 2, Duration::from_secs(30), "leave (delete)", |_| {
                Ok(vec![("leave-delete", converge::etcd_delete(&ul, Cluster::etcd_addr(), &key)?)])
            });
            self.join(k);
        }
        // Leave by expiry: the last node's lease is short; stop it, and
        // time from the lease's expiry (its last grant + TTL) to every
        // other node dropping it.
        let k = n - 1;
        eprintln!("join-leave: node {k} stops; its lease (ttl {} s) expires", self.opts.lease_ttl);
        let granted = last_lease_grant(&std::fs::read_to_string(self.fleet.log_path(k)).unwrap_or_default());
        let st = self.fleet.stop_encapd(k);
        if !st.success() {
            self.figures.fail(format!("encapd on node {k} exited with {st} on SIGTERM"));
        }
        let ttl = self.opts.lease_ttl as f64;
        match granted {
            Some(t) => self.converge(k, n - 2, Duration::from_secs(self.opts.lease_ttl + 30), "leave (expiry)", |_| {
                Ok(vec![("leave-expiry", t + ttl)])
            }),
            None => self.figures.fail(format!("no lease grant in node {k}'s log")),
        }
        self.join(k);
        for ev in ["join", "join-start", "leave-delete", "leave-expiry"] {
            let (p, o) = converge::summary(&self.samples, ev);
            let prefix = ev.replace('-', "_");
            self.figures.add(format!("{prefix}_samples"), p.samples);
            self.figures.extend(p.figures(&format!("{prefix}_published")));
            self.figures.extend(o.figures(&format!("{prefix}_observed")));
        }
        self.check("mesh_after_churn");
    }

    /// Every node in turn taken over by a successor (`--takeover`) while
    /// counted traffic runs; nothing may be lost, every lease and route
    /// must remain.
    pub fn rolling_upgrade(&mut self) {
        let n = self.opts.nodes;
        let bin = self.opts.upgrade_bin.clone();
        let help = crate::cmd::run_cmd(
            std::process::Command::new(bin.clone().unwrap_or_else(crate::env::encapd_bin)).args(["run", "--help"]),
            Duration::from_secs(10),
        );
        if !help.stdout.contains("--takeover") {
            self.figures.add("upgrade", "unsupported");
            return self.figures.fail("rolling upgrade: the binary has no --takeover");
        }
        let opts = BackgroundOptions {
            streams: self.opts.streams,
            udp_rate: self.opts.udp_rate,
            size: 64,
            tcp: self.opts.tcp,
            tcp_rate: self.opts.tcp_rate,
            max_duration: Duration::from_secs(60 + n as u64 * 15),
        };
        eprintln!("rolling upgrade: {} UDP streams of {}/s and {} TCP transfers start", n * opts.streams, opts.udp_rate, opts.tcp);
        let traffic = Background::start(&self.pod_list(), opts);
        std::thread::sleep(Duration::from_secs(3));
        let mut handovers = Vec::new();
        let mut failed = 0;
        for i in 0..n {
            match self.fleet.take_over(i, bin.as_deref(), Duration::from_secs(6)) {
                Ok(took) => handovers.push(ms(took)),
                Err(e) => {
                    failed += 1;
                    self.figures.fail(e);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(3));
        let report = traffic.finish();
        self.figures.extend(report.figures("upgrade"));
        self.figures.add("upgrade_nodes", n);
        self.figures.add("upgrade_done", handovers.len());
        self.figures.add("upgrade_failed", failed);
        let h = Percentiles::of(&handovers);
        if h.samples > 0 {
            self.figures.add("upgrade_handover_p50_ms", show0(h.p50));
            self.figures.add("upgrade_handover_p99_ms", show0(h.p99));
            self.figures.add("upgrade_handover_max_ms", show0(h.max));
        }
        if report.udp_lost > 0 {
            self.figures.fail(format!("{} datagrams lost across the rolling upgrade", report.udp_lost));
        }
        if !report.ok() {
            self.figures
                .fail(format!("traffic across the rolling upgrade: {} of {} TCP transfers intact", report.tcp_ok, report.tcp_transfers));
        }
        // Every lease is still there, every table complete, the mesh whole.
        let etcd = self.fleet.etcd.as_ref().expect("the fleet has etcd");
        let keys =
            etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("{ETCD_PREFIX}/subnets/")]).lines().filter(|l| !l.is_empty()).count();
        self.figures.add("upgrade_leases_after", keys);
        if keys != n {
            self.figures.fail(format!("after the upgrade etcd holds {keys} leases, not {n}"));
        }
        let all: Vec<usize> = (0..n).collect();
        let (seen, _) = converge::wait_routes(&node_list(&self.fleet, &all), n - 1, Duration::from_secs(10), POLL);
        if seen.len() != n {
            self.figures.fail(format!("tables incomplete after the upgrade: {} of {n} nodes hold {} routes", seen.len(), n - 1));
        }
        self.check("mesh_after_upgrade");
    }

    /// RSS, threads and fds of every encapd; etcd's RSS.
    pub fn resources(&mut self) {
        let mut rows = Vec::new();
        for i in 0..self.opts.nodes {
            let Some(pid) = self.fleet.encapd_pid(i) else {
                self.figures.fail(format!("resources: node {i} runs no encapd"));
                continue;
            };
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
            rows.push(Resources {
                node: i,
                rss_kib: proc_status(pid, "VmRSS").unwrap_or(0),
                threads: proc_status(pid, "Threads").unwrap_or(0),
                fds,
            });
        }
        for (name, get) in
            [("rss_kib", (|r: &Resources| r.rss_kib) as fn(&Resources) -> u64), ("threads", |r| r.threads), ("fds", |r| r.fds)]
        {
            let mut v: Vec<u64> = rows.iter().map(get).collect();
            v.sort_unstable();
            if v.is_empty() {
                continue;
            }
            self.figures.add(format!("encapd_{name}_min"), v[0]);
            self.figures.add(format!("encapd_{name}_median"), v[v.len().div_ceil(2) - 1]);
            self.figures.add(format!("encapd_{name}_max"), v[v.len() - 1]);
            self.figures.add(format!("encapd_{name}_total"), v.iter().sum::<u64>());
        }
        let etcd_rss: u64 = self.fleet.etcd.as_ref().map_or(0, |e| e.pids().iter().filter_map(|&p| proc_status(p, "VmRSS")).sum());
        self.figures.add("etcd_rss_kib_total", etcd_rss);
        self.resources = rows;
    }

    /// `convergence.txt`: `label node published_ms observed_ms` per sample.
    pub fn convergence_text(&self) -> String {
        self.samples.iter().map(|s| format!("{} n{} {:.3} {:.3}\n", s.label, s.node + 1, s.published_ms, s.observed_ms)).collect()
    }

    /// `resources.txt`: a header and `node rss_kib threads fds` per node.
    pub fn resources_text(&self) -> String {
        let rows: String = self.resources.iter().map(|r| format!("{} {} {} {}\n", r.node + 1, r.rss_kib, r.threads, r.fds)).collect();
        format!("# node rss_kib threads fds\n{rows}")
    }
}

fn show0(v: Option<f64>) -> String {
    v.map_or("NA".into(), |x| format!("{x:.0}"))
}

fn show(v: Option<f64>) -> String {
    v.map_or("NA".into(), |x| format!("{x:.1}"))
}

fn node_list(fleet: &Fleet, nodes: &[usize]) -> Vec<(usize, String)> {
    nodes.iter().map(|&i| (i, fleet.nodes[i].ns.clone())).collect()
}

/// The time of the last lease grant (claim or renewal) in an encapd log.
pub fn last_lease_grant(log: &str) -> Option<f64> {
    log.lines()
        .filter(|l| l.contains("this node holds") || (l.contains("lease on") && l.contains("renewed")))
        .filter_map(|l| converge::parse_log_time(l.split_whitespace().next()?))
        .next_back()
}

/// The fields of `/proc/<pid>/status` we report.
fn proc_status(pid: i32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}
