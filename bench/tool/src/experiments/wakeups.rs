//! `encapd-bench wakeups`: where a request waits on its way through
//! encapd. A sockperf UDP ping-pong (64-byte messages, back to back)
//! from ctrA to ctrB through each mode while `perf sched record -a`
//! records the scheduler's view of the whole machine; per mode: the
//! ping-pong's RTT p50 / p99 and round trips completed, and for that
//! run's encapd worker threads only (the record is machine-wide) their
//! context switches per round trip, their mean and maximum
//! wakeup-to-run delay (`perf sched latency`) and their CPU per round
//! trip. A request crosses two gateways on its way and two on its way
//! back; each crossing by a thread that sleeps costs a wakeup on the
//! critical path.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use encapd_testbed::wiring::{CTR_B, Node};

use super::{BenchArgs, Prepared, enter, prepare, sockperf_server, tids_of};
use crate::exec::{argv, run_capture, run_to_files};
use crate::run::{info, warn};

#[derive(Debug, Clone, clap::Args)]
pub struct WakeupsArgs {
    /// Comma-separated modes (e.g. vxlan-kernel, classic, mmsg, uring, uring-nocoop, uring-busypoll).
    #[arg(long, default_value = "vxlan-kernel,classic,uring")]
    pub modes: String,
    /// Ping-pong length per mode, 1-60 s.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub seconds: u32,
    /// Keep perf data and reports here (default: a temporary directory, removed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

const PORT: u16 = 11111;

pub fn main(a: WakeupsArgs) -> Result<(), String> {
    let pkgs = ["@run", "@profile", "sockperf", "ethtool"];
    let Prepared { modes, setup: s, out, tmp: _tmp, bed } = prepare(&a.modes, &a.bench, &pkgs, a.out.clone(), "wakeups")?;
    for mode in &modes {
        if crate::exec::interrupted() {
            break;
        }
        let active = enter(&bed, mode, &out.join(format!("{}-configs", mode.name)), &s.encapd, 2)?;
        let tids: BTreeSet<u32> = tids_of(&active.encapd_pids()).into_iter().collect();
        let server = sockperf_server(&bed, PORT, &out.join(format!("{}.server.log", mode.name)))?;
        let data = out.join(format!("{}.sched.data", mode.name));
        let mut args = argv(&["perf", "sched", "record", "-a", "-o", &data.to_string_lossy(), "--"]);
        args.extend(argv(&[
            "ip",
            "netns",
            "exec",
            bed.ctr_ns(Node::A),
            "sockperf",
            "ping-pong",
            "-i",
            CTR_B,
            "-p",
            &PORT.to_string(),
            "-t",
            &a.seconds.to_string(),
            "-m",
            "64",
            "--full-rtt",
        ]));
        let sockperf_txt = out.join(format!("{}.sockperf.txt", mode.name));
        let f = run_to_files(
            None,
            &args,
            &sockperf_txt,
            &out.join(format!("{}.perf.err", mode.name)),
            Duration::from_secs(u64::from(a.seconds) + 60),
        )
        .map_err(|e| format!("perf: {e}"))?;
        if !f.success() {
            warn(&format!("{}: perf sched record {f}", mode.name));
        }
        server.stop(Duration::from_secs(1));
        let latency =
            run_capture(None, &argv(&["perf", "sched", "latency", "-p", "-i", &data.to_string_lossy()]), Duration::from_secs(300))
                .unwrap_or_default();
        std::fs::write(out.join(format!("{}.latency.txt", mode.name)), &latency).map_err(|e| e.to_string())?;
        let sp = std::fs::read_to_string(&sockperf_txt).unwrap_or_default();
        println!("{}", summary(&mode.name, &sp, &latency, &tids));
        drop(active.leave());
    }
    info(&format!("perf data and reports in {}", out.display()));
    Ok(())
}

/// `percentile P = V` in sockperf's output.
fn percentile(text: &str, p: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.split("percentile ").nth(1))
        .find_map(|r| {
            let (k, v) = r.split_once('=')?;
            (k.trim() == p).then(|| v.split_whitespace().next()?.parse().ok()).flatten()
        })
        .unwrap_or(f64::NAN)
}

