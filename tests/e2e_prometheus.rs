//! encapd the way an operator monitors it: a real Prometheus server
//! (Debian's `prometheus`) scrapes a running encapd, and what it stores is
//! checked through its HTTP API — counters typed as counters, the tx rate
//! equal to the traffic sent, drops by reason, latency quantiles, every
//! query of the Grafana dashboard returning data, and the alert rules
//! evaluating cleanly. `promtool` lints the live exposition in the classic
//! format and checks and unit-tests the alert rules.
//!
//! The server runs inside nodeA's namespace (see `common::prometheus`);
//! nothing listens or sends outside the test's namespaces. Root-only tests
//! skip without root, and every test skips without `prometheus`/`promtool`
//! — unless `ENCAPD_REQUIRE_ROOT_TESTS=1`, which turns a skip into a failure.

use encapd_testbed as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::counters::METRICS;
use common::packets::Packet;
use common::prometheus::{PrometheusServer, encode, sample_value};
use common::{
    CTR_A, CTR_B, NODE_A_UNDERLAY, NODE_B_UNDERLAY, Options, PORT, Topology, in_netns, require_root, require_tools, run_cmd, set_rcvbuf,
};
use encapd::stats::format::PROMETHEUS_SCRAPE_ACCEPT;
use encapd::stats::scrape;
use serde_json::Value;

/// What `$__rate_interval` becomes when the test runs the dashboard's
/// queries (Prometheus scrapes every second here).
const RATE_INTERVAL: &str = "10s";
const T20: Duration = Duration::from_secs(20);
const T60: Duration = Duration::from_secs(60);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------
// promtool on the rules (no root needed)

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    if !require_tools(&["promtool"]) {
        return;
    }
    let dir = repo_file("dist/prometheus");
    let check = run_cmd(std::process::Command::new("promtool").args(["check", "rules", "encapd-rules.yml"]).current_dir(&dir), T20);
    assert!(check.ok(), "promtool check rules:\n{}", check.text());
    let test = run_cmd(std::process::Command::new("promtool").args(["test", "rules", "encapd-rules.test.yml"]).current_dir(&dir), T60);
    assert!(test.ok() && test.text().contains("SUCCESS"), "promtool test rules:\n{}", test.text());
}

// ---------------------------------------------------------------------------
// The dashboard file (no root needed)

/// Every panel of the dashboard, rows' nested panels included.
fn dashboard_panels() -> Vec<Value> {
    let path = repo_file("dist/grafana/encapd.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("dashboard has panels") {
        panels.push(panel.clone());
        panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
    }
    panels
}

/// `(panel title, PromQL)` of every query in the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard_panels() {
        for target in panel["targets"].as_array().cloned().unwrap_or_default() {
            let expr = target["expr"].as_str().unwrap_or_default().to_owned();
            out.push((panel["title"].as_str().unwrap_or_default().to_owned(), expr));
        }
    }
    out
}

/// A dashboard query with the template variables replaced as Grafana
/// would for this test's single target.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL).replace("$instance", METRICS)
}

#[test]
fn dashboard_is_well_formed() {
    let path = repo_file("dist/grafana/encapd.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let variables: BTreeSet<String> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(variables.contains("datasource") && variables.contains("instance"), "{variables:?}");
    let mut ids = BTreeSet::new();
    let panels = dashboard_panels();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(ids.insert(panel["id"].as_u64().expect("panel id")), "duplicate panel id in {title}");
        let (x, w) = (panel["gridPos"]["x"].as_u64().unwrap(), panel["gridPos"]["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the grid");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}: datasource");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "{title}: empty query");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target datasource");
            // Only variables the dashboard defines (or Grafana's own).
            for var in expr.split('$').skip(1) {
                let name: String = var.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(name == "__rate_interval" || variables.contains(&name), "{title}: unknown variable ${name} in {expr}");
            }
        }
    }
    let queries = dashboard_queries();
    let text = queries.iter().map(|(_, q)| q.as_str()).collect::<Vec<_>>().join("\n");
    // What the issue asks the dashboard to show.
    for needed in [
        "encapd_tx_bytes_total",
        "encapd_rx_packets_total",
        "encapd_drops_total",
        "histogram_quantile(0.99, sum by (le, direction) (rate(encapd_gateway_latency_seconds_bucket",
        "encapd_batch_packets_bucket",
        "encapd_table_version",
        "encapd_kernel_bytes_total",
        "encapd_kernel_encap_failed_total",
        "encapd_worker_table_version",
        "encapd_control_connected",
    ] {
        assert!(text.contains(needed), "the dashboard has no query on {needed}");
    }
}

