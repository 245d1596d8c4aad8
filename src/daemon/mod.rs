//! The daemon's lifecycle, as a sequence of named steps: claim the node's
//! subnet (etcd), build the first table, plan, open the TUN and sockets,
//! start the workers, drop privileges, start the control thread and the
//! metrics endpoint, report ready, then serve signals until a stop.
//!
//! Every step that owns something running is a guard: the workers
//! ([`workers::WorkerSet`]), the control thread and the metrics endpoint
//! stop on drop, so an error at any step after them leaves nothing behind.
//! On SIGINT/SIGTERM the workers finish their batch, the TUN disappears
//! with its last queue, and the counters are printed.

mod dataplane;
mod plan;
mod signals;
mod workers;

use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use plan::{Plan, plan};

use self::dataplane::Dataplane;
use self::signals::{Request, SignalRequests};
use self::workers::{WorkerSet, WorkerShared};
use crate::config::Config;
use crate::control::{self, Command, ControlHandle};
use crate::route::{self, SharedTable, SubnetTable};
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
    #[error("{0}")]
    Etcd(#[from] control::etcd::BootstrapError),
    #[error("worker {0} failed; stopping")]
    WorkerFailed(usize),
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Etcd(control::etcd::BootstrapError::Config(_)) => 2,
            _ => 1,
        }
    }
}

/// Runs the daemon in the foreground until SIGINT/SIGTERM.
pub fn run(mut config: Config) -> Result<(), DaemonError> {
    let mut signals = SignalRequests::install()?;
    let etcd = claim_subnet(&mut config)?;
    let (table, file_peers, file_text) = first_table(&config, etcd.as_ref())?;
    let plan = plan(&config)?;
    control::write_subnet_env(&config, plan.tun_mtu).map_err(|source| DaemonError::Io {
        what: format!("writing {}", config.subnet_env.as_deref().map(|p| p.display().to_string()).unwrap_or_default()),
        source,
    })?;
    let identity = resolve_identity(&config)?;
    if let Some(note) = &plan.engine_note {
        log::warn!("{note}");
    }
    let dataplane = Dataplane::open(&config, &plan)?;
    log_start(&config, &plan, &dataplane, &table);
    let info = static_info(&plan, &dataplane, &config, etcd.is_some());
    let shared = route::share(table);
    let counters: Vec<Arc<WorkerCounters>> = (0..config.workers).map(|_| Arc::new(WorkerCounters::default())).collect();
    let (hub, recorders) = LatencyHub::new(config.workers);

    let worker_shared = WorkerShared { table: &shared, counters: &counters, clear_caps: identity.is_none() };
    let workers = WorkerSet::start(&config, &plan, dataplane, worker_shared, recorders)?;
    workers.wait_ready()?;
    drop_privileges(identity)?;
    // Started after the drop, the control thread (and its file watcher)
    // and the metrics thread inherit no capabilities.
    let control = control::spawn(config.clone(), Arc::clone(&shared), file_peers, file_text, etcd)
        .map_err(|source| DaemonError::Io { what: "starting the control thread".into(), source })?;
    let metrics = start_metrics(&config, &counters, &control, &shared, info, hub)?;
    signals.catch_stop()?;
    if let Err(e) = sys::notify::notify("READY=1\nSTATUS=forwarding") {
        log::warn!("could not notify the service manager: {e}");
    }
    log::info!("ready: forwarding");

    let failed = serve(&mut signals, &workers, &control, &counters);
    let _ = sys::notify::notify("STOPPING=1");
    drop(metrics);
    workers.stop();
    let control_counters = Arc::clone(&control.counters);
    control.shutdown();
    print_summary(&counters, &control_counters);
    log::info!("stopped; TUN {} removed", config.tun);
    match failed {
        Some(id) => Err(DaemonError::WorkerFailed(id)),
        None => Ok(()),
    }
}

/// With the etcd source: claims this node's subnet (and learns the
/// network); everything after is built for the subnet etcd granted.
fn claim_subnet(config: &mut Config) -> Result<Option<control::etcd::Bootstrap>, DaemonError> {
    if config.etcd().is_none() {
        return Ok(None);
    }
    Ok(Some(control::etcd::bootstrap(config)?))
}

/// The first table: etcd's leases, or the peers file (with what it was
/// built from, for the control thread).
fn first_table(
    config: &Config,
    etcd: Option<&control::etcd::Bootstrap>,
) -> Result<(SubnetTable, Vec<route::PeerSpec>, Option<String>), DaemonError> {
    match etcd {
        Some(boot) => SubnetTable::build(1, &config.table_scope(), &boot.peers)
            .map(|t| (t, Vec::new(), None))
            .map_err(|errs| DaemonError::Config(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))),
        None => {
            let first = control::initial_table(config).map_err(|e| DaemonError::Config(e.to_string()))?;
            Ok((first.table, first.peers, first.file_text))
        }
    }
}