/// One `perf sched latency -p` row of an encapd worker thread:
/// (tid, runtime ms, switches, average delay ms, maximum delay ms).
fn worker_row(line: &str) -> Option<(u32, f64, u64, f64, f64)> {
    let f: Vec<&str> = line.split('|').map(str::trim).collect();
    if f.len() < 5 {
        return None;
    }
    let (name, tid) = f[0].rsplit_once(':')?;
    if !name.starts_with("encapd-w") {
        return None;
    }
    let ms = |s: &str| s.trim_start_matches("avg:").trim_start_matches("max:").trim().strip_suffix("ms")?.trim().parse::<f64>().ok();
    Some((tid.parse().ok()?, ms(f[1])?, f[2].parse().ok()?, ms(f[3])?, ms(f[4])?))
}

/// The line printed per mode (see the module docs).
pub fn summary(mode: &str, sockperf: &str, latency: &str, tids: &BTreeSet<u32>) -> String {
    // --full-rtt: sockperf's percentiles are whole round trips.
    let (p50, p99) = (percentile(sockperf, "50.000"), percentile(sockperf, "99.000"));
    let trips: u64 =
        sockperf.split("ReceivedMessages=").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).unwrap_or(0);
    let (mut runtime, mut switches, mut weighted, mut worst) = (0.0, 0u64, 0.0, 0.0_f64);
    for (tid, run_ms, n, avg, max) in latency.lines().filter_map(worker_row) {
        if !tids.contains(&tid) {
            continue;
        }
        runtime += run_ms;
        switches += n;
        weighted += avg * n as f64;
        worst = worst.max(max);
    }
    let head = format!("{mode:15} rtt p50 {p50:7.1} us  p99 {p99:7.1} us  trips {trips:7}");
    if switches == 0 {
        return format!("{head} | no encapd threads");
    }
    let per = |x: f64| if trips > 0 { x / trips as f64 } else { f64::NAN };
    format!(
        "{head} | workers: {:4.2} switches/trip, wakeup delay mean {:5.1} us max {:7.1} us, {:5.1} us CPU/trip",
        per(switches as f64),
        weighted / switches as f64 * 1000.0,
        worst * 1000.0,
        per(runtime * 1000.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_figures_come_from_our_threads_only() {
        let sockperf =
            "sockperf: ReceivedMessages=1000 ...\nsockperf: ---> percentile 99.000 =  300.5\nsockperf: ---> percentile 50.000 =  190.25\n";
        let latency = "  encapd-w0:11   |     20.000 ms |   500 | avg:   0.020 ms | max:   1.000 ms | max start: 1.0 s | max end: 1.0 s\n\
                       \x20 encapd-w1:12   |     10.000 ms |   300 | avg:   0.040 ms | max:   2.000 ms | max start: 1.0 s | max end: 1.0 s\n\
                       \x20 encapd-w0:99   |    900.000 ms |  9000 | avg:   5.000 ms | max:  50.000 ms | max start: 1.0 s | max end: 1.0 s\n\
                       \x20 sockperf:5     |      1.000 ms |    10 | avg:   0.001 ms | max:   0.002 ms | max start: 1.0 s | max end: 1.0 s\n";
        let line = summary("uring", sockperf, latency, &[11, 12].into_iter().collect());
        assert_eq!(
            line,
            "uring           rtt p50   190.2 us  p99   300.5 us  trips    1000 | workers: 0.80 switches/trip, wakeup delay mean  27.5 us max  2000.0 us,  30.0 us CPU/trip"
        );
        let none = summary("vxlan-kernel", sockperf, latency, &BTreeSet::new());
        assert!(none.ends_with("| no encapd threads"), "{none}");
    }
}
