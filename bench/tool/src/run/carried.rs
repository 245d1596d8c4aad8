//! Who carried the packets of a test: encapd's `/metrics`, read on every
//! encapd node before and after the test, split into the kernel path's
//! counters (`encapd_kernel_packets_total{direction}`) and the workers'
//! (`encapd_tx_packets_total`, `_tx_sends_total`, `encapd_rx_packets_total`,
//! `_rx_receives_total`, summed over workers), so that a fallback or a
//! lost coalescing cannot hide behind a throughput figure.
//!
//! A direction is one way through the tunnel: `fwd` is ctrA → ctrB (the
//! data of every test: clients run in ctrA), `rev` is ctrB → ctrA (TCP's
//! ACKs, the probe's replies). Each direction crosses two gateways: the
//! encapsulating node (nodeA for `fwd`) and the decapsulating one. Rows,
//! for each crossing that an encapd makes:
//!
//! - `T_fwd_encap_kernel_pct`, `T_fwd_decap_kernel_pct` (and `rev`): the
//!   share of that crossing's packets the kernel path carried, %; the
//!   workers carried the rest (0 % when the mode has no kernel path);
//! - `T_fwd_gso_per_send`: datagrams per UDP send of the encapsulating
//!   node's workers (egress packets ÷ sends; > 1 only with UDP GSO);
//! - `T_fwd_gro_per_receive`: datagrams per UDP receive of the
//!   decapsulating node's workers (ingress packets ÷ receive
//!   completions; > 1 only with UDP GRO). A receive that was dropped
//!   still counts as a receive: a slight underestimate under drops.
//!
//! A crossing that carried no packets, or whose workers carried none,
//! has no row for the figure that would divide by zero; a node without
//! encapd has no rows (the kernel VTEP of the mixed pair; routing and
//! kernel VXLAN have none at all).

use encapd_testbed::counters::metric_sum;
use encapd_testbed::wiring::Node;

use super::record::Row;

/// The counters of one node at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeCounters {
    pub kernel_egress: f64,
    pub kernel_ingress: f64,
    pub tx_packets: f64,
    pub tx_sends: f64,
    pub rx_packets: f64,
    pub rx_receives: f64,
}

impl NodeCounters {
    /// From `/metrics` text (the kernel path's counters are absent when it
    /// does not run: 0).
    pub fn from_metrics(text: &str) -> NodeCounters {
        let kernel = |d: &str| metric_sum(text, "encapd_kernel_packets_total", &[("direction", d)]);
        NodeCounters {
            kernel_egress: kernel("egress"),
            kernel_ingress: kernel("ingress"),
            tx_packets: metric_sum(text, "encapd_tx_packets_total", &[]),
            tx_sends: metric_sum(text, "encapd_tx_sends_total", &[]),
            rx_packets: metric_sum(text, "encapd_rx_packets_total", &[]),
            rx_receives: metric_sum(text, "encapd_rx_receives_total", &[]),
        }
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &NodeCounters) -> NodeCounters {
        let d = |a: f64, b: f64| (a - b).max(0.0);
        NodeCounters {
            kernel_egress: d(self.kernel_egress, earlier.kernel_egress),
            kernel_ingress: d(self.kernel_ingress, earlier.kernel_ingress),
            tx_packets: d(self.tx_packets, earlier.tx_packets),
            tx_sends: d(self.tx_sends, earlier.tx_sends),
            rx_packets: d(self.rx_packets, earlier.rx_packets),
            rx_receives: d(self.rx_receives, earlier.rx_receives),
        }
    }
}

