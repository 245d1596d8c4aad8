//! `encapd stats`: a view of a running daemon, read from its `/metrics`:
//! engine and offloads, table version and peers, rates per direction (from
//! two scrapes `--interval` apart), drops by reason, in-gateway latency
//! percentiles. `--json` prints the same as one JSON object.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::stats::DropReason;
use crate::stats::exposition::{QUANTILES, format_quantile};
use crate::stats::scrape::{self, Sample, label, sum};

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
        let mut q = serde_json::Map::new();
        for quantile in QUANTILES {
            let label_q = format_quantile(quantile);
            let v = sum(now, "encapd_gateway_latency_quantile_seconds", &[("direction", dir), ("quantile", &label_q)]);
            let key = if quantile == 1.0 { "max".to_owned() } else { format!("p{}", quantile * 100.0) };
            q.insert(key, json!(v));
        }
        q.insert("count".into(), json!(sum(now, "encapd_gateway_latency_seconds_count", &[("direction", dir)]) as u64));
        latency.insert(dir.into(), Value::Object(q));
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
    out.push_str("in-gateway latency (us):     p50      p90      p99    p99.9      max    count\n");
    for dir in ["egress", "ingress"] {
        let l = &v["latency_seconds"][dir];
        let us = |k: &str| l[k].as_f64().unwrap_or(0.0) * 1e6;
        out.push_str(&format!(
            "  {dir:<8}               {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8}\n",
            us("p50"),
            us("p90"),
            us("p99"),
            us("p99.9"),
            us("max"),
            l["count"]
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
