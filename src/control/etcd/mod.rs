//! The etcd source: flannel's lease store (etcd v3) as the control plane.
//!
//! Start-up ([`bootstrap`], on the main thread, before the TUN exists):
//! read `<prefix>/config`, reconcile it with the config file and claim this
//! node's subnet, and its IPv6 subnet in a dual-stack network ([`claim`]),
//! and list the leases of the other nodes for the first table ([`leases`]).
//! A process that takes the data path over from a running one carries on
//! with the lease it held instead of claiming ([`bootstrap_with`]): no new
//! lease, no second key, no revocation.
//!
//! The lease is claimed saying that this node does not decapsulate in its
//! kernel: the kernel path's programs need the subnet the claim returns,
//! so they are attached after it. Once they are, the daemon says so
//! ([`Bootstrap::announce_kernel_decap`]) and the etcd thread writes the
//! lease again with `EncapdKernelDecap: true`; until then, peers' kernel
//! paths do not send to this node.
//!
//! Then ([`EtcdHandle::spawn`], after the privilege drop) a thread with a
//! current-thread tokio runtime keeps the table in step with etcd and the
//! lease alive and current ([`watch`]); the `encapd_control_connected`
//! gauge says whether it is connected.

mod claim;
mod client;
mod leases;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

pub use self::claim::HandedLease;
pub use self::claim::STATE_FILE;
use self::claim::{ClaimError, Claimed, LeaseHolder, adopt_lease, claim_lease, read_network_config, write_state};
use self::client::Connector;
pub use self::client::EtcdError;
use self::leases::Leases;
use self::watch::Watcher;
use super::flannel::{self, FlannelBackend, LeaseExpect, NetworkConfig, SubnetRange};
use super::{Command, ControlCounters, PeerChange};
use crate::config::{Backend, Config, ControlSource, EtcdSource, VxlanSettings};
use crate::route::{PeerSpec, Prefix, TableScope};

/// How long start-up waits for etcd (and for `<prefix>/config`).
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// Retry backoff: starts here, doubles, capped.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle watch is asked for a progress notification; a watch
/// silent for twice this long is re-created.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// At most one "etcd unreachable" log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why start-up with etcd failed: the configuration (exit 2) or etcd (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Config(String),
    #[error("etcd ({endpoints}): no usable answer within {} s: {last}", STARTUP_WAIT.as_secs())]
    Unavailable { endpoints: String, last: String },
    #[error("starting the etcd client runtime: {0}")]
    Runtime(std::io::Error),
}

/// What start-up established; handed to [`EtcdHandle::spawn`].
pub struct Bootstrap {
    connector: Connector,
    network: NetworkConfig,
    /// This node's lease: its IPv4 subnet, and its IPv6 subnet in a
    /// dual-stack network.
    pub subnet: Prefix,
    pub subnet6: Option<Prefix>,
    lease_id: i64,
    renew_at: Instant,
    /// The leases of the other nodes, for the first table.
    pub peers: Vec<PeerSpec>,
    leases: Leases,
    /// The revision the peers were listed at.
    pub revision: i64,
    /// Who this node is in its lease; its value follows from it.
    holder: LeaseHolder,
    /// The value of this node's lease in etcd now.
    written: String,
}

impl Bootstrap {
    /// The kernel path is attached: from now on the lease says that this
    /// node decapsulates in its kernel (written by the etcd thread as soon
    /// as it runs).
    pub fn announce_kernel_decap(&mut self) {
        self.holder.kernel_decap = true;
    }
}

/// This node's WireGuard public key for its lease (`backend =
/// "wireguard"`): the private key file read with the daemon's checks,
/// owned by `[process] user` (else the user starting encapd).
fn wireguard_public_key(config: &Config) -> Result<Option<crate::wireguard::PublicKey>, String> {
    Ok(config.wireguard_private_key()?.map(|key| key.public_key()))
}

/// Reads the network config and claims this node's lease; fills in
/// `config.subnet`, `cidr` and `port` from etcd. Blocks (at most about
/// [`STARTUP_WAIT`] while etcd is unreachable).
pub fn bootstrap(config: &mut Config) -> Result<Bootstrap, BootstrapError> {
    bootstrap_with(config, None)
}

