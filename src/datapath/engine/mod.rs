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
//!   flannel's proxy does: the baseline;
//! - [`wireguard`]: `mmsg`'s I/O with WireGuard's batch seal and open
//!   between the core and the socket (`backend = "wireguard"`, whatever
//!   `[dataplane] io` says).
//!
//! Each engine's loop reads as its phases: wait, begin the batch, egress
//! (read, classify, send), ingress (receive, filter, write).

pub mod classic;
pub mod mmsg;
pub mod uring;
pub mod wireguard;

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::datapath::core::ForwardingCore;
use crate::datapath::format::WireFormat;
use crate::sys::udp;

/// How long a worker blocks waiting for I/O before checking its stop flag.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
pub use crate::datapath::offload::{BUF_SIZE, TUN_OFFLOAD_BUF_SIZE};

/// The TUN read buffer size for a TUN with (`vnet_hdr`) or without offloads.
pub fn tun_buf_size(vnet_hdr: bool) -> usize {
    if vnet_hdr { TUN_OFFLOAD_BUF_SIZE } else { BUF_SIZE }
}

/// Reads the TUN into `bufs` (`buf_size` bytes a slot) until it is empty
/// or every slot is used; the core classifies each read and queues what to
/// send, and an ICMP error it answers with goes back into the TUN at once.
/// The epoll engines' egress read (`mmsg`, `wireguard`).
pub fn read_tun_batch<W: WireFormat>(
    tun: BorrowedFd<'_>,
    bufs: &mut [u8],
    buf_size: usize,
    core: &mut ForwardingCore<W>,
) -> io::Result<()> {
    for (slot, buf) in bufs.chunks_exact_mut(buf_size).enumerate() {
        let n = match crate::sys::fd::read(tun, buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(io::Error::new(e.kind(), format!("TUN read: {e}"))),
        };
        if let Some(icmp) = core.egress_read(slot as u32, buf, n) {
            let result = crate::sys::fd::write(tun, icmp);
            core.icmp_written(result);
        }
    }
    Ok(())
}

/// Writes the packets the core cut itself from the datagram it just
/// received (rare: an inner super-packet without TUN offloads), one
/// synchronous `write` each.
pub fn write_pending<W: WireFormat>(core: &mut ForwardingCore<W>, tun: BorrowedFd<'_>) {
    for i in 0..core.pending_writes() {
        let result = crate::sys::fd::write(tun, core.pending_write(i));
        core.pending_written(result, std::time::Instant::now());
    }
}

/// Sends the replies the core has for the datagram it just received (ARP
/// replies to a peer VTEP; rare), one synchronous `sendmsg` each.
pub fn send_replies<W: WireFormat>(core: &mut ForwardingCore<W>, sock: BorrowedFd<'_>) {
    for i in 0..core.replies() {
        let reply = core.reply(i);
        let result = udp::send_segments(sock, reply.to, &[IoSlice::new(reply.as_bytes())], None);
        core.reply_sent(result);
    }
}