/// The counters of every encapd node of a mode at one moment.
pub type Snapshot = Vec<(Node, NodeCounters)>;

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// The rows of test `test` from snapshots taken before and after it
/// (nodes missing from either have no rows).
pub fn rows(test: &str, before: &Snapshot, after: &Snapshot) -> Vec<Row> {
    let delta = |node: Node| {
        let b = before.iter().find(|(n, _)| *n == node)?;
        let a = after.iter().find(|(n, _)| *n == node)?;
        Some(a.1.since(&b.1))
    };
    let mut rows = Vec::new();
    for (dir, from, to) in [("fwd", Node::A, Node::B), ("rev", Node::B, Node::A)] {
        if let Some(d) = delta(from) {
            if let Some(pct) = ratio(d.kernel_egress, d.kernel_egress + d.tx_packets) {
                rows.push(Row::new(format!("{test}_{dir}_encap_kernel_pct"), Some(100.0 * pct), "%"));
            }
            if let Some(per) = ratio(d.tx_packets, d.tx_sends) {
                rows.push(Row::new(format!("{test}_{dir}_gso_per_send"), Some(per), "per op"));
            }
        }
        if let Some(d) = delta(to) {
            if let Some(pct) = ratio(d.kernel_ingress, d.kernel_ingress + d.rx_packets) {
                rows.push(Row::new(format!("{test}_{dir}_decap_kernel_pct"), Some(100.0 * pct), "%"));
            }
            if let Some(per) = ratio(d.rx_packets, d.rx_receives) {
                rows.push(Row::new(format!("{test}_{dir}_gro_per_receive"), Some(per), "per op"));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# TYPE encapd_tx_packets counter\nencapd_tx_packets_total{worker=\"0\"} 100\nencapd_tx_packets_total{worker=\"1\"} 50\n\
        encapd_tx_sends_total{worker=\"0\"} 10\nencapd_tx_sends_total{worker=\"1\"} 5\n\
        encapd_rx_packets_total{worker=\"0\"} 30\nencapd_rx_receives_total{worker=\"0\"} 30\n\
        encapd_kernel_packets_total{direction=\"egress\"} 850\nencapd_kernel_packets_total{direction=\"ingress\"} 0\n";

    #[test]
    fn counters_from_metrics_sum_the_workers() {
        let c = NodeCounters::from_metrics(METRICS);
        assert_eq!((c.tx_packets, c.tx_sends, c.rx_packets, c.rx_receives), (150.0, 15.0, 30.0, 30.0));
        assert_eq!((c.kernel_egress, c.kernel_ingress), (850.0, 0.0));
        let none = NodeCounters::from_metrics("encapd_tx_packets_total{worker=\"0\"} 1\n");
        assert_eq!(none.kernel_egress, 0.0, "no kernel path, no kernel counters");
    }

    #[test]
    fn shares_and_coalescing_per_crossing() {
        let zero = NodeCounters::default();
        let a = NodeCounters { kernel_egress: 900.0, tx_packets: 100.0, tx_sends: 10.0, rx_packets: 40.0, rx_receives: 40.0, ..zero };
        let b = NodeCounters { kernel_ingress: 950.0, rx_packets: 50.0, rx_receives: 5.0, tx_packets: 40.0, tx_sends: 40.0, ..zero };
        let before = vec![(Node::A, zero), (Node::B, zero)];
        let after = vec![(Node::A, a), (Node::B, b)];
        let rows = rows("tcp1", &before, &after);
        let get = |t: &str| rows.iter().find(|r| r.test == t).and_then(|r| r.value);
        assert_eq!(get("tcp1_fwd_encap_kernel_pct"), Some(90.0));
        assert_eq!(get("tcp1_fwd_decap_kernel_pct"), Some(95.0));
        assert_eq!(get("tcp1_fwd_gso_per_send"), Some(10.0));
        assert_eq!(get("tcp1_fwd_gro_per_receive"), Some(10.0));
        assert_eq!(get("tcp1_rev_encap_kernel_pct"), Some(0.0));
        assert_eq!(get("tcp1_rev_gro_per_receive"), Some(1.0));
        // The mixed pair: encapd on nodeA only.
        let rows = super::rows("tcp1", &before[..1].to_vec(), &after[..1].to_vec());
        assert!(rows.iter().all(|r| r.test.contains("fwd_encap") || r.test.contains("fwd_gso") || r.test.contains("rev_")), "{rows:?}");
        assert!(!rows.iter().any(|r| r.test.contains("fwd_decap")), "nodeB runs no encapd");
    }
}
