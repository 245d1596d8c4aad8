//! `<prefix>/config`, flannel's network config, read as flanneld reads it
//! (`pkg/subnet/config.go`: `ParseConfig`, `CheckNetworkConfig`), and the
//! allocation of a free subnet from it (`pkg/subnet/etcd/local_manager.go`:
//! `allocateSubnet`). Pure: no I/O.
//!
//! A dual-stack network (`"EnableIPv6": true`) has an IPv6 half with the
//! same rules: `IPv6Network`, `IPv6SubnetLen` (default 64 for a /62 or
//! larger network, else the network's length + 2), `IPv6SubnetMin` (default
//! the second subnet) and `IPv6SubnetMax` (default the last). An IPv6-only
//! network (`"EnableIPv4": false`) is refused: see [`NetworkConfig::parse`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::{DEFAULT_UDP_PORT, DEFAULT_VNI, DEFAULT_VXLAN_PORT, FlannelBackend, int_field};
use crate::route::Prefix;

/// The fields of flannel's `Config` struct, and of `Backend` as the udp and
/// vxlan backends read it. Go's `encoding/json` takes a key for a field when
/// the two differ only in case (flannel's own tests write `enableIPv6`), so
/// encapd does too ([`canonical_keys`]).
const CONFIG_FIELDS: [&str; 12] = [
    "EnableIPv4",
    "EnableIPv6",
    "EnableNFTables",
    "Network",
    "IPv6Network",
    "SubnetMin",
    "SubnetMax",
    "IPv6SubnetMin",
    "IPv6SubnetMax",
    "SubnetLen",
    "IPv6SubnetLen",
    "Backend",
];
/// `ListenPort` and `PSK` are the wireguard backend's (flannel's
/// `pkg/backend/wireguard`).
const BACKEND_FIELDS: [&str; 5] = ["Type", "Port", "VNI", "ListenPort", "PSK"];

/// `<prefix>/config`, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`.
    pub ipv4: SubnetRange,
    /// `IPv6Network`, `IPv6SubnetLen`, `IPv6SubnetMin`, `IPv6SubnetMax`:
    /// present when `EnableIPv6` is true (a dual-stack network).
    pub ipv6: Option<SubnetRange>,
    /// `Backend.Type` (no `Backend`: udp) and, for vxlan, `Backend.VNI`.
    pub backend: FlannelBackend,
    /// `Backend.Port` (udp default 8285, vxlan 8472).
    pub port: u16,
}

/// One address family of a network config: the network, the length of
/// the subnets handed out, and the first and last subnet address that
/// may be allocated (inclusive; IPv4 addresses in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetRange {
    pub network: Prefix,
    pub subnet_len: u8,
    pub min: u128,
    pub max: u128,
}

impl NetworkConfig {
    /// Parses flannel's network config JSON; rejects what flanneld rejects
    /// and what encapd cannot run: a backend other than udp or vxlan, and
    /// an IPv6-only network (`"EnableIPv4": false`). flanneld's etcd
    /// subnet manager cannot run one either: it always allocates an IPv4
    /// subnet, so with no IPv4 range every node gets `0.0.0.0/0` and the
    /// second node finds no free subnet, or takes over the first node's
    /// lease through the shared `PublicIP` `0.0.0.0`
    /// (`LocalManager.tryAcquireLease`, `allocateSubnet`). And encapd's
    /// leases name an IPv4 underlay address (`PublicIP`).
    pub fn parse(text: &str) -> Result<NetworkConfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Some(obj) = v.as_object() else { return Err("must be a JSON object".into()) };
        let obj = &canonical_keys(obj, &CONFIG_FIELDS)?;
        let enable_ipv4 = bool_field(obj, "EnableIPv4")?.unwrap_or(true);
        let enable_ipv6 = bool_field(obj, "EnableIPv6")?.unwrap_or(false);
        if !enable_ipv4 {
            return Err(if enable_ipv6 {
                "EnableIPv4 is false: an IPv6-only network is not supported with etcd (flanneld's etcd subnet manager always \
                 allocates an IPv4 subnet, and encapd's lease names an IPv4 PublicIP); use a dual-stack network (EnableIPv4 and EnableIPv6)"
                    .into()
            } else {
                "EnableIPv4 and EnableIPv6 are both false: no address family to allocate from".into()
            });
        }
        let ipv4 = ipv4_range(obj)?;
        let ipv6 = if enable_ipv6 { Some(ipv6_range(obj)?) } else { None };
        let (backend, port) = backend(obj)?;
        Ok(NetworkConfig { ipv4, ipv6, backend, port })
    }

    /// The IPv4 network (`Network`).
    pub fn network(&self) -> Prefix {
        self.ipv4.network
    }

    /// The IPv6 network (`IPv6Network`) of a dual-stack network.
    pub fn network6(&self) -> Option<Prefix> {
        self.ipv6.map(|r| r.network)
    }
}

