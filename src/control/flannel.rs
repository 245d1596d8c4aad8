//! flannel's lease store format, as flanneld reads and writes it in etcd v3:
//! the network config at `<prefix>/config`, leases at
//! `<prefix>/subnets/<a.b.c.d>-<len>` (dual-stack: `...&<v6>-<len>`) with a
//! JSON value, subnet allocation, and the `subnet.env` file. Pure functions,
//! no I/O, so every rule is unit-tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use crate::route::{PeerSpec, Prefix, TableScope};
use crate::wire::vxlan::Mac;

/// flannel's udp backend port, when the config names none.
pub const DEFAULT_UDP_PORT: u16 = 8285;
/// flannel's vxlan port (the kernel's 8472) and VNI, when the config names none.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_VNI: u32 = 1;

/// A backend as flannel's JSON names it (`Backend.Type`, `BackendType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlannelBackend {
    Udp,
    Vxlan { vni: u32 },
}

impl FlannelBackend {
    pub fn name(&self) -> &'static str {
        match self {
            FlannelBackend::Udp => "udp",
            FlannelBackend::Vxlan { .. } => "vxlan",
        }
    }
}

/// `<prefix>/config`, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub network: Prefix,
    pub subnet_len: u8,
    /// First and last subnet address that may be allocated (inclusive).
    pub subnet_min: u32,
    pub subnet_max: u32,
    /// `Backend.Type` (no `Backend`: udp) and, for vxlan, `Backend.VNI`.
    pub backend: FlannelBackend,
    /// `Backend.Port` (udp default 8285, vxlan 8472).
    pub port: u16,
}

fn mask_v4(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

fn ipv4_field(v: &Value, field: &str) -> Result<Option<Ipv4Addr>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| format!("{field} {s:?} is not an IPv4 address")),
        Some(other) => Err(format!("{field} must be a string, not {other}")),
    }
}

/// A non-negative integer field of at most `max`, or `None` when absent.
fn int_field(v: &serde_json::Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().filter(|&n| n <= max).map(Some).ok_or_else(|| format!("{field} {n} must be between 0 and {max}"))
        }
        Some(other) => Err(format!("{field} must be a number, not {other}")),
    }
}

impl NetworkConfig {
    /// Parses flannel's network config JSON; rejects what encapd cannot run
    /// (a backend other than udp or vxlan, an IPv6-only network).
    pub fn parse(text: &str) -> Result<NetworkConfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Some(obj) = v.as_object() else { return Err("must be a JSON object".into()) };
        let network = match v.get("Network") {
            Some(Value::String(s)) => s.parse::<Prefix>().map_err(|e| format!("Network: {e}"))?,
            None | Some(Value::Null) => return Err("Network is missing (encapd needs an IPv4 network)".into()),
            Some(other) => return Err(format!("Network must be a string, not {other}")),
        };
        if !network.is_ipv4() {
            return Err(format!("Network {network} must be an IPv4 prefix"));
        }
        let subnet_len = subnet_len(network, int_field(obj, "SubnetLen", 32)?.unwrap_or(0) as u8)?;
        let (subnet_min, subnet_max) = allocation_range(&v, network, subnet_len)?;
        let (backend, port) = backend(&v)?;
        Ok(NetworkConfig { network, subnet_len, subnet_min, subnet_max, backend, port })
    }

    /// Whether `subnet` may be allocated from this config (flannel accepts a
    /// lease anywhere in the Network; encapd only allocates between
    /// SubnetMin and SubnetMax).
    pub fn allocatable(&self, subnet: &Prefix) -> bool {
        match *subnet {
            Prefix::V4 { addr, len } => len == self.subnet_len && addr >= self.subnet_min && addr <= self.subnet_max,
            Prefix::V6 { .. } => false,
        }
    }

    /// A random free subnet between SubnetMin and SubnetMax, avoiding every
    /// prefix in `taken` (flanneld picks at random among the first 100 free
    /// ones; so does this). `random` seeds the choice.
    pub fn allocate(&self, taken: &[Prefix], random: u64) -> Option<Prefix> {
        let size = 1u64 << (32 - self.subnet_len);
        let mut free = Vec::new();
        let mut a = u64::from(self.subnet_min);
        while a <= u64::from(self.subnet_max) && free.len() < 100 {
            let candidate = Prefix::V4 { addr: a as u32, len: self.subnet_len };
            if !taken.iter().any(|t| t.overlaps(&candidate)) {
                free.push(candidate);
            }
            a += size;
        }
        if free.is_empty() { None } else { Some(free[(random % free.len() as u64) as usize]) }
    }
}

