//! encapd: a userspace encapsulation gateway for container overlay networks,
//! wire-compatible with flannel's `udp` backend.
//!
//! The module tree is the architecture:
//! - [`wire`], [`route`], [`datapath::packet`]: pure packet logic (parsing,
//!   validation, classification, ICMP, longest-prefix lookup). No syscalls,
//!   no clock, no `unsafe`.
//! - [`wireguard`]: WireGuard's protocol core (handshake, sessions, replay
//!   window, timers), equally pure: time and randomness are arguments.
//! - [`sys`]: every syscall and every `unsafe` block (TUN, io_uring, sockets,
//!   cmsg, affinity).
//! - [`datapath`]: the pinned workers and their I/O engines.
//! - [`control`]: the control thread that builds and publishes subnet tables.
//! - [`stats`]: per-worker counters, latency histograms, metrics endpoint.
//! - [`config`], [`cli`], [`daemon`]: configuration, command line, lifecycle.

#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod route;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
pub mod wire;
pub mod wireguard;
