//! `encapd-bench soak`: sustained load for a long time while nodeA's
//! peers file keeps changing; watches both daemons for leaks and for
//! throughput decay. For people and nightly jobs, not a CI test.
//!
//! Until the time is up: rewrite nodeA's peers file (a sibling written,
//! then renamed over it, as config managers do), alternately with and
//! without a peer 100.96.3.0/24 at 198.18.0.2; run `iperf3 -u -b RATE -l
//! 1400 -t SLICE` from ctrA to ctrB; then sample RSS, open fds and threads
//! of both encapd processes and the kernel counters where UDP load is
//! lost (ctrA's veth, nodeA's TUN queue, nodeB's and ctrB's UDP receive
//! buffers). Writes `soak.csv` (one row per slice), `summary.txt`,
//! `provenance.txt`, the encapd logs and the iperf3 JSON.
//!
//! The verdict is FAIL if an encapd died or did not stop cleanly, RSS
//! grew by more than 16 MiB after the first slice, the fd or thread count
//! changed, a peers-file change was rejected, nodeA published no table
//! although its peers file changed, or the last window's throughput
//! (5 minutes, or half the run when shorter than 10 minutes) is below
//! 90 % of the first window's. Exit status 0 on PASS, 1 on FAIL or when
//! it cannot run, 2 on bad usage. A result under `bench/runs/` follows the
//! same provenance rules as `encapd-bench run`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use encapd_testbed::bed::peers_file;
use encapd_testbed::counters::parse_counters;
use encapd_testbed::mode::{Backend, Mode};
use encapd_testbed::wiring::{CTR_B, Node, TUN};

use super::{BenchArgs, bed, enter, setup};
use crate::clock::Utc;
use crate::exec::{Background, argv, interrupted, run_capture, run_to_files, wait_port};
use crate::run::{info, provenance, warn};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long to drive load, minutes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub minutes: u64,
    /// The encapd mode (the registry: uring, mmsg, classic, ...).
    #[arg(long, default_value = "uring")]
    pub mode: String,
    /// Result directory (default bench/runs/<UTC YYYY-MM-DD-HHMM>-soak-<host>; there only from a
    /// clean checkout with binaries built from HEAD).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// iperf3 UDP offered rate, iperf3 syntax.
    #[arg(long, default_value = "500M", value_parser = parse_rate)]
    pub rate: String,
    /// Length of one iperf3 run, the sampling period, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub slice: u32,
    /// encapd [dataplane] workers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub workers: u64,
    #[command(flatten)]
    pub bench: BenchArgs,
}

fn parse_rate(s: &str) -> Result<String, String> {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
    let ok = !digits.is_empty() && digits.parse::<f64>().is_ok_and(|v| v >= 0.0) && s.len() - digits.len() <= 1;
    if ok { Ok(s.to_owned()) } else { Err("--rate must look like 500M".into()) }
}

/// One row of soak.csv.
#[derive(Debug, Clone, Default)]
struct Sample {
    slice: u32,
    t_start: u64,
    t_end: u64,
    peer_y: bool,
    /// Per node (A, B): RSS KiB, fds, threads.
    proc: [Option<(u64, u64, u64)>; 2],
    mbit_s: Option<f64>,
    loss_pct: Option<f64>,
    /// ctrA veth tx_dropped, nodeA TUN tx_dropped, nodeB UDP RcvbufErrors, ctrB UDP RcvbufErrors.
    drops: [Option<u64>; 4],
}

const HEADER: &str = "slice,t_start_s,t_end_s,peer_y,rss_a_kib,fds_a,threads_a,rss_b_kib,fds_b,threads_b,mbit_s,loss_pct,\
ctra_veth_tx_dropped,nodea_tun_tx_dropped,nodeb_udp_rcvbuf_errors,ctrb_udp_rcvbuf_errors";

impl Sample {
    fn csv(&self) -> String {
        let o = |v: Option<u64>| v.map_or_else(|| "NA".into(), |v| v.to_string());
        let p = |n: usize| match self.proc[n] {
            Some((r, f, t)) => format!("{r},{f},{t}"),
            None => "NA,NA,NA".into(),
        };
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            self.slice,
            self.t_start,
            self.t_end,
            u8::from(self.peer_y),
            p(0),
            p(1),
            self.mbit_s.map_or_else(|| "NA".into(), |v| format!("{v:.1}")),
            self.loss_pct.map_or_else(|| "NA".into(), |v| format!("{v:.3}")),
            o(self.drops[0]),
            o(self.drops[1]),
            o(self.drops[2]),
            o(self.drops[3]),
        )
    }
}

