//! The portable batched engine, for hosts where io_uring is unavailable:
//! epoll; TUN packets read until the queue is empty (up to a batch) and sent
//! as GSO runs with one `sendmsg` each; UDP received with `recvmmsg` (GRO
//! runs split by segment size) and written to the TUN one `write` each — or,
//! with TUN offloads, split/coalesced exactly as the `uring` engine does, one
//! `writev` per (super-)packet.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::{BUF_SIZE, Forwarder, IDLE_WAIT, TUN_OFFLOAD_BUF_SIZE, drop_n, egress_one, gro_segments};
use crate::datapath::batch::{MAX_SEGMENTS, SendRun, plan_runs};
use crate::datapath::offload::{CoalescePlan, PacketRef};
use crate::datapath::worker::{LifecycleCheck, TableReplica, WorkerContext, announce_ready, count_egress, count_ingress};
use crate::stats::latency::Direction;
use crate::stats::{DropReason, WorkerCounters, bump};
use crate::sys::{fd, udp};
use crate::wire::virtio::VnetHdr;

const TOKEN_TUN: u64 = 1;
const TOKEN_UDP: u64 = 2;

pub fn run(mut ctx: WorkerContext) -> io::Result<()> {
    let counters = &*ctx.counters;
    let vnet = ctx.vnet_hdr;
    let mut fwd = Forwarder::new(ctx.node.clone(), counters, vnet);
    let mut replica = TableReplica::new(&ctx.table);
    let (tun, sock) = (ctx.tun.as_fd(), ctx.udp.as_fd());
    let mut epoll = fd::Epoll::new(4)?;
    epoll.add_readable(tun, TOKEN_TUN)?;
    epoll.add_readable(sock, TOKEN_UDP)?;
    let batch = ctx.batch;
    let buf_size = if vnet { TUN_OFFLOAD_BUF_SIZE } else { BUF_SIZE };
    // Egress: packet buffers and per-batch plans, allocated once.
    let mut bufs = vec![0u8; batch * buf_size];
    // (offset, length, peer, flow key) of each packet to send.
    let mut outgoing: Vec<(usize, usize, SocketAddr, u16)> = Vec::with_capacity(batch * 8);
    let mut runs: Vec<SendRun> = Vec::with_capacity(batch * 8);
    let mut receiver = udp::MmsgReceiver::new(batch.min(64), BUF_SIZE);
    let mut accepted: Vec<PacketRef> = Vec::with_capacity(MAX_SEGMENTS);
    let mut coalesce = CoalescePlan::default();
    let mut gso = ctx.gso;
    let mut rec = ctx.latency;
    announce_ready(&mut ctx.ready, ctx.id);

    let mut check = LifecycleCheck::default();
    while check.keep_running(&ctx.lifecycle, ctx.id) {
        let mut tun_ready = false;
        let mut udp_ready = false;
        for token in epoll.wait(IDLE_WAIT.as_millis() as i32)? {
            tun_ready |= token == TOKEN_TUN;
            udp_ready |= token == TOKEN_UDP;
        }
        let table = replica.load(counters).clone();
        let tun_started = Instant::now();
        rec.maybe_flush(tun_started);
        if tun_ready {
            outgoing.clear();
            runs.clear();
            let mut reads = 0;
            for slot in 0..batch {
                let whole = &mut bufs[slot * buf_size..(slot + 1) * buf_size];
                let n = match fd::read(tun, whole) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io::Error::new(e.kind(), format!("TUN read: {e}"))),
                };
                let base = slot * buf_size;
                reads += 1;
                egress_one(&mut fwd, &table, whole, n, vnet, ctx.node.max_inner, tun, |off, len, to, flow| {
                    outgoing.push((base + off, len, to, flow))
                });
            }
            rec.batch(Direction::Egress, reads);
            plan_runs(outgoing.iter().map(|&(_, len, to, flow)| (to, len, flow)), &mut runs);
            for run in &runs {
                let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
                for (k, &(off, len, _, _)) in outgoing[run.first..run.first + run.count].iter().enumerate() {
                    iov[k] = IoSlice::new(&bufs[off..off + len]);
                }
                let iov = &iov[..run.count];
                let bytes: usize = iov.iter().map(|s| s.len()).sum();
                let segment = (gso && run.count > 1).then_some(run.segment as u16);
                let sent = match segment {
                    Some(seg) => match udp::send_segments(sock, run.endpoint, iov, Some(seg)) {
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                            log::warn!("worker {}: UDP GSO refused ({e}); sending datagrams one by one from now on", ctx.id);
                            gso = false;
                            send_each(sock, run.endpoint, iov)
                        }
                        other => other.map(drop),
                    },
                    None => send_each(sock, run.endpoint, iov),
                };
                match sent {
                    Ok(()) => {
                        count_egress(counters, run.count as u64, bytes as u64);
                        bump(&counters.egress_sends, if segment.is_some() { 1 } else { run.count as u64 });
                    }
                    Err(e) => {
                        drop_n(counters, DropReason::SendFailed, run.count as u64);
                        fwd.warn(|| format!("worker {}: send to {} failed: {e}", ctx.id, run.endpoint));
                    }
                }
            }
        }
        if tun_ready && !outgoing.is_empty() {
            // Sends are synchronous: they are complete now.
            rec.latency(Direction::Egress, tun_started.elapsed(), outgoing.len() as u64);
        }
        if udp_ready {
            // Drain what is queued, a bounded number of batches per wakeup.
            for _ in 0..8 {
                let started = Instant::now();
                let delivered_before = counters.ingress_packets.load(std::sync::atomic::Ordering::Relaxed);
                let n = match receiver.recv(sock) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        fwd.warn(|| format!("worker {}: recvmmsg failed: {e}", ctx.id));
                        break;
                    }
                };
                for i in 0..n {
                    bump(&counters.ingress_receives, 1);
                    let (from, gro, payload) = receiver.get_mut(i);
                    let Some(from) = from else { continue };
                    accepted.clear();
                    let mut offset = 0;
                    for pkt in gro_segments(payload, gro) {
                        if fwd.ingress_ok(&table, from.ip(), pkt) {
                            accepted.push(PacketRef { offset, len: pkt.len() });
                        }
                        offset += pkt.len();
                    }
                    deliver(&mut fwd, tun, payload, &accepted, vnet, ctx.uso, &mut coalesce, counters, ctx.id);
                }
                let delivered = counters.ingress_packets.load(std::sync::atomic::Ordering::Relaxed) - delivered_before;
                rec.batch(Direction::Ingress, delivered);
                if delivered > 0 {
                    rec.latency(Direction::Ingress, started.elapsed(), delivered);
                }
                if n < receiver.capacity() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Writes the accepted packets of one receive to the TUN: as they are, or
