//! Which host owns which container subnet: prefixes, the immutable,
//! longest-prefix-match [`SubnetTable`] snapshot, and the way snapshots are
//! shared between the one writer and the readers ([`SharedTable`]).

mod dir;
mod prefix;
mod shared;
mod table;

pub use prefix::{Prefix, PrefixError};
pub use shared::{SharedTable, TableReplica, share};
pub use table::{PeerSpec, Route, SubnetTable, TableError, TableScope, WireGuardPeer};
