//! `encapd-bench profile`: where the time of bulk TCP goes. One iperf3 TCP
//! stream (or `--streams N`) from ctrA to ctrB through a mode while `perf record -a -g`
//! samples the whole machine (the profile is system-wide because most of
//! a packet's cost is kernel work done in the workers' system calls: a
//! per-process profile would hide the softirq part). Prints the
//! throughput and the CPU the forwarding path used (samples of this run's
//! encapd threads, iperf3, softirq and kernel worker threads, in cores and
//! cores per Gbit/s; anything else on the machine is counted apart),
//! samples by thread, and the top symbols of the sending encapd (nodeA)
//! and the receiving one (nodeB), or of the whole machine without encapd,
//! and per CPU which threads ran there and how long it was idle (so a
//! saturated CPU beside an idle one shows), and the kernel counters that
//! moved during the load (`counters.txt`; the ones that tell of a loss or
//! a retransmission are printed: a flow that loses packets shows where);
//! perf.data and the reports stay in the output directory.
//!
//! A VM has no PMU: samples come from `cpu-clock`, user-space symbols are
//! exact, kernel ones lean towards where interrupts are re-enabled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use encapd_testbed::mode::Mode;
use encapd_testbed::wiring::{CTR_B, Node};

use super::counters::Counters;
use super::{BenchArgs, bed, enter, setup, tids_of};
use crate::clock::Utc;
use crate::exec::{Background, argv, run_capture, run_to_files, wait_port};
use crate::run::{info, warn};

#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// The mode (the registry: uring, uring-nooffload, mmsg, vxlan-kernel, ...).
    #[arg(long, default_value = "uring")]
    pub mode: String,
    /// Load length, 3-120 s (the record takes the middle: from 1.5 s in, for SECONDS − 2).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(3..=120))]
    pub seconds: u32,
    /// Parallel TCP streams (iperf3 -P), 1-16: the benchmark's TCP 4 is 4.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub streams: u32,
    /// Output directory (default /tmp/encapd-profile-<UTC date>-<mode>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// Counter names that tell of a loss or a retransmission.
const LOSS_WORDS: &[&str] = &["drop", "retrans", "err", "lost", "squeeze", "full", "overflow", "prune", "collapse", "ofoqueue"];

/// Samples per second and CPU (`perf record -F`).
const HZ: f64 = 999.0;

pub fn main(a: ProfileArgs) -> Result<(), String> {
    let mode = Mode::named(&a.mode).map_err(|e| e.to_string())?;
    let s = setup(&["@run", "@profile", "ethtool"], a.bench.no_build)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/encapd-profile-{}-{}", Utc::now().dir_stamp(), mode.name)));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let bed = bed(a.bench.underlay)?;
    let active = enter(&bed, &mode, &out.join("configs"), &s.encapd, 2)?;
    let pids = active.encapd_pids();
    let server = Background::start(Some(bed.ctr_ns(Node::B)), &argv(&["iperf3", "-s", "-1", "-B", CTR_B]), &out.join("iperf3-server.log"))
        .map_err(|e| format!("iperf3 server: {e}"))?;
    if !wait_port(bed.ctr_ns(Node::B), 5201, false, Duration::from_secs(5)) {
        return Err("iperf3 server did not start".into());
    }
    let namespaces = [bed.node_ns(Node::A), bed.node_ns(Node::B), bed.ctr_ns(Node::A), bed.ctr_ns(Node::B)];
    let before = Counters::read(&namespaces);
    let client_args = argv(&["iperf3", "-c", CTR_B, "-t", &a.seconds.to_string(), "-O", "1", "-P", &a.streams.to_string(), "-J"]);
    // The client runs on a thread of ours while perf records.
    let json = out.join("iperf3.json");
    let ns_a = bed.ctr_ns(Node::A).to_owned();
    let seconds = a.seconds;
    let json_path = json.clone();
    let client = std::thread::spawn(move || {
        run_to_files(Some(&ns_a), &client_args, &json_path, &json_path.with_extension("err"), Duration::from_secs(u64::from(seconds) + 30))
    });
    std::thread::sleep(Duration::from_millis(1500));
    let ours: BTreeSet<u32> = tids_of(&pids).into_iter().collect();
    let record = a.seconds - 2;
    info(&format!("recording {record} s system-wide"));
    let data = out.join("perf.data");
    let rec = run_to_files(
        None,
        &argv(&["perf", "record", "-q", "-a", "-g", "-F", "999", "-o", &data.to_string_lossy(), "--", "sleep", &record.to_string()]),
        &out.join("perf.out"),
        &out.join("perf.log"),
        Duration::from_secs(u64::from(record) + 60),
    )
    .map_err(|e| format!("perf record: {e}"))?;
    if !rec.success() {
        return Err(format!("perf record {rec} (see {})", out.join("perf.log").display()));
    }
    match client.join() {
        Ok(Ok(f)) if f.success() => {}
        _ => warn("the iperf3 client did not finish cleanly"),
    }
    server.stop(Duration::from_secs(1));
    let moved = Counters::read(&namespaces).moved_since(&before);
    std::fs::write(out.join("counters.txt"), moved.join("\n") + "\n").map_err(|e| e.to_string())?;
    let gbits = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&json).unwrap_or_default())
        .ok()
        .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64())
        .map_or(0.0, |b| b / 1e9);
    let left = active.leave();
    for (n, log) in &left.logs {
        let _ = std::fs::write(out.join(format!("{}.log", n.sub())), log);
    }

    let by_comm = run_capture(
        None,
        &argv(&[
            "perf",
            "report",
            "-i",
            &data.to_string_lossy(),
            "--no-children",
            "-g",
            "none",
            "--sort",
            "comm,pid",
            "-F",
            "sample,comm,pid",
            "--stdio",
        ]),
        Duration::from_secs(300),
    )
    .unwrap_or_default();
    let line = path_cpu(&by_comm, &ours, f64::from(record), gbits);
    std::fs::write(out.join("summary.txt"), format!("{line}\n")).map_err(|e| e.to_string())?;
    report(&data, &out.join("by-thread.txt"), "comm,pid", None);
    report(&data, &out.join("all-symbols.txt"), "sym", None);
    report(&data, &out.join("by-cpu.txt"), "cpu,comm", None);
    info("losses and their kind (counters.txt has every counter that moved):");
    for line in moved.iter().filter(|l| LOSS_WORDS.iter().any(|w| l.to_lowercase().contains(w))) {
        println!("    {line}");
    }
    info("by thread (% of all samples on both cores):");
    head(&out.join("by-thread.txt"), 15);
    info("by CPU and thread (`swapper` is idle; % of all samples):");
    head(&out.join("by-cpu.txt"), 20);
    if pids.len() == 2 {
        report(&data, &out.join("sender-symbols.txt"), "sym", Some(pids[0]));
        report(&data, &out.join("receiver-symbols.txt"), "sym", Some(pids[1]));
        info(&format!("sending encapd (nodeA, pid {}), top symbols (% of its samples):", pids[0]));
        head(&out.join("sender-symbols.txt"), 25);
        info(&format!("receiving encapd (nodeB, pid {}), top symbols (% of its samples):", pids[1]));
        head(&out.join("receiver-symbols.txt"), 25);
    } else {
        info("top symbols, whole machine:");
        head(&out.join("all-symbols.txt"), 25);
    }
    println!("{line}");
    info(&format!("results in {}", out.display()));
    Ok(())
}