impl SubnetRange {
    fn bits(&self) -> u32 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    /// The subnet of this range's length at address `addr`.
    fn subnet_at(&self, addr: u128) -> Prefix {
        if self.network.is_ipv4() {
            Prefix::V4 { addr: addr as u32, len: self.subnet_len }
        } else {
            Prefix::V6 { addr, len: self.subnet_len }
        }
    }

    /// An address of this range's family, for messages.
    pub fn address(&self, addr: u128) -> IpAddr {
        if self.network.is_ipv4() { IpAddr::V4(Ipv4Addr::from(addr as u32)) } else { IpAddr::V6(Ipv6Addr::from(addr)) }
    }

    /// Whether `subnet` is one flanneld would allocate from this range (the
    /// subnet length, between the minimum and the maximum): what it checks
    /// before it reuses a lease (`isSubnetConfigCompat`,
    /// `isIPv6SubnetConfigCompat`). flannel routes a lease anywhere in the
    /// network; only reuse asks for this.
    pub fn allocatable(&self, subnet: &Prefix) -> bool {
        let addr = match *subnet {
            Prefix::V4 { addr, .. } if self.network.is_ipv4() => u128::from(addr),
            Prefix::V6 { addr, .. } if !self.network.is_ipv4() => addr,
            _ => return false,
        };
        subnet.len() == self.subnet_len && addr >= self.min && addr <= self.max
    }

    /// A random free subnet between the minimum and the maximum, clear of
    /// every prefix of this family in `taken`. flanneld collects the first
    /// 100 free subnets and picks one at random; so does this, with
    /// `random` as the choice. flanneld steps one subnet at a time; this
    /// skips over a taken prefix in one step, which finds the same 100
    /// subnets without walking the 2^64 subnets a short taken IPv6 prefix
    /// may cover.
    pub fn allocate(&self, taken: &[Prefix], random: u64) -> Option<Prefix> {
        let size = 1u128 << (self.bits() - u32::from(self.subnet_len));
        let mut free = Vec::new();
        let mut addr = self.min;
        while addr <= self.max && free.len() < 100 {
            let candidate = self.subnet_at(addr);
            let blocked_until = taken.iter().filter(|t| t.overlaps(&candidate)).map(last_address).max();
            let next = match blocked_until {
                None => {
                    free.push(candidate);
                    addr.checked_add(size)
                }
                // A taken prefix that covers the candidate ends on a subnet
                // boundary; one inside it ends before the next candidate.
                Some(last) => last.checked_add(1).map(|after| after.max(addr + size)),
            };
            match next {
                Some(n) => addr = n,
                None => break,
            }
        }
        if free.is_empty() { None } else { Some(free[(random % free.len() as u64) as usize]) }
    }
}

/// The last address of `p`.
fn last_address(p: &Prefix) -> u128 {
    match *p {
        Prefix::V4 { addr, len } => u128::from(addr | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)),
        Prefix::V6 { addr, len } => addr | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0),
    }
}