/// [`bootstrap`], carrying on with `handed` (the lease of the process this
/// one takes the data path from) instead of claiming, as long as etcd
/// still has it for this node (else the same subnet is claimed again).
pub fn bootstrap_with(config: &mut Config, handed: Option<HandedLease>) -> Result<Bootstrap, BootstrapError> {
    let src = match &config.control {
        ControlSource::Etcd(e) => (**e).clone(),
        ControlSource::File { .. } => return Err(BootstrapError::Config("bootstrap: not an etcd configuration".into())),
    };
    let connector = Connector::new(&src).map_err(|e| BootstrapError::Config(format!("{}: {e}", config.path.display())))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(BootstrapError::Runtime)?;
    let file = config.path.display().to_string();
    let vtep_mac = match config.backend {
        Backend::Vxlan(v) => Some(v.vtep_mac),
        Backend::Udp | Backend::WireGuard => None,
    };
    let public_key = wireguard_public_key(config).map_err(BootstrapError::Config)?;
    // Not yet: see the module documentation.
    let holder = LeaseHolder { public_ip: config.public_ip, vtep_mac, public_key, kernel_decap: false };
    let boot = runtime.block_on(claim_until_deadline(connector, src, file, holder, config.backend, handed));
    // The runtime's threads (if any) end here, before privileges are dropped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let boot = boot?;
    config.subnet = boot.subnet;
    config.cidr = boot.network.network();
    config.subnet6 = boot.subnet6;
    config.cidr6 = boot.network.network6();
    config.port = boot.network.port;
    if let (Backend::Vxlan(v), FlannelBackend::Vxlan { vni }) = (config.backend, boot.network.backend) {
        config.backend = Backend::Vxlan(VxlanSettings { vni, vtep_mac: v.vtep_mac });
    }
    if let ControlSource::Etcd(e) = &mut config.control {
        e.resolved = true;
    }
    Ok(boot)
}

