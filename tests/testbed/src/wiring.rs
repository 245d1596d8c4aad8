//! The two-node wiring every end-to-end topology starts from, in namespaces
//! of its own (see [`super::netns`]):
//!
//! ```text
//! ctrA ── vc nodeA ul ══ ul nodeB vc ── ctrB            (direct underlay)
//! ctrA ── vc nodeA ul ══ ula [md] ulb ══ ul nodeB vc ── ctrB   (with a middle)
//! ```
//!
//! The nodes hold their underlay addresses (198.18.0.1/24, 198.18.0.2/24 on
//! `ul`) and forward; the containers' links are up but unaddressed until
//! [`Wiring::attach_container`] gives a container and its node's side of
//! the veth addresses in the node's subnet (which the etcd tests learn only
//! after encapd has claimed one). Every veth is created directly inside its
//! namespaces; everything goes away with the namespaces on drop.

use crate::cmd::must;
use crate::netns::{Namespaces, ip_batch};
use crate::underlay::Underlay;

/// The overlay/underlay plan of the file-source topology.
pub const CTR_A: &str = "100.96.1.2";
pub const CTR_B: &str = "100.96.2.3";
pub const CTR_A6: &str = "fd00:96:1::2";
pub const CTR_B6: &str = "fd00:96:2::3";
pub const NODE_A_UNDERLAY: &str = "198.18.0.1";
pub const NODE_B_UNDERLAY: &str = "198.18.0.2";
/// encapd's TUN device and UDP port in every topology.
pub const TUN: &str = "encap0";
pub const PORT: u16 = 8285;
/// Where nodeA's encapd receives tunnel datagrams (for crafted ones).
pub const ENCAPD_A: (&str, u16) = (NODE_A_UNDERLAY, PORT);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    pub fn index(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
        }
    }

    pub fn other(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }

    /// "a" or "b": the node's subdirectory in a topology's temp dir.
    pub fn sub(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }

    /// The node's underlay address.
    pub fn underlay(self) -> &'static str {
        match self {
            Node::A => NODE_A_UNDERLAY,
            Node::B => NODE_B_UNDERLAY,
        }
    }
}

/// The namespaces and links of two nodes and their containers.
pub struct Wiring {
    pub ctr_a: String,
    pub node_a: String,
    pub node_b: String,
    pub ctr_b: String,
    /// The middle namespace, when asked for (its veths are down until
    /// [`super::middle::wire_middle`] sets it up).
    pub mid: Option<String>,
    namespaces: Namespaces,
}

impl Wiring {
    /// Builds the namespaces and links. `ipv6`: IPv6 on (duplicate address
    /// detection off, the nodes forward IPv6); off: IPv6 disabled
    /// everywhere, so the kernels stay quiet on it. `middle`: a middle
    /// namespace between the nodes' underlay veths.
    pub fn build(ipv6: bool, middle: bool) -> Wiring {
        let mut namespaces = Namespaces::new();
        // New links copy `default`, so these are set before any link exists.
        let (ctr_sysctls, node_sysctls): (&[&str], &[&str]) = if ipv6 {
            (
                &["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"],
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1",
                    "net.ipv6.conf.default.forwarding=1",
                ],
            )
        } else {
            (
                &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=1"],
            )
        };
        let ctr_a = namespaces.add("cA", ctr_sysctls);
        let node_a = namespaces.add("nA", node_sysctls);
        let node_b = namespaces.add("nB", node_sysctls);
        let ctr_b = namespaces.add("cB", ctr_sysctls);
        // A pure layer-2 box: its own stack stays silent.
        let mid = middle.then(|| namespaces.add("md", &["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]));
        let w = Wiring { ctr_a, node_a, node_b, ctr_b, mid, namespaces };
        w.link();
        w
    }

    /// `et<pid>_<n>`: unique to this wiring (a tag for its temp dir).
    pub fn prefix(&self) -> &str {
        self.namespaces.prefix()
    }

    pub fn node_ns(&self, node: Node) -> &str {
        match node {
            Node::A => &self.node_a,
            Node::B => &self.node_b,
        }
    }

    pub fn ctr_ns(&self, node: Node) -> &str {
        match node {
            Node::A => &self.ctr_a,
            Node::B => &self.ctr_b,
        }
    }

    fn link(&self) {
        let (ca, na, nb, cb) = (&self.ctr_a, &self.node_a, &self.node_b, &self.ctr_b);
        must("ip", &["link", "add", "eth0", "netns", ca, "type", "veth", "peer", "name", "vc", "netns", na]);
        match &self.mid {
            None => {
                must("ip", &["link", "add", "ul", "netns", na, "type", "veth", "peer", "name", "ul", "netns", nb]);
            }
            Some(md) => {
                must("ip", &["link", "add", "name", "ul", "netns", na, "type", "veth", "peer", "name", "ula", "netns", md]);
                must("ip", &["link", "add", "name", "ulb", "netns", md, "type", "veth", "peer", "name", "ul", "netns", nb]);
            }
        }
        must("ip", &["link", "add", "vc", "netns", nb, "type", "veth", "peer", "name", "eth0", "netns", cb]);
        for node in [Node::A, Node::B] {
            let underlay = format!("addr add {}/24 dev ul", node.underlay());
            ip_batch(self.node_ns(node), &["link set lo up", "link set vc up", "link set ul up", &underlay]);
            ip_batch(self.ctr_ns(node), &["link set lo up", "link set eth0 up"]);
        }
    }

    /// Gives every underlay link (the nodes' `ul`, and the middle's two
    /// ends when there is one) the profile's behaviour.
    pub fn apply_underlay(&self, profile: Underlay) {
        for node in [Node::A, Node::B] {
            profile.apply(self.node_ns(node), "ul");
        }
        if let Some(md) = &self.mid {
            profile.apply(md, "ula");
            profile.apply(md, "ulb");
        }
    }

    /// Addresses the node's container link: `gw` (e.g. "100.96.1.1/24") on
    /// the node's side, `ctr` (e.g. "100.96.1.2/24") in the container with
    /// a default route via `gw`; likewise `v6` = (gw6, ctr6) when given.
    pub fn attach_container(&self, node: Node, gw: &str, ctr: &str, v6: Option<(&str, &str)>) {
        let bare = |cidr: &str| cidr.split('/').next().unwrap_or(cidr).to_owned();
        let mut on_node = vec![format!("addr add {gw} dev vc")];
        let mut in_ctr = vec![format!("addr add {ctr} dev eth0"), format!("route add default via {}", bare(gw))];
        if let Some((gw6, ctr6)) = v6 {
            on_node.push(format!("addr add {gw6} dev vc nodad"));
            in_ctr.push(format!("addr add {ctr6} dev eth0 nodad"));
            in_ctr.push(format!("route add ::/0 via {}", bare(gw6)));
        }
        ip_batch(self.node_ns(node), &on_node.iter().map(String::as_str).collect::<Vec<_>>());
        ip_batch(self.ctr_ns(node), &in_ctr.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
