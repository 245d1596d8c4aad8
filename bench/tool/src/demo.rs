//! `encapd-bench demo`: two nodes in network namespaces, encapd on both, a
//! pod attached to each as a Kubernetes node does (flannel's subnet.env ->
//! the CNI bridge plugin + host-local), ping and a 10 s iperf3 between the
//! pods, the counters, then everything torn down. What `scripts/demo.sh`
//! runs once it has installed the packages and built the binaries.
//!
//! ```text
//! podA ── cni0 nodeA [encapd] 198.18.0.1 ══ UDP 8285 (udp) / 8472 (vxlan) ══ 198.18.0.2 [encapd] nodeB cni0 ── podB
//! ```
//!
//! Built on the testbed's fleet (`encapd_testbed::fleet`) with two nodes,
//! not on its two-node `Topology`: the demo's pods are attached by the CNI
//! plugins from the subnet.env encapd writes, which is what the fleet does
//! (the topology wires fixed containers), and the fleet runs both backends.
//! The nodes meet on a bridge in a third namespace. Everything is removed
//! when the fleet drops, on every exit path (Ctrl-C included: the signal is
//! caught and the demo stops at the next step).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use encapd_testbed::counters::{metric_sum, scrape};
use encapd_testbed::fleet::{Fleet, FleetOptions, Kind, Pod};
use encapd_testbed::netns::ns_exec;
use encapd_testbed::{TUN, Underlay, encapd_bin};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Io {
    Uring,
    Mmsg,
    Classic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Udp,
    Vxlan,
}

/// `[dataplane] kernel_path` of both nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelPath {
    /// The workers carry every packet (encapd's default).
    Off,
    /// The eBPF programs carry the pods' IPv4 and IPv6; start-up fails where they cannot attach.
    Tc,
    /// `tc` where this kernel can run it, else the workers, with a log line that says why.
    Auto,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The I/O engine of both nodes.
    #[arg(long, value_enum, default_value = "uring")]
    io: Io,
    /// flannel's backend: udp (port 8285) or vxlan (port 8472).
    #[arg(long, value_enum, default_value = "udp")]
    backend: Backend,
    /// Workers per node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
    /// Underlay profile (veth or wire; default $ENCAPD_UNDERLAY, else veth).
    #[arg(long)]
    underlay: Option<Underlay>,
    /// The kernel path on both nodes: the demo shows who carried each step's packets.
    #[arg(long, value_enum, default_value = "auto")]
    kernel_path: KernelPath,
}

/// Packets nodeA sent to nodeB so far: (by the kernel path, by the workers).
fn sent_by(fleet: &Fleet) -> (f64, f64) {
    let Some(text) = scrape(&fleet.nodes[0].ns) else { return (0.0, 0.0) };
    (metric_sum(&text, "encapd_kernel_packets_total", &[("direction", "egress")]), metric_sum(&text, "encapd_tx_packets_total", &[]))
}

/// One line: who carried the packets nodeA sent since `before`.
fn show_carried(fleet: &Fleet, before: (f64, f64)) -> (f64, f64) {
    let now = sent_by(fleet);
    println!("carried from nodeA: {:.0} packets by the kernel path, {:.0} by the workers", now.0 - before.0, now.1 - before.1);
    now
}

fn section(title: &str) {
    // Bold only on a terminal.
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        println!("\n\x1b[1m== {title}\x1b[0m");
    } else {
        println!("\n== {title}");
    }
}

/// Runs the demo; `Ok(())` when every step worked.
pub fn run(args: DemoArgs) -> Result<()> {
    if !encapd_testbed::is_root() {
        bail!("the demo needs root (it creates network namespaces): sudo scripts/demo.sh");
    }
    for tool in ["ip", "ping", "iperf3", "bridge"] {
        if !encapd_testbed::env::in_path(tool) {
            bail!("`{tool}` is not installed (scripts/demo.sh installs what the demo needs)");
        }
    }
    let bin = encapd_bin();
    if !bin.is_file() {
        bail!("no encapd binary at {} (cargo build --release, or set ENCAPD_BIN)", bin.display());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    // The fleet is dropped (encapd stopped, namespaces removed) when this
    // closure returns or unwinds.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| demo(&args, &bin, &stop))) {
        Ok(r) => {
            if r.is_ok() {
                println!("namespaces removed");
            }
            r
        }
        Err(e) => {
            let what = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            Err(anyhow!("the demo failed: {what}"))
        }
    }
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) { Err(anyhow!("interrupted")) } else { Ok(()) }
}

