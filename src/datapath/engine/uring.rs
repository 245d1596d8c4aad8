//! The io_uring engine: one ring per worker ([`UringIo`] owns every buffer
//! the kernel may touch). TUN reads are kept in flight; a loop iteration
//! reaps every completion, hands TUN reads and UDP receives to the core,
//! and submits what the core planned — GSO `SENDMSG`s straight from the
//! TUN read buffers, TUN `WRITE`/`WRITEV`s straight from the receive
//! buffers — with one `io_uring_enter` that also waits for the next
//! completions. Pausing (for a handover) stops the reads and receives and
//! forwards what they had already read before the worker parks.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{BUF_SIZE, IDLE_WAIT, tun_buf_size};
use crate::datapath::batch::MAX_SEGMENTS;
use crate::datapath::context::WorkerContext;
use crate::datapath::core::{BatchTag, ForwardingCore, SendOutcome};
use crate::datapath::format::WireFormat;
use crate::stats::DropReason;
use crate::sys::fd;
use crate::sys::uring::{Completion, Send, UringIo, UringSizes};

/// Receive buffers per worker (a power of two), with multishot RECVMSG.
const RECV_BUFS: u16 = 64;
/// Without multishot operations every buffer has a plain operation in
/// flight on the fd, and each one is a poll waiter woken by every packet:
/// keep few (a larger batch buys little and costs a herd of wakeups).
const PLAIN_RECVS: u16 = 16;
const PLAIN_TUN_READS: usize = 16;

/// The engine's own state next to the ring: what a loop iteration collects.
struct UringEngine {
    io: UringIo,
    /// A second handle on the TUN queue for the rare synchronous ICMP writes.
    icmp_tun: OwnedFd,
    completions: Vec<Completion>,
    /// TUN buffers read in this iteration, returned once their sends are submitted.
    read_bufs: Vec<u16>,
    /// (TUN buffer, offset, length) of each datagram of one send.
    pieces: Vec<(u16, u32, u32)>,
    /// (offset, length) of each piece of one TUN write.
    gather: Vec<(usize, usize)>,
}

pub fn run<W: WireFormat>(mut ctx: WorkerContext, format: W) -> io::Result<()> {
    // io_uring waits for a blocking fd by polling it, without worker threads;
    // a non-blocking one would complete reads with EAGAIN instead.
    fd::set_nonblocking(ctx.tun.as_fd(), false)?;
    let icmp_tun = ctx.tun.try_clone()?;
    let sizes = UringSizes {
        tun_reads: if ctx.uring.multishot_read { ctx.batch } else { ctx.batch.min(PLAIN_TUN_READS) },
        tun_buf_size: tun_buf_size(ctx.core.vnet_hdr),
        recv_bufs: if ctx.uring.multishot_recv { RECV_BUFS } else { PLAIN_RECVS },
        recv_buf_size: BUF_SIZE,
    };
    let mut engine = UringEngine {
        io: UringIo::new(ctx.tun, ctx.udp, ctx.senders, sizes, ctx.uring)?,
        icmp_tun,
        completions: Vec::with_capacity(4096),
        read_bufs: Vec::with_capacity(ctx.batch),
        pieces: Vec::with_capacity(MAX_SEGMENTS),
        gather: Vec::with_capacity(MAX_SEGMENTS),
    };
    let mut core = ForwardingCore::new(ctx.core, format, Instant::now());
    ctx.ready.announce();
    // Adaptive busy polling: after a completion the worker keeps polling
    // for `busy_poll` before it sleeps, so the next packet of a quiet flow
    // does not wait for a sleeping thread to be woken; an idle worker
    // sleeps after one `busy_poll` of nothing.
    let mut last_work = Instant::now();
    while ctx.lifecycle.keep_running() {
        if ctx.lifecycle.pause_requested() {
            engine.quiesce(&mut core)?;
            if !ctx.lifecycle.park() {
                break;
            }
            engine.io.start_reading();
            continue;
        }
        let poll_until = Some(last_work + ctx.busy_poll).filter(|&t| !ctx.busy_poll.is_zero() && Instant::now() < t);
        if let Some(worked) = engine.iterate(&mut core, IDLE_WAIT, poll_until)? {
            last_work = worked;
        }
    }
    Ok(())
}

/// How long a pausing worker waits for its last sends and writes.
const QUIESCE_LIMIT: Duration = Duration::from_secs(1);
/// Wait per loop while quiescing: only completions are awaited.
const QUIESCE_WAIT: Duration = Duration::from_millis(10);

impl UringEngine {
    /// One loop iteration: submit and wait (at most `wait`), then hand
    /// every completion to the core and submit what it planned. Returns
    /// when the work was done, or `None` if there was none.
    fn iterate<W: WireFormat>(
        &mut self,
        core: &mut ForwardingCore<W>,
        wait: Duration,
        poll_until: Option<Instant>,
    ) -> io::Result<Option<Instant>> {
        match poll_until {
            Some(until) => self.io.submit_and_poll(until, wait)?,
            None => self.io.submit_and_wait(wait)?,
        }
        self.reap()?;
        let now = Instant::now();
        if self.completions.is_empty() {
            core.idle(now);
            return Ok(None);
        }
        let tag = core.begin_batch(now);
        self.handle_completions(core, tag, now)?;
        self.send_planned(core, tag)?;
        self.release_read_buffers();
        Ok(Some(now))
    }

