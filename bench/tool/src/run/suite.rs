//! The tests of one mode on one profile in one repetition, clients in
//! ctrA, servers in ctrB (a fresh one-shot server per test): iperf3 TCP
//! (1 and 4 streams, the default congestion control and cubic, one stream
//! paced at 1 Gbit/s), iperf3 UDP at 64, 512 and 1400 bytes, the
//! open-loop latency probe at 10, 50 and 90 % of the mode's own UDP 64 B
//! delivered rate in the same repetition, and with `--sockperf` a
//! sockperf ping-pong. Around every TCP client run: the whole machine's
//! and encapd's CPU and context switches ([`super::procfs`]); around the
//! tests in [`CARRIED_TESTS`]: who carried the packets
//! ([`super::carried`]). Raw outputs go to `raw/<profile>/<mode>-r<rep>-*`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use encapd_testbed::bed::{Active, Bed};
use encapd_testbed::wiring::{CTR_B, Node};

use super::carried::{self, NodeCounters, Snapshot};
use super::parse::{self, EncapdCost};
use super::procfs::CpuWindow;
use super::record::{Cell, CommandLog, Results, Row};
use super::warn;
use crate::exec::{Background, argv, run_to_files, wait_port};

/// TCP tests: (name, iperf3 options).
pub const TCP_TESTS: &[(&str, &[&str])] = &[
    ("tcp1", &[]),
    ("tcp1_cubic", &["-C", "cubic"]),
    // One stream held at a rate every batched mode reaches even on a busy
    // machine, so that CPU per Gbit/s is compared at equal work.
    ("tcp1_paced", &["-b", PACED_RATE]),
    ("tcp4", &["-P", "4"]),
    ("tcp4_cubic", &["-P", "4", "-C", "cubic"]),
];
pub const PACED_RATE: &str = "1G";
/// UDP tests: (name, payload bytes).
pub const UDP_TESTS: &[(&str, &str)] = &[("udp64", "64"), ("udp512", "512"), ("udp1400", "1400")];
/// Latency probe loads, % of the mode's UDP 64 B delivered rate.
pub const LOADS: &[u32] = &[10, 50, 90];
/// The tests whose packets are attributed to the kernel path or the
/// workers: bulk TCP with one and four flows, and small packets.
pub const CARRIED_TESTS: &[&str] = &["tcp1", "tcp4", "udp64"];

const IPERF_PORT: u16 = 5201;
const LAT_PORT: u16 = 7000;
const SOCKPERF_PORT: u16 = 11111;

/// Test durations, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    pub tcp: u32,
    pub udp: u32,
    pub lat: u32,
    pub rr: u32,
}

impl Durations {
    /// Full runs, `--quick`, `--short` (as the shell harness had them).
    pub fn pick(quick: bool, short: bool) -> Durations {
        if short {
            Durations { tcp: 1, udp: 1, lat: 1, rr: 1 }
        } else if quick {
            Durations { tcp: 2, udp: 1, lat: 1, rr: 2 }
        } else {
            Durations { tcp: 5, udp: 2, lat: 3, rr: 3 }
        }
    }
}

/// What every test needs to know about the run.
pub struct Suite {
    pub t: Durations,
    pub sockperf: bool,
    /// Jiffies per second.
    pub hz: f64,
    /// The latency probe (this very binary).
    pub probe: PathBuf,
}

/// One (mode, profile, repetition) under test.
pub struct Target<'a> {
    pub bed: &'a Bed,
    pub active: &'a Active<'a>,
    pub cell: Cell,
    /// `raw/<profile>/`.
    pub raw: PathBuf,
}

impl Target<'_> {
    fn base(&self, test: &str) -> PathBuf {
        self.raw.join(format!("{}-r{}-{test}", self.cell.mode, self.cell.rep))
    }

    fn ctr(&self, node: Node) -> &str {
        self.bed.ctr_ns(node)
    }

    fn snapshot(&self) -> Snapshot {
        self.active.encapd_nodes().into_iter().filter_map(|n| Some((n, NodeCounters::from_metrics(&self.active.metrics(n)?)))).collect()
    }
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Removes `path` when it is empty (logs and error files that said nothing).
fn drop_if_empty(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(path);
    }
}

impl Suite {
    /// Every test of the mode, rows into `results`.
    pub fn run_all(&self, t: &Target<'_>, results: &mut Results, log: &mut CommandLog) -> std::io::Result<()> {
        for (test, opts) in TCP_TESTS {
            let rows = self.iperf(t, log, test, true, self.t.tcp, opts);
            results.add(&t.cell, rows)?;
            if crate::exec::interrupted() {
                return Ok(());
            }
        }
        for (test, size) in UDP_TESTS {
            let rows = self.iperf(t, log, test, false, self.t.udp, &["-u", "-b", "0", "-l", size]);
            results.add(&t.cell, rows)?;
            if crate::exec::interrupted() {
                return Ok(());
            }
        }
        for &load in LOADS {
            let capacity = results.value(&t.cell, "udp64_pps");
            let rows = self.latency(t, log, load, capacity);
            results.add(&t.cell, rows)?;
        }
        if self.sockperf {
            let rows = self.sockperf(t, log);
            results.add(&t.cell, rows)?;
        }
        Ok(())
    }

