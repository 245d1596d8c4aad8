//! The simulated fleet at N = 16, through `scripts/cluster.sh --nodes 16
//! all`: 16 encapd nodes (one worker each) on one bridged underlay, a
//! 3-member etcd cluster holding flannel's leases, a pod per node. Asserts
//! that the full mesh of pods is reachable (before and after churn and the
//! upgrade), that a rolling `--takeover` upgrade of every node under
//! counted UDP streams and TCP transfers loses no datagram and corrupts no
//! byte, and that join and leave converge on every node; prints the
//! convergence figures. Everything lives in namespaces the script creates
//! and removes (its EXIT trap; the test sends SIGTERM, not SIGKILL, when
//! the script overruns, so that the trap runs). Root only; a few minutes
//! on 2 cores.

use encapd_testbed as common;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{signal, wait_child};
use common::{encapd_bin, require_root, require_tools};

const NODES: usize = 16;
/// The script's own bound; it normally takes 2 to 3 minutes here.
const DEADLINE: Duration = Duration::from_secs(420);

/// The `FIGURE key=value` lines of the script's stdout.
fn figures(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FIGURE "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn num(figs: &HashMap<String, String>, key: &str) -> f64 {
    let v = figs.get(key).unwrap_or_else(|| panic!("figure {key} missing; figures: {figs:?}"));
    v.parse().unwrap_or_else(|_| panic!("figure {key} = {v:?} is not a number"))
}

#[test]
fn fleet_of_16_mesh_join_leave_and_rolling_upgrade() {
    if !(require_root() && require_tools(&["etcd", "etcdctl", "python3"])) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");
    let mut child = Command::new("bash")
        .args([script, "--nodes", &NODES.to_string(), "all"])
        .env("ENCAPD", encapd_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting scripts/cluster.sh");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = match wait_child(&mut child, DEADLINE) {
        Some(st) => st,
        None => {
            // SIGTERM: the script's trap stops every process by pid and
            // deletes its namespaces; SIGKILL only if that hangs.
            signal(child.id() as i32, libc::SIGTERM);
            wait_child(&mut child, Duration::from_secs(90)).unwrap_or_else(|| {
                signal(child.id() as i32, libc::SIGKILL);
                child.wait().expect("reaping scripts/cluster.sh")
            });
            let (o, e) = (out.join().unwrap(), err.join().unwrap());
            panic!("scripts/cluster.sh overran {DEADLINE:?}\n--- stdout\n{o}\n--- stderr\n{e}");
        }
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    eprintln!("--- scripts/cluster.sh stderr\n{stderr}");
    let figs = figures(&stdout);
    for (key, what) in [
        ("setup_s", "fleet up (s)"),
        ("mesh_rtt_p50_ms", "mesh ping p50 (ms)"),
        ("join_published_p50_ms", "join: lease put -> table on every other node, p50 (ms)"),
        ("join_published_p99_ms", "join: lease put -> table on every other node, p99 (ms)"),
        ("join_start_published_p99_ms", "join: encapd start -> table on every other node, p99 (ms)"),
        ("leave_delete_published_p99_ms", "leave: lease deleted -> route gone on every other node, p99 (ms)"),
        ("leave_expiry_published_p99_ms", "leave: lease expired -> route gone on every other node, p99 (ms)"),
        ("upgrade_handover_p99_ms", "takeover: successor start -> predecessor exit, p99 (ms)"),
        ("upgrade_udp_sent", "UDP datagrams sent during the rolling upgrade"),
        ("upgrade_udp_lost", "... lost"),
        ("upgrade_tcp_max_gap_ms", "TCP longest receive gap (ms; harness stalls included)"),
        ("upgrade_harness_max_stall_ms", "the traffic harness's own longest stall (ms)"),
        ("encapd_rss_kib_median", "encapd RSS, median (KiB)"),
        ("encapd_threads_max", "encapd threads, max"),
    ] {
        eprintln!("{what}: {}", figs.get(key).map(String::as_str).unwrap_or("missing"));
    }
    assert!(
        status.success(),
        "scripts/cluster.sh failed ({status}):\n{}",
        stdout.lines().filter(|l| l.starts_with("RESULT")).collect::<String>()
    );
    assert!(stdout.lines().any(|l| l == "RESULT pass"), "no RESULT pass:\n{stdout}");

    // The full mesh: at the start, after join/leave churn, after the upgrade.
    let pairs = (NODES * (NODES - 1)) as f64;
    for check in ["mesh", "mesh_after_churn", "mesh_after_upgrade"] {
        assert_eq!(num(&figs, &format!("{check}_pairs")), pairs, "{check}");
        assert_eq!(num(&figs, &format!("{check}_ok")), pairs, "{check}: pod pairs unreachable");
        assert_eq!(num(&figs, &format!("{check}_failed")), 0.0, "{check}");
    }

    // Join and leave converged on every node and were measured.
    for ev in ["join", "leave_delete", "leave_expiry"] {
        assert!(num(&figs, &format!("{ev}_samples")) >= (NODES - 1) as f64, "{ev}: too few samples");
        assert!(num(&figs, &format!("{ev}_published_p99_ms")).is_finite());
    }

    // Every node upgraded under counted traffic; nothing lost.
    assert_eq!(num(&figs, "upgrade_done"), NODES as f64, "not every node was taken over");
    assert_eq!(num(&figs, "upgrade_failed"), 0.0);
    assert!(num(&figs, "upgrade_udp_sent") > 0.0);
    assert_eq!(num(&figs, "upgrade_udp_lost"), 0.0, "datagrams lost across the rolling upgrade");
    assert_eq!(num(&figs, "upgrade_udp_send_errors"), 0.0);
    assert_eq!(num(&figs, "upgrade_tcp_ok"), num(&figs, "upgrade_tcp_transfers"), "a TCP transfer broke or differs");
    assert_eq!(num(&figs, "upgrade_leases_after"), NODES as f64);
}