fn resolve_identity(config: &Config) -> Result<Option<sys::privileges::Identity>, DaemonError> {
    let Some(user) = &config.user else { return Ok(None) };
    sys::privileges::resolve(user, config.group.as_deref())
        .map(Some)
        .map_err(|e| DaemonError::Config(format!("{}: [process] user = {user:?}: {e}", config.path.display())))
}

/// Switches user (if configured) and clears the main thread's capabilities.
fn drop_privileges(identity: Option<sys::privileges::Identity>) -> Result<(), DaemonError> {
    let caps =
        sys::privileges::drop_privileges(identity).map_err(|source| DaemonError::Io { what: "dropping privileges".into(), source })?;
    log::info!(
        "privileges dropped: running as uid {} gid {}, capabilities effective {:#x} permitted {:#x}",
        current_uid(),
        current_gid(),
        caps.effective,
        caps.permitted
    );
    Ok(())
}

fn log_start(config: &Config, plan: &Plan, dataplane: &Dataplane, table: &SubnetTable) {
    log::info!(
        "encapd {}: TUN {} ({} queues, MTU {}, {}/{}{}), UDP {}, engine {} (UDP GSO {}, GRO {}; TUN offloads {}), {} workers on CPUs {:?}",
        env!("CARGO_PKG_VERSION"),
        config.tun,
        config.workers,
        plan.tun_mtu,
        config.subnet.network(),
        config.cidr.len(),
        config.subnet6.map(|s| format!(", {}", s.network())).unwrap_or_default(),
        std::net::SocketAddr::new(config.public_ip, config.port),
        plan.engine.name(),
        on_off(dataplane.gso),
        on_off(dataplane.gro),
        dataplane.tun_offloads(),
        config.workers,
        plan.cpus,
    );
    if plan.engine == crate::config::IoEngine::Uring {
        log::info!("io_uring: {}", plan.uring.describe());
        match config.busy_poll_us {
            0 => log::info!("busy polling: off (workers sleep in the kernel when idle)"),
            us => log::info!("busy polling: each worker polls for {us} µs after its last completion before it sleeps"),
        }
    }
    log::info!("subnet table version 1: {} routes, {} peers", table.len(), table.peer_count());
}

fn static_info(plan: &Plan, dataplane: &Dataplane, config: &Config, etcd: bool) -> StaticInfo {
    StaticInfo {
        engine: plan.engine.name(),
        tun_offloads: dataplane.tun_offloads().to_owned(),
        udp_gso: dataplane.gso,
        udp_gro: dataplane.gro,
        control_source: if etcd { "etcd" } else { "file" },
        listen: config.metrics_listen,
    }
}

fn start_metrics(
    config: &Config,
    counters: &[Arc<WorkerCounters>],
    control: &ControlHandle,
    table: &SharedTable,
    info: StaticInfo,
    hub: LatencyHub,
) -> Result<Option<MetricsServer>, DaemonError> {
    let Some(addr) = config.metrics_listen else { return Ok(None) };
    let source = MetricsSource { workers: counters.to_vec(), control: Arc::clone(&control.counters), table: Arc::clone(table), info };
    let server = MetricsServer::start(addr, source, hub)
        .map_err(|e| DaemonError::Config(format!("{}: [metrics] listen = \"{addr}\": {e}", config.path.display())))?;
    if !addr.ip().is_loopback() {
        log::warn!("metrics served on non-loopback address {} (as configured)", server.addr);
    }
    log::info!("metrics at http://{}/metrics", server.addr);
    Ok(Some(server))
}

/// Serves signals until a stop or a worker failure; returns the failed worker.
fn serve(signals: &mut SignalRequests, workers: &WorkerSet, control: &ControlHandle, counters: &[Arc<WorkerCounters>]) -> Option<usize> {
    loop {
        for request in signals.pending() {
            match request {
                Request::Stop(sig) => {
                    log::info!("signal {sig}: stopping");
                    return None;
                }
                Request::Reload => {
                    log::info!("SIGHUP: reloading the peers file");
                    let _ = control.commands.send(Command::Reload);
                }
                Request::PrintCounters => print_summary(counters, &control.counters),
            }
        }
        if let Some(id) = workers.failed() {
            return Some(id);
        }
        std::thread::sleep(signals::POLL);
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(u32::MAX)
}

fn current_gid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap_or(u32::MAX)
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
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
