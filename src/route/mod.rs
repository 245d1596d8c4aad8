//! Which host owns which container subnet: prefixes, and the immutable,
//! longest-prefix-match [`SubnetTable`] snapshot the workers read.

mod dir;
mod prefix;
mod table;

pub use prefix::{Prefix, PrefixError};
pub use table::{PeerSpec, Route, SubnetTable, TableError, TableScope};
