//! The daemon's lifecycle, as a sequence of named steps: plan, find the
//! data path's origin (bind the control socket, or join the running daemon
//! with `--takeover`), claim (or carry on with) the node's subnet (etcd),
//! build the first table, open (or adopt) the TUN and sockets, start the
//! workers, drop privileges, start the control thread, complete a
//! takeover, start the metrics endpoint and the control socket thread,
//! report ready, then serve signals until a stop or a handover.
//!
//! Every step that owns something running is a guard: the workers
//! ([`workers::WorkerSet`]), the control thread, the metrics endpoint and
//! the control socket thread stop on drop, so an error at any step after
//! them leaves nothing behind. On SIGINT/SIGTERM the workers finish their
//! batch, the TUN disappears with its last queue, and the counters are
//! printed. After handing the data path to a successor ([`takeover`]) the
//! process exits 0 and leaves everything else alone: the TUN, the lease and
//! the control socket are the successor's now.

mod dataplane;
mod origin;
mod plan;
mod signals;
pub mod takeover;
mod wireguard;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use origin::Start;
pub use plan::{Plan, plan};

use self::dataplane::Dataplane;
use self::origin::Origin;
use self::signals::{Request, SignalRequests};
use self::takeover::{ControlServer, ControlSocket, HandoverSource, ServerEvent, SocketFile, SuccessorCommand, TakeoverError};
use self::workers::{WorkerSet, WorkerShared};
use crate::config::{Backend, Config, KernelPathMode};
use crate::control::{self, Command, ControlHandle};
use crate::datapath::kernel::{Format as KernelFormat, KernelFds, KernelPath, KernelPathSpec};
use crate::route::{self, SharedTable, SubnetTable};
use crate::stats::exposition::{KernelPathReader, MetricsSource, StaticInfo};
use crate::stats::latency::LatencyHub;
use crate::stats::server::{BoundMetrics, MetricsServer};
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
    #[error("{0}")]
    Takeover(#[from] TakeoverError),
    #[error("{0}")]
    ControlSocket(#[from] takeover::SocketError),
    /// The host cannot do what a valid configuration asks (exit 1: the
    /// same file runs where the host can, e.g. the kernel path's programs
    /// on a kernel with TCX and with CAP_BPF).
    #[error("{0}")]
    Host(String),
}

impl DaemonError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Etcd(control::etcd::BootstrapError::Config(_)) => 2,
            DaemonError::Takeover(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// How serving ended.
enum End {
    Stopped,
    WorkerFailed(usize),
    HandedOver(u32),
}

/// What runs once the workers forward.
struct Running {
    workers: WorkerSet,
    /// Before the workers in the struct: detached first on the way out, so
    /// that its packets fall back to running workers.
    kernel: Option<Arc<KernelPath>>,
    route_failures: Arc<AtomicU64>,
    control: ControlHandle,
    metrics: Option<MetricsServer>,
    server: Option<ControlServer>,
    socket_file: Option<SocketFile>,
    counters: Vec<Arc<WorkerCounters>>,
}

/// Runs the daemon in the foreground until SIGINT/SIGTERM, or until it has
/// handed its data path to a successor.
pub fn run(mut config: Config, start: Start) -> Result<(), DaemonError> {
    let mut signals = SignalRequests::install()?;
    let plan = plan(&config)?;
    // The peers file is checked before anything is created or bound.
    let file_table = initial_file_table(&config)?;
    let mut origin = Origin::open(&config, &plan, start)?;
    let mut etcd = claim_subnet(&mut config, &origin)?;
    plan.check_resolved(&config)?;
    origin.check_resolved(&config, &plan)?;
    let (table, file_peers, file_text) = first_table(&config, etcd.as_ref(), file_table, origin.first_table_version())?;
    control::write_subnet_env(&config, plan.tun_mtu).map_err(|source| DaemonError::Io {
        what: format!("writing {}", config.subnet_env.as_deref().map(|p| p.display().to_string()).unwrap_or_default()),
        source,
    })?;
    let identity = resolve_identity(&config)?;
    // Key files belong to the user the daemon runs as once set up.
    let key_owner = identity.as_ref().map_or_else(sys::key_file::effective_uid, |id| id.uid);
    let wireguard = wireguard::start_node(&config, key_owner, plan.tun_mtu, &table)?;
    hand_socket_to(&config, identity.as_ref());
    if let Some(note) = &plan.engine_note {
        log::warn!("{note}");
    }
    let dataplane = origin.dataplane(&config, &plan)?;
    log_start(&config, &plan, &dataplane, &table);
    let info = static_info(&plan, &dataplane, &config, etcd.is_some());
    let reserve = config
        .control_socket
        .is_some()
        .then(|| dataplane.duplicate())
        .transpose()
        .map_err(|source| DaemonError::Io { what: "duplicating the data path's fds for a successor".into(), source })?;
    let facts = dataplane.facts();
    let shared = route::share(table);
    let counters: Vec<Arc<WorkerCounters>> = (0..config.workers).map(|_| Arc::new(WorkerCounters::default())).collect();
    let (hub, recorders) = LatencyHub::new(config.workers);

    // Each worker clears its own capabilities unless a user switch will:
    // glibc carries setuid to every thread, and from uid 0 that clears
    // them (a thread that had cleared its own would refuse the switch).
    // Already running as the user (systemd's User= with ambient
    // capabilities, as dist/encapd.service does) switches nothing.
    let clear_caps = identity.is_none_or(|id| id.is_current());
    let worker_shared = WorkerShared { table: &shared, counters: &counters, clear_caps, wireguard: wireguard.as_ref().map(Arc::clone) };
    let workers = WorkerSet::start(&config, &plan, dataplane, worker_shared, recorders)?;
    workers.wait_ready()?;
    // With the workers running, so that what the programs leave to them
    // (and everything, should attaching fail half-way) is forwarded.
    let KernelStart { kernel, listener, reserve: kernel_reserve, route_failures } =
        start_kernel_path(&config, &plan, &shared, origin.take_kernel(), clear_caps)?;
    if kernel.is_some()
        && let Some(boot) = etcd.as_mut()
    {
        // Only now may the lease say so (claimed without it: the programs needed the subnet).
        boot.announce_kernel_decap();
    }
    drop_privileges(identity)?;
    let listener = match &wireguard {
        Some(node) => Some(wireguard::listener(Arc::clone(node), key_owner)),
        None => listener,
    };
    // Started after the drop, the control thread (and its file watcher),
    // the metrics thread and the control socket thread inherit no
    // capabilities.
    let control = control::spawn(config.clone(), Arc::clone(&shared), file_peers, file_text, etcd, listener)
        .map_err(|source| DaemonError::Io { what: "starting the control thread".into(), source })?;
    let successor = origin.is_successor();
    let socket = origin.finish(&config, &counters, &control.counters)?;
    let kernel_metrics = kernel.clone().map(|k| (k, Arc::clone(&route_failures)));
    let metrics = start_metrics(&config, &counters, &control, &shared, info, hub, successor, kernel_metrics)?;
    signals.catch_stop()?;
    let (server, socket_file) = match (socket, reserve) {
        (Some(socket), Some(reserve)) => {
            let compat = origin::compat(&config, &plan);
            let source = HandoverSource {
                compat,
                facts,
                reserve,
                kernel: kernel_reserve,
                counters: counters.clone(),
                control: Arc::clone(&control.counters),
                table: Arc::clone(&shared),
                lease: control.own_lease(),
                lifecycle: workers.lifecycle(),
                successor: SuccessorCommand::for_this_process(&config.path),
            };
            serve_control_socket(socket, source)?
        }
        _ => (None, None),
    };
    if !successor && let Err(e) = sys::notify::notify("READY=1\nSTATUS=forwarding") {
        log::warn!("could not notify the service manager: {e}");
    }
    log::info!("ready: forwarding");
    let running = Running { workers, kernel, route_failures, control, metrics, server, socket_file, counters };
    let end = serve(&mut signals, &running);
    shut_down(running, end, &config)
}

/// With the etcd source: claims this node's subnet (and learns the
/// network), or carries on with the lease the predecessor held; everything
/// after is built for that subnet.
fn claim_subnet(config: &mut Config, origin: &Origin) -> Result<Option<control::etcd::Bootstrap>, DaemonError> {
    if config.etcd().is_none() {
        return Ok(None);
    }
    Ok(Some(control::etcd::bootstrap_with(config, origin.handed_lease())?))
}

/// With the file source: the peers file, validated into a first table.
fn initial_file_table(config: &Config) -> Result<Option<control::InitialTable>, DaemonError> {
    if config.etcd().is_some() {
        return Ok(None);
    }
    control::initial_table(config).map(Some).map_err(|e| DaemonError::Config(e.to_string()))
}

/// The first table, numbered `version`: etcd's leases, or the peers file's
/// (with what it was built from, for the control thread).
fn first_table(
    config: &Config,
    etcd: Option<&control::etcd::Bootstrap>,
    file: Option<control::InitialTable>,
    version: u64,
) -> Result<(SubnetTable, Vec<route::PeerSpec>, Option<String>), DaemonError> {
    let (peers, file_peers, file_text) = match (etcd, file) {
        (Some(boot), _) => (boot.peers.clone(), Vec::new(), None),
        (None, Some(first)) if first.table.version() == version => return Ok((first.table, first.peers, first.file_text)),
        (None, Some(first)) => (first.peers.clone(), first.peers, first.file_text),
        (None, None) => (Vec::new(), Vec::new(), None),
    };
    let table = SubnetTable::build(version, &config.table_scope(), &peers)
        .map_err(|errs| DaemonError::Config(errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    Ok((table, file_peers, file_text))
}

fn resolve_identity(config: &Config) -> Result<Option<sys::privileges::Identity>, DaemonError> {
    let Some(user) = &config.user else { return Ok(None) };
    sys::privileges::resolve(user, config.group.as_deref())
        .map(Some)
        .map_err(|e| DaemonError::Config(format!("{}: [process] user = {user:?}: {e}", config.path.display())))
}

/// With `[process] user`, the control socket belongs to that user: the
/// successor this daemon starts on SIGUSR2 or `encapd upgrade` runs as that
/// user, without privileges, and must be able to connect to it (and it
/// carries on with the kernel path's fds, which need none).
/// Without CAP_CHOWN this only warns: the daemon forwards as before, and
/// an upgrade started as root (`encapd run --takeover`) still works.
fn hand_socket_to(config: &Config, identity: Option<&sys::privileges::Identity>) {
    let (Some(id), Some(path)) = (identity, &config.control_socket) else { return };
    if let Err(e) = std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid)) {
        log::warn!(
            "control socket {}: cannot hand it to uid {} ({e}; needs CAP_CHOWN): a successor this daemon starts itself (SIGUSR2, encapd upgrade) will not reach it",
            path.display(),
            id.uid
        );
    }
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
    match config.ingress_checksum {
        crate::config::IngressChecksum::Verify => log::info!("ingress checksums: each received segment is verified before it is merged"),
        crate::config::IngressChecksum::TrustOuter => {
            log::info!("ingress checksums: trust-outer (segments merged unverified: the verified outer UDP checksum covered them)")
        }
    }
    match config.worker_sched {
        crate::sys::sched::WorkerSched::Normal => log::info!("worker scheduling: normal (the kernel's default slice)"),
        crate::sys::sched::WorkerSched::ShortSlice => {
            log::info!("worker scheduling: short-slice (0.1 ms: a woken worker preempts the application on its CPU)")
        }
    }
    log::info!("subnet table version {}: {} routes, {} peers", table.version(), table.len(), table.peer_count());
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

/// How long a successor keeps trying to bind the metrics address its
/// predecessor is still closing.
const METRICS_REBIND: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the metrics endpoint. A successor retries while its predecessor
/// still holds the address, and runs on without metrics if it never frees
/// it: past the handover, this process must not exit for that.
#[allow(clippy::too_many_arguments)] // the endpoint's sources, and whether this process took over
fn start_metrics(
    config: &Config,
    counters: &[Arc<WorkerCounters>],
    control: &ControlHandle,
    table: &SharedTable,
    info: StaticInfo,
    hub: LatencyHub,
    successor: bool,
    kernel: Option<(Arc<KernelPath>, Arc<AtomicU64>)>,
) -> Result<Option<MetricsServer>, DaemonError> {
    let Some(addr) = config.metrics_listen else { return Ok(None) };
    let kernel = kernel.map(|(k, failures)| -> KernelPathReader { Arc::new(move || k.totals(failures.load(Ordering::Relaxed))) });
    let source =
        MetricsSource { workers: counters.to_vec(), control: Arc::clone(&control.counters), table: Arc::clone(table), info, kernel };
    let deadline = std::time::Instant::now() + if successor { METRICS_REBIND } else { std::time::Duration::ZERO };
    let bound = loop {
        match BoundMetrics::bind(addr) {
            Ok(b) => break b,
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) if successor => {
                log::error!("{}: [metrics] listen = \"{addr}\": {e}; running without a metrics endpoint", config.path.display());
                return Ok(None);
            }
            Err(e) => return Err(DaemonError::Config(format!("{}: [metrics] listen = \"{addr}\": {e}", config.path.display()))),
        }
    };
    let server = bound.serve(source, hub).map_err(|source| DaemonError::Io { what: "starting the metrics thread".into(), source })?;
    if !addr.ip().is_loopback() {
        log::warn!("metrics served on non-loopback address {} (as configured)", server.addr);
    }
    log::info!("metrics at http://{}/metrics", server.addr);
    Ok(Some(server))
}

/// Starts the control socket thread over `socket`.
fn serve_control_socket(socket: ControlSocket, source: HandoverSource) -> Result<(Option<ControlServer>, Option<SocketFile>), DaemonError> {
    let ControlSocket { listener, file } = socket;
    let server = ControlServer::start(listener, source)
        .map_err(|source| DaemonError::Io { what: "starting the control socket thread".into(), source })?;
    Ok((Some(server), Some(file)))
}

/// Serves signals until a stop, a worker failure or a handover.
fn serve(signals: &mut SignalRequests, running: &Running) -> End {
    loop {
        for request in signals.pending() {
            match request {
                Request::Stop(sig) => {
                    log::info!("signal {sig}: stopping");
                    return End::Stopped;
                }
                Request::Reload => {
                    log::info!("SIGHUP: reloading the peers file");
                    let _ = running.control.commands.send(Command::Reload);
                }
                Request::PrintCounters => {
                    print_summary(&running.counters, &running.control.counters);
                    if let Some(k) = &running.kernel {
                        eprint!("{}", k.summary_line(running.route_failures.load(Ordering::Relaxed)));
                    }
                }
                Request::Upgrade => match &running.server {
                    Some(server) => {
                        log::info!("SIGUSR2: starting a successor to hand the data path to");
                        server.spawn_successor();
                    }
                    None => log::warn!("SIGUSR2: no control socket ([process] control_socket = \"off\"); cannot upgrade in place"),
                },
            }
        }
        if let Some(id) = running.workers.failed() {
            return End::WorkerFailed(id);
        }
        match &running.server {
            Some(server) => {
                if let Some(ServerEvent::HandedOver { pid }) = server.wait_event(signals::POLL) {
                    return End::HandedOver(pid);
                }
            }
            None => std::thread::sleep(signals::POLL),
        }
    }
}

/// Stops everything in order. After a handover: no `STOPPING=1` (the
/// service manager follows the successor now), the socket file stays.
fn shut_down(running: Running, end: End, config: &Config) -> Result<(), DaemonError> {
    let Running { workers, kernel, route_failures, control, metrics, server, socket_file, counters } = running;
    let handed_over = matches!(end, End::HandedOver(_));
    if !handed_over {
        let _ = sys::notify::notify("STOPPING=1");
    }
    drop(server);
    // First the metrics address, which the successor waits to bind.
    drop(metrics);
    // The programs detach first (the control thread's listener holds only
    // the routes map): their packets fall back to workers still running.
    let kernel_line = kernel.as_deref().map(|k| k.summary_line(route_failures.load(Ordering::Relaxed)));
    match (&kernel, handed_over) {
        (Some(_), false) => log::info!("kernel path detached; the workers carry its packets until they stop"),
        (Some(_), true) => log::info!("kernel path: the successor holds its programs and maps now"),
        (None, _) => {}
    }
    drop(kernel);
    workers.stop();
    let control_counters = Arc::clone(&control.counters);
    control.shutdown();
    print_summary(&counters, &control_counters);
    if let Some(line) = kernel_line {
        eprint!("{line}");
    }
    match end {
        End::HandedOver(pid) => {
            if let Some(f) = socket_file {
                f.keep();
            }
            log::info!("handed over to pid {pid}; exiting (TUN {} stays with it)", config.tun);
            Ok(())
        }
        End::Stopped | End::WorkerFailed(_) => {
            drop(socket_file);
            log::info!("stopped; TUN {} removed", config.tun);
            match end {
                End::WorkerFailed(id) => Err(DaemonError::WorkerFailed(id)),
                _ => Ok(()),
            }
        }
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
        control.reload_failures.load(Ordering::Relaxed),
    );
}

/// The kernel path as the daemon runs it.
#[derive(Default)]
struct KernelStart {
    kernel: Option<Arc<KernelPath>>,
    listener: Option<control::TableListener>,
    /// Duplicates of its fds, for a successor.
    reserve: Option<KernelFds>,
    /// Routes-map updates the kernel refused so far.
    route_failures: Arc<AtomicU64>,
}

/// With `kernel_path = "tc"` or `"auto"`: attaches the kernel path (or,
/// after a takeover, carries on with the predecessor's, which needs no
/// privilege), installs the table's routes, and returns the listener that
/// keeps them current. With `"tc"`, refusing to start is deliberate when
/// it cannot attach: the operator asked for it, and a gateway silently at
/// a fraction of its speed is harder to notice than one that says why it
/// stopped. With `"auto"`, the workers carry everything and one log line
/// says why.
/// `clear_caps`: the route writer's thread clears its own capabilities, as
/// the workers do (see `run`).
fn start_kernel_path(
    config: &Config,
    plan: &Plan,
    shared: &SharedTable,
    handed: Option<KernelFds>,
    clear_caps: bool,
) -> Result<KernelStart, DaemonError> {
    if !config.kernel_path.wanted() {
        if handed.is_some() {
            log::info!("kernel path: the predecessor's programs detach when it exits (kernel_path = \"off\")");
        }
        return Ok(KernelStart::default());
    }
    let format = match &config.backend {
        Backend::Udp => KernelFormat::FlannelUdp,
        Backend::Vxlan(v) => KernelFormat::Vxlan { vni: v.vni, mac: v.vtep_mac.0 },
        // The configuration refuses "tc" with wireguard; "auto" steps aside.
        Backend::WireGuard => {
            log::info!("kernel path: does not apply to the wireguard backend (it encrypts in the workers); the workers carry every packet");
            return Ok(KernelStart::default());
        }
    };
    let adopted = handed.is_some();
    let attached = match handed {
        Some(fds) => KernelPath::adopt(fds, config.port, format).map_err(|e| e.to_string()),
        None => kernel_path_spec(config, plan, format).and_then(|spec| KernelPath::attach(&spec).map_err(|e| e.to_string())),
    };
    let mut kernel = match (attached, config.kernel_path) {
        (Ok(k), _) => k,
        (Err(e), KernelPathMode::Auto) => {
            log::warn!("kernel path: not attached ({e}); kernel_path = \"auto\": the workers carry every packet");
            return Ok(KernelStart::default());
        }
        (Err(e), _) => {
            return Err(DaemonError::Host(format!(
                "{}: [dataplane] kernel_path = \"tc\": {e}; kernel_path = \"off\" runs without it, \"auto\" without it where it cannot attach",
                config.path.display()
            )));
        }
    };
    let reserve = kernel
        .handover_fds()
        .map_err(|e| DaemonError::Io { what: "duplicating the kernel path's fds".into(), source: std::io::Error::other(e.to_string()) })?;
    let Some(mut sync) = kernel.route_sync(adopted) else { return Ok(KernelStart::default()) };
    let failed = sync.apply(&shared.load());
    let route_failures = sync.failures();
    log::info!(
        "kernel path {} ({} format): encap on {} egress, decap on {} ingress, {}; {} routes in the kernel{}",
        if adopted { "carried on from the predecessor" } else { "attached" },
        config.backend.name(),
        config.tun,
        if kernel.underlay.is_empty() { "the underlay's" } else { kernel.underlay.as_str() },
        kernel.xdp_status,
        sync.installed(),
        if failed > 0 { format!(" ({failed} map updates failed, retrying)") } else { String::new() }
    );
    let listener = sync
        .spawn(Arc::clone(shared), clear_caps)
        .map_err(|source| DaemonError::Io { what: "starting the kernel path's route writer".into(), source })?;
    Ok(KernelStart { kernel: Some(Arc::new(kernel)), listener: Some(Box::new(listener)), reserve: Some(reserve), route_failures })
}

/// What the programs are told, or why this host cannot run them.
fn kernel_path_spec(config: &Config, plan: &Plan, format: KernelFormat) -> Result<KernelPathSpec, String> {
    let std::net::IpAddr::V4(public_ip) = config.public_ip else {
        return Err("public_ip is IPv6 (the programs write outer IPv4 headers)".into());
    };
    let std::net::IpAddr::V4(subnet) = config.subnet.network() else {
        return Err("the node's subnet is not IPv4".into());
    };
    if config.ingress_checksum == crate::config::IngressChecksum::TrustOuter {
        return Err("ingress_checksum = \"trust-outer\" (the kernel path sends no outer UDP checksum)".into());
    }
    let own6 = config.subnet6.and_then(|p| match p.network() {
        std::net::IpAddr::V6(a) => Some((a, p.len())),
        std::net::IpAddr::V4(_) => None,
    });
    Ok(KernelPathSpec {
        public_ip,
        port: config.port,
        own4: (subnet, config.subnet.len()),
        own6,
        max_inner: plan.tun_mtu,
        tun: config.tun.clone(),
        format,
        xdp: config.xdp_decap,
    })
}
