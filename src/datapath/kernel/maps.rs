//! The routes maps as the programs read them (`bpf/encapd.h` holds the C
//! side of every layout here), and [`RouteSync`], which keeps them equal
//! to the published subnet table.
//!
//! Every route of the table is in a map, IPv4 in `routes4` and IPv6 in
//! `routes6`, so that the kernel's longest-prefix answer is the workers'
//! answer even where subnets nest. What a program may do with a route is
//! in its flags: [`ROUTE_ENCAP`] only where the kernel may send to the
//! peer, [`ROUTE_PEER_V4`] where its underlay address is IPv4 (the only
//! kind `decap` compares a datagram's source with).
//!
//! A failed map operation leaves the old value in the kernel, which would
//! send to a peer the table no longer names; [`RouteSync`] therefore
//! remembers what it could not do, retries it with a growing delay from its
//! own thread ([`RouteSync::spawn`]) and counts every failure
//! ([`RouteSync::failures`], exposed as
//! `encapd_kernel_route_update_failures_total`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Map, MapData, MapError};

use super::Format;
use crate::route::{Route, SharedTable, SubnetTable};

/// Bytes of a routes-map value: the peer's IPv4 address (network order),
/// its VTEP MAC, the flags, a byte of padding (`struct route`).
pub const ROUTE_VALUE_LEN: usize = 12;
pub type RouteValue = [u8; ROUTE_VALUE_LEN];
/// Where a value holds its flags.
pub const ROUTE_FLAGS_AT: usize = 10;
/// `encap` may send to this peer (`ROUTE_ENCAP` in encapd.h).
pub const ROUTE_ENCAP: u8 = 1;
/// The peer's underlay address is IPv4 (`ROUTE_PEER_V4`).
pub const ROUTE_PEER_V4: u8 = 2;

/// The maps' names in the object.
pub const ROUTES4: &str = "routes4";
pub const ROUTES6: &str = "routes6";
pub const COUNTERS: &str = "counters";

/// The value the programs see for `route` on a node whose backend listens
/// on `port` and speaks `format`.
pub fn route_value(route: &Route, port: u16, format: Format) -> RouteValue {
    let mut value = RouteValue::default();
    let mut flags = 0;
    if let IpAddr::V4(peer) = route.endpoint.ip() {
        value[..4].copy_from_slice(&peer.octets());
        flags |= ROUTE_PEER_V4;
        let mac = match (format, route.vtep_mac) {
            (Format::FlannelUdp, _) => Some([0; 6]),
            (Format::Vxlan { .. }, mac) => mac.map(|m| m.0),
        };
        if let Some(mac) = mac {
            value[4..10].copy_from_slice(&mac);
            if route.kernel_decap && route.endpoint.port() == port {
                flags |= ROUTE_ENCAP;
            }
        }
    }
    value[ROUTE_FLAGS_AT] = flags;
    value
}

/// A route's key: prefix length and network, as the LPM trie takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RouteKey {
    V4(u8, [u8; 4]),
    V6(u8, [u8; 16]),
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteKey::V4(len, a) => write!(f, "{}/{len}", std::net::Ipv4Addr::from(*a)),
            RouteKey::V6(len, a) => write!(f, "{}/{len}", std::net::Ipv6Addr::from(*a)),
        }
    }
}

fn wanted_routes(table: &SubnetTable, port: u16, format: Format) -> BTreeMap<RouteKey, RouteValue> {
    table
        .routes()
        .iter()
        .map(|r| {
            let key = match r.subnet.network() {
                IpAddr::V4(a) => RouteKey::V4(r.subnet.len(), a.octets()),
                IpAddr::V6(a) => RouteKey::V6(r.subnet.len(), a.octets()),
            };
            (key, route_value(r, port, format))
        })
        .collect()
}

/// The two routes maps.
pub struct RouteMaps {
    routes4: LpmTrie<MapData, [u8; 4], RouteValue>,
    routes6: LpmTrie<MapData, [u8; 16], RouteValue>,
}

impl RouteMaps {
    /// The maps of a loaded object, or adopted from their fds.
    pub fn new(routes4: Map, routes6: Map) -> Result<RouteMaps, MapError> {
        Ok(RouteMaps { routes4: LpmTrie::try_from(routes4)?, routes6: LpmTrie::try_from(routes6)? })
    }

    /// Duplicates of the maps' fds (for a successor).
    pub fn fds(&self) -> std::io::Result<[std::os::fd::OwnedFd; 2]> {
        use std::os::fd::AsFd;
        let dup = |m: &MapData| m.fd().as_fd().try_clone_to_owned();
        Ok([dup(self.routes4_data())?, dup(self.routes6_data())?])
    }