/// A flat profile into `file`: samples attributed to the function they
/// were taken in, sorted by `sort`, of process `pid` when given.
fn report(data: &Path, file: &Path, sort: &str, pid: Option<i32>) {
    let mut args = argv(&[
        "perf",
        "report",
        "-i",
        &data.to_string_lossy(),
        "--no-children",
        "-g",
        "none",
        "--percentage",
        "relative",
        "--percent-limit",
        "0.7",
        "--sort",
        sort,
        "--stdio",
    ]);
    if let Some(p) = pid {
        args.push("--pid".into());
        args.push(p.to_string());
    }
    let text = run_capture(None, &args, Duration::from_secs(300)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).take(40).collect();
    let _ = std::fs::write(file, lines.join("\n") + "\n");
}

fn head(file: &Path, n: usize) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for l in text.lines().take(n) {
        println!("{l}");
    }
}

/// The forwarding path's CPU from `perf report --sort comm,pid -F
/// sample,comm,pid` (rows `SAMPLES COMM TID:COMM`): this run's encapd
/// threads, iperf3, softirq and kernel worker threads; the idle task is
/// left out, everything else is other load.
pub fn path_cpu(by_comm: &str, ours: &BTreeSet<u32>, seconds: f64, gbits: f64) -> String {
    let (mut path, mut other) = (0u64, 0u64);
    for line in by_comm.lines() {
        let mut it = line.split_whitespace();
        let (Some(n), Some(comm), Some(tid)) = (it.next(), it.next(), it.next()) else { continue };
        let (Ok(n), Some(Ok(tid))) = (n.parse::<u64>(), tid.split(':').next().map(str::parse::<u32>)) else { continue };
        if comm == "swapper" {
            continue;
        }
        let kernel = ["iperf3", "ksoftirqd", "kworker", "irq/", "rcu"].iter().any(|p| comm.starts_with(p));
        if (comm.starts_with("encapd") && ours.contains(&tid)) || kernel {
            path += n;
        } else {
            other += n;
        }
    }
    let cores = path as f64 / HZ / seconds;
    format!(
        "throughput {gbits:.2} Gbit/s; forwarding path {cores:.2} cores busy, {:.3} cores per Gbit/s; other load on the machine {:.2} cores",
        cores / gbits,
        other as f64 / HZ / seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarding_path_is_ours_and_the_kernels() {
        let report = "# comment\n    9990  encapd-w0  11:encapd-w0\n    999  encapd-w0  99:encapd-w0\n    4995  iperf3  5:iperf3\n\
                      \x20   999  ksoftirqd/0  9:ksoftirqd/0\n   99900  swapper  0:swapper\n    1998  cc1  77:cc1\n";
        let line = path_cpu(report, &[11].into_iter().collect(), 2.0, 4.0);
        assert_eq!(
            line,
            "throughput 4.00 Gbit/s; forwarding path 8.00 cores busy, 2.000 cores per Gbit/s; other load on the machine 1.50 cores"
        );
    }
}
