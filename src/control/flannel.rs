//! flannel's lease store format, as flanneld reads and writes it in etcd v3
//! (flannel-io/flannel `pkg/subnet`, `pkg/lease`): the network config at
//! `<prefix>/config` ([`NetworkConfig`], and subnet allocation), leases at
//! `<prefix>/subnets/<name>` with a JSON value (names in [`key`]: `10.5.52.0-24`,
//! dual-stack `10.5.52.0-24&fc00::-64`), and the `subnet.env` file. Pure
//! functions, no I/O, so every rule is unit-tested, against literal keys
//! and values as flanneld writes them.
//!
//! Dual stack: encapd carries a peer's IPv6 subnet over the same IPv4
//! underlay as its IPv4 subnet, to the lease's `PublicIP` (as the peers
//! file's `subnet6` does), and writes `"PublicIPv6":null`. A lease that
//! names a `PublicIPv6` is flanneld's dual-stack vxlan, which carries IPv6
//! on a second VTEP over an IPv6 underlay: encapd cannot reach it there,
//! so only that lease's IPv4 subnet is routed ([`LeaseRoutes::ipv6_unrouted`]).
//! docs/etcd.md has the whole picture.

mod key;
mod network;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Map, Value};

pub use self::key::{lease_name, parse_lease_name};
pub use self::network::{NetworkConfig, SubnetRange};
use crate::route::{PeerSpec, Prefix, TableScope, WireGuardPeer};
use crate::wire::vxlan::Mac;
use crate::wireguard::PublicKey;

/// flannel's udp backend port, when the config names none.
pub const DEFAULT_UDP_PORT: u16 = 8285;
/// flannel's vxlan port (the kernel's 8472) and VNI, when the config names none.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_VNI: u32 = 1;

/// A backend as flannel's JSON names it (`Backend.Type`, `BackendType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlannelBackend {
    Udp,
    Vxlan {
        vni: u32,
    },
    /// flannel's wireguard backend (`Backend.ListenPort`, default 51820).
    WireGuard,
}

impl FlannelBackend {
    pub fn name(&self) -> &'static str {
        match self {
            FlannelBackend::Udp => "udp",
            FlannelBackend::Vxlan { .. } => "vxlan",
            FlannelBackend::WireGuard => "wireguard",
        }
    }
}

/// A non-negative integer field of at most `max`, or `None` when absent.
fn int_field(v: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().filter(|&n| n <= max).map(Some).ok_or_else(|| format!("{field} {n} must be between 0 and {max}"))
        }
        Some(other) => Err(format!("{field} must be a number, not {other}")),
    }
}

/// An address field of a lease value: `None` when absent, null or empty.
fn ip_field<A: std::str::FromStr>(v: &Map<String, Value>, field: &str, family: &str) -> Result<Option<A>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| format!("{field} {s:?} is not an {family} address")),
        Some(other) => Err(format!("{field} must be a string, not {other}")),
    }
}

/// A lease value, parsed (flannel's `lease.LeaseAttrs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    /// `PublicIP`: the holder's IPv4 underlay address.
    pub public_ip: Ipv4Addr,
    /// `PublicIPv6`: where the holder takes its IPv6 pods' traffic over an
    /// IPv6 underlay (flanneld's dual-stack vxlan); null in flanneld's udp
    /// leases and in encapd's.
    pub public_ipv6: Option<Ipv6Addr>,
    pub backend: LeaseBackend,
    /// `BackendV6Data` of a vxlan lease (`{"VNI":1,"VtepMAC":"…"}`): the
    /// holder's IPv6 VTEP (flanneld's `flannel-v6.<VNI>`), as (VNI, MAC).
    pub vxlan_v6: Option<(u32, Mac)>,
    /// The holder decapsulates in its kernel (see [`KERNEL_DECAP_FIELD`]).
    pub kernel_decap: bool,
}

/// The `BackendData` field in which encapd states whether it takes
/// datagrams apart in its kernel (the kernel path is attached), so that
/// a peer's kernel path knows it may send to it
/// (`route::Route::kernel_decap`). flanneld ignores fields it does not
/// know. A lease without it is flanneld's: its vxlan backend is a kernel
/// VTEP (true), its udp backend reads datagrams in user space (false).
/// encapd always writes it in a vxlan lease, where the default would
/// claim too much; in a udp lease only when true, so that a lease without
/// the kernel path stays exactly flanneld's. It holds for both subnets of
/// a dual-stack lease.
pub const KERNEL_DECAP_FIELD: &str = "EncapdKernelDecap";

/// What a lease says about its holder's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseBackend {
    /// No `BackendType`, or "udp".
    Udp,
    /// "vxlan" with its `BackendData`.
    Vxlan { vni: u32, vtep_mac: Mac },
    /// "wireguard" with `BackendData.PublicKey` (flannel's
    /// `wireguardLeaseAttrs`): the holder's WireGuard identity.
    WireGuard { public_key: PublicKey },
    /// Any other backend (host-gw, wireguard, ...).
    Other(String),
}

impl LeaseBackend {
    fn name(&self) -> &str {
        match self {
            LeaseBackend::Udp => "udp",
            LeaseBackend::Vxlan { .. } => "vxlan",
            LeaseBackend::WireGuard { .. } => "wireguard",
            LeaseBackend::Other(name) => name,
        }
    }
}