// ---------------------------------------------------------------------------
// The live exposition in both formats (root)

/// `GET /metrics` from a node's encapd with `accept` as the Accept header;
/// returns the Content-Type and the body.
fn fetch_metrics(ns: &str, accept: Option<&str>) -> (String, String) {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let mut stream = in_netns(ns, || TcpStream::connect_timeout(&addr, Duration::from_secs(3))).expect("connect to /metrics");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {METRICS}\r\n{accept}\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_owned()))
        .expect("a Content-Type header");
    (content_type, body.to_owned())
}

/// Series (name and labels, `le` as a number) and their values.
fn series(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for mut s in scrape::parse(text).expect("parses") {
        if let Some(le) = s.labels.get_mut("le") {
            *le = format!("{:?}", if le == "+Inf" { f64::INFINITY } else { le.parse::<f64>().unwrap() });
        }
        out.insert(format!("{}{:?}", s.name, s.labels), s.value);
    }
    out
}

#[test]
fn live_exposition_negotiates_and_passes_promtool() {
    if !require_root() || !require_tools(&["promtool"]) {
        return;
    }
    let t = Topology::new("uring");
    // Some traffic, so that histograms and counters are not all zero.
    let o = t.ping(&t.ctr_a, &["-c", "3", "-i", "0.2", "-W", "1", CTR_B]);
    assert!(o.ok(), "{}", o.text());

    let (content_type, classic) = fetch_metrics(&t.node_a, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!classic.contains("# EOF") && classic.contains("# TYPE encapd_tx_packets_total counter"), "{classic}");
    let file = t.dir().join("metrics.prom");
    std::fs::write(&file, &classic).unwrap();
    let lint =
        run_cmd(std::process::Command::new("sh").args(["-c", "exec promtool check metrics < \"$1\"", "sh", file.to_str().unwrap()]), T20);
    assert!(lint.ok() && lint.text().trim().is_empty(), "promtool check metrics (exit {}):\n{}", lint.status, lint.text());

    let (content_type, openmetrics) = fetch_metrics(&t.node_a, Some(PROMETHEUS_SCRAPE_ACCEPT));
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(openmetrics.ends_with("# EOF\n") && openmetrics.contains("# TYPE encapd_tx_packets counter"), "{openmetrics}");
    // The same series in both. (Values may differ: the workers hand their
    // latency histograms over once a second, between the two scrapes.)
    let (a, b) = (series(&classic), series(&openmetrics));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "both formats carry the same series");
    let (_, explicit) = fetch_metrics(&t.node_a, Some("text/plain; version=0.0.4"));
    assert!(explicit.contains("# TYPE encapd_tx_packets_total counter"));
}

// ---------------------------------------------------------------------------
// Test traffic with a record of what was sent when

/// What a paced sender sent: `(Unix time, datagrams sent so far)` about
/// every 20 ms.
struct SendLog(Vec<(f64, u64)>);

impl SendLog {
    /// Datagrams sent by Unix time `t` (linear between records).
    fn sent_by(&self, t: f64) -> f64 {
        let after = self.0.iter().position(|&(at, _)| at >= t).unwrap_or(self.0.len());
        match (after.checked_sub(1).map(|i| self.0[i]), self.0.get(after)) {
            (Some((t0, n0)), Some(&(t1, n1))) if t1 > t0 => n0 as f64 + (n1 - n0) as f64 * (t - t0) / (t1 - t0),
            (Some((_, n)), _) | (None, Some(&(_, n))) => n as f64,
            (None, None) => 0.0,
        }
    }

