//! The etcd source: flannel's lease store (etcd v3) as the control plane.
//!
//! Start-up ([`bootstrap`], on the main thread, before the TUN exists):
//! read `<prefix>/config`, reconcile it with the config file, claim this
//! node's subnet (the configured one, else the one remembered in the state
//! file, else the one etcd still holds for our public IP, else a random free
//! one between SubnetMin and SubnetMax) in a transaction guarded by
//! `Version(key) == 0` with a lease of `lease_ttl`, and list the leases of
//! the other nodes for the first table.
//!
//! Then ([`EtcdHandle::spawn`], after the privilege drop) a thread with a
//! current-thread tokio runtime watches `<prefix>/subnets` from the listed
//! revision + 1 and turns every response into one [`Command::ApplyPeers`]
//! for the control thread, which stays the only table writer. It renews
//! the lease `renew_margin` before expiry (fresh grant + put, as flanneld),
//! re-lists after a compaction, and on any failure marks the source
//! unhealthy (the `encapd_control_connected` gauge), keeps the last table,
//! and retries with capped backoff across every endpoint, resuming the
//! watch from the last revision it saw.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

use super::flannel::{self, NetworkConfig, Skip};
use super::{Command, ControlCounters, PeerChange};
use crate::config::{Config, ControlSource, EtcdSource};
use crate::route::{PeerSpec, Prefix, TableScope};

/// How long start-up waits for etcd (and for `<prefix>/config`).
const STARTUP_WAIT: Duration = Duration::from_secs(30);
/// Bound on every single etcd request.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry backoff: starts here, doubles, capped.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle watch is asked for a progress notification; a watch
/// silent for twice this long is re-created.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// At most one "etcd unreachable" log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The state file in `[control] state_dir`.
pub const STATE_FILE: &str = "encapd-etcd-lease.json";

/// Why start-up with etcd failed: the configuration (exit 2) or etcd (exit 1).
#[derive(Debug)]
pub enum BootstrapError {
    Config(String),
    Unavailable(String),
}

/// Everything needed to open a client, read while still privileged (the
/// TLS key may be readable by root only).
#[derive(Clone)]
struct Connector {
    endpoints: Vec<String>,
    options: ConnectOptions,
    next: usize,
}

impl Connector {
    fn new(src: &EtcdSource) -> Result<Connector, String> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let (Some(u), Some(p)) = (&src.username, &src.password) {
            options = options.with_user(u.clone(), p.clone());
        }
        if let Some(ca) = &src.ca {
            let read = |p: &Path, key: &str| {
                std::fs::read(p).map_err(|e| format!("[control] {key} = {:?}: cannot read: {e}", p.display().to_string()))
            };
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(ca, "ca")?));
            if let (Some(cert), Some(key)) = (&src.cert, &src.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
            }
            options = options.with_tls(tls);
        }
        Ok(Connector { endpoints: src.endpoints.clone(), options, next: 0 })
    }

    /// A client for the next endpoint in turn (connections are lazy: the
    /// first request tells whether it works).
    async fn connect(&mut self) -> Result<(Client, String), String> {
        let endpoint = self.endpoints[self.next % self.endpoints.len()].clone();
        self.next = (self.next + 1) % self.endpoints.len();
        match tokio::time::timeout(OP_TIMEOUT, Client::connect([endpoint.as_str()], Some(self.options.clone()))).await {
            Ok(Ok(c)) => Ok((c, endpoint)),
            Ok(Err(e)) => Err(format!("{endpoint}: {e}")),
            Err(_) => Err(format!("{endpoint}: connect timed out")),
        }
    }
}

/// Runs one etcd request with [`OP_TIMEOUT`].
async fn op<T>(what: &str, f: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timed out after {} s", OP_TIMEOUT.as_secs())),
    }
}

/// One lease as listed: key name (after `<prefix>/subnets/`), value, revision.
struct Listed {
    name: String,
    value: Vec<u8>,
    mod_revision: i64,
}

