//! The daemon's lifecycle: set up the TUN, sockets and table, start the
//! control thread and the workers, handle signals, and stop cleanly:
//! SIGINT/SIGTERM drain and stop (the TUN disappears with its last queue),
//! SIGHUP reloads the peers file, SIGUSR1 prints the counters.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::config::{Config, IoEngine, encap_overhead};
use crate::control::{self, Command};
use crate::datapath::packet::NodeScope;
use crate::datapath::worker::{self, Lifecycle, WorkerContext};
use crate::stats::exposition::{MetricsSource, StaticInfo};
use crate::stats::latency::LatencyHub;
use crate::stats::server::MetricsServer;
use crate::stats::{self, WorkerCounters};
use crate::sys;

/// Why the daemon could not run; `exit_code` separates bad configuration (2)
/// from failures of the host (1).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("worker {0} failed; stopping")]
    WorkerFailed(usize),
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => 2,
            _ => 1,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// What the data path will run with, decided before anything is created.
#[derive(Debug, Clone)]
pub struct Plan {
    pub underlay_mtu: u32,
    pub tun_mtu: u32,
    pub engine: IoEngine,
    /// Why the configured engine was replaced, if it was.
    pub engine_note: Option<String>,
    pub cpus: Vec<Option<usize>>,
}

/// Resolves the underlay MTU, probes io_uring and assigns CPUs.
pub fn plan(config: &Config) -> Result<Plan, DaemonError> {
    let underlay_mtu = match config.underlay_mtu {
        Some(m) => m,
        None => {
            let ifname = sys::netdev::interface_with_address(config.public_ip)
                .map_err(io_err("listing interfaces"))?
                .ok_or_else(|| {
                    DaemonError::Config(format!(
                        "{}: [node] public_ip = {}: no interface in this network namespace has that address (set [network] underlay_mtu to skip this lookup)",
                        config.path.display(),
                        config.public_ip
                    ))
                })?;
            sys::netdev::interface_mtu(&ifname).map_err(io_err(format!("reading the MTU of {ifname}")))?
        }
    };
    let overhead = encap_overhead(config.public_ip.is_ipv4());
    let tun_mtu = underlay_mtu.saturating_sub(overhead);
    let min = if config.subnet6.is_some() { 1280 } else { 576 };
    if tun_mtu < min {
        return Err(DaemonError::Config(format!("underlay MTU {underlay_mtu} leaves a TUN MTU of {tun_mtu}, below the minimum {min}")));
    }
    let (engine, engine_note) = match config.io {
        IoEngine::Uring => match sys::uring::probe() {
            Ok(()) => (IoEngine::Uring, None),
            Err(e) => (IoEngine::Mmsg, Some(format!("io_uring unavailable ({e}); using the mmsg engine instead"))),
        },
        other => (other, None),
    };
    let online = sys::affinity::online_cpus();
    let cpus = (0..config.workers)
        .map(|i| match &config.cpus {
            Some(list) => Some(list[i]),
            None if online.is_empty() => None,
            None => Some(online[i % online.len()]),
        })
        .collect();
    Ok(Plan { underlay_mtu, tun_mtu, engine, engine_note, cpus })
}

