//! The subnet table: an immutable snapshot mapping prefixes to the peer that
//! owns them, built and validated by the control thread, read lock-free by
//! every worker.
//!
//! IPv4 lookup is a 16-8-8 multibit trie ([`super::dir`]): at most three
//! array loads whatever the prefix lengths. IPv6 lookup is one hash map per
//! prefix length present, tried from the longest down: IPv6 overlays use one
//! or two lengths (/64, /80), so that is one or two probes. Lookups allocate
//! nothing.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rustc_hash::{FxHashMap, FxHashSet};

use super::prefix::{Prefix, mask_v6};
use crate::wire::vxlan::Mac;
use crate::wireguard::PublicKey;

/// One peer's claim on a subnet, as a source (the peers file, etcd) states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub subnet: Prefix,
    /// Where the peer's encapd (or flanneld) listens on the underlay.
    pub endpoint: SocketAddr,
    /// The peer's VTEP MAC (VXLAN backend: the inner Ethernet destination).
    pub vtep_mac: Option<Mac>,
    /// The peer takes our datagrams apart in its kernel (see
    /// [`Route::kernel_decap`]).
    pub kernel_decap: bool,
    /// The peer's WireGuard identity (`backend = "wireguard"`): the key its
    /// sessions are made with, and the one cryptokey routing checks an
    /// inner source against. `None` with the other backends.
    pub wireguard: Option<WireGuardPeer>,
    /// Where the claim came from, for error messages ("peers.toml: peer #3").
    pub origin: String,
}

/// What the WireGuard backend knows of a peer beyond its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuardPeer {
    pub public_key: PublicKey,
    /// The peer's `preshared_key_file`, read when the peer is added.
    pub preshared_key_file: Option<std::path::PathBuf>,
}

/// What the table answers for a destination: the owning subnet and the
/// endpoint to send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub subnet: Prefix,
    pub endpoint: SocketAddr,
    /// The peer's VTEP MAC (VXLAN backend).
    pub vtep_mac: Option<Mac>,
    /// The peer takes our datagrams apart in its kernel: a kernel VTEP, or
    /// an encapd with the kernel path. Only such a peer is sent packets by
    /// this node's kernel path (`datapath::kernel`), which may carry a
    /// whole TSO packet or an inner checksum left for the hardware to
    /// finish: across a veth both arrive so, and only a kernel decapsulation
    /// accepts them. The workers send to every peer.
    pub kernel_decap: bool,
    /// The peer's WireGuard public key (`backend = "wireguard"`).
    pub public_key: Option<PublicKey>,
}

/// The node-local facts a table is validated against.
#[derive(Debug, Clone)]
pub struct TableScope {
    /// This node's own subnets (IPv4 and optionally IPv6); no peer may claim them.
    pub own: Vec<Prefix>,
    /// The overlay networks; every peer subnet must lie inside one of them.
    pub networks: Vec<Prefix>,
    /// The underlay address family: peers must be reachable from our socket.
    pub underlay_ipv4: bool,
}

/// One problem with one peer entry; a table build reports all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{origin}: subnet {subnet} is listed twice (first by {first})")]
    Duplicate { origin: String, subnet: Prefix, first: String },
    #[error("{origin}: subnet {subnet} overlaps this node's own subnet {own}")]
    ClaimsOwnSubnet { origin: String, subnet: Prefix, own: Prefix },
    #[error("{origin}: subnet {subnet} lies outside the overlay network(s) {networks}")]
    OutsideNetwork { origin: String, subnet: Prefix, networks: String },
    #[error("{origin}: public_ip {ip} is not of the underlay's address family ({family})")]
    WrongFamily { origin: String, ip: IpAddr, family: &'static str },
}

#[derive(Debug, Default)]
struct LengthLevel<K> {
    len: u8,
    mask: K,
    routes: FxHashMap<K, u32>,
}

/// An immutable routing snapshot. Cheap to share behind an `Arc`; a new
/// version replaces it whole.
#[derive(Debug, Default)]
pub struct SubnetTable {
    version: u64,
    routes: Vec<Route>,
    v4: super::dir::Dir4,
    v6: Vec<LengthLevel<u128>>,
    senders: FxHashSet<IpAddr>,
    /// WireGuard peers' `preshared_key_file`s, by public key.
    preshared: FxHashMap<PublicKey, std::path::PathBuf>,
}