    /// One iperf3 run against a fresh one-shot server in ctrB.
    fn iperf(&self, t: &Target<'_>, log: &mut CommandLog, test: &str, tcp: bool, secs: u32, opts: &[&str]) -> Vec<Row> {
        let base = t.base(test);
        let (json, err, server_log) = (with_ext(&base, ".json"), with_ext(&base, ".err"), with_ext(&base, ".server.log"));
        let port = IPERF_PORT.to_string();
        let encapd = (!t.active.encapd_pids().is_empty()).then_some(None::<EncapdCost>);
        let fail = |why: String| -> Vec<Row> {
            warn(&format!("{} {} rep {} {test}: {why}", t.cell.mode, t.cell.underlay, t.cell.rep));
            let result = if tcp { parse::tcp(test, "{}", None, encapd) } else { parse::udp(test, "{}") };
            result.unwrap_or_else(|(_, rows)| rows)
        };
        let server_args = argv(&["iperf3", "-s", "-1", "-B", CTR_B, "-p", &port]);
        log.line(format!("ip netns exec <ctrB> {} &", server_args.join(" ")));
        let mut server = match Background::start(Some(t.ctr(Node::B)), &server_args, &server_log) {
            Ok(s) => s,
            Err(e) => return fail(format!("iperf3 server: {e}")),
        };
        if !wait_port(t.ctr(Node::B), IPERF_PORT, false, Duration::from_secs(5)) {
            server.stop(Duration::from_secs(1));
            return fail("iperf3 server did not start".into());
        }
        let mut client = argv(&["iperf3", "-c", CTR_B, "-p", &port, "--connect-timeout", "3000", "-J", "-t", &secs.to_string()]);
        client.extend(opts.iter().map(|o| (*o).to_owned()));
        log.line(format!("ip netns exec <ctrA> {}", client.join(" ")));
        let carried = CARRIED_TESTS.contains(&test);
        let before = if carried { t.snapshot() } else { Vec::new() };
        let cpu = CpuWindow::start(&t.active.encapd_pids());
        let finished = run_to_files(Some(t.ctr(Node::A)), &client, &json, &err, Duration::from_secs(u64::from(secs) + 30));
        let (machine, encapd_cost) = cpu.finish(self.hz);
        let after = if carried { t.snapshot() } else { Vec::new() };
        match &finished {
            Ok(f) if f.success() => {}
            Ok(f) => {
                warn(&format!("{} {} rep {} {test}: iperf3 client {f} (see {})", t.cell.mode, t.cell.underlay, t.cell.rep, json.display()))
            }
            Err(e) => warn(&format!("{} rep {} {test}: iperf3 client: {e}", t.cell.mode, t.cell.rep)),
        }
        server.wait_exit(Duration::from_secs(5));
        server.stop(Duration::from_secs(1));
        drop_if_empty(&err);
        drop_if_empty(&server_log);
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        let parsed = if tcp { parse::tcp(test, &text, machine, encapd.map(|_| encapd_cost)) } else { parse::udp(test, &text) };
        let mut rows = match parsed {
            Ok(rows) => rows,
            Err((why, rows)) => {
                warn(&format!("parse {test} {}: {why}", json.display()));
                rows
            }
        };
        if carried {
            rows.extend(carried::rows(test, &before, &after));
        }
        rows
    }

