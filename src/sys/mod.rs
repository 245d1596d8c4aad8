//! The only place with syscalls and `unsafe`: TUN queues, UDP sockets with
//! GSO/GRO control messages, epoll, io_uring with the buffers it owns, CPU
//! pinning and scheduling, interface queries, eBPF maps, programs and TCX
//! links, and the control socket that passes fds to a successor process.
//! Every `unsafe` block carries a
//! `SAFETY:` comment (enforced by clippy's `undocumented_unsafe_blocks`),
//! and every fd is an `OwnedFd` from the moment it exists.

pub mod affinity;
pub mod bpf;
pub mod fd;
pub mod fdpass;
pub mod key_file;
pub mod mem;
pub mod netdev;
pub mod notify;
pub mod privileges;
pub mod sched;
pub mod steering;
pub mod tun;
pub mod udp;
pub mod uring;

use std::io;

/// Turns a libc return value into `io::Result`, capturing errno on -1.
pub(crate) fn cvt<T: PartialOrd + Default>(ret: T) -> io::Result<T> {
    if ret < T::default() { Err(io::Error::last_os_error()) } else { Ok(ret) }
}