async fn list_subnets(client: &mut Client, subnets_prefix: &str) -> Result<(i64, Vec<Listed>), String> {
    let resp = op("listing leases", client.get(subnets_prefix, Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let listed = resp
        .kvs()
        .iter()
        .map(|kv| Listed {
            name: String::from_utf8_lossy(&kv.key()[subnets_prefix.len().min(kv.key().len())..]).into_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        })
        .collect();
    Ok((revision, listed))
}

/// What start-up established; handed to [`EtcdHandle::spawn`].
pub struct Bootstrap {
    connector: Connector,
    network: NetworkConfig,
    /// This node's lease.
    pub subnet: Prefix,
    lease_id: i64,
    renew_at: Instant,
    /// The leases of the other nodes, for the first table.
    pub peers: Vec<PeerSpec>,
    leases: Leases,
    /// The revision the peers were listed at.
    pub revision: i64,
}

/// Reads the network config and claims this node's lease; fills in
/// `config.subnet`, `cidr` and `port` from etcd. Blocks (at most about
/// [`STARTUP_WAIT`] while etcd is unreachable).
pub fn bootstrap(config: &mut Config) -> Result<Bootstrap, BootstrapError> {
    let src = match &config.control {
        ControlSource::Etcd(e) => (**e).clone(),
        ControlSource::File { .. } => return Err(BootstrapError::Config("bootstrap: not an etcd configuration".into())),
    };
    let connector = Connector::new(&src).map_err(|e| BootstrapError::Config(format!("{}: {e}", config.path.display())))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BootstrapError::Unavailable(format!("starting the etcd client runtime: {e}")))?;
    let file = config.path.display().to_string();
    let public_ip = config.public_ip;
    let boot = runtime.block_on(claim(connector, src.clone(), file, public_ip));
    // The runtime's threads (if any) end here, before privileges are dropped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let boot = boot?;
    config.subnet = boot.subnet;
    config.cidr = boot.network.network;
    config.port = boot.network.port;
    if let ControlSource::Etcd(e) = &mut config.control {
        e.resolved = true;
    }
    Ok(boot)
}

async fn claim(mut connector: Connector, src: EtcdSource, file: String, public_ip: IpAddr) -> Result<Bootstrap, BootstrapError> {
    let deadline = Instant::now() + STARTUP_WAIT;
    let config_key = format!("{}/config", src.prefix);
    let subnets_prefix = format!("{}/subnets/", src.prefix);
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    let mut attempts = 0;
    loop {
        if Instant::now() >= deadline {
            return Err(BootstrapError::Unavailable(format!(
                "etcd ({}): no usable answer within {} s: {last_error}",
                src.endpoints.join(", "),
                STARTUP_WAIT.as_secs()
            )));
        }
        if attempts > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        attempts += 1;
        let (mut client, endpoint) = match connector.connect().await {
            Ok(c) => c,
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        let resp = match op("reading the network config", client.get(config_key.as_str(), None)).await {
            Ok(r) => r,
            Err(e) => {
                last_error = format!("{endpoint}: {e}");
                log::warn!("etcd {last_error}; retrying");
                continue;
            }
        };
        let Some(kv) = resp.kvs().first() else {
            last_error = format!("{config_key} does not exist (write flannel's network config there)");
            if attempts == 1 {
                log::warn!("etcd: {last_error}; waiting for it");
            }
            continue;
        };
        let text = String::from_utf8_lossy(kv.value()).into_owned();
        let network = NetworkConfig::parse(&text).map_err(|e| BootstrapError::Config(format!("etcd {config_key}: {e}")))?;
        if let Some(given) = src.given_cidr
            && given != network.network
        {
            return Err(BootstrapError::Config(format!(
                "{file}: [network] cidr = {given}: differs from Network {} in etcd {config_key} (leave cidr out to take etcd's)",
                network.network
            )));
        }
        if let Some(given) = src.given_port
            && given != network.port
        {
            return Err(BootstrapError::Config(format!(
                "{file}: [network] port = {given}: differs from Backend.Port {} in etcd {config_key} (leave port out to take etcd's)",
                network.port
            )));
        }
        match claim_lease(&mut client, &src, &network, &subnets_prefix, public_ip, &file).await {
            Ok(Claimed { subnet, lease_id, revision, listed }) => {
                let scope = scope_of(&network, subnet, public_ip);
                let mut leases = Leases::new(subnets_prefix.clone(), flannel::lease_name(&subnet), network.port, scope);
                let changes = leases.relist(&listed, None);
                let peers = changes
                    .into_iter()
                    .filter_map(|c| match c {
                        PeerChange::Add(p) => Some(p),
                        PeerChange::Remove(_) => None,
                    })
                    .collect();
                write_state(&src.state_dir, &network.network, &subnet);
                log::info!(
                    "etcd {endpoint}: network {} (subnets /{} from {} to {}, udp port {}); this node holds {subnet} (lease {lease_id:x}, ttl {} s)",
                    network.network,
                    network.subnet_len,
                    std::net::Ipv4Addr::from(network.subnet_min),
                    std::net::Ipv4Addr::from(network.subnet_max),
                    network.port,
                    src.lease_ttl.as_secs()
                );
                return Ok(Bootstrap {
                    connector,
                    renew_at: Instant::now() + src.lease_ttl.saturating_sub(src.renew_margin),
                    network,
                    subnet,
                    lease_id,
                    peers,
                    leases,
                    revision,
                });
            }
            Err(ClaimError::Config(e)) => return Err(BootstrapError::Config(e)),
            Err(ClaimError::Etcd(e)) => {
                last_error = format!("{endpoint}: {e}");
                log::warn!("etcd {last_error}; retrying");
            }
        }
    }
}

fn scope_of(network: &NetworkConfig, subnet: Prefix, public_ip: IpAddr) -> TableScope {
    TableScope { own: vec![subnet], networks: vec![network.network], underlay_ipv4: public_ip.is_ipv4() }
}

enum ClaimError {
    Config(String),
    Etcd(String),
}

impl From<String> for ClaimError {
    fn from(e: String) -> Self {
        ClaimError::Etcd(e)
    }
}

struct Claimed {
    subnet: Prefix,
    lease_id: i64,
    revision: i64,
    listed: Vec<Listed>,
}

/// Whose a listed lease is: ours (same PublicIP), another node's, or unreadable.
fn holder(value: &[u8]) -> Option<IpAddr> {
    flannel::parse_lease_value(value).ok().map(|a| IpAddr::V4(a.public_ip)).or_else(|| {
        // A lease of another backend still names its holder.
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        v.get("PublicIP")?.as_str()?.parse().ok()
    })
}

async fn claim_lease(
    client: &mut Client,
    src: &EtcdSource,
    network: &NetworkConfig,
    subnets_prefix: &str,
    public_ip: IpAddr,
    file: &str,
) -> Result<Claimed, ClaimError> {
    let remembered = read_state(&src.state_dir, &network.network);
    for _race in 0..5 {
        let (revision, listed) = list_subnets(client, subnets_prefix).await?;
        let held: HashMap<Prefix, (&Listed, Option<IpAddr>)> =
            listed.iter().filter_map(|l| flannel::parse_lease_name(&l.name).ok().map(|(p, _)| (p, (l, holder(&l.value))))).collect();
        let ours = |p: &Prefix| held.get(p).is_some_and(|(_, ip)| *ip == Some(public_ip));
        let free = |p: &Prefix| !held.keys().any(|h| h.overlaps(p)) || ours(p);
        let subnet = if let Some(given) = src.given_subnet {
            if !network.network.covers(&given) || network.network == given {
                return Err(ClaimError::Config(format!(
                    "{file}: [node] subnet = {given}: must lie inside Network {} from etcd",
                    network.network
                )));
            }
            if !free(&given) {
                let who = held.get(&given).and_then(|(_, ip)| *ip).map(|ip| ip.to_string()).unwrap_or_else(|| "another lease".into());
                return Err(ClaimError::Config(format!("{file}: [node] subnet = {given}: already leased in etcd to {who}")));
            }
            given
        } else if let Some(r) = remembered.filter(|r| network.network.covers(r) && free(r)) {
            r
        } else if let Some(p) = held.iter().filter(|(_, (_, ip))| *ip == Some(public_ip)).map(|(p, _)| *p).find(|p| network.allocatable(p))
        {
            p
        } else {
            let taken: Vec<Prefix> = held.keys().copied().collect();
            network.allocate(&taken, random_u64()).ok_or_else(|| {
                ClaimError::Config(format!(
                    "etcd: no free /{} subnet left in Network {} between SubnetMin and SubnetMax",
                    network.subnet_len, network.network
                ))
            })?
        };
        let key = format!("{subnets_prefix}{}", flannel::lease_name(&subnet));
        let value = flannel::lease_value(public_ip);
        let guard = match held.get(&subnet) {
            Some((l, _)) => Compare::mod_revision(key.as_str(), CompareOp::Equal, l.mod_revision),
            None => Compare::version(key.as_str(), CompareOp::Equal, 0),
        };
        let lease = op("granting a lease", client.lease_grant(src.lease_ttl.as_secs() as i64, None)).await?;
        let txn =
            Txn::new().when([guard]).and_then([TxnOp::put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease.id())))]);
        let resp = op("claiming the subnet", client.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(Claimed { subnet, lease_id: lease.id(), revision, listed });
        }
        log::info!("etcd: {key} was claimed by another node first; choosing again");
        let _ = op("revoking an unused lease", client.lease_revoke(lease.id())).await;
    }
    Err(ClaimError::Etcd("lost the race for a subnet 5 times in a row".into()))
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf)).is_ok() {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// The subnet this node held last time, if the state file names one in `network`.
fn read_state(dir: &Path, network: &Prefix) -> Option<Prefix> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let net: Prefix = v.get("Network")?.as_str()?.parse().ok()?;
    let subnet: Prefix = v.get("Subnet")?.as_str()?.parse().ok()?;
    (net == *network).then_some(subnet)
}

