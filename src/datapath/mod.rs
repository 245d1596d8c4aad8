//! The data path. Pure per-packet logic at the bottom: [`packet`]
//! (classification and the ingress filter), [`batch`] (GSO run planning),
//! [`offload`] (TSO split, GRO coalescing), [`format`] (wire formats). On
//! top of it the [`core`], the one forwarding core every engine drives;
//! then the three I/O [`engine`]s that only move bytes between the kernel
//! and the core; then the [`worker`] threads that run them. Beside them,
//! the [`kernel`] path: the same encapsulation done by eBPF programs in the
//! kernel, for the packets it can take from the workers.

pub mod batch;
pub mod context;
pub mod core;
pub mod engine;
pub mod format;
pub mod kernel;
pub mod offload;
pub mod packet;
pub mod worker;
