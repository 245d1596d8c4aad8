//! `control::flannel::lease_routes` on arbitrary etcd leases (key name and
//! JSON value): never panics, and routes a lease, or skips it as malformed
//! or of another backend, exactly as a reference written out again here with
//! serde_json decides. A routed lease is a unicast IPv4 `PublicIP` at this
//! node's port, of this node's backend (vxlan: the same VNI and a unicast
//! `VtepMAC`, which becomes the peer's `vtep_mac`; udp: none), on a subnet
//! strictly inside the network that does not overlap the node's own.
//! `kernel_decap` is `BackendData.EncapdKernelDecap` when it is a bool,
//! flanneld's backend when it is absent or null (vxlan: a kernel VTEP, true;
//! udp: false), and anything else there is malformed. In a dual-stack
//! network the key's IPv6 part (`…&fd00:96:5::-64`) must lie strictly
//! inside the IPv6 network and clear of the node's own IPv6 subnet, else
//! the whole lease is malformed; it is routed to the same endpoint, MAC and
//! kernel decap as the IPv4 subnet when `PublicIPv6` is null, absent or
//! empty, and left unrouted with a reason when `PublicIPv6` is an IPv6
//! address (anything else there is malformed). A vxlan lease's
//! `BackendV6Data`, when not null, must be a `BackendData`-like object. In
//! an IPv4-only network the IPv6 part is not looked at.
//! `parse_lease_name` and `parse_lease_value` agree with the reference on
//! their own too, `lease_name` writes back the name it parsed, and every
//! `Skip::Malformed` says why.
//!
//! Round trip: the lease encapd writes for a routed peer (`lease_value`)
//! reads back (`parse_lease_value`, and `lease_routes` under the same name)
//! as the same peers, with the IPv6 subnet routed too (encapd writes
//! `"PublicIPv6":null`), and a udp lease without the kernel path is exactly
//! flanneld's (`PublicIP` and `PublicIPv6` only).
//!
//! Input: byte 0 = what this node expects (bit 0: the vxlan backend, else
//! udp; bits 1-2: its VNI, one of 1, 2, 0 and 16777215; bit 3: an IPv6
//! underlay; bit 4: the networks 0.0.0.0/0 and ::/0 instead of the fixture's
//! 100.96.0.0/16 and fd00:96::/32; bit 5: port 4789 instead of the backend's
//! default 8285 or 8472; bit 6: an IPv4-only network, without the IPv6
//! one). Then the key name (what follows the subnets prefix) up to the
//! first `\n`, read as the etcd source reads keys, with
//! `String::from_utf8_lossy`; then the lease value, the bytes after that
//! `\n` (empty without one). The node always owns the fixture's
//! 100.96.1.0/24 and, dual-stack, fd00:96:1::/64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::Value;

use crate::{OWN_V4, OWN_V6};
use encapd::control::flannel::{
    FlannelBackend, LeaseAttrs, LeaseBackend, LeaseExpect, LeaseRoutes, Skip, lease_name, lease_routes, lease_value, parse_lease_name,
    parse_lease_value,
};
use encapd::route::{Prefix, TableScope};

const VNIS: [u32; 4] = [1, 2, 0, (1 << 24) - 1];

/// An IPv4 / IPv6 prefix as the reference sees it: (address, length).
type V4 = (u32, u8);
type V6 = (u128, u8);

/// The fixture's IPv4 network, 100.96.0.0/16, and the node's 100.96.1.0/24.
const NET_V4: V4 = (0x6460_0000, 16);
const OWN_SUBNET_V4: V4 = (0x6460_0100, 24);
/// The fixture's IPv6 network, fd00:96::/32, and the node's fd00:96:1::/64.
const NET_V6: V6 = (0xfd00_0096 << 96, 32);
const OWN_SUBNET_V6: V6 = ((0xfd00_0096 << 96) | (1 << 80), 64);

/// What a lease value says, by the reference rules.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RefBackend {
    Udp,
    Vxlan { vni: u32, mac: [u8; 6] },
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RefLease {
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    backend: RefBackend,
    /// `BackendV6Data` of a vxlan lease: (VNI, MAC).
    v6_data: Option<(u32, [u8; 6])>,
    kernel_decap: bool,
}