fn write_state(dir: &Path, network: &Prefix, subnet: &Prefix) {
    let text = format!("{{\"Network\":\"{network}\",\"Subnet\":\"{subnet}\"}}\n");
    if let Err(e) = write_atomically(&dir.join(STATE_FILE), &text) {
        log::warn!("cannot remember the subnet in {}: {e}", dir.join(STATE_FILE).display());
    }
}

/// Writes `text` to a sibling temp file and renames it over `path`
/// (creating the directory if needed).
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Writes flannel's `subnet.env` for the claimed subnet.
pub fn write_subnet_env(config: &Config, tun_mtu: u32) -> std::io::Result<()> {
    let Some(src) = config.etcd() else { return Ok(()) };
    write_atomically(&src.subnet_env, &flannel::subnet_env(&config.cidr, &config.subnet, tun_mtu))
}

/// The leases currently routed, and what has been logged about the rest.
struct Leases {
    subnets_prefix: String,
    own_name: String,
    port: u16,
    scope: TableScope,
    /// Routed leases: key name → subnet.
    routed: HashMap<String, Prefix>,
    /// Subnet → key name routing it (two keys may not route one subnet).
    by_subnet: HashMap<Prefix, String>,
    /// (key name, mod revision) of malformed values already counted.
    malformed_seen: HashSet<(String, i64)>,
    /// Keys of other backends already logged.
    backend_logged: HashSet<String>,
    /// Malformed leases seen before the counters existed (at start-up).
    uncounted_malformed: u64,
}