/// RSS (KiB), open fds and threads of `pid` (`None` once it is gone).
fn proc_sample(pid: i32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

/// A file read inside namespace `ns` (`/proc/net` and `/sys/class/net`
/// show the reader's namespace).
fn ns_read(ns: &str, path: &str) -> Option<String> {
    run_capture(Some(ns), &argv(&["cat", path]), Duration::from_secs(5)).ok()
}

/// UDP `RcvbufErrors` of `/proc/net/snmp`.
fn rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next()?, lines.next()?);
    names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == "RcvbufErrors").and_then(|(_, v)| v.parse().ok())
}

/// (Mbit/s delivered, loss %) of a slice's iperf3 JSON, as the receiver
/// counted them.
fn slice_result(json: &str) -> Option<(f64, f64)> {
    let d: serde_json::Value = serde_json::from_str(json).ok()?;
    if d.get("error").is_some() {
        return None;
    }
    let end = &d["end"];
    let rcv = if end["sum_received"].is_object() { &end["sum_received"] } else { &end["sum"] };
    let secs = rcv["seconds"].as_f64().filter(|s| *s > 0.0).unwrap_or(1.0);
    let mbit = match (rcv["packets"].as_f64(), rcv["lost_packets"].as_f64()) {
        (Some(p), Some(l)) => (p - l) * 1400.0 * 8.0 / secs / 1e6,
        _ => rcv["bits_per_second"].as_f64()? / 1e6,
    };
    Some((mbit, rcv["lost_percent"].as_f64()?))
}

