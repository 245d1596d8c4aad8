//! What must be equal between a running daemon and its successor, because
//! the successor inherits kernel objects built from it: the TUN device
//! (name, queues, address, routes, MTU, offloads), the UDP sockets (address,
//! port, buffer sizes, GRO), the wire format, the network namespace, and
//! the blocking mode of the TUN queues that the I/O engine chose. Anything
//! else (peers, batch, CPUs, metrics address, user, io_uring features,
//! etcd endpoints) may change in a takeover.
//!
//! Pure: [`Compat`] is built from a configuration and a plan, and
//! [`differences`] names every field that differs, as
//! `"[section] key: running X, new Y"`.

use serde::{Deserialize, Serialize};

use crate::config::{Backend, Config, ControlSource};

/// The fields a takeover cannot change. `None` in a successor's copy means
/// "not known yet" (the etcd source resolves subnet, network and port from
/// etcd) and matches anything; the running daemon's copy is always resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Compat {
    /// Inode of the network namespace (`/proc/self/ns/net`).
    pub netns: u64,
    pub tun: String,
    pub workers: u32,
    /// The I/O engine in use (after probing).
    pub engine: String,
    pub public_ip: String,
    pub port: Option<u16>,
    pub backend: String,
    pub vni: Option<u32>,
    pub vtep_mac: Option<String>,
    pub subnet: Option<String>,
    pub subnet6: Option<String>,
    pub cidr: Option<String>,
    pub cidr6: Option<String>,
    /// A successor's copy before etcd resolved the subnets: `None` in
    /// `subnet6` or `cidr6` is "not known yet" (a dual-stack network in
    /// etcd brings them), not "no IPv6".
    pub ipv6_pending: bool,
    pub tun_mtu: u32,
    /// TUN offloads asked for (`[dataplane] offload`, and a batching engine).
    pub offload: bool,
    pub socket_buffer: u64,
    /// "file", or "etcd PREFIX".
    pub control: String,
}

impl Compat {
    /// The fields of `config` as planned (`engine`, `tun_mtu`), in the
    /// network namespace `netns`.
    pub fn of(config: &Config, engine: &str, tun_mtu: u32, netns: u64) -> Compat {
        let resolved = config.is_resolved();
        let etcd = config.etcd();
        let (vni, vtep_mac) = match config.backend {
            Backend::Udp | Backend::WireGuard => (None, None),
            Backend::Vxlan(v) => {
                let vni_known = resolved || etcd.is_none_or(|e| e.given_vni.is_some());
                (vni_known.then_some(v.vni), Some(v.vtep_mac.to_string()))
            }
        };
        let known = |given: bool| resolved || given;
        Compat {
            netns,
            tun: config.tun.clone(),
            workers: config.workers as u32,
            engine: engine.to_owned(),
            public_ip: config.public_ip.to_string(),
            port: known(etcd.is_some_and(|e| e.given_port.is_some())).then_some(config.port),
            backend: config.backend.name().to_owned(),
            vni,
            vtep_mac,
            subnet: known(etcd.is_some_and(|e| e.given_subnet.is_some())).then(|| config.subnet.to_string()),
            subnet6: config.subnet6.map(|s| s.to_string()),
            cidr: known(etcd.is_some_and(|e| e.given_cidr.is_some())).then(|| config.cidr.to_string()),
            cidr6: config.cidr6.map(|s| s.to_string()),
            ipv6_pending: !resolved,
            tun_mtu,
            offload: config.offload && engine != crate::config::IoEngine::Classic.name(),
            socket_buffer: config.socket_buffer as u64,
            control: match &config.control {
                ControlSource::File { .. } => "file".to_owned(),
                ControlSource::Etcd(e) => format!("etcd {}", e.prefix),
            },
        }
    }
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

/// Every field of `new` that differs from `running`, named as the
/// configuration names it. Empty: the successor may take over.
pub fn differences(running: &Compat, new: &Compat) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name}: running {a}, new {b}"));
        }
    };
    differ("network namespace", format!("net:[{}]", running.netns), format!("net:[{}]", new.netns));
    differ("[dataplane] tun", running.tun.clone(), new.tun.clone());
    differ("[dataplane] workers", running.workers.to_string(), new.workers.to_string());
    differ("[dataplane] io (engine in use)", running.engine.clone(), new.engine.clone());
    differ("[node] public_ip", running.public_ip.clone(), new.public_ip.clone());
    // A successor's `None` is "resolved later" (etcd) and matches anything.
    let mut known = |name: &str, a: &Option<String>, b: &Option<String>| {
        if b.is_some() {
            differ(name, show(a), show(b));
        }
    };
    known("[network] port", &running.port.map(|p| p.to_string()), &new.port.map(|p| p.to_string()));
    known("[network] vni", &running.vni.map(|v| v.to_string()), &new.vni.map(|v| v.to_string()));
    known("[node] subnet", &running.subnet, &new.subnet);
    known("[network] cidr", &running.cidr, &new.cidr);
    if new.ipv6_pending {
        known("[node] subnet6", &running.subnet6, &new.subnet6);
        known("[network] cidr6", &running.cidr6, &new.cidr6);
    } else {
        differ("[node] subnet6", show(&running.subnet6), show(&new.subnet6));
        differ("[network] cidr6", show(&running.cidr6), show(&new.cidr6));
    }
    differ("[network] backend", running.backend.clone(), new.backend.clone());
    differ("[node] vtep_mac", show(&running.vtep_mac), show(&new.vtep_mac));
    differ("TUN MTU (from [network] underlay_mtu)", running.tun_mtu.to_string(), new.tun_mtu.to_string());
    differ("[dataplane] offload", on_off(running.offload), on_off(new.offload));
    differ("[dataplane] socket_buffer", running.socket_buffer.to_string(), new.socket_buffer.to_string());
    differ("[control] source", running.control.clone(), new.control.clone());
    out
}