/// What `lease_routes` should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The routed subnets (IPv4, then IPv6 as (address, length) in a u128),
    /// to one endpoint with one MAC and kernel decap; whether an IPv6
    /// subnet was left unrouted.
    Route {
        subnets: Vec<(u128, u8)>,
        endpoint: SocketAddr,
        mac: Option<[u8; 6]>,
        kernel_decap: bool,
        ipv6_unrouted: bool,
    },
    Malformed,
    Backend {
        lease: String,
        ours: &'static str,
    },
}

fn host_bits_v4(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

/// `a.b.c.d-len`: the address and length, with no host bits set.
fn ref_v4(part: &str) -> Option<V4> {
    let (addr, len) = part.rsplit_once('-')?;
    let addr = u32::from(addr.parse::<Ipv4Addr>().ok()?);
    let len: u8 = len.parse().ok()?;
    (len <= 32 && addr & host_bits_v4(len) == 0).then_some((addr, len))
}

/// `x:y::-len`, the same for IPv6.
fn ref_v6(part: &str) -> Option<V6> {
    let (addr, len) = part.rsplit_once('-')?;
    let addr = u128::from(addr.parse::<Ipv6Addr>().ok()?);
    let len: u8 = len.parse().ok()?;
    (len <= 128 && addr & u128::MAX.checked_shr(u32::from(len)).unwrap_or(0) == 0).then_some((addr, len))
}

/// A lease key name: the IPv4 subnet, and the IPv6 one after a `&`.
fn ref_name(name: &str) -> Option<(V4, Option<V6>)> {
    let (v4, v6) = match name.find('&') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let v4 = ref_v4(v4)?;
    let v6 = match v6 {
        Some(p) => Some(ref_v6(p)?),
        None => None,
    };
    Some((v4, v6))
}

/// `02:00:c6:12:00:01`: six groups of two hex digits.
fn ref_mac(s: &str) -> Option<[u8; 6]> {
    let b = s.as_bytes();
    if b.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        let hi = char::from(b[3 * i]).to_digit(16)?;
        let lo = char::from(b[3 * i + 1]).to_digit(16)?;
        if i < 5 && b[3 * i + 2] != b':' {
            return None;
        }
        *byte = (hi * 16 + lo) as u8;
    }
    Some(mac)
}

/// `{"VNI":n,"VtepMAC":"…"}` of a vxlan lease: the VNI (1 when absent
/// or null) and a unicast MAC.
fn ref_vxlan_data(data: &serde_json::Map<String, Value>) -> Option<(u32, [u8; 6])> {
    let vni = match data.get("VNI") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => u32::try_from(n.as_u64()?).ok().filter(|&n| n < 1 << 24)?,
        Some(_) => return None,
    };
    let Some(Value::String(mac)) = data.get("VtepMAC") else { return None };
    let mac = ref_mac(mac)?;
    if mac[0] & 1 == 1 {
        return None; // a group address
    }
    Some((vni, mac))
}

/// A lease value by the reference rules; `None` when it is malformed.
fn ref_value(value: &[u8]) -> Option<RefLease> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let obj = v.as_object()?;
    let Some(Value::String(ip)) = obj.get("PublicIP") else { return None };
    let ip: Ipv4Addr = ip.parse().ok()?;
    let o = ip.octets();
    if o == [0; 4] || (224..=239).contains(&o[0]) || o == [255; 4] {
        return None; // not unicast
    }
    let ip6 = match obj.get("PublicIPv6") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.parse::<Ipv6Addr>().ok()?),
        Some(_) => return None,
    };
    let data = obj.get("BackendData").and_then(Value::as_object);
    let (backend, v6_data) = match obj.get("BackendType") {
        None | Some(Value::Null) => (RefBackend::Udp, None),
        Some(Value::String(t)) if t.is_empty() || t == "udp" => (RefBackend::Udp, None),
        Some(Value::String(t)) if t == "vxlan" => {
            let (vni, mac) = ref_vxlan_data(data?)?;
            let v6_data = match obj.get("BackendV6Data") {
                None | Some(Value::Null) => None,
                Some(Value::Object(d)) => Some(ref_vxlan_data(d)?),
                Some(_) => return None,
            };
            (RefBackend::Vxlan { vni, mac }, v6_data)
        }
        Some(Value::String(t)) => (RefBackend::Other(t.clone()), None),
        Some(_) => return None,
    };
    let kernel_decap = match data.and_then(|d| d.get("EncapdKernelDecap")) {
        None | Some(Value::Null) => matches!(backend, RefBackend::Vxlan { .. }),
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    Some(RefLease { ip, ip6, backend, v6_data, kernel_decap })
}

