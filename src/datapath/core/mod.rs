//! The forwarding core: every decision a worker makes about packets,
//! written once for all I/O engines. It takes buffers in and hands plans
//! out — which packets to send where, in which GSO runs; which TUN writes
//! to make from which bytes — and counts what happened; it makes no
//! syscall and reads the clock only through the times the engine passes
//! in. An engine only moves bytes between its kernel interfaces and the
//! core (quinn's proto/driver split; smoltcp's interface over `phy`).
//!
//! The wire format is a type parameter ([`WireFormat`]): the core is the
//! same for flannel's raw IP in UDP and for any other encapsulation.
//!
//! A worker's loop, whatever its engine:
//! 1. [`ForwardingCore::begin_batch`]: one table snapshot and one clock
//!    reading for the batch;
//! 2. egress: [`egress_read`](ForwardingCore::egress_read) per TUN read,
//!    [`plan_sends`](ForwardingCore::plan_sends), one send per
//!    [`run`](ForwardingCore::run),
//!    [`send_done`](ForwardingCore::send_done) per completed send;
//! 3. ingress: [`ingress_datagram`](ForwardingCore::ingress_datagram) per
//!    receive, one TUN write per planned [`tun_write`](ForwardingCore::tun_write),
//!    [`tun_written`](ForwardingCore::tun_written) per completed write.

mod clock;
mod egress;
mod icmp;
mod ingress;
mod log_limit;

use std::sync::Arc;
use std::time::Instant;

pub use clock::{BatchClock, BatchTag};
pub use egress::{Outgoing, SendOutcome};
pub use icmp::{ICMP_BURST, ICMP_PER_SECOND, IcmpResponder, IcmpVerdict};
pub use ingress::{GroSegments, Piece, Reply, TunWrite, gro_segments};
pub use log_limit::LogLimiter;

use self::egress::EgressBatch;
use self::ingress::IngressScratch;
use crate::datapath::format::WireFormat;
use crate::datapath::packet::NodeScope;
use crate::route::{SharedTable, SubnetTable, TableReplica};
use crate::stats::latency::LatencyRecorder;
use crate::stats::{DropReason, WorkerCounters, bump};

/// What a worker's core is set up with.
pub struct CoreSetup {
    pub worker: usize,
    pub node: NodeScope,
    /// TUN reads and writes carry a virtio-net header (TUN offloads on).
    pub vnet_hdr: bool,
    /// The TUN also takes UDP super-packets (USO), so UDP runs may be coalesced.
    pub uso: bool,
    /// The kernel accepts UDP GSO sends.
    pub gso: bool,
    /// Merge received segments without re-verifying their transport
    /// checksums, which the verified outer UDP checksum covered
    /// (`[dataplane] ingress_checksum = "trust-outer"`).
    pub trust_outer_checksum: bool,
    /// Packets a batch is expected to hold (sizes the reusable buffers).
    pub batch: usize,
    pub table: SharedTable,
    pub counters: Arc<WorkerCounters>,
    pub latency: LatencyRecorder,
}

/// One worker's forwarding core; see the module documentation.
pub struct ForwardingCore<W: WireFormat> {
    worker: usize,
    node: NodeScope,
    format: W,
    vnet_hdr: bool,
    uso: bool,
    gso: bool,
    counters: Arc<WorkerCounters>,
    replica: TableReplica,
    /// The snapshot this batch is decided by.
    table: Arc<SubnetTable>,
    /// When this batch began.
    now: Instant,
    clock: BatchClock,
    latency: LatencyRecorder,
    icmp: IcmpResponder,
    log: LogLimiter,
    egress: EgressBatch,
    ingress: IngressScratch,
}

impl<W: WireFormat> ForwardingCore<W> {
    pub fn new(setup: CoreSetup, format: W, now: Instant) -> Self {
        let mut replica = TableReplica::new(&setup.table);
        let table = Arc::clone(replica.load());
        setup.counters.table_version.store(table.version(), std::sync::atomic::Ordering::Relaxed);
        // A batch can hold a whole super-packet's segments per read.
        let packets = setup.batch.max(1) * 8;
        ForwardingCore {
            worker: setup.worker,
            node: setup.node,
            format,
            vnet_hdr: setup.vnet_hdr,
            uso: setup.uso,
            gso: setup.gso,
            counters: setup.counters,
            replica,
            table,
            now,
            clock: BatchClock::new(now),
            latency: setup.latency,
            icmp: IcmpResponder::new(setup.vnet_hdr, now),
            log: LogLimiter::default(),
            egress: EgressBatch::with_capacity(packets),
            ingress: IngressScratch::with_capacity(packets, setup.trust_outer_checksum),
        }
    }

    /// Starts a batch at `now`: takes the newest table snapshot (every
    /// packet of the batch is decided by it) and hands the latency
    /// histograms over about once a second. Returns the batch's tag for
    /// operations submitted in it.
    #[inline]
    pub fn begin_batch(&mut self, now: Instant) -> BatchTag {
        self.refresh_table();
        self.now = now;
        self.latency.maybe_flush(now);
        self.clock.start(now)
    }

    /// Nothing happened for a while: take the newest table anyway (so that
    /// an idle worker reports the version it will run, not the one it ran
    /// last) and hand over the histograms.
    pub fn idle(&mut self, now: Instant) {
        self.refresh_table();
        self.latency.maybe_flush(now);
    }

    #[inline]
    fn refresh_table(&mut self) {
        let table = self.replica.load();
        if !Arc::ptr_eq(table, &self.table) {
            self.table = Arc::clone(table);
            self.counters.table_version.store(self.table.version(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The table snapshot this batch is decided by.
    #[inline]
    pub fn table(&self) -> &SubnetTable {
        &self.table
    }

    /// This node's own subnets and inner MTU.
    #[inline]
    pub fn node_scope(&self) -> &NodeScope {
        &self.node
    }

    /// When the batch in progress began.
    #[inline]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The tag of the batch in progress.
    pub fn batch_tag(&self) -> BatchTag {
        self.clock.current()
    }

    /// This worker's number, for log lines.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Counts `n` packets dropped for `reason` (e.g. a receive the kernel
    /// truncated, which the engine sees before the core does).
    pub fn drop_packets(&self, reason: DropReason, n: u64) {
        bump(&self.counters.drops[reason as usize], n);
    }

    /// Logs a warning naming this worker, at most once a second.
    pub fn warn(&mut self, message: impl FnOnce() -> String) {
        let worker = self.worker;
        self.log.warn(|| format!("worker {worker}: {}", message()));
    }
}

#[cfg(test)]
mod tests;
