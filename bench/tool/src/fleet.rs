//! `encapd-bench fleet`: the simulated fleet (`encapd_testbed::cluster`)
//! from the command line: N encapd nodes on one bridged underlay sharing a
//! 3-member etcd cluster, a pod per node, and the measurements made on it.
//! As root; everything lives in network namespaces the testbed creates and
//! removes on every exit path (Ctrl-C included: the signal is caught and
//! the fleet dropped).
//!
//! Output: progress on stderr; figures on stdout as `FIGURE key=value`
//! lines and a last line `RESULT pass` or `RESULT fail: <what failed>`.
//! With `--out DIR`: figures.txt (key=value), convergence.txt (every
//! join/leave sample: event node published_ms observed_ms), resources.txt
//! (per node), env.txt (commit, uncommitted files, the binary's sha256 and
//! the commit it was built from, machine, load), output.txt (what stdout
//! got) and logs/. Under bench/runs/ only from a clean checkout with
//! encapd built from HEAD.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use encapd_testbed::cluster::{Cluster, ClusterOptions, Step};
use encapd_testbed::{Underlay, encapd_bin};

use encapd_bench::provenance;

/// What `encapd-bench fleet` does, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FleetCommand {
    /// Bring the fleet up, check it, print its namespaces and wait for Ctrl-C.
    Up,
    /// Full-mesh reachability: ICMP echo from every pod to every other pod.
    Check,
    /// Join/leave rounds and one lease expiry, timed on every other node.
    JoinLeave,
    /// Every node in turn replaced with `--takeover` under counted traffic.
    RollingUpgrade,
    /// RSS, threads and fds of every encapd (and etcd).
    Resources,
    /// check, join-leave, rolling-upgrade, resources.
    All,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// What to run, in order, on one fleet brought up once.
    #[arg(value_enum, required = true)]
    commands: Vec<FleetCommand>,
    /// Fleet size (2 to 200).
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Join/leave rounds (at most nodes - 1).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Lease TTL (s) of the node whose lease expires (at least 10).
    #[arg(long, value_name = "S", default_value_t = 15)]
    lease_ttl: u64,
    /// UDP streams sent by every pod during the upgrade.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Datagrams per second per stream.
    #[arg(long, default_value_t = 100)]
    udp_rate: u32,
    /// TCP transfers during the upgrade.
    #[arg(long, default_value_t = 3)]
    tcp: usize,
    /// Bytes per second per TCP transfer.
    #[arg(long, default_value_t = 2_000_000)]
    tcp_rate: u64,
    /// The binary nodes are upgraded to (default: the same one).
    #[arg(long, value_name = "PATH")]
    upgrade_bin: Option<PathBuf>,
    /// Underlay profile of every node's link (veth or wire; default
    /// $ENCAPD_UNDERLAY, else veth).
    #[arg(long)]
    underlay: Option<Underlay>,
    /// Also write figures, samples, provenance and logs to DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Runs the fleet; the exit code is 0 on pass, 1 on fail.