/// `SubnetLen`, or flannel's default: 24 for a network of /22 or larger,
/// else the network's length + 2.
fn subnet_len(network: Prefix, given: u8) -> Result<u8, String> {
    if given > 0 {
        if given < network.len() {
            return Err(format!("SubnetLen {given} is shorter than the Network's /{}", network.len()));
        }
        if given > 30 {
            return Err(format!("SubnetLen {given} leaves no room for containers (at most 30)"));
        }
        return Ok(given);
    }
    match network.len() {
        len if len > 28 => Err(format!("Network {network} is too small (at most /28)")),
        len if len <= 22 => Ok(24),
        len => Ok(len + 2),
    }
}

/// `SubnetMin` and `SubnetMax`, or flannel's defaults: the second subnet
/// and the last one.
fn allocation_range(v: &Value, network: Prefix, subnet_len: u8) -> Result<(u32, u32), String> {
    let Prefix::V4 { addr: net, len: net_len } = network else { return Err(format!("Network {network} must be an IPv4 prefix")) };
    let size = 1u32 << (32 - subnet_len);
    let last = net | !mask_v4(net_len);
    let within = |a: Ipv4Addr| network.contains(IpAddr::V4(a));
    let subnet_min = match ipv4_field(v, "SubnetMin")? {
        None => net.wrapping_add(size),
        Some(a) if within(a) => u32::from(a),
        Some(a) => return Err(format!("SubnetMin {a} is not in the Network {network}")),
    };
    let subnet_max = match ipv4_field(v, "SubnetMax")? {
        None => (last - size) + 1,
        Some(a) if within(a) => u32::from(a),
        Some(a) => return Err(format!("SubnetMax {a} is not in the Network {network}")),
    };
    let mask = mask_v4(subnet_len);
    if subnet_min & mask != subnet_min {
        return Err(format!("SubnetMin {} is not on a SubnetLen boundary", Ipv4Addr::from(subnet_min)));
    }
    if subnet_max & mask != subnet_max {
        return Err(format!("SubnetMax {} is not on a SubnetLen boundary", Ipv4Addr::from(subnet_max)));
    }
    Ok((subnet_min, subnet_max))
}

/// `Backend`: its type (none: udp), port and, for vxlan, VNI.
fn backend(v: &Value) -> Result<(FlannelBackend, u16), String> {
    let b = match v.get("Backend") {
        None | Some(Value::Null) => return Ok((FlannelBackend::Udp, DEFAULT_UDP_PORT)),
        Some(Value::Object(b)) => b,
        Some(other) => return Err(format!("Backend must be an object, not {other}")),
    };
    let kind = match b.get("Type") {
        None | Some(Value::Null) => "udp",
        Some(Value::String(t)) => t.as_str(),
        Some(other) => return Err(format!("Backend.Type must be a string, not {other}")),
    };
    let port = match int_field(b, "Port", 65535)? {
        Some(0) => return Err("Backend.Port 0 must be between 1 and 65535".into()),
        p => p.map(|p| p as u16),
    };
    match kind {
        "udp" => Ok((FlannelBackend::Udp, port.unwrap_or(DEFAULT_UDP_PORT))),
        "vxlan" => {
            let vni = int_field(b, "VNI", (1 << 24) - 1).map_err(|e| format!("Backend.{e}"))?.unwrap_or(u64::from(DEFAULT_VNI)) as u32;
            Ok((FlannelBackend::Vxlan { vni }, port.unwrap_or(DEFAULT_VXLAN_PORT)))
        }
        other => Err(format!(
            "Backend.Type {other:?} is not run by encapd: encapd speaks flannel's \"udp\" and \"vxlan\" backends (set Backend.Type to one of them)"
        )),
    }
}

