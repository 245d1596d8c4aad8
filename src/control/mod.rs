//! The control thread: the one writer of the subnet table. It owns the
//! table's sources (the peers file, or etcd through [`etcd`]), applies
//! [`Command`]s one at a time, builds each new snapshot, validates it whole
//! and publishes it with one atomic pointer swap. Workers never wait for it
//! and it never waits for them; a rejected change leaves the previous table
//! in force.

pub mod etcd;
mod file;
pub mod flannel;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

pub use crate::stats::ControlCounters;

use crate::config::{Config, PeersError, PeersFile};
use crate::route::{PeerSpec, Prefix, SharedTable, SubnetTable, TableError, TableScope};

/// Everything that changes the table, from any source (the file watcher,
/// SIGHUP, the etcd watch).
#[derive(Debug)]
pub enum Command {
    /// Re-read the peers file.
    Reload,
    /// Peer changes applied in order and published as one table (the etcd
    /// source sends every watch response, and the whole lease list after a
    /// re-list, this way).
    ApplyPeers { changes: Vec<PeerChange>, why: String },
    /// Stop the control thread.
    Shutdown,
}

/// Called on the control thread with every table it publishes, right
/// after the workers can see it (the kernel path's routes map follows the
/// table this way).
pub type TableListener = Box<dyn FnMut(&SubnetTable) + Send>;

/// Why a first table could not be built; each message names the file and
/// the field or entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The peers file named by the configuration cannot be read.
    #[error("{config}: [control] peers = {path:?}: cannot read: {source}")]
    PeersUnreadable { config: String, path: String, source: std::io::Error },
    /// The peers file is not valid (its message names the file and entry).
    #[error("{0}")]
    Peers(PeersError),
    /// The peers are valid one by one but not together.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Table(Vec<TableError>),
}

/// One change in a [`Command::ApplyPeers`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    Add(PeerSpec),
    Remove(Prefix),
}

/// A running control thread; stopped (and waited for) on
/// [`shutdown`](Self::shutdown) or drop.
pub struct ControlHandle {
    pub commands: Sender<Command>,
    pub counters: Arc<ControlCounters>,
    thread: Option<JoinHandle<()>>,
    _watcher: Option<file::PeersWatcher>,
    etcd: Option<etcd::EtcdHandle>,
}

impl ControlHandle {
    /// The etcd lease this node holds (with the etcd source).
    pub fn own_lease(&self) -> Option<Arc<etcd::OwnLease>> {
        self.etcd.as_ref().map(|e| Arc::clone(&e.lease))
    }

    /// Stops the thread (and the etcd source) and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(e) = self.etcd.take() {
            e.stop();
        }
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct ControlState {
    config: Config,
    scope: TableScope,
    table: SharedTable,
    counters: Arc<ControlCounters>,
    file_peers: Vec<PeerSpec>,
    /// Text of the peers file last applied, to skip no-op reloads.
    file_text: Option<String>,
    /// Peers from `ApplyPeers` (the etcd source), by subnet.
    extra_peers: BTreeMap<Prefix, PeerSpec>,
    listener: Option<TableListener>,
}

/// Writes flannel's `subnet.env` for this node (when configured): what the
/// CNI plugin wires pods with. Atomic: a reader sees the old or the new file.
pub fn write_subnet_env(config: &Config, tun_mtu: u32) -> std::io::Result<()> {
    let Some(path) = &config.subnet_env else { return Ok(()) };
    let v6 = config.cidr6.zip(config.subnet6);
    etcd::write_atomically(path, &flannel::subnet_env(&config.cidr, &config.subnet, v6, tun_mtu))
}

/// The first table and what it was built from.
pub struct InitialTable {
    pub table: SubnetTable,
    pub peers: Vec<PeerSpec>,
    /// The peers-file text the table was built from.
    pub file_text: Option<String>,
}

/// Builds the first table from the peers file; errors are for `check` and
/// for refusing to start.
pub fn initial_table(config: &Config) -> Result<InitialTable, ControlError> {
    let (peers, file_text) = match config.peers_path() {
        Some(path) => {
            let PeersFile { text, peers } = crate::config::load_peers(path, config.peer_defaults()).map_err(|e| match e {
                PeersError::Read { file, source } => {
                    ControlError::PeersUnreadable { config: config.path.display().to_string(), path: file, source }
                }
                other => ControlError::Peers(other),
            })?;
            (peers, Some(text))
        }
        None => (Vec::new(), None),
    };
    let table = SubnetTable::build(1, &config.table_scope(), &peers).map_err(ControlError::Table)?;
    Ok(InitialTable { table, peers, file_text })
}

