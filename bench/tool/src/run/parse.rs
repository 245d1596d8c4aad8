//! From a tool's raw output to `results.csv` rows: iperf3's JSON (`-J`),
//! the latency probe's JSON summary, sockperf's text. Pure functions; a
//! test that produced nothing usable yields the same rows with `NA`
//! values, so every (mode, profile, repetition, test) has its rows.

use serde_json::Value;

use super::record::Row;

/// The rows of a TCP test, and the encapd rows when the mode runs encapd.
const TCP: &[(&str, &str)] = &[("", "Gbit/s"), ("_retrans", "count"), ("_cpu", "cores"), ("_cpu_per_gbps", "cores/(Gbit/s)")];
const ENCAPD: &[(&str, &str)] = &[
    ("_encapd_cpu", "cores"),
    ("_encapd_cpu_per_gbps", "cores/(Gbit/s)"),
    ("_encapd_cs_vol_per_gb", "per GB"),
    ("_encapd_cs_invol_per_gb", "per GB"),
];
const UDP: &[(&str, &str)] = &[("_pps", "pps"), ("_sent_pps", "pps"), ("_loss", "%")];
const LAT: &[(&str, &str)] = &[
    ("_p50", "us"),
    ("_p90", "us"),
    ("_p99", "us"),
    ("_p999", "us"),
    ("_max", "us"),
    ("_mean", "us"),
    ("_lost", "count"),
    ("_loss", "%"),
    ("_offered_pps", "pps"),
    ("_achieved_pps", "pps"),
];
const UDP_RR: &[(&str, &str)] = &[("_p50", "us"), ("_p99", "us"), ("_avg", "us")];

