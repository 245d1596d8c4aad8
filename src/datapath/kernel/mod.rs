//! The kernel path (`[dataplane] kernel_path = "tc"`): flannel's udp or
//! vxlan encapsulation done by two eBPF programs on the kernel's
//! traffic-control hooks, so that a packet between two pods crosses no
//! user-space worker.
//! The workers stay, for everything the programs leave to them (IPv6, no
//! route, errors owed to the sender, anything unusual; see [`program`]).
//!
//! Why: every measure of docs/performance.md puts the gap to kernel VXLAN
//! in the crossings between the kernel and the workers (four extra copies
//! of every byte, a second pass through the stack, a thread wakeup per
//! hop), not in encapd's own code. The programs remove those crossings and
//! keep the wire format.
//!
//! [`KernelPath::attach`] creates the maps, loads both programs (the
//! verifier checks them) and attaches them through TCX links: `encap` on
//! the TUN's egress, `decap` on the ingress of the interface holding
//! `public_ip`. The links are fds of this process, so the programs go away
//! with it however it ends; a successor attaches its own behind them and
//! takes over when the predecessor exits. [`RouteSync`] keeps the routes
//! map equal to the published subnet table: the control thread applies
//! each new table to it, adding and replacing before deleting, and each
//! element changes atomically, so a lookup never misses a route that stays.

pub mod asm;
pub mod program;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::route::SubnetTable;
use crate::sys::bpf::{self, Map, MapKind, TcxHook};

pub use program::{Counter, Format};

/// Size of the routes map: flannel's default network (/16 of /24s) has 256
/// subnets; this leaves room for far larger clusters.
const MAX_ROUTES: u32 = 65_536;

/// What the kernel path needs to know about the node.
#[derive(Debug, Clone)]
pub struct KernelPathSpec {
    pub public_ip: Ipv4Addr,
    pub port: u16,
    pub subnet: Ipv4Addr,
    pub subnet_len: u8,
    /// The TUN device's name (it must exist).
    pub tun: String,
    /// The backend's wire format.
    pub format: Format,
}

/// The attached programs and their maps. Dropping it detaches both
/// programs; packets then go through the workers again.
pub struct KernelPath {
    links: Vec<OwnedFd>,
    counters: Map,
    routes: std::sync::Arc<Map>,
    cpus: usize,
    /// The interface `decap` is attached to.
    pub underlay: String,
    /// What [`RouteSync`] puts in the routes map: the routes to peers on
    /// this port, in this format.
    port: u16,
    format: Format,
}

/// Totals of one [`Counter`] over every CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

impl KernelPath {
    /// Loads and attaches both programs. Every error names the step.
    pub fn attach(spec: &KernelPathSpec) -> Result<KernelPath, String> {
        let underlay = crate::sys::netdev::interface_with_address(IpAddr::V4(spec.public_ip))
            .map_err(|e| format!("finding the interface of {}: {e}", spec.public_ip))?
            .ok_or_else(|| format!("no interface holds public_ip {}", spec.public_ip))?;
        let underlay_ifindex = bpf::ifindex(&underlay).map_err(|e| format!("interface {underlay}: {e}"))?;
        let tun_ifindex = bpf::ifindex(&spec.tun).map_err(|e| format!("TUN {}: {e}", spec.tun))?;
        let routes = Map::create(MapKind::LpmTrie, "encapd_routes", 8, program::ROUTE_VALUE_LEN, MAX_ROUTES)
            .map_err(|e| format!("creating the routes map: {e} (needs CAP_BPF or root)"))?;
        let counters = Map::create(MapKind::PerCpuArray, "encapd_counters", 4, 16, Counter::SLOTS)
            .map_err(|e| format!("creating the counters map: {e}"))?;
        let cpus = bpf::possible_cpus().map_err(|e| format!("counting CPUs: {e}"))?;
        let encap = program::encap(
            &program::EncapParams { local: spec.public_ip, port: spec.port, underlay_ifindex, format: spec.format },
            routes.as_fd().as_raw_fd(),
            counters.as_fd().as_raw_fd(),
        );
        let decap = program::decap(
            &program::DecapParams {
                local: spec.public_ip,
                port: spec.port,
                subnet: spec.subnet,
                subnet_len: spec.subnet_len,
                tun_ifindex,
                format: spec.format,
            },
            routes.as_fd().as_raw_fd(),
            counters.as_fd().as_raw_fd(),
        );
        let encode = |p: &[asm::Insn]| p.iter().map(|i| i.encode()).collect::<Vec<u64>>();
        let encap = bpf::load_tc_program("encapd_encap", &encode(&encap)).map_err(|e| format!("loading the encap program: {e}"))?;
        let decap = bpf::load_tc_program("encapd_decap", &encode(&decap)).map_err(|e| format!("loading the decap program: {e}"))?;
        // Decapsulation first: a peer's datagrams are taken in the kernel
        // before this node starts sending them from the kernel.
        let ingress = bpf::attach_tcx(std::os::fd::AsFd::as_fd(&decap), underlay_ifindex, TcxHook::Ingress)
            .map_err(|e| format!("attaching decap to {underlay} ingress: {e} (TCX needs Linux 6.6)"))?;
        let egress = bpf::attach_tcx(std::os::fd::AsFd::as_fd(&encap), tun_ifindex, TcxHook::Egress)
            .map_err(|e| format!("attaching encap to {} egress: {e} (TCX needs Linux 6.6)", spec.tun))?;
        Ok(KernelPath {
            links: vec![ingress, egress],
            counters,
            routes: std::sync::Arc::new(routes),
            cpus,
            underlay,
            port: spec.port,
            format: spec.format,
        })
    }