/// `obj` with every key that names one of `fields` in another case
/// renamed to the field's own spelling, as Go's `encoding/json` matches
/// keys (ASCII case only; Go also folds a few non-ASCII letters). Two keys
/// for one field are refused: Go would take the later one in the text,
/// which the parsed object no longer knows.
fn canonical_keys(obj: &Map<String, Value>, fields: &[&str]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (key, value) in obj {
        let name = fields.iter().find(|f| f.eq_ignore_ascii_case(key)).map_or(key.as_str(), |f| f);
        if let Some(other) = obj.keys().find(|k| *k != key && k.eq_ignore_ascii_case(name) && fields.contains(&name)) {
            return Err(format!("{key:?} and {other:?} both set {name}"));
        }
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

/// A bool field (Go: `true`/`false`; null leaves the default).
fn bool_field(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{field} must be true or false, not {other}")),
    }
}

/// An address field: `None` when absent, null, empty or the zero address,
/// which flanneld takes as "not set" (`SubnetMin == 0`, `ip.IsEmpty`).
fn address_field(obj: &Map<String, Value>, field: &str, ipv4: bool) -> Result<Option<u128>, String> {
    let text = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("{field} must be a string, not {other}")),
    };
    let addr = match (text.parse::<IpAddr>(), ipv4) {
        (Ok(IpAddr::V4(a)), true) => u128::from(u32::from(a)),
        (Ok(IpAddr::V6(a)), false) => u128::from(a),
        _ => return Err(format!("{field} {text:?} is not an {} address", if ipv4 { "IPv4" } else { "IPv6" })),
    };
    Ok((addr != 0).then_some(addr))
}

/// A prefix field of the given family, or `None` when absent or null.
fn prefix_field(obj: &Map<String, Value>, field: &str, ipv4: bool) -> Result<Option<Prefix>, String> {
    let prefix = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.parse::<Prefix>().map_err(|e| format!("{field}: {e}"))?,
        Some(other) => return Err(format!("{field} must be a string, not {other}")),
    };
    if prefix.is_ipv4() != ipv4 {
        return Err(format!("{field} {prefix} must be an {} prefix", if ipv4 { "IPv4" } else { "IPv6" }));
    }
    Ok(Some(prefix))
}

/// `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax` (`CheckNetworkConfig`).
fn ipv4_range(obj: &Map<String, Value>) -> Result<SubnetRange, String> {
    let Some(network) = prefix_field(obj, "Network", true)? else {
        return Err("Network is missing (encapd needs an IPv4 network)".into());
    };
    let given = int_field(obj, "SubnetLen", 32)?.unwrap_or(0) as u8;
    let subnet_len = if given > 0 {
        if given > 30 {
            return Err(format!("SubnetLen {given} leaves no room for containers (at most 30)"));
        }
        check_four_subnets("SubnetLen", given, "Network", network)?
    } else {
        match network.len() {
            len if len > 28 => return Err(format!("Network {network} is too small (at most /28)")),
            len if len <= 22 => 24,
            len => len + 2,
        }
    };
    range(obj, network, subnet_len, ["SubnetMin", "SubnetMax"])
}

/// `IPv6Network`, `IPv6SubnetLen`, `IPv6SubnetMin`, `IPv6SubnetMax`, the
/// same rules with the IPv6 defaults (`CheckNetworkConfig`).
fn ipv6_range(obj: &Map<String, Value>) -> Result<SubnetRange, String> {
    let Some(network) = prefix_field(obj, "IPv6Network", false)? else {
        return Err("EnableIPv6 is true but IPv6Network is missing".into());
    };
    check_go_text(network)?;
    let given = int_field(obj, "IPv6SubnetLen", 128)?.unwrap_or(0) as u8;
    let subnet_len = if given > 0 {
        if given > 126 {
            return Err(format!("IPv6SubnetLen {given} leaves no room for containers (at most 126)"));
        }
        check_four_subnets("IPv6SubnetLen", given, "IPv6Network", network)?
    } else {
        match network.len() {
            len if len > 124 => return Err(format!("IPv6Network {network} is too small (at most /124)")),
            len if len <= 62 => 64,
            len => len + 2,
        }
    };
    range(obj, network, subnet_len, ["IPv6SubnetMin", "IPv6SubnetMax"])
}

