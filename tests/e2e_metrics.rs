//! The metrics endpoint and `encapd stats`, end to end in namespaces: the
//! exposition parses with an independent Prometheus parser, counters move by
//! exactly the traffic sent, `stats --json` agrees with `/metrics`, and every
//! declared metric family (but the constant info metrics) changes under a
//! scenario that exercises it. Root only.

use encapd_testbed as common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use common::counters::METRICS;
use common::{CTR_A, CTR_B, Node, Topology, in_netns, ns_exec, require_root, wait_for};
use encapd::stats::scrape::{self, Sample};

fn scrape_text(t: &Topology, node: Node) -> String {
    common::counters::scrape(t.ns_of(node)).expect("GET /metrics")
}

fn samples(t: &Topology, node: Node) -> Vec<Sample> {
    let text = scrape_text(t, node);
    // An independent parser must accept the whole exposition.
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text exposition");
    assert!(!parsed.samples.is_empty());
    scrape::parse(&text).unwrap()
}

fn total(s: &[Sample], name: &str) -> f64 {
    scrape::sum(s, name, &[])
}

/// Sends `n` datagrams of `len` bytes ctrA → ctrB and waits until all arrived.
fn send_datagrams(t: &Topology, n: usize, len: usize) {
    send_between(&t.ctr_a, CTR_A, &t.ctr_b, CTR_B, n, len);
}

fn send_between(from_ns: &str, from: &str, to_ns: &str, to: &str, n: usize, len: usize) {
    let rx = in_netns(to_ns, || UdpSocket::bind((to, 9300)).unwrap());
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let tx = in_netns(from_ns, || UdpSocket::bind((from, 0)).unwrap());
    let payload = vec![7u8; len];
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        tx.send_to(&payload, (to, 9300)).unwrap();
        // One at a time: nothing may be lost to a full socket buffer.
        assert_eq!(rx.recv(&mut buf).expect("datagram arrives"), len);
    }
}

#[test]
fn counters_move_by_exactly_the_traffic_sent() {
    if !require_root() {
        return;
    }
    let t = Topology::new("uring");
    let (a0, b0) = (samples(&t, Node::A), samples(&t, Node::B));
    send_datagrams(&t, 1000, 100);
    let (a1, b1) = (samples(&t, Node::A), samples(&t, Node::B));
    let delta = |s1: &[Sample], s0: &[Sample], name: &str| total(s1, name) - total(s0, name);
    assert_eq!(delta(&a1, &a0, "encapd_tx_packets_total"), 1000.0, "A sent 1000 packets");
    assert_eq!(delta(&a1, &a0, "encapd_tx_bytes_total"), 1000.0 * 128.0, "inner IPv4+UDP+100 bytes each");
    assert_eq!(delta(&b1, &b0, "encapd_rx_packets_total"), 1000.0, "B delivered 1000 packets");
    assert_eq!(delta(&b1, &b0, "encapd_rx_bytes_total"), 1000.0 * 128.0);
    assert!(
        delta(&a1, &a0, "encapd_gateway_latency_seconds_count") >= 1000.0 || {
            // Workers hand their histograms over once a second: wait for it.
            let a2 = wait_for(Duration::from_secs(3), || {
                let s = samples(&t, Node::A);
                (delta(&s, &a0, "encapd_gateway_latency_seconds_count") >= 1000.0).then_some(())
            });
            a2.is_some()
        }
    );

    // `encapd stats --json` reads the same numbers (the topology is idle now).
    let o = ns_exec(
        &t.node_a,
        &[common::encapd_bin().to_str().unwrap(), "stats", "--json", "--interval", "0", "--addr", METRICS],
        Duration::from_secs(10),
    );
    assert!(o.ok(), "encapd stats failed: {}", o.text());
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("stats --json prints JSON");
    let now = samples(&t, Node::A);
    assert_eq!(v["tx"]["packets"].as_f64().unwrap(), total(&now, "encapd_tx_packets_total"));
    assert_eq!(v["tx"]["bytes"].as_f64().unwrap(), total(&now, "encapd_tx_bytes_total"));
    assert_eq!(v["rx"]["packets"].as_f64().unwrap(), total(&now, "encapd_rx_packets_total"));
    assert_eq!(v["engine"], "uring");
    assert_eq!(v["table_version"].as_f64().unwrap(), total(&now, "encapd_table_version"));
    let drops: f64 = v["drops"].as_object().unwrap().values().map(|n| n.as_f64().unwrap()).sum();
    assert_eq!(drops, total(&now, "encapd_drops_total"));
    assert!(v["latency_seconds"]["egress"]["p50"].as_f64().unwrap() > 0.0);
    // The text view works too.
    let o = ns_exec(
        &t.node_a,
        &[common::encapd_bin().to_str().unwrap(), "stats", "--interval", "0.2", "--addr", METRICS],
        Duration::from_secs(10),
    );
    assert!(o.ok() && o.stdout.contains("in-gateway latency"), "{}", o.text());
}

