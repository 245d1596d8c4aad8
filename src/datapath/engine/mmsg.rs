//! The portable batched engine, for hosts where io_uring is unavailable:
//! epoll; TUN packets read until the queue is empty (up to a batch) and sent
//! as GSO runs with one `sendmsg` each; UDP received with `recvmmsg` (GRO
//! runs split by segment size) and written to the TUN one `write` each.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use super::{BUF_SIZE, Forwarder, IDLE_WAIT, gro_segments};
use crate::datapath::batch::{SendRun, plan_runs};
use crate::datapath::worker::{TableReplica, WorkerContext, count_egress, count_ingress};
use crate::stats::{DropReason, bump};
use crate::sys::{fd, udp};

const TOKEN_TUN: u64 = 1;
const TOKEN_UDP: u64 = 2;
/// Payload bytes per receive slot: a GRO run reaches 64 KiB.
const RECV_BUF: usize = BUF_SIZE;

pub fn run(ctx: WorkerContext) -> io::Result<()> {
    let counters = &*ctx.counters;
    let mut fwd = Forwarder::new(ctx.node.clone(), counters);
    let mut replica = TableReplica::new(&ctx.table);
    let (tun, sock) = (ctx.tun.as_fd(), ctx.udp.as_fd());
    let mut epoll = fd::Epoll::new(4)?;
    epoll.add_readable(tun, TOKEN_TUN)?;
    epoll.add_readable(sock, TOKEN_UDP)?;
    let batch = ctx.batch;
    // Egress: packet buffers and per-batch plans, allocated once.
    let mut bufs = vec![0u8; batch * BUF_SIZE];
    let mut lens: Vec<usize> = Vec::with_capacity(batch);
    let mut dests: Vec<(usize, SocketAddr)> = Vec::with_capacity(batch);
    let mut runs: Vec<SendRun> = Vec::with_capacity(batch);
    let mut receiver = udp::MmsgReceiver::new(batch.min(64), RECV_BUF);
    let mut gso = ctx.gso;

    while !ctx.should_stop() {
        let mut tun_ready = false;
        let mut udp_ready = false;
        for token in epoll.wait(IDLE_WAIT.as_millis() as i32)? {
            tun_ready |= token == TOKEN_TUN;
            udp_ready |= token == TOKEN_UDP;
        }
        let table = replica.load(counters).clone();
        if tun_ready {
            lens.clear();
            dests.clear();
            runs.clear();
            while lens.len() < batch {
                let slot = lens.len();
                let buf = &mut bufs[slot * BUF_SIZE..(slot + 1) * BUF_SIZE];
                match fd::read(tun, buf) {
                    Ok(n) => {
                        lens.push(n);
                        if let Some(to) = fwd.egress(&table, &mut buf[..n], tun) {
                            dests.push((slot, to));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io::Error::new(e.kind(), format!("TUN read: {e}"))),
                }
            }
            plan_runs(dests.iter().map(|&(slot, to)| (to, lens[slot])), &mut runs);
            for run in &runs {
                let members = &dests[run.first..run.first + run.count];
                let mut iov: [IoSlice<'_>; crate::datapath::batch::MAX_SEGMENTS] =
                    [IoSlice::new(&[]); crate::datapath::batch::MAX_SEGMENTS];
                for (k, &(slot, _)) in members.iter().enumerate() {
                    iov[k] = IoSlice::new(&bufs[slot * BUF_SIZE..slot * BUF_SIZE + lens[slot]]);
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
                    Ok(_) => {
                        count_egress(counters, run.count as u64, bytes as u64);
                        bump(&counters.egress_sends, if segment.is_some() { 1 } else { run.count as u64 });
                    }
                    Err(e) => {
                        for _ in 0..run.count {
                            counters.drop(DropReason::SendFailed);
                        }
                        fwd.warn(|| format!("worker {}: send to {} failed: {e}", ctx.id, run.endpoint));
                    }
                }
            }
        }
        if udp_ready {
            // Drain what is queued, a bounded number of batches per wakeup.
            for _ in 0..8 {
                let n = match receiver.recv(sock) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        fwd.warn(|| format!("worker {}: recvmmsg failed: {e}", ctx.id));
                        break;
                    }
                };
                for i in 0..n {
                    let dgram = receiver.get(i);
                    bump(&counters.ingress_receives, 1);
                    let Some(from) = dgram.from else { continue };
                    for pkt in gro_segments(dgram.payload, dgram.gro_segment) {
                        if fwd.ingress_ok(&table, from.ip(), pkt) {
                            match fd::write(tun, pkt) {
                                Ok(_) => count_ingress(counters, pkt.len() as u64),
                                Err(e) => {
                                    counters.drop(DropReason::TunWriteFailed);
                                    fwd.warn(|| format!("worker {}: TUN write failed: {e}", ctx.id));
                                }
                            }
                        }
                    }
                }
                if n < receiver.capacity() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Sends each slice as its own datagram (no GSO, or a run of one).
fn send_each(sock: std::os::fd::BorrowedFd<'_>, to: SocketAddr, iov: &[IoSlice<'_>]) -> io::Result<()> {
    for s in iov {
        udp::send_segments(sock, to, std::slice::from_ref(s), None)?;
    }
    Ok(())
}
