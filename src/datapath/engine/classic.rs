//! The baseline engine: `poll`, then one `read`/`sendto` or `recv`/`write`
//! per packet, as flannel's udp proxy does. No batching, no GSO, no GRO.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::time::Instant;

use super::{BUF_SIZE, Forwarder, IDLE_WAIT};
use crate::datapath::worker::{LifecycleCheck, TableReplica, WorkerContext, announce_ready, count_egress, count_ingress};
use crate::stats::latency::Direction;
use crate::stats::{DropReason, bump};
use crate::sys::{fd, udp};

pub fn run(mut ctx: WorkerContext) -> io::Result<()> {
    announce_ready(&mut ctx.ready, ctx.id);
    let counters = &*ctx.counters;
    let mut fwd = Forwarder::new(ctx.node.clone(), counters, false);
    let mut replica = TableReplica::new(&ctx.table);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut rec = ctx.latency;
    let (tun, sock) = (ctx.tun.as_fd(), ctx.udp.as_fd());
    let mut check = LifecycleCheck::default();
    while check.keep_running(&ctx.lifecycle, ctx.id) {
        let (tun_ready, udp_ready) = fd::poll_readable(tun, sock, IDLE_WAIT.as_millis() as i32)?;
        rec.maybe_flush(Instant::now());
        if tun_ready {
            match fd::read(tun, &mut buf) {
                Ok(n) => {
                    let started = Instant::now();
                    let table = replica.load(counters);
                    if let Some(to) = fwd.egress(table, &mut buf[..n], tun, false) {
                        match udp::send_segments(sock, to, &[IoSlice::new(&buf[..n])], None) {
                            Ok(_) => {
                                count_egress(counters, 1, n as u64);
                                bump(&counters.egress_sends, 1);
                                rec.latency(Direction::Egress, started.elapsed(), 1);
                                rec.batch(Direction::Egress, 1);
                            }
                            Err(e) => {
                                counters.drop(DropReason::SendFailed);
                                fwd.warn(|| format!("worker {}: send to {to} failed: {e}", ctx.id));
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("TUN read: {e}"))),
            }
        }
        if udp_ready {
            match udp::recv_from(sock, &mut buf) {
                Ok((n, from)) => {
                    let started = Instant::now();
                    bump(&counters.ingress_receives, 1);
                    let table = replica.load(counters);
                    if fwd.ingress_ok(table, from.ip(), &buf[..n]) {
                        match fd::write(tun, &buf[..n]) {
                            Ok(_) => {
                                count_ingress(counters, n as u64);
                                rec.latency(Direction::Ingress, started.elapsed(), 1);
                                rec.batch(Direction::Ingress, 1);
                            }
                            Err(e) => {
                                counters.drop(DropReason::TunWriteFailed);
                                fwd.warn(|| format!("worker {}: TUN write failed: {e}", ctx.id));
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => fwd.warn(|| format!("worker {}: UDP receive failed: {e}", ctx.id)),
            }
        }
    }
    Ok(())
}