    fn routes4_data(&self) -> &MapData {
        aya::maps::IterableMap::map(&self.routes4)
    }

    fn routes6_data(&self) -> &MapData {
        aya::maps::IterableMap::map(&self.routes6)
    }

    fn put(&mut self, key: &RouteKey, value: &RouteValue) -> Result<(), MapError> {
        match *key {
            RouteKey::V4(len, a) => self.routes4.insert(&Key::new(u32::from(len), a), value, 0),
            RouteKey::V6(len, a) => self.routes6.insert(&Key::new(u32::from(len), a), value, 0),
        }
    }

    fn remove(&mut self, key: &RouteKey) -> Result<(), MapError> {
        let r = match *key {
            RouteKey::V4(len, a) => self.routes4.remove(&Key::new(u32::from(len), a)),
            RouteKey::V6(len, a) => self.routes6.remove(&Key::new(u32::from(len), a)),
        };
        match r {
            // Already gone is what was wanted.
            Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// What the maps hold, read back (for tests and `RouteSync::adopt`).
    fn read(&self) -> BTreeMap<RouteKey, RouteValue> {
        let mut out = BTreeMap::new();
        for (k, v) in self.routes4.iter().flatten() {
            out.insert(RouteKey::V4(k.prefix_len() as u8, k.data()), v);
        }
        for (k, v) in self.routes6.iter().flatten() {
            out.insert(RouteKey::V6(k.prefix_len() as u8, k.data()), v);
        }
        out
    }
}

/// Keeps the routes maps equal to the published table.
pub struct RouteSync {
    maps: RouteMaps,
    installed: BTreeMap<RouteKey, RouteValue>,
    port: u16,
    format: Format,
    failures: Arc<AtomicU64>,
    /// Operations the last [`apply`](Self::apply) could not do.
    pending: usize,
}

impl RouteSync {
    /// A writer for empty maps.
    pub fn new(maps: RouteMaps, port: u16, format: Format) -> RouteSync {
        RouteSync { maps, installed: BTreeMap::new(), port, format, failures: Arc::default(), pending: 0 }
    }

    /// A writer for maps a predecessor filled: what they hold is what is
    /// installed.
    pub fn adopt(maps: RouteMaps, port: u16, format: Format) -> RouteSync {
        let installed = maps.read();
        RouteSync { installed, ..RouteSync::new(maps, port, format) }
    }

    /// Map operations that failed so far (each logged).
    pub fn failures(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.failures)
    }

    /// Applies `table`: new and changed routes first, then removals, each
    /// element atomic, so a lookup never misses a route that stays. Returns
    /// the number of operations that failed (they are retried by the next
    /// call).
    pub fn apply(&mut self, table: &SubnetTable) -> usize {
        let wanted = wanted_routes(table, self.port, self.format);
        let mut failed = 0;
        for (key, value) in &wanted {
            if self.installed.get(key) == Some(value) {
                continue;
            }
            match self.maps.put(key, value) {
                Ok(()) => {
                    self.installed.insert(*key, *value);
                }
                Err(e) => {
                    failed += 1;
                    log::error!(
                        "kernel path: cannot install the route {key}: {e}; retrying (the workers carry it meanwhile only if no covering route is in the kernel)"
                    );
                }
            }
        }
        let stale: Vec<RouteKey> = self.installed.keys().filter(|k| !wanted.contains_key(*k)).copied().collect();
        for key in stale {
            match self.maps.remove(&key) {
                Ok(()) => {
                    self.installed.remove(&key);
                }
                Err(e) => {
                    failed += 1;
                    log::error!("kernel path: cannot remove the route {key}: {e}; retrying");
                }
            }
        }
        self.failures.fetch_add(failed as u64, Ordering::Relaxed);
        if failed == 0 && self.pending > 0 {
            log::info!("kernel path: the routes map matches the table again");
        }
        self.pending = failed;
        failed
    }

    /// The routes in the maps.
    pub fn installed(&self) -> usize {
        self.installed.len()
    }

    /// Runs the writer on a thread of its own (`encapd-kroutes`): each call
    /// of the returned function (the control thread's table listener) asks
    /// it to apply the newest table of `shared`; failed operations are
    /// retried after 100 ms, doubling up to 5 s, until they succeed or a
    /// newer table makes them moot. The thread ends when the function is
    /// dropped. `clear_caps`: the thread gives up its capabilities first
    /// (when no user switch will clear them; see below).
    pub fn spawn(mut self, shared: SharedTable, clear_caps: bool) -> std::io::Result<impl FnMut(&SubnetTable) + Send + 'static> {
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        std::thread::Builder::new().name("encapd-kroutes".into()).spawn(move || {
            // Map updates go through the fds the maps were created with and
            // need no capability. The thread starts before the daemon drops
            // its privileges, and `capset` acts per thread: under a unit
            // that already runs as the user no switch clears it, so it gives
            // up its own. Not when a switch will: glibc carries setuid to
            // every thread and aborts the process if one refuses it.
            if clear_caps && let Err(e) = crate::sys::privileges::clear_thread_caps() {
                log::warn!("kernel path: the route writer could not clear its capabilities: {e}");
            }
            let mut delay = RETRY_FIRST;
            loop {
                let wait = if self.pending > 0 {
                    rx.recv_timeout(delay)
                } else {
                    rx.recv().map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected)
                };
                match wait {
                    Ok(()) => delay = RETRY_FIRST,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => delay = (delay * 2).min(RETRY_MAX),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
                self.apply(&shared.load());
            }
        })?;
        // A full channel already asks for the newest table: nothing lost.
        Ok(move |_: &SubnetTable| {
            let _ = tx.try_send(());
        })
    }
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{PeerSpec, TableScope};
    use std::net::SocketAddr;

