//! Handing a live data path to a successor process (`encapd run
//! --takeover`), so that an upgrade loses no packet and the TUN device
//! never goes away.
//!
//! The running daemon listens on its control socket (`[process]
//! control_socket`, a `SOCK_SEQPACKET` unix socket, mode 0600, root or the
//! daemon's own uid only) on a thread of its own ([`server`]). A successor
//! connects and the two speak protocol version 1 ([`protocol`]):
//!
//! ```text
//! successor                                running daemon
//!   hello {versions, pid, compat}  ──────►   version? compat? (refused {reason} ends it here)
//!                                  ◄──────   accepted {version, compat, offloads, table version, etcd lease}
//!                                  ◄──────   worker i {senders} + fds: TUN queue, UDP socket, senders   (× workers)
//!                                  ◄──────   control_socket + the listening socket
//!   start workers on the fds; they forward (so does the running daemon: both read the same queues)
//!   ready                          ──────►   pause workers: stop reading, finish in-flight sends/writes, park
//!                                  ◄──────   released {final counters}
//!   carry counters; MAINPID=, READY=1 to systemd, wait for its barrier
//!   done                           ──────►   exit 0 (workers stopped, lease left alone, TUN stays)
//! ```
//!
//! Point of no return: the running daemon's `done`. Until then it can take
//! everything back: a successor that vanishes, gives up, times out or sends
//! nonsense at any step leaves it forwarding (its workers resume if they
//! were paused); nothing it holds was closed. After `done` the successor
//! alone holds the data path; if it dies then, the TUN goes with it and a
//! plain start recovers, as after any crash. Under systemd the successor
//! becomes the main process (`MAINPID=`) just before `done`; if it dies in
//! between, systemd restarts the service (the same recovery).
//!
//! The predecessor vanishing half-way ([`predecessor`]): before the
//! successor has every fd, it starts normally; after, it carries on alone.
//!
//! Packets never wait for this exchange: from the moment the successor's
//! workers start until the running daemon's workers park, both forward
//! from the same TUN queues and sockets (a packet goes to whichever reads
//! it first); a paused worker has forwarded everything it read. What
//! arrives while a queue is momentarily unread waits in the kernel (the TUN
//! queue holds `txqueuelen` packets, a socket its receive buffer).
//!
//! [`successor`] starts a successor from the running daemon (SIGUSR2, or
//! `encapd upgrade`, whose client is [`upgrade`]). [`hooks`] are test hooks.

mod channel;
pub mod compat;
mod hooks;
mod predecessor;
pub mod protocol;
mod server;
mod socket;
mod successor;
mod upgrade;

pub use predecessor::{Predecessor, TakeoverError, join};
pub use server::{ControlServer, HandoverSource, ServerEvent};
pub use socket::{ControlSocket, SocketError, SocketFile, bind as bind_control_socket};
pub use successor::SuccessorCommand;
pub use upgrade::request as request_upgrade;

/// This build's version, as `encapd --version` prints it.
pub fn build_version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("ENCAPD_GIT_COMMIT"), ")")
}

/// The effective uid of this process.
fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(u32::MAX)
}