/// Starts the control thread over an already published `table`, built from
/// `file_peers` read as `file_text`. The file is checked once more as soon as
/// it is watched, so a change made between the first read and the start of
/// the watch is not missed. With the etcd source, `etcd` is what
/// [`etcd::bootstrap`] returned: its peers are the table's, and the etcd
/// thread goes on watching from where the bootstrap listed.
pub fn spawn(
    config: Config,
    table: SharedTable,
    file_peers: Vec<PeerSpec>,
    file_text: Option<String>,
    etcd: Option<etcd::Bootstrap>,
    listener: Option<TableListener>,
) -> std::io::Result<ControlHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let counters = Arc::new(ControlCounters::default());
    let extra_peers: BTreeMap<Prefix, PeerSpec> =
        etcd.as_ref().map(|b| b.peers.iter().map(|p| (p.subnet, p.clone())).collect()).unwrap_or_default();
    let etcd = match etcd {
        Some(boot) => Some(etcd::EtcdHandle::spawn(boot, &config, tx.clone(), Arc::clone(&counters))?),
        None => None,
    };
    let watcher = match config.peers_path() {
        Some(path) => Some(file::PeersWatcher::start(path, tx.clone())?),
        None => None,
    };
    if watcher.is_some() {
        let _ = tx.send(Command::Reload);
    }
    let state = ControlState {
        scope: config.table_scope(),
        config,
        table,
        counters: Arc::clone(&counters),
        file_peers,
        file_text,
        extra_peers,
        listener,
    };
    let thread = std::thread::Builder::new().name("encapd-control".into()).spawn(move || run(state, rx))?;
    Ok(ControlHandle { commands: tx, counters, thread: Some(thread), _watcher: watcher, etcd })
}

fn run(mut state: ControlState, rx: Receiver<Command>) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Reload => {
                // Editors and `mv` produce bursts of events: coalesce them.
                std::thread::sleep(std::time::Duration::from_millis(20));
                let mut shutdown = false;
                for extra in rx.try_iter() {
                    match extra {
                        Command::Reload => {}
                        Command::Shutdown => shutdown = true,
                        other => state.apply(other),
                    }
                }
                state.reload_file();
                if shutdown {
                    break;
                }
            }
            Command::Shutdown => break,
            other => state.apply(other),
        }
    }
}

impl ControlState {
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::ApplyPeers { changes, why } => self.apply_peers(changes, &why),
            Command::Reload => self.reload_file(),
            Command::Shutdown => {}
        }
    }

    /// Applies `changes` to the extra peers and publishes once; a table
    /// that does not validate is not published and the changes are undone.
    fn apply_peers(&mut self, changes: Vec<PeerChange>, why: &str) {
        let previous = self.extra_peers.clone();
        for change in changes {
            match change {
                PeerChange::Add(peer) => {
                    self.extra_peers.insert(peer.subnet, peer);
                }
                PeerChange::Remove(subnet) => {
                    self.extra_peers.remove(&subnet);
                }
            }
        }
        if !self.publish(why) {
            self.extra_peers = previous;
        }
    }

    fn reload_file(&mut self) {
        let Some(path) = self.config.peers_path() else { return };
        let text = match crate::config::read_peers_text(path) {
            Ok(t) => t,
            Err(e) => {
                self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                self.counters.healthy.store(false, Ordering::Relaxed);
                log::error!("{e}; keeping table version {}", self.table.load().version());
                return;
            }
        };
        if self.file_text.as_deref() == Some(text.as_str()) {
            self.counters.healthy.store(true, Ordering::Relaxed);
            return;
        }
        match crate::config::parse_peers(&text, &path.display().to_string(), self.config.peer_defaults()) {
            Ok(peers) => {
                let previous = std::mem::replace(&mut self.file_peers, peers);
                if self.publish("peers file changed") {
                    self.file_text = Some(text);
                } else {
                    self.file_peers = previous;
                }
            }
            Err(e) => {
                self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                self.counters.healthy.store(false, Ordering::Relaxed);
                log::error!("rejected peers file change: {e}; keeping table version {}", self.table.load().version());
            }
        }
    }

    /// Builds and publishes the next table; false (and nothing published)
    /// when it does not validate.
    fn publish(&mut self, why: &str) -> bool {
        let version = self.table.load().version() + 1;
        let peers: Vec<PeerSpec> = self.file_peers.iter().chain(self.extra_peers.values()).cloned().collect();
        match SubnetTable::build(version, &self.scope, &peers) {
            Ok(table) => {
                let (routes, peer_count) = (table.len(), table.peer_count());
                let table = Arc::new(table);
                self.table.store(Arc::clone(&table));
                if let Some(listener) = &mut self.listener {
                    listener(&table);
                }
                self.counters.tables_published.fetch_add(1, Ordering::Relaxed);
                self.counters.table_published_unix_ms.store(crate::stats::unix_time_ms(), Ordering::Relaxed);
                self.counters.healthy.store(true, Ordering::Relaxed);
                log::info!("subnet table version {version} published ({why}): {routes} routes, {peer_count} peers");
                true
            }
            Err(errors) => {
                self.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
                self.counters.healthy.store(false, Ordering::Relaxed);
                for e in &errors {
                    log::error!("rejected table change ({why}): {e}");
                }
                log::error!("keeping table version {}", version - 1);
                false
            }
        }
    }
}