    /// Datagrams per second sent in the `window` seconds up to `t`.
    fn rate(&self, t: f64, window: f64) -> f64 {
        (self.sent_by(t) - self.sent_by(t - window)) / window
    }
}

/// Sends `payload(i)` from a socket bound to `from` in `from_ns` to `to`,
/// `rate` datagrams per second for `duration` (so at most rate × duration
/// datagrams), on a thread; joins to the [`SendLog`].
fn paced_sender(
    from_ns: &str,
    from: Ipv4Addr,
    to: SocketAddr,
    rate: u32,
    duration: Duration,
    payload: impl Fn(u64) -> Vec<u8> + Send + 'static,
) -> JoinHandle<SendLog> {
    let socket = in_netns(from_ns, || UdpSocket::bind((from, 0))).expect("binding the sender");
    std::thread::spawn(move || {
        let start = Instant::now();
        let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
        let (mut sent, mut log) = (0u64, vec![(unix_now(), 0)]);
        let mut last_record = start;
        for i in 0..total {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // A refused send (an ICMP error reported back) sent nothing.
            if socket.send_to(&payload(i), to).is_ok() {
                sent += 1;
            }
            if last_record.elapsed() >= Duration::from_millis(20) {
                log.push((unix_now(), sent));
                last_record = Instant::now();
            }
        }
        log.push((unix_now(), sent));
        SendLog(log)
    })
}

/// A UDP socket bound in `ns` that a thread drains until `stop` is set
/// (so the receiving container answers nothing, not even ICMP).
fn drain(ns: &str, addr: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let socket = in_netns(ns, || UdpSocket::bind(addr)).expect("binding the receiver");
    set_rcvbuf(&socket, 8 << 20);
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut received = 0;
        while !stop.load(Ordering::Relaxed) {
            if socket.recv(&mut buf).is_ok() {
                received += 1;
            }
        }
        received
    })
}

// ---------------------------------------------------------------------------
// Prometheus scraping encapd (root)

const TX_RATE: u32 = 1000;
const RX_RATE: u32 = 400;
const DROP_RATE: u32 = 20;
const TRAFFIC: Duration = Duration::from_secs(22);
/// When, after the traffic started, the queries are evaluated: late enough
/// that the 10 s window lies entirely inside steady traffic.
const MEASURE_AT: Duration = Duration::from_secs(15);