/// Connects, reads the network config and claims a subnet, retrying with
/// backoff across the endpoints until [`STARTUP_WAIT`] has passed.
async fn claim_until_deadline(
    mut connector: Connector,
    src: EtcdSource,
    file: String,
    holder: LeaseHolder,
    ours: Backend,
    handed: Option<HandedLease>,
) -> Result<Bootstrap, BootstrapError> {
    let deadline = Instant::now() + STARTUP_WAIT;
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    for attempt in 0.. {
        if Instant::now() >= deadline {
            return Err(BootstrapError::Unavailable { endpoints: src.endpoints.join(", "), last: last_error });
        }
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        let (mut client, endpoint) = match connector.connect().await {
            Ok(c) => c,
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        let claimed = match read_network_config(&mut client, &src, &ours, &file).await {
            Ok(None) => {
                last_error = format!("{}/config does not exist (write flannel's network config there)", src.prefix);
                if attempt == 0 {
                    log::warn!("etcd: {last_error}; waiting for it");
                }
                continue;
            }
            Ok(Some(network)) => claim_or_adopt(&mut client, &src, &network, &holder, &file, handed).await.map(|c| (network, c)),
            Err(e) => Err(e),
        };
        match claimed {
            Ok((network, claimed)) => return Ok(established(connector, &src, network, claimed, holder, &endpoint)),
            Err(ClaimError::Config(e)) => return Err(BootstrapError::Config(e)),
            Err(ClaimError::Etcd(e)) => {
                last_error = format!("{endpoint}: {e}");
                log::warn!("etcd {last_error}; retrying");
            }
        }
    }
    unreachable!("the loop returns at the deadline")
}

/// Adopts the handed-over lease if etcd still has it for us, else claims
/// (the handed-over subnet, if there was one: the TUN already has its
/// address).
async fn claim_or_adopt(
    client: &mut etcd_client::Client,
    src: &EtcdSource,
    network: &NetworkConfig,
    holder: &LeaseHolder,
    file: &str,
    handed: Option<HandedLease>,
) -> Result<Claimed, ClaimError> {
    let Some(handed) = handed else { return claim_lease(client, src, network, holder, file).await };
    if let Some(adopted) = adopt_lease(client, src, network, holder, handed).await? {
        return Ok(adopted);
    }
    log::warn!("etcd: the lease handed over for {} is gone or no longer this node's; claiming the subnet again", handed.subnet);
    let pinned = EtcdSource { given_subnet: Some(handed.subnet), ..src.clone() };
    claim_lease(client, &pinned, network, holder, file).await
}

/// The start-up state once the subnet is held: the first peers, the lease
/// to renew, the state file written.
fn established(
    connector: Connector,
    src: &EtcdSource,
    network: NetworkConfig,
    claimed: Claimed,
    holder: LeaseHolder,
    endpoint: &str,
) -> Bootstrap {
    let Claimed { subnet, subnet6, lease_id, revision, listed, renew_in, adopted, written } = claimed;
    let scope = TableScope {
        own: std::iter::once(subnet).chain(subnet6).collect(),
        networks: std::iter::once(network.network()).chain(network.network6()).collect(),
        underlay_ipv4: holder.public_ip.is_ipv4(),
    };
    let expect = LeaseExpect { backend: network.backend, port: network.port };
    let own_name = flannel::lease_name(&subnet, subnet6.as_ref());
    let mut leases = Leases::new(format!("{}/subnets/", src.prefix), own_name, expect, scope);
    let peers = leases
        .relist(&listed, None)
        .into_iter()
        .filter_map(|c| match c {
            PeerChange::Add(p) => Some(p),
            PeerChange::Remove(_) => None,
        })
        .collect();
    write_state(&src.state_dir, &network, &subnet, subnet6.as_ref());
    let range = |r: &SubnetRange| format!("/{} from {} to {}", r.subnet_len, r.address(r.min), r.address(r.max));
    log::info!(
        "etcd {endpoint}: network {} (subnets {}{}, {} backend, port {}); this node holds {subnet}{} (lease {lease_id:x}, ttl {} s{})",
        network.network(),
        range(&network.ipv4),
        network.ipv6.map(|r| format!("; IPv6 {}, subnets {}", r.network, range(&r))).unwrap_or_default(),
        network.backend.name(),
        network.port,
        subnet6.map(|s| format!(" and {s}")).unwrap_or_default(),
        src.lease_ttl.as_secs(),
        if adopted { format!(", carried over from the previous process, renewal due in {} s", renew_in.as_secs()) } else { String::new() }
    );
    Bootstrap {
        connector,
        renew_at: Instant::now() + renew_in,
        network,
        subnet,
        subnet6,
        lease_id,
        peers,
        leases,
        revision,
        holder,
        written,
    }
}

/// Writes `text` to a sibling temp file and renames it over `path`
/// (creating the directory if needed), so a reader sees the old file or the
/// new one. The temp file's name carries our PID: two processes writing the
/// same path never share one (the last rename wins, whole).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The lease this node holds for its subnet, as the etcd thread last
/// granted it: what a successor is told it may carry on with.
#[derive(Debug)]
pub struct OwnLease {
    pub subnet: Prefix,
    lease_id: AtomicI64,
    renew_at_unix_ms: AtomicU64,
}

impl OwnLease {
    fn new(subnet: Prefix, lease_id: i64, renew_at: Instant) -> OwnLease {
        let lease = OwnLease { subnet, lease_id: AtomicI64::new(0), renew_at_unix_ms: AtomicU64::new(0) };
        lease.set(lease_id, renew_at);
        lease
    }

    /// Records a new lease (after a renewal) and when it is due again.
    fn set(&self, lease_id: i64, renew_at: Instant) {
        let ms = crate::stats::unix_time_ms() + renew_at.saturating_duration_since(Instant::now()).as_millis() as u64;
        self.lease_id.store(lease_id, Ordering::Relaxed);
        self.renew_at_unix_ms.store(ms, Ordering::Relaxed);
    }

    pub fn lease_id(&self) -> i64 {
        self.lease_id.load(Ordering::Relaxed)
    }

    /// When the lease is due for renewal (Unix time, ms).
    pub fn renew_at_unix_ms(&self) -> u64 {
        self.renew_at_unix_ms.load(Ordering::Relaxed)
    }
}

/// The running etcd thread.
pub struct EtcdHandle {
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub lease: Arc<OwnLease>,
}

impl EtcdHandle {
    /// Starts the watch/renew thread over what [`bootstrap`] established.
    pub fn spawn(
        boot: Bootstrap,
        config: &Config,
        commands: Sender<Command>,
        counters: Arc<ControlCounters>,
    ) -> std::io::Result<EtcdHandle> {
        let src = config.etcd().cloned().ok_or_else(|| std::io::Error::other("not an etcd configuration"))?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopping = Arc::new(AtomicBool::new(false));
        counters.malformed_leases.fetch_add(boot.leases.uncounted_malformed, Ordering::Relaxed);
        let lease = Arc::new(OwnLease::new(boot.subnet, boot.lease_id, boot.renew_at));
        let (stop2, stopping2, lease2) = (Arc::clone(&stop), Arc::clone(&stopping), Arc::clone(&lease));
        let thread = std::thread::Builder::new().name("encapd-etcd".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    counters.healthy.store(false, Ordering::Relaxed);
                    log::error!("etcd: cannot start the client runtime: {e}; the table stays as it is");
                    return;
                }
            };
            let mut watcher = Watcher::new(boot, src, commands, counters, stopping2, lease2);
            runtime.block_on(async {
                tokio::select! {
                    _ = stop2.notified() => {}
                    _ = watcher.run() => {}
                }
            });
        })?;
        Ok(EtcdHandle { stop, stopping, thread: Some(thread), lease })
    }

    /// Stops the thread and waits for it (the lease is left to expire, as
    /// flanneld does, so a restart finds its subnet again).
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EtcdHandle {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
