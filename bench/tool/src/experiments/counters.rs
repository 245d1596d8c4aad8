//! Kernel counters around a load: every `nstat` counter of the
//! namespaces, every link's `ethtool -S` statistics there, and the
//! host's per-CPU backlog (`softnet_stat`), read before and after, and the
//! ones that moved printed as `namespace/name delta`. So an experiment
//! shows where packets were lost (a veth ring, a backlog, a socket
//! buffer, TCP's retransmissions) beside where the time went.
//!
//! Promises: reads only; a counter a tool cannot read is left out, never
//! guessed. The backlog counters are host-wide (another process's drops
//! count too).

use std::collections::BTreeMap;
use std::time::Duration;

use encapd_testbed::kdrops::{NET_DEV_RX_DROP, NET_DEV_RX_PACKETS, NET_DEV_TX_DROP, NET_DEV_TX_PACKETS, net_dev_rows, softnet_rows};

use crate::exec::{argv, run_capture};

/// One reading: `namespace/counter` → value.
#[derive(Debug, Default, Clone)]
pub struct Counters(BTreeMap<String, u64>);

impl Counters {
    /// Reads the counters of `namespaces` and of the host's backlog.
    pub fn read(namespaces: &[&str]) -> Counters {
        let mut all = BTreeMap::new();
        let capture = |ns: &str, args: &[&str]| run_capture(Some(ns), &argv(args), Duration::from_secs(10)).unwrap_or_default();
        for ns in namespaces {
            for (name, v) in nstat_values(&capture(ns, &["nstat", "-az", "--json"])) {
                all.insert(format!("{ns}/{name}"), v);
            }
            for (name, v) in net_dev_values(&capture(ns, &["cat", "/proc/net/dev"])) {
                all.insert(format!("{ns}/{name}"), v);
            }
            for dev in capture(ns, &["ls", "/sys/class/net"]).split_whitespace().filter(|d| *d != "lo") {
                for (name, v) in ethtool_values(&capture(ns, &["ethtool", "-S", dev])) {
                    all.insert(format!("{ns}/{dev}.{name}"), v);
                }
            }
        }
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
        for (cpu, cols) in softnet_rows(&softnet).enumerate() {
            for (i, name) in [(0, "processed"), (1, "dropped"), (2, "time_squeeze")] {
                if let Some(v) = cols.get(i) {
                    all.insert(format!("host/softnet.cpu{cpu}.{name}"), *v);
                }
            }
        }
        Counters(all)
    }

    /// The counters that moved since `earlier`, as `name delta` lines.
    pub fn moved_since(&self, earlier: &Counters) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(k, &v)| {
                let before = earlier.0.get(k).copied().unwrap_or(0);
                (v != before).then(|| format!("{k} {}", v as i128 - before as i128))
            })
            .collect()
    }
}

/// `nstat -az --json`: `{"kernel":{"Name":value,...}}`.
fn nstat_values(json: &str) -> Vec<(String, u64)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return Vec::new() };
    let Some(map) = v["kernel"].as_object() else { return Vec::new() };
    map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect()
}

/// `/proc/net/dev`: per device, the packet and drop columns of both
/// directions (`DEV.rx_packets`, `DEV.rx_drop`, `DEV.tx_packets`, `DEV.tx_drop`).
fn net_dev_values(text: &str) -> Vec<(String, u64)> {
    let columns = [
        (NET_DEV_RX_PACKETS, "rx_packets"),
        (NET_DEV_RX_DROP, "rx_drop"),
        (NET_DEV_TX_PACKETS, "tx_packets"),
        (NET_DEV_TX_DROP, "tx_drop"),
    ];
    net_dev_rows(text).flat_map(|(dev, f)| columns.map(|(i, name)| (format!("{dev}.{name}"), f[i]))).collect()
}

/// `ethtool -S DEV`: a header line, then `     name: value` lines.
fn ethtool_values(text: &str) -> Vec<(String, u64)> {
    text.lines().filter_map(|l| l.split_once(':')).filter_map(|(k, v)| Some((k.trim().replace(' ', "_"), v.trim().parse().ok()?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_of_both_tools_parse() {
        let n = nstat_values(r#"{"kernel":{"TcpRetransSegs":12,"UdpInErrors":0}}"#);
        assert_eq!(n, vec![("TcpRetransSegs".to_string(), 12), ("UdpInErrors".to_string(), 0)]);
        let e = ethtool_values("NIC statistics:\n     peer_ifindex: 7\n     rx_queue_0_xdp_drops: 3\n");
        assert_eq!(e, vec![("peer_ifindex".to_string(), 7), ("rx_queue_0_xdp_drops".to_string(), 3)]);
        let d = net_dev_values(
            "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n\
             \x20   ul: 100 2 0 1 0 0 0 0 300 4 0 5 0 0 0 0\n",
        );
        let want = [("ul.rx_packets", 2), ("ul.rx_drop", 1), ("ul.tx_packets", 4), ("ul.tx_drop", 5)];
        assert_eq!(d, want.map(|(k, v)| (k.to_string(), v)).to_vec());
    }

    #[test]
    fn only_what_moved_is_shown() {
        let a = Counters([("n/x".to_string(), 5), ("n/y".to_string(), 1)].into_iter().collect());
        let b = Counters([("n/x".to_string(), 9), ("n/y".to_string(), 1), ("n/z".to_string(), 2)].into_iter().collect());
        assert_eq!(b.moved_since(&a), vec!["n/x 4".to_string(), "n/z 2".to_string()]);
    }
}