/// (with offloads) coalesced into super-packets behind virtio headers.
#[allow(clippy::too_many_arguments)]
fn deliver(
    fwd: &mut Forwarder<'_>,
    tun: BorrowedFd<'_>,
    payload: &mut [u8],
    accepted: &[PacketRef],
    vnet: bool,
    uso: bool,
    coalesce: &mut CoalescePlan,
    counters: &WorkerCounters,
    id: usize,
) {
    // Counted as received: a coalesced write is shorter by the headers it merged.
    let write = |parts: &[IoSlice<'_>], packets: usize, inner_bytes: usize, fwd: &mut Forwarder<'_>| match fd::writev(tun, parts) {
        Ok(_) => {
            bump(&counters.ingress_packets, (packets as u64).saturating_sub(1));
            count_ingress(counters, inner_bytes as u64);
        }
        Err(e) => {
            drop_n(counters, DropReason::TunWriteFailed, packets as u64);
            fwd.warn(|| format!("worker {id}: TUN write failed: {e}"));
        }
    };
    if !vnet {
        for p in accepted {
            write(&[IoSlice::new(&payload[p.offset..p.offset + p.len])], 1, p.len, fwd);
        }
        return;
    }
    coalesce.plan(payload, accepted, uso);
    for gi in 0..coalesce.groups().len() {
        let g = &coalesce.groups()[gi];
        let hdr = coalesce.finish_group(payload, accepted, g).encode();
        let head = usize::from(VnetHdr::decode(&hdr).map_or(0, |h| h.hdr_len));
        let mut parts = [IoSlice::new(&[]); MAX_SEGMENTS + 1];
        parts[0] = IoSlice::new(&hdr);
        let mut inner = 0;
        for (k, i) in coalesce.members(g).enumerate() {
            let p = accepted[i];
            let skip = if k == 0 { 0 } else { head };
            parts[k + 1] = IoSlice::new(&payload[p.offset + skip..p.offset + p.len]);
            inner += p.len;
        }
        write(&parts[..g.count + 1], g.count, inner, fwd);
    }
}

/// Sends each slice as its own datagram (no GSO, or a run of one).
fn send_each(sock: BorrowedFd<'_>, to: SocketAddr, iov: &[IoSlice<'_>]) -> io::Result<()> {
    for s in iov {
        udp::send_segments(sock, to, std::slice::from_ref(s), None)?;
    }
    Ok(())
}
