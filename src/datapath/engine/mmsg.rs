//! The portable batched engine, for hosts where io_uring is unavailable:
//! epoll; TUN packets read until the queue is empty (up to a batch) and sent
//! as GSO runs with one `sendmsg` each; UDP received with `recvmmsg` (GRO
//! runs) and written to the TUN with one `writev` per planned write.
//! Everything is synchronous: a send or write is complete when its call
//! returns.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use super::{BUF_SIZE, IDLE_WAIT, tun_buf_size};
use crate::datapath::batch::MAX_SEGMENTS;
use crate::datapath::context::{Checkpoint, WorkerContext};
use crate::datapath::core::{ForwardingCore, SendOutcome};
use crate::datapath::format::WireFormat;
use crate::sys::mem::PageBuf;
use crate::sys::{fd, udp};

const TOKEN_TUN: u64 = 1;
const TOKEN_UDP: u64 = 2;
/// recvmmsg calls per wakeup at most, so that a flood of datagrams cannot
/// starve the TUN side.
const RECV_ROUNDS: usize = 8;

/// One worker's fds and the buffers it reads into, allocated once.
struct MmsgIo {
    tun: OwnedFd,
    udp: OwnedFd,
    /// Sockets to send from, picked by flow (empty: send from `udp`).
    senders: Vec<OwnedFd>,
    epoll: fd::Epoll,
    /// `batch` TUN read buffers of `buf_size` bytes, back to back.
    tun_bufs: PageBuf,
    buf_size: usize,
    batch: usize,
    receiver: udp::MmsgReceiver,
}

pub fn run<W: WireFormat>(mut ctx: WorkerContext, format: W) -> io::Result<()> {
    let buf_size = tun_buf_size(ctx.core.vnet_hdr);
    let epoll = fd::Epoll::new(4)?;
    epoll.add_readable(ctx.tun.as_fd(), TOKEN_TUN)?;
    epoll.add_readable(ctx.udp.as_fd(), TOKEN_UDP)?;
    let mut io = MmsgIo {
        tun: ctx.tun,
        udp: ctx.udp,
        senders: ctx.senders,
        epoll,
        tun_bufs: PageBuf::new(ctx.batch * buf_size)?,
        buf_size,
        batch: ctx.batch,
        receiver: udp::MmsgReceiver::new(ctx.batch.min(64), BUF_SIZE)?,
    };
    let mut core = ForwardingCore::new(ctx.core, format, Instant::now());
    ctx.ready.announce();
    loop {
        match ctx.lifecycle.checkpoint() {
            Checkpoint::Forward => {}
            Checkpoint::Resumed => continue,
            Checkpoint::Stop => break,
        }
        let (tun_ready, udp_ready) = io.wait()?;
        if !tun_ready && !udp_ready {
            core.idle(Instant::now());
            continue;
        }
        core.begin_batch(Instant::now());
        if tun_ready {
            io.read_tun(&mut core)?;
            io.send_planned(&mut core);
        }
        if udp_ready {
            io.receive_and_write(&mut core);
        }
    }
    Ok(())
}

impl MmsgIo {
    /// Waits for either fd to become readable.
    fn wait(&mut self) -> io::Result<(bool, bool)> {
        let (mut tun, mut udp) = (false, false);
        for token in self.epoll.wait(IDLE_WAIT.as_millis() as i32)? {
            tun |= token == TOKEN_TUN;
            udp |= token == TOKEN_UDP;
        }
        Ok((tun, udp))
    }

