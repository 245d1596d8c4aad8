//! The control plane under load, end to end in namespaces: the peers file is
//! rewritten while a counted UDP stream flows, and nothing of the stream is
//! lost; peers come and go exactly as the file says; a broken file leaves the
//! previous table in force and counts a reload failure; SIGHUP applies a
//! change the file watcher could not see. Root only.

use encapd_testbed as common;

use std::net::SocketAddr;
use std::time::Duration;

use common::topology::replace_file;
use common::traffic::{StreamResult, counted_udp_stream};
use common::{CTR_A, CTR_B, Node, Topology, require_root, wait_for};

const STREAM_PORT: u16 = 9100;

/// Node A's peers file: B (always), plus Y and Z when asked. Y and Z point at
/// B's underlay address: traffic to them is forwarded (and dropped by B as not
/// for its subnet), so "reachable" here means "routed, no ICMP unreachable".
fn peers_text(y: bool, z: bool) -> String {
    let mut t = String::from("[[peer]]\nsubnet = \"100.96.2.0/24\"\nsubnet6 = \"fd00:96:2::/64\"\npublic_ip = \"198.18.0.2\"\n");
    if y {
        t.push_str("\n[[peer]]\nsubnet = \"100.96.3.0/24\"\npublic_ip = \"198.18.0.2\"\n");
    }
    if z {
        t.push_str("\n[[peer]]\nsubnet = \"100.96.4.0/24\"\npublic_ip = \"198.18.0.2\"\n");
    }
    t
}