/// Why a lease is not routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a lease at all: bad JSON, wrong types, bad key, outside the network...
    Malformed(String),
    /// A well-formed lease of a backend other than this node's: the two
    /// cannot talk, so it is not routed (logged once per key).
    Backend { lease: String, ours: &'static str },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Malformed(why) => write!(f, "malformed: {why}"),
            Skip::Backend { lease, ours } => {
                write!(f, "its holder runs the {lease:?} backend and this node {ours:?}: they cannot talk, so it is not routed")
            }
        }
    }
}

/// Parses a lease value (`{"PublicIP":"198.18.0.1","PublicIPv6":null}`, with
/// `"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}` for vxlan,
/// and `"PublicIPv6":"…"` with `"BackendV6Data":{…}` from flanneld's
/// dual-stack vxlan). Field names are matched exactly, as flanneld writes
/// them.
pub fn parse_lease_value(value: &[u8]) -> Result<LeaseAttrs, Skip> {
    let v: Value = serde_json::from_slice(value).map_err(|e| Skip::Malformed(format!("not valid JSON: {e}")))?;
    let Some(obj) = v.as_object() else { return Err(Skip::Malformed("not a JSON object".into())) };
    let public_ip = match ip_field::<Ipv4Addr>(obj, "PublicIP", "IPv4").map_err(Skip::Malformed)? {
        Some(ip) if !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast() => ip,
        Some(ip) => return Err(Skip::Malformed(format!("PublicIP {ip} is not a unicast address"))),
        None => return Err(Skip::Malformed("PublicIP is missing".into())),
    };
    let public_ipv6 = ip_field::<Ipv6Addr>(obj, "PublicIPv6", "IPv6").map_err(Skip::Malformed)?;
    let (backend, vxlan_v6) = match obj.get("BackendType") {
        None | Some(Value::Null) => (LeaseBackend::Udp, None),
        Some(Value::String(s)) if s.is_empty() || s == "udp" => (LeaseBackend::Udp, None),
        Some(Value::String(s)) if s == "vxlan" => {
            let (vni, vtep_mac) = match obj.get("BackendData") {
                Some(Value::Object(data)) => vxlan_data(data, "BackendData").map_err(Skip::Malformed)?,
                _ => return Err(Skip::Malformed("a vxlan lease without a BackendData object".into())),
            };
            let v6 = match obj.get("BackendV6Data") {
                None | Some(Value::Null) => None,
                Some(Value::Object(data)) => Some(vxlan_data(data, "BackendV6Data").map_err(Skip::Malformed)?),
                Some(other) => return Err(Skip::Malformed(format!("BackendV6Data must be an object, not {other}"))),
            };
            (LeaseBackend::Vxlan { vni, vtep_mac }, v6)
        }
        Some(Value::String(s)) if s == "wireguard" => {
            let key = match obj.get("BackendData").and_then(|d| d.get("PublicKey")) {
                Some(Value::String(k)) => {
                    k.parse::<PublicKey>().map_err(|e| Skip::Malformed(format!("BackendData.PublicKey {k:?}: {e}")))?
                }
                None | Some(Value::Null) => return Err(Skip::Malformed("a wireguard lease without BackendData.PublicKey".into())),
                Some(other) => return Err(Skip::Malformed(format!("BackendData.PublicKey must be a string, not {other}"))),
            };
            (LeaseBackend::WireGuard { public_key: key }, None)
        }
        Some(Value::String(s)) => (LeaseBackend::Other(s.clone()), None),
        Some(other) => return Err(Skip::Malformed(format!("BackendType must be a string, not {other}"))),
    };
    let kernel_decap = match obj.get("BackendData").and_then(|d| d.get(KERNEL_DECAP_FIELD)) {
        None | Some(Value::Null) => matches!(backend, LeaseBackend::Vxlan { .. }),
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(Skip::Malformed(format!("BackendData.{KERNEL_DECAP_FIELD} must be true or false, not {other}"))),
    };
    Ok(LeaseAttrs { public_ip, public_ipv6, backend, vxlan_v6, kernel_decap })
}

/// `BackendData` (or `BackendV6Data`) of a vxlan lease:
/// `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}` (flannel's `vxlanLeaseAttrs`).
fn vxlan_data(data: &Map<String, Value>, field: &str) -> Result<(u32, Mac), String> {
    let vni = int_field(data, "VNI", (1 << 24) - 1).map_err(|e| format!("{field}.{e}"))?.unwrap_or(u64::from(DEFAULT_VNI)) as u32;
    let vtep_mac = match data.get("VtepMAC") {
        Some(Value::String(s)) => s.parse::<Mac>().map_err(|e| format!("{field}.VtepMAC {s:?}: {e}"))?,
        None | Some(Value::Null) => return Err(format!("{field}.VtepMAC is missing")),
        Some(other) => return Err(format!("{field}.VtepMAC must be a string, not {other}")),
    };
    if vtep_mac.is_group() {
        return Err(format!("{field}.VtepMAC {vtep_mac} is not a unicast MAC"));
    }
    Ok((vni, vtep_mac))
}