    /// Reads the TUN until it is empty or the batch is full; the core
    /// classifies each read and queues what to send.
    fn read_tun<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>) -> io::Result<()> {
        let slots = self.batch * self.buf_size;
        super::read_tun_batch(self.tun.as_fd(), &mut self.tun_bufs[..slots], self.buf_size, core)
    }

    /// Sends every planned run with one `sendmsg` (GSO when the run has
    /// several datagrams); if the kernel refuses GSO, sends the run again
    /// one datagram at a time.
    fn send_planned<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>) {
        let tag = core.batch_tag();
        for i in 0..core.plan_sends() {
            let run = core.run(i);
            let sock = sender(&self.udp, &self.senders, core.run_flow(&run));
            let header = core.header_for(&run);
            let mut iov = [IoSlice::new(&[]); 2 * MAX_SEGMENTS];
            let n = gather(&mut iov, header.as_bytes(), core.run_packets(&run).iter().map(|p| self.packet(p.buf, p.offset, p.len)));
            let segment = run.gso_segment();
            let result = udp::send_segments(sock, run.endpoint, &iov[..n], segment);
            if core.send_done(result, run.count, segment.is_some(), tag, Instant::now()) == SendOutcome::GsoRefused {
                send_one_by_one(core, sock, run.endpoint, &iov[..n], header.len(), tag);
            }
        }
        core.end_egress_batch();
    }

    fn packet(&self, slot: u32, offset: u32, len: u32) -> &[u8] {
        let at = slot as usize * self.buf_size + offset as usize;
        &self.tun_bufs[at..at + len as usize]
    }

    /// Receives up to [`RECV_ROUNDS`] `recvmmsg` batches and writes what the
    /// core accepts into the TUN.
    fn receive_and_write<W: WireFormat>(&mut self, core: &mut ForwardingCore<W>) {
        let (tun, sock) = (self.tun.as_fd(), self.udp.as_fd());
        for _ in 0..RECV_ROUNDS {
            let n = match self.receiver.recv(sock) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    core.warn(|| format!("recvmmsg failed: {e}"));
                    break;
                }
            };
            for i in 0..n {
                let (from, gro, payload) = self.receiver.get_mut(i);
                let len = payload.len();
                write_planned(core, tun, from, payload, len, gro);
                super::send_replies(core, sock);
                super::write_pending(core, tun);
            }
            if n < self.receiver.capacity() {
                break;
            }
        }
    }
}

/// The socket to send a flow's packets from.
pub(super) fn sender<'a>(udp: &'a OwnedFd, senders: &'a [OwnedFd], flow: u16) -> BorrowedFd<'a> {
    match senders.len() {
        0 => udp.as_fd(),
        n => senders[usize::from(flow) % n].as_fd(),
    }
}

/// Lays out `header` (if any) before each packet in `iov`; returns the
/// number of slices used.
fn gather<'a>(iov: &mut [IoSlice<'a>], header: &'a [u8], packets: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut n = 0;
    for p in packets {
        if !header.is_empty() {
            iov[n] = IoSlice::new(header);
            n += 1;
        }
        iov[n] = IoSlice::new(p);
        n += 1;
    }
    n
}

/// Sends a run that GSO refused as separate datagrams.
fn send_one_by_one<W: WireFormat>(
    core: &mut ForwardingCore<W>,
    sock: BorrowedFd<'_>,
    to: SocketAddr,
    iov: &[IoSlice<'_>],
    header_len: usize,
    tag: u16,
) {
    let per_datagram = if header_len > 0 { 2 } else { 1 };
    for datagram in iov.chunks(per_datagram) {
        let result = udp::send_segments(sock, to, datagram, None);
        core.send_done(result, 1, false, tag, Instant::now());
    }
}

/// Asks the core what to write for one received datagram and writes it.
fn write_planned<W: WireFormat>(
    core: &mut ForwardingCore<W>,
    tun: BorrowedFd<'_>,
    from: Option<SocketAddr>,
    payload: &mut [u8],
    len: usize,
    gro: Option<u16>,
) {
    let tag = core.batch_tag();
    for i in 0..core.ingress_datagram(from, payload, 0..len, gro) {
        let w = core.tun_write(i);
        let mut parts = [IoSlice::new(&[]); MAX_SEGMENTS + 1];
        let mut k = 0;
        if let Some(hdr) = &w.vnet_hdr {
            parts[0] = IoSlice::new(hdr);
            k = 1;
        }
        for p in core.write_pieces(&w) {
            parts[k] = IoSlice::new(&payload[p.offset..p.offset + p.len]);
            k += 1;
        }
        let result = fd::writev(tun, &parts[..k]);
        core.tun_written(result, w.packets, w.inner_bytes, tag, Instant::now());
    }
}
