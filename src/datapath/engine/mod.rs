//! The three I/O engines. Each moves bytes between its TUN queue, its UDP
//! socket and the worker's [`ForwardingCore`](super::core::ForwardingCore),
//! which makes every per-packet decision, so that all engines forward,
//! filter and count identically:
//!
//! - [`uring`]: io_uring; TUN reads kept in flight, multishot receive with a
//!   provided-buffer ring, GSO sends, TUN writes, one `io_uring_enter` per loop;
//! - [`mmsg`]: epoll + `recvmmsg` (GRO) + GSO `sendmsg`, one `read`/`writev`
//!   per TUN packet (a TUN has no batched syscall without io_uring);
//! - [`classic`]: `poll` + one `read`/`sendto`/`recv`/`write` per packet, as
//!   flannel's proxy does: the baseline.
//!
//! Each engine's loop reads as its phases: wait, begin the batch, egress
//! (read, classify, send), ingress (receive, filter, write).

pub mod classic;
pub mod mmsg;
pub mod uring;

use std::time::Duration;

/// How long a worker blocks waiting for I/O before checking its stop flag.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Largest TUN packet and receive payload a buffer must hold (64 KiB
/// super-packets, for TUN offloads and UDP GRO runs).
pub const BUF_SIZE: usize = 65_536;
/// A TUN read buffer with offloads: virtio header, a 64 KiB super-packet and
/// room for the headers the in-place split adds (a segment size of 536, the
/// IPv4 minimum MSS, needs 123 extra headers of up to 120 bytes).
pub const TUN_OFFLOAD_BUF_SIZE: usize = 96 * 1024;

/// The TUN read buffer size for a TUN with (`vnet_hdr`) or without offloads.
pub fn tun_buf_size(vnet_hdr: bool) -> usize {
    if vnet_hdr { TUN_OFFLOAD_BUF_SIZE } else { BUF_SIZE }
}
