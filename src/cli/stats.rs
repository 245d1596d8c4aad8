//! `encapd stats`: a view of a running daemon, read from its `/metrics`:
//! engine and offloads, table version and peers, rates per direction (from
//! two scrapes `--interval` apart), drops by reason, in-gateway latency
//! percentiles. `--json` prints the same as one JSON object.
//!
//! Percentiles come from the `encapd_gateway_latency_seconds` buckets, the
//! way `histogram_quantile` computes them: over the interval between the two
//! scrapes, or since start-up with `--interval 0` (`count` is the number
//! of packets they describe).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::stats::DropReason;
use crate::stats::quantile::histogram_quantile;
use crate::stats::scrape::{self, Sample, buckets, label, sum};

/// Percentiles shown, with their JSON keys.
const PERCENTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")];

/// Builds the summary from a scrape (`now`) and, for rates, an earlier one
/// taken `elapsed` before.
pub fn summarize(now: &[Sample], before: Option<(&[Sample], Duration)>) -> Value {
    let total = |s: &[Sample], name: &str| sum(s, name, &[]);
    let rate = |name: &str| {
        before.map(|(b, dt)| {
            let d = total(now, name) - total(b, name);
            if dt.as_secs_f64() > 0.0 { d.max(0.0) / dt.as_secs_f64() } else { 0.0 }
        })
    };
    let direction = |prefix: &str, ops: &str| {
        json!({
            "packets": total(now, &format!("encapd_{prefix}_packets_total")) as u64,
            "bytes": total(now, &format!("encapd_{prefix}_bytes_total")) as u64,
            ops: total(now, &format!("encapd_{prefix}_{ops}_total")) as u64,
            "packets_per_second": rate(&format!("encapd_{prefix}_packets_total")),
            "bits_per_second": rate(&format!("encapd_{prefix}_bytes_total")).map(|r| r * 8.0),
        })
    };
    let mut drops = serde_json::Map::new();
    for r in DropReason::ALL {
        let n = sum(now, "encapd_drops_total", &[("reason", r.name())]) as u64;
        if n > 0 {
            drops.insert(r.name().to_owned(), json!(n));
        }
    }
    let mut latency = serde_json::Map::new();
    for dir in ["egress", "ingress"] {
        latency.insert(dir.into(), latency_percentiles(now, before.map(|(b, _)| b), dir));
    }
    json!({
        "engine": label(now, "encapd_engine_info", "engine"),
        "tun_offloads": label(now, "encapd_offload_info", "tun"),
        "udp_gso": label(now, "encapd_offload_info", "udp_gso"),
        "udp_gro": label(now, "encapd_offload_info", "udp_gro"),
        "table_version": total(now, "encapd_table_version") as u64,
        "routes": total(now, "encapd_routes") as u64,
        "peers": total(now, "encapd_peers") as u64,
        "control_connected": total(now, "encapd_control_connected") as u64 == 1,
        "tables_published": total(now, "encapd_tables_published_total") as u64,
        "reload_failures": total(now, "encapd_reload_failures_total") as u64,
        "tx": direction("tx", "sends"),
        "rx": direction("rx", "receives"),
        "icmp_sent": total(now, "encapd_icmp_sent_total") as u64,
        "drops": Value::Object(drops),
        "latency_seconds": Value::Object(latency),
    })
}

/// Latency percentiles (seconds; `null` without observations) and the
/// observation count of one direction, over the packets seen between
/// `before` and `now` (or since start-up).
fn latency_percentiles(now: &[Sample], before: Option<&[Sample]>, dir: &str) -> Value {
    const NAME: &str = "encapd_gateway_latency_seconds";
    let filter = [("direction", dir)];
    let mut window = buckets(now, NAME, &filter);
    let mut count = sum(now, &format!("{NAME}_count"), &filter);
    if let Some(before) = before {
        let earlier = buckets(before, NAME, &filter);
        for (le, n) in &mut window {
            *n -= earlier.iter().find(|(b, _)| b == le).map_or(0.0, |(_, m)| *m);
        }
        count -= sum(before, &format!("{NAME}_count"), &filter);
    }
    let mut out = serde_json::Map::new();
    for (q, key) in PERCENTILES {
        out.insert(key.into(), json!(histogram_quantile(q, &window)));
    }
    out.insert("count".into(), json!(count.max(0.0) as u64));
    Value::Object(out)
}

