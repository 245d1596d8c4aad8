//! The simulated fleet at N = 16 (`common::cluster`, what `encapd-bench
//! fleet --nodes 16 all` runs): 16 encapd nodes (one worker each) on one
//! bridged underlay, a 3-member etcd cluster holding flannel's leases, a
//! pod per node. Asserts that the full mesh of pods is reachable (before
//! and after churn and the upgrade), that a rolling `--takeover` upgrade of
//! every node under counted UDP streams and TCP transfers loses no
//! datagram and corrupts no byte, and that join and leave converge on
//! every node; prints the convergence figures. Everything lives in
//! namespaces the fleet creates and removes when it drops. Root only; a
//! few minutes on 2 cores.

use encapd_testbed as common;

use common::cluster::{Cluster, ClusterOptions, Step};
use common::{require_root, require_tools};

const NODES: usize = 16;

#[test]
fn fleet_of_16_mesh_join_leave_and_rolling_upgrade() {
    if !(require_root() && require_tools(&["etcd", "etcdctl", "bridge"])) {
        return;
    }
    let mut c = Cluster::up(ClusterOptions::new(NODES));
    c.run(&Step::ALL);
    let figs = &c.figures;
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
        eprintln!("{what}: {}", figs.get(key).unwrap_or("missing"));
    }
    assert!(figs.passed(), "the scenario failed: {:?}", figs.failures());

    // The full mesh: at the start, after join/leave churn, after the upgrade.
    let pairs = (NODES * (NODES - 1)) as f64;
    for check in ["mesh", "mesh_after_churn", "mesh_after_upgrade"] {
        assert_eq!(figs.num(&format!("{check}_pairs")), pairs, "{check}");
        assert_eq!(figs.num(&format!("{check}_ok")), pairs, "{check}: pod pairs unreachable");
        assert_eq!(figs.num(&format!("{check}_failed")), 0.0, "{check}");
    }

    // Join and leave converged on every node and were measured.
    for ev in ["join", "leave_delete", "leave_expiry"] {
        assert!(figs.num(&format!("{ev}_samples")) >= (NODES - 1) as f64, "{ev}: too few samples");
        assert!(figs.num(&format!("{ev}_published_p99_ms")).is_finite());
    }

    // Every node upgraded under counted traffic; nothing lost.
    assert_eq!(figs.num("upgrade_done"), NODES as f64, "not every node was taken over");
    assert_eq!(figs.num("upgrade_failed"), 0.0);
    assert!(figs.num("upgrade_udp_sent") > 0.0);
    assert_eq!(figs.num("upgrade_udp_lost"), 0.0, "datagrams lost across the rolling upgrade");
    assert_eq!(figs.num("upgrade_udp_send_errors"), 0.0);
    assert_eq!(figs.num("upgrade_tcp_ok"), figs.num("upgrade_tcp_transfers"), "a TCP transfer broke or differs");
    assert_eq!(figs.num("upgrade_leases_after"), NODES as f64);
}
