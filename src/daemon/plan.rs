//! What the data path will run with, decided before anything is created:
//! the MTUs, the I/O engine (probed), the CPU of each worker. `encapd
//! check` prints the same plan without creating anything.

use crate::config::{Config, IoEngine};
use crate::sys;
use crate::sys::uring::{UringFeature, UringFeatures};

use super::DaemonError;

/// The decisions [`plan`] takes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub underlay_mtu: u32,
    pub tun_mtu: u32,
    pub engine: IoEngine,
    /// Why the configured engine was replaced, if it was.
    pub engine_note: Option<String>,
    /// The io_uring features the `uring` engine uses (what the kernel has,
    /// less `[dataplane] uring_disable`).
    pub uring: UringFeatures,
    pub cpus: Vec<Option<usize>>,
}

/// Resolves the underlay MTU, probes io_uring and assigns CPUs.
pub fn plan(config: &Config) -> Result<Plan, DaemonError> {
    let underlay_mtu = underlay_mtu(config)?;
    let tun_mtu = config.tun_mtu(underlay_mtu);
    check_tun_mtu(config, underlay_mtu, tun_mtu)?;
    let (engine, engine_note, uring) = match config.io {
        IoEngine::Uring => match sys::uring::probe() {
            Ok(kernel) => (IoEngine::Uring, None, kernel.without(&config.uring_disable)),
            Err(e) => {
                let note = format!("io_uring unavailable ({e}); using the mmsg engine instead");
                (IoEngine::Mmsg, Some(note), UringFeatures::ALL.without(&UringFeature::ALL))
            }
        },
        other => (other, None, UringFeatures::ALL.without(&UringFeature::ALL)),
    };
    // The wireguard backend runs on its own engine, which does `mmsg`'s I/O
    // (datapath::engine::wireguard); io_uring is not wired for it yet.
    let (engine, engine_note) = match (config.backend, engine) {
        (crate::config::Backend::WireGuard, IoEngine::Mmsg) => (IoEngine::Mmsg, engine_note),
        (crate::config::Backend::WireGuard, other) => {
            let note = format!(
                "the wireguard backend runs on the mmsg engine's batched I/O (epoll, recvmmsg with GRO, GSO sendmsg); io = {:?} applies to the udp and vxlan backends",
                other.name()
            );
            (IoEngine::Mmsg, Some(note))
        }
        (_, engine) => (engine, engine_note),
    };
    Ok(Plan { underlay_mtu, tun_mtu, engine, engine_note, uring, cpus: worker_cpus(config)? })
}

/// The TUN MTU must carry IPv4 (576) and, with an IPv6 subnet, IPv6
/// (1280, RFC 8200 §5). Checked again once etcd has resolved the subnets
/// ([`Plan::check_resolved`]): a dual-stack network there brings IPv6.
fn check_tun_mtu(config: &Config, underlay_mtu: u32, tun_mtu: u32) -> Result<(), DaemonError> {
    let min = if config.subnet6.is_some() { 1280 } else { 576 };
    if tun_mtu < min {
        return Err(DaemonError::Config(format!("underlay MTU {underlay_mtu} leaves a TUN MTU of {tun_mtu}, below the minimum {min}")));
    }
    Ok(())
}

impl Plan {
    /// What the plan decided still holds for `config` as etcd resolved it.
    pub fn check_resolved(&self, config: &Config) -> Result<(), DaemonError> {
        check_tun_mtu(config, self.underlay_mtu, self.tun_mtu)
    }
}

/// `[network] underlay_mtu`, else the MTU of the interface holding `public_ip`.
fn underlay_mtu(config: &Config) -> Result<u32, DaemonError> {
    if let Some(m) = config.underlay_mtu {
        return Ok(m);
    }
    let ifname = sys::netdev::interface_with_address(config.public_ip)
        .map_err(|source| DaemonError::Io { what: "listing interfaces".into(), source })?
        .ok_or_else(|| {
            DaemonError::Config(format!(
                "{}: [node] public_ip = {}: no interface in this network namespace has that address (set [network] underlay_mtu to skip this lookup)",
                config.path.display(),
                config.public_ip
            ))
        })?;
    sys::netdev::interface_mtu(&ifname).map_err(|source| DaemonError::Io { what: format!("reading the MTU of {ifname}"), source })
}

/// `[dataplane] cpus` (each one a CPU this process may run on; `[]`: no
/// pinning), else worker i on online core i mod cores.
fn worker_cpus(config: &Config) -> Result<Vec<Option<usize>>, DaemonError> {
    let online = sys::affinity::online_cpus();
    // (An empty `online`: the kernel would not say; pinning then fails
    // softly, per worker, with a warning.)
    if let Some(list) = &config.cpus
        && !online.is_empty()
        && let Some(cpu) = list.iter().find(|cpu| !online.contains(cpu))
    {
        return Err(DaemonError::Config(format!(
            "{}: [dataplane] cpus = {list:?}: CPU {cpu} is not one this process may run on (online and allowed: {online:?})",
            config.path.display()
        )));
    }
    Ok((0..config.workers)
        .map(|i| match &config.cpus {
            Some(list) if list.is_empty() => None,
            Some(list) => Some(list[i]),
            None if online.is_empty() => None,
            None => Some(online[i % online.len()]),
        })
        .collect())
}
