//! `encapd-bench`: encapd's benchmark and its measurement tools.
//!
//! - `encapd-bench run [...]`: the benchmark (bench/README.md), and the
//!   experiments `trace-rtt`, `wakeups`, `profile`, `soak`,
//!   `etcd-propagation`; `encapd-bench modes` lists the mode registry.
//! - `encapd-bench latency server --bind ADDR:PORT [--hold-ms N] [--stall-ms N]`:
//!   UDP echo responder; `--hold-ms` delays every reply by N ms without
//!   holding up other requests (a known delay), `--stall-ms` stops it
//!   reading once (a known stall), both for testing the client.
//! - `encapd-bench latency client --target ADDR:PORT --rate PPS --duration SECS`:
//!   open-loop UDP request/response latency probe, corrected for
//!   coordinated omission (see `latency.rs`). Writes `PREFIX.hgrm`
//!   (HdrHistogram percentile distribution, µs) and `PREFIX.json`.
//! - `encapd-bench report DIR`: render `DIR/report.md` and its charts.
//! - `encapd-bench readme [RUN] [--update README.md]`: the README's
//!   performance block, from RUN or the newest committed full run.
//! - `encapd-bench fleet [--nodes N] [--out DIR] COMMAND...`: the simulated
//!   fleet (N nodes, etcd, pods): mesh, join/leave, rolling upgrade,
//!   resources (see `fleet.rs`).
//! - `encapd-bench demo [--io ENGINE] [--backend udp|vxlan]`: the two-node
//!   demo `scripts/demo.sh` runs (see `demo.rs`).
//!
//! Exit codes: 0 success, 1 runtime failure (for `readme --check`: the
//! README differs; for `soak`: FAIL), 2 usage; `run` adds 3 (incomplete)
//! and 130 (interrupted).

#![deny(unsafe_code)]

mod demo;
mod fleet;
mod latency;
mod sys;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use encapd_bench::report::{self, readme};

