//! `control::flannel::lease_peer` on arbitrary etcd leases (key name and
//! JSON value): never panics, and routes a lease, or skips it as malformed
//! or of another backend, exactly as a reference written out again here with
//! serde_json decides. A routed lease is a unicast IPv4 `PublicIP` at this
//! node's port, of this node's backend (vxlan: the same VNI and a unicast
//! `VtepMAC`, which becomes the peer's `vtep_mac`; udp: none), on a subnet
//! strictly inside the network that does not overlap the node's own.
//! `kernel_decap` is `BackendData.EncapdKernelDecap` when it is a bool,
//! flanneld's backend when it is absent or null (vxlan: a kernel VTEP, true;
//! udp: false), and anything else there is malformed. `parse_lease_name` and
//! `parse_lease_value` agree with the reference on their own too, and every
//! `Skip::Malformed` says why.
//!
//! Round trip: the lease encapd writes for a routed peer (`lease_value`)
//! reads back (`parse_lease_value`, and `lease_peer` under the same name) as
//! the same peer, and a udp lease without the kernel path is exactly
//! flanneld's (`PublicIP` and `PublicIPv6` only).
//!
//! Input: byte 0 = what this node expects (bit 0: the vxlan backend, else
//! udp; bits 1-2: its VNI, one of 1, 2, 0 and 16777215; bit 3: an IPv6
//! underlay; bit 4: the networks 0.0.0.0/0 and ::/0 instead of the fixture's
//! 100.96.0.0/16 and fd00:96::/32; bit 5: port 4789 instead of the backend's
//! default 8285 or 8472). Then the key name (what follows the subnets
//! prefix) up to the first `\n`, read as the etcd source reads keys, with
//! `String::from_utf8_lossy`; then the lease value, the bytes after that
//! `\n` (empty without one). The node always owns the fixture's
//! 100.96.1.0/24 and fd00:96:1::/64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::Value;

use crate::{OWN_V4, OWN_V6};
use encapd::control::flannel::{
    FlannelBackend, LeaseAttrs, LeaseBackend, LeaseExpect, Skip, lease_name, lease_peer, lease_value, parse_lease_name, parse_lease_value,
};
use encapd::route::{PeerSpec, Prefix, TableScope};

const VNIS: [u32; 4] = [1, 2, 0, (1 << 24) - 1];

/// An IPv4 / IPv6 prefix as the reference sees it: (address, length).
type V4 = (u32, u8);
type V6 = (u128, u8);

/// The fixture's IPv4 network, 100.96.0.0/16, and the node's 100.96.1.0/24.
const NET_V4: V4 = (0x6460_0000, 16);
const OWN_SUBNET_V4: V4 = (0x6460_0100, 24);

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
    backend: RefBackend,
    kernel_decap: bool,
}

