//! The two kernel data paths encapd is measured against, on the two-node
//! wiring ([`crate::wiring`]): plain routing between the node subnets
//! over the underlay (the upper bound), and kernel VXLAN set up exactly
//! as flannel's vxlan backend sets up `flannel.1`.
//!
//! flannel.1, as flanneld installs it (flannel-io/flannel
//! `pkg/backend/vxlan`): a VXLAN device with VNI 1, destination port 8472,
//! `nolearning`, the underlay address as local address, MTU underlay − 50,
//! the node subnet's network address (`.0/32`, and `::/128` for IPv6) on
//! it; for every peer VTEP a permanent neighbour entry mapping the peer
//! subnet's `.0` to the peer's VTEP MAC, an FDB entry putting that MAC
//! behind the peer's underlay address, and a route to the peer subnet
//! `via <peer .0> onlink`. Nothing here learns or floods: a wrong MAC is
//! silently dropped by the receiving kernel, which is why every MAC is
//! set explicitly ([`vtep_mac`]).
//!
//! Everything is configured inside the node namespaces; deleting the
//! device removes its neighbours, FDB entries and routes with it.

use std::time::Duration;

use crate::cmd::run;
use crate::netns::{ip_batch, ns_exec};
use crate::wiring::{Node, Wiring};

/// The device name flanneld gives its VTEP.
pub const VTEP: &str = "flannel.1";
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// The underlay MTU of the two-node wiring.
pub const UNDERLAY_MTU: u32 = 1500;

/// The node's container subnets (IPv4, IPv6).
pub fn subnets(node: Node) -> (&'static str, &'static str) {
    match node {
        Node::A => ("100.96.1.0/24", "fd00:96:1::/64"),
        Node::B => ("100.96.2.0/24", "fd00:96:2::/64"),
    }
}

/// The node's VTEP MAC: the same for its kernel VTEP and for encapd's
/// vxlan backend (`vtep_mac`), so that a kernel VTEP's FDB entries hold
/// for an encapd in that node's place.
pub fn vtep_mac(node: Node) -> &'static str {
    match node {
        Node::A => "02:00:c6:12:00:01",
        Node::B => "02:00:c6:12:00:02",
    }
}

fn network_address(prefix: &str) -> &str {
    prefix.split('/').next().unwrap_or(prefix)
}

/// Plain routes between the node subnets via the underlay, IPv4 and IPv6
/// (an IPv4 next hop for IPv6, RFC 5549 style, where the kernel takes
/// one; else the peer's link-local address).
pub fn route(w: &Wiring) {
    for node in [Node::A, Node::B] {
        let peer = node.other();
        let (subnet, subnet6) = subnets(peer);
        let ns = w.node_ns(node);
        ip_batch(ns, &[&format!("route add {subnet} via {} dev ul", peer.underlay())]);
        let v4_nexthop = run("ip", &["-n", ns, "-6", "route", "add", subnet6, "via", "inet", peer.underlay(), "dev", "ul"]);
        if !v4_nexthop.ok() {
            let ll = link_local(w.node_ns(peer), "ul").unwrap_or_else(|| panic!("no IPv6 link-local address on ul in {}", w.node_ns(peer)));
            ip_batch(ns, &[&format!("route add {subnet6} via {ll} dev ul")]);
        }
    }
}

/// Removes what [`route`] added (what is absent already is fine).
pub fn unroute(w: &Wiring) {
    for node in [Node::A, Node::B] {
        let (subnet, subnet6) = subnets(node.other());
        let ns = w.node_ns(node);
        let _ = run("ip", &["-n", ns, "route", "del", subnet]);
        let _ = run("ip", &["-n", ns, "-6", "route", "del", subnet6]);
    }
}

fn link_local(ns: &str, dev: &str) -> Option<String> {
    let o = run("ip", &["-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link"]);
    o.stdout.split_whitespace().skip_while(|w| *w != "inet6").nth(1).map(|a| a.split('/').next().unwrap_or(a).to_owned())
}

/// flannel.1 on `node`, talking to the peer node's VTEP (a kernel VTEP or
/// an encapd with the same MAC): the device, its addresses, and the
/// neighbour, FDB entry and route for the peer.
pub fn vtep_up(w: &Wiring, node: Node) {
    let ns = w.node_ns(node);
    let (subnet, subnet6) = subnets(node);
    let peer = node.other();
    let (peer_subnet, peer_subnet6) = subnets(peer);
    let (gw, gw6) = (network_address(peer_subnet), network_address(peer_subnet6));
    let mac = vtep_mac(peer);
    ip_batch(
        ns,
        &[
            &format!(
                "link add {VTEP} address {} type vxlan id {VNI} local {} dev ul dstport {VXLAN_PORT} nolearning",
                vtep_mac(node),
                node.underlay()
            ),
            &format!("link set {VTEP} mtu {}", UNDERLAY_MTU - 50),
            &format!("addr add {}/32 dev {VTEP}", network_address(subnet)),
            &format!("addr add {}/128 dev {VTEP} nodad", network_address(subnet6)),
            &format!("link set {VTEP} up"),
            &format!("neigh replace {gw} lladdr {mac} dev {VTEP} nud permanent"),
            &format!("neigh replace {gw6} lladdr {mac} dev {VTEP} nud permanent"),
            &format!("route add {peer_subnet} via {gw} dev {VTEP} onlink"),
            &format!("route add {peer_subnet6} via {gw6} dev {VTEP} onlink"),
        ],
    );
    // The slash form: the device name holds a dot, sysctl's separator.
    let o = ns_exec(ns, &["sysctl", "-q", "-w", &format!("net/ipv4/conf/{VTEP}/rp_filter=0")], Duration::from_secs(10));
    assert!(o.ok(), "sysctl in {ns}: {}", o.text());
    let fdb = run("bridge", &["-n", ns, "fdb", "append", mac, "dev", VTEP, "dst", peer.underlay(), "self", "permanent"]);
    assert!(fdb.ok(), "bridge fdb append in {ns}: {}", fdb.text());
}

/// Deletes `node`'s flannel.1 (with its neighbours, FDB entries, routes);
/// absent already is fine.
pub fn vtep_down(w: &Wiring, node: Node) {
    let _ = run("ip", &["-n", w.node_ns(node), "link", "del", VTEP]);
}

/// `ip -s link show dev flannel.1` on `node` (its packet and drop counts).
pub fn vtep_stats(w: &Wiring, node: Node) -> String {
    run("ip", &["-n", w.node_ns(node), "-s", "link", "show", "dev", VTEP]).text()
}