fn na(test: &str, names: &[(&str, &'static str)]) -> Vec<Row> {
    names.iter().map(|(suffix, unit)| Row::new(format!("{test}{suffix}"), None, unit)).collect()
}

/// What encapd did over a TCP test: its CPU (cores) and its threads'
/// voluntary and involuntary context switches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncapdCost {
    pub cores: f64,
    pub cs_voluntary: u64,
    pub cs_involuntary: u64,
}

/// The `end` object of an iperf3 JSON report, or why there is none.
fn iperf_end(json: &str) -> Result<Value, String> {
    let d: Value = serde_json::from_str(json).map_err(|e| format!("not iperf3 JSON: {e}"))?;
    if let Some(e) = d.get("error") {
        return Err(format!("iperf3: {}", e.as_str().unwrap_or("error")));
    }
    d.get("end").cloned().ok_or_else(|| "iperf3 JSON without `end`".to_owned())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// `/` when both are measured and the divisor is positive.
fn per(a: Option<f64>, b: f64) -> Option<f64> {
    a.filter(|_| b > 0.0).map(|a| a / b)
}

/// Rows of TCP test `test`: receiver Gbit/s, sender retransmits, the
/// whole machine's cores over the client run and cores per Gbit/s, and
/// with `encapd` (`Some(None)`: encapd runs but was not measured) encapd's
/// own cores, cores per Gbit/s and context switches per GB received.
pub fn tcp(test: &str, json: &str, machine_cores: Option<f64>, encapd: Option<Option<EncapdCost>>) -> Result<Vec<Row>, (String, Vec<Row>)> {
    let end = match iperf_end(json) {
        Ok(e) => e,
        Err(e) => {
            let mut rows = na(test, TCP);
            if encapd.is_some() {
                rows.extend(na(test, ENCAPD));
            }
            return Err((e, rows));
        }
    };
    let gbps = num(&end, &["sum_received", "bits_per_second"]).map(|b| b / 1e9);
    let gb = num(&end, &["sum_received", "bytes"]).map_or(0.0, |b| b / 1e9);
    let g = gbps.unwrap_or(0.0);
    let mut rows = vec![
        Row::new(test, gbps, "Gbit/s"),
        Row::new(format!("{test}_retrans"), num(&end, &["sum_sent", "retransmits"]), "count"),
        Row::new(format!("{test}_cpu"), machine_cores, "cores"),
        Row::new(format!("{test}_cpu_per_gbps"), per(machine_cores, g), "cores/(Gbit/s)"),
    ];
    if let Some(cost) = encapd {
        rows.push(Row::new(format!("{test}_encapd_cpu"), cost.map(|c| c.cores), "cores"));
        rows.push(Row::new(format!("{test}_encapd_cpu_per_gbps"), per(cost.map(|c| c.cores), g), "cores/(Gbit/s)"));
        rows.push(Row::new(format!("{test}_encapd_cs_vol_per_gb"), per(cost.map(|c| c.cs_voluntary as f64), gb), "per GB"));
        rows.push(Row::new(format!("{test}_encapd_cs_invol_per_gb"), per(cost.map(|c| c.cs_involuntary as f64), gb), "per GB"));
    }
    Ok(rows)
}

/// Rows of UDP test `test` (`iperf3 -u -b 0`): packets delivered per
/// second as the receiver counted them ((sent − lost) / s), packets sent
/// per second, loss %.
pub fn udp(test: &str, json: &str) -> Result<Vec<Row>, (String, Vec<Row>)> {
    let end = iperf_end(json).map_err(|e| (e, na(test, UDP)))?;
    let pick = |a: &str| end.get(a).filter(|v| !v.is_null()).or_else(|| end.get("sum")).cloned().unwrap_or(Value::Null);
    let (rcv, snt) = (pick("sum_received"), pick("sum_sent"));
    let secs = |v: &Value| num(v, &["seconds"]).filter(|s| *s > 0.0).unwrap_or(1.0);
    let delivered = match (num(&rcv, &["packets"]), num(&rcv, &["lost_packets"])) {
        (Some(p), Some(l)) => Some((p - l) / secs(&rcv)),
        _ => None,
    };
    if delivered.is_none() {
        return Err(("iperf3 JSON without packet counts".into(), na(test, UDP)));
    }
    Ok(vec![
        Row::new(format!("{test}_pps"), delivered, "pps"),
        Row::new(format!("{test}_sent_pps"), num(&snt, &["packets"]).map(|p| p / secs(&snt)), "pps"),
        Row::new(format!("{test}_loss"), num(&rcv, &["lost_percent"]), "%"),
    ])
}

/// Rows of latency test `test` from the probe's JSON summary
/// (`encapd-bench latency client --json`).
pub fn latency(test: &str, json: &str) -> Result<Vec<Row>, (String, Vec<Row>)> {
    let d: Value = serde_json::from_str(json).map_err(|e| (format!("not probe JSON: {e}"), na(test, LAT)))?;
    if d.get("count").and_then(Value::as_f64).unwrap_or(0.0) <= 0.0 {
        return Err(("no replies".into(), na(test, LAT)));
    }
    let keys = ["p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "mean_us", "lost", "loss_pct", "offered_pps", "achieved_pps"];
    Ok(LAT.iter().zip(keys).map(|((suffix, unit), key)| Row::new(format!("{test}{suffix}"), num(&d, &[key]), unit)).collect())
}

/// Rows of the sockperf ping-pong (`--full-rtt`: whole round trips): p50,
/// p99 and the average, µs.
pub fn sockperf(test: &str, text: &str) -> Result<Vec<Row>, (String, Vec<Row>)> {
    let text = strip_ansi(text);
    let mut p50 = None;
    let mut p99 = None;
    let mut avg = None;
    for line in text.lines() {
        if let Some(rest) = line.split("percentile ").nth(1) {
            let mut it = rest.split(|c: char| c == '=' || c.is_whitespace()).filter(|s| !s.is_empty());
            let (Some(p), Some(v)) = (it.next(), it.next()) else { continue };
            match p {
                "50.000" => p50 = v.parse().ok(),
                "99.000" => p99 = v.parse().ok(),
                _ => {}
            }
        }
        if let Some(rest) = line.split("avg-rtt=").nth(1) {
            avg = rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next().and_then(|v| v.parse().ok());
        }
    }
    if p50.is_none() || avg.is_none() {
        return Err(("no sockperf percentiles".into(), na(test, UDP_RR)));
    }
    Ok(vec![
        Row::new(format!("{test}_p50"), p50, "us"),
        Row::new(format!("{test}_p99"), p99, "us"),
        Row::new(format!("{test}_avg"), avg, "us"),
    ])
}

/// sockperf colours its output; drops `ESC [ ... m`.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// NA rows for every test of a mode whose setup failed.
pub fn all_na(tcp_tests: &[&str], udp_tests: &[&str], loads: &[u32], sockperf: bool, encapd: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in tcp_tests {
        rows.extend(na(t, TCP));
        if encapd {
            rows.extend(na(t, ENCAPD));
        }
    }
    for t in udp_tests {
        rows.extend(na(t, UDP));
    }
    for l in loads {
        rows.extend(na(&format!("lat{l}"), LAT));
    }
    if sockperf {
        rows.extend(na("udp_rr", UDP_RR));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(rows: &[Row], test: &str) -> Option<f64> {
        rows.iter().find(|r| r.test == test).unwrap_or_else(|| panic!("no row {test}: {rows:?}")).value
    }

    const TCP_JSON: &str = r#"{"start":{},"end":{"sum_sent":{"bytes":2600000000,"retransmits":17,"bits_per_second":4.2e9},
        "sum_received":{"bytes":2500000000,"bits_per_second":4.0e9,"seconds":5.0}}}"#;

    #[test]
    fn tcp_rows_with_and_without_encapd() {
        let cost = EncapdCost { cores: 1.0, cs_voluntary: 500, cs_involuntary: 25 };
        let rows = tcp("tcp1", TCP_JSON, Some(2.0), Some(Some(cost))).unwrap();
        assert_eq!(get(&rows, "tcp1"), Some(4.0));
        assert_eq!(get(&rows, "tcp1_retrans"), Some(17.0));
        assert_eq!(get(&rows, "tcp1_cpu_per_gbps"), Some(0.5));
        assert_eq!(get(&rows, "tcp1_encapd_cpu_per_gbps"), Some(0.25));
        assert_eq!(get(&rows, "tcp1_encapd_cs_vol_per_gb"), Some(200.0));
        assert_eq!(get(&rows, "tcp1_encapd_cs_invol_per_gb"), Some(10.0));
        assert_eq!(tcp("tcp1", TCP_JSON, Some(2.0), None).unwrap().len(), 4, "no encapd, no encapd rows");
        let (why, rows) = tcp("tcp4", r#"{"error":"unable to connect"}"#, None, Some(None)).unwrap_err();
        assert!(why.contains("unable to connect"));
        assert_eq!(rows.len(), 8);
        assert!(rows.iter().all(|r| r.value.is_none()));
    }

    #[test]
    fn udp_delivered_rate_is_what_the_receiver_counted() {
        let json = r#"{"end":{"sum_sent":{"packets":200000,"seconds":2.0},
            "sum_received":{"packets":200000,"lost_packets":50000,"lost_percent":25.0,"seconds":2.0}}}"#;
        let rows = udp("udp64", json).unwrap();
        assert_eq!(get(&rows, "udp64_pps"), Some(75000.0));
        assert_eq!(get(&rows, "udp64_sent_pps"), Some(100000.0));
        assert_eq!(get(&rows, "udp64_loss"), Some(25.0));
        // iperf3 3.12 without sum_sent/sum_received puts both in `sum`.
        let old = r#"{"end":{"sum":{"packets":1000,"lost_packets":0,"lost_percent":0,"seconds":1.0}}}"#;
        assert_eq!(get(&udp("udp512", old).unwrap(), "udp512_pps"), Some(1000.0));
        assert!(udp("udp64", "not json").is_err());
    }

    #[test]
    fn probe_summary_and_its_absence() {
        let json = r#"{"p50_us":40.5,"p90_us":50,"p99_us":60,"p99.9_us":70,"max_us":80,"mean_us":42,"count":990,"lost":10,
            "loss_pct":1.0,"offered_pps":1000,"achieved_pps":999}"#;
        let rows = latency("lat50", json).unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(get(&rows, "lat50_p999"), Some(70.0));
        assert_eq!(get(&rows, "lat50_loss"), Some(1.0));
        let (_, rows) = latency("lat90", "{}").unwrap_err();
        assert_eq!(rows.len(), 10);
    }

    #[test]
    fn sockperf_percentiles_through_its_colours() {
        let text = "sockperf: \u{1b}[2;35m====> avg-rtt=31.201 (std-dev=5.2)\u{1b}[0m\n\
                    sockperf: ---> percentile 99.000 =   61.334\nsockperf: ---> percentile 50.000 =   28.719\n";
        let rows = sockperf("udp_rr", text).unwrap();
        assert_eq!(get(&rows, "udp_rr_p50"), Some(28.719));
        assert_eq!(get(&rows, "udp_rr_p99"), Some(61.334));
        assert_eq!(get(&rows, "udp_rr_avg"), Some(31.201));
        assert!(sockperf("udp_rr", "").is_err());
    }

    #[test]
    fn a_failed_setup_gives_every_row() {
        let rows = all_na(&["tcp1", "tcp4"], &["udp64"], &[10, 50], true, true);
        assert_eq!(rows.len(), 2 * 8 + 3 + 2 * 10 + 3);
    }
}