/// What `lease_peer` should answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Route { subnet: V4, endpoint: SocketAddr, mac: Option<[u8; 6]>, kernel_decap: bool },
    Malformed,
    Backend { lease: String, ours: &'static str },
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
    let data = obj.get("BackendData").and_then(Value::as_object);
    let backend = match obj.get("BackendType") {
        None | Some(Value::Null) => RefBackend::Udp,
        Some(Value::String(t)) if t.is_empty() || t == "udp" => RefBackend::Udp,
        Some(Value::String(t)) if t == "vxlan" => {
            let data = data?;
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
            RefBackend::Vxlan { vni, mac }
        }
        Some(Value::String(t)) => RefBackend::Other(t.clone()),
        Some(_) => return None,
    };
    let kernel_decap = match data.and_then(|d| d.get("EncapdKernelDecap")) {
        None | Some(Value::Null) => matches!(backend, RefBackend::Vxlan { .. }),
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    Some(RefLease { ip, backend, kernel_decap })
}

/// Whether two IPv4 prefixes share an address.
fn overlap_v4((a, alen): V4, (b, blen): V4) -> bool {
    let mask = !host_bits_v4(alen.min(blen));
    a & mask == b & mask
}

/// The node's expectation, by the reference's own names.
struct Node {
    /// `Some(vni)` for vxlan.
    vxlan: Option<u32>,
    port: u16,
    underlay_ipv4: bool,
    wide: bool,
}

fn reference(name: &str, value: &[u8], node: &Node) -> Verdict {
    let Some((subnet, _)) = ref_name(name) else { return Verdict::Malformed };
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
    if !inside || overlap_v4(subnet, OWN_SUBNET_V4) || !node.underlay_ipv4 {
        return Verdict::Malformed;
    }
    Verdict::Route { subnet, endpoint: SocketAddr::new(IpAddr::V4(lease.ip), node.port), mac, kernel_decap: lease.kernel_decap }
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
    backend && got.public_ip == want.ip && got.kernel_decap == want.kernel_decap
}

fn verdict_of(got: &Result<PeerSpec, Skip>) -> Verdict {
    match got {
        Ok(p) => {
            let ip = match p.endpoint.ip() {
                IpAddr::V4(ip) => ip,
                IpAddr::V6(ip) => panic!("IPv6 endpoint {ip} from an IPv4 PublicIP"),
            };
            Verdict::Route {
                subnet: v4_pair(&p.subnet),
                endpoint: SocketAddr::new(IpAddr::V4(ip), p.endpoint.port()),
                mac: p.vtep_mac.map(|m| m.0),
                kernel_decap: p.kernel_decap,
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

/// The lease encapd writes for `peer` reads back as the same peer, and has
/// the documented shape.
fn round_trip(name: &str, peer: &PeerSpec, expect: LeaseExpect, scope: &TableScope) {
    let written = lease_value(peer.endpoint.ip(), expect.backend, peer.vtep_mac, peer.kernel_decap);
    let attrs = parse_lease_value(written.as_bytes()).unwrap_or_else(|e| panic!("our own lease {written} does not parse: {e}"));
    let IpAddr::V4(ip) = peer.endpoint.ip() else { unreachable!("checked against the reference") };
    let backend = match (expect.backend, peer.vtep_mac) {
        (FlannelBackend::Vxlan { vni }, Some(vtep_mac)) => LeaseBackend::Vxlan { vni, vtep_mac },
        (FlannelBackend::Udp, None) => LeaseBackend::Udp,
        (b, mac) => panic!("backend {b:?} with VTEP MAC {mac:?}"),
    };
    assert_eq!(attrs, LeaseAttrs { public_ip: ip, backend, kernel_decap: peer.kernel_decap }, "our own lease {written} reads back wrong");
    let by_ref = ref_value(written.as_bytes()).unwrap_or_else(|| panic!("the reference rejects our own lease {written}"));
    assert!(same_lease(&attrs, &by_ref), "the reference reads our own lease {written} as {by_ref:?}");
    assert_eq!(lease_peer(name, written.as_bytes(), expect, scope).as_ref(), Ok(peer), "our own lease {written} routes differently");

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
    };
    let expect = LeaseExpect {
        backend: match node.vxlan {
            Some(vni) => FlannelBackend::Vxlan { vni },
            None => FlannelBackend::Udp,
        },
        port: node.port,
    };
    let networks = if node.wide { ["0.0.0.0/0", "::/0"] } else { ["100.96.0.0/16", "fd00:96::/32"] };
    let scope = TableScope {
        own: vec![OWN_V4.parse().unwrap(), OWN_V6.parse().unwrap()],
        networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
        underlay_ipv4: node.underlay_ipv4,
    };

    // The parts on their own.
    let want_name = ref_name(name);
    match parse_lease_name(name) {
        Ok((v4, v6)) => {
            assert_eq!(Some((v4_pair(&v4), v6.as_ref().map(v6_pair))), want_name, "parse_lease_name({name:?})");
            assert_eq!(parse_lease_name(&lease_name(&v4)), Ok((v4, None)), "lease_name({v4})");
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
    let got = lease_peer(name, value, expect, &scope);
    if let Err(skip) = &got {
        check_skip(skip);
    }
    let want = reference(name, value, &node);
    assert_eq!(verdict_of(&got), want, "lease_peer({name:?}, {:?}) with {expect:?}: {got:?}", String::from_utf8_lossy(value));
    if let Ok(peer) = &got {
        assert!(peer.origin.contains(name), "origin {:?} does not name the lease {name:?}", peer.origin);
        round_trip(name, peer, expect, &scope);
    }
}
