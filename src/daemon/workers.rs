//! The running workers, as one guard: [`WorkerSet::start`] spawns one
//! worker per TUN queue; dropping the set (on a clean stop or on any error
//! path after the start) sets the stop flag and joins every worker, so no
//! path returns while a worker still runs.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::dataplane::Dataplane;
use super::{DaemonError, Plan};
use crate::config::{Config, IngressChecksum};
use crate::datapath::context::{Lifecycle, ReadySignal, WorkerContext};
use crate::datapath::core::CoreSetup;
use crate::datapath::packet::NodeScope;
use crate::datapath::worker;
use crate::route::SharedTable;
use crate::stats::WorkerCounters;
use crate::stats::latency::LatencyRecorder;

/// How long start-up waits for every worker to set up its I/O: far more
/// than it takes (milliseconds), because a busy machine can delay a new
/// thread by seconds (10 s was seen to expire under a load average of 10
/// on 2 cores) and a start-up that gives up is worse than a slow one.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Running workers; stopped and joined on drop.
pub struct WorkerSet {
    lifecycle: Arc<Lifecycle>,
    handles: Vec<JoinHandle<std::io::Result<()>>>,
    ready: crossbeam_channel::Receiver<usize>,
}

/// What every worker shares.
pub struct WorkerShared<'a> {
    pub table: &'a SharedTable,
    pub counters: &'a [Arc<WorkerCounters>],
    /// Workers clear their own capabilities before they say ready (false
    /// when the process switches user instead; see `ReadySignal`).
    pub clear_caps: bool,
    /// The WireGuard node (`backend = "wireguard"`).
    pub wireguard: Option<Arc<crate::wireguard::Node>>,
}

impl WorkerSet {
    /// Starts one worker per TUN queue and socket of `dataplane`.
    pub fn start(
        config: &Config,
        plan: &Plan,
        dataplane: Dataplane,
        shared: WorkerShared<'_>,
        recorders: Vec<LatencyRecorder>,
    ) -> Result<WorkerSet, DaemonError> {
        let (ready_tx, ready) = crossbeam_channel::bounded(config.workers);
        let mut set = WorkerSet { lifecycle: Arc::new(Lifecycle::default()), handles: Vec::with_capacity(config.workers), ready };
        let node = NodeScope { own_v4: config.subnet, own_v6: config.subnet6, max_inner: plan.tun_mtu as usize };
        let fds = dataplane.tun_queues.into_iter().zip(dataplane.sockets).zip(dataplane.senders);
        for (id, (((tun, udp), senders), latency)) in fds.zip(recorders).enumerate() {
            let ctx = WorkerContext {
                id,
                cpu: plan.cpus[id],
                sched: config.worker_sched,
                engine: plan.engine,
                backend: config.backend,
                tun,
                udp,
                senders,
                batch: config.batch,
                uring: plan.uring,
                busy_poll: std::time::Duration::from_micros(u64::from(config.busy_poll_us)),
                core: CoreSetup {
                    worker: id,
                    node: node.clone(),
                    vnet_hdr: dataplane.vnet_hdr,
                    uso: dataplane.uso,
                    gso: dataplane.gso,
                    trust_outer_checksum: config.ingress_checksum == IngressChecksum::TrustOuter,
                    batch: config.batch,
                    table: Arc::clone(shared.table),
                    counters: Arc::clone(&shared.counters[id]),
                    latency,
                },
                wireguard: shared.wireguard.clone(),
                lifecycle: Arc::clone(&set.lifecycle),
                ready: ReadySignal::new(id, ready_tx.clone(), shared.clear_caps),
            };
            let handle = worker::spawn(ctx).map_err(|source| DaemonError::Io { what: "starting a worker thread".into(), source })?;
            set.handles.push(handle);
        }
        Ok(set)
    }

    /// Waits until every worker has its fds and ring (and, unless the
    /// process switches user, has shed its capabilities).
    pub fn wait_ready(&self) -> Result<(), DaemonError> {
        let total = self.handles.len();
        for ready in 0..total {
            if self.ready.recv_timeout(READY_TIMEOUT).is_err() {
                // A worker that returned failed (its error is logged); one
                // still running is slow, which says something else.
                let why = match self.failed() {
                    Some(id) => format!("worker {id} failed during setup (see above)"),
                    None => format!(
                        "{ready} of {total} workers ready after {} s; the others are still setting up (is the machine overloaded?)",
                        READY_TIMEOUT.as_secs()
                    ),
                };
                return Err(DaemonError::Io { what: "starting the workers".into(), source: std::io::Error::other(why) });
            }
        }
        Ok(())
    }

    /// The first worker that has stopped on its own (an I/O error it could
    /// not survive), if any.
    pub fn failed(&self) -> Option<usize> {
        self.handles.iter().position(JoinHandle::is_finished)
    }

    /// What the workers are told: pause and resume go through it (a handover).
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        Arc::clone(&self.lifecycle)
    }

    /// Stops every worker (each finishes its batch) and waits for them.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.lifecycle.stop_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for WorkerSet {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