fn demo(args: &DemoArgs, bin: &Path, stop: &AtomicBool) -> Result<()> {
    let engine = match args.io {
        Io::Uring => "uring",
        Io::Mmsg => "mmsg",
        Io::Classic => "classic",
    };
    let backend = match args.backend {
        Backend::Udp => "udp",
        Backend::Vxlan => "vxlan",
    };
    let kind = Kind::Encapd { backend, engine };
    let mut options = FleetOptions::new(&[kind, kind], args.workers as usize);
    options.underlay = args.underlay.unwrap_or_else(Underlay::from_env);
    let kernel_path = match args.kernel_path {
        KernelPath::Off => "off",
        KernelPath::Tc => "tc",
        KernelPath::Auto => "auto",
    };
    options.dataplane_extra = format!("kernel_path = \"{kernel_path}\"\n");

    section(&format!(
        "encapd (backend = {backend}, io = {engine}, workers = {}, kernel_path = {kernel_path}) on nodeA and nodeB",
        args.workers
    ));
    let mut fleet = Fleet::with(options);
    let (a, b) = (&fleet.nodes[0], &fleet.nodes[1]);
    println!("namespaces: nodeA {}, nodeB {}, underlay bridge {}", a.ns, b.ns, fleet.underlay);
    println!("nodeA {} == underlay ({}) == {} nodeB", a.ip, fleet.options().underlay, b.ip);
    let conf = fleet.dir.path().join("node0");
    for file in ["encapd.toml", "peers.toml"] {
        println!("--- nodeA {file}");
        print!("{}", std::fs::read_to_string(conf.join(file)).unwrap_or_default());
    }
    for (i, name) in [(0, "nodeA"), (1, "nodeB")] {
        let config = fleet.dir.path().join(format!("node{i}/encapd.toml"));
        let o =
            ns_exec(&fleet.nodes[i].ns, &[&bin.to_string_lossy(), "check", "--config", &config.to_string_lossy()], Duration::from_secs(10));
        if !o.ok() {
            bail!("encapd check --config {} ({name}) rejected the configuration: {}", config.display(), o.text());
        }
    }
    println!("encapd running: nodeA pid {}, nodeB pid {}", fleet.encapd_pid(0).unwrap_or(0), fleet.encapd_pid(1).unwrap_or(0));
    let ns_a = fleet.nodes[0].ns.clone();
    for cmd in [&["-br", "addr", "show", "dev", TUN][..], &["route", "show", "dev", TUN]] {
        let o = ns_exec(&ns_a, &[&["ip"][..], cmd].concat(), Duration::from_secs(5));
        o.stdout.lines().for_each(|l| println!("nodeA: {l}"));
    }
    interrupted(stop)?;

    section("pods, attached with the CNI bridge plugin from encapd's subnet.env");
    println!("--- subnet.env (written by encapd on nodeA)");
    print!("{}", std::fs::read_to_string(&fleet.nodes[0].subnet_env).unwrap_or_default());
    let pod_a = fleet.add_pod(0);
    let pod_b = fleet.add_pod(1);
    let cni0 = ns_exec(&ns_a, &["ip", "-br", "-4", "addr", "show", "dev", "cni0"], Duration::from_secs(5));
    println!(
        "podA {} on nodeA (cni0 {}), podB {} on nodeB",
        pod_a.addrs.ip,
        cni0.stdout.split_whitespace().nth(2).unwrap_or("?"),
        pod_b.addrs.ip
    );
    ns_exec(&pod_a.ns, &["ip", "route"], Duration::from_secs(5)).stdout.lines().for_each(|l| println!("podA route: {l}"));
    interrupted(stop)?;

    let mut carried = sent_by(&fleet);
    section("ping podA -> podB (IPv4)");
    let ping4 = ns_exec(&pod_a.ns, &["ping", "-n", "-c", "5", "-W", "2", &pod_b.addrs.ip.to_string()], Duration::from_secs(20));
    print!("{}", ping4.stdout);
    if !ping4.ok() {
        show_logs(&fleet, 30);
        bail!("IPv4 ping through encapd failed");
    }
    carried = show_carried(&fleet, carried);
    let ip6_b = pod_b.addrs.ip6.ok_or_else(|| anyhow!("podB has no IPv6 address"))?;
    section("ping podA -> podB (IPv6)");
    let ping6 = ns_exec(&pod_a.ns, &["ping", "-6", "-n", "-c", "3", "-W", "2", &ip6_b.to_string()], Duration::from_secs(15));
    print!("{}", ping6.stdout);
    if !ping6.ok() {
        show_logs(&fleet, 30);
        bail!("IPv6 ping through encapd failed");
    }
    carried = show_carried(&fleet, carried);
    interrupted(stop)?;

    section("iperf3 TCP podA -> podB, 10 s");
    let iperf = iperf3(&pod_a, &pod_b)?;
    print!("{iperf}");
    let iperf_carried = show_carried(&fleet, carried);
    let iperf_carried = (iperf_carried.0 - carried.0, iperf_carried.1 - carried.1);

    section("counters (SIGUSR1)");
    for i in 0..2 {
        fleet.encapd(i).counters();
    }
    show_logs(&fleet, 15);

    section("summary");
    let rtt = |o: &str| o.lines().find_map(|l| l.strip_prefix("rtt ").and_then(|r| r.split_once(" = ")).map(|(_, v)| v.to_owned()));
    let receiver = iperf.lines().rfind(|l| l.contains("receiver"));
    let sender = iperf.lines().rfind(|l| l.contains("sender"));
    let rate = |l: &str| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.iter().position(|x| x.ends_with("bits/sec")).map(|i| format!("{} {}", w[i - 1], w[i]))
    };
    let retr = sender.and_then(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 10).then(|| w[w.len() - 2].to_owned())
    });
    println!("IPv4 ping rtt min/avg/max/mdev: {}", rtt(&ping4.stdout).unwrap_or("n/a".into()));
    println!("IPv6 ping rtt min/avg/max/mdev: {}", rtt(&ping6.stdout).unwrap_or("n/a".into()));
    println!(
        "iperf3 TCP throughput (receiver): {} (retransmits: {})",
        receiver.and_then(rate).unwrap_or("n/a".into()),
        retr.unwrap_or("n/a".into())
    );
    let log_a = std::fs::read_to_string(fleet.log_path(0)).unwrap_or_default();
    let kernel = log_a
        .lines()
        .find(|l| l.contains("kernel path"))
        .map(|l| l.split_once("kernel path").map_or(l, |(_, r)| r).trim_start_matches([':', ' ']).to_owned());
    match kernel {
        Some(line) if line.starts_with("attached") => println!(
            "kernel path on nodeA: attached; it sent {:.0} of the iperf3 run's {:.0} packets to nodeB",
            iperf_carried.0,
            iperf_carried.0 + iperf_carried.1
        ),
        Some(line) => println!("kernel path on nodeA: {line}"),
        None => println!("kernel path on nodeA: off (--kernel-path)"),
    }

    section("teardown");
    fleet.del_pod(&pod_a);
    fleet.del_pod(&pod_b);
    println!("pods deleted (CNI DEL)");
    let clean = (0..2).map(|i| fleet.stop_encapd(i)).all(|st| st.success());
    println!("encapd stopped (clean exit: {})", if clean { "yes" } else { "no" });
    drop(fleet);
    if !clean {
        bail!("encapd did not exit cleanly on SIGTERM");
    }
    Ok(())
}