/// Whether two IPv4 prefixes share an address.
fn overlap_v4((a, alen): V4, (b, blen): V4) -> bool {
    let mask = !host_bits_v4(alen.min(blen));
    a & mask == b & mask
}

/// Whether two IPv6 prefixes share an address.
fn overlap_v6((a, alen): V6, (b, blen): V6) -> bool {
    let mask = !u128::MAX.checked_shr(u32::from(alen.min(blen))).unwrap_or(0);
    a & mask == b & mask
}

/// The node's expectation, by the reference's own names.
struct Node {
    /// `Some(vni)` for vxlan.
    vxlan: Option<u32>,
    port: u16,
    underlay_ipv4: bool,
    wide: bool,
    dual_stack: bool,
}

fn reference(name: &str, value: &[u8], node: &Node) -> Verdict {
    let Some((subnet, subnet6)) = ref_name(name) else { return Verdict::Malformed };
    let Some(lease) = ref_value(value) else { return Verdict::Malformed };
    let mac = match (&lease.backend, node.vxlan) {
        (RefBackend::Udp, None) => None,
        (RefBackend::Vxlan { vni, mac }, Some(ours)) => {
            if *vni != ours {
                return Verdict::Malformed;
            }
            Some(*mac)
        }
        (lease, ours) => {
            let lease = match lease {
                RefBackend::Udp => "udp".to_owned(),
                RefBackend::Vxlan { .. } => "vxlan".to_owned(),
                RefBackend::Other(t) => t.clone(),
            };
            return Verdict::Backend { lease, ours: if ours.is_some() { "vxlan" } else { "udp" } };
        }
    };
    // Strictly inside the network (a lease on the whole network is not a subnet).
    let inside = if node.wide { subnet.1 > 0 } else { subnet.1 > NET_V4.1 && overlap_v4(subnet, NET_V4) };
    if !inside || overlap_v4(subnet, OWN_SUBNET_V4) {
        return Verdict::Malformed;
    }
    let subnet6 = subnet6.filter(|_| node.dual_stack);
    if let Some(s6) = subnet6 {
        let inside = if node.wide { s6.1 > 0 } else { s6.1 > NET_V6.1 && overlap_v6(s6, NET_V6) };
        if !inside || overlap_v6(s6, OWN_SUBNET_V6) {
            return Verdict::Malformed;
        }
    }
    if !node.underlay_ipv4 {
        return Verdict::Malformed;
    }
    let mut subnets = vec![(u128::from(subnet.0), subnet.1)];
    let ipv6_unrouted = match (subnet6, lease.ip6) {
        (Some(s6), None) => {
            subnets.push(s6);
            false
        }
        (Some(_), Some(_)) => true,
        (None, _) => false,
    };
    let endpoint = SocketAddr::new(IpAddr::V4(lease.ip), node.port);
    Verdict::Route { subnets, endpoint, mac, kernel_decap: lease.kernel_decap, ipv6_unrouted }
}

fn v4_pair(p: &Prefix) -> V4 {
    match *p {
        Prefix::V4 { addr, len } => (addr, len),
        Prefix::V6 { .. } => panic!("IPv6 prefix {p} where an IPv4 one belongs"),
    }
}

fn v6_pair(p: &Prefix) -> V6 {
    match *p {
        Prefix::V6 { addr, len } => (addr, len),
        Prefix::V4 { .. } => panic!("IPv4 prefix {p} where an IPv6 one belongs"),
    }
}

