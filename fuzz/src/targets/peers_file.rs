//! `config::parse_peers` on arbitrary UTF-8 text: never panics, every error
//! names the file, and what it accepts is consistent (unicast endpoints with a
//! non-zero port, an IPv4 subnet per entry optionally followed by the same
//! entry's IPv6 one) and builds into a `SubnetTable` whose longest-prefix
//! lookups, probed at every subnet's edges, agree with a linear scan.
//!
//! With the vxlan backend, every accepted entry has a unicast VTEP MAC; with
//! udp, none has one.
//!
//! Input: the peers file text (invalid UTF-8 is skipped). The backend is
//! vxlan when the text mentions `vtep_mac` an odd number of times, so both
//! kinds are explored from the same corpus.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use encapd::config::{PeerDefaults, parse_peers};
use encapd::route::{Prefix, SubnetTable, TableScope};

const FILE: &str = "fuzz/peers.toml";

/// The first and last address of `p` and the addresses just outside it.
fn probes(p: &Prefix) -> Vec<IpAddr> {
    match *p {
        Prefix::V4 { addr, len } => {
            let last = addr | (u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
            [addr, last, addr.wrapping_sub(1), last.wrapping_add(1)].map(|a| IpAddr::V4(Ipv4Addr::from(a))).to_vec()
        }
        Prefix::V6 { addr, len } => {
            let last = addr | (u128::MAX.checked_shr(u32::from(len)).unwrap_or(0));
            [addr, last, addr.wrapping_sub(1), last.wrapping_add(1)].map(|a| IpAddr::V6(Ipv6Addr::from(a))).to_vec()
        }
    }
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let vxlan = text.matches("vtep_mac").count() % 2 == 1;
    let peers = match parse_peers(text, FILE, PeerDefaults { port: 8285, vxlan, wireguard: false }) {
        Ok(p) => p,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with(FILE), "error does not name the file: {msg}");
            return;
        }
    };
    let mut last_v4_origin: Option<&str> = None;
    for p in &peers {
        assert_ne!(p.endpoint.port(), 0, "{}: port 0 accepted", p.origin);
        assert!(!p.endpoint.ip().is_unspecified() && !p.endpoint.ip().is_multicast(), "{}: non-unicast endpoint", p.origin);
        assert!(p.origin.starts_with(FILE) && p.origin.contains(": peer #"), "origin {:?}", p.origin);
        match p.vtep_mac {
            Some(mac) => assert!(vxlan && !mac.is_group(), "{}: VTEP MAC {mac} accepted (vxlan {vxlan})", p.origin),
            None => assert!(!vxlan, "{}: a vxlan peer without a VTEP MAC", p.origin),
        }
        if p.subnet.is_ipv4() {
            last_v4_origin = Some(&p.origin);
        } else {
            assert_eq!(last_v4_origin, Some(p.origin.as_str()), "an IPv6 subnet must follow its entry's IPv4 subnet");
            last_v4_origin = None;
        }
        // Strict prefixes: no host bits, so the network address round-trips.
        let again: Prefix = p.subnet.to_string().parse().expect("a parsed prefix prints as a valid prefix");
        assert_eq!(again, p.subnet);
    }

    // Build a table from whatever was accepted, in a scope that admits all of it.
    let Some(first) = peers.first() else { return };
    let scope = TableScope {
        own: vec![],
        networks: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        underlay_ipv4: first.endpoint.is_ipv4(),
    };
    match SubnetTable::build(1, &scope, &peers) {
        Ok(table) => {
            assert_eq!(table.len(), peers.len());
            let _ = table.to_string();
            for p in &peers {
                assert!(table.is_known_sender(p.endpoint.ip()));
                // Probe the first and last address of each subnet and their
                // neighbours outside it, against a linear scan.
                for at in probes(&p.subnet) {
                    let want =
                        peers.iter().filter(|q| q.subnet.contains(at)).max_by_key(|q| q.subnet.len()).map(|q| (q.subnet, q.endpoint));
                    let got = table.lookup(at).map(|r| (r.subnet, r.endpoint));
                    assert_eq!(got, want, "lookup({at}) disagrees with the longest match by linear scan");
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
}