pub fn main(a: SoakArgs) -> Result<bool, String> {
    let mode = Mode::named(&a.mode).map_err(|e| e.to_string())?;
    let Some(e) = mode.encapd() else { return Err(format!("--mode {}: a soak runs encapd", mode.name)) };
    let backend = e.backend;
    if backend == Backend::Wireguard {
        // The soak rewrites nodeA's peers file to add and remove a peer;
        // it writes no keys, so a wireguard node would refuse the file.
        return Err(format!("--mode {}: a soak runs the udp or vxlan backend", mode.name));
    }
    let invocation = std::iter::once("encapd-bench soak".to_owned()).chain(std::env::args().skip(2)).collect::<Vec<_>>().join(" ");
    let s = setup(&["@run", "ethtool"], a.bench.no_build)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().split('.').next().unwrap_or("").to_owned();
    let out = match &a.out {
        Some(o) => o.clone(),
        None => crate::run::new_run_dir(&s.repo, &format!("soak-{host}")),
    };
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    if provenance::under_runs(&s.repo, &out)
        && let Err(problems) = provenance::require_clean(&s.repo, &[&s.encapd, &me])
    {
        for p in &problems {
            warn(p);
        }
        return Err("refusing to write under bench/runs/: commit and rebuild, or write an experiment elsewhere with --out /tmp/DIR".into());
    }
    std::fs::create_dir_all(out.join("iperf3")).map_err(|e| format!("{}: {e}", out.display()))?;
    let prov: String = provenance::env_lines(&s.repo, &[("encapd", &s.encapd), ("encapd_bench", &me)])
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    std::fs::write(out.join("provenance.txt"), prov).map_err(|e| e.to_string())?;
    info(&format!("results in {}", out.display()));

    let bed = bed(a.bench.underlay)?;
    let conf = out.join("encapd");
    let active = enter(&bed, &mode, &conf, &s.encapd, a.workers as usize)?;
    let pids = active.encapd_pids();
    info(&format!("encapd ({}, {} workers) running: pids {pids:?}", mode.name, a.workers));
    let peers_a = conf.join("peers-a.toml");
    let rewrite = |with_y: bool| {
        let mut text = peers_file(&mode, Node::A, None);
        if with_y {
            text += "\n[[peer]]\nsubnet = \"100.96.3.0/24\"\npublic_ip = \"198.18.0.2\"\n";
            if backend == Backend::Vxlan {
                text += &format!("vtep_mac = \"{}\"\n", encapd_testbed::kernel_paths::vtep_mac(Node::B));
            }
        }
        let tmp = peers_a.with_extension("toml.new");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &peers_a))
    };
    let drops = || -> [Option<u64>; 4] {
        let n = |s: Option<String>| s.and_then(|t| t.trim().parse().ok());
        [
            n(ns_read(bed.ctr_ns(Node::A), "/sys/class/net/eth0/statistics/tx_dropped")),
            n(ns_read(bed.node_ns(Node::A), &format!("/sys/class/net/{TUN}/statistics/tx_dropped"))),
            ns_read(bed.node_ns(Node::B), "/proc/net/snmp").as_deref().and_then(rcvbuf_errors),
            ns_read(bed.ctr_ns(Node::B), "/proc/net/snmp").as_deref().and_then(rcvbuf_errors),
        ]
    };
    let procs = || [pids.first().and_then(|&p| proc_sample(p)), pids.get(1).and_then(|&p| proc_sample(p))];

    let mut csv = format!(
        "# {invocation}\n# {} host={host} kernel={} cpus={} mode={} workers={} rate={} slice={}s underlay={}\n# encapd {}\n{HEADER}\n",
        Utc::now().iso(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        mode.name,
        a.workers,
        a.rate,
        a.slice,
        a.bench.underlay,
        s.encapd.display()
    );
    let mut samples = vec![Sample { proc: procs(), drops: drops(), ..Sample::default() }];
    csv += &format!("{}\n", samples[0].csv());
    let start = Instant::now();
    let deadline = Duration::from_secs(a.minutes * 60);
    info(&format!("driving iperf3 UDP {} in {} s slices for {} min; peers file rewritten every slice", a.rate, a.slice, a.minutes));
    let mut rewrites = 0;
    let mut n = 0;
    while start.elapsed() < deadline && !interrupted() {
        n += 1;
        let with_y = n % 2 == 1;
        if let Err(e) = rewrite(with_y) {
            warn(&format!("rewriting {}: {e}", peers_a.display()));
        }
        rewrites += 1;
        let t0 = start.elapsed().as_secs();
        let json = out.join(format!("iperf3/slice-{n}.json"));
        run_slice(&bed, n, a.slice, &a.rate, &json, &out);
        let t1 = start.elapsed().as_secs();
        let result = slice_result(&std::fs::read_to_string(&json).unwrap_or_default());
        let sample = Sample {
            slice: n,
            t_start: t0,
            t_end: t1,
            peer_y: with_y,
            proc: procs(),
            mbit_s: result.map(|r| r.0),
            loss_pct: result.map(|r| r.1),
            drops: drops(),
        };
        csv += &format!("{}\n", sample.csv());
        std::fs::write(out.join("soak.csv"), &csv).map_err(|e| e.to_string())?;
        if n % 6 == 0 {
            info(&format!("  {}", sample.csv()));
        }
        let dead = sample.proc.iter().take(pids.len()).any(Option::is_none);
        samples.push(sample);
        if dead {
            warn("an encapd died");
            break;
        }
    }
    std::fs::write(out.join("soak.csv"), &csv).map_err(|e| e.to_string())?;
    info(&format!("load done after {} s, {n} slices, {rewrites} peers-file rewrites", start.elapsed().as_secs()));
    let alive = pids.iter().all(|&p| proc_sample(p).is_some());
    let left = active.leave();
    for (node, log) in &left.logs {
        let _ = std::fs::write(conf.join(format!("{}.log", node.sub())), log);
    }
    let _ = std::fs::copy(&peers_a, out.join("peers-a.final.toml"));
    let summary = summarize(&samples, &left.logs, alive, left.problems.is_empty(), rewrites, a.slice);
    std::fs::write(out.join("summary.txt"), &summary).map_err(|e| e.to_string())?;
    print!("{summary}");
    info(&format!("CSV: {}", out.join("soak.csv").display()));
    Ok(summary.contains("verdict: PASS"))
}

