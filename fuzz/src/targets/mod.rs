//! The fuzz targets' checks, one module per target, each with `run(data)`:
//! what libFuzzer calls (`fuzz_targets/*.rs`) and what the regression
//! replay calls (`tests/replay.rs`). A target panics on a finding.

pub mod config_file;
pub mod egress;
pub mod etcd_lease;
pub mod icmp;
pub mod ingress;
pub mod offload_coalesce;
pub mod offload_split;
pub mod peers_file;
pub mod wg_messages;
pub mod wg_responder;

/// A target's checks: runs one input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz_targets/*.rs`, `cargo fuzz list`).
pub const ALL: [(&str, Target); 10] = [
    ("config_file", config_file::run as Target),
    ("egress", egress::run as Target),
    ("etcd_lease", etcd_lease::run as Target),
    ("icmp", icmp::run as Target),
    ("ingress", ingress::run as Target),
    ("offload_coalesce", offload_coalesce::run as Target),
    ("offload_split", offload_split::run as Target),
    ("peers_file", peers_file::run as Target),
    ("wg_messages", wg_messages::run as Target),
    ("wg_responder", wg_responder::run as Target),
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    ALL.iter().find(|(n, _)| *n == name).map(|&(_, run)| run)
}
