//! The kernel objects the workers forward between, created while the
//! process still has its privileges: one UDP socket per worker (one
//! reuseport group, steered by inner flow) and one multiqueue TUN device
//! with one queue per worker. Everything is an `OwnedFd`, so a failure
//! half-way closes what was made (and a TUN without queues disappears).
//! A successor adopts the same objects from its predecessor instead
//! ([`Dataplane::adopt`]); the TUN then never loses its last queue.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use super::takeover::protocol::DataplaneFacts;
use super::{DaemonError, Plan};
use crate::config::{Config, IoEngine, SourcePorts};
use crate::sys;

/// Source ports per worker that a node spreads its flows over
/// (`source_ports = "flow"`). With a worker count that divides it (1, 2,
/// 4, 8), the flows of one port are the flows of one receiving worker.
const SOURCE_PORTS: usize = 8;

/// One worker's fds as a predecessor handed them over.
pub struct InheritedWorker {
    pub tun: OwnedFd,
    pub udp: OwnedFd,
    pub senders: Vec<OwnedFd>,
}

/// The fds the workers take over, and what the kernel granted.
pub struct Dataplane {
    pub sockets: Vec<OwnedFd>,
    /// Per worker, the sockets it sends from (one per source port, picked
    /// by flow; empty: it sends from its receiving socket).
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

    /// Takes over the fds a running daemon handed over: per worker its TUN
    /// queue, UDP socket and sender sockets, with what the kernel granted
    /// them (`facts`). Each fd is checked to be what it claims: a queue of
    /// the configured TUN with the handed-over offloads, a UDP socket bound
    /// to `public_ip:port`, a UDP socket bound to `public_ip`.
    pub fn adopt(config: &Config, facts: DataplaneFacts, workers: Vec<InheritedWorker>) -> Result<Dataplane, String> {
        let mut dp = Dataplane {
            sockets: Vec::new(),
            senders: Vec::new(),
            tun_queues: Vec::new(),
            gso: facts.gso,
            gro: facts.gro,
            vnet_hdr: facts.vnet_hdr,
            uso: facts.uso,
        };
        let listen = SocketAddr::new(config.public_ip, config.port);
        for (i, w) in workers.into_iter().enumerate() {
            let queue = sys::tun::queue_info(w.tun.as_fd()).map_err(|e| format!("worker {i}: TUN queue: {e}"))?;
            if queue.name != config.tun || !queue.multi_queue || queue.vnet_hdr != facts.vnet_hdr {
                return Err(format!(
                    "worker {i}: TUN queue of {:?} (multiqueue {}, vnet_hdr {}), expected {:?} with vnet_hdr {}",
                    queue.name, queue.multi_queue, queue.vnet_hdr, config.tun, facts.vnet_hdr
                ));
            }
            let bound = sys::udp::bound_udp_addr(w.udp.as_fd()).ok().flatten();
            if bound != Some(listen) {
                return Err(format!(
                    "worker {i}: UDP socket bound to {}, expected {listen}",
                    bound.map_or("nothing (or not UDP)".into(), |a| a.to_string())
                ));
            }
            for (k, s) in w.senders.iter().enumerate() {
                let bound = sys::udp::bound_udp_addr(s.as_fd()).ok().flatten();
                if bound.map(|a| a.ip()) != Some(config.public_ip) {
                    return Err(format!("worker {i}: sender socket {k} bound to {bound:?}, expected {}", config.public_ip));
                }
            }
            // A predecessor that sent from its listening socket (`source_ports
            // = "listen"`, or a version before "flow" for the udp format)
            // hands over none: a successor that sends by flow binds its own.
            // One that sent by flow hands over its senders; a successor told to
            // send from the listening port closes them.
            let senders = match (w.senders.is_empty(), config.source_ports) {
                (true, SourcePorts::Flow) => worker_senders(config).map_err(|e| format!("worker {i}: {e}"))?,
                (false, SourcePorts::Listen) => Vec::new(),
                _ => w.senders,
            };
            dp.tun_queues.push(w.tun);
            dp.sockets.push(w.udp);
            dp.senders.push(senders);
        }
        if dp.tun_queues.len() != config.workers {
            return Err(format!("{} workers' fds for {} workers", dp.tun_queues.len(), config.workers));
        }
        Ok(dp)
    }

    /// A second set of fds for the same kernel objects (`F_DUPFD_CLOEXEC`):
    /// the workers take one, the control socket keeps the other to hand
    /// over.
    pub fn duplicate(&self) -> std::io::Result<Dataplane> {
        let dup = |fds: &[OwnedFd]| fds.iter().map(OwnedFd::try_clone).collect::<std::io::Result<Vec<_>>>();
        Ok(Dataplane {
            sockets: dup(&self.sockets)?,
            senders: self.senders.iter().map(|s| dup(s)).collect::<std::io::Result<_>>()?,
            tun_queues: dup(&self.tun_queues)?,
            gso: self.gso,
            gro: self.gro,
            vnet_hdr: self.vnet_hdr,
            uso: self.uso,
        })
    }

    /// What the kernel granted, as the handover protocol carries it.
    pub fn facts(&self) -> DataplaneFacts {
        DataplaneFacts { gso: self.gso, gro: self.gro, vnet_hdr: self.vnet_hdr, uso: self.uso }
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
    // Not with WireGuard: its inner packets are ciphertext, and hashing
    // ciphertext would scatter one flow over every worker (reordering it);
    // the kernel's hash of the outer addresses keeps a peer on one socket.
    if sockets.len() > 1
        && config.backend != crate::config::Backend::WireGuard
        && let Err(e) = sys::steering::steer_by_inner_flow(sockets[0].as_fd(), sockets.len() as u32, config.backend.header_len())
    {
        log::warn!("cannot steer flows across the UDP sockets ({e}); the kernel's hash of the outer addresses picks the worker");
    }
    Ok((sockets, gro && all_gro))
}

/// Senders by flow (`source_ports = "flow"`, both clear-text formats):
/// RFC 7348 §5 asks VXLAN for a source port derived from the inner flow,
/// so that underlay ECMP and the receiver's RSS spread flows, and the
/// receiver's GRO merges only datagrams of one port (so of one receiving
/// worker); a socket bound to each port, picked by flow hash, does that
/// without raw sockets. `"listen"` (and the wireguard backend): every
/// datagram from the listening socket, as flanneld sends.
fn bind_senders(config: &Config) -> Result<Vec<Vec<OwnedFd>>, DaemonError> {
    (0..config.workers).map(|_| worker_senders(config)).collect()
}

fn worker_senders(config: &Config) -> Result<Vec<OwnedFd>, DaemonError> {
    if config.source_ports != SourcePorts::Flow {
        return Ok(Vec::new());
    }
    (0..SOURCE_PORTS)
        .map(|_| sys::udp::bind_sender(config.public_ip, config.socket_buffer))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| DaemonError::Io { what: format!("binding source ports on {}", config.public_ip), source })
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
