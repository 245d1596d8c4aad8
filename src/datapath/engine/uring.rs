//! The io_uring engine: one ring per worker; TUN reads kept in flight,
//! completions handled in batches, forwarded packets grouped into GSO
//! `SENDMSG`s, UDP taken in with one multishot `RECVMSG` over a provided-buffer
//! ring (GRO runs split by segment size) and written to the TUN with batched
//! `WRITE`s. One `io_uring_enter` per loop submits everything and waits.
//!
//! With TUN offloads (virtio-net headers), a read may be a 64 KiB
//! super-packet: it is split in place into MTU-sized packets that go out as
//! GSO sends straight from the read buffer; received runs of one TCP flow are
//! coalesced back into super-packets and written with one `WRITEV` each.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use super::{BUF_SIZE, Forwarder, IDLE_WAIT, TUN_OFFLOAD_BUF_SIZE, drop_n, egress_one, gro_segments};
use crate::datapath::batch::{MAX_SEGMENTS, SendRun, plan_runs};
use crate::datapath::offload::{CoalescePlan, PacketRef};
use crate::datapath::worker::{LifecycleCheck, TableReplica, WorkerContext, announce_ready, count_egress, count_ingress};
use crate::stats::latency::Direction;
use crate::stats::{DropReason, WorkerCounters, bump};
use crate::sys::fd;
use crate::sys::uring::{Completion, UringIo, UringSizes};
use crate::wire::virtio::VnetHdr;

/// Provided receive buffers per worker (a power of two).
const RECV_BUFS: u16 = 64;

/// One packet to send: (TUN buffer, offset, length), its peer and flow key.
type Outgoing = ((u16, u32, u32), SocketAddr, u16);