/// Parses a lease key's last component, `10.5.52.0-24` or
/// `10.5.52.0-24&fc00::-64`.
pub fn parse_lease_name(name: &str) -> Result<(Prefix, Option<Prefix>), String> {
    let (v4, v6) = match name.split_once('&') {
        Some((a, b)) => (a, Some(b)),
        None => (name, None),
    };
    let one = |part: &str, want_v4: bool| -> Result<Prefix, String> {
        let (addr, len) = part.rsplit_once('-').ok_or_else(|| format!("key name {name:?} is not ADDRESS-LENGTH"))?;
        let p: Prefix = format!("{addr}/{len}").parse().map_err(|e| format!("key name {name:?}: {e}"))?;
        if p.is_ipv4() != want_v4 {
            return Err(format!("key name {name:?}: wrong address family"));
        }
        Ok(p)
    };
    let v4 = one(v4, true)?;
    let v6 = v6.map(|p| one(p, false)).transpose()?;
    Ok((v4, v6))
}

/// The key name of a lease on `subnet` (`10.5.52.0-24`).
pub fn lease_name(subnet: &Prefix) -> String {
    format!("{}-{}", subnet.network(), subnet.len())
}

/// A lease value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAttrs {
    pub public_ip: Ipv4Addr,
    pub backend: LeaseBackend,
    /// The holder decapsulates in its kernel (see [`KERNEL_DECAP_FIELD`]).
    pub kernel_decap: bool,
}

/// The `BackendData` field in which encapd states whether it takes
/// datagrams apart in its kernel (`kernel_path = "tc"`), so that a peer's
/// kernel path knows it may send to it (`route::Route::kernel_decap`).
/// flanneld ignores fields it does not know. A lease without it is
/// flanneld's: its vxlan backend is a kernel VTEP (true), its udp backend
/// reads datagrams in user space (false). encapd always writes it in a
/// vxlan lease, where the default would claim too much; in a udp lease
/// only when true, so that a lease without the kernel path stays exactly
/// flanneld's.
pub const KERNEL_DECAP_FIELD: &str = "EncapdKernelDecap";

/// What a lease says about its holder's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseBackend {
    /// No `BackendType`, or "udp".
    Udp,
    /// "vxlan" with its `BackendData`.
    Vxlan { vni: u32, vtep_mac: Mac },
    /// Any other backend (host-gw, wireguard, ...).
    Other(String),
}

