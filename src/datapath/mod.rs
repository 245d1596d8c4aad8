//! The data path: pure per-packet decisions ([`packet`], [`batch`]) and the
//! pinned workers that run them over one of three I/O engines ([`engine`]).

pub mod batch;
pub mod engine;
pub mod offload;
pub mod packet;
pub mod worker;