fn same_lease(got: &LeaseAttrs, want: &RefLease) -> bool {
    let backend = match (&got.backend, &want.backend) {
        (LeaseBackend::Udp, RefBackend::Udp) => true,
        (LeaseBackend::Vxlan { vni, vtep_mac }, RefBackend::Vxlan { vni: w, mac }) => vni == w && vtep_mac.0 == *mac,
        (LeaseBackend::Other(a), RefBackend::Other(b)) => a == b,
        _ => false,
    };
    backend
        && got.public_ip == want.ip
        && got.public_ipv6 == want.ip6
        && got.vxlan_v6.map(|(vni, mac)| (vni, mac.0)) == want.v6_data
        && got.kernel_decap == want.kernel_decap
}

fn verdict_of(got: &Result<LeaseRoutes, Skip>) -> Verdict {
    match got {
        Ok(routes) => {
            let first = routes.peers.first().expect("a routed lease routes its IPv4 subnet");
            assert!(routes.peers.len() <= 2, "{routes:?}");
            for p in &routes.peers {
                assert_eq!((p.endpoint, p.vtep_mac, p.kernel_decap), (first.endpoint, first.vtep_mac, first.kernel_decap), "{routes:?}");
                assert_eq!(&p.origin, &first.origin);
            }
            if let Some(why) = &routes.ipv6_unrouted {
                assert!(!why.trim().is_empty() && routes.peers.len() == 1, "{routes:?}");
            }
            let ip = match first.endpoint.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(ip) => panic!("IPv6 endpoint {ip} from an IPv4 PublicIP"),
            };
            let subnets = routes
                .peers
                .iter()
                .enumerate()
                .map(|(i, p)| match i {
                    0 => {
                        let (a, l) = v4_pair(&p.subnet);
                        (u128::from(a), l)
                    }
                    _ => v6_pair(&p.subnet),
                })
                .collect();
            Verdict::Route {
                subnets,
                endpoint: SocketAddr::new(IpAddr::V4(ip), first.endpoint.port()),
                mac: first.vtep_mac.map(|m| m.0),
                kernel_decap: first.kernel_decap,
                ipv6_unrouted: routes.ipv6_unrouted.is_some(),
            }
        }
        Err(Skip::Malformed(_)) => Verdict::Malformed,
        Err(Skip::Backend { lease, ours }) => Verdict::Backend { lease: lease.clone(), ours },
    }
}

fn check_skip(skip: &Skip) {
    match skip {
        Skip::Malformed(why) => assert!(!why.trim().is_empty(), "Skip::Malformed without a reason"),
        Skip::Backend { lease, ours } => assert!(!lease.is_empty() && !ours.is_empty(), "{skip:?}"),
    }
    assert!(!skip.to_string().is_empty());
}

