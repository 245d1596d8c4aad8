//! encapd-bench: the measurement side of encapd, a crate of its own so that
//! the daemon's dependency tree holds only what the daemon runs
//! (bench/README.md says why). It builds on the test environment the
//! integration tests use (`encapd-testbed`: namespaces, the two-node
//! wiring, underlay profiles, the mode registry).
//!
//! - [`run`]: `encapd-bench run`, the benchmark: every mode on every
//!   underlay profile, side by side, into a run directory.
//! - [`experiments`]: `trace-rtt`, `wakeups`, `profile`, `soak`,
//!   `etcd-propagation`.
//! - [`report`]: renders a run directory into `report.md` with SVG charts,
//!   and the README's performance block from the newest committed run
//!   ([`report::readme`]).
//! - [`exec`]: the programs they run, with deadlines, stopped by pid;
//!   [`clock`]: UTC time for names and logs.
//! - [`provenance`]: where a result came from (commit, binaries, machine)
//!   and the rule for results committed under `bench/runs/`.
//! - The `encapd-bench` binary adds the open-loop UDP latency probe
//!   (`encapd-bench latency client|server`) that `run` drives.

#![deny(unsafe_code)]

pub mod clock;
pub mod exec;
pub mod experiments;
pub mod provenance;
pub mod report;
pub mod run;

/// The commit this crate was built from: the full hash, `-dirty` appended
/// when its inputs differed from that commit, or `unknown` outside a git
/// checkout (set by the workspace's build.rs).
pub const GIT_COMMIT: &str = env!("ENCAPD_GIT_COMMIT");
