//! The leases this node routes, kept in step with etcd: every put or delete
//! under `<prefix>/subnets/` becomes the [`PeerChange`]s it makes to the
//! table (one per subnet: a dual-stack lease routes two). Malformed leases
//! and leases of other backends are skipped, logged once and (malformed
//! ones) counted; two keys may not route one subnet. The IPv6 subnet of a
//! lease that names a `PublicIPv6` is not routed, and logged once
//! (`flannel::LeaseRoutes::ipv6_unrouted`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::client::Listed;
use crate::control::flannel::{self, LeaseExpect, Skip};
use crate::control::{ControlCounters, PeerChange};
use crate::route::{PeerSpec, Prefix, TableScope};

/// The leases currently routed, and what has been logged about the rest.
pub struct Leases {
    pub subnets_prefix: String,
    pub own_name: String,
    expect: LeaseExpect,
    scope: TableScope,
    /// Routed leases: key name → its routed subnets.
    routed: HashMap<String, Vec<Prefix>>,
    /// Subnet → key name routing it (two keys may not route one subnet).
    by_subnet: HashMap<Prefix, String>,
    /// (key name, mod revision) of malformed values already counted.
    malformed_seen: HashSet<(String, i64)>,
    /// Keys of other backends already logged.
    backend_logged: HashSet<String>,
    /// Keys whose unrouted IPv6 subnet was logged.
    ipv6_logged: HashSet<String>,
    /// Malformed leases seen before the counters existed (at start-up).
    pub uncounted_malformed: u64,
}

impl Leases {
    pub fn new(subnets_prefix: String, own_name: String, expect: LeaseExpect, scope: TableScope) -> Leases {
        Leases {
            subnets_prefix,
            own_name,
            expect,
            scope,
            routed: HashMap::new(),
            by_subnet: HashMap::new(),
            malformed_seen: HashSet::new(),
            backend_logged: HashSet::new(),
            ipv6_logged: HashSet::new(),
            uncounted_malformed: 0,
        }
    }

