//! Reading the exposition back (for `encapd stats`): a small parser for the
//! subset encapd writes — `name{label="value",...} number` lines and `#`
//! comments, which covers both the classic text format (what [`fetch`] asks
//! for) and OpenMetrics — and helpers to sum samples and gather histogram
//! buckets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses exposition text; malformed lines are errors naming the line.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: cannot parse {line:?}", n + 1);
        let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        let value = parse_value(value).ok_or_else(bad)?;
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(bad)?;
                (name.to_owned(), parse_labels(body).ok_or_else(bad)?)
            }
        };
        out.push(Sample { name, labels, value });
    }
    Ok(out)
}

fn parse_labels(mut body: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    other => other,
                }),
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        body = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// Fetches `/metrics` from `addr` (plain HTTP/1.0) in the classic text format.
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain; version=0.0.4\r\n\r\n").as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(format!("unexpected response: {}", head.lines().next().unwrap_or(""))));
    }
    Ok(body.to_owned())
}

/// Sum of all samples named `name` whose labels include `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// The cumulative buckets `(le, count)` of histogram `name` (its
/// `name_bucket` samples) whose labels include `filter`, summed over all
/// other labels. Samples with an `le` that is not a number are skipped.
pub fn buckets(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket_name = format!("{name}_bucket");
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    for s in
        samples.iter().filter(|s| s.name == bucket_name && filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
    {
        let Some(le) = s.labels.get("le").and_then(|le| parse_value(le)) else { continue };
        match by_bound.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, n)) => *n += s.value,
            None => by_bound.push((le, s.value)),
        }
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_bound
}

/// A sample value or `le` label: a number, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse::<f64>().ok(),
    }
}

/// The label value of the first sample named `name` (for info metrics).
pub fn label(samples: &[Sample], name: &str, key: &str) -> Option<String> {
    samples.iter().find(|s| s.name == name).and_then(|s| s.labels.get(key).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_and_escapes() {
        let text = "# HELP x y\n# TYPE a counter\na_total{worker=\"0\",reason=\"no_route\"} 5\nb 1.5e3\nc{l=\"q\\\"x\"} +Inf\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].labels["reason"], "no_route");
        assert_eq!(s[1].value, 1500.0);
        assert_eq!(s[2].labels["l"], "q\"x");
        assert!(s[2].value.is_infinite());
        assert_eq!(sum(&s, "a_total", &[("worker", "0")]), 5.0);
        assert!(parse("garbage").is_err());
        assert!(parse("a{x=\"1\" 2").is_err());
    }

    #[test]
    fn gathers_histogram_buckets_over_other_labels() {
        let text = "h_bucket{direction=\"egress\",worker=\"0\",le=\"1e-06\"} 1\n\
                    h_bucket{direction=\"egress\",worker=\"1\",le=\"1e-06\"} 2\n\
                    h_bucket{direction=\"egress\",worker=\"0\",le=\"+Inf\"} 4\n\
                    h_bucket{direction=\"ingress\",le=\"+Inf\"} 9\n\
                    h_bucket{direction=\"egress\",le=\"bogus\"} 9\n\
                    h_count{direction=\"egress\"} 4\n";
        let s = parse(text).unwrap();
        assert_eq!(buckets(&s, "h", &[("direction", "egress")]), vec![(1e-6, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(buckets(&s, "h", &[("direction", "none")]), vec![]);
    }
}