/// Runs the daemon in the foreground until SIGINT/SIGTERM.
pub fn run(mut config: Config) -> Result<(), DaemonError> {
    // With etcd: claim this node's subnet (and learn the network) first;
    // everything below is built for the subnet etcd granted.
    let etcd = match config.etcd() {
        Some(_) => Some(control::etcd::bootstrap(&mut config).map_err(|e| match e {
            control::etcd::BootstrapError::Config(m) => DaemonError::Config(m),
            control::etcd::BootstrapError::Unavailable(m) => DaemonError::Io { what: "etcd".into(), source: std::io::Error::other(m) },
        })?),
        None => None,
    };
    let control::InitialTable { table, peers: file_peers, file_text } = match &etcd {
        Some(boot) => control::InitialTable {
            table: crate::route::SubnetTable::build(1, &config.table_scope(), &boot.peers)
                .map_err(|errs| DaemonError::Config(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?,
            peers: Vec::new(),
            file_text: None,
        },
        None => control::initial_table(&config).map_err(DaemonError::Config)?,
    };
    let plan = plan(&config)?;
    if let Some(src) = config.etcd() {
        control::etcd::write_subnet_env(&config, plan.tun_mtu).map_err(io_err(format!("writing {}", src.subnet_env.display())))?;
    }
    let identity = match &config.user {
        Some(user) => Some(
            sys::privileges::resolve(user, config.group.as_deref())
                .map_err(|e| DaemonError::Config(format!("{}: [process] user = {user:?}: {e}", config.path.display())))?,
        ),
        None => None,
    };
    if let Some(note) = &plan.engine_note {
        log::warn!("{note}");
    }

    let bind_addr = SocketAddr::new(config.public_ip, config.port);
    let want_gro = plan.engine != IoEngine::Classic;
    let mut sockets = Vec::with_capacity(config.workers);
    for _ in 0..config.workers {
        let (fd, gro) = sys::udp::bind(bind_addr, sys::udp::UdpOptions { buffer_bytes: config.socket_buffer, gro: want_gro })
            .map_err(io_err(format!("binding UDP {bind_addr}")))?;
        sockets.push((fd, gro));
    }
    // Spread a peer's flows over the workers by their inner addresses and
    // ports; without this, one outer 4-tuple puts them all on one socket.
    if sockets.len() > 1
        && let Err(e) = sys::steering::steer_by_inner_flow(sockets[0].0.as_fd(), sockets.len() as u32)
    {
        log::warn!("cannot steer flows across the UDP sockets ({e}); the kernel's hash of the outer addresses picks the worker");
    }
    let gso = plan.engine != IoEngine::Classic && sys::udp::supports_gso(sockets[0].0.as_fd());
    let gro = sockets.iter().all(|s| s.1);

    let tun_spec = sys::tun::TunSpec {
        name: config.tun.clone(),
        queues: config.workers,
        mtu: plan.tun_mtu as u16,
        ipv4: (ipv4_of(config.subnet.network()), config.cidr.len()),
        ipv6: config.subnet6.zip(config.cidr6).map(|(s, n)| (ipv6_of(s.network()), n.len())),
        txqueuelen: 10_000,
        offload: config.offload && plan.engine != IoEngine::Classic,
    };
    let queues = sys::tun::create_multiqueue(&tun_spec).map_err(io_err(format!("creating TUN device {}", config.tun)))?;
    if let Some(why) = &queues.refused {
        log::warn!("{why}; running without TUN offloads");
    }
    let (vnet_hdr, uso) = (queues.vnet_hdr, queues.uso);

    let shared = Arc::new(ArcSwap::from_pointee(table));
    let lifecycle = Arc::new(Lifecycle::default());
    let node = NodeScope { own_v4: config.subnet, own_v6: config.subnet6, max_inner: plan.tun_mtu as usize };
    let counters: Vec<Arc<WorkerCounters>> = (0..config.workers).map(|_| Arc::new(WorkerCounters::default())).collect();

    log::info!(
        "encapd {}: TUN {} ({} queues, MTU {}, {}/{}{}), UDP {bind_addr}, engine {} (UDP GSO {}, GRO {}; TUN offloads {}), {} workers on CPUs {:?}",
        env!("CARGO_PKG_VERSION"),
        config.tun,
        config.workers,
        plan.tun_mtu,
        config.subnet.network(),
        config.cidr.len(),
        config.subnet6.map(|s| format!(", {}", s.network())).unwrap_or_default(),
        plan.engine.name(),
        on_off(gso),
        on_off(gro),
        tun_offloads_name(vnet_hdr, uso),
        config.workers,
        plan.cpus,
    );
    log::info!("subnet table version 1: {} routes, {} peers", shared.load().len(), shared.load().peer_count());

    let (hub, recorders) = LatencyHub::new(config.workers);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(config.workers);
    let mut handles = Vec::with_capacity(config.workers);
    for (id, ((tun, (udp, gro)), latency)) in queues.fds.into_iter().zip(sockets).zip(recorders).enumerate() {
        let ctx = WorkerContext {
            id,
            cpu: plan.cpus[id],
            engine: plan.engine,
            tun,
            udp,
            gro,
            gso,
            vnet_hdr,
            uso,
            batch: config.batch,
            node: node.clone(),
            table: Arc::clone(&shared),
            counters: Arc::clone(&counters[id]),
            lifecycle: Arc::clone(&lifecycle),
            latency,
            ready: Some(ready_tx.clone()),
        };
        match worker::spawn(ctx) {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop_workers(&lifecycle, handles);
                return Err(DaemonError::Io { what: "starting a worker thread".into(), source: e });
            }
        }
    }
    drop(ready_tx);
    // Every worker has its fds and ring (and has shed its capabilities)
    // before the process gives up its privileges.
    for _ in 0..config.workers {
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            stop_workers(&lifecycle, handles);
            return Err(DaemonError::Io {
                what: "starting the workers".into(),
                source: std::io::Error::other("a worker failed during setup (see above)"),
            });
        }
    }
    // A user switch clears the capabilities of every thread; without one,
    // each worker clears its own on its next loop iteration.
    if identity.is_none() {
        lifecycle.shed_caps.store(true, Ordering::Relaxed);
    }
    match sys::privileges::drop_privileges(identity) {
        Ok(caps) => log::info!(
            "privileges dropped: running as uid {} gid {}, capabilities effective {:#x} permitted {:#x}",
            current_uid(),
            current_gid(),
            caps.effective,
            caps.permitted
        ),
        Err(e) => {
            stop_workers(&lifecycle, handles);
            return Err(DaemonError::Io { what: "dropping privileges".into(), source: e });
        }
    }
    // Started after the drop, the control thread (and its file watcher)
    // inherit no capabilities.
    let control_source = if etcd.is_some() { "etcd" } else { "file" };
    let control = match control::spawn(config.clone(), Arc::clone(&shared), file_peers, file_text, etcd) {
        Ok(c) => c,
        Err(e) => {
            stop_workers(&lifecycle, handles);
            return Err(DaemonError::Io { what: "starting the control thread".into(), source: e });
        }
    };
    let tun_offloads = tun_offloads_name(vnet_hdr, uso);
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let source = MetricsSource {
                workers: counters.clone(),
                control: Arc::clone(&control.counters),
                table: Arc::clone(&shared),
                info: StaticInfo {
                    engine: plan.engine.name(),
                    tun_offloads: tun_offloads.to_owned(),
                    udp_gso: gso,
                    udp_gro: gro,
                    control_source,
                    listen: Some(addr),
                },
            };
            match MetricsServer::start(addr, source, hub) {
                Ok(m) => {
                    if !addr.ip().is_loopback() {
                        log::warn!("metrics served on non-loopback address {} (as configured)", m.addr);
                    }
                    log::info!("metrics at http://{}/metrics", m.addr);
                    Some(m)
                }
                Err(e) => {
                    control.shutdown();
                    stop_workers(&lifecycle, handles);
                    return Err(DaemonError::Config(format!("{}: [metrics] listen = \"{addr}\": {e}", config.path.display())));
                }
            }
        }
    };
    if let Err(e) = sys::notify::notify("READY=1\nSTATUS=forwarding") {
        log::warn!("could not notify the service manager: {e}");
    }
    log::info!("ready: forwarding");

    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]).map_err(io_err("installing signal handlers"))?;
    let mut failed = None;
    'run: loop {
        for sig in signals.pending() {
            match sig {
                SIGINT | SIGTERM => {
                    log::info!("signal {sig}: stopping");
                    break 'run;
                }
                SIGHUP => {
                    log::info!("SIGHUP: reloading the peers file");
                    let _ = control.commands.send(Command::Reload);
                }
                SIGUSR1 => print_summary(&counters, &control.counters),
                _ => {}
            }
        }
        if let Some(id) = handles.iter().position(|h| h.is_finished()) {
            failed = Some(id);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let _ = sys::notify::notify("STOPPING=1");
    drop(metrics);
    stop_workers(&lifecycle, handles);
    let control_counters = Arc::clone(&control.counters);
    control.shutdown();
    print_summary(&counters, &control_counters);
    log::info!("stopped; TUN {} removed", config.tun);
    match failed {
        Some(id) => Err(DaemonError::WorkerFailed(id)),
        None => Ok(()),
    }
}

fn stop_workers(lifecycle: &Lifecycle, handles: Vec<std::thread::JoinHandle<std::io::Result<()>>>) {
    lifecycle.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(u32::MAX)
}

fn current_gid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap_or(u32::MAX)
}

fn tun_offloads_name(vnet_hdr: bool, uso: bool) -> &'static str {
    match (vnet_hdr, uso) {
        (false, _) => "off",
        (true, false) => "csum+tso4+tso6",
        (true, true) => "csum+tso4+tso6+uso4+uso6",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The address of a prefix the config validated as IPv4 (v4-mapped otherwise).
fn ipv4_of(ip: IpAddr) -> std::net::Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
    }
}

/// The address of a prefix the config validated as IPv6.
fn ipv6_of(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn print_summary(counters: &[Arc<WorkerCounters>], control: &control::ControlCounters) {
    let refs: Vec<&WorkerCounters> = counters.iter().map(|c| &**c).collect();
    eprint!(
        "encapd counters:\n{}  control   tables published {} | reload failures {}\n",
        stats::summary(&refs),
        control.tables_published.load(Ordering::Relaxed),
        control.reload_failures.load(Ordering::Relaxed)
    );
}
