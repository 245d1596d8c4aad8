//! flannel's lease store format, as flanneld reads and writes it in etcd v3:
//! the network config at `<prefix>/config`, leases at
//! `<prefix>/subnets/<a.b.c.d>-<len>` (dual-stack: `...&<v6>-<len>`) with a
//! JSON value, subnet allocation, and the `subnet.env` file. Pure functions,
//! no I/O, so every rule is unit-tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::Value;

use crate::route::{PeerSpec, Prefix, TableScope};

/// flannel's udp backend port, when the config names none.
pub const DEFAULT_UDP_PORT: u16 = 8285;

/// `<prefix>/config`, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub network: Prefix,
    pub subnet_len: u8,
    /// First and last subnet address that may be allocated (inclusive).
    pub subnet_min: u32,
    pub subnet_max: u32,
    /// `Backend.Port` (udp default 8285).
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

impl NetworkConfig {
    /// Parses flannel's network config JSON; rejects what encapd cannot run
    /// (a backend other than udp, an IPv6-only network).
    pub fn parse(text: &str) -> Result<NetworkConfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        if !v.is_object() {
            return Err("must be a JSON object".into());
        }
        let network = match v.get("Network") {
            Some(Value::String(s)) => s.parse::<Prefix>().map_err(|e| format!("Network: {e}"))?,
            None | Some(Value::Null) => return Err("Network is missing (encapd needs an IPv4 network)".into()),
            Some(other) => return Err(format!("Network must be a string, not {other}")),
        };
        if !network.is_ipv4() {
            return Err(format!("Network {network} must be an IPv4 prefix"));
        }
        let subnet_len = match v.get("SubnetLen") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => {
                n.as_u64().filter(|&n| n <= 32).ok_or_else(|| format!("SubnetLen {n} must be between 0 and 32"))? as u8
            }
            Some(other) => return Err(format!("SubnetLen must be a number, not {other}")),
        };
        let subnet_len = if subnet_len > 0 {
            if subnet_len < network.len() {
                return Err(format!("SubnetLen {subnet_len} is shorter than the Network's /{}", network.len()));
            }
            if subnet_len > 30 {
                return Err(format!("SubnetLen {subnet_len} leaves no room for containers (at most 30)"));
            }
            subnet_len
        } else if network.len() > 28 {
            return Err(format!("Network {network} is too small (at most /28)"));
        } else if network.len() <= 22 {
            24
        } else {
            network.len() + 2
        };
        let Prefix::V4 { addr: net, len: net_len } = network else { unreachable!("checked IPv4 above") };
        let size = 1u32 << (32 - subnet_len);
        let last = net | !mask_v4(net_len);
        let within = |a: Ipv4Addr| network.contains(IpAddr::V4(a));
        let subnet_min = match ipv4_field(&v, "SubnetMin")? {
            None => net.wrapping_add(size),
            Some(a) if within(a) => u32::from(a),
            Some(a) => return Err(format!("SubnetMin {a} is not in the Network {network}")),
        };
        let subnet_max = match ipv4_field(&v, "SubnetMax")? {
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
        let (kind, port) = match v.get("Backend") {
            None | Some(Value::Null) => ("udp".to_owned(), None),
            Some(Value::Object(b)) => {
                let kind = match b.get("Type") {
                    None | Some(Value::Null) => "udp".to_owned(),
                    Some(Value::String(t)) => t.clone(),
                    Some(other) => return Err(format!("Backend.Type must be a string, not {other}")),
                };
                let port = match b.get("Port") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => Some(
                        n.as_u64()
                            .and_then(|p| u16::try_from(p).ok())
                            .filter(|&p| p != 0)
                            .ok_or_else(|| format!("Backend.Port {n} must be between 1 and 65535"))?,
                    ),
                    Some(other) => return Err(format!("Backend.Port must be a number, not {other}")),
                };
                (kind, port)
            }
            Some(other) => return Err(format!("Backend must be an object, not {other}")),
        };
        if kind != "udp" {
            return Err(format!(
                "Backend.Type {kind:?} is not run by encapd: encapd speaks flannel's \"udp\" backend only (set Backend.Type to \"udp\" or remove Backend)"
            ));
        }
        Ok(NetworkConfig { network, subnet_len, subnet_min, subnet_max, port: port.unwrap_or(DEFAULT_UDP_PORT) })
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
    /// `BackendType`; empty when absent (a udp lease).
    pub backend: String,
}

