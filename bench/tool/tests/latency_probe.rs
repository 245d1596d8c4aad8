//! `encapd-bench latency` on loopback (no root needed): a server that holds
//! every reply for 2 ms must show up as a 2 ms median RTT, with no loss, and
//! the client's files must be a well-formed `.hgrm` and JSON summary; a
//! server that stalls once must show up in the percentiles with every
//! request queued behind the stall (the correction for coordinated
//! omission), which the uncorrected closed-loop measurement misses.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_encapd-bench");

/// Kills the server on every exit path.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server on an ephemeral loopback port; returns it and its address.
fn server(hold_ms: u64) -> (Server, String) {
    server_with(&["--hold-ms", &hold_ms.to_string()])
}

fn server_with(extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["latency", "server", "--bind", "127.0.0.1:0", "--exit-after", "60"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start encapd-bench latency server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected server output {line:?}")).to_string();
    (Server(child), addr)
}

fn temp_prefix(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("encapd-latency-probe-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("probe")
}

/// Runs the client against `addr`; returns the stdout JSON summary.
fn probe(addr: &str, prefix: &std::path::Path) -> serde_json::Value {
    client(&["--target", addr, "--rate", "500", "--duration", "2", "--out", prefix.to_str().unwrap()])
}

/// Runs the client with `args` (and --json); returns its JSON summary.
fn client(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).args(["latency", "client", "--json"]).args(args).output().expect("run client");
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON summary on stdout")
}

/// The server stops reading once for 200 ms while the client sends 1,000
/// requests/s for 3 s. About 200 requests arrive during the stall and wait
/// for its end, from 200 ms down to nothing, so about 100 (3 % of 3,000)
/// take more than 100 ms: the corrected p99 lies above 100 ms while p90
/// does not. The closed-loop client, which waits for each reply before the
/// next request and times it from its actual send, sees the stall once:
/// its max shows it, its p99 does not. That is what the correction is for,
/// and the test fails without it.
#[test]
fn a_stall_shows_every_request_queued_behind_it() {
    const STALL_MS: f64 = 200.0;
    let (_server, addr) = server_with(&["--stall-ms", "200", "--stall-after", "1"]);
    let args = ["--target", addr.as_str(), "--rate", "1000", "--duration", "3"];
    let open = client(&args);
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {s}"));
    assert_eq!(open["coordinated_omission_corrected"], true, "{open}");
    assert_eq!(f(&open, "lost"), 0.0, "{open}");
    assert!(f(&open, "max_us") >= 0.9 * STALL_MS * 1e3, "the stall is not in the distribution: {open}");
    assert!(
        f(&open, "p99_us") >= STALL_MS / 2.0 * 1e3,
        "the ~100 requests queued more than 100 ms behind the stall do not reach p99: {open}"
    );
    assert!(f(&open, "p90_us") < STALL_MS / 2.0 * 1e3, "more than the stall's queue is slow (load {}): {open}", loadavg());

    let (_server, addr) = server_with(&["--stall-ms", "200", "--stall-after", "1"]);
    let args = ["--target", addr.as_str(), "--rate", "1000", "--duration", "3", "--closed-loop"];
    let closed = client(&args);
    assert_eq!(closed["coordinated_omission_corrected"], false, "{closed}");
    assert!(f(&closed, "max_us") >= 0.9 * STALL_MS * 1e3, "the closed loop did not meet the stall at all: {closed}");
    assert!(
        f(&closed, "p99_us") < STALL_MS / 2.0 * 1e3,
        "the uncorrected measurement shows the queue too, so this test could not tell a missing correction: {closed}"
    );
}

#[test]
fn known_delay_is_measured() {
    let (_server, addr) = server(2);
    let prefix = temp_prefix("hold");
    // The machine is shared: a burst of load elsewhere stalls sender,
    // server or receiver and (correctly) inflates the measured RTTs. The
    // probe is right if one of a few attempts sees the 2 ms hold.
    let mut attempts = Vec::new();
    let summary = loop {
        let summary = probe(&addr, &prefix);
        let f = |k: &str| summary[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {summary}"));
        // No request may be lost, and none answered before the hold time,
        // whatever the load.
        assert_eq!(f("sent"), 1000.0, "{summary}");
        assert_eq!(f("lost"), 0.0, "{summary}");
        assert_eq!(f("count"), 1000.0, "{summary}");
        assert!(f("min_us") >= 2000.0, "a reply came back before the hold time: {summary}");
        // The 2 ms hold, plus what the server's sleep overshoots and
        // loopback adds: tens of µs on a quiet machine, but on a loaded VM
        // every reply comes 80–240 µs late (a fresh-clone CI run saw min
        // 2,076–2,092 µs and p50 2,223–2,239 µs in all five attempts), and
        // with other suites running beside this one at load 12 p50 came to
        // 2,631 µs. A probe that queued or double-counted would be off by
        // a whole hold or more, so the bound is just under two holds.
        if (2000.0..3900.0).contains(&f("p50_us")) {
            break summary;
        }
        attempts.push(summary);
        assert!(attempts.len() < 5, "p50 not within 2000–3900 µs in {} attempts (load {:?}): {attempts:#?}", attempts.len(), loadavg());
    };
    let get = |k: &str| summary[k].as_f64().unwrap();
    let p50 = get("p50_us");
    assert!((get("achieved_pps") - 500.0).abs() < 25.0, "{summary}");

    // The files: JSON equal to stdout's, .hgrm with the standard layout.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prefix.with_extension("json")).unwrap()).expect("PREFIX.json");
    assert_eq!(file, summary);
    let hgrm = std::fs::read_to_string(prefix.with_extension("hgrm")).unwrap();
    let lines: Vec<&str> = hgrm.lines().collect();
    assert_eq!(lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)");
    assert_eq!(lines[1], "");
    assert!(lines[lines.len() - 3].starts_with("#[Mean    = "), "{hgrm}");
    assert!(
        lines[lines.len() - 2].starts_with("#[Max     = ") && lines[lines.len() - 2].ends_with("Total count    =         1000]"),
        "{hgrm}"
    );
    assert_eq!(lines[lines.len() - 1], "#[Buckets =           22, SubBuckets     =         2048]");
    let last_row: Vec<&str> = lines[lines.len() - 4].split_whitespace().collect();
    assert_eq!(last_row[1..], ["1.000000000000", "1000"], "{hgrm}");
    // The 50 % row carries the JSON's p50.
    let p50_row = lines.iter().find(|l| l.split_whitespace().nth(1) == Some("0.500000000000")).expect("50 % row");
    let v: f64 = p50_row.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(v, p50, "{hgrm}");
    let _ = std::fs::remove_dir_all(prefix.parent().unwrap());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

#[test]
fn unanswered_requests_count_as_lost() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let summary = client(&["--target", &addr, "--rate", "200", "--duration", "0.5", "--grace", "0.2"]);
    assert_eq!(summary["sent"], 100, "{summary}");
    assert_eq!(summary["lost"], 100, "{summary}");
    assert_eq!(summary["count"], 0, "{summary}");
    assert!(summary["p50_us"].is_null(), "{summary}");
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(BIN).args(["latency", "client", "--target", "127.0.0.1:9", "--rate", "0", "--duration", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
