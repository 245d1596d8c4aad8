//! encapd's test environment: what every integration suite (and the
//! benchmark tool) builds its namespaces, nodes and traffic from, one room
//! per concern:
//!
//! - [`env`]: the binary under test; whether root-only tests may run.
//! - [`cmd`]: commands with deadlines, polling, temporary directories.
//! - [`process`]: processes we started: signals by pid, stopping, threads.
//! - [`netns`]: namespaces (naming, stale clean-up, running code inside),
//!   and the permit that bounds how many topologies run at once.
//! - [`wiring`]: two nodes and their containers, linked, in namespaces.
//! - [`underlay`]: how the link between the nodes behaves (veth or wire).
//! - [`middle`]: the optional layer-2 forwarder between the nodes.
//! - [`instance`]: one encapd process (start, ready, counters, stop).
//! - [`mode`]: every benchmark and test mode, defined once.
//! - [`kernel_paths`]: plain routing and flannel.1-style kernel VXLAN on
//!   the two-node wiring, what encapd is measured against.
//! - [`bed`]: the two-node wiring hosting one mode after another (the
//!   benchmarks' topology).
//! - [`wg_peer`]: wireguard-go and boringtun on a node, laid out as
//!   flanneld lays out `flannel-wg` (benchmark pairs, encapd's interop
//!   peers).
//! - [`counters`]: what encapd reports (SIGUSR1 summary, `/metrics`).
//! - [`topology`]: the two-node topology with the peers-file source.
//! - [`etcd`]: a real etcd cluster in a namespace.
//! - [`fleet`]: N nodes on a bridged underlay, encapd or kernel VTEPs, pods.
//! - [`cluster`]: the fleet as a scenario (etcd, join/leave, rolling
//!   upgrade) with its measurements: [`mesh`] (full-mesh ICMP),
//!   [`converge`] (how fast every table learns a change), [`background`]
//!   (counted UDP streams and checked TCP transfers); [`stats`] summarises.
//! - [`cni`]: pods attached with the standard CNI plugins from subnet.env.
//! - [`notify`]: a service manager's notification socket, to see READY=1.
//! - [`packets`]: crafted packets (encapd's builder) and their sockets.
//! - [`traffic`]: self-checking TCP transfers and UDP streams.
//! - [`data`]: deterministic test data and its SHA-256.
//! - [`prometheus`]: a real Prometheus server in a namespace.
//! - [`takeover`]: what the takeover suite needs: successors, TUN snapshots,
//!   a service manager that records who notified.
//!
//! Safety rules the harness enforces: every address, route, sysctl and link
//! it creates lives inside a namespace it created itself; nothing touches
//! the root namespace. Every process it starts is stopped by pid and every
//! namespace removed when its owner drops, on every exit path; namespaces
//! of a test process that died without cleaning up are removed on the next
//! run (see [`netns`]).
//!
//! The names suites use most are re-exported at the top
//! (`encapd_testbed::Topology`, `encapd_testbed::require_root`, ...); the
//! suites import the crate as `common`.

pub mod background;
pub mod bed;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod converge;
pub mod counters;
pub mod data;
pub mod env;
pub mod etcd;
pub mod fleet;
pub mod instance;
pub mod kdrops;
pub mod kernel_paths;
pub mod mesh;
pub mod middle;
pub mod mode;
pub mod netns;
pub mod notify;
pub mod packets;
pub mod process;
pub mod prometheus;
pub mod stats;
pub mod takeover;
pub mod topology;
pub mod traffic;
pub mod underlay;
pub mod wg_peer;
pub mod wireguard_keys;
pub mod wiring;

pub use cmd::{Output, TempDir, must, run, run_cmd, time_until, wait_for};
pub use counters::{Counters, parse_counters};
pub use data::{Prng, StreamHash};
pub use env::{encapd_bin, is_root, require_root, require_tools};
pub use middle::{Middle, MiddleStats};
pub use netns::{in_netns, ip, netns_pids, ns_exec, our_namespaces};
pub use topology::{Options, Topology};
pub use traffic::set_rcvbuf;
pub use underlay::Underlay;
pub use wiring::{CTR_A, CTR_A6, CTR_B, CTR_B6, ENCAPD_A, NODE_A_UNDERLAY, NODE_B_UNDERLAY, Node, PORT, TUN};