impl SubnetTable {
    /// Validates `peers` against `scope` and builds the table. Every problem
    /// is reported, each naming the entry that caused it.
    pub fn build(version: u64, scope: &TableScope, peers: &[PeerSpec]) -> Result<Self, Vec<TableError>> {
        let mut errors = Vec::new();
        let mut seen: HashMap<Prefix, &str> = HashMap::new();
        let networks = scope.networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        for peer in peers {
            if let Some(first) = seen.insert(peer.subnet, &peer.origin) {
                errors.push(TableError::Duplicate { origin: peer.origin.clone(), subnet: peer.subnet, first: first.to_owned() });
                seen.insert(peer.subnet, first);
            }
            if let Some(own) = scope.own.iter().find(|own| own.overlaps(&peer.subnet)) {
                errors.push(TableError::ClaimsOwnSubnet { origin: peer.origin.clone(), subnet: peer.subnet, own: *own });
            }
            if !scope.networks.iter().any(|n| n.covers(&peer.subnet)) {
                errors.push(TableError::OutsideNetwork { origin: peer.origin.clone(), subnet: peer.subnet, networks: networks.clone() });
            }
            if peer.endpoint.is_ipv4() != scope.underlay_ipv4 {
                errors.push(TableError::WrongFamily {
                    origin: peer.origin.clone(),
                    ip: peer.endpoint.ip(),
                    family: if scope.underlay_ipv4 { "IPv4" } else { "IPv6" },
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self::from_valid(version, peers))
    }

    fn from_valid(version: u64, peers: &[PeerSpec]) -> Self {
        let mut table = SubnetTable { version, ..Default::default() };
        let mut v4 = Vec::new();
        for (index, peer) in peers.iter().enumerate() {
            let index = index as u32;
            table.routes.push(Route {
                subnet: peer.subnet,
                endpoint: peer.endpoint,
                vtep_mac: peer.vtep_mac,
                kernel_decap: peer.kernel_decap,
                public_key: peer.wireguard.as_ref().map(|w| w.public_key),
            });
            table.senders.insert(peer.endpoint.ip());
            if let Some(WireGuardPeer { public_key, preshared_key_file: Some(file) }) = &peer.wireguard {
                table.preshared.insert(*public_key, file.clone());
            }
            match peer.subnet {
                Prefix::V4 { addr, len } => v4.push((addr, len, index)),
                Prefix::V6 { addr, len } => {
                    level(&mut table.v6, len, mask_v6(len)).routes.insert(addr, index);
                }
            };
        }
        table.v4 = super::dir::Dir4::build(&mut v4);
        // Longest first: the first hit is the longest match.
        table.v6.sort_by_key(|l| std::cmp::Reverse(l.len));
        table
    }

    /// Longest-prefix match for `dst`.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        let index = match dst {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => lpm(&self.v6, u128::from(a)),
        }?;
        self.routes.get(index as usize)
    }

    /// True when `ip` is the underlay address of some peer.
    #[inline]
    pub fn is_known_sender(&self, ip: IpAddr) -> bool {
        self.senders.contains(&ip)
    }

    /// The `preshared_key_file` of the WireGuard peer `key`, if it names one.
    pub fn preshared_key_file(&self, key: &PublicKey) -> Option<&std::path::Path> {
        self.preshared.get(key).map(|p| p.as_path())
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Number of distinct underlay endpoints.
    pub fn peer_count(&self) -> usize {
        self.senders.len()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// A rough size of the table in memory, for reports.
    pub fn approx_bytes(&self) -> usize {
        let v6: usize = self.v6.iter().map(|l| l.routes.capacity() * (std::mem::size_of::<u128>() + 8)).sum();
        std::mem::size_of::<Self>()
            + self.routes.capacity() * std::mem::size_of::<Route>()
            + self.v4.bytes()
            + v6
            + self.senders.capacity() * 32
    }
}

fn level<K: Default + Copy>(levels: &mut Vec<LengthLevel<K>>, len: u8, mask: K) -> &mut LengthLevel<K> {
    let at = match levels.iter().position(|l| l.len == len) {
        Some(at) => at,
        None => {
            levels.push(LengthLevel { len, mask, routes: FxHashMap::default() });
            levels.len() - 1
        }
    };
    &mut levels[at]
}

#[inline]
fn lpm<K>(levels: &[LengthLevel<K>], addr: K) -> Option<u32>
where
    K: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = K>,
{
    levels.iter().find_map(|level| level.routes.get(&(addr & level.mask)).copied())
}

impl fmt::Display for SubnetTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subnet table version {} ({} routes, {} peers)", self.version, self.routes.len(), self.peer_count())?;
        let mut routes: Vec<&Route> = self.routes.iter().collect();
        routes.sort_by_key(|r| r.subnet);
        for r in routes {
            write!(f, "  {:<24} -> {}", r.subnet.to_string(), r.endpoint)?;
            if let Some(mac) = r.vtep_mac {
                write!(f, " (VTEP {mac})")?;
            }
            writeln!(f, "{}", if r.kernel_decap { " (decapsulates in its kernel)" } else { "" })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::prefix::mask_v4;
    use super::*;
    use proptest::prelude::*;

    fn scope() -> TableScope {
        TableScope {
            own: vec!["100.96.1.0/24".parse().unwrap()],
            networks: vec!["100.96.0.0/12".parse().unwrap(), "fd00::/8".parse().unwrap()],
            underlay_ipv4: true,
        }
    }

    fn peer(subnet: &str, ip: &str) -> PeerSpec {
        PeerSpec {
            wireguard: None,
            vtep_mac: None,
            kernel_decap: false,
            subnet: subnet.parse().unwrap(),
            endpoint: SocketAddr::new(ip.parse().unwrap(), 8285),
            origin: format!("peer {subnet}"),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = SubnetTable::build(
            7,
            &scope(),
            &[peer("100.97.0.0/16", "198.18.0.9"), peer("100.97.2.0/24", "198.18.0.2"), peer("100.97.2.128/25", "198.18.0.3")],
        )
        .unwrap();
        let at = |ip: &str| t.lookup(ip.parse().unwrap()).map(|r| r.endpoint.ip().to_string());
        assert_eq!(at("100.97.2.5").as_deref(), Some("198.18.0.2"));
        assert_eq!(at("100.97.2.200").as_deref(), Some("198.18.0.3"));
        assert_eq!(at("100.97.3.1").as_deref(), Some("198.18.0.9"));
        assert_eq!(at("100.98.0.1"), None);
        assert_eq!(at("fd00::1"), None);
        assert_eq!(t.version(), 7);
        assert!(t.is_known_sender("198.18.0.3".parse().unwrap()));
        assert!(!t.is_known_sender("198.18.0.4".parse().unwrap()));
    }

    #[test]
    fn reports_every_bad_entry() {
        let errs = SubnetTable::build(
            1,
            &scope(),
            &[
                peer("100.96.2.0/24", "198.18.0.2"),
                peer("100.96.2.0/24", "198.18.0.3"),
                peer("100.96.1.128/25", "198.18.0.4"),
                peer("10.0.0.0/24", "198.18.0.5"),
                peer("100.96.5.0/24", "2001:db8::1"),
            ],
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{text:?}");
        assert!(text[0].contains("listed twice") && text[0].contains("first by peer 100.96.2.0/24"));
        assert!(text[1].contains("overlaps this node's own subnet 100.96.1.0/24"));
        assert!(text[2].contains("outside the overlay"));
        assert!(text[3].contains("2001:db8::1") && text[3].contains("IPv4"));
    }

    /// The obvious reference: scan everything, keep the longest match.
    fn naive(peers: &[PeerSpec], dst: IpAddr) -> Option<SocketAddr> {
        peers.iter().filter(|p| p.subnet.contains(dst)).max_by_key(|p| p.subnet.len()).map(|p| p.endpoint)
    }

    fn prefixes_v4() -> impl Strategy<Value = Vec<(u32, u8)>> {
        // Addresses clustered in a /12 so prefixes overlap often.
        proptest::collection::vec((0u32..(1 << 20), 12u8..=32), 0..60)
    }

    proptest! {
        #[test]
        fn lookup_matches_naive_scan_v4(raw in prefixes_v4(), probes in proptest::collection::vec(0u32..(1 << 20), 1..50)) {
            let base = u32::from(std::net::Ipv4Addr::new(100, 96, 0, 0));
            let mut peers: Vec<PeerSpec> = Vec::new();
            for (i, (off, len)) in raw.into_iter().enumerate() {
                let subnet = Prefix::V4 { addr: (base | off) & mask_v4(len), len };
                if peers.iter().any(|p| p.subnet == subnet) { continue; }
                let endpoint = SocketAddr::new(IpAddr::from([198, 18, (i >> 8) as u8, i as u8]), 8285);
                peers.push(PeerSpec { wireguard: None, vtep_mac: None, kernel_decap: false, subnet, endpoint, origin: String::new() });
            }
            let scope = TableScope { own: vec![], networks: vec!["100.96.0.0/12".parse().unwrap()], underlay_ipv4: true };
            let table = SubnetTable::build(1, &scope, &peers).unwrap();
            for off in probes {
                let dst = IpAddr::from((base | off).to_be_bytes());
                prop_assert_eq!(table.lookup(dst).map(|r| r.endpoint), naive(&peers, dst));
            }
        }

        #[test]
        fn lookup_matches_naive_scan_v6(raw in proptest::collection::vec((0u128..(1 << 24), 40u8..=128), 0..60), probes in proptest::collection::vec(0u128..(1 << 24), 1..50)) {
            let base: u128 = "fd00::".parse::<std::net::Ipv6Addr>().unwrap().into();
            // Place the random bits right after /40 so /40../64 prefixes overlap.
            let spread = |x: u128| base | (x << 64);
            let mut peers: Vec<PeerSpec> = Vec::new();
            for (i, (off, len)) in raw.into_iter().enumerate() {
                let subnet = Prefix::V6 { addr: spread(off) & mask_v6(len), len };
                if peers.iter().any(|p| p.subnet == subnet) { continue; }
                let endpoint = SocketAddr::new(IpAddr::from([198, 18, (i >> 8) as u8, i as u8]), 8285);
                peers.push(PeerSpec { wireguard: None, vtep_mac: None, kernel_decap: false, subnet, endpoint, origin: String::new() });
            }
            let scope = TableScope { own: vec![], networks: vec!["fd00::/8".parse().unwrap()], underlay_ipv4: true };
            let table = SubnetTable::build(1, &scope, &peers).unwrap();
            for off in probes {
                let dst = IpAddr::from(spread(off).to_be_bytes());
                prop_assert_eq!(table.lookup(dst).map(|r| r.endpoint), naive(&peers, dst));
            }
        }
    }
}
