//! What encapd reports about itself: the counter summary it prints on
//! SIGUSR1 (and on exit), parsed into [`Counters`], and single values of
//! its `/metrics` endpoint, fetched from inside the node's namespace.
//! Parsing is strict: a summary line of an unexpected shape panics, so a
//! format change cannot make a test read zeros.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::netns::in_netns;

/// Where encapd serves `/metrics` by default (each node namespace has its
/// own loopback).
pub const METRICS: &str = "127.0.0.1:9285";

/// The "total" line and drop reasons of one counter summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub egress_pkts: u64,
    pub egress_bytes: u64,
    pub egress_sends: u64,
    pub ingress_pkts: u64,
    pub ingress_bytes: u64,
    pub ingress_receives: u64,
    pub icmp: u64,
    pub icmp_rate_limited: u64,
    pub drops_total: u64,
    pub table_version: u64,
    pub drops: BTreeMap<String, u64>,
    pub tables_published: u64,
    pub reload_failures: u64,
    /// Per worker, in worker order: (egress packets, ingress packets).
    pub per_worker: Vec<(u64, u64)>,
    /// Per worker, in worker order: (ICMP errors sent, ICMP errors over
    /// the rate limit).
    pub per_worker_icmp: Vec<(u64, u64)>,
}

impl Counters {
    /// The count for one drop reason (0 when not listed).
    pub fn drop(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

/// The first line of every summary (count them to see a new one arrive).
pub const SUMMARY_HEADER: &str = "encapd counters:";
const SUMMARY_END: &str = "  control   tables published";

/// Numbers in `text` in order (e.g. "egress 5 pkts 460 bytes" → [5, 460]).
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()
}

/// Parses the last complete summary block in `log`, if any.
pub fn parse_counters(log: &str) -> Option<Counters> {
    let start = log.rfind(SUMMARY_HEADER)?;
    let block = &log[start..];
    let end = block.find(SUMMARY_END)?;
    let end_line = block[end..].find('\n').map(|i| end + i)?;
    let block = &block[..end_line];
    let mut c = Counters::default();
    let mut saw_total = false;
    for line in block.lines() {
        if let Some(rest) = line.strip_prefix("  worker") {
            let n = numbers(rest);
            assert_eq!(n.len(), 11, "unexpected worker line: {line:?}");
            assert_eq!(n[0] as usize, c.per_worker.len(), "workers out of order: {line:?}");
            c.per_worker.push((n[1], n[4]));
            c.per_worker_icmp.push((n[7], n[8]));
        } else if let Some(rest) = line.strip_prefix("  total") {
            let n = numbers(rest);
            assert_eq!(n.len(), 10, "unexpected total line: {line:?}");
            (c.egress_pkts, c.egress_bytes, c.egress_sends) = (n[0], n[1], n[2]);
            (c.ingress_pkts, c.ingress_bytes, c.ingress_receives) = (n[3], n[4], n[5]);
            (c.icmp, c.icmp_rate_limited, c.drops_total, c.table_version) = (n[6], n[7], n[8], n[9]);
            saw_total = true;
        } else if let Some(rest) = line.strip_prefix("  drops ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
                panic!("unexpected drops line: {line:?}");
            };
            c.drops.insert(name.to_owned(), n.parse().unwrap_or_else(|_| panic!("unexpected drops line: {line:?}")));
        } else if let Some(rest) = line.strip_prefix("  control") {
            let n = numbers(rest);
            assert_eq!(n.len(), 2, "unexpected control line: {line:?}");
            (c.tables_published, c.reload_failures) = (n[0], n[1]);
        }
    }
    assert!(saw_total, "summary without a total line:\n{block}");
    let listed: u64 = c.drops.values().sum();
    assert_eq!(listed, c.drops_total, "drop reasons do not add up to the total:\n{block}");
    Some(c)
}

/// The `/metrics` text of the encapd listening on [`METRICS`] in `ns`
/// (`None` when it does not answer).
pub fn scrape(ns: &str) -> Option<String> {
    let addr: SocketAddr = METRICS.parse().expect("valid address");
    in_netns(ns, || encapd::stats::scrape::fetch(addr)).ok()
}

/// The value of the unlabelled sample `name` in `/metrics` text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// The sum of every sample `name` in `/metrics` text whose labels include
/// `filter` (e.g. a counter over all workers); 0 when there is none.
pub fn metric_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    let samples = encapd::stats::scrape::parse(text).unwrap_or_else(|e| panic!("unparsable /metrics ({e}):\n{text}"));
    encapd::stats::scrape::sum(&samples, name, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let log = "noise\nencapd counters:\n  worker 0  egress 0 pkts 0 bytes in 0 sends | ingress 0 pkts 0 bytes in 0 receives | icmp 6 (0 rate-limited) | drops 6 | table v1\n  \
                   total     egress 5 pkts 460 bytes in 4 sends | ingress 3 pkts 300 bytes in 2 receives | icmp 1 (4 rate-limited) | drops 7 | table v1\n  \
                   drops no_route           2\n  drops ttl_expired        5\n  control   tables published 0 | reload failures 3\nmore\n";
        let c = parse_counters(log).unwrap();
        assert_eq!((c.egress_pkts, c.egress_bytes, c.egress_sends), (5, 460, 4));
        assert_eq!((c.ingress_pkts, c.ingress_bytes, c.ingress_receives), (3, 300, 2));
        assert_eq!((c.icmp, c.icmp_rate_limited, c.drops_total, c.table_version), (1, 4, 7, 1));
        assert_eq!(c.drop("no_route"), 2);
        assert_eq!(c.drop("ttl_expired"), 5);
        assert_eq!(c.drop("too_big"), 0);
        assert_eq!(c.reload_failures, 3);
        assert_eq!((c.per_worker.clone(), c.per_worker_icmp.clone()), (vec![(0, 0)], vec![(6, 0)]));
        // An incomplete block (still being written) is not parsed.
        assert!(parse_counters("encapd counters:\n  total     egress 5 pkts").is_none());
    }

    #[test]
    fn reads_unlabelled_samples() {
        let text = "# TYPE encapd_routes gauge\nencapd_routes 3\nencapd_routes_total 9\nencapd_peers 2\n";
        assert_eq!(metric_value(text, "encapd_routes"), Some(3.0));
        assert_eq!(metric_value(text, "encapd_peers"), Some(2.0));
        assert_eq!(metric_value(text, "encapd_table_version"), None);
    }
}