use crate::latency::{ClientConfig, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "encapd-bench",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("ENCAPD_GIT_COMMIT"), ")"),
    about = "Measurement tools for encapd benchmarks: latency probe, reports, README figures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open-loop UDP request/response latency probe.
    Latency {
        #[command(subcommand)]
        role: Role,
    },
    /// Benchmark encapd against routing and kernel VXLAN, every mode on every underlay
    /// profile, side by side (bench/README.md).
    Run(encapd_bench::run::RunArgs),
    /// List the modes `run --modes` takes (the registry, tests/testbed/src/mode.rs).
    Modes,
    /// One round trip, stage by stage: sparse sockperf ping-pongs under `perf record`.
    TraceRtt(encapd_bench::experiments::trace_rtt::TraceRttArgs),
    /// Where a request waits: a sockperf ping-pong under `perf sched record`.
    Wakeups(encapd_bench::experiments::wakeups::WakeupsArgs),
    /// Where the time of bulk TCP goes: one iperf3 stream under `perf record -a -g`.
    Profile(encapd_bench::experiments::profile::ProfileArgs),
    /// Hours of load while nodeA's peers file keeps changing: leaks, decay (exit 1 on FAIL).
    Soak(encapd_bench::experiments::soak::SoakArgs),
    /// The etcd control plane: put-to-table latency and start-up with many leases.
    EtcdPropagation(encapd_bench::experiments::etcd::EtcdArgs),
    /// Render DIR/report.md and its SVG charts from a run directory.
    Report {
        /// The run directory (holds results.csv).
        dir: PathBuf,
    },
    /// Print the README's performance block (between <!-- perf:begin --> and <!-- perf:end -->).
    ///
    /// From RUN, or from the newest committed full run under bench/runs/ of the
    /// repository around the current directory (bench/README.md defines it).
    Readme {
        /// A run directory (default: the newest committed full run).
        run: Option<PathBuf>,
        /// Write the block into this README instead of printing it.
        #[arg(long, value_name = "README", conflicts_with = "check")]
        update: Option<PathBuf>,
        /// Exit 1 when this README's block differs from the generated one.
        #[arg(long, value_name = "README")]
        check: Option<PathBuf>,
    },
    /// The simulated fleet: N encapd nodes sharing an etcd cluster, a pod
    /// per node; full mesh, join/leave convergence, a rolling --takeover
    /// upgrade under counted traffic, resources. As root.
    ///
    /// Figures on stdout as `FIGURE key=value`, then `RESULT pass` or
    /// `RESULT fail: ...`; exit status 0 on pass, 1 on fail.
    Fleet(fleet::FleetArgs),
    /// Two nodes, a CNI pod on each, ping and a 10 s iperf3 between them,
    /// the counters; then everything is torn down. As root (what
    /// scripts/demo.sh runs after installing and building).
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Echo every request back to its sender.
    Server {
        /// Address to bind, e.g. 100.96.2.3:7000 (port 0: any; the bound address is printed).
        #[arg(long, value_name = "ADDR:PORT")]
        bind: SocketAddr,
        /// Delay every reply by this many milliseconds (other requests are not held up).
        #[arg(long, value_name = "N", default_value_t = 0)]
        hold_ms: u64,
        /// Stop reading once for this many milliseconds (requests queue meanwhile).
        #[arg(long, value_name = "N")]
        stall_ms: Option<u64>,
        /// When to stall: seconds after the first request.
        #[arg(long, value_name = "SECS", default_value_t = 1.0, requires = "stall_ms")]
        stall_after: f64,
        /// Exit after this many seconds (default: run until killed).
        #[arg(long, value_name = "SECS")]
        exit_after: Option<f64>,
    },
    /// Send requests at a fixed rate and record round-trip times.
    Client {
        /// The server's address.
        #[arg(long, value_name = "ADDR:PORT")]
        target: SocketAddr,
        /// Requests per second (the offered rate; requests are not held back by late replies).
        #[arg(long, value_name = "PPS")]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, value_name = "SECS")]
        duration: f64,
        /// UDP payload bytes per request (at least 24).
        #[arg(long, value_name = "BYTES", default_value_t = 64)]
        size: usize,
        /// Write PREFIX.hgrm and PREFIX.json.
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
        /// Print the JSON summary on stdout (default: one human-readable line).
        #[arg(long)]
        json: bool,
        /// Seconds after the last request during which replies still count.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        grace: f64,
        /// Measure the uncorrected way, for comparison: one request in
        /// flight, timed from its actual send (coordinated omission).
        #[arg(long)]
        closed_loop: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Latency { role } => return latency(role),
        Command::Run(args) => return ExitCode::from(encapd_bench::run::run(args) as u8),
        Command::Modes => {
            print!("{}", encapd_testbed::mode::markdown_table());
            Ok(())
        }
        Command::TraceRtt(a) => encapd_bench::experiments::trace_rtt::main(a).map_err(|e| anyhow!(e)),
        Command::Wakeups(a) => encapd_bench::experiments::wakeups::main(a).map_err(|e| anyhow!(e)),
        Command::Profile(a) => encapd_bench::experiments::profile::main(a).map_err(|e| anyhow!(e)),
        Command::Soak(a) => match encapd_bench::experiments::soak::main(a) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(anyhow!(e)),
        },
        Command::EtcdPropagation(a) => encapd_bench::experiments::etcd::main(a).map_err(|e| anyhow!(e)),
        Command::Report { dir } => report::render(&dir).map(|s| println!("{}", s.report.display())).map_err(|e| anyhow!("{e}")),
        Command::Readme { run, update, check } => readme_command(run.as_deref(), update.as_deref(), check.as_deref()),
        Command::Fleet(args) => match fleet::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn latency(role: Role) -> ExitCode {
    let result = match role {
        Role::Server { bind, hold_ms, stall_ms, stall_after, exit_after } => {
            if !(stall_after.is_finite() && stall_after >= 0.0) || exit_after.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
                eprintln!("error: --stall-after and --exit-after take a number of seconds >= 0");
                return ExitCode::from(2);
            }
            let cfg = ServerConfig {
                bind,
                hold: Duration::from_millis(hold_ms),
                exit_after: exit_after.map(Duration::from_secs_f64),
                stall: stall_ms.map(|ms| (Duration::from_millis(ms), Duration::from_secs_f64(stall_after))),
            };
            latency::server(&cfg)
        }
        Role::Client { target, rate, duration, size, out, json, grace, closed_loop } => {
            let cfg = ClientConfig { target, rate, duration, size, grace, closed_loop };
            if let Err(e) = cfg.validate() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            latency::client(&cfg, out.as_deref(), json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The repository around the current directory (git's top level, else the
/// current directory).
fn repo_root() -> Result<PathBuf> {
    let cwd = std::env::current_dir()?;
    let out = std::process::Command::new("git").args(["rev-parse", "--show-toplevel"]).output();
    match out {
        Ok(o) if o.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
        _ => Ok(cwd),
    }
}

fn readme_command(run: Option<&Path>, update: Option<&Path>, check: Option<&Path>) -> Result<()> {
    let repo = repo_root()?;
    let run_dir = match run {
        // As given, relative to the repository when it lies inside it, so
        // that the README's links work.
        Some(dir) => {
            let abs = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
            abs.strip_prefix(std::fs::canonicalize(&repo)?).map(Path::to_path_buf).unwrap_or(abs)
        }
        None => readme::newest_committed_run(&repo).map_err(|e| anyhow!(e))?,
    };
    let block = readme::block(&repo, &run_dir).map_err(|e| anyhow!("{e}"))?;
    let Some(file) = update.or(check) else {
        print!("{block}");
        return Ok(());
    };
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let replaced =
        readme::replace(&text, &block).ok_or_else(|| anyhow!("{}: no {} ... {} block", file.display(), readme::BEGIN, readme::END))?;
    if update.is_some() {
        if replaced != text {
            std::fs::write(file, replaced).with_context(|| format!("write {}", file.display()))?;
        }
        eprintln!("{}: performance block from {}", file.display(), run_dir.display());
        Ok(())
    } else if replaced == text {
        Ok(())
    } else {
        Err(anyhow!(
            "{}: the performance block differs from {}; run `encapd-bench readme --update {}`",
            file.display(),
            run_dir.display(),
            file.display()
        ))
    }
}