impl Leases {
    fn new(subnets_prefix: String, own_name: String, port: u16, scope: TableScope) -> Leases {
        Leases {
            subnets_prefix,
            own_name,
            port,
            scope,
            routed: HashMap::new(),
            by_subnet: HashMap::new(),
            malformed_seen: HashSet::new(),
            backend_logged: HashSet::new(),
            uncounted_malformed: 0,
        }
    }

    /// The name of a key under the subnets prefix, `None` for other keys.
    fn name_of<'a>(&self, key: &'a [u8]) -> Option<std::borrow::Cow<'a, str>> {
        key.strip_prefix(self.subnets_prefix.as_bytes()).map(String::from_utf8_lossy)
    }

    /// A put of `value` on `name`: the changes it makes to the table.
    fn put(&mut self, name: &str, value: &[u8], mod_revision: i64, counters: Option<&ControlCounters>, out: &mut Vec<PeerChange>) {
        if name == self.own_name {
            return;
        }
        let skip = match flannel::lease_peer(name, value, self.port, &self.scope) {
            Ok(peer) => match self.by_subnet.get(&peer.subnet) {
                Some(other) if other != name => Skip::Malformed(format!("subnet {} is already routed by lease {other}", peer.subnet)),
                _ => {
                    self.routed.insert(name.to_owned(), peer.subnet);
                    self.by_subnet.insert(peer.subnet, name.to_owned());
                    out.push(PeerChange::Add(peer));
                    return;
                }
            },
            Err(skip) => skip,
        };
        match &skip {
            Skip::Malformed(why) => {
                if self.malformed_seen.insert((name.to_owned(), mod_revision)) {
                    match counters {
                        Some(c) => {
                            c.malformed_leases.fetch_add(1, Ordering::Relaxed);
                        }
                        None => self.uncounted_malformed += 1,
                    }
                    log::warn!("etcd: skipping lease {}{name} (revision {mod_revision}): {why}", self.subnets_prefix);
                }
            }
            Skip::Backend(_) => {
                if self.backend_logged.insert(name.to_owned()) {
                    log::warn!("etcd: skipping lease {}{name}: {skip}", self.subnets_prefix);
                }
            }
        }
        self.delete(name, out);
    }

    /// A delete of `name` (or a put that made it unusable).
    fn delete(&mut self, name: &str, out: &mut Vec<PeerChange>) {
        if let Some(subnet) = self.routed.remove(name) {
            self.by_subnet.remove(&subnet);
            out.push(PeerChange::Remove(subnet));
        }
    }

    /// Replaces the whole set with a fresh listing.
    fn relist(&mut self, listed: &[Listed], counters: Option<&ControlCounters>) -> Vec<PeerChange> {
        let mut out = Vec::new();
        let present: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        let gone: Vec<String> = self.routed.keys().filter(|k| !present.contains(k.as_str())).cloned().collect();
        for name in gone {
            self.delete(&name, &mut out);
        }
        for l in listed {
            self.put(&l.name, &l.value, l.mod_revision, counters, &mut out);
        }
        out
    }
}

