//! Worker threads: one per TUN queue, each pinned to a core and owning its
//! queue fd, its UDP socket and (with `uring`) its ring. Workers share nothing
//! writable but their own counters; they read the subnet table through a
//! per-worker `arc_swap::Cache`, refreshed once per batch.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use arc_swap::{ArcSwap, Cache};

use super::engine;
use super::packet::NodeScope;
use crate::config::IoEngine;
use crate::route::SubnetTable;
use crate::stats::{WorkerCounters, bump};

/// The published table all workers read.
pub type SharedTable = Arc<ArcSwap<SubnetTable>>;

/// Everything one worker owns.
pub struct WorkerContext {
    pub id: usize,
    pub cpu: Option<usize>,
    pub engine: IoEngine,
    pub tun: OwnedFd,
    pub udp: OwnedFd,
    /// The socket has UDP_GRO on (receives may be coalesced runs).
    pub gro: bool,
    /// The kernel accepts UDP_SEGMENT sends.
    pub gso: bool,
    /// TUN reads and writes carry a virtio-net header (TSO/CSUM offloads on).
    pub vnet_hdr: bool,
    /// The TUN also takes UDP super-packets (USO), so UDP runs may be coalesced.
    pub uso: bool,
    pub batch: usize,
    pub node: NodeScope,
    pub table: SharedTable,
    pub counters: Arc<WorkerCounters>,
    pub lifecycle: Arc<Lifecycle>,
    /// Where the worker records its latency and batch histograms.
    pub latency: crate::stats::latency::LatencyRecorder,
    /// Told this worker's id once its I/O is set up (see [`announce_ready`]).
    pub ready: Option<crossbeam_channel::Sender<usize>>,
}

/// What the main thread tells running workers.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Finish the current batch and exit.
    pub stop: AtomicBool,
    /// Clear this thread's capabilities (`capset` acts per thread). Only
    /// used when the process keeps its user: a switch of user clears them
    /// in every thread at once.
    pub shed_caps: AtomicBool,
}

/// A worker's side of [`Lifecycle`], checked once per loop iteration.
#[derive(Debug, Default)]
pub struct LifecycleCheck {
    caps_shed: bool,
}

impl LifecycleCheck {
    /// False when the worker must stop.
    #[inline]
    pub fn keep_running(&mut self, l: &Lifecycle, id: usize) -> bool {
        if !self.caps_shed && l.shed_caps.load(Ordering::Relaxed) {
            self.caps_shed = true;
            if let Err(e) = crate::sys::privileges::clear_thread_caps() {
                log::warn!("worker {id}: could not clear its capabilities: {e}");
            }
        }
        !l.stop.load(Ordering::Relaxed)
    }
}

/// Called by an engine once its fds and ring exist.
pub fn announce_ready(ready: &mut Option<crossbeam_channel::Sender<usize>>, id: usize) {
    if let Some(tx) = ready.take() {
        let _ = tx.send(id);
    }
}

/// A worker's private view of the published table.
pub struct TableReplica {
    cache: Cache<SharedTable, Arc<SubnetTable>>,
}

impl TableReplica {
    pub fn new(table: &SharedTable) -> Self {
        TableReplica { cache: Cache::new(Arc::clone(table)) }
    }

    /// The newest snapshot; call once per batch so a batch sees one version.
    #[inline]
    pub fn load(&mut self, counters: &WorkerCounters) -> &Arc<SubnetTable> {
        let table = self.cache.load();
        let version = table.version();
        if counters.table_version.load(Ordering::Relaxed) != version {
            counters.table_version.store(version, Ordering::Relaxed);
        }
        table
    }
}

/// Starts a named worker thread; it pins itself and runs its engine until
/// the stop flag is set or an I/O error it cannot survive.
pub fn spawn(ctx: WorkerContext) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new().name(format!("encapd-w{}", ctx.id)).spawn(move || {
        if let Some(cpu) = ctx.cpu
            && !crate::sys::affinity::pin_current_thread(cpu)
        {
            log::warn!("worker {}: could not pin to CPU {cpu}; running unpinned", ctx.id);
        }
        let id = ctx.id;
        let result = match ctx.engine {
            IoEngine::Uring => engine::uring::run(ctx),
            IoEngine::Mmsg => engine::mmsg::run(ctx),
            IoEngine::Classic => engine::classic::run(ctx),
        };
        if let Err(e) = &result {
            log::error!("worker {id} stopped: {e}");
        }
        result
    })
}

/// Counts a forwarded packet.
#[inline]
pub fn count_egress(counters: &WorkerCounters, packets: u64, bytes: u64) {
    bump(&counters.egress_packets, packets);
    bump(&counters.egress_bytes, bytes);
}

/// Counts a delivered packet.
#[inline]
pub fn count_ingress(counters: &WorkerCounters, bytes: u64) {
    bump(&counters.ingress_packets, 1);
    bump(&counters.ingress_bytes, bytes);
}