/// flanneld: "network must be able to accommodate at least four subnets"
/// (the first is never allocated).
fn check_four_subnets(field: &str, given: u8, network_field: &str, network: Prefix) -> Result<u8, String> {
    if u32::from(given) < u32::from(network.len()) + 2 {
        return Err(format!(
            "{field} {given} is shorter than /{}: the {network_field} {network} must hold at least four subnets",
            u32::from(network.len()) + 2
        ));
    }
    Ok(given)
}

/// Go prints an IPv6 address in `::ffff:0:0/96`, or one below 2^32, in
/// dotted IPv4 form (`ip.IP6.ToIP`, `net.IP.String`), which flanneld's own
/// subnet key pattern (`[a-f\d:]+`) then cannot read back: such a network
/// cannot be shared with flanneld, so it is refused.
fn check_go_text(network: Prefix) -> Result<(), String> {
    let dotted = ["::/96", "::ffff:0:0/96"].map(|p| p.parse::<Prefix>().expect("a literal prefix"));
    if let Some(d) = dotted.iter().find(|d| d.overlaps(&network)) {
        return Err(format!(
            "IPv6Network {network} overlaps {d}, whose addresses flanneld writes in dotted IPv4 form in subnet keys (and cannot read back)"
        ));
    }
    Ok(())
}

/// The minimum and maximum fields of a range, or flanneld's defaults (the
/// second subnet and the last one), inside the network and aligned.
fn range(obj: &Map<String, Value>, network: Prefix, subnet_len: u8, [min_field, max_field]: [&str; 2]) -> Result<SubnetRange, String> {
    let ipv4 = network.is_ipv4();
    let bits = if ipv4 { 32 } else { 128 };
    let size = 1u128 << (bits - u32::from(subnet_len));
    let net = match network {
        Prefix::V4 { addr, .. } => u128::from(addr),
        Prefix::V6 { addr, .. } => addr,
    };
    let last = last_address(&network);
    let r = SubnetRange { network, subnet_len, min: 0, max: 0 };
    let within = |field: &str, a: u128| {
        if a >= net && a <= last { Ok(a) } else { Err(format!("{field} {} is not in {network}", r.address(a))) }
    };
    let min = match address_field(obj, min_field, ipv4)? {
        None => net + size,
        Some(a) => within(min_field, a)?,
    };
    let max = match address_field(obj, max_field, ipv4)? {
        None => last - size + 1,
        Some(a) => within(max_field, a)?,
    };
    for (field, a) in [(min_field, min), (max_field, max)] {
        if a & (size - 1) != 0 {
            return Err(format!("{field} {} is not on a /{subnet_len} boundary", r.address(a)));
        }
    }
    Ok(SubnetRange { min, max, ..r })
}

/// `Backend`: its type (none: udp), port and, for vxlan, VNI.
fn backend(obj: &Map<String, Value>) -> Result<(FlannelBackend, u16), String> {
    let b = match obj.get("Backend") {
        None | Some(Value::Null) => return Ok((FlannelBackend::Udp, DEFAULT_UDP_PORT)),
        Some(Value::Object(b)) => &canonical_keys(b, &BACKEND_FIELDS).map_err(|e| format!("Backend: {e}"))?,
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
        "wireguard" => {
            if let Some(Value::String(psk)) = b.get("PSK")
                && !psk.is_empty()
            {
                return Err("Backend.PSK: a cluster-wide preshared key is not supported by encapd yet (remove it, or use the peers file's preshared_key_file)".into());
            }
            let listen = match int_field(b, "ListenPort", 65535)? {
                Some(0) => return Err("Backend.ListenPort 0 must be between 1 and 65535".into()),
                p => p.map(|p| p as u16),
            };
            Ok((FlannelBackend::WireGuard, listen.or(port).unwrap_or(crate::config::DEFAULT_WIREGUARD_PORT)))
        }
        other => Err(format!(
            "Backend.Type {other:?} is not run by encapd: encapd speaks flannel's \"udp\", \"vxlan\" and \"wireguard\" backends (set Backend.Type to one of them)"
        )),
    }
}