/// A 10 s iperf3 from `from` to `to`; its client output.
fn iperf3(from: &Pod, to: &Pod) -> Result<String> {
    let to_ip = to.addrs.ip.to_string();
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &to.ns, "iperf3", "-s", "-1", "-B", &to_ip])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the iperf3 server")?;
    let listening = encapd_testbed::wait_for(Duration::from_secs(5), || {
        let o = ns_exec(&to.ns, &["ss", "-Htln", "sport = :5201"], Duration::from_secs(5));
        o.stdout.contains("5201").then_some(())
    });
    let client =
        listening.map(|()| ns_exec(&from.ns, &["iperf3", "-c", &to_ip, "-t", "10", "--connect-timeout", "3000"], Duration::from_secs(30)));
    // Stops the server by pid if it is still there (it exits after one test).
    let _ = encapd_testbed::process::stop_child(&mut server, Duration::from_secs(2));
    let client = client.ok_or_else(|| anyhow!("the iperf3 server did not start in {}", to.ns))?;
    if !client.ok() {
        bail!("iperf3 failed: {}", client.text());
    }
    Ok(client.stdout)
}

fn show_logs(fleet: &Fleet, lines: usize) {
    for (i, name) in [(0, "nodeA"), (1, "nodeB")] {
        println!("--- {name} encapd log (tail)");
        let text = std::fs::read_to_string(fleet.log_path(i)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].iter().for_each(|l| println!("{l}"));
    }
}