#[test]
fn prometheus_scrapes_encapd_as_intended() {
    if !require_root() || !require_tools(&["prometheus", "promtool"]) {
        return;
    }
    let t = Topology::new("uring");
    // Declared after the topology: dropped (stopped) before its namespaces go.
    let prom = PrometheusServer::start(&t.node_a, &[METRICS], &[repo_file("dist/prometheus/encapd-rules.yml")]);
    let up = common::wait_for(Duration::from_secs(30), || (prom.query_value("up{job=\"encapd\"}", None) == Some(1.0)).then_some(()));
    assert!(up.is_some(), "Prometheus never scraped encapd successfully: {}", prom.api("targets"));

    // Known traffic through nodeA: ctrA → ctrB (nodeA's egress), ctrB → ctrA
    // (its ingress), and two kinds of drops at nodeA: datagrams to an
    // overlay address no peer owns (no_route, answered with ICMP), and
    // tunnel datagrams from nodeB whose inner source is not nodeB's (spoofed_source).
    let stop = Arc::new(AtomicBool::new(false));
    let sink_b = drain(&t.ctr_b, SocketAddr::from(([100, 96, 2, 3], 9400)), Arc::clone(&stop));
    let sink_a = drain(&t.ctr_a, SocketAddr::from(([100, 96, 1, 2], 9400)), Arc::clone(&stop));
    let started = unix_now();
    let tx =
        paced_sender(&t.ctr_a, CTR_A.parse().unwrap(), SocketAddr::from(([100, 96, 2, 3], 9400)), TX_RATE, TRAFFIC, |_| vec![1u8; 200]);
    let rx =
        paced_sender(&t.ctr_b, CTR_B.parse().unwrap(), SocketAddr::from(([100, 96, 1, 2], 9400)), RX_RATE, TRAFFIC, |_| vec![2u8; 200]);
    let no_route =
        paced_sender(&t.ctr_a, CTR_A.parse().unwrap(), SocketAddr::from(([100, 96, 7, 7], 9400)), DROP_RATE, TRAFFIC, |_| vec![3u8; 64]);
    let spoofed_packet = Packet::new([100, 96, 9, 9], [100, 96, 1, 2]).udp(5000, 9400, &[4u8; 64]);
    let underlay_a = SocketAddr::new(NODE_A_UNDERLAY.parse().unwrap(), PORT);
    let spoofed =
        paced_sender(&t.node_b, NODE_B_UNDERLAY.parse().unwrap(), underlay_a, DROP_RATE, TRAFFIC, move |_| spoofed_packet.clone());
    let measured_at = started + MEASURE_AT.as_secs_f64();
    let (tx, rx) = (tx.join().unwrap(), rx.join().unwrap());
    let (no_route, spoofed) = (no_route.join().unwrap(), spoofed.join().unwrap());
    stop.store(true, Ordering::Relaxed);
    let (got_b, got_a) = (sink_b.join().unwrap(), sink_a.join().unwrap());
    eprintln!(
        "sent {} / {} datagrams each way ({} / {} received), {} to no route, {} spoofed",
        tx.sent_by(f64::MAX),
        rx.sent_by(f64::MAX),
        got_b,
        got_a,
        no_route.sent_by(f64::MAX),
        spoofed.sent_by(f64::MAX)
    );
    // Scrapes after `measured_at` are in by now; give the last ones a moment.
    std::thread::sleep(Duration::from_secs(2));
    let at = Some(measured_at);

    scrape_is_healthy_and_openmetrics(&prom);
    counters_are_typed_counters(&prom);

    // rate() over 10 s equals what was sent in those 10 s.
    for (query, log, what) in [
        ("sum(rate(encapd_tx_packets_total[10s]))", &tx, "egress (ctrA → ctrB)"),
        ("sum(rate(encapd_rx_packets_total[10s]))", &rx, "ingress (ctrB → ctrA)"),
    ] {
        let sent = log.rate(measured_at, 10.0);
        let seen = prom.query_value(query, at).unwrap_or_else(|| panic!("{query}: no data"));
        eprintln!("{what}: Prometheus {seen:.1}/s, sent {sent:.1}/s");
        assert!((seen - sent).abs() <= 0.1 * sent, "{query} = {seen:.1}/s but {sent:.1} datagrams/s were sent ({what})");
    }
    // Per-worker series exist for every worker.
    let workers = prom.query("rate(encapd_tx_packets_total[10s])", at);
    assert_eq!(workers.len(), 2, "one series per worker: {workers:?}");

    // Drops by reason, with their labels.
    for reason in ["no_route", "spoofed_source"] {
        let series = prom.query(&format!("rate(encapd_drops_total{{reason=\"{reason}\"}}[10s]) > 0"), at);
        assert!(!series.is_empty(), "no {reason} drops in Prometheus");
        for s in &series {
            let labels = &s["metric"];
            assert_eq!(labels["reason"], reason);
            assert!(labels["worker"].as_str().is_some_and(|w| w == "0" || w == "1"), "worker label: {labels}");
            assert_eq!(labels["job"], "encapd");
            assert_eq!(labels["instance"], METRICS);
        }
        let rate: f64 = series.iter().map(sample_value).sum();
        let sent = if reason == "no_route" { no_route.rate(measured_at, 10.0) } else { spoofed.rate(measured_at, 10.0) };
        assert!((rate - sent).abs() <= 0.25 * sent, "{reason}: {rate:.1}/s dropped, {sent:.1}/s sent");
    }

    // Latency quantiles from the histogram, both directions.
    let quantiles = prom.query("histogram_quantile(0.99, sum by (le, direction) (rate(encapd_gateway_latency_seconds_bucket[10s])))", at);
    let directions: BTreeSet<&str> = quantiles.iter().filter_map(|s| s["metric"]["direction"].as_str()).collect();
    assert_eq!(directions, BTreeSet::from(["egress", "ingress"]), "{quantiles:?}");
    for s in &quantiles {
        let v = sample_value(s);
        assert!(v.is_finite() && v > 0.0 && v < 1.0, "p99 in-gateway latency {v} s: {s}");
    }

    every_dashboard_query_returns_data(&prom, measured_at, |expr| !reads_the_kernel_path(expr));
    alert_rules_evaluate_cleanly(&prom);
}