/// The value of every series, keyed by name and labels.
fn series(s: &[Sample]) -> BTreeMap<String, f64> {
    s.iter().map(|x| (format!("{}{:?}", x.name, x.labels), x.value)).collect()
}

/// Metric family names declared (# HELP lines).
fn families(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("# HELP ")).map(|l| l.split_whitespace().next().unwrap().to_owned()).collect()
}

#[test]
fn every_declared_metric_can_change() {
    if !require_root() {
        return;
    }
    let t = Topology::new("mmsg");
    let before_text = scrape_text(&t, Node::A);
    let before = series(&scrape::parse(&before_text).unwrap());
    // Traffic both ways, an ICMP-answered drop, a table change, a rejected
    // change (control unhealthy), then a good one again.
    send_datagrams(&t, 50, 200);
    send_between(&t.ctr_b, CTR_B, &t.ctr_a, CTR_A, 50, 200);
    let o = ns_exec(&t.ctr_a, &["ping", "-c", "1", "-W", "1", "100.96.7.7"], Duration::from_secs(5));
    assert!(o.text().contains("Unreachable"), "{}", o.text());
    // A flood of them runs the worker out of ICMP tokens (bursts of 100).
    ns_exec(&t.ctr_a, &["ping", "-f", "-c", "500", "-W", "1", "100.96.7.7"], Duration::from_secs(10));
    let peers = t.dir().join("a/peers.toml");
    let good = std::fs::read_to_string(&peers).unwrap();
    std::fs::write(&peers, "this is not toml [").unwrap();
    let mid = wait_for(Duration::from_secs(3), || {
        let s = scrape::parse(&scrape_text(&t, Node::A)).unwrap();
        (total(&s, "encapd_control_connected") == 0.0).then_some(series(&s))
    })
    .expect("a broken peers file marks the control source unhealthy");
    std::fs::write(&peers, good + "\n[[peer]]\nsubnet = \"100.96.3.0/24\"\npublic_ip = \"198.18.0.3\"\n").unwrap();
    let after_text = wait_for(Duration::from_secs(3), || {
        let text = scrape_text(&t, Node::A);
        let s = scrape::parse(&text).unwrap();
        // Both workers report version 2 (an idle one within its 100 ms wait).
        let workers_on_v2 = total(&s, "encapd_worker_table_version") >= 4.0;
        (total(&s, "encapd_table_version") >= 2.0 && workers_on_v2 && total(&s, "encapd_gateway_latency_seconds_count") > 0.0)
            .then_some(text)
    })
    .expect("the new table is published, taken by both workers, and latency recorded");
    let after = series(&scrape::parse(&after_text).unwrap());
    // Constant, or vxlan-only (ARP replies: tests/e2e_vxlan.rs checks them).
    let constant = ["encapd_engine_info", "encapd_offload_info", "encapd_arp_replies_total"];
    for family in families(&after_text) {
        if constant.contains(&family.as_str()) {
            continue;
        }
        let changed = after.iter().chain(mid.iter()).any(|(k, v)| {
            let name = k.split('{').next().unwrap();
            name.starts_with(&family) && before.get(k) != Some(v)
        });
        assert!(changed, "metric family {family} did not change under a scenario that exercises it");
    }
}
