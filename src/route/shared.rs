//! How the one table writer (the control thread) hands snapshots to many
//! readers (the workers, the metrics endpoint): an [`ArcSwap`] holding the
//! current [`SubnetTable`], replaced whole by one atomic pointer swap, and a
//! per-reader [`TableReplica`] that caches the pointer so that a load costs
//! a few nanoseconds and never waits for the writer.

use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use super::SubnetTable;

/// The published table every reader sees; the control thread is its only writer.
pub type SharedTable = Arc<ArcSwap<SubnetTable>>;

/// Publishes `table` as the first version readers will see.
pub fn share(table: SubnetTable) -> SharedTable {
    Arc::new(ArcSwap::from_pointee(table))
}

/// One reader's private view of the published table.
pub struct TableReplica {
    cache: Cache<SharedTable, Arc<SubnetTable>>,
}

impl TableReplica {
    pub fn new(table: &SharedTable) -> Self {
        TableReplica { cache: Cache::new(Arc::clone(table)) }
    }

    /// The newest snapshot. A worker calls this once per batch, so that every
    /// packet of a batch is decided by one version.
    #[inline]
    pub fn load(&mut self) -> &Arc<SubnetTable> {
        self.cache.load()
    }
}