    /// The name of a key under the subnets prefix, `None` for other keys.
    pub fn name_of<'a>(&self, key: &'a [u8]) -> Option<std::borrow::Cow<'a, str>> {
        key.strip_prefix(self.subnets_prefix.as_bytes()).map(String::from_utf8_lossy)
    }

    /// A put of `value` on `name`: the changes it makes to the table.
    pub fn put(&mut self, name: &str, value: &[u8], mod_revision: i64, counters: Option<&ControlCounters>, out: &mut Vec<PeerChange>) {
        if name == self.own_name {
            return;
        }
        let skip = match flannel::lease_routes(name, value, self.expect, &self.scope) {
            Ok(routes) => {
                let taken = routes.peers.iter().find_map(|p| self.by_subnet.get(&p.subnet).filter(|o| *o != name).map(|o| (p.subnet, o)));
                match taken {
                    Some((subnet, other)) => Skip::Malformed(format!("subnet {subnet} is already routed by lease {other}")),
                    None => {
                        if let Some(why) = &routes.ipv6_unrouted
                            && self.ipv6_logged.insert(name.to_owned())
                        {
                            log::warn!("etcd: lease {}{name}: {why}", self.subnets_prefix);
                        }
                        self.route(name, routes.peers, out);
                        return;
                    }
                }
            }
            Err(skip) => skip,
        };
        match &skip {
            Skip::Malformed(why) => {
                if self.malformed_seen.insert((name.to_owned(), mod_revision)) {
                    match counters {
                        Some(c) => {
                            c.malformed_leases.fetch_add(1, Ordering::Relaxed);
                        }
                        None => self.uncounted_malformed += 1,
                    }
                    log::warn!("etcd: skipping lease {}{name} (revision {mod_revision}): {why}", self.subnets_prefix);
                }
            }
            Skip::Backend { .. } => {
                if self.backend_logged.insert(name.to_owned()) {
                    log::warn!("etcd: skipping lease {}{name}: {skip}", self.subnets_prefix);
                }
            }
        }
        self.delete(name, out);
    }

    /// Routes `name`'s peers: what it routed before and no longer does is
    /// removed, the rest added (or replaced).
    fn route(&mut self, name: &str, peers: Vec<PeerSpec>, out: &mut Vec<PeerChange>) {
        let subnets: Vec<Prefix> = peers.iter().map(|p| p.subnet).collect();
        for gone in self.routed.remove(name).unwrap_or_default().into_iter().filter(|s| !subnets.contains(s)) {
            self.by_subnet.remove(&gone);
            out.push(PeerChange::Remove(gone));
        }
        for peer in peers {
            self.by_subnet.insert(peer.subnet, name.to_owned());
            out.push(PeerChange::Add(peer));
        }
        self.routed.insert(name.to_owned(), subnets);
    }

    /// A delete of `name` (or a put that made it unusable).
    pub fn delete(&mut self, name: &str, out: &mut Vec<PeerChange>) {
        for subnet in self.routed.remove(name).unwrap_or_default() {
            self.by_subnet.remove(&subnet);
            out.push(PeerChange::Remove(subnet));
        }
    }

    /// Replaces the whole set with a fresh listing.
    pub fn relist(&mut self, listed: &[Listed], counters: Option<&ControlCounters>) -> Vec<PeerChange> {
        let mut out = Vec::new();
        let present: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        let gone: Vec<String> = self.routed.keys().filter(|k| !present.contains(k.as_str())).cloned().collect();
        for name in gone {
            self.delete(&name, &mut out);
        }
        for l in listed {
            self.put(&l.name, &l.value, l.mod_revision, counters, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::flannel::FlannelBackend;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn dual_stack() -> Leases {
        let scope = TableScope {
            own: vec![p("100.96.1.0/24"), p("fd00:96:1::/64")],
            networks: vec![p("100.96.0.0/16"), p("fd00:96::/32")],
            underlay_ipv4: true,
        };
        let expect = LeaseExpect { backend: FlannelBackend::Udp, port: 8285 };
        Leases::new("/coreos.com/network/subnets/".into(), "100.96.1.0-24&fd00:96:1::-64".into(), expect, scope)
    }

    fn summary(changes: &[PeerChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                PeerChange::Add(peer) => format!("+{} {}", peer.subnet, peer.endpoint),
                PeerChange::Remove(subnet) => format!("-{subnet}"),
            })
            .collect()
    }

    /// A dual-stack lease is two routes; they come and go together, and an
    /// IPv6 subnet the lease stops routing (it now names a `PublicIPv6`) is
    /// removed on its own.
    #[test]
    fn a_dual_stack_lease_routes_and_unroutes_both_subnets() {
        let mut leases = dual_stack();
        let name = "100.96.2.0-24&fd00:96:2::-64";
        let mut out = Vec::new();
        leases.put(name, br#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#, 5, None, &mut out);
        assert_eq!(summary(&out), ["+100.96.2.0/24 198.18.0.2:8285", "+fd00:96:2::/64 198.18.0.2:8285"]);
        out.clear();
        leases.put(name, br#"{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:18::2"}"#, 6, None, &mut out);
        assert_eq!(summary(&out), ["-fd00:96:2::/64", "+100.96.2.0/24 198.18.0.2:8285"]);
        out.clear();
        leases.put(name, br#"{"PublicIP":"198.18.0.3","PublicIPv6":null}"#, 7, None, &mut out);
        assert_eq!(summary(&out), ["+100.96.2.0/24 198.18.0.3:8285", "+fd00:96:2::/64 198.18.0.3:8285"]);
        out.clear();
        leases.delete(name, &mut out);
        assert_eq!(summary(&out), ["-100.96.2.0/24", "-fd00:96:2::/64"]);
        assert_eq!(leases.uncounted_malformed, 0);
    }

    /// Two keys may not route one subnet, IPv6 included; our own key is
    /// not a peer.
    #[test]
    fn two_keys_may_not_route_one_ipv6_subnet() {
        let mut leases = dual_stack();
        let value = br#"{"PublicIP":"198.18.0.2","PublicIPv6":null}"#;
        let mut out = Vec::new();
        leases.put("100.96.2.0-24&fd00:96:2::-64", value, 5, None, &mut out);
        out.clear();
        leases.put("100.96.3.0-24&fd00:96:2::-64", value, 6, None, &mut out);
        assert!(out.is_empty(), "{:?}", summary(&out));
        assert_eq!(leases.uncounted_malformed, 1);
        leases.put("100.96.1.0-24&fd00:96:1::-64", value, 7, None, &mut out);
        assert!(out.is_empty() && leases.uncounted_malformed == 1, "our own lease");
    }
}