/// One iperf3 UDP run against a fresh one-shot server in ctrB.
fn run_slice(bed: &encapd_testbed::bed::Bed, n: u32, slice: u32, rate: &str, json: &Path, out: &Path) {
    let server_log = out.join(format!("iperf3/slice-{n}.server.log"));
    let server = Background::start(Some(bed.ctr_ns(Node::B)), &argv(&["iperf3", "-s", "-1", "-B", CTR_B, "-p", "5201"]), &server_log);
    let Ok(mut server) = server else {
        let _ = std::fs::write(json, r#"{"error":"server did not start"}"#);
        return;
    };
    if wait_port(bed.ctr_ns(Node::B), 5201, false, Duration::from_secs(5)) {
        let args = argv(&[
            "iperf3",
            "-c",
            CTR_B,
            "-p",
            "5201",
            "--connect-timeout",
            "3000",
            "-J",
            "-u",
            "-b",
            rate,
            "-l",
            "1400",
            "-t",
            &slice.to_string(),
        ]);
        let err = out.join(format!("iperf3/slice-{n}.err"));
        match run_to_files(Some(bed.ctr_ns(Node::A)), &args, json, &err, Duration::from_secs(u64::from(slice) + 30)) {
            Ok(f) if f.success() => {}
            Ok(f) => warn(&format!("slice {n}: iperf3 client {f}")),
            Err(e) => warn(&format!("slice {n}: iperf3 client: {e}")),
        }
        if std::fs::metadata(&err).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&err);
        }
    } else {
        warn(&format!("slice {n}: iperf3 server did not start"));
        let _ = std::fs::write(json, r#"{"error":"server did not start"}"#);
    }
    server.wait_exit(Duration::from_secs(5));
    server.stop(Duration::from_secs(1));
    if std::fs::metadata(&server_log).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&server_log);
    }
}