    /// A table of `(subnet, endpoint, VTEP MAC, kernel_decap)` peers.
    fn table_of(peers: &[(&str, &str, Option<&str>, bool)]) -> SubnetTable {
        let scope = TableScope {
            own: vec!["100.96.1.0/24".parse().unwrap()],
            networks: vec!["100.96.0.0/16".parse().unwrap(), "fd00:96::/32".parse().unwrap()],
            underlay_ipv4: true,
        };
        let specs: Vec<PeerSpec> = peers
            .iter()
            .map(|&(subnet, ep, mac, kernel_decap)| PeerSpec {
                wireguard: None,
                kernel_decap,
                subnet: subnet.parse().unwrap(),
                endpoint: ep.parse::<SocketAddr>().unwrap(),
                vtep_mac: mac.map(|m| m.parse().unwrap()),
                origin: "test".into(),
            })
            .collect();
        SubnetTable::build(1, &scope, &specs).unwrap()
    }

    const VXLAN: Format = Format::Vxlan { vni: 1, mac: [0x02, 0, 198, 18, 0, 1] };

    fn flags(w: &BTreeMap<RouteKey, RouteValue>) -> Vec<(String, u8)> {
        w.iter().map(|(k, v)| (k.to_string(), v[ROUTE_FLAGS_AT])).collect()
    }

    /// Every route is in the map, so that longest-prefix answers agree;
    /// only those the kernel may send to carry ROUTE_ENCAP.
    #[test]
    fn the_whole_table_goes_to_the_kernel_with_what_it_may_do() {
        let t = table_of(&[
            ("100.96.2.0/24", "198.18.0.2:8285", None, true),
            ("100.96.2.128/25", "198.18.0.3:8285", None, false),
            ("100.96.3.0/24", "198.18.0.3:9000", None, true),
            ("fd00:96:2::/64", "198.18.0.2:8285", None, true),
        ]);
        let w = wanted_routes(&t, 8285, Format::FlannelUdp);
        let both = ROUTE_ENCAP | ROUTE_PEER_V4;
        assert_eq!(
            flags(&w),
            [
                ("100.96.2.0/24".to_owned(), both),
                ("100.96.3.0/24".to_owned(), ROUTE_PEER_V4),
                ("100.96.2.128/25".to_owned(), ROUTE_PEER_V4),
                ("fd00:96:2::/64".to_owned(), both),
            ]
        );
        assert_eq!(w.values().next().unwrap(), &[198, 18, 0, 2, 0, 0, 0, 0, 0, 0, both, 0]);
    }

    #[test]
    fn a_vxlan_route_carries_the_peers_vtep_mac_and_needs_one_to_be_sent_to() {
        let t = table_of(&[
            ("100.96.2.0/24", "198.18.0.2:8472", Some("c6:d2:32:6f:8f:44"), true),
            ("100.96.3.0/24", "198.18.0.3:8472", None, true),
        ]);
        let w = wanted_routes(&t, 8472, VXLAN);
        assert_eq!(flags(&w), [("100.96.2.0/24".to_owned(), ROUTE_ENCAP | ROUTE_PEER_V4), ("100.96.3.0/24".to_owned(), ROUTE_PEER_V4)]);
        assert_eq!(&w.values().next().unwrap()[4..10], &[0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
    }
}