/// Queries of the dashboard's "Kernel path" row: they answer only for a
/// node with `kernel_path = "tc"`.
fn reads_the_kernel_path(expr: &str) -> bool {
    expr.contains("encapd_kernel_")
}

/// A node with the kernel path (both nodes run it): what its eBPF programs
/// carried reaches Prometheus as intended, the rate of encapsulated
/// packets equals what was sent, and every query of the dashboard's
/// kernel-path row answers.
#[test]
fn prometheus_reads_the_kernel_path() {
    if !require_root() || !require_tools(&["prometheus", "promtool"]) {
        return;
    }
    let mut opts = Options::new("uring");
    opts.extra_a = "kernel_path = \"tc\"\n".into();
    opts.extra_b = "kernel_path = \"tc\"\n".into();
    opts.peer_extra_a = "kernel_decap = true\n".into();
    opts.peer_extra_b = "kernel_decap = true\n".into();
    let t = Topology::with(opts);
    let prom = PrometheusServer::start(&t.node_a, &[METRICS], &[repo_file("dist/prometheus/encapd-rules.yml")]);
    let up = common::wait_for(Duration::from_secs(30), || (prom.query_value("up{job=\"encapd\"}", None) == Some(1.0)).then_some(()));
    assert!(up.is_some(), "Prometheus never scraped encapd successfully: {}", prom.api("targets"));

    let stop = Arc::new(AtomicBool::new(false));
    let sink_b = drain(&t.ctr_b, SocketAddr::from(([100, 96, 2, 3], 9400)), Arc::clone(&stop));
    let started = unix_now();
    let tx =
        paced_sender(&t.ctr_a, CTR_A.parse().unwrap(), SocketAddr::from(([100, 96, 2, 3], 9400)), TX_RATE, TRAFFIC, |_| vec![1u8; 200]);
    let measured_at = started + MEASURE_AT.as_secs_f64();
    let tx = tx.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let got = sink_b.join().unwrap();
    eprintln!("sent {} datagrams ({got} received)", tx.sent_by(f64::MAX));
    std::thread::sleep(Duration::from_secs(2));

    let query = "sum(rate(encapd_kernel_packets_total{direction=\"egress\"}[10s]))";
    let sent = tx.rate(measured_at, 10.0);
    let seen = prom.query_value(query, Some(measured_at)).unwrap_or_else(|| panic!("{query}: no data"));
    eprintln!("kernel egress: Prometheus {seen:.1}/s, sent {sent:.1}/s");
    assert!((seen - sent).abs() <= 0.1 * sent, "{query} = {seen:.1}/s but {sent:.1} datagrams/s were sent");
    // Nothing dropped half-built; the packets handed to the workers while
    // the underlay neighbour resolved are counted apart (reason="no_neighbour").
    let failed = prom.query_value("sum(encapd_kernel_encap_failed_total{reason=\"dropped\"})", Some(measured_at));
    assert_eq!(failed, Some(0.0), "the failure counter is there, at zero");
    let reasons = prom.query_value("count(encapd_kernel_encap_failed_total)", Some(measured_at));
    assert_eq!(reasons, Some(3.0), "one series per reason: dropped, no_route, no_neighbour");
    every_dashboard_query_returns_data(&prom, measured_at, reads_the_kernel_path);
    alert_rules_evaluate_cleanly(&prom);
}

