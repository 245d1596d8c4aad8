//! Packets the kernel itself counted as dropped: on the links and in the
//! UDP layer of namespaces a test owns, and in the host's per-CPU receive
//! backlogs.
//!
//! Promises: [`KernelDrops::read`] reads only counters (`/proc/net/dev`,
//! `/proc/net/snmp`, `/proc/net/snmp6` inside each namespace, and the
//! host-wide `/proc/net/softnet_stat`); it changes nothing. The backlog
//! counter is shared by every namespace on the machine, so a delta may
//! include another test's drops: use it to *excuse* a loss the kernel
//! accounts for, never to accuse encapd of one.

use crate::cmd::run;

/// A snapshot of the kernel's drop counters; subtract two to get what
/// was dropped in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// Per-CPU backlog overflows (`softnet_stat`, column 2), host-wide.
    pub backlog: u64,
    /// rx + tx `drop` columns of every link in the namespaces.
    pub links: u64,
    /// UDP and UDPv6 `InErrors` (receive buffer full, bad checksum, ...)
    /// in the namespaces.
    pub udp: u64,
}

impl KernelDrops {
    /// Reads the counters of `namespaces` and the host's backlog.
    pub fn read(namespaces: &[&str]) -> KernelDrops {
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
        let mut drops = KernelDrops { backlog: softnet_dropped(&softnet), ..KernelDrops::default() };
        for ns in namespaces {
            let cat = |file: &str| run("ip", &["netns", "exec", ns, "cat", file]).stdout;
            drops.links += link_drops(&cat("/proc/net/dev"));
            drops.udp += snmp_value(&cat("/proc/net/snmp"), "Udp:", "InErrors");
            drops.udp += snmp6_value(&cat("/proc/net/snmp6"), "Udp6InErrors");
        }
        drops
    }

    pub fn total(&self) -> u64 {
        self.backlog + self.links + self.udp
    }

    /// What was dropped between `earlier` and `self`.
    pub fn since(&self, earlier: &KernelDrops) -> KernelDrops {
        KernelDrops {
            backlog: self.backlog.saturating_sub(earlier.backlog),
            links: self.links.saturating_sub(earlier.links),
            udp: self.udp.saturating_sub(earlier.udp),
        }
    }
}

/// Sum of the second (hexadecimal) column over every CPU's line.
fn softnet_dropped(text: &str) -> u64 {
    softnet_rows(text).filter_map(|cols| cols.get(1).copied()).sum()
}

/// Sum of the receive and transmit `drop` columns over every interface.
fn link_drops(text: &str) -> u64 {
    net_dev_rows(text).map(|(_, f)| f[NET_DEV_RX_DROP] + f[NET_DEV_TX_DROP]).sum()
}

/// `/proc/net/softnet_stat`: one row of hexadecimal columns per CPU
/// (0 processed, 1 dropped, 2 time squeezed, ...).
pub fn softnet_rows(text: &str) -> impl Iterator<Item = Vec<u64>> + '_ {
    text.lines().map(|l| l.split_whitespace().filter_map(|h| u64::from_str_radix(h, 16).ok()).collect())
}

/// Columns of a `/proc/net/dev` row (the receive side's 8, then the
/// transmit side's 8).
pub const NET_DEV_RX_PACKETS: usize = 1;
pub const NET_DEV_RX_DROP: usize = 3;
pub const NET_DEV_TX_PACKETS: usize = 9;
pub const NET_DEV_TX_DROP: usize = 11;

/// `/proc/net/dev`: each interface's name and its 16 counters.
pub fn net_dev_rows(text: &str) -> impl Iterator<Item = (&str, Vec<u64>)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(dev, stats)| (dev.trim(), stats.split_whitespace().filter_map(|f| f.parse::<u64>().ok()).collect::<Vec<_>>()))
        .filter(|(_, f)| f.len() >= 16)
}

/// A field of `/proc/net/snmp`: a header line and a value line share a prefix.
fn snmp_value(text: &str, prefix: &str, field: &str) -> u64 {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    names.split_whitespace().zip(values.split_whitespace()).find(|(n, _)| *n == field).and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

/// A field of `/proc/net/snmp6`: one `name value` pair per line.
fn snmp6_value(text: &str, field: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernels_formats() {
        assert_eq!(softnet_dropped("0000ffff 00000002 00000000\n00000001 0000000a 00000000\n"), 12);
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n\
                   lo: 1 2 0 3 0 0 0 0 1 2 0 4 0 0 0 0\n eth0: 9 9 0 5 0 0 0 0 9 9 0 0 0 0 0 0\n";
        assert_eq!(link_drops(dev), 12);
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 10 0 7 3\n";
        assert_eq!(snmp_value(snmp, "Udp:", "InErrors"), 7);
        assert_eq!(snmp6_value("Udp6InDatagrams                 \t5\nUdp6InErrors                    \t2\n", "Udp6InErrors"), 2);
    }
}