/// The running etcd thread.
pub struct EtcdHandle {
    stop: Arc<tokio::sync::Notify>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
        let public_ip = config.public_ip;
        counters.malformed_leases.fetch_add(boot.leases.uncounted_malformed, Ordering::Relaxed);
        let (stop2, stopping2) = (Arc::clone(&stop), Arc::clone(&stopping));
        let thread = std::thread::Builder::new().name("encapd-etcd".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    counters.healthy.store(false, Ordering::Relaxed);
                    log::error!("etcd: cannot start the client runtime: {e}; the table stays as it is");
                    return;
                }
            };
            let mut watcher = Watcher::new(boot, src, public_ip, commands, counters, stopping2);
            runtime.block_on(async {
                tokio::select! {
                    _ = stop2.notified() => {}
                    _ = watcher.run() => {}
                }
            });
        })?;
        Ok(EtcdHandle { stop, stopping, thread: Some(thread) })
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

/// How a watch session ended.
enum WatchEnd {
    /// The watched revision was compacted: list again.
    Relist,
    /// The connection failed: reconnect and resume.
    Failed(String),
}

struct Watcher {
    connector: Connector,
    src: EtcdSource,
    subnet: Prefix,
    own_key: String,
    own_value: String,
    lease_id: i64,
    renew_at: Instant,
    leases: Leases,
    /// Last revision applied.
    revision: i64,
    commands: Sender<Command>,
    counters: Arc<ControlCounters>,
    stopping: Arc<AtomicBool>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Watcher {
    fn new(
        boot: Bootstrap,
        src: EtcdSource,
        public_ip: IpAddr,
        commands: Sender<Command>,
        counters: Arc<ControlCounters>,
        stopping: Arc<AtomicBool>,
    ) -> Watcher {
        let own_key = format!("{}/subnets/{}", src.prefix, flannel::lease_name(&boot.subnet));
        Watcher {
            connector: boot.connector,
            subnet: boot.subnet,
            own_key,
            own_value: flannel::lease_value(public_ip),
            lease_id: boot.lease_id,
            renew_at: boot.renew_at,
            leases: boot.leases,
            revision: boot.revision,
            src,
            commands,
            counters,
            stopping,
            last_log: None,
            suppressed: 0,
        }
    }

    /// Logs a failure at most once per [`LOG_EVERY`], counting the rest.
    fn log_failure(&mut self, what: &str) {
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            let more = if self.suppressed > 0 { format!(" ({} similar messages suppressed)", self.suppressed) } else { String::new() };
            log::warn!("etcd: {what}; forwarding continues with table version as is, retrying{more}");
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    fn send(&self, changes: Vec<PeerChange>, why: String) {
        if !changes.is_empty() {
            let _ = self.commands.send(Command::ApplyPeers { changes, why });
        }
    }

    async fn run(&mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut relist = false;
        let mut failures_in_a_row = 0usize;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            let (mut client, endpoint) = match self.connector.connect().await {
                Ok(c) => c,
                Err(e) => {
                    self.fail(&e);
                    failures_in_a_row += 1;
                    self.pause(&mut backoff, failures_in_a_row).await;
                    continue;
                }
            };
            match self.session(&mut client, &endpoint, &mut relist).await {
                WatchEnd::Relist => {
                    relist = true;
                    backoff = BACKOFF_MIN;
                    failures_in_a_row = 0;
                }
                WatchEnd::Failed(e) => {
                    self.fail(&format!("{endpoint}: {e}"));
                    failures_in_a_row += 1;
                    self.pause(&mut backoff, failures_in_a_row).await;
                }
            }
        }
    }

    fn fail(&mut self, e: &str) {
        if self.counters.healthy.swap(false, Ordering::Relaxed) {
            // Always log the moment the connection is lost.
            self.last_log = None;
        }
        self.log_failure(&format!("disconnected: {e}"));
    }

    /// Backs off once every endpoint has been tried in this round.
    async fn pause(&mut self, backoff: &mut Duration, failures_in_a_row: usize) {
        if failures_in_a_row.is_multiple_of(self.connector.endpoints.len()) {
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connected session: (re-list if asked), watch, renew; returns when
    /// the watch must be re-created.
    async fn session(&mut self, client: &mut Client, endpoint: &str, relist: &mut bool) -> WatchEnd {
        let subnets_prefix = self.leases.subnets_prefix.clone();
        if *relist {
            match list_subnets(client, &subnets_prefix).await {
                Ok((revision, listed)) => {
                    let changes = self.leases.relist(&listed, Some(&self.counters));
                    self.send(changes, format!("etcd re-list at revision {revision}"));
                    self.revision = revision;
                    *relist = false;
                }
                Err(e) => return WatchEnd::Failed(e),
            }
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(self.revision + 1);
        let mut stream = match op("starting the watch", client.watch(subnets_prefix.as_str(), Some(options))).await {
            Ok(s) => s,
            Err(e) => return WatchEnd::Failed(e),
        };
        // A watch on a member can stall without an error (e.g. around a
        // leader change): ask for a progress notification now and then, and
        // treat a stream that answers nothing as dead.
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_message = Instant::now();
        loop {
            let renew_in = self.renew_at.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = probe.tick() => {
                    if last_message.elapsed() > PROBE_EVERY * 2 {
                        return WatchEnd::Failed(format!("the watch answered nothing for {} s", last_message.elapsed().as_secs()));
                    }
                    if let Err(e) = stream.request_progress().await {
                        return WatchEnd::Failed(format!("watch progress request: {e}"));
                    }
                }
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return WatchEnd::Failed("the watch stream ended".into()),
                        Err(e) => return WatchEnd::Failed(format!("watch: {e}")),
                    };
                    last_message = Instant::now();
                    if resp.compact_revision() > 0 {
                        log::warn!("etcd: revision {} was compacted (oldest kept {}); listing the leases again", self.revision + 1, resp.compact_revision());
                        return WatchEnd::Relist;
                    }
                    if resp.canceled() {
                        return WatchEnd::Failed(format!("watch canceled by the server: {}", resp.cancel_reason()));
                    }
                    if resp.created() && !self.counters.healthy.swap(true, Ordering::Relaxed) {
                        log::info!("etcd {endpoint}: connected; watching {subnets_prefix} from revision {}", self.revision + 1);
                        self.suppressed = 0;
                    }
                    let mut changes = Vec::new();
                    let mut own_lost = false;
                    let mut last = self.revision;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        last = last.max(kv.mod_revision());
                        let Some(name) = self.leases.name_of(kv.key()).map(|n| n.into_owned()) else { continue };
                        match ev.event_type() {
                            EventType::Put => self.leases.put(&name, kv.value(), kv.mod_revision(), Some(&self.counters), &mut changes),
                            EventType::Delete => {
                                if name == self.leases.own_name {
                                    own_lost = true;
                                }
                                self.leases.delete(&name, &mut changes);
                            }
                        }
                    }
                    let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                    if !resp.events().is_empty() {
                        self.revision = last.max(self.revision);
                        let n = changes.len();
                        self.send(changes, format!("etcd revision {}: {n} lease changes", self.revision));
                    } else if header_rev > self.revision && !resp.created() {
                        // Progress notification: every event up to header_rev has been sent.
                        self.revision = header_rev;
                    }
                    if own_lost {
                        log::warn!("etcd: this node's lease {} disappeared; claiming {} again", self.own_key, self.subnet);
                        self.renew_at = Instant::now();
                    }
                }
                _ = tokio::time::sleep(renew_in) => {
                    if let Err(e) = self.renew(client).await {
                        // Try again soon; the watch keeps running.
                        self.renew_at = Instant::now() + Duration::from_secs(1);
                        self.log_failure(&format!("renewing the lease on {}: {e}", self.subnet));
                    }
                }
            }
        }
    }