/// The summary and its verdict (see the module docs).
fn summarize(rows: &[Sample], logs: &[(Node, String)], alive: bool, stopped_cleanly: bool, rewrites: u32, slice: u32) -> String {
    let mut out = String::new();
    let mut fails: Vec<String> = Vec::new();
    let _ = writeln!(out, "soak summary ({} slices of {slice} s, {rewrites} peers-file rewrites)", rows.len().saturating_sub(1));
    for (i, node) in ["nodeA", "nodeB"].iter().enumerate() {
        for (col, unit) in [("rss", "KiB"), ("fds", ""), ("threads", "")] {
            let vals: Vec<f64> = rows
                .iter()
                .filter_map(|r| r.proc[i])
                .map(|(rss, fds, threads)| match col {
                    "rss" => rss as f64,
                    "fds" => fds as f64,
                    _ => threads as f64,
                })
                .collect();
            let Some((&first, &last)) = vals.first().zip(vals.last()) else {
                fails.push(format!("{node}: no {col} samples"));
                continue;
            };
            let max = vals.iter().copied().fold(f64::MIN, f64::max);
            let _ = writeln!(out, "  {node} {col:8} first {first:8.0}  last {last:8.0}  max {max:8.0} {unit}");
            // Growth is judged from the end of the first slice (buffers warmed up).
            let base = if vals.len() > 2 { vals[1] } else { first };
            if col == "rss" && last - base > 16.0 * 1024.0 {
                fails.push(format!("{node} RSS grew by {:.0} KiB after the first slice", last - base));
            }
            if col != "rss" && last != first {
                fails.push(format!("{node} {col} {first:.0} -> {last:.0}"));
            }
        }
    }
    let load: Vec<&Sample> = rows.iter().filter(|r| r.slice != 0).collect();
    let end = load.iter().map(|r| r.t_end).max().unwrap_or(0) as f64;
    let window = if end > 0.0 { (end / 2.0).min(300.0) } else { 0.0 };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let first_w: Vec<f64> = load.iter().filter(|r| r.t_end as f64 <= window).filter_map(|r| r.mbit_s).collect();
    let last_w: Vec<f64> = load.iter().filter(|r| r.t_start as f64 >= end - window).filter_map(|r| r.mbit_s).collect();
    let missing = load.iter().filter(|r| r.mbit_s.is_none()).count();
    if !first_w.is_empty() && !last_w.is_empty() {
        let (f, l) = (mean(&first_w), mean(&last_w));
        let _ = writeln!(
            out,
            "  throughput first {:.1} min {f:8.1} Mbit/s  last {:.1} min {l:8.1} Mbit/s  ({:.1} %)",
            window / 60.0,
            window / 60.0,
            if f > 0.0 { 100.0 * l / f } else { 0.0 }
        );
        if l < 0.9 * f {
            fails.push(format!("throughput fell from {f:.1} to {l:.1} Mbit/s"));
        }
    } else {
        fails.push("no throughput samples".into());
    }
    let loss: Vec<f64> = load.iter().filter_map(|r| r.loss_pct).collect();
    if !loss.is_empty() {
        let (lo, hi) = loss.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let _ = writeln!(out, "  UDP loss per slice: min {lo:.3} %  max {hi:.3} %  mean {:.3} %", mean(&loss));
    }
    let names = [
        "ctrA veth tx_dropped",
        "nodeA TUN tx_dropped (queue overrun)",
        "nodeB UDP RcvbufErrors (encapd sockets)",
        "ctrB UDP RcvbufErrors (iperf3)",
    ];
    let mut where_ = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let vals: Vec<u64> = rows.iter().filter_map(|r| r.drops[k]).collect();
        if vals.len() >= 2 {
            where_.push(format!("{name} +{}", vals[vals.len() - 1].saturating_sub(vals[0])));
        }
    }
    if !where_.is_empty() {
        let _ = writeln!(out, "  where datagrams were dropped: {}", where_.join(", "));
    }
    if missing > 0 {
        fails.push(format!("{missing} slices without an iperf3 result"));
    }
    for (node, log) in logs {
        let name = if *node == Node::A { "nodeA" } else { "nodeB" };
        let c = std::panic::catch_unwind(|| parse_counters(log)).ok().flatten();
        match c {
            None => fails.push(format!("{name}: no final counter summary in its log")),
            Some(c) => {
                let drops: Vec<String> = c.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(
                    out,
                    "  {name} final counters: egress {} pkts, ingress {} pkts, tables published {}, reload failures {}, drops {}",
                    c.egress_pkts,
                    c.ingress_pkts,
                    c.tables_published,
                    c.reload_failures,
                    if drops.is_empty() { "none".into() } else { drops.join(", ") }
                );
                if c.reload_failures > 0 {
                    fails.push(format!("{name}: {} peers-file reloads rejected", c.reload_failures));
                }
                if *node == Node::A && c.tables_published == 0 && rewrites > 1 {
                    fails.push("nodeA published no table although its peers file changed".into());
                }
            }
        }
    }
    if !alive {
        fails.push("an encapd process died during the run".into());
    }
    if !stopped_cleanly {
        fails.push("an encapd did not stop cleanly (SIGTERM, exit 0, TUN removed)".into());
    }
    let _ = writeln!(out, "verdict: {}", if fails.is_empty() { "PASS".to_owned() } else { format!("FAIL ({})", fails.join("; ")) });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(slice: u32, t: (u64, u64), rss: u64, mbit: Option<f64>) -> Sample {
        Sample {
            slice,
            t_start: t.0,
            t_end: t.1,
            proc: [Some((rss, 20, 5)), Some((rss, 20, 5))],
            mbit_s: mbit,
            loss_pct: mbit.map(|_| 0.1),
            ..Sample::default()
        }
    }

    const LOG: &str = "encapd counters:\n  total     egress 5 pkts 460 bytes in 4 sends | ingress 3 pkts 300 bytes in 2 receives | icmp 0 (0 rate-limited) | drops 0 | table v3\n  \
                       control   tables published 2 | reload failures 0\n";

    #[test]
    fn a_steady_run_passes_and_a_leak_or_a_decay_fails() {
        let logs = vec![(Node::A, LOG.to_owned()), (Node::B, LOG.to_owned())];
        let steady: Vec<Sample> =
            (0..7).map(|i| sample(i, (i as u64 * 10, i as u64 * 10 + 10), 10_000, (i > 0).then_some(500.0))).collect();
        let s = summarize(&steady, &logs, true, true, 6, 10);
        assert!(s.ends_with("verdict: PASS\n"), "{s}");
        let mut leak = steady.clone();
        leak[6].proc[0] = Some((40_000, 20, 5));
        assert!(summarize(&leak, &logs, true, true, 6, 10).contains("nodeA RSS grew by 30000 KiB"));
        let mut decay = steady.clone();
        decay[6].mbit_s = Some(100.0);
        decay[5].mbit_s = Some(100.0);
        decay[4].mbit_s = Some(100.0);
        assert!(summarize(&decay, &logs, true, true, 6, 10).contains("throughput fell"));
        assert!(summarize(&steady, &logs[..1], false, true, 6, 10).contains("an encapd process died"));
    }

    #[test]
    fn kernel_counters_and_iperf3_results() {
        assert_eq!(rcvbuf_errors("Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 1 2 3 4 77\n"), Some(77));
        let json = r#"{"end":{"sum_received":{"packets":1000,"lost_packets":100,"seconds":1.0,"lost_percent":10.0}}}"#;
        let (mbit, loss) = slice_result(json).unwrap();
        assert!((mbit - 10.08).abs() < 1e-9 && loss == 10.0);
        assert!(slice_result(r#"{"error":"x"}"#).is_none());
        assert!(parse_rate("500M").is_ok() && parse_rate("1.5G").is_ok() && parse_rate("fast").is_err() && parse_rate("5MM").is_err());
    }
}