/// The newest published table version in the node's log.
fn published_version(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("subnet table version ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.trim_end_matches(':').parse().ok())
        .max()
        .unwrap_or(0)
}

/// Sends `count` numbered datagrams from ctrA to ctrB at `rate` per second
/// while `during` runs.
fn counted_stream(ns_a: &str, ns_b: &str, count: u32, rate: u32, during: impl FnOnce()) -> StreamResult {
    let (from, to) = (CTR_A.parse().unwrap(), SocketAddr::new(CTR_B.parse().unwrap(), STREAM_PORT));
    counted_udp_stream(ns_a, from, ns_b, to, count, rate, during)
}

#[test]
fn peers_file_rewritten_100_times_under_load_loses_nothing() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new("uring");
    let peers = t.dir().join("a/peers.toml");
    let log_path = t.dir().join("a/encapd.log");
    let start_version = published_version(&t.log(Node::A));
    let mut checked = 0;
    let r = counted_stream(&t.ctr_a.clone(), &t.ctr_b.clone(), 50_000, 5_000, || {
        for i in 0..100u64 {
            let (y, z) = (i % 2 == 0, i % 3 == 0);
            replace_file(&peers, &peers_text(y, z));
            // Each rewrite changes the table: wait until this one is published.
            let want = start_version + i + 1;
            let published = wait_for(Duration::from_secs(1), || {
                let log = std::fs::read_to_string(&log_path).ok()?;
                (published_version(&log) >= want).then_some(())
            });
            assert!(published.is_some(), "rewrite {i} not applied within 1 s:\n{}", t.log(Node::A));
            if i % 10 == 0 {
                assert_eq!(t.unreachable("100.96.3.1"), !y, "rewrite {i}: Y should be {}", if y { "routed" } else { "unreachable" });
                assert_eq!(t.unreachable("100.96.4.1"), !z, "rewrite {i}: Z should be {}", if z { "routed" } else { "unreachable" });
                checked += 1;
            } else {
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    });
    assert_eq!(checked, 10);
    let (ca, cb) = (t.counters(Node::A), t.counters(Node::B));
    assert_eq!(
        (r.sent, r.unique, r.dups, r.foreign),
        (50_000, 50_000, 0, 0),
        "every datagram to X arrives exactly once, intact\nA: {ca:?}\nB: {cb:?}"
    );
    let c = ca;
    assert_eq!(c.reload_failures, 0, "no valid rewrite was rejected");
    assert!(c.tables_published >= 100, "{c:?}");
}

#[test]
fn broken_peers_file_keeps_the_old_table() {
    if !require_root() {
        return;
    }
    let mut t = Topology::new("uring");
    let peers = t.dir().join("a/peers.toml");
    let good = peers_text(true, false);
    t.replace_peers(Node::A, &good);
    assert!(t.wait_unreachable("100.96.3.1", false, Duration::from_secs(2)), "Y added");
    let broken = [
        ("bad CIDR", good.replace("100.96.3.0/24", "100.96.3.0/33")),
        ("duplicate prefix", good.replace("100.96.3.0/24", "100.96.2.0/24")),
        ("unknown key", good.replace("public_ip = \"198.18.0.2\"\n", "public_ip = \"198.18.0.2\"\ncolour = \"red\"\n")),
        ("truncated TOML", good[..good.len() - 12].to_owned()),
        ("empty file", String::new()),
    ];
    let r = counted_stream(&t.ctr_a.clone(), &t.ctr_b.clone(), 10_000, 5_000, || {
        for (k, (what, text)) in broken.iter().enumerate() {
            // Written in place, the way a careless editor would.
            std::fs::write(&peers, text).unwrap();
            let c = t.counters_until(Node::A, Duration::from_secs(2), |c| c.reload_failures > k as u64);
            assert_eq!(c.reload_failures, k as u64 + 1, "{what}: rejection counted");
            assert!(t.log(Node::A).contains("rejected"), "{what}: rejection logged");
            assert!(!t.unreachable("100.96.3.1"), "{what}: the old table (with Y) stays in force");
        }
    });
    assert_eq!((r.sent, r.unique), (10_000, 10_000), "traffic continued through every broken write");
    // A valid file is applied again afterwards.
    t.replace_peers(Node::A, &peers_text(false, false));
    assert!(t.wait_unreachable("100.96.3.1", true, Duration::from_secs(2)), "Y removed");
}

/// SIGHUP must re-read the peers file even when the file watcher saw
/// nothing. The watcher watches the directory of the configured path
/// (inotify), so here that path is a symlink into another directory: a
/// change to the file it points to raises no event where encapd looks.
/// The test first shows that nothing is applied without SIGHUP (if the
/// watcher did see it, the test could not tell SIGHUP's work from the
/// watcher's and fails), then that SIGHUP applies it at once: the added
/// peer is routed and the removed one unreachable. With SIGHUP ignored,
/// the change is never applied and the test fails.
#[test]
fn sighup_applies_a_change_the_file_watcher_did_not_see() {
    if !require_root() {
        return;
    }
    let t = Topology::new("mmsg");
    let (y, z) = ("100.96.3.1", "100.96.4.1");
    // a/peers.toml -> elsewhere/peers.toml, with Y. Swapping the symlink
    // in happens in encapd's directory, so the watcher applies it.
    let target = t.dir().join("elsewhere/peers.toml");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, peers_text(true, false)).unwrap();
    let link = t.dir().join("a/peers.toml");
    let tmp_link = t.dir().join("a/peers.toml.link");
    std::os::unix::fs::symlink(&target, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &link).unwrap();
    assert!(t.wait_unreachable(y, false, Duration::from_secs(2)), "Y (added through the symlink swap) routed:\n{}", t.log(Node::A));
    let published = |t: &Topology| t.metric(Node::A, "encapd_tables_published_total").expect("encapd_tables_published_total");
    let before = published(&t);

    // Y out, Z in, in the other directory: no event where encapd looks.
    replace_file(&target, &peers_text(false, true));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(published(&t), before, "the watcher saw a change outside its directory; this test needs one it cannot see");
    assert!(!t.unreachable(y) && t.unreachable(z), "without SIGHUP the old table (Y, no Z) stays in force");

    t.signal(Node::A, libc::SIGHUP);
    assert!(t.wait_unreachable(z, false, Duration::from_secs(1)), "Z not routed within 1 s of SIGHUP:\n{}", t.log(Node::A));
    assert!(t.unreachable(y), "Y still routed after SIGHUP");
    assert_eq!(published(&t), before + 1.0, "one table for one SIGHUP");
    assert_eq!(t.metric(Node::A, "encapd_reload_failures_total"), Some(0.0));
    assert!(t.log(Node::A).contains("SIGHUP: reloading the peers file"), "{}", t.log(Node::A));

    // A second SIGHUP with nothing changed publishes nothing.
    t.signal(Node::A, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(published(&t), before + 1.0, "no-op reload publishes nothing");
}