/// The target is up with no scrape error, and Prometheus read OpenMetrics
/// (its metadata names the counter family, not the `_total` sample).
fn scrape_is_healthy_and_openmetrics(prom: &PrometheusServer) {
    let targets = prom.api("targets");
    let active = targets["activeTargets"].as_array().expect("active targets");
    assert_eq!(active.len(), 1, "{targets}");
    assert_eq!(active[0]["health"], "up", "{targets}");
    assert_eq!(active[0]["lastError"], "", "{targets}");
    let metadata = prom.api(&format!("metadata?metric={}", encode("encapd_tx_packets")));
    assert_eq!(metadata["encapd_tx_packets"][0]["type"], "counter", "OpenMetrics family metadata: {metadata}");
}

/// Every encapd family has metadata with a type and help; the counters are counters.
fn counters_are_typed_counters(prom: &PrometheusServer) {
    let metadata = prom.api("metadata");
    let families: BTreeMap<&str, &Value> = metadata
        .as_object()
        .expect("metadata map")
        .iter()
        .filter(|(k, _)| k.starts_with("encapd_"))
        .map(|(k, v)| (k.as_str(), &v[0]))
        .collect();
    for counter in [
        "encapd_tx_packets",
        "encapd_tx_bytes",
        "encapd_tx_sends",
        "encapd_rx_packets",
        "encapd_rx_bytes",
        "encapd_rx_receives",
        "encapd_icmp_sent",
        "encapd_drops",
        "encapd_tables_published",
        "encapd_reload_failures",
    ] {
        let m = families.get(counter).unwrap_or_else(|| panic!("no metadata for {counter}: {metadata}"));
        assert_eq!(m["type"], "counter", "{counter}: {m}");
    }
    for histogram in ["encapd_gateway_latency_seconds", "encapd_batch_packets"] {
        assert_eq!(families[histogram]["type"], "histogram", "{histogram}");
    }
    for (name, m) in &families {
        assert!(m["type"] != "unknown" && m["help"].as_str().is_some_and(|h| !h.is_empty()), "{name}: {m}");
        assert!(!name.ends_with("_total"), "{name}: a counter sample read as its own family (classic parse of OpenMetrics?)");
    }
}

/// Runs every dashboard query that `selected` picks at `at` (the template
/// variables filled in for this test's target); each must answer at least
/// one finite value.
fn every_dashboard_query_returns_data(prom: &PrometheusServer, at: f64, selected: fn(&str) -> bool) {
    let instances = prom.api(&format!("label/instance/values?{}={}", encode("match[]"), encode("encapd_engine_info")));
    assert!(instances.as_array().is_some_and(|a| a.iter().any(|i| i == METRICS)), "the $instance variable finds {instances}");
    let queries: Vec<(String, String)> = dashboard_queries().into_iter().filter(|(_, q)| selected(q)).collect();
    assert!(queries.len() >= 3, "{queries:?}");
    for (panel, expr) in queries {
        let promql = concrete(&expr);
        let result = prom.query(&promql, Some(at));
        assert!(
            result.iter().map(sample_value).any(f64::is_finite),
            "dashboard panel {panel:?}: query {promql} returned no data: {result:?}"
        );
    }
}

/// Every alert rule has been evaluated without error against the live series.
fn alert_rules_evaluate_cleanly(prom: &PrometheusServer) {
    let rules = prom.api("rules");
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().unwrap_or("?");
            assert_eq!(rule["health"], "ok", "rule {name}: {rule}");
            names.insert(name.to_owned());
        }
    }
    let expected = [
        "EncapdDown",
        "EncapdControlDisconnected",
        "EncapdTableStale",
        "EncapdPeersSilent",
        "EncapdDropsRising",
        "EncapdSendFailures",
        "EncapdWorkerTableBehind",
        "EncapdKernelEncapFailing",
        "EncapdKernelPeerUnreachable",
    ];
    assert_eq!(names, expected.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
}
