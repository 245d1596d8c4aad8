//! The fuzz targets ([`targets`]), the fixture they share, the independent
//! oracle they judge by ([`oracle`]: etherparse, an implementation that
//! shares no code with encapd) and the input shaping that gets inputs past
//! length and checksum checks ([`shape`]).

pub mod oracle;
pub mod shape;
pub mod targets;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use encapd::datapath::packet::NodeScope;
use encapd::route::{PeerSpec, Prefix, Route, SubnetTable, TableScope};

pub const OWN_V4: &str = "100.96.1.0/24";
pub const OWN_V6: &str = "fd00:96:1::/64";
pub const PEER_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const PEER_C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const PEER_PORT: u16 = 8285;

/// The peers of the fixed table: (subnet, underlay IP).
pub fn peer_list() -> Vec<(Prefix, IpAddr)> {
    vec![
        ("100.96.2.0/24".parse().unwrap(), IpAddr::V4(PEER_B)),
        ("fd00:96:2::/64".parse().unwrap(), IpAddr::V4(PEER_B)),
        ("100.96.3.0/24".parse().unwrap(), IpAddr::V4(PEER_C)),
    ]
}

/// The table a node owning 100.96.1.0/24 and fd00:96:1::/64 builds for peers
/// B (100.96.2.0/24, fd00:96:2::/64) and C (100.96.3.0/24).
pub fn table() -> SubnetTable {
    let scope = TableScope {
        own: vec![OWN_V4.parse().unwrap(), OWN_V6.parse().unwrap()],
        networks: vec!["100.96.0.0/16".parse().unwrap(), "fd00:96::/32".parse().unwrap()],
        underlay_ipv4: true,
    };
    let peers: Vec<PeerSpec> = peer_list()
        .into_iter()
        .map(|(subnet, ip)| PeerSpec {
            wireguard: None,
            vtep_mac: None,
            kernel_decap: false,
            subnet,
            endpoint: SocketAddr::new(ip, PEER_PORT),
            origin: subnet.to_string(),
        })
        .collect();
    SubnetTable::build(1, &scope, &peers).expect("fixture table is valid")
}

pub fn node() -> NodeScope {
    NodeScope { own_v4: OWN_V4.parse().unwrap(), own_v6: Some(OWN_V6.parse().unwrap()), max_inner: 1472 }
}

/// Reference longest-prefix match over the fixed peers: a linear scan.
pub fn naive_lookup(dst: IpAddr) -> Option<Route> {
    peer_list().into_iter().filter(|(p, _)| p.contains(dst)).max_by_key(|(p, _)| p.len()).map(|(subnet, ip)| Route {
        vtep_mac: None,
        kernel_decap: false,
        public_key: None,
        subnet,
        endpoint: SocketAddr::new(ip, PEER_PORT),
    })
}

/// True when `dst` lies in one of the node's own subnets (reference check).
pub fn in_own_subnets(dst: IpAddr) -> bool {
    OWN_V4.parse::<Prefix>().unwrap().contains(dst) || OWN_V6.parse::<Prefix>().unwrap().contains(dst)
}

/// Picks an underlay sender address from one selector byte and the bytes
/// after it: mostly the known peers (so inputs get past the sender check),
/// sometimes an unknown or arbitrary address. Returns the sender and how many
/// bytes were used.
pub fn pick_sender(data: &[u8]) -> (IpAddr, usize) {
    let Some(&sel) = data.first() else { return (IpAddr::V4(PEER_B), 0) };
    match sel % 8 {
        0..=3 => (IpAddr::V4(PEER_B), 1),
        4 | 5 => (IpAddr::V4(PEER_C), 1),
        6 if data.len() >= 5 => (IpAddr::V4(Ipv4Addr::new(data[1], data[2], data[3], data[4])), 5),
        7 if data.len() >= 17 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&data[1..17]);
            (IpAddr::V6(Ipv6Addr::from(o)), 17)
        }
        _ => (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 66)), 1),
    }
}

/// Splits `data` into length-prefixed records: each is a big-endian u16
/// length and that many bytes (the last one takes what is left).
pub struct Records<'a>(pub &'a [u8]);

impl<'a> Records<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}