pub fn run(args: FleetArgs) -> Result<bool> {
    let mut opts = ClusterOptions::new(args.nodes);
    opts.rounds = args.rounds;
    opts.lease_ttl = args.lease_ttl;
    opts.streams = args.streams;
    opts.udp_rate = args.udp_rate;
    opts.tcp = args.tcp;
    opts.tcp_rate = args.tcp_rate;
    opts.upgrade_bin = args.upgrade_bin.as_deref().map(std::fs::canonicalize).transpose().context("--upgrade-bin")?;
    opts.underlay = args.underlay.unwrap_or_else(Underlay::from_env);
    opts.echo = true;
    opts.validate().map_err(|e| anyhow!(e))?;
    if !encapd_testbed::is_root() {
        bail!("encapd-bench fleet needs root (it creates network namespaces)");
    }
    let bin = std::fs::canonicalize(encapd_bin()).with_context(|| format!("no encapd binary at {}", encapd_bin().display()))?;
    let mut bins = vec![("encapd", bin.clone())];
    if let Some(up) = &opts.upgrade_bin
        && *up != bin
    {
        bins.push(("encapd_upgrade", up.clone()));
    }
    let out = match &args.out {
        Some(dir) => {
            if provenance::under_runs(dir)? {
                provenance::require_clean(&bins)?;
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(std::fs::canonicalize(dir)?)
        }
        None => None,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, interrupted.clone()).context("installing a signal handler")?;
    }
    let started = Instant::now();
    let mut env = provenance::env_lines(&bins);
    env.insert(0, format!("started={}", provenance::utc_now()));
    env.insert(1, format!("invocation=encapd-bench fleet {}", std::env::args().skip(2).collect::<Vec<_>>().join(" ")));
    env.extend([
        format!("nodes={}", opts.nodes),
        format!("rounds={}", opts.rounds),
        format!("lease_ttl_short={}", opts.lease_ttl),
        format!("udp_streams_per_pod={}", opts.streams),
        format!("udp_rate={}", opts.udp_rate),
        format!("tcp_transfers={}", opts.tcp),
        format!("tcp_rate={}", opts.tcp_rate),
        format!("underlay={}", opts.underlay),
        format!("etcd={}", provenance::first_line("etcd", &["--version"])),
    ]);

    let steps: Vec<FleetCommand> = args.commands.clone();
    // The fleet is dropped (every process stopped, every namespace
    // removed) when this closure returns or unwinds.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = Cluster::up(opts.clone());
        for step in &steps {
            if interrupted.load(Ordering::SeqCst) {
                c.figures.fail("interrupted");
                break;
            }
            match step {
                FleetCommand::Up => up(&mut c, &interrupted),
                FleetCommand::Check => c.run(&[Step::Check]),
                FleetCommand::JoinLeave => c.run(&[Step::JoinLeave]),
                FleetCommand::RollingUpgrade => c.run(&[Step::RollingUpgrade]),
                FleetCommand::Resources => c.run(&[Step::Resources]),
                FleetCommand::All => c.run(&Step::ALL),
            }
        }
        c.figures.add("elapsed_s", started.elapsed().as_secs());
        if let Some(dir) = &out {
            write_out(dir, &c).expect("writing the result directory");
        }
        (c.figures.passed(), c.figures.failures().to_vec(), c.figures.to_text())
    }));
    let (passed, failures, figures) = match outcome {
        Ok(r) => r,
        Err(e) => {
            let what = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            (false, vec![format!("the fleet failed: {what}")], String::new())
        }
    };
    let result = if passed { "RESULT pass".to_owned() } else { format!("RESULT fail: {}", failures.join("; ")) };
    println!("{result}");
    if let Some(dir) = &out {
        env.extend([
            format!("elapsed_s={}", started.elapsed().as_secs()),
            format!("loadavg_end={}", provenance::loadavg()),
            format!("result={}", if passed { "pass" } else { "fail" }),
        ]);
        std::fs::write(dir.join("env.txt"), env.join("\n") + "\n")?;
        let output: String = figures.lines().map(|l| format!("FIGURE {l}\n")).collect();
        std::fs::write(dir.join("output.txt"), format!("{output}{result}\n"))?;
        eprintln!("figures in {}", dir.join("figures.txt").display());
    }
    Ok(passed)
}

/// Checks the mesh, prints where everything is, waits for Ctrl-C.
fn up(c: &mut Cluster, interrupted: &AtomicBool) {
    c.run(&[Step::Check]);
    let f = &c.fleet;
    println!("fleet up: underlay namespace {} (etcd on 198.18.0.254:2379, 22379, 32379)", f.underlay);
    for (i, n) in f.nodes.iter().enumerate() {
        let pod = &c.pods[i];
        println!(
            "  node {i}: {} {} {} encapd pid {}, pod {} {}",
            n.ns,
            n.ip,
            n.subnet,
            f.encapd_pid(i).map_or("-".into(), |p| p.to_string()),
            pod.ns,
            pod.addrs.ip
        );
    }
    println!("work directory: {}; Ctrl-C tears everything down", f.dir.path().display());
    let _ = std::io::stdout().flush();
    while !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_out(dir: &Path, c: &Cluster) -> Result<()> {
    std::fs::write(dir.join("figures.txt"), c.figures.to_text())?;
    if !c.samples.is_empty() {
        std::fs::write(dir.join("convergence.txt"), c.convergence_text())?;
    }
    if !c.resources.is_empty() {
        std::fs::write(dir.join("resources.txt"), c.resources_text())?;
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    for i in 0..c.fleet.nodes.len() {
        let _ = std::fs::copy(c.fleet.log_path(i), logs.join(format!("n{}-encapd.log", i + 1)));
    }
    for i in [0, c.fleet.nodes.len() - 1] {
        let _ = std::fs::copy(c.fleet.dir.path().join(format!("node{i}/encapd.toml")), logs.join(format!("n{}-encapd.toml", i + 1)));
    }
    if let Some(etcd) = &c.fleet.etcd {
        std::fs::write(logs.join("etcd.log"), etcd.logs())?;
    }
    Ok(())
}