    /// A writer for the routes map, for the control thread.
    pub fn route_sync(&self) -> RouteSync {
        RouteSync { map: std::sync::Arc::clone(&self.routes), installed: BTreeMap::new(), port: self.port, format: self.format }
    }

    /// One counter summed over every CPU; zero if the map cannot be read.
    pub fn counter(&self, c: Counter) -> CounterValue {
        let Ok(values) = self.counters.per_cpu_values(c as u32, self.cpus) else { return CounterValue::default() };
        values.iter().fold(CounterValue::default(), |acc, v| {
            let packets = u64::from_ne_bytes(v[0..8].try_into().unwrap_or_default());
            let bytes = u64::from_ne_bytes(v[8..16].try_into().unwrap_or_default());
            CounterValue { packets: acc.packets + packets, bytes: acc.bytes + bytes }
        })
    }

    /// All counters, as the metrics endpoint shows them.
    pub fn totals(&self) -> crate::stats::exposition::KernelPathTotals {
        let e = self.counter(Counter::Encapsulated);
        let d = self.counter(Counter::Decapsulated);
        crate::stats::exposition::KernelPathTotals {
            egress_packets: e.packets,
            egress_bytes: e.bytes,
            ingress_packets: d.packets,
            ingress_bytes: d.bytes,
            encap_failed: self.counter(Counter::EncapFailed).packets,
        }
    }

    /// One line for the counters summary.
    pub fn summary_line(&self) -> String {
        let e = self.counter(Counter::Encapsulated);
        let d = self.counter(Counter::Decapsulated);
        let f = self.counter(Counter::EncapFailed);
        format!(
            "  kernel    egress {} pkts {} bytes | ingress {} pkts {} bytes | encap failed {}\n",
            e.packets, e.bytes, d.packets, d.bytes, f.packets
        )
    }

    /// How many links are held (2 once attached).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }
}

/// One route as the programs' map holds it.
type RouteKey = [u8; 8];
type RouteValue = [u8; program::ROUTE_VALUE_LEN as usize];

/// Keeps the routes map equal to the IPv4 routes of the published table.
pub struct RouteSync {
    map: std::sync::Arc<Map>,
    installed: BTreeMap<RouteKey, RouteValue>,
    port: u16,
    format: Format,
}

impl RouteSync {
    /// Applies `table`: new and changed routes first, then removals. A
    /// route whose peer listens on another port than the node's, a vxlan
    /// route without a VTEP MAC, and every IPv6 route stay with the
    /// workers. A peer that does not decapsulate in its kernel
    /// ([`Route::kernel_decap`](crate::route::Route::kernel_decap)) is in
    /// the map without the [`program::ROUTE_ENCAP`] flag: `decap` still
    /// takes its datagrams, `encap` leaves packets for it to the workers.
    /// Returns the number of failed map operations (each logged).
    pub fn apply(&mut self, table: &SubnetTable) -> usize {
        let wanted = wanted_routes(table, self.port, self.format);
        let mut failures = 0;
        for (key, peer) in &wanted {
            if self.installed.get(key) == Some(peer) {
                continue;
            }
            match self.map.update(key, peer) {
                Ok(()) => {
                    self.installed.insert(*key, *peer);
                }
                Err(e) => {
                    failures += 1;
                    log::error!("kernel path: cannot install the route {}: {e}; the workers carry it", describe(key));
                }
            }
        }
        let stale: Vec<RouteKey> = self.installed.keys().filter(|k| !wanted.contains_key(*k)).copied().collect();
        for key in stale {
            match self.map.delete(&key) {
                Ok(_) => {
                    self.installed.remove(&key);
                }
                Err(e) => {
                    failures += 1;
                    log::error!("kernel path: cannot remove the route {}: {e}", describe(&key));
                }
            }
        }
        failures
    }

    /// The routes in the map, as prefixes.
    pub fn installed(&self) -> usize {
        self.installed.len()
    }
}

fn wanted_routes(table: &SubnetTable, port: u16, format: Format) -> BTreeMap<RouteKey, RouteValue> {
    let mut out = BTreeMap::new();
    for r in table.routes() {
        let (IpAddr::V4(net), IpAddr::V4(peer)) = (r.subnet.network(), r.endpoint.ip()) else { continue };
        if r.endpoint.port() != port {
            continue;
        }
        let mac = match (format, r.vtep_mac) {
            (Format::FlannelUdp, _) => [0; 6],
            (Format::Vxlan { .. }, Some(mac)) => mac.0,
            (Format::Vxlan { .. }, None) => continue,
        };
        let mut value = RouteValue::default();
        value[..4].copy_from_slice(&peer.octets());
        value[4..10].copy_from_slice(&mac);
        value[program::ROUTE_FLAGS_AT] = if r.kernel_decap { program::ROUTE_ENCAP } else { 0 };
        out.insert(route_key(net, r.subnet.len()), value);
    }
    out
}