/// The human-readable rendering of [`summarize`]'s output.
pub fn render_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let mut out = format!(
        "engine {} (TUN offloads {}, UDP GSO {}, GRO {})\ntable version {}: {} routes, {} peers; control {}; {} tables published, {} rejected\n",
        s("engine"),
        s("tun_offloads"),
        s("udp_gso"),
        s("udp_gro"),
        v["table_version"],
        v["routes"],
        v["peers"],
        if v["control_connected"].as_bool() == Some(true) { "ok" } else { "FAILING" },
        v["tables_published"],
        v["reload_failures"],
    );
    for (dir, name) in [("tx", "egress  (TUN -> peers)"), ("rx", "ingress (peers -> TUN)")] {
        let d = &v[dir];
        let pps = d["packets_per_second"].as_f64().map_or("-".into(), |r| format!("{:.0} pkt/s", r));
        let bps = d["bits_per_second"].as_f64().map_or("-".into(), |r| format!("{:.3} Gbit/s", r / 1e9));
        out.push_str(&format!("{name}: {pps}, {bps}; total {} packets, {} bytes\n", d["packets"], d["bytes"]));
    }
    out.push_str(&format!("icmp errors sent: {}\n", v["icmp_sent"]));
    match v["drops"].as_object() {
        Some(d) if !d.is_empty() => {
            out.push_str("drops:\n");
            for (k, n) in d {
                out.push_str(&format!("  {k:<20} {n}\n"));
            }
        }
        _ => out.push_str("drops: none\n"),
    }
    out.push_str("in-gateway latency (us):     p50      p90      p99    p99.9    count  (from histogram buckets)\n");
    for dir in ["egress", "ingress"] {
        let l = &v["latency_seconds"][dir];
        let us = |k: &str| l[k].as_f64().map_or("-".to_owned(), |s| format!("{:.1}", s * 1e6));
        out.push_str(&format!(
            "  {dir:<8}               {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            us("p50"),
            us("p90"),
            us("p99"),
            us("p99.9"),
            l["count"].as_u64().unwrap_or(0)
        ));
    }
    out
}

/// Runs `encapd stats`; returns the exit code.
pub fn run(addr: SocketAddr, interval: Duration, json_out: bool) -> u8 {
    let first = match scrape::fetch(addr).map_err(|e| e.to_string()).and_then(|t| scrape::parse(&t)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read metrics from http://{addr}/metrics: {e}");
            return 1;
        }
    };
    let value = if interval.is_zero() {
        summarize(&first, None)
    } else {
        std::thread::sleep(interval);
        match scrape::fetch(addr).map_err(|e| e.to_string()).and_then(|t| scrape::parse(&t)) {
            Ok(second) => summarize(&second, Some((&first, interval))),
            Err(e) => {
                eprintln!("error: cannot read metrics from http://{addr}/metrics: {e}");
                return 1;
            }
        }
    };
    if json_out {
        println!("{value}");
    } else {
        print!("{}", render_text(&value));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exposition with `fast` egress observations ≤ 10 µs and `slow` ones in (10, 100] µs.
    fn scrape_with(fast: u64, slow: u64) -> Vec<Sample> {
        let total = fast + slow;
        let text = format!(
            "encapd_gateway_latency_seconds_bucket{{direction=\"egress\",le=\"1e-05\"}} {fast}\n\
             encapd_gateway_latency_seconds_bucket{{direction=\"egress\",le=\"0.0001\"}} {total}\n\
             encapd_gateway_latency_seconds_bucket{{direction=\"egress\",le=\"+Inf\"}} {total}\n\
             encapd_gateway_latency_seconds_count{{direction=\"egress\"}} {total}\n\
             encapd_tx_packets_total{{worker=\"0\"}} {total}\n"
        );
        scrape::parse(&text).unwrap()
    }

    #[test]
    fn percentiles_cover_the_interval_between_scrapes() {
        // Since start-up: 100 fast, 100 slow; in the last interval only slow ones.
        let (before, now) = (scrape_with(100, 0), scrape_with(100, 100));
        let since_start = summarize(&now, None);
        assert_eq!(since_start["latency_seconds"]["egress"]["p50"], json!(1e-5));
        assert_eq!(since_start["latency_seconds"]["egress"]["count"], json!(200));
        let recent = summarize(&now, Some((&before, Duration::from_secs(2))));
        let p50 = recent["latency_seconds"]["egress"]["p50"].as_f64().unwrap();
        assert!((p50 - 55e-6).abs() < 1e-9, "halfway into (10, 100] µs: {p50}");
        assert_eq!(recent["latency_seconds"]["egress"]["count"], json!(100));
        assert_eq!(recent["tx"]["packets_per_second"], json!(50.0));
    }

    #[test]
    fn no_observations_show_as_null_and_dashes() {
        let v = summarize(&scrape_with(0, 0), None);
        assert_eq!(v["latency_seconds"]["egress"]["p99"], Value::Null);
        assert_eq!(v["latency_seconds"]["ingress"]["p50"], Value::Null);
        let text = render_text(&v);
        assert!(text.contains("  egress                        -        -        -        -        0\n"), "{text}");
    }
}