impl LeaseBackend {
    fn name(&self) -> &str {
        match self {
            LeaseBackend::Udp => "udp",
            LeaseBackend::Vxlan { .. } => "vxlan",
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
/// `"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}` for vxlan).
pub fn parse_lease_value(value: &[u8]) -> Result<LeaseAttrs, Skip> {
    let v: Value = serde_json::from_slice(value).map_err(|e| Skip::Malformed(format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Skip::Malformed("not a JSON object".into()));
    }
    let public_ip = match ipv4_field(&v, "PublicIP").map_err(Skip::Malformed)? {
        Some(ip) if !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast() => ip,
        Some(ip) => return Err(Skip::Malformed(format!("PublicIP {ip} is not a unicast address"))),
        None => return Err(Skip::Malformed("PublicIP is missing".into())),
    };
    let backend = match v.get("BackendType") {
        None | Some(Value::Null) => LeaseBackend::Udp,
        Some(Value::String(s)) if s.is_empty() || s == "udp" => LeaseBackend::Udp,
        Some(Value::String(s)) if s == "vxlan" => vxlan_backend_data(&v).map_err(Skip::Malformed)?,
        Some(Value::String(s)) => LeaseBackend::Other(s.clone()),
        Some(other) => return Err(Skip::Malformed(format!("BackendType must be a string, not {other}"))),
    };
    let kernel_decap = match v.get("BackendData").and_then(|d| d.get(KERNEL_DECAP_FIELD)) {
        None | Some(Value::Null) => matches!(backend, LeaseBackend::Vxlan { .. }),
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(Skip::Malformed(format!("BackendData.{KERNEL_DECAP_FIELD} must be true or false, not {other}"))),
    };
    Ok(LeaseAttrs { public_ip, backend, kernel_decap })
}

/// `BackendData` of a vxlan lease: `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`.
fn vxlan_backend_data(v: &Value) -> Result<LeaseBackend, String> {
    let Some(data) = v.get("BackendData").and_then(Value::as_object) else {
        return Err("a vxlan lease without a BackendData object".into());
    };
    let vni = int_field(data, "VNI", (1 << 24) - 1).map_err(|e| format!("BackendData.{e}"))?.unwrap_or(u64::from(DEFAULT_VNI)) as u32;
    let vtep_mac = match data.get("VtepMAC") {
        Some(Value::String(s)) => s.parse::<Mac>().map_err(|e| format!("BackendData.VtepMAC {s:?}: {e}"))?,
        None | Some(Value::Null) => return Err("BackendData.VtepMAC is missing".into()),
        Some(other) => return Err(format!("BackendData.VtepMAC must be a string, not {other}")),
    };
    if vtep_mac.is_group() {
        return Err(format!("BackendData.VtepMAC {vtep_mac} is not a unicast MAC"));
    }
    Ok(LeaseBackend::Vxlan { vni, vtep_mac })
}

/// The value flanneld writes for its own lease, for this node's backend
/// (with the VTEP MAC for vxlan), and whether this node decapsulates in
/// its kernel ([`KERNEL_DECAP_FIELD`]).
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

/// What this node routes: leases of its own backend (and VNI) to its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseExpect {
    pub backend: FlannelBackend,
    pub port: u16,
}

/// Turns a lease (key name + value) into the peer it routes to, checked
/// against this node's table scope so that a bad lease can never make a
/// table build fail.
pub fn lease_peer(name: &str, value: &[u8], expect: LeaseExpect, scope: &TableScope) -> Result<PeerSpec, Skip> {
    let (subnet, _v6) = parse_lease_name(name).map_err(Skip::Malformed)?;
    let attrs = parse_lease_value(value)?;
    let kernel_decap = attrs.kernel_decap;
    let vtep_mac = match (&attrs.backend, expect.backend) {
        (LeaseBackend::Udp, FlannelBackend::Udp) => None,
        (LeaseBackend::Vxlan { vni, vtep_mac }, FlannelBackend::Vxlan { vni: ours }) => {
            if *vni != ours {
                return Err(Skip::Malformed(format!("VNI {vni} differs from the network's {ours}")));
            }
            Some(*vtep_mac)
        }
        (lease, ours) => return Err(Skip::Backend { lease: lease.name().to_owned(), ours: ours.name() }),
    };
    if !scope.networks.iter().any(|n| n.covers(&subnet) && *n != subnet) {
        return Err(Skip::Malformed(format!("subnet {subnet} lies outside the network")));
    }
    if let Some(own) = scope.own.iter().find(|o| o.overlaps(&subnet)) {
        return Err(Skip::Malformed(format!("subnet {subnet} overlaps this node's subnet {own}")));
    }
    if !scope.underlay_ipv4 {
        return Err(Skip::Malformed("an IPv4 PublicIP on an IPv6 underlay".into()));
    }
    let endpoint = SocketAddr::new(IpAddr::V4(attrs.public_ip), expect.port);
    Ok(PeerSpec { vtep_mac, kernel_decap, subnet, endpoint, origin: format!("etcd lease {name}") })
}

/// flannel's `subnet.env` for `subnet` in `network` (and the IPv6 pair,
/// dual-stack) with TUN MTU `mtu`. FLANNEL_SUBNET is the subnet's `.1`
/// address (the bridge's gateway) with its length, as flanneld writes it.
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

    #[test]
    fn network_config_defaults_follow_flannel() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(Ipv4Addr::from(c.subnet_min), Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(Ipv4Addr::from(c.subnet_max), Ipv4Addr::new(10, 5, 255, 0));
        assert_eq!(c.port, 8285);
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/24"}"#).unwrap();
        assert_eq!(c.subnet_len, 26);
        let c = NetworkConfig::parse(
            r#"{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0","Backend":{"Type":"udp","Port":7890}}"#,
        )
        .unwrap();
        assert_eq!((c.subnet_len, c.port), (20, 7890));
        assert_eq!(Ipv4Addr::from(c.subnet_min), Ipv4Addr::new(10, 10, 0, 0));
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!((c.backend, c.port), (FlannelBackend::Vxlan { vni: 1 }, 8472));
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789}}"#).unwrap();
        assert_eq!((c.backend, c.port), (FlannelBackend::Vxlan { vni: 4 }, 4789));
    }

    #[test]
    fn network_config_rejects_what_encapd_cannot_run() {
        for (text, want) in [
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#, "\"host-gw\" is not run by encapd"),
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#, "Backend.VNI"),
            (r#"{"Network":"10.5.0.0/30"}"#, "too small"),
            (r#"{"Network":"fd00::/16"}"#, "IPv4"),
            (r#"{"Network":"10.5.0.0/16","SubnetLen":8}"#, "shorter"),
            (r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#, "SubnetMin"),
            (r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.0.7"}"#, "boundary"),
            (r#"{"Network":16}"#, "must be a string"),
            ("nope", "not valid JSON"),
            ("{}", "Network is missing"),
        ] {
            let err = NetworkConfig::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn allocation_avoids_taken_subnets() {
        let c = NetworkConfig::parse(r#"{"Network":"10.5.0.0/22"}"#).unwrap();
        // /22 → /24s: 10.5.1.0, .2.0, .3.0 allocatable (the first is skipped).
        let taken = [p("10.5.1.0/24"), p("10.5.3.0/24")];
        for r in 0..10 {
            assert_eq!(c.allocate(&taken, r), Some(p("10.5.2.0/24")));
        }
        assert_eq!(c.allocate(&[p("10.5.0.0/22")], 0), None);
        assert!(c.allocatable(&p("10.5.2.0/24")) && !c.allocatable(&p("10.5.0.0/24")));
    }

    #[test]
    fn lease_names_parse() {
        assert_eq!(parse_lease_name("10.5.52.0-24").unwrap(), (p("10.5.52.0/24"), None));
        assert_eq!(parse_lease_name("10.5.52.0-24&fc00::-64").unwrap(), (p("10.5.52.0/24"), Some(p("fc00::/64"))));
        for bad in ["10.5.52.0", "10.5.52.1-24", "x-24", "10.5.52.0-33", "fc00::-64", "10.5.52.0-24&10.1.0.0-16", ""] {
            assert!(parse_lease_name(bad).is_err(), "{bad}");
        }
        assert_eq!(lease_name(&p("10.5.52.0/24")), "10.5.52.0-24");
    }

    const UDP: LeaseExpect = LeaseExpect { backend: FlannelBackend::Udp, port: 8285 };
    const VXLAN: LeaseExpect = LeaseExpect { backend: FlannelBackend::Vxlan { vni: 1 }, port: 8472 };
    /// flanneld's vxlan lease, as it writes it.
    const VX: &[u8] =
        br#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    #[test]
    fn lease_values_parse() {
        let scope = TableScope { own: vec![p("10.5.1.0/24")], networks: vec![p("10.5.0.0/16")], underlay_ipv4: true };
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
        for (name, value) in [
            ("10.5.52.0-24", &b"not json"[..]),
            ("10.5.52.0-24", br#"{"PublicIP":5}"#),
            ("10.5.52.0-24", br#"[]"#),
            ("10.5.52.0-24", br#"{"PublicIP":"nope"}"#),
            ("10.5.52.0-24", br#"{"PublicIPv6":null}"#),
            ("10.5.52.0-24", br#"{"PublicIP":"1.2.3.4","BackendType":7}"#),
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
        ] {
            assert!(
                matches!(lease_peer("10.5.52.0-24", value, VXLAN, &scope), Err(Skip::Malformed(_))),
                "{}",
                String::from_utf8_lossy(value)
            );
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
            assert_eq!(attrs.kernel_decap, kernel_decap);
        }
    }

    /// Who decapsulates in the kernel: what a lease states, else what its
    /// flanneld backend does (a kernel VTEP for vxlan, user space for udp).
    #[test]
    fn kernel_decap_is_read_from_the_lease_or_follows_flanneld() {
        let scope = TableScope { own: vec![p("10.5.1.0/24")], networks: vec![p("10.5.0.0/16")], underlay_ipv4: true };
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