fn on_off(b: bool) -> String {
    if b { "auto".into() } else { "off".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "[node]\npublic_ip = \"198.18.0.1\"\nsubnet = \"100.96.1.0/24\"\n\n[network]\ncidr = \"100.96.0.0/16\"\n\n\
                        [dataplane]\nworkers = 2\nio = \"uring\"\n\n[control]\nsource = \"file\"\npeers = \"peers.toml\"\n";

    fn compat_of(text: &str) -> Compat {
        let config = Config::parse(text, Path::new("/etc/encapd/encapd.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        Compat::of(&config, config.io.name(), 1450, 4026531840)
    }

    #[test]
    fn the_same_configuration_is_compatible() {
        assert_eq!(differences(&compat_of(BASE), &compat_of(BASE)), Vec::<String>::new());
        // What may change does not count.
        let changed = BASE.replace("workers = 2\n", "workers = 2\nbatch = 32\ncpus = [1, 0]\n");
        assert!(differences(&compat_of(BASE), &compat_of(&changed)).is_empty());
    }

    #[test]
    fn each_difference_is_named_with_both_values() {
        let cases = [
            ("workers = 2", "workers = 3", "[dataplane] workers: running 2, new 3"),
            ("cidr = \"100.96.0.0/16\"", "cidr = \"100.96.0.0/15\"\nport = 9999", "[network] port: running 8285, new 9999"),
            ("io = \"uring\"", "io = \"mmsg\"", "[dataplane] io (engine in use): running uring, new mmsg"),
            ("subnet = \"100.96.1.0/24\"", "subnet = \"100.96.3.0/24\"", "[node] subnet: running 100.96.1.0/24, new 100.96.3.0/24"),
            ("workers = 2", "workers = 2\ntun = \"other0\"", "[dataplane] tun: running encap0, new other0"),
            ("workers = 2", "workers = 2\noffload = \"off\"", "[dataplane] offload: running auto, new off"),
        ];
        for (from, to, want) in cases {
            let new = BASE.replace(from, to);
            let diffs = differences(&compat_of(BASE), &compat_of(&new));
            assert!(diffs.iter().any(|d| d == want), "{to}: {diffs:?}");
        }
        let mut other_ns = compat_of(BASE);
        other_ns.netns += 1;
        assert_eq!(differences(&compat_of(BASE), &other_ns).len(), 1);
    }

    #[test]
    fn unresolved_etcd_fields_match_anything() {
        let running = compat_of(BASE);
        let mut successor = running.clone();
        (successor.subnet, successor.cidr, successor.port) = (None, None, None);
        assert!(differences(&running, &successor).is_empty());
        successor.subnet = Some("100.96.9.0/24".into());
        assert_eq!(differences(&running, &successor), vec!["[node] subnet: running 100.96.1.0/24, new 100.96.9.0/24".to_owned()]);
    }

    /// A dual-stack etcd node's successor knows its IPv6 subnet only once
    /// etcd answered: until then "none" matches; after, it must be equal.
    #[test]
    fn unresolved_ipv6_subnets_match_until_resolved() {
        let mut running = compat_of(BASE);
        (running.subnet6, running.cidr6) = (Some("fd00:96:1::/64".into()), Some("fd00:96::/32".into()));
        let mut successor = compat_of(BASE);
        (successor.subnet, successor.cidr, successor.ipv6_pending) = (None, None, true);
        assert!(differences(&running, &successor).is_empty());
        successor.ipv6_pending = false;
        let diffs = differences(&running, &successor);
        assert!(diffs.contains(&"[node] subnet6: running fd00:96:1::/64, new (none)".to_owned()), "{diffs:?}");
        (successor.subnet6, successor.ipv6_pending) = (Some("fd00:96:2::/64".into()), true);
        let diffs = differences(&running, &successor);
        assert_eq!(diffs, vec!["[node] subnet6: running fd00:96:1::/64, new fd00:96:2::/64".to_owned()]);
        // An etcd configuration's copy is pending until resolved.
        let etcd = "[node]\npublic_ip = \"198.18.0.1\"\n[dataplane]\nworkers = 2\n[control]\nsource = \"etcd\"\nendpoints = [\"http://198.18.0.1:2379\"]\n";
        assert!(compat_of(etcd).ipv6_pending && !compat_of(BASE).ipv6_pending);
    }
}