/// The value flanneld writes for its own lease (`json.Marshal` of its
/// `LeaseAttrs`: `PublicIP`, `PublicIPv6`, then `BackendType` and
/// `BackendData` unless empty), for this node's backend (with the VTEP MAC
/// for vxlan), and whether this node decapsulates in its kernel
/// ([`KERNEL_DECAP_FIELD`]). `PublicIPv6` is always null: encapd carries
/// IPv6 over its IPv4 underlay, so it has no IPv6 VTEP to name (nor a
/// `BackendV6Data`), exactly as flanneld's udp backend in a dual-stack
/// network.
pub fn lease_value(public_ip: IpAddr, backend: FlannelBackend, vtep_mac: Option<Mac>, kernel_decap: bool) -> String {
    let head = format!("{{\"PublicIP\":\"{public_ip}\",\"PublicIPv6\":null");
    match (backend, vtep_mac, kernel_decap) {
        (FlannelBackend::Vxlan { vni }, Some(mac), _) => format!(
            "{head},\"BackendType\":\"vxlan\",\"BackendData\":{{\"VNI\":{vni},\"VtepMAC\":\"{mac}\",\"{KERNEL_DECAP_FIELD}\":{kernel_decap}}}}}"
        ),
        (_, _, true) => format!("{head},\"BackendType\":\"udp\",\"BackendData\":{{\"{KERNEL_DECAP_FIELD}\":true}}}}"),
        _ => format!("{head}}}"),
    }
}

/// The value flanneld's wireguard backend writes for its lease
/// (`BackendType "wireguard"`, `BackendData {"PublicKey": …}`), with this
/// node's public key: encapd and flanneld wireguard nodes share a cluster.
pub fn wireguard_lease_value(public_ip: IpAddr, public_key: &PublicKey) -> String {
    format!(
        "{{\"PublicIP\":\"{public_ip}\",\"PublicIPv6\":null,\"BackendType\":\"wireguard\",\"BackendData\":{{\"PublicKey\":\"{public_key}\"}}}}"
    )
}

/// What this node routes: leases of its own backend (and VNI) to its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseExpect {
    pub backend: FlannelBackend,
    pub port: u16,
}

/// What one lease routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRoutes {
    /// The peer of the key's IPv4 subnet, then, in a dual-stack network,
    /// the peer of its IPv6 subnet (same endpoint, MAC and kernel decap).
    pub peers: Vec<PeerSpec>,
    /// Why the key's IPv6 subnet is not routed although this network is
    /// dual-stack: the lease names a `PublicIPv6`.
    pub ipv6_unrouted: Option<String>,
}

/// Turns a lease (key name + value) into the peers it routes to, checked
/// against this node's table scope so that a bad lease can never make a
/// table build fail. A lease is routed whole or skipped whole, except for
/// the IPv6 subnet of a lease that names a `PublicIPv6` (see the module
/// documentation). In a network without IPv6 (no IPv6 network in
/// `scope`), the IPv6 part of a key is not looked at, as flanneld's
/// IPv4-only nodes do.
pub fn lease_routes(name: &str, value: &[u8], expect: LeaseExpect, scope: &TableScope) -> Result<LeaseRoutes, Skip> {
    let (subnet, subnet6) = parse_lease_name(name).map_err(Skip::Malformed)?;
    let attrs = parse_lease_value(value)?;
    let kernel_decap = attrs.kernel_decap;
    let (vtep_mac, wireguard) = match (&attrs.backend, expect.backend) {
        (LeaseBackend::Udp, FlannelBackend::Udp) => (None, None),
        (LeaseBackend::Vxlan { vni, vtep_mac }, FlannelBackend::Vxlan { vni: ours }) => {
            if *vni != ours {
                return Err(Skip::Malformed(format!("VNI {vni} differs from the network's {ours}")));
            }
            (Some(*vtep_mac), None)
        }
        (LeaseBackend::WireGuard { public_key }, FlannelBackend::WireGuard) => {
            (None, Some(WireGuardPeer { public_key: *public_key, preshared_key_file: None }))
        }
        (lease, ours) => return Err(Skip::Backend { lease: lease.name().to_owned(), ours: ours.name() }),
    };
    let dual_stack = scope.networks.iter().any(|n| !n.is_ipv4());
    let subnet6 = subnet6.filter(|_| dual_stack);
    for s in std::iter::once(&subnet).chain(&subnet6) {
        if !scope.networks.iter().any(|n| n.covers(s) && n != s) {
            return Err(Skip::Malformed(format!("subnet {s} lies outside the network")));
        }
        if let Some(own) = scope.own.iter().find(|o| o.overlaps(s)) {
            return Err(Skip::Malformed(format!("subnet {s} overlaps this node's subnet {own}")));
        }
    }
    if !scope.underlay_ipv4 {
        return Err(Skip::Malformed("an IPv4 PublicIP on an IPv6 underlay".into()));
    }
    let endpoint = SocketAddr::new(IpAddr::V4(attrs.public_ip), expect.port);
    let peer =
        |subnet| PeerSpec { wireguard: wireguard.clone(), vtep_mac, kernel_decap, subnet, endpoint, origin: format!("etcd lease {name}") };
    let mut routes = LeaseRoutes { peers: vec![peer(subnet)], ipv6_unrouted: None };
    match (subnet6, attrs.public_ipv6) {
        (Some(s6), None) => routes.peers.push(peer(s6)),
        (Some(s6), Some(ip6)) => {
            let vtep = attrs.vxlan_v6.map(|(_, mac)| format!(" (VTEP {mac})")).unwrap_or_default();
            routes.ipv6_unrouted = Some(format!(
                "its holder takes IPv6 traffic at PublicIPv6 {ip6}{vtep} over an IPv6 underlay (flanneld's dual-stack vxlan); \
                 encapd carries IPv6 over its IPv4 underlay only, so {s6} is not routed (its IPv4 subnet {subnet} is)"
            ));
        }
        (None, _) => {}
    }
    Ok(routes)
}