/// The lease encapd writes for a routed lease's holder reads back as the
/// same peers (the IPv6 subnet routed too: encapd writes no `PublicIPv6`),
/// and has the documented shape.
fn round_trip(name: &str, routes: &LeaseRoutes, expect: LeaseExpect, scope: &TableScope) {
    let peer = &routes.peers[0];
    let written = lease_value(peer.endpoint.ip(), expect.backend, peer.vtep_mac, peer.kernel_decap);
    let attrs = parse_lease_value(written.as_bytes()).unwrap_or_else(|e| panic!("our own lease {written} does not parse: {e}"));
    let IpAddr::V4(ip) = peer.endpoint.ip() else { unreachable!("checked against the reference") };
    let backend = match (expect.backend, peer.vtep_mac) {
        (FlannelBackend::Vxlan { vni }, Some(vtep_mac)) => LeaseBackend::Vxlan { vni, vtep_mac },
        (FlannelBackend::Udp, None) => LeaseBackend::Udp,
        (b, mac) => panic!("backend {b:?} with VTEP MAC {mac:?}"),
    };
    let want = LeaseAttrs { public_ip: ip, public_ipv6: None, backend, vxlan_v6: None, kernel_decap: peer.kernel_decap };
    assert_eq!(attrs, want, "our own lease {written} reads back wrong");
    let by_ref = ref_value(written.as_bytes()).unwrap_or_else(|| panic!("the reference rejects our own lease {written}"));
    assert!(same_lease(&attrs, &by_ref), "the reference reads our own lease {written} as {by_ref:?}");
    let again = lease_routes(name, written.as_bytes(), expect, scope).unwrap_or_else(|e| panic!("our own lease {written} is skipped: {e}"));
    assert_eq!(&again.peers[..routes.peers.len()], &routes.peers[..], "our own lease {written} routes differently");
    assert_eq!(again.ipv6_unrouted, None, "our own lease {written} leaves IPv6 unrouted");
    assert_eq!(again.peers.len(), routes.peers.len() + usize::from(routes.ipv6_unrouted.is_some()), "{written}: {again:?}");

    // The JSON's shape: a vxlan lease always states the kernel path; a udp
    // lease only when it is on, else it is exactly flanneld's.
    let v: Value = serde_json::from_str(&written).expect("parsed above");
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.get("PublicIPv6"), Some(&Value::Null), "{written}");
    let stated = obj.get("BackendData").and_then(|d| d.get("EncapdKernelDecap"));
    match peer.vtep_mac {
        Some(_) => assert_eq!(stated, Some(&Value::Bool(peer.kernel_decap)), "{written}"),
        None if peer.kernel_decap => assert_eq!(stated, Some(&Value::Bool(true)), "{written}"),
        None => {
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["PublicIP", "PublicIPv6"], "a udp lease without the kernel path must be flanneld's: {written}");
        }
    }
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let (name, value) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let name = String::from_utf8_lossy(name);
    let name = name.as_ref();

    let vni = VNIS[usize::from(sel >> 1) & 3];
    let node = Node {
        vxlan: (sel & 1 == 1).then_some(vni),
        port: if sel & 0x20 != 0 {
            4789
        } else if sel & 1 == 1 {
            8472
        } else {
            8285
        },
        underlay_ipv4: sel & 8 == 0,
        wide: sel & 0x10 != 0,
        dual_stack: sel & 0x40 == 0,
    };
    let expect = LeaseExpect {
        backend: match node.vxlan {
            Some(vni) => FlannelBackend::Vxlan { vni },
            None => FlannelBackend::Udp,
        },
        port: node.port,
    };
    let networks = if node.wide { ["0.0.0.0/0", "::/0"] } else { ["100.96.0.0/16", "fd00:96::/32"] };
    let families = if node.dual_stack { 2 } else { 1 };
    let scope = TableScope {
        own: [OWN_V4, OWN_V6][..families].iter().map(|n| n.parse().unwrap()).collect(),
        networks: networks[..families].iter().map(|n| n.parse().unwrap()).collect(),
        underlay_ipv4: node.underlay_ipv4,
    };

    // The parts on their own.
    let want_name = ref_name(name);
    match parse_lease_name(name) {
        Ok((v4, v6)) => {
            assert_eq!(Some((v4_pair(&v4), v6.as_ref().map(v6_pair))), want_name, "parse_lease_name({name:?})");
            assert_eq!(parse_lease_name(&lease_name(&v4, None)), Ok((v4, None)), "lease_name({v4})");
            assert_eq!(parse_lease_name(&lease_name(&v4, v6.as_ref())), Ok((v4, v6)), "lease_name({v4}, {v6:?})");
        }
        Err(why) => {
            assert!(!why.is_empty(), "parse_lease_name({name:?}): an empty error");
            assert_eq!(want_name, None, "parse_lease_name({name:?}) rejects it: {why}");
        }
    }
    let want_value = ref_value(value);
    match parse_lease_value(value) {
        Ok(attrs) => {
            let want = want_value.as_ref().unwrap_or_else(|| panic!("parse_lease_value accepts {attrs:?}; the reference does not"));
            assert!(same_lease(&attrs, want), "parse_lease_value: {attrs:?}, the reference: {want:?}");
        }
        Err(skip) => {
            check_skip(&skip);
            assert!(matches!(skip, Skip::Malformed(_)), "parse_lease_value: {skip:?}");
            assert_eq!(want_value, None, "parse_lease_value rejects it: {skip}");
        }
    }

    // The whole lease.
    let got = lease_routes(name, value, expect, &scope);
    if let Err(skip) = &got {
        check_skip(skip);
    }
    let want = reference(name, value, &node);
    assert_eq!(verdict_of(&got), want, "lease_routes({name:?}, {:?}) with {expect:?}: {got:?}", String::from_utf8_lossy(value));
    if let Ok(routes) = &got {
        assert!(routes.peers[0].origin.contains(name), "origin {:?} does not name the lease {name:?}", routes.peers[0].origin);
        round_trip(name, routes, expect, &scope);
    }
}
