//! `config::Config::parse` on arbitrary UTF-8 text: never panics, every error
//! names the file, what it accepts satisfies the documented invariants (for
//! etcd: an IPv4 public IP, and subnet6 inside cidr6 when both are given), and
//! the effective configuration it prints (`Display`) parses back to the same
//! values.
//!
//! Input: the configuration file text (invalid UTF-8 is skipped).

use std::path::Path;

use encapd::config::{Config, ControlSource};

const FILE: &str = "/etc/encapd/encapd.toml";

/// The control source with the etcd password reduced to whether one is set:
/// the printed config shows it as "(hidden)" on purpose.
fn comparable(c: &ControlSource) -> ControlSource {
    match c {
        ControlSource::Etcd(e) => {
            let mut e = e.clone();
            e.password = e.password.as_ref().map(|_| String::new());
            ControlSource::Etcd(e)
        }
        other => other.clone(),
    }
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new(FILE);
    let c = match Config::parse(text, path) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with(FILE), "error does not name the file: {msg}");
            return;
        }
    };
    // With the etcd source, subnet and cidr are placeholders until the lease
    // is allocated at start; the file source states them.
    if matches!(c.control, ControlSource::File { .. }) {
        assert!(c.subnet.is_ipv4() && c.cidr.is_ipv4());
        assert!(c.cidr.covers(&c.subnet) && c.cidr != c.subnet, "subnet {} outside cidr {}", c.subnet, c.cidr);
        assert!(c.subnet.len() <= 30);
        if let (Some(s6), Some(c6)) = (c.subnet6, c.cidr6) {
            assert!(!s6.is_ipv4() && c6.covers(&s6) && s6 != c6 && s6.len() <= 126);
        } else {
            assert!(c.subnet6.is_none() && c.cidr6.is_none(), "subnet6 and cidr6 come together");
        }
    }
    // With etcd, subnet6 and cidr6 are each optional (etcd's network says
    // whether there is IPv6), and the underlay is IPv4 (flannel's PublicIP).
    if let ControlSource::Etcd(e) = &c.control {
        assert!(c.public_ip.is_ipv4(), "etcd with the IPv6 public_ip {}", c.public_ip);
        assert_eq!((e.given_subnet6, e.given_cidr6), (c.subnet6, c.cidr6));
        assert!(c.subnet6.is_none_or(|s6| !s6.is_ipv4() && s6.len() <= 126) && c.cidr6.is_none_or(|c6| !c6.is_ipv4()));
        if let (Some(s6), Some(c6)) = (c.subnet6, c.cidr6) {
            assert!(c6.covers(&s6) && s6 != c6, "subnet6 {s6} outside cidr6 {c6}");
        }
    }
    assert_ne!(c.port, 0);
    assert!((1..=256).contains(&c.workers) || c.workers == std::thread::available_parallelism().map_or(1, |n| n.get()));
    assert!((1..=256).contains(&c.batch));
    assert!((65536..=1 << 30).contains(&c.socket_buffer));
    assert!(!c.tun.is_empty() && c.tun.len() <= 15);
    if let Some(cpus) = &c.cpus {
        assert_eq!(cpus.len(), c.workers);
    }
    if let Some(mtu) = c.underlay_mtu {
        assert!((576..=65535).contains(&mtu));
        let _ = c.tun_mtu(mtu);
    }
    let scope = c.table_scope();
    assert!(!scope.own.is_empty() && !scope.networks.is_empty());
    match &c.control {
        ControlSource::File { peers } => {
            assert_eq!(c.peers_path(), Some(peers.as_path()));
        }
        ControlSource::Etcd(_) => assert!(c.peers_path().is_none() && c.etcd().is_some()),
    }

    // The printed effective configuration is valid and means the same.
    let printed = c.to_string();
    let again = Config::parse(&printed, path).unwrap_or_else(|e| panic!("printed config does not parse: {e}\n--- printed:\n{printed}"));
    assert_eq!(
        (again.public_ip, again.subnet, again.subnet6, again.cidr, again.cidr6, again.backend, again.port, again.underlay_mtu),
        (c.public_ip, c.subnet, c.subnet6, c.cidr, c.cidr6, c.backend, c.port, c.underlay_mtu),
        "printed config parses to different [node]/[network] values:\n{printed}"
    );
    assert_eq!(
        (&again.tun, again.workers, again.io, &again.cpus, again.batch, again.socket_buffer, again.offload, comparable(&again.control)),
        (&c.tun, c.workers, c.io, &c.cpus, c.batch, c.socket_buffer, c.offload, comparable(&c.control)),
        "printed config parses to different [dataplane]/[control] values:\n{printed}"
    );
}
