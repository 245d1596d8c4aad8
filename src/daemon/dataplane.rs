//! The kernel objects the workers forward between, created while the
//! process still has its privileges: one UDP socket per worker (one
//! reuseport group, steered by inner flow) and one multiqueue TUN device
//! with one queue per worker. Everything is an `OwnedFd`, so a failure
//! half-way closes what was made (and a TUN without queues disappears).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use super::{DaemonError, Plan};
use crate::config::{Backend, Config, IoEngine};
use crate::sys;

/// Source ports per worker that a VXLAN node spreads its flows over.
const VXLAN_SOURCE_PORTS: usize = 8;

/// The fds the workers take over, and what the kernel granted.
pub struct Dataplane {
    pub sockets: Vec<OwnedFd>,
    /// Per worker, the sockets it sends from (VXLAN: one per source port;
    /// empty: it sends from its receiving socket).
    pub senders: Vec<Vec<OwnedFd>>,
    pub tun_queues: Vec<OwnedFd>,
    /// The kernel accepts UDP GSO sends.
    pub gso: bool,
    /// Every socket has UDP GRO on.
    pub gro: bool,
    /// TUN reads and writes carry a virtio-net header (TSO4/6 and CSUM on).
    pub vnet_hdr: bool,
    /// USO4/6 on as well.
    pub uso: bool,
}

impl Dataplane {
    pub fn open(config: &Config, plan: &Plan) -> Result<Dataplane, DaemonError> {
        let batched = plan.engine != IoEngine::Classic;
        let (sockets, gro) = bind_sockets(config, batched)?;
        let gso = batched && sys::udp::supports_gso(sockets[0].as_fd());
        let senders = bind_senders(config)?;
        let queues = create_tun(config, plan, batched)?;
        Ok(Dataplane { sockets, senders, tun_queues: queues.fds, gso, gro, vnet_hdr: queues.vnet_hdr, uso: queues.uso })
    }

    /// The TUN offloads in use, as the log and the metrics name them.
    pub fn tun_offloads(&self) -> &'static str {
        match (self.vnet_hdr, self.uso) {
            (false, _) => "off",
            (true, false) => "csum+tso4+tso6",
            (true, true) => "csum+tso4+tso6+uso4+uso6",
        }
    }
}

/// One socket per worker on `public_ip:port`, all in one reuseport group.
fn bind_sockets(config: &Config, gro: bool) -> Result<(Vec<OwnedFd>, bool), DaemonError> {
    let addr = SocketAddr::new(config.public_ip, config.port);
    let options = sys::udp::UdpOptions { buffer_bytes: config.socket_buffer, gro };
    let mut sockets = Vec::with_capacity(config.workers);
    let mut all_gro = true;
    for _ in 0..config.workers {
        let (fd, gro) = sys::udp::bind(addr, options).map_err(|source| DaemonError::Io { what: format!("binding UDP {addr}"), source })?;
        all_gro &= gro;
        sockets.push(fd);
    }
    // Spread a peer's flows over the workers by their inner addresses and
    // ports; without this, one outer 4-tuple puts them all on one socket.
    if sockets.len() > 1
        && let Err(e) = sys::steering::steer_by_inner_flow(sockets[0].as_fd(), sockets.len() as u32, config.backend.header_len())
    {
        log::warn!("cannot steer flows across the UDP sockets ({e}); the kernel's hash of the outer addresses picks the worker");
    }
    Ok((sockets, gro && all_gro))
}

/// VXLAN senders: RFC 7348 §5 asks for a source port derived from the inner
/// flow, so that underlay ECMP and the receiver's RSS spread flows; a
/// socket bound to each port, picked by flow hash, does that without raw
/// sockets. flannel's udp format sends from its listening port, as flanneld.
fn bind_senders(config: &Config) -> Result<Vec<Vec<OwnedFd>>, DaemonError> {
    if !matches!(config.backend, Backend::Vxlan(_)) {
        return Ok((0..config.workers).map(|_| Vec::new()).collect());
    }
    (0..config.workers)
        .map(|_| {
            (0..VXLAN_SOURCE_PORTS)
                .map(|_| sys::udp::bind_sender(config.public_ip, config.socket_buffer))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|source| DaemonError::Io { what: format!("binding VXLAN source ports on {}", config.public_ip), source })
        })
        .collect()
}

fn create_tun(config: &Config, plan: &Plan, offload: bool) -> Result<sys::tun::TunQueues, DaemonError> {
    let spec = sys::tun::TunSpec {
        name: config.tun.clone(),
        queues: config.workers,
        mtu: plan.tun_mtu.min(u32::from(u16::MAX)) as u16,
        ipv4: (ipv4_of(config.subnet.network()), config.cidr.len()),
        ipv6: config.subnet6.zip(config.cidr6).map(|(s, n)| (ipv6_of(s.network()), n.len())),
        txqueuelen: 10_000,
        // The classic engine is the per-packet baseline: never offloads.
        offload: config.offload && offload,
    };
    let queues = sys::tun::create_multiqueue(&spec)
        .map_err(|source| DaemonError::Io { what: format!("creating TUN device {}", config.tun), source })?;
    if let Some(why) = &queues.refused {
        log::warn!("{why}; running without TUN offloads");
    }
    Ok(queues)
}

/// The address of a prefix the config validated as IPv4 (v4-mapped otherwise).
fn ipv4_of(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// The address of a prefix the config validated as IPv6.
fn ipv6_of(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}
