//! encapd-bench: the measurement side of encapd's benchmarks, a crate of its
//! own so that the daemon's dependency tree holds only what the daemon runs
//! (bench/README.md says why).
//!
//! - [`report`]: renders a `bench/run.sh` run directory into `report.md`
//!   with SVG charts, and the README's performance block from the newest
//!   committed run ([`report::readme`]).
//! - The `encapd-bench` binary adds the open-loop UDP latency probe
//!   (`encapd-bench latency client|server`) that `bench/run.sh` drives.

#![deny(unsafe_code)]

pub mod clock;
pub mod exec;
pub mod experiments;
pub mod report;
pub mod run;

/// The commit this crate was built from: the full hash, `-dirty` appended
/// when its inputs differed from that commit, or `unknown` outside a git
/// checkout (set by the workspace's build.rs).
pub const GIT_COMMIT: &str = env!("ENCAPD_GIT_COMMIT");
