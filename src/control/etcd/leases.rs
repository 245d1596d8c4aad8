//! The leases this node routes, kept in step with etcd: every put or delete
//! under `<prefix>/subnets/` becomes the [`PeerChange`]s it makes to the
//! table. Malformed leases and leases of other backends are skipped, logged
//! once and (malformed ones) counted; two keys may not route one subnet.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::client::Listed;
use crate::control::flannel::{self, LeaseExpect, Skip};
use crate::control::{ControlCounters, PeerChange};
use crate::route::{Prefix, TableScope};

/// The leases currently routed, and what has been logged about the rest.
pub struct Leases {
    pub subnets_prefix: String,
    pub own_name: String,
    expect: LeaseExpect,
    scope: TableScope,
    /// Routed leases: key name → subnet.
    routed: HashMap<String, Prefix>,
    /// Subnet → key name routing it (two keys may not route one subnet).
    by_subnet: HashMap<Prefix, String>,
    /// (key name, mod revision) of malformed values already counted.
    malformed_seen: HashSet<(String, i64)>,
    /// Keys of other backends already logged.
    backend_logged: HashSet<String>,
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
        let skip = match flannel::lease_peer(name, value, self.expect, &self.scope) {
            Ok(peer) => match self.by_subnet.get(&peer.subnet) {
                Some(other) if other != name => Skip::Malformed(format!("subnet {} is already routed by lease {other}", peer.subnet)),
                _ => {
                    self.routed.insert(name.to_owned(), peer.subnet);
                    self.by_subnet.insert(peer.subnet, name.to_owned());
                    out.push(PeerChange::Add(peer));
                    return;
                }
            },
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

    /// A delete of `name` (or a put that made it unusable).
    pub fn delete(&mut self, name: &str, out: &mut Vec<PeerChange>) {
        if let Some(subnet) = self.routed.remove(name) {
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