    /// Stops reading and forwards what was already read, until nothing is
    /// in flight (or [`QUIESCE_LIMIT`] passes: what is still in flight
    /// then completes in the kernel, its buffers stay with the ring).
    fn quiesce<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>) -> io::Result<()> {
        self.io.stop_reading()?;
        let deadline = Instant::now() + QUIESCE_LIMIT;
        while !self.io.is_idle() {
            if Instant::now() >= deadline {
                core.warn(|| format!("operations still in flight after {QUIESCE_LIMIT:?} of pausing"));
                break;
            }
            self.iterate(core, QUIESCE_WAIT, None)?;
        }
        Ok(())
    }

    fn reap(&mut self) -> io::Result<()> {
        self.completions.clear();
        self.io.reap(&mut self.completions)
    }

    /// Hands every completion of this iteration to the core.
    fn handle_completions<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>, tag: BatchTag, now: Instant) -> io::Result<()> {
        let mut completions = std::mem::take(&mut self.completions);
        for c in completions.drain(..) {
            match c {
                Completion::TunRead { buf: Some(buf), result: Ok(len) } => self.classify_read(core, buf, len),
                Completion::TunRead { buf, result } => {
                    if let Err(e) = result {
                        core.warn(|| format!("TUN read failed: {e}"));
                    }
                    if let Some(buf) = buf {
                        self.io.finish_tun_buf(buf);
                    }
                }
                Completion::Sent { result, packets, gso, tag: sent_in } => {
                    if core.send_done(result, usize::from(packets), gso, sent_in, now) == SendOutcome::GsoRefused {
                        // The send's buffers went back to reading with its completion.
                        core.send_abandoned(usize::from(packets), "refused for GSO");
                    }
                }
                Completion::Received { bid: Some(bid), result } => self.deliver(core, bid, result, tag)?,
                Completion::Received { bid: None, result } => {
                    // The multishot receive ended; it is re-armed on the next
                    // submit. ENOBUFS only means every buffer is busy;
                    // ECANCELED, that the worker is pausing.
                    if let Err(e) = result
                        && !matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ECANCELED))
                    {
                        core.warn(|| format!("UDP receive failed: {e}"));
                    }
                }
                Completion::TunWritten { result, packets, inner_bytes, tag: written_in } => {
                    core.tun_written(result, packets, inner_bytes, written_in, now)
                }
            }
        }
        self.completions = completions;
        Ok(())
    }

    /// A TUN read: the core classifies it; the buffer stays held until this
    /// iteration's sends from it are submitted.
    fn classify_read<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>, buf: u16, len: usize) {
        self.read_bufs.push(buf);
        let (whole, _) = self.io.tun_buf(buf);
        if let Some(icmp) = core.egress_read(u32::from(buf), whole, len) {
            let result = fd::write(self.icmp_tun.as_fd(), icmp);
            core.icmp_written(result);
        }
    }

    /// A UDP receive: the core filters (and coalesces) it; its TUN writes
    /// are submitted from the receive buffer, which returns to the ring
    /// once they complete.
    fn deliver<W: WireFormat>(
        &mut self,
        core: &mut ForwardingCore<W>,
        bid: u16,
        result: io::Result<usize>,
        tag: BatchTag,
    ) -> io::Result<()> {
        let writes = match result {
            Ok(len) => match self.io.recv_view(bid, len) {
                Some(view) if view.truncated => {
                    core.drop_packets(DropReason::LengthMismatch, 1);
                    0
                }
                Some(view) => core.ingress_datagram(view.from, view.buf, view.payload, view.gro_segment),
                None => {
                    core.drop_packets(DropReason::Malformed, 1);
                    0
                }
            },
            Err(e) => {
                core.warn(|| format!("UDP receive failed: {e}"));
                0
            }
        };
        super::send_replies(core, self.io.udp_fd());
        super::write_pending(core, self.icmp_tun.as_fd());
        for i in 0..writes {
            let w = core.tun_write(i);
            self.gather.clear();
            self.gather.extend(core.write_pieces(&w).iter().map(|p| (p.offset, p.len)));
            let submitted = match (w.vnet_hdr, self.gather.as_slice()) {
                (None, &[(offset, len)]) => {
                    self.io.write_to_tun(bid, offset, len, tag)?;
                    true
                }
                (hdr, pieces) => {
                    let hdr = hdr.unwrap_or_default();
                    self.io.write_to_tun_gather(bid, hdr, pieces, w.packets, w.inner_bytes, tag)?
                }
            };
            if !submitted {
                core.tun_write_abandoned(w.packets);
            }
        }
        self.io.finish_recv_buf(bid);
        Ok(())
    }

    /// Submits one `SENDMSG` per planned run, straight from the TUN buffers.
    fn send_planned<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>, tag: BatchTag) -> io::Result<()> {
        for i in 0..core.plan_sends() {
            let run = core.run(i);
            let header = core.header_for(&run);
            self.pieces.clear();
            self.pieces.extend(core.run_packets(&run).iter().map(|p| (p.buf as u16, p.offset, p.len)));
            let send = Send {
                to: run.endpoint,
                pieces: &self.pieces,
                header: header.as_bytes(),
                segment: run.gso_segment(),
                via: usize::from(core.run_flow(&run)),
            };
            if !self.io.send(send, tag)? {
                core.send_abandoned(run.count, "no free send slot");
            }
        }
        core.end_egress_batch();
        Ok(())
    }

    /// The caller's hold on this iteration's TUN buffers ends; each returns
    /// to the ring once its sends complete.
    fn release_read_buffers(&mut self) {
        for buf in self.read_bufs.drain(..) {
            self.io.finish_tun_buf(buf);
        }
    }
}