/// Why a lease is not routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a lease at all: bad JSON, wrong types, bad key, outside the network...
    Malformed(String),
    /// A well-formed lease of a backend encapd does not speak.
    Backend(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Malformed(why) => write!(f, "malformed: {why}"),
            Skip::Backend(b) => write!(f, "backend {b:?} is not spoken by encapd (udp only)"),
        }
    }
}

/// Parses a lease value (`{"PublicIP":"198.18.0.1","PublicIPv6":null}`).
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
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(Skip::Malformed(format!("BackendType must be a string, not {other}"))),
    };
    if !backend.is_empty() && backend != "udp" {
        return Err(Skip::Backend(backend));
    }
    Ok(LeaseAttrs { public_ip, backend })
}

/// The value flanneld's udp backend writes for its own lease.
pub fn lease_value(public_ip: IpAddr) -> String {
    format!("{{\"PublicIP\":\"{public_ip}\",\"PublicIPv6\":null}}")
}

/// Turns a lease (key name + value) into the peer it routes to, checked
/// against this node's table scope so that a bad lease can never make a
/// table build fail.
pub fn lease_peer(name: &str, value: &[u8], port: u16, scope: &TableScope) -> Result<PeerSpec, Skip> {
    let (subnet, _v6) = parse_lease_name(name).map_err(Skip::Malformed)?;
    let attrs = parse_lease_value(value)?;
    if !scope.networks.iter().any(|n| n.covers(&subnet) && *n != subnet) {
        return Err(Skip::Malformed(format!("subnet {subnet} lies outside the network")));
    }
    if let Some(own) = scope.own.iter().find(|o| o.overlaps(&subnet)) {
        return Err(Skip::Malformed(format!("subnet {subnet} overlaps this node's subnet {own}")));
    }
    if !scope.underlay_ipv4 {
        return Err(Skip::Malformed("an IPv4 PublicIP on an IPv6 underlay".into()));
    }
    Ok(PeerSpec { subnet, endpoint: SocketAddr::new(IpAddr::V4(attrs.public_ip), port), origin: format!("etcd lease {name}") })
}

/// flannel's `subnet.env` for `subnet` in `network` with TUN MTU `mtu`
/// (FLANNEL_SUBNET is the subnet's `.1` address, as flanneld writes it).
pub fn subnet_env(network: &Prefix, subnet: &Prefix, mtu: u32) -> String {
    let first = match *subnet {
        Prefix::V4 { addr, .. } => IpAddr::V4(Ipv4Addr::from(addr + 1)),
        Prefix::V6 { addr, .. } => IpAddr::from((addr + 1).to_be_bytes()),
    };
    format!("FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n", subnet.len())
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
    }

    #[test]
    fn network_config_rejects_what_encapd_cannot_run() {
        for (text, want) in [
            (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#, "\"vxlan\" is not run by encapd"),
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

    #[test]
    fn lease_values_parse() {
        let scope = TableScope { own: vec![p("10.5.1.0/24")], networks: vec![p("10.5.0.0/16")], underlay_ipv4: true };
        let ok = br#"{"PublicIP":"192.168.64.3","PublicIPv6":null}"#;
        let peer = lease_peer("10.5.52.0-24", ok, 8285, &scope).unwrap();
        assert_eq!(peer.endpoint, "192.168.64.3:8285".parse().unwrap());
        assert!(lease_peer("10.5.52.0-24", br#"{"PublicIP":"192.168.64.3","BackendType":"udp"}"#, 1, &scope).is_ok());
        let vx =
            br#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
        assert_eq!(lease_peer("10.5.52.0-24", vx, 1, &scope), Err(Skip::Backend("vxlan".into())));
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
            assert!(matches!(lease_peer(name, value, 1, &scope), Err(Skip::Malformed(_))), "{name} {value:?}");
        }
    }

    #[test]
    fn subnet_env_is_flannels() {
        assert_eq!(
            subnet_env(&p("10.5.0.0/16"), &p("10.5.52.0/24"), 1472),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(lease_value("198.18.0.1".parse().unwrap()), r#"{"PublicIP":"198.18.0.1","PublicIPv6":null}"#);
    }
}