pub fn run(ctx: WorkerContext) -> io::Result<()> {
    let counters = &*ctx.counters;
    let vnet = ctx.vnet_hdr;
    let mut fwd = Forwarder::new(ctx.node.clone(), counters, vnet);
    let mut replica = TableReplica::new(&ctx.table);
    // io_uring waits for a blocking fd by polling it, without worker threads;
    // a non-blocking one would complete reads with EAGAIN instead.
    fd::set_nonblocking(ctx.tun.as_fd(), false)?;
    // A second handle on the same queue for the rare synchronous ICMP writes.
    let icmp_tun = ctx.tun.try_clone()?;
    let batch = ctx.batch;
    let tun_buf_size = if vnet { TUN_OFFLOAD_BUF_SIZE } else { BUF_SIZE };
    let sizes = UringSizes { tun_reads: batch, tun_buf_size, recv_bufs: RECV_BUFS, recv_buf_size: BUF_SIZE };
    let (id, lifecycle, mut gso, uso, max_inner) = (ctx.id, ctx.lifecycle.clone(), ctx.gso, ctx.uso, ctx.node.max_inner);
    let mut ready = ctx.ready;
    let mut rec = ctx.latency;
    // Start time of each of the last 256 loop iterations, indexed by the
    // iteration number carried as a tag through sends and TUN writes.
    let mut iteration: u16 = 0;
    let mut starts = [std::time::Instant::now(); 256];
    let mut io = UringIo::new(ctx.tun, ctx.udp, sizes)?;
    announce_ready(&mut ready, id);

    let mut completions: Vec<Completion> = Vec::with_capacity(4096);
    let mut read_bufs: Vec<u16> = Vec::with_capacity(batch);
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(batch * 8);
    let mut runs: Vec<SendRun> = Vec::with_capacity(batch * 8);
    let mut pieces: Vec<(u16, u32, u32)> = Vec::with_capacity(MAX_SEGMENTS);
    let mut accepted: Vec<PacketRef> = Vec::with_capacity(MAX_SEGMENTS);
    let mut coalesce = CoalescePlan::default();
    let mut gather: Vec<(usize, usize)> = Vec::with_capacity(MAX_SEGMENTS);
    // Per receive buffer: (header, range of `gather`, packets) of each TUN write.
    let mut writes: Vec<(VnetHdr, usize, usize, usize, usize)> = Vec::with_capacity(MAX_SEGMENTS);

    let mut check = LifecycleCheck::default();
    while check.keep_running(&lifecycle, id) {
        io.submit_and_wait(IDLE_WAIT)?;
        completions.clear();
        io.reap(&mut completions)?;
        if completions.is_empty() {
            // Idle: hand over the histograms of the last busy second.
            rec.maybe_flush(std::time::Instant::now());
            continue;
        }
        // One snapshot per batch: every packet of this batch sees one version.
        let table = replica.load(counters);
        // One clock read per batch: when its completions were taken.
        let now = std::time::Instant::now();
        iteration = iteration.wrapping_add(1);
        starts[usize::from(iteration as u8)] = now;
        rec.maybe_flush(now);
        let since = |tag: u16| {
            // Only tags of the last 255 iterations are still in `starts`.
            (iteration.wrapping_sub(tag) < 255).then(|| now.duration_since(starts[usize::from(tag as u8)]))
        };
        let mut tun_reads = 0u64;
        for c in completions.drain(..) {
            match c {
                Completion::TunRead { buf: Some(buf), result: Ok(len) } => {
                    read_bufs.push(buf);
                    tun_reads += 1;
                    let (whole, _) = io.tun_buf(buf);
                    egress_one(&mut fwd, table, whole, len, vnet, max_inner, icmp_tun.as_fd(), |off, n, to, flow| {
                        outgoing.push(((buf, off as u32, n as u32), to, flow))
                    });
                }
                Completion::TunRead { buf, result } => {
                    if let Err(e) = result {
                        fwd.warn(|| format!("worker {id}: TUN read failed: {e}"));
                    }
                    if let Some(buf) = buf {
                        io.finish_tun_buf(buf);
                    }
                }
                Completion::Sent { result, packets, gso: was_gso, tag } => match result {
                    Ok(bytes) => {
                        count_egress(counters, u64::from(packets), bytes as u64);
                        bump(&counters.egress_sends, 1);
                        if let Some(elapsed) = since(tag) {
                            rec.latency(Direction::Egress, elapsed, packets.into());
                        }
                    }
                    Err(e) => {
                        drop_n(counters, DropReason::SendFailed, packets.into());
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
                    let mut offload_plan = false;
                    match result {
                        Ok(len) => match io.recv_view(bid, len) {
                            Some(view) if view.truncated => counters.drop(DropReason::LengthMismatch),
                            Some(view) => {
                                if let Some(from) = view.from {
                                    let base = view.payload_offset;
                                    let mut offset = 0;
                                    for pkt in gro_segments(view.payload, view.gro_segment) {
                                        if fwd.ingress_ok(table, from.ip(), pkt) {
                                            accepted.push(PacketRef { offset: base + offset, len: pkt.len() });
                                        }
                                        offset += pkt.len();
                                    }
                                }
                                offload_plan = vnet && accepted.len() > 1;
                                rec.batch(Direction::Ingress, accepted.len() as u64);
                            }
                            None => counters.drop(DropReason::Malformed),
                        },
                        Err(e) => fwd.warn(|| format!("worker {id}: UDP receive failed: {e}")),
                    }
                    if !vnet {
                        for p in &accepted {
                            io.write_to_tun(bid, p.offset, p.len, iteration)?;
                        }
                    } else if !offload_plan {
                        for p in &accepted {
                            write_gather(&mut io, bid, VnetHdr::default(), &[(p.offset, p.len)], (1, p.len, iteration), counters)?;
                        }
                    } else {
                        let buf = io.recv_buf_mut(bid);
                        coalesce.plan(buf, &accepted, uso);
                        gather.clear();
                        writes.clear();
                        for g in coalesce.groups() {
                            let hdr = coalesce.finish_group(buf, &accepted, g);
                            let start = gather.len();
                            let mut inner = 0;
                            for (k, i) in coalesce.members(g).enumerate() {
                                let p = accepted[i];
                                let skip = if k == 0 { 0 } else { usize::from(hdr.hdr_len) };
                                gather.push((p.offset + skip, p.len - skip));
                                inner += p.len;
                            }
                            writes.push((hdr, start, gather.len(), g.count, inner));
                        }
                        for &(hdr, a, b, count, inner) in &writes {
                            write_gather(&mut io, bid, hdr, &gather[a..b], (count, inner, iteration), counters)?;
                        }
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
                Completion::TunWritten { result, packets, inner_bytes, tag } => match result {
                    Ok(_) => {
                        bump(&counters.ingress_packets, u64::from(packets).saturating_sub(1));
                        count_ingress(counters, u64::from(inner_bytes));
                        if let Some(elapsed) = since(tag) {
                            rec.latency(Direction::Ingress, elapsed, packets.into());
                        }
                    }
                    Err(e) => {
                        drop_n(counters, DropReason::TunWriteFailed, packets.into());
                        fwd.warn(|| format!("worker {id}: TUN write failed: {e}"));
                    }
                },
            }
        }
        rec.batch(Direction::Egress, tun_reads);
        plan_runs(outgoing.iter().map(|&((_, _, len), to, flow)| (to, len as usize, flow)), &mut runs);
        for run in &runs {
            let members = &outgoing[run.first..run.first + run.count];
            if gso && run.count > 1 {
                pieces.clear();
                pieces.extend(members.iter().map(|m| m.0));
                if !io.send(run.endpoint, &pieces, Some(run.segment as u16), iteration)? {
                    drop_n(counters, DropReason::SendFailed, run.count as u64);
                    fwd.warn(|| format!("worker {id}: no free send slot; {} packets dropped", run.count));
                }
            } else {
                for m in members {
                    if !io.send(run.endpoint, &[m.0], None, iteration)? {
                        counters.drop(DropReason::SendFailed);
                        fwd.warn(|| format!("worker {id}: no free send slot; a packet dropped"));
                    }
                }
            }
        }
        for &buf in &read_bufs {
            io.finish_tun_buf(buf);
        }
        read_bufs.clear();
        outgoing.clear();
        runs.clear();
    }
    Ok(())
}

fn write_gather(
    io: &mut UringIo,
    bid: u16,
    hdr: VnetHdr,
    pieces: &[(usize, usize)],
    (packets, inner_bytes, tag): (usize, usize, u16),
    counters: &WorkerCounters,
) -> io::Result<()> {
    if !io.write_to_tun_gather(bid, hdr.encode(), pieces, packets as u16, inner_bytes as u32, tag)? {
        drop_n(counters, DropReason::TunWriteFailed, packets as u64);
    }
    Ok(())
}
