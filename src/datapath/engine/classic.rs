//! The baseline engine: `poll`, then one `read`/`sendto` or `recv`/`write`
//! per packet, as flannel's udp proxy does. No batching, no GSO, no GRO,
//! no offloads; the forwarding core sees batches of one packet.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use super::{BUF_SIZE, IDLE_WAIT};
use crate::datapath::context::{Checkpoint, WorkerContext};
use crate::datapath::core::ForwardingCore;
use crate::datapath::format::WireFormat;
use crate::sys::{fd, udp};

pub fn run<W: WireFormat>(mut ctx: WorkerContext, format: W) -> io::Result<()> {
    let mut core = ForwardingCore::new(ctx.core, format, Instant::now());
    let mut buf = vec![0u8; BUF_SIZE];
    let (tun, sock) = (ctx.tun.as_fd(), ctx.udp.as_fd());
    let senders = std::mem::take(&mut ctx.senders);
    ctx.ready.announce();
    loop {
        match ctx.lifecycle.checkpoint() {
            Checkpoint::Forward => {}
            Checkpoint::Resumed => continue,
            Checkpoint::Stop => break,
        }
        let (tun_ready, udp_ready) = fd::poll_readable(tun, sock, IDLE_WAIT.as_millis() as i32)?;
        if !tun_ready && !udp_ready {
            core.idle(Instant::now());
            continue;
        }
        if tun_ready {
            forward_one(&mut core, tun, (&ctx.udp, &senders), &mut buf)?;
        }
        if udp_ready {
            deliver_one(&mut core, tun, sock, &mut buf);
        }
    }
    Ok(())
}

/// TUN → UDP: one read, one send.
fn forward_one<W: WireFormat>(
    core: &mut ForwardingCore<W>,
    tun: BorrowedFd<'_>,
    (udp, senders): (&OwnedFd, &[OwnedFd]),
    buf: &mut [u8],
) -> io::Result<()> {
    let n = match fd::read(tun, buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("TUN read: {e}"))),
    };
    let tag = core.begin_batch(Instant::now());
    if let Some(icmp) = core.egress_read(0, buf, n) {
        let result = fd::write(tun, icmp);
        core.icmp_written(result);
    }
    // One read, one packet: the plan has at most one run of one datagram.
    if core.plan_sends() > 0 {
        let run = core.run(0);
        let p = core.run_packets(&run)[0];
        let header = core.header_for(&run);
        let sock = super::mmsg::sender(udp, senders, p.flow);
        let payload = &buf[p.offset as usize..(p.offset + p.len) as usize];
        let result = udp::send_segments(sock, run.endpoint, &[IoSlice::new(header.as_bytes()), IoSlice::new(payload)], None);
        core.send_done(result, 1, false, tag, Instant::now());
    }
    core.end_egress_batch();
    Ok(())
}

/// UDP → TUN: one receive, one write.
fn deliver_one<W: WireFormat>(core: &mut ForwardingCore<W>, tun: BorrowedFd<'_>, sock: BorrowedFd<'_>, buf: &mut [u8]) {
    let (n, from) = match udp::recv_from(sock, buf) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Err(e) => {
            core.warn(|| format!("UDP receive failed: {e}"));
            return;
        }
    };
    let tag = core.begin_batch(Instant::now());
    // One datagram, no offloads: at most one write of one piece.
    let writes = core.ingress_datagram(Some(from), buf, 0..n, None);
    super::send_replies(core, sock);
    super::write_pending(core, tun);
    if writes > 0 {
        let w = core.tun_write(0);
        let piece = core.write_pieces(&w)[0];
        let result = fd::write(tun, &buf[piece.offset..piece.offset + piece.len]);
        core.tun_written(result, w.packets, w.inner_bytes, tag, Instant::now());
    }
}