    /// The latency probe at `load` % of `capacity` (the mode's UDP 64 B
    /// delivered rate in this repetition), at least 100 requests/s.
    fn latency(&self, t: &Target<'_>, log: &mut CommandLog, load: u32, capacity: Option<f64>) -> Vec<Row> {
        let test = format!("lat{load}");
        let base = t.base(&test);
        let json = with_ext(&base, ".json");
        let na = |why: &str| {
            warn(&format!("{} {} rep {} {test}: {why}", t.cell.mode, t.cell.underlay, t.cell.rep));
            parse::latency(&test, "{}").unwrap_or_else(|(_, rows)| rows)
        };
        let Some(capacity) = capacity else {
            let _ = std::fs::write(&json, "{}");
            return na("no UDP 64 B rate to derive the probe rate from");
        };
        let rate = ((capacity * f64::from(load) / 100.0).max(100.0)) as u64;
        let probe = self.probe.to_string_lossy().into_owned();
        let bind = format!("{CTR_B}:{LAT_PORT}");
        let server_args = argv(&[probe.as_str(), "latency", "server", "--bind", &bind, "--exit-after", &(self.t.lat + 30).to_string()]);
        log.line(format!("ip netns exec <ctrB> encapd-bench latency server --bind {bind} --exit-after {} &", self.t.lat + 30));
        let server_err = with_ext(&base, ".server.err");
        let server = match Background::start_stderr(Some(t.ctr(Node::B)), &server_args, &server_err) {
            Ok(s) => s,
            Err(e) => return na(&format!("probe server: {e}")),
        };
        if wait_port(t.ctr(Node::B), LAT_PORT, true, Duration::from_secs(5)) {
            let prefix = base.to_string_lossy().into_owned();
            let client = argv(&[
                probe.as_str(),
                "latency",
                "client",
                "--target",
                &bind,
                "--rate",
                &rate.to_string(),
                "--duration",
                &self.t.lat.to_string(),
                "--out",
                &prefix,
                "--json",
            ]);
            log.line(format!(
                "ip netns exec <ctrA> encapd-bench latency client --target {bind} --rate {rate} --duration {} --out raw/{}/{}-r{}-{test} --json",
                self.t.lat, t.cell.underlay, t.cell.mode, t.cell.rep
            ));
            let (out, err) = (with_ext(&base, ".out"), with_ext(&base, ".err"));
            match run_to_files(Some(t.ctr(Node::A)), &client, &out, &err, Duration::from_secs(u64::from(self.t.lat) + 20)) {
                Ok(f) if f.success() => {}
                Ok(f) => warn(&format!("{} rep {} {test}: probe {f} (see {})", t.cell.mode, t.cell.rep, err.display())),
                Err(e) => warn(&format!("{} rep {} {test}: probe: {e}", t.cell.mode, t.cell.rep)),
            }
            let _ = std::fs::remove_file(&out);
            drop_if_empty(&err);
        } else {
            warn(&format!("{} rep {} {test}: probe server did not start", t.cell.mode, t.cell.rep));
        }
        server.stop(Duration::from_secs(1));
        drop_if_empty(&server_err);
        if !json.is_file() {
            let _ = std::fs::write(&json, "{}");
        }
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        parse::latency(&test, &text).unwrap_or_else(|(why, rows)| {
            warn(&format!("parse {test} {}: {why}", json.display()));
            rows
        })
    }

    /// sockperf UDP ping-pong, 64-byte messages back to back.
    fn sockperf(&self, t: &Target<'_>, log: &mut CommandLog) -> Vec<Row> {
        let base = t.base("udp_rr");
        let txt = with_ext(&base, ".txt");
        let port = SOCKPERF_PORT.to_string();
        let server_args = argv(&["sockperf", "server", "-i", CTR_B, "-p", &port]);
        log.line(format!("ip netns exec <ctrB> {} &", server_args.join(" ")));
        let server_log = with_ext(&base, ".server.log");
        let server = Background::start(Some(t.ctr(Node::B)), &server_args, &server_log);
        if server.is_ok() && wait_port(t.ctr(Node::B), SOCKPERF_PORT, true, Duration::from_secs(5)) {
            let client = argv(&["sockperf", "ping-pong", "-i", CTR_B, "-p", &port, "-t", &self.t.rr.to_string(), "-m", "64", "--full-rtt"]);
            log.line(format!("ip netns exec <ctrA> {}", client.join(" ")));
            let err = with_ext(&base, ".err");
            match run_to_files(Some(t.ctr(Node::A)), &client, &txt, &err, Duration::from_secs(u64::from(self.t.rr) + 20)) {
                Ok(f) if f.success() => {}
                Ok(f) => warn(&format!("{} rep {} udp_rr: sockperf {f}", t.cell.mode, t.cell.rep)),
                Err(e) => warn(&format!("{} rep {} udp_rr: sockperf: {e}", t.cell.mode, t.cell.rep)),
            }
            drop_if_empty(&err);
        } else {
            warn(&format!("{} rep {} udp_rr: sockperf server did not start", t.cell.mode, t.cell.rep));
        }
        if let Ok(s) = server {
            s.stop(Duration::from_secs(1));
        }
        let _ = std::fs::remove_file(&server_log);
        let text = std::fs::read_to_string(&txt).unwrap_or_default();
        parse::sockperf("udp_rr", &text).unwrap_or_else(|(why, rows)| {
            warn(&format!("parse udp_rr {}: {why}", txt.display()));
            rows
        })
    }

    /// NA rows for every test of a mode whose setup failed.
    pub fn all_na(&self, encapd: bool) -> Vec<Row> {
        let tcp: Vec<&str> = TCP_TESTS.iter().map(|t| t.0).collect();
        let udp: Vec<&str> = UDP_TESTS.iter().map(|t| t.0).collect();
        parse::all_na(&tcp, &udp, LOADS, self.sockperf, encapd)
    }
}