/// flannel's `subnet.env` for `subnet` in `network` (and the IPv6 pair,
/// dual-stack) with TUN MTU `mtu`, byte for byte as flanneld's
/// `WriteSubnetFile` writes it: FLANNEL_SUBNET (and FLANNEL_IPV6_SUBNET)
/// is the subnet's first address (`.1`, `::1`: the bridge's gateway) with
/// its length.
pub fn subnet_env(network: &Prefix, subnet: &Prefix, v6: Option<(Prefix, Prefix)>, mtu: u32) -> String {
    let first = |p: &Prefix| match *p {
        Prefix::V4 { addr, .. } => IpAddr::V4(Ipv4Addr::from(addr + 1)),
        Prefix::V6 { addr, .. } => IpAddr::from((addr + 1).to_be_bytes()),
    };
    let mut env = format!("FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}/{}\n", first(subnet), subnet.len());
    if let Some((network6, subnet6)) = v6 {
        env += &format!("FLANNEL_IPV6_NETWORK={network6}\nFLANNEL_IPV6_SUBNET={}/{}\n", first(&subnet6), subnet6.len());
    }
    env + &format!("FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u128 {
        u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()))
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn network_config_defaults_follow_flannel() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap();
        assert_eq!(c.ipv4.subnet_len, 24);
        assert_eq!((c.ipv4.min, c.ipv4.max), (v4("10.5.1.0"), v4("10.5.255.0")));
        assert_eq!((c.port, c.ipv6), (8285, None));
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/24"}"#).unwrap();
        assert_eq!(c.ipv4.subnet_len, 26);
        let c = NetworkConfig::parse(
            r#"{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0","Backend":{"Type":"udp","Port":7890}}"#,
        )
        .unwrap();
        assert_eq!((c.ipv4.subnet_len, c.port), (20, 7890));
        assert_eq!(c.ipv4.min, v4("10.10.0.0"));
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!((c.backend, c.port), (FlannelBackend::Vxlan { vni: 1 }, 8472));
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789}}"#).unwrap();
        assert_eq!((c.backend, c.port), (FlannelBackend::Vxlan { vni: 4 }, 4789));
        // flanneld takes a zero SubnetMin as unset (`SubnetMin == ip.IP4(0)`).
        let c = NetworkConfig::parse(r#"{"Network":"0.0.0.0/8","SubnetMin":"0.0.0.0"}"#).unwrap();
        assert_eq!(c.ipv4.min, v4("0.0.1.0"));
    }

    /// The IPv6 half, with the literal inputs and results of flannel's own
    /// tests (`pkg/subnet/config_test.go`: `TestIPv6ConfigDefaults`,
    /// `TestIPv6ConfigOverrides`, which also show that Go takes
    /// `enableIPv6` for `EnableIPv6`), on a dual-stack network: those
    /// tests' `"enableIPv4": false` is refused here (see
    /// `network_config_refuses_ipv6_only`).
    #[test]
    fn ipv6_network_config_follows_flannel() {
        let c = NetworkConfig::parse(r#"{ "enableIPv6": true, "ipv6Network": "fc00::/48", "Network": "10.5.0.0/16" }"#).unwrap();
        let r = c.ipv6.expect("dual-stack");
        assert_eq!(r.network, p("fc00::/48"));
        assert_eq!((r.subnet_len, r.min, r.max), (64, v6("fc00:0:0:1::"), v6("fc00:0:0:ffff::")));
        let c = NetworkConfig::parse(
            r#"{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "Network": "10.5.0.0/16" }"#,
        )
        .unwrap();
        let r = c.ipv6.unwrap();
        assert_eq!((r.subnet_len, r.min, r.max), (124, v6("fc00:0:0:1::"), v6("fc00:0:0:f::")));
        // flannel's documented dual-stack example (Documentation/configuration.md).
        let c = NetworkConfig::parse(
            r#"{"EnableIPv6":true,"Network":"10.42.0.0/16","IPv6Network":"2001:cafe:42::/56","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let r = c.ipv6.unwrap();
        assert_eq!((r.subnet_len, r.min, r.max), (64, v6("2001:cafe:42:1::"), v6("2001:cafe:42:ff::")));
        // A small network: its length + 2.
        let r = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:96::/100"}"#).unwrap().ipv6.unwrap();
        assert_eq!((r.subnet_len, r.min, r.max), (102, v6("fd00:96::400:0"), v6("fd00:96::c00:0")));
        // IPv6Network without EnableIPv6 is ignored, as flanneld does.
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","IPv6Network":"fd00:96::/32"}"#).unwrap();
        assert_eq!(c.ipv6, None);
        // Go matches keys in any case; two spellings of one field are ambiguous.
        let c = NetworkConfig::parse(r#"{"network":"10.5.0.0/16","backend":{"type":"vxlan","vni":7}}"#).unwrap();
        assert_eq!((c.network(), c.backend), (p("10.5.0.0/16"), FlannelBackend::Vxlan { vni: 7 }));
        let err = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","network":"10.6.0.0/16"}"#).unwrap_err();
        assert!(err.contains("both set Network"), "{err}");
    }

    #[test]
    fn network_config_rejects_what_encapd_cannot_run() {
        for (text, want) in [
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#, "\"host-gw\" is not run by encapd"),
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#, "Backend.VNI"),
            (r#"{"Network":"10.5.0.0/30"}"#, "too small"),
            (r#"{"Network":"fd00::/16"}"#, "IPv4"),
            (r#"{"Network":"10.5.0.0/16","SubnetLen":8}"#, "shorter"),
            (r#"{"Network":"10.5.0.0/16","SubnetLen":17}"#, "at least four subnets"),
            (r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#, "SubnetMin"),
            (r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.0.7"}"#, "boundary"),
            (r#"{"Network":16}"#, "must be a string"),
            ("nope", "not valid JSON"),
            ("{}", "Network is missing"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true}"#, "IPv6Network is missing"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":"yes","IPv6Network":"fd00::/48"}"#, "EnableIPv6 must be true or false"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"10.6.0.0/16"}"#, "must be an IPv6 prefix"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125"}"#, "too small"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":127}"#, "at most 126"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":49}"#, "four subnets"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::"}"#, "IPv6SubnetMin"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00:0:0:1::8"}"#, "boundary"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"10.5.0.0"}"#, "not an IPv6"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"::ffff:0:0/96"}"#, "dotted"),
            (r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"::/64"}"#, "dotted"),
        ] {
            let err = NetworkConfig::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    /// An IPv6-only network (flannel's `TestIPv6ConfigDefaults` input as it
    /// stands) is refused, and says why.
    #[test]
    fn network_config_refuses_ipv6_only() {
        let err = NetworkConfig::parse(r#"{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }"#).unwrap_err();
        assert!(err.contains("IPv6-only network is not supported"), "{err}");
        let err = NetworkConfig::parse(r#"{"EnableIPv4":false}"#).unwrap_err();
        assert!(err.contains("no address family"), "{err}");
    }

    #[test]
    fn allocation_avoids_taken_subnets() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/22"}"#).unwrap();
        // /22 → /24s: 10.5.1.0, .2.0, .3.0 allocatable (the first is skipped).
        let taken = [p("10.5.1.0/24"), p("10.5.3.0/24"), p("fd00::/64")];
        for r in 0..10 {
            assert_eq!(c.ipv4.allocate(&taken, r), Some(p("10.5.2.0/24")));
        }
        assert_eq!(c.ipv4.allocate(&[p("10.5.0.0/22")], 0), None);
        assert!(c.ipv4.allocatable(&p("10.5.2.0/24")) && !c.ipv4.allocatable(&p("10.5.0.0/24")));
    }

    /// IPv6 allocation picks among the first 100 free subnets, as flanneld's
    /// `allocateSubnet`, and jumps over a short taken prefix instead of
    /// stepping through the 2^64 subnets it covers.
    #[test]
    fn ipv6_allocation_skips_taken_prefixes() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/16"}"#).unwrap();
        let r = c.ipv6.unwrap();
        assert_eq!(r.subnet_len, 64);
        let taken = [p("fd00:0:0:1::/64"), p("fd00:0:0:3::/64"), p("10.5.2.0/24")];
        assert_eq!(r.allocate(&taken, 0), Some(p("fd00:0:0:2::/64")));
        assert_eq!(r.allocate(&taken, 1), Some(p("fd00:0:0:4::/64")));
        assert_eq!(r.allocate(&taken, 99), Some(p("fd00:0:0:66::/64")), "the 100th free one");
        assert_eq!(r.allocate(&taken, 100), Some(p("fd00:0:0:2::/64")), "100 candidates, not more");
        // A /17 covers 2^47 /64 subnets: the next free one is right after it.
        let wide = [p("fd00::/17")];
        assert_eq!(r.allocate(&wide, 0), Some(p("fd00:8000::/64")));
        assert_eq!(r.allocate(&[p("fd00::/16")], 0), None);
        assert!(r.allocatable(&p("fd00:0:0:2::/64")) && !r.allocatable(&p("fd00::/64")) && !r.allocatable(&p("fd00:0:0:2::/80")));
        assert!(!r.allocatable(&p("10.5.2.0/24")) && !c.ipv4.allocatable(&p("fd00:0:0:2::/64")));
    }

    /// Keys as flanneld's `MakeSubnetKey` writes them and `ParseSubnetKey`
    /// reads them (`pkg/subnet/subnet_test.go`: `TestSubnetNodev4`,
    /// `TestSubnetNodev6`), and Go's RFC 5952 text for IPv6 (`net.IP.String`:
    /// lowercase, the first longest run of two or more zero groups).
    #[test]
    fn lease_names_are_flanneld_keys() {
        assert_eq!(parse_lease_name("10.12.13.0-24").unwrap(), (p("10.12.13.0/24"), None));
        assert_eq!(parse_lease_name("10.12.13.0-24&fd00:12:13::-56").unwrap(), (p("10.12.13.0/24"), Some(p("fd00:12:13::/56"))));
        assert_eq!(lease_name(&p("10.12.13.0/24"), None), "10.12.13.0-24");
        assert_eq!(lease_name(&p("10.12.13.0/24"), Some(&p("fd00:12:13::/56"))), "10.12.13.0-24&fd00:12:13::-56");
        assert_eq!(lease_name(&p("100.96.1.0/24"), Some(&p("fd00:96:1::/64"))), "100.96.1.0-24&fd00:96:1::-64");
        for (subnet6, go) in [
            ("fd00:0:0:1::/64", "fd00:0:0:1::-64"),
            ("fd00:0:1:0:0:1::/96", "fd00:0:1::1:0:0-96"),
            ("fd00:0:0:ffff::/64", "fd00:0:0:ffff::-64"),
            ("2001:db8:0:1:0:0:0:0/64", "2001:db8:0:1::-64"),
            ("fd00:a:b:c:d:e:f:0/124", "fd00:a:b:c:d:e:f:0-124"),
        ] {
            assert_eq!(lease_name(&p("10.5.1.0/24"), Some(&p(subnet6))), format!("10.5.1.0-24&{go}"));
            assert_eq!(parse_lease_name(&format!("10.5.1.0-24&{go}")).unwrap().1, Some(p(subnet6)));
        }
        for bad in
            ["10.5.52.0", "10.5.52.1-24", "x-24", "10.5.52.0-33", "fc00::-64", "10.5.52.0-24&10.1.0.0-16", "10.5.52.0-24&fc00::1-64", ""]
        {
            assert!(parse_lease_name(bad).is_err(), "{bad}");
        }
    }

    const UDP: LeaseExpect = LeaseExpect { backend: FlannelBackend::Udp, port: 8285 };
    const VXLAN: LeaseExpect = LeaseExpect { backend: FlannelBackend::Vxlan { vni: 1 }, port: 8472 };
    /// flanneld's vxlan lease, as it writes it.
    const VX: &[u8] =
        br#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    fn scope4() -> TableScope {
        TableScope { own: vec![p("10.5.1.0/24")], networks: vec![p("10.5.0.0/16")], underlay_ipv4: true }
    }

    fn scope_dual() -> TableScope {
        TableScope {
            own: vec![p("10.5.1.0/24"), p("fd00:5:1::/64")],
            networks: vec![p("10.5.0.0/16"), p("fd00:5::/32")],
            underlay_ipv4: true,
        }
    }

    /// The one peer a lease routes in an IPv4-only network.
    const WIREGUARD: LeaseExpect = LeaseExpect { backend: FlannelBackend::WireGuard, port: 51820 };
    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn wireguard_leases_carry_the_public_key_as_flanneld_writes_it() {
        // flanneld's wireguard lease (`wireguardLeaseAttrs{PublicKey}`).
        let value =
            format!(r#"{{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"wireguard","BackendData":{{"PublicKey":"{KEY}"}}}}"#);
        let peer = lease_peer("10.5.52.0-24", value.as_bytes(), WIREGUARD, &scope4()).unwrap();
        assert_eq!(peer.endpoint, "192.168.64.3:51820".parse().unwrap());
        assert_eq!(peer.wireguard.as_ref().map(|w| w.public_key.to_string()), Some(KEY.to_owned()));
        assert!(!peer.kernel_decap && peer.vtep_mac.is_none());
        // Ours is flanneld's, byte for byte.
        let key: PublicKey = KEY.parse().unwrap();
        assert_eq!(wireguard_lease_value("192.168.64.3".parse().unwrap(), &key), value);
        // A wireguard lease is not routed by a udp node, nor the reverse.
        assert!(matches!(lease_routes("10.5.52.0-24", value.as_bytes(), UDP, &scope4()), Err(Skip::Backend { .. })));
        assert!(matches!(lease_routes("10.5.52.0-24", br#"{"PublicIP":"192.168.64.3"}"#, WIREGUARD, &scope4()), Err(Skip::Backend { .. })));
        for bad in [
            r#"{"PublicIP":"1.2.3.4","BackendType":"wireguard"}"#.to_owned(),
            r#"{"PublicIP":"1.2.3.4","BackendType":"wireguard","BackendData":{"PublicKey":"short"}}"#.to_owned(),
            r#"{"PublicIP":"1.2.3.4","BackendType":"wireguard","BackendData":{"PublicKey":7}}"#.to_owned(),
        ] {
            assert!(matches!(lease_routes("10.5.52.0-24", bad.as_bytes(), WIREGUARD, &scope4()), Err(Skip::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn wireguard_network_config_follows_flannel() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}"#).unwrap();
        assert_eq!((c.backend, c.port), (FlannelBackend::WireGuard, 51820));
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","ListenPort":51999}}"#).unwrap();
        assert_eq!(c.port, 51999);
        let e = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","PSK":"abc"}}"#).unwrap_err();
        assert!(e.contains("Backend.PSK"), "{e}");
    }

    fn lease_peer(name: &str, value: &[u8], expect: LeaseExpect, scope: &TableScope) -> Result<PeerSpec, Skip> {
        lease_routes(name, value, expect, scope).map(|r| {
            assert_eq!((r.peers.len(), &r.ipv6_unrouted), (1, &None), "{name}");
            r.peers.into_iter().next().unwrap()
        })
    }

    #[test]
    fn lease_values_parse() {
        let scope = scope4();
        let ok = br#"{"PublicIP":"192.168.64.3","PublicIPv6":null}"#;
        let peer = lease_peer("10.5.52.0-24", ok, UDP, &scope).unwrap();
        assert_eq!((peer.endpoint, peer.vtep_mac), ("192.168.64.3:8285".parse().unwrap(), None));
        assert!(lease_peer("10.5.52.0-24", br#"{"PublicIP":"192.168.64.3","BackendType":"udp"}"#, UDP, &scope).is_ok());
        assert_eq!(lease_peer("10.5.52.0-24", VX, UDP, &scope), Err(Skip::Backend { lease: "vxlan".into(), ours: "udp" }));
        assert_eq!(lease_peer("10.5.52.0-24", ok, VXLAN, &scope), Err(Skip::Backend { lease: "udp".into(), ours: "vxlan" }));
        let hostgw = br#"{"PublicIP":"192.168.64.3","BackendType":"host-gw"}"#;
        assert_eq!(lease_peer("10.5.52.0-24", hostgw, VXLAN, &scope), Err(Skip::Backend { lease: "host-gw".into(), ours: "vxlan" }));
        let vx = lease_peer("10.5.52.0-24", VX, VXLAN, &scope).unwrap();
        assert_eq!((vx.endpoint, vx.vtep_mac), ("192.168.64.3:8472".parse().unwrap(), Some("c6:d2:32:6f:8f:44".parse().unwrap())));
        // A dual-stack key in an IPv4-only network: its IPv4 subnet.
        assert_eq!(lease_peer("10.5.52.0-24&fd00:5:34::-64", ok, UDP, &scope).unwrap().subnet, p("10.5.52.0/24"));
        for (name, value) in [
            ("10.5.52.0-24", &b"not json"[..]),
            ("10.5.52.0-24", br#"{"PublicIP":5}"#),
            ("10.5.52.0-24", br#"[]"#),
            ("10.5.52.0-24", br#"{"PublicIP":"nope"}"#),
            ("10.5.52.0-24", br#"{"PublicIPv6":null}"#),
            ("10.5.52.0-24", br#"{"PublicIP":"1.2.3.4","BackendType":7}"#),
            ("10.5.52.0-24", br#"{"PublicIP":"1.2.3.4","PublicIPv6":"1.2.3.4"}"#),
            ("10.5.52.0-24", br#"{"PublicIP":"1.2.3.4","PublicIPv6":6}"#),
            ("10.6.52.0-24", ok),
            ("10.5.1.0-25", ok),
            ("garbage", ok),
        ] {
            assert!(matches!(lease_peer(name, value, UDP, &scope), Err(Skip::Malformed(_))), "{name} {value:?}");
        }
        for value in [
            &br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan"}"#[..],
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1}}"#,
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}"#,
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":2,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}}"#,
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":7}"#,
            br#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1}}"#,
        ] {
            assert!(
                matches!(lease_peer("10.5.52.0-24", value, VXLAN, &scope), Err(Skip::Malformed(_))),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    /// flanneld's udp backend in a dual-stack network: `RegisterNetwork`
    /// (`pkg/backend/udp/udp_amd64.go`) acquires a lease with only
    /// `PublicIP` set, so `json.Marshal` of its `lease.LeaseAttrs` gives
    /// `"PublicIPv6":null` and omits the empty `BackendType`/`BackendData`;
    /// `AcquireLease` still allocates an IPv6 subnet (`allocateSubnet`, as
    /// `EnableIPv6` is set), and `createSubnet` writes the key with
    /// `MakeSubnetKey`. encapd routes both subnets to `PublicIP`.
    #[test]
    fn flanneld_udp_dual_stack_lease_routes_both_subnets() {
        let name = "10.5.52.0-24&fd00:5:34::-64";
        let value = br#"{"PublicIP":"192.168.64.3","PublicIPv6":null}"#;
        let routes = lease_routes(name, value, UDP, &scope_dual()).unwrap();
        assert_eq!(routes.ipv6_unrouted, None);
        let got: Vec<(Prefix, SocketAddr, Option<Mac>)> = routes.peers.iter().map(|p| (p.subnet, p.endpoint, p.vtep_mac)).collect();
        let endpoint: SocketAddr = "192.168.64.3:8285".parse().unwrap();
        assert_eq!(got, [(p("10.5.52.0/24"), endpoint, None), (p("fd00:5:34::/64"), endpoint, None)]);
        assert!(routes.peers.iter().all(|p| !p.kernel_decap && p.origin == format!("etcd lease {name}")));
        // An IPv4-only key in a dual-stack network (a lease written before
        // the network had IPv6): its IPv4 subnet.
        let routes = lease_routes("10.5.53.0-24", value, UDP, &scope_dual()).unwrap();
        assert_eq!(routes.peers.iter().map(|p| p.subnet).collect::<Vec<_>>(), [p("10.5.53.0/24")]);
    }

    /// flanneld's vxlan backend in a dual-stack network: `newSubnetAttrs`
    /// (`pkg/backend/vxlan/vxlan.go`) sets `PublicIPv6` and a
    /// `BackendV6Data` of its second VTEP (`flannel-v6.1`, on the IPv6
    /// underlay), marshalled in `LeaseAttrs` field order. encapd routes its
    /// IPv4 subnet and says why not its IPv6 one.
    #[test]
    fn flanneld_vxlan_dual_stack_lease_routes_its_ipv4_subnet() {
        let name = "10.5.52.0-24&fd00:5:34::-64";
        let value = br#"{"PublicIP":"192.168.64.3","PublicIPv6":"fd00:64::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}"#;
        let attrs = parse_lease_value(value).unwrap();
        assert_eq!(attrs.public_ipv6, Some("fd00:64::3".parse().unwrap()));
        assert_eq!(attrs.vxlan_v6, Some((1, "c6:d2:32:6f:8f:46".parse().unwrap())));
        assert!(attrs.kernel_decap, "a kernel VTEP");
        let routes = lease_routes(name, value, VXLAN, &scope_dual()).unwrap();
        assert_eq!(routes.peers.len(), 1);
        let peer = &routes.peers[0];
        assert_eq!((peer.subnet, peer.endpoint), (p("10.5.52.0/24"), "192.168.64.3:8472".parse().unwrap()));
        assert_eq!(peer.vtep_mac, Some("c6:d2:32:6f:8f:44".parse().unwrap()));
        let why = routes.ipv6_unrouted.expect("the IPv6 subnet is not routed");
        assert!(why.contains("fd00:64::3") && why.contains("c6:d2:32:6f:8f:46") && why.contains("fd00:5:34::/64 is not routed"), "{why}");
        // Its IPv6-only form (`"EnableIPv4": false`: no VTEP, so `PublicIP`
        // is the zero `ip.IP4` and `BackendData` is omitted; the key's IPv4
        // part is `0.0.0.0-0`, see `NetworkConfig::parse`) is not a lease here.
        let v6_only = br#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:64::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}"#;
        assert!(matches!(lease_routes("0.0.0.0-0&fd00:5:34::-64", v6_only, VXLAN, &scope_dual()), Err(Skip::Malformed(_))));
    }

    /// encapd's own dual-stack leases: each subnet to `PublicIP`, with the
    /// VTEP MAC and kernel decap of the lease.
    #[test]
    fn encapd_dual_stack_lease_routes_both_subnets_with_its_mac() {
        let mac: Mac = "02:00:c6:12:00:02".parse().unwrap();
        let value = lease_value("198.18.0.2".parse().unwrap(), FlannelBackend::Vxlan { vni: 1 }, Some(mac), true);
        let routes = lease_routes("10.5.2.0-24&fd00:5:2::-64", value.as_bytes(), VXLAN, &scope_dual()).unwrap();
        assert_eq!(routes.ipv6_unrouted, None);
        let endpoint: SocketAddr = "198.18.0.2:8472".parse().unwrap();
        for (peer, subnet) in routes.peers.iter().zip([p("10.5.2.0/24"), p("fd00:5:2::/64")]) {
            assert_eq!((peer.subnet, peer.endpoint, peer.vtep_mac, peer.kernel_decap), (subnet, endpoint, Some(mac), true));
        }
        assert_eq!(routes.peers.len(), 2);
        // An IPv6 subnet outside the IPv6 network, or on ours, spoils the lease.
        let v = value.as_bytes();
        for name in ["10.5.2.0-24&fd00:6:2::-64", "10.5.2.0-24&fd00:5:1::-64", "10.5.2.0-24&fd00:5::-32"] {
            assert!(matches!(lease_routes(name, v, VXLAN, &scope_dual()), Err(Skip::Malformed(_))), "{name}");
        }
    }

    #[test]
    fn our_vxlan_lease_reads_back_as_flanneld_writes_it() {
        let mac: Mac = "02:00:c6:12:00:01".parse().unwrap();
        for kernel_decap in [false, true] {
            let ours = lease_value("198.18.0.1".parse().unwrap(), FlannelBackend::Vxlan { vni: 1 }, Some(mac), kernel_decap);
            assert_eq!(
                ours,
                format!(
                    r#"{{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:c6:12:00:01","EncapdKernelDecap":{kernel_decap}}}}}"#
                )
            );
            let attrs = parse_lease_value(ours.as_bytes()).unwrap();
            assert_eq!(attrs.backend, LeaseBackend::Vxlan { vni: 1, vtep_mac: mac });
            assert_eq!((attrs.kernel_decap, attrs.public_ipv6, attrs.vxlan_v6), (kernel_decap, None, None));
        }
    }

    /// Who decapsulates in the kernel: what a lease states, else what its
    /// flanneld backend does (a kernel VTEP for vxlan, user space for udp).
    #[test]
    fn kernel_decap_is_read_from_the_lease_or_follows_flanneld() {
        let scope = scope4();
        let decap = |value: &[u8], expect| lease_peer("10.5.52.0-24", value, expect, &scope).map(|p| p.kernel_decap);
        assert_eq!(decap(VX, VXLAN), Ok(true), "flanneld's vxlan is a kernel VTEP");
        assert_eq!(decap(br#"{"PublicIP":"192.168.64.3","PublicIPv6":null}"#, UDP), Ok(false), "flanneld's udp reads in user space");
        assert_eq!(decap(br#"{"PublicIP":"192.168.64.3","BackendType":"udp","BackendData":null}"#, UDP), Ok(false));
        let ip = "198.18.0.1".parse().unwrap();
        let ours_udp = lease_value(ip, FlannelBackend::Udp, None, true);
        assert_eq!(ours_udp, r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"udp","BackendData":{"EncapdKernelDecap":true}}"#);
        assert_eq!(decap(ours_udp.as_bytes(), UDP), Ok(true));
        let mac = Some("02:00:c6:12:00:01".parse().unwrap());
        let ours_vxlan = lease_value(ip, FlannelBackend::Vxlan { vni: 1 }, mac, false);
        assert_eq!(decap(ours_vxlan.as_bytes(), VXLAN), Ok(false), "an encapd VTEP without the kernel path says so");
        let bad = br#"{"PublicIP":"192.168.64.3","BackendType":"udp","BackendData":{"EncapdKernelDecap":"yes"}}"#;
        assert!(matches!(decap(bad, UDP), Err(Skip::Malformed(e)) if e.contains("EncapdKernelDecap")));
    }

    /// `WriteSubnetFile` (`pkg/subnet/subnet.go`): the network, the
    /// subnet's first address, the IPv6 pair when `EnableIPv6`, MTU, masquerade.
    #[test]
    fn subnet_env_is_flannels() {
        assert_eq!(
            subnet_env(&p("10.5.0.0/16"), &p("10.5.52.0/24"), None, 1472),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(
            subnet_env(&p("10.5.0.0/16"), &p("10.5.52.0/24"), Some((p("fd00:96::/32"), p("fd00:96:1::/64"))), 1450),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_IPV6_NETWORK=fd00:96::/32\nFLANNEL_IPV6_SUBNET=fd00:96:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(
            lease_value("198.18.0.1".parse().unwrap(), FlannelBackend::Udp, None, false),
            r#"{"PublicIP":"198.18.0.1","PublicIPv6":null}"#
        );
    }
}