    /// A fresh grant and a put of our key on it, guarded so that a subnet
    /// that another node took after ours expired is never overwritten.
    async fn renew(&mut self, client: &mut Client) -> Result<(), String> {
        let lease = op("granting a lease", client.lease_grant(self.src.lease_ttl.as_secs() as i64, None)).await?;
        let key = self.own_key.as_str();
        let put = TxnOp::put(key, self.own_value.as_str(), Some(PutOptions::new().with_lease(lease.id())));
        let ours = Txn::new().when([Compare::value(key, CompareOp::Equal, self.own_value.as_str())]).and_then([put.clone()]);
        let mut ok = op("renewing the lease", client.txn(ours)).await?.succeeded();
        if !ok {
            let absent = Txn::new().when([Compare::version(key, CompareOp::Equal, 0)]).and_then([put]);
            ok = op("claiming the subnet again", client.txn(absent)).await?.succeeded();
        }
        if !ok {
            let _ = op("revoking an unused lease", client.lease_revoke(lease.id())).await;
            return Err(format!(
                "{key} now belongs to another node; this node keeps forwarding for {} but must be restarted to get a new subnet",
                self.subnet
            ));
        }
        let old = std::mem::replace(&mut self.lease_id, lease.id());
        let _ = op("revoking the old lease", client.lease_revoke(old)).await;
        self.renew_at = Instant::now() + self.src.lease_ttl.saturating_sub(self.src.renew_margin);
        log::info!("etcd: lease on {} renewed (lease {:x}, ttl {} s)", self.subnet, self.lease_id, self.src.lease_ttl.as_secs());
        Ok(())
    }
}