fn route_key(net: Ipv4Addr, len: u8) -> RouteKey {
    let l = u32::from(len).to_ne_bytes();
    let o = net.octets();
    [l[0], l[1], l[2], l[3], o[0], o[1], o[2], o[3]]
}

fn describe(key: &RouteKey) -> String {
    let len = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]);
    format!("{}/{len}", Ipv4Addr::new(key[4], key[5], key[6], key[7]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{PeerSpec, TableScope};
    use std::net::SocketAddr;

    /// A table of `(subnet, endpoint, VTEP MAC)` peers that decapsulate in
    /// their kernels.
    fn table(peers: &[(&str, &str, Option<&str>)]) -> SubnetTable {
        let with_decap: Vec<_> = peers.iter().map(|&(s, e, m)| (s, e, m, true)).collect();
        table_of(&with_decap)
    }

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

    /// Both programs, in both formats, pass the kernel's verifier (the
    /// check every start makes); without CAP_BPF there is no verifier to
    /// ask.
    #[test]
    fn the_verifier_accepts_both_programs() {
        let Ok(routes) = Map::create(MapKind::LpmTrie, "encapd_t_routes", 8, program::ROUTE_VALUE_LEN, 16) else { return };
        let counters = Map::create(MapKind::PerCpuArray, "encapd_t_count", 4, 16, Counter::SLOTS).unwrap();
        let (r, c) = (routes.as_fd().as_raw_fd(), counters.as_fd().as_raw_fd());
        let local = Ipv4Addr::new(198, 18, 0, 1);
        for format in [Format::FlannelUdp, VXLAN] {
            let encap = program::encap(&program::EncapParams { local, port: 8285, underlay_ifindex: 1, format }, r, c);
            let decap = program::decap(
                &program::DecapParams { local, port: 8285, subnet: Ipv4Addr::new(100, 96, 1, 0), subnet_len: 24, tun_ifindex: 1, format },
                r,
                c,
            );
            for (name, prog) in [("encapd_encap", encap), ("encapd_decap", decap)] {
                let insns: Vec<u64> = prog.iter().map(|i| i.encode()).collect();
                if let Err(e) = bpf::load_tc_program(name, &insns) {
                    panic!("{name} ({format:?}): {e}");
                }
            }
        }
        // And the counters read back as zero on every CPU.
        let cpus = bpf::possible_cpus().unwrap();
        assert!(counters.per_cpu_values(0, cpus).unwrap().iter().all(|v| v.iter().all(|&b| b == 0)));
    }

    #[test]
    fn only_ipv4_routes_on_our_port_go_to_the_kernel() {
        let t = table(&[
            ("100.96.2.0/24", "198.18.0.2:8285", None),
            ("100.96.3.0/24", "198.18.0.3:9000", None),
            ("fd00:96:2::/64", "198.18.0.2:8285", None),
        ]);
        let w = wanted_routes(&t, 8285, Format::FlannelUdp);
        assert_eq!(w.len(), 1);
        let (key, value) = w.iter().next().unwrap();
        assert_eq!(describe(key), "100.96.2.0/24");
        assert_eq!(value, &[198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0]);
    }

    /// A peer that reads our datagrams in user space stays in the map, so
    /// that `decap` takes its datagrams, but without the flag that lets
    /// `encap` send to it.
    #[test]
    fn a_peer_decapsulating_in_user_space_is_not_sent_to_from_the_kernel() {
        let t = table_of(&[("100.96.2.0/24", "198.18.0.2:8285", None, true), ("100.96.3.0/24", "198.18.0.3:8285", None, false)]);
        let w = wanted_routes(&t, 8285, Format::FlannelUdp);
        let flags: Vec<(String, u8)> = w.iter().map(|(k, v)| (describe(k), v[program::ROUTE_FLAGS_AT])).collect();
        assert_eq!(flags, [("100.96.2.0/24".to_owned(), program::ROUTE_ENCAP), ("100.96.3.0/24".to_owned(), 0)]);
    }

    #[test]
    fn a_vxlan_route_carries_the_peers_vtep_mac_and_needs_one() {
        let t = table(&[("100.96.2.0/24", "198.18.0.2:8472", Some("c6:d2:32:6f:8f:44")), ("100.96.3.0/24", "198.18.0.3:8472", None)]);
        let w = wanted_routes(&t, 8472, VXLAN);
        assert_eq!(w.len(), 1, "a route without a MAC stays with the workers");
        let (key, value) = w.iter().next().unwrap();
        assert_eq!(describe(key), "100.96.2.0/24");
        assert_eq!(value, &[198, 18, 0, 2, 0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44, 1, 0]);
    }
}
