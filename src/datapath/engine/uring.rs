//! The io_uring engine: one ring per worker; TUN reads kept in flight,
//! completions handled in batches, forwarded packets grouped into GSO
//! `SENDMSG`s, UDP taken in with one multishot `RECVMSG` over a provided-buffer
//! ring (GRO runs split by segment size) and written to the TUN with batched
//! `WRITE`s. One `io_uring_enter` per loop submits everything and waits.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use super::{BUF_SIZE, Forwarder, IDLE_WAIT, gro_segments};
use crate::datapath::batch::{MAX_SEGMENTS, SendRun, plan_runs};
use crate::datapath::worker::{TableReplica, WorkerContext, count_egress, count_ingress};
use crate::stats::{DropReason, bump};
use crate::sys::fd;
use crate::sys::uring::{Completion, UringIo, UringSizes};

/// Provided receive buffers per worker (a power of two).
const RECV_BUFS: u16 = 64;

pub fn run(ctx: WorkerContext) -> io::Result<()> {
    let counters = &*ctx.counters;
    let mut fwd = Forwarder::new(ctx.node.clone(), counters);
    let mut replica = TableReplica::new(&ctx.table);
    // io_uring waits for a blocking fd by polling it, without worker threads;
    // a non-blocking one would complete reads with EAGAIN instead.
    fd::set_nonblocking(ctx.tun.as_fd(), false)?;
    // A second handle on the same queue for the rare synchronous ICMP writes.
    let icmp_tun = ctx.tun.try_clone()?;
    let batch = ctx.batch;
    let sizes = UringSizes { tun_reads: batch, tun_buf_size: BUF_SIZE, recv_bufs: RECV_BUFS, recv_buf_size: BUF_SIZE };
    let (id, stop, mut gso) = (ctx.id, ctx.stop.clone(), ctx.gso);
    let mut io = UringIo::new(ctx.tun, ctx.udp, sizes)?;

    let mut completions: Vec<Completion> = Vec::with_capacity(4096);
    let mut forwards: Vec<(u16, usize, SocketAddr)> = Vec::with_capacity(batch);
    let mut runs: Vec<SendRun> = Vec::with_capacity(batch);
    let mut run_bufs: Vec<u16> = Vec::with_capacity(MAX_SEGMENTS);
    let mut accepted: Vec<(usize, usize)> = Vec::with_capacity(64);

    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        io.submit_and_wait(IDLE_WAIT)?;
        completions.clear();
        io.reap(&mut completions)?;
        if completions.is_empty() {
            continue;
        }
        // One snapshot per batch: every packet of this batch sees one version.
        let table = replica.load(counters);
        for c in completions.drain(..) {
            match c {
                Completion::TunRead { buf, result: Ok(len) } => {
                    let pkt = io.tun_packet(buf);
                    match fwd.egress(table, pkt, icmp_tun.as_fd()) {
                        Some(to) => forwards.push((buf, len, to)),
                        None => io.release_tun_buf(buf)?,
                    }
                }
                Completion::TunRead { buf, result: Err(e) } => {
                    fwd.warn(|| format!("worker {id}: TUN read failed: {e}"));
                    io.release_tun_buf(buf)?;
                }
                Completion::Sent { result, packets, gso: was_gso } => match result {
                    Ok(bytes) => {
                        count_egress(counters, u64::from(packets), bytes as u64);
                        bump(&counters.egress_sends, 1);
                    }
                    Err(e) => {
                        for _ in 0..packets {
                            counters.drop(DropReason::SendFailed);
                        }
                        if was_gso && gso && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) {
                            log::warn!("worker {id}: UDP GSO refused ({e}); sending datagrams one by one from now on");
                            gso = false;
                        } else {
                            fwd.warn(|| format!("worker {id}: UDP send failed: {e}"));
                        }
                    }
                },
                Completion::Received { bid: Some(bid), result } => {
                    bump(&counters.ingress_receives, 1);
                    accepted.clear();
                    match result {
                        Ok(len) => match io.recv_view(bid, len) {
                            Some(view) if view.truncated => counters.drop(DropReason::LengthMismatch),
                            Some(view) => {
                                if let Some(from) = view.from {
                                    let mut offset = view.payload_offset;
                                    for pkt in gro_segments(view.payload, view.gro_segment) {
                                        if fwd.ingress_ok(table, from.ip(), pkt) {
                                            accepted.push((offset, pkt.len()));
                                        }
                                        offset += pkt.len();
                                    }
                                }
                            }
                            None => counters.drop(DropReason::Malformed),
                        },
                        Err(e) => fwd.warn(|| format!("worker {id}: UDP receive failed: {e}")),
                    }
                    for &(offset, len) in &accepted {
                        io.write_to_tun(bid, offset, len)?;
                    }
                    io.finish_recv_buf(bid);
                }
                Completion::Received { bid: None, result } => {
                    // The multishot receive ended; it is re-armed on the next
                    // submit. ENOBUFS only means every buffer is busy.
                    if let Err(e) = result
                        && e.raw_os_error() != Some(libc::ENOBUFS)
                    {
                        fwd.warn(|| format!("worker {id}: UDP receive failed: {e}"));
                    }
                }
                Completion::TunWritten { result } => match result {
                    Ok(n) => count_ingress(counters, n as u64),
                    Err(e) => {
                        counters.drop(DropReason::TunWriteFailed);
                        fwd.warn(|| format!("worker {id}: TUN write failed: {e}"));
                    }
                },
            }
        }
        plan_runs(forwards.iter().map(|&(_, len, to)| (to, len)), &mut runs);
        for run in &runs {
            let members = &forwards[run.first..run.first + run.count];
            if gso && run.count > 1 {
                run_bufs.clear();
                run_bufs.extend(members.iter().map(|m| m.0));
                if !io.send(run.endpoint, &run_bufs, Some(run.segment as u16))? {
                    give_up(&mut io, members, counters)?;
                }
            } else {
                for m in members {
                    if !io.send(run.endpoint, &[m.0], None)? {
                        give_up(&mut io, std::slice::from_ref(m), counters)?;
                    }
                }
            }
        }
        forwards.clear();
        runs.clear();
    }
    Ok(())
}

/// No send slot was free (cannot happen while slots = buffers, but never
/// leak a buffer): count the packets as failed sends and read again.
fn give_up(io: &mut UringIo, members: &[(u16, usize, SocketAddr)], counters: &crate::stats::WorkerCounters) -> io::Result<()> {
    for m in members {
        counters.drop(DropReason::SendFailed);
        io.release_tun_buf(m.0)?;
    }
    Ok(())
}
