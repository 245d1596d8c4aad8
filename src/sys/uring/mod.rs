//! io_uring for one worker, with a safe interface: the ring owns every buffer
//! the kernel may touch, tracks the state of each, and only hands a buffer to
//! the caller while no operation is in flight on it.
//!
//! - TUN reads: one multishot `READ` over a provided-buffer ring (Linux ≥ 6.7),
//!   so a TUN queue has a single poll waiter however many buffers are free
//!   (one plain `READ` per buffer would wake them all for every packet); on
//!   older kernels, a few plain `READ`s kept in flight. The caller forwards
//!   each packet (the buffer stays with its `SENDMSG`s until they complete)
//!   or drops it; the buffer then returns to the ring (or gets a new read).
//! - UDP receives: one multishot `RECVMSG` over a provided-buffer ring (6.0;
//!   re-armed when the kernel ends it, e.g. on `ENOBUFS`), or a few plain
//!   `RECVMSG`s, each with its own buffer; each buffer comes back to the
//!   caller and returns to the ring (or gets a new receive) once every TUN
//!   `WRITE` that points into it has completed.
//! - UDP sends: `SENDMSG` slots (msghdr, iovecs, address, GSO cmsg) that stay
//!   put until the send completes.
//! - Teardown cancels everything (`ASYNC_CANCEL_ANY` on 5.19+, else each
//!   armed read and receive by its user data) and waits for the
//!   cancellations before the buffers are freed; if that cannot be
//!   confirmed, the memory is leaked rather than freed under the kernel.
//!
//! Which optional features to use is the caller's choice ([`UringFeatures`],
//! from [`probe`]).

mod buffers;
mod probe;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use self::buffers::BufferPool;
pub use self::probe::{UringFeature, UringFeatures, probe};
use super::udp::{
    CMSG_SPACE_U32, MAX_ENCAP_HEADER, MAX_GSO_SEGMENTS as MAX_SEGMENTS, SockAddrBuf, encode_gso_cmsg, gro_segment_size, parse_sockaddr,
};
use crate::wire::virtio::VNET_HDR_LEN;

/// user_data layout: operation kind in the top byte, a caller's 16-bit tag
/// (see [`UringIo::send`]) in bits 32..48, an index in the low 32 bits.
const KIND_SHIFT: u64 = 56;
const TAG_SHIFT: u64 = 32;
const TUN_READ: u64 = 1;
const UDP_SEND: u64 = 2;
const UDP_RECV: u64 = 3;
const TUN_WRITE: u64 = 4;
const CANCEL: u64 = 5;
/// Index field: write slot in the low 16 bits, receive buffer above.
const TUN_WRITEV: u64 = 6;

fn tag(kind: u64, index: u64) -> u64 {
    (kind << KIND_SHIFT) | index
}

fn tagged(kind: u64, caller_tag: u16, index: u64) -> u64 {
    (kind << KIND_SHIFT) | (u64::from(caller_tag) << TAG_SHIFT) | index
}

/// Name space reserved per multishot receive: a sockaddr_in6 covers both families.
const RECV_NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_in6>() as u32;
const RECV_CONTROL_LEN: usize = 32;
/// `io_uring_recvmsg_out` precedes name, control and payload in each buffer.
const RECV_HEADER: usize = 16;
const RECV_GROUP: u16 = 0;
const TUN_GROUP: u16 = 1;

/// Sizes of the buffers and queues of one ring.
#[derive(Debug, Clone, Copy)]
pub struct UringSizes {
    /// TUN read buffers (send slots: four per buffer); all of them are
    /// reads in flight without multishot `READ`.
    pub tun_reads: usize,
    pub tun_buf_size: usize,
    /// Receive buffers; a power of two. All of them are receives in flight
    /// without multishot `RECVMSG`.
    pub recv_bufs: u16,
    /// Payload bytes per receive buffer (a GRO run can reach 64 KiB).
    pub recv_buf_size: usize,
}

/// How reads (TUN) or receives (UDP) are kept in flight.
enum Arming {
    /// One multishot operation over a buffer ring; `armed` while it runs.
    Multishot { armed: bool },
    /// One plain operation per buffer: `armed[i]` while buffer i's runs;
    /// `to_arm` lists buffers to give a new one at the next submit.
    Plain { armed: Vec<bool>, to_arm: Vec<u16> },
}

impl Arming {
    fn new(multishot: bool, buffers: u16) -> Arming {
        if multishot {
            Arming::Multishot { armed: false }
        } else {
            Arming::Plain { armed: vec![false; usize::from(buffers)], to_arm: (0..buffers).collect() }
        }
    }

    /// An operation on buffer `i` (plain) or the multishot one ended.
    fn ended(&mut self, i: u16) {
        match self {
            Arming::Multishot { armed } => *armed = false,
            Arming::Plain { armed, .. } => {
                if let Some(a) = armed.get_mut(usize::from(i)) {
                    *a = false;
                }
            }
        }
    }

    /// Buffer `i` is free again: a plain operation is queued for it.
    fn free(&mut self, i: u16) {
        if let Arming::Plain { to_arm, .. } = self {
            to_arm.push(i);
        }
    }
}

/// A plain `RECVMSG`'s header: name, control and payload point into its buffer.
struct RecvSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
}

/// Where a TUN buffer is in its cycle: in the ring (`held == false`), or
/// filled and held by the caller and by `sends` in-flight sends; it returns to
/// the ring once the caller has finished with it and no send refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TunBuf {
    held: bool,
    len: u32,
    sends: u16,
    caller_done: bool,
}

impl TunBuf {
    const IN_RING: TunBuf = TunBuf { held: false, len: 0, sends: 0, caller_done: true };
}

/// A `SENDMSG` whose memory must not move until it completes.
#[repr(C)]
struct SendSlot {
    msg: libc::msghdr,
    /// Each datagram: the encapsulation header (when there is one), then
    /// its payload.
    iov: [libc::iovec; 2 * MAX_SEGMENTS],
    header: [u8; MAX_ENCAP_HEADER],
    name: SockAddrBuf,
    ctrl: [u64; CMSG_SPACE_U32 / 8],
    /// Distinct TUN buffers the send refers to.
    bufs: [u16; MAX_SEGMENTS],
    nbufs: u16,
    packets: u16,
    gso: bool,
}

/// A gathered TUN write (virtio header + pieces of one receive buffer).
#[repr(C)]
struct WriteSlot {
    iov: [libc::iovec; MAX_SEGMENTS + 2],
    hdr: [u8; VNET_HDR_LEN],
    packets: u16,
    inner_bytes: u32,
}

/// One `SENDMSG` to submit (see [`UringIo::send`]).
#[derive(Debug, Clone, Copy)]
pub struct Send<'a> {
    pub to: SocketAddr,
    /// (TUN buffer, offset, length) of each datagram's payload, in order.
    pub pieces: &'a [(u16, u32, u32)],
    /// Put in front of each payload (empty for none).
    pub header: &'a [u8],
    /// GSO segment size, for a run of several datagrams.
    pub segment: Option<u16>,
    /// Which sender socket (modulo their number).
    pub via: usize,
}

/// What a completion means to the caller.
#[derive(Debug)]
pub enum Completion {
    /// A TUN read finished; the caller holds `buf` (see [`UringIo::tun_buf`]),
    /// may [`UringIo::send`] pieces of it, and must then
    /// [`UringIo::finish_tun_buf`] it.
    /// `buf` is `None` when the read failed without a buffer.
    TunRead { buf: Option<u16>, result: io::Result<usize> },
    /// A send finished; its buffers already went back to reading. `tag` is
    /// what the caller passed to [`UringIo::send`].
    Sent { result: io::Result<usize>, packets: u16, gso: bool, tag: u16 },
    /// A multishot receive produced buffer `bid` (caller must
    /// [`UringIo::finish_recv_buf`] it), or ended (`bid == None`).
    Received { bid: Option<u16>, result: io::Result<usize> },
    /// A TUN write of `packets` inner packets (coalesced) of `inner_bytes`
    /// bytes on the wire finished.
    TunWritten { result: io::Result<usize>, packets: u16, inner_bytes: u32, tag: u16 },
}

/// A received datagram, inside its provided buffer.
pub struct RecvView<'a> {
    pub from: Option<SocketAddr>,
    /// The whole buffer (for coalescing in place); offsets into it are what
    /// [`UringIo::write_to_tun`] and [`UringIo::write_to_tun_gather`] take.
    pub buf: &'a mut [u8],
    /// Where the payload lies in `buf`.
    pub payload: std::ops::Range<usize>,
    pub gro_segment: Option<u16>,
    pub truncated: bool,
}

/// One worker's ring and every buffer it lends to the kernel.
pub struct UringIo {
    ring: IoUring,
    tun: OwnedFd,
    udp: OwnedFd,
    /// Extra sockets to send from (each bound to its own source port); a
    /// send names one by index, or sends from `udp`.
    senders: Vec<OwnedFd>,
    sizes: UringSizes,
    features: UringFeatures,
    tun_bufs: BufferPool,
    tun_state: Vec<TunBuf>,
    tun_reads: Arming,
    slots: Box<[SendSlot]>,
    free_slots: Vec<u16>,
    writes: Box<[WriteSlot]>,
    free_writes: Vec<u16>,
    recv_bufs: BufferPool,
    /// The multishot receive's header (name and control lengths only).
    recv_msg: Box<libc::msghdr>,
    /// The plain receives' headers, one per buffer (empty with multishot).
    recv_slots: Box<[RecvSlot]>,
    /// Outstanding TUN writes per receive buffer, plus one while the caller holds it.
    recv_refs: Vec<u16>,
    recvs: Arming,
    in_flight: usize,
    pending_cqes: Vec<(u64, i32, u32)>,
    /// False while paused ([`UringIo::stop_reading`]): no read or receive
    /// is armed, and none is re-armed.
    reading: bool,
}

/// Send slots per TUN buffer. A TUN buffer can need several sends: a 64 KiB
/// super-packet cut at a small MSS has more than `MAX_SEGMENTS` segments,
/// and one of full 1,472-byte segments is over `MAX_GSO_BYTES`. Running out
/// of slots drops packets, so keep room for this many per buffer.
const SENDS_PER_BUFFER: usize = 4;

fn send_slot_count(tun_bufs: usize) -> usize {
    (tun_bufs * SENDS_PER_BUFFER).min(usize::from(u16::MAX))
}

fn write_slot_count(recv_bufs: u16) -> usize {
    usize::from(recv_bufs) * MAX_SEGMENTS
}

fn send_slots(count: usize) -> Box<[SendSlot]> {
    (0..count)
        .map(|_| SendSlot {
            // SAFETY: msghdr and iovec are plain old data; all-zero is valid.
            msg: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            iov: unsafe { std::mem::zeroed() },
            header: [0; MAX_ENCAP_HEADER],
            name: SockAddrBuf::default(),
            ctrl: [0; CMSG_SPACE_U32 / 8],
            bufs: [0; MAX_SEGMENTS],
            nbufs: 0,
            packets: 0,
            gso: false,
        })
        .collect()
}

fn write_slots(count: usize) -> Box<[WriteSlot]> {
    (0..count)
        // SAFETY: iovec is plain old data; all-zero is valid.
        .map(|_| WriteSlot { iov: unsafe { std::mem::zeroed() }, hdr: [0; VNET_HDR_LEN], packets: 0, inner_bytes: 0 })
        .collect()
}

impl UringIo {
    pub fn new(tun: OwnedFd, udp: OwnedFd, senders: Vec<OwnedFd>, sizes: UringSizes, features: UringFeatures) -> io::Result<UringIo> {
        assert!(sizes.recv_bufs.is_power_of_two(), "recv_bufs must be a power of two");
        let sq = 1024u32;
        let cq = 16_384u32;
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_single_issuer();
        if features.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        let ring = builder.build(sq)?;
        let n = sizes.tun_reads.next_power_of_two().min(1 << 15);
        let recv_stride = RECV_HEADER + RECV_NAME_LEN as usize + RECV_CONTROL_LEN + sizes.recv_buf_size;
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = RECV_NAME_LEN;
        recv_msg.msg_controllen = RECV_CONTROL_LEN;
        let mut io = UringIo {
            tun_bufs: BufferPool::new(n as u16, sizes.tun_buf_size, TUN_GROUP)?,
            tun_state: vec![TunBuf::IN_RING; n],
            tun_reads: Arming::new(features.multishot_read, n as u16),
            free_slots: (0..send_slot_count(n) as u16).rev().collect(),
            slots: send_slots(send_slot_count(n)),
            free_writes: (0..write_slot_count(sizes.recv_bufs) as u16).rev().collect(),
            writes: write_slots(write_slot_count(sizes.recv_bufs)),
            recv_bufs: BufferPool::new(sizes.recv_bufs, recv_stride, RECV_GROUP)?,
            recv_msg,
            recv_slots: Box::new([]),
            recv_refs: vec![0; usize::from(sizes.recv_bufs)],
            recvs: Arming::new(features.multishot_recv, sizes.recv_bufs),
            in_flight: 0,
            pending_cqes: Vec::with_capacity(cq as usize),
            reading: true,
            ring,
            tun,
            udp,
            senders,
            sizes,
            features,
        };
        if features.multishot_read {
            io.tun_bufs.register(&io.ring)?;
        }
        if features.multishot_recv {
            io.recv_bufs.register(&io.ring)?;
        } else {
            io.recv_slots = (0..sizes.recv_bufs).map(|bid| io.plain_recv_slot(bid)).collect();
        }
        io.arm()?;
        Ok(io)
    }

    /// The header of the plain receive into buffer `bid`, laid out like a
    /// multishot one's: name, control, then payload.
    fn plain_recv_slot(&self, bid: u16) -> RecvSlot {
        let base = self.recv_bufs.ptr(bid);
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // SAFETY: all three offsets lie within buffer bid (stride = header +
        // name + control + payload).
        unsafe {
            msg.msg_name = base.add(RECV_HEADER).cast();
            msg.msg_control = base.add(RECV_HEADER + RECV_NAME_LEN as usize).cast();
        }
        // SAFETY: as above.
        let payload = unsafe { base.add(RECV_HEADER + RECV_NAME_LEN as usize + RECV_CONTROL_LEN) };
        RecvSlot { msg, iov: libc::iovec { iov_base: payload.cast(), iov_len: self.sizes.recv_buf_size } }
    }

    fn recv_stride(&self) -> usize {
        RECV_HEADER + RECV_NAME_LEN as usize + RECV_CONTROL_LEN + self.sizes.recv_buf_size
    }

    /// Pushes an entry, submitting first when the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until its completion is reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller's guarantee.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Puts every read and receive that should run but does not in flight.
    fn arm(&mut self) -> io::Result<()> {
        if !self.reading {
            return Ok(());
        }
        match &mut self.tun_reads {
            Arming::Multishot { armed: false } => {
                let entry = opcode::ReadMulti::new(types::Fd(self.tun.as_raw_fd()), 0, TUN_GROUP).build().user_data(tag(TUN_READ, 0));
                self.tun_reads = Arming::Multishot { armed: true };
                // SAFETY: the buffers come from the registered ring, which
                // outlives every operation (see Drop).
                unsafe { self.push(entry)? };
            }
            Arming::Multishot { armed: true } => {}
            Arming::Plain { to_arm, armed } => {
                let fd = types::Fd(self.tun.as_raw_fd());
                let bufs: Vec<u16> = to_arm.drain(..).filter(|&b| !std::mem::replace(&mut armed[usize::from(b)], true)).collect();
                for buf in bufs {
                    let entry = opcode::Read::new(fd, self.tun_bufs.ptr(buf), self.tun_bufs.stride as u32)
                        .build()
                        .user_data(tag(TUN_READ, u64::from(buf)));
                    // SAFETY: buffer `buf` is in no one's hands (not held by
                    // the caller, no send from it in flight) until this read
                    // completes; the slab outlives every operation.
                    unsafe { self.push(entry)? };
                }
            }
        }
        match &mut self.recvs {
            Arming::Multishot { armed: false } => {
                let entry = opcode::RecvMsgMulti::new(types::Fd(self.udp.as_raw_fd()), &*self.recv_msg, RECV_GROUP)
                    .build()
                    .user_data(tag(UDP_RECV, 0));
                self.recvs = Arming::Multishot { armed: true };
                // SAFETY: recv_msg is boxed and lives as long as self; the
                // buffers come from the registered ring.
                unsafe { self.push(entry)? };
            }
            Arming::Multishot { armed: true } => {}
            Arming::Plain { to_arm, armed } => {
                let bids: Vec<u16> = to_arm.drain(..).filter(|&b| !std::mem::replace(&mut armed[usize::from(b)], true)).collect();
                for bid in bids {
                    let slot = &mut self.recv_slots[usize::from(bid)];
                    slot.msg.msg_namelen = RECV_NAME_LEN;
                    slot.msg.msg_controllen = RECV_CONTROL_LEN;
                    slot.msg.msg_flags = 0;
                    slot.msg.msg_iov = &mut slot.iov;
                    slot.msg.msg_iovlen = 1;
                    let entry = opcode::RecvMsg::new(types::Fd(self.udp.as_raw_fd()), &mut slot.msg)
                        .build()
                        .user_data(tag(UDP_RECV, u64::from(bid)));
                    // SAFETY: the slot (boxed slice, never moved) and its
                    // buffer are nobody else's until this receive completes.
                    unsafe { self.push(entry)? };
                }
            }
        }
        Ok(())
    }

    /// Submits queued work and waits for at least one completion or `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.arm()?;
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits queued work, then polls the completion queue without
    /// sleeping until a completion is there or `until` passes; past it,
    /// waits in the kernel like [`submit_and_wait`](Self::submit_and_wait).
    ///
    /// Every poll enters the kernel (an `io_uring_enter` that submits
    /// nothing): completions whose work runs as task work (a read woken by
    /// a TUN packet) are only finished there under `COOP_TASKRUN`.
    pub fn submit_and_poll(&mut self, until: std::time::Instant, timeout: Duration) -> io::Result<()> {
        self.arm()?;
        loop {
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            if !self.pending_cqes.is_empty() || !self.ring.completion().is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= until {
                return self.submit_and_wait(timeout);
            }
            std::hint::spin_loop();
        }
    }

    /// Takes every available completion, does the ring's own bookkeeping
    /// (send buffers back to reading, write references, re-arming) and
    /// appends what the caller must act on to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut cqes = std::mem::take(&mut self.pending_cqes);
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        for &(data, res, flags) in &cqes {
            let more = cqueue::more(flags);
            if !more {
                self.in_flight -= 1;
            }
            let index = (data & 0xffff_ffff) as u16;
            let caller_tag = ((data >> TAG_SHIFT) & 0xffff) as u16;
            let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as usize) };
            match data >> KIND_SHIFT {
                TUN_READ => self.reaped_read(index, more, flags, result, out),
                UDP_SEND => {
                    let slot = usize::from(index);
                    let (nbufs, packets, gso) = (self.slots[slot].nbufs, self.slots[slot].packets, self.slots[slot].gso);
                    for k in 0..usize::from(nbufs) {
                        let buf = self.slots[slot].bufs[k];
                        self.tun_state[usize::from(buf)].sends -= 1;
                        self.maybe_release(buf);
                    }
                    self.free_slots.push(index);
                    out.push(Completion::Sent { result, packets, gso, tag: caller_tag });
                }
                UDP_RECV => self.reaped_receive(index, more, flags, result, out),
                TUN_WRITE => {
                    self.unref_recv(index);
                    let inner_bytes = *result.as_ref().unwrap_or(&0) as u32;
                    out.push(Completion::TunWritten { result, packets: 1, inner_bytes, tag: caller_tag });
                }
                TUN_WRITEV => {
                    let slot = (data & 0xffff) as u16;
                    let bid = ((data >> 16) & 0xffff) as u16;
                    self.free_writes.push(slot);
                    self.unref_recv(bid);
                    let (packets, inner_bytes) = (self.writes[usize::from(slot)].packets, self.writes[usize::from(slot)].inner_bytes);
                    out.push(Completion::TunWritten { result, packets, inner_bytes, tag: caller_tag });
                }
                _ => {}
            }
        }
        cqes.clear();
        self.pending_cqes = cqes;
        Ok(())
    }

    /// A TUN read completion: multishot (the buffer is in the flags) or plain
    /// (the buffer is the index).
    fn reaped_read(&mut self, index: u16, more: bool, flags: u32, result: io::Result<usize>, out: &mut Vec<Completion>) {
        let buf = match self.tun_reads {
            Arming::Multishot { .. } => cqueue::buffer_select(flags),
            Arming::Plain { .. } => Some(index),
        };
        if !more {
            self.tun_reads.ended(index);
        }
        match (buf, result) {
            (Some(buf), Ok(len)) if usize::from(buf) < self.tun_state.len() => {
                self.tun_state[usize::from(buf)] = TunBuf { held: true, len: len as u32, sends: 0, caller_done: false };
                out.push(Completion::TunRead { buf: Some(buf), result: Ok(len) });
            }
            (buf, result) => {
                // A plain read that failed keeps its buffer: read into it again.
                if let (Arming::Plain { .. }, Some(buf)) = (&self.tun_reads, buf) {
                    self.tun_reads.free(buf);
                }
                match result {
                    Ok(_) => {}
                    // ENOBUFS: every buffer is busy, re-armed on the next
                    // submit; EAGAIN/ECANCELED are not failures.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::ECANCELED)) => {}
                    Err(e) => out.push(Completion::TunRead { buf: None, result: Err(e) }),
                }
            }
        }
    }

    /// A UDP receive completion: multishot (the buffer is in the flags, and
    /// the end of the operation is reported) or plain (the buffer is the index).
    fn reaped_receive(&mut self, index: u16, more: bool, flags: u32, result: io::Result<usize>, out: &mut Vec<Completion>) {
        match self.recvs {
            Arming::Multishot { .. } => {
                if !more {
                    self.recvs.ended(index);
                }
                let bid = cqueue::buffer_select(flags);
                if let Some(b) = bid {
                    self.recv_refs[usize::from(b)] = 1;
                }
                out.push(Completion::Received { bid, result });
            }
            Arming::Plain { .. } => {
                self.recvs.ended(index);
                if result.is_ok() {
                    self.recv_refs[usize::from(index)] = 1;
                    out.push(Completion::Received { bid: Some(index), result });
                } else {
                    // Nothing was received into it: receive into it again.
                    self.recvs.free(index);
                    out.push(Completion::Received { bid: None, result });
                }
            }
        }
    }

    fn unref_recv(&mut self, bid: u16) {
        let r = &mut self.recv_refs[usize::from(bid)];
        *r -= 1;
        if *r == 0 {
            self.recv_bufs.provide(bid);
            self.recvs.free(bid);
        }
    }

    fn maybe_release(&mut self, buf: u16) {
        let st = &mut self.tun_state[usize::from(buf)];
        if st.held && st.sends == 0 && st.caller_done {
            *st = TunBuf::IN_RING;
            self.tun_bufs.provide(buf);
            self.tun_reads.free(buf);
        }
    }

    /// A held TUN buffer: its whole capacity (mutable, so a super-packet can
    /// be split in place) and the length the read filled.
    pub fn tun_buf(&mut self, buf: u16) -> (&mut [u8], usize) {
        let Some(st) = self.tun_state.get(usize::from(buf)).copied() else { return (&mut [], 0) };
        if !st.held || st.sends > 0 || st.caller_done {
            return (&mut [], 0);
        }
        let size = self.tun_bufs.stride;
        // SAFETY: the buffer is held by the caller: the kernel has finished
        // the read into it and no send from it is in flight.
        let whole = unsafe { std::slice::from_raw_parts_mut(self.tun_bufs.ptr(buf), size) };
        (whole, (st.len as usize).min(size))
    }

    /// The caller is done with a TUN buffer; it returns to the ring once
    /// every send that refers to it has completed.
    pub fn finish_tun_buf(&mut self, buf: u16) {
        if let Some(st) = self.tun_state.get_mut(usize::from(buf))
            && st.held
            && !st.caller_done
        {
            st.caller_done = true;
            self.maybe_release(buf);
        }
    }

    /// Sends `pieces` — (TUN buffer, offset, length), in order, each one
    /// datagram's payload, each preceded by `header` (at most
    /// [`MAX_ENCAP_HEADER`] bytes; empty for none) — to `to` with one
    /// `SENDMSG` from sender socket `via` (or the receiving socket, when
    /// there are no senders), as GSO segments of `segment` bytes when given;
    /// `tag` comes back with the completion. `Ok(false)`: no free slot, too
    /// many pieces, a header too long or a piece not in a held buffer;
    /// nothing was sent.
    pub fn send(&mut self, send: Send<'_>, tag: u16) -> io::Result<bool> {
        let Send { to, pieces, header, segment, via } = send;
        if pieces.is_empty() || pieces.len() > MAX_SEGMENTS || header.len() > MAX_ENCAP_HEADER {
            return Ok(false);
        }
        let size = self.tun_bufs.stride;
        for &(buf, off, len) in pieces {
            let st = self.tun_state.get(usize::from(buf)).copied().unwrap_or(TunBuf::IN_RING);
            if !st.held || st.caller_done || off as usize + len as usize > size {
                return Ok(false);
            }
        }
        let Some(slot_index) = self.free_slots.pop() else { return Ok(false) };
        let slot = &mut self.slots[usize::from(slot_index)];
        slot.nbufs = 0;
        slot.header[..header.len()].copy_from_slice(header);
        let mut iovs = 0;
        for &(buf, off, len) in pieces {
            if !header.is_empty() {
                slot.iov[iovs] = libc::iovec { iov_base: slot.header.as_mut_ptr().cast(), iov_len: header.len() };
                iovs += 1;
            }
            // SAFETY: the piece was checked to lie within buffer `buf`.
            let base = unsafe { self.tun_bufs.ptr(buf).add(off as usize) };
            slot.iov[iovs] = libc::iovec { iov_base: base.cast(), iov_len: len as usize };
            iovs += 1;
            if !slot.bufs[..usize::from(slot.nbufs)].contains(&buf) {
                slot.bufs[usize::from(slot.nbufs)] = buf;
                slot.nbufs += 1;
                self.tun_state[usize::from(buf)].sends += 1;
            }
        }
        slot.packets = pieces.len() as u16;
        slot.gso = segment.is_some();
        let namelen = slot.name.set(to);
        slot.msg.msg_name = slot.name.as_mut_ptr().cast();
        slot.msg.msg_namelen = namelen;
        slot.msg.msg_iov = slot.iov.as_mut_ptr();
        slot.msg.msg_iovlen = iovs;
        match segment {
            Some(seg) => {
                // SAFETY: ctrl is CMSG_SPACE_U32 bytes of u64-aligned memory.
                let ctrl = unsafe { std::slice::from_raw_parts_mut(slot.ctrl.as_mut_ptr().cast::<u8>(), CMSG_SPACE_U32) };
                slot.msg.msg_controllen = encode_gso_cmsg(ctrl, seg);
                slot.msg.msg_control = slot.ctrl.as_mut_ptr().cast();
            }
            None => {
                slot.msg.msg_control = std::ptr::null_mut();
                slot.msg.msg_controllen = 0;
            }
        }
        let fd = match self.senders.len() {
            0 => self.udp.as_raw_fd(),
            n => self.senders[via % n].as_raw_fd(),
        };
        let entry = opcode::SendMsg::new(types::Fd(fd), &slot.msg).build().user_data(tagged(UDP_SEND, tag, u64::from(slot_index)));
        // SAFETY: the slot (header, iovecs, name, control) is in a boxed
        // slice that never moves and is not reused until this send
        // completes; its buffers count this send.
        unsafe { self.push(entry)? };
        Ok(true)
    }

    /// The UDP socket, for the rare synchronous send outside the ring (a
    /// reply the caller must send before the receive buffer is reused).
    pub fn udp_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.udp.as_fd()
    }

    /// The datagram in receive buffer `bid`, whose completion reported `len`.
    pub fn recv_view(&mut self, bid: u16, len: usize) -> Option<RecvView<'_>> {
        let stride = self.recv_stride();
        if usize::from(bid) >= usize::from(self.sizes.recv_bufs) || len > stride || self.recv_refs[usize::from(bid)] != 1 {
            return None;
        }
        // SAFETY: the caller holds bid (reported by a completion, not yet
        // finished) and no TUN write from it is in flight (its reference
        // count is the caller's alone), so the kernel is done with all of
        // it; the view borrows self mutably, so no write can be submitted
        // from it while the view lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.recv_bufs.ptr(bid), stride) };
        if let Some(slot) = self.recv_slots.get(usize::from(bid)) {
            // A plain receive: the kernel wrote the lengths and flags back
            // into the slot's header; name, control, payload sit in `buf`.
            let name_at = RECV_HEADER;
            let control_at = name_at + RECV_NAME_LEN as usize;
            let payload_at = control_at + RECV_CONTROL_LEN;
            let namelen = (slot.msg.msg_namelen as usize).min(RECV_NAME_LEN as usize);
            let controllen = slot.msg.msg_controllen.min(RECV_CONTROL_LEN);
            let from = parse_sockaddr(&buf[name_at..name_at + namelen]);
            let gro_segment = gro_segment_size(&buf[control_at..control_at + controllen]);
            let truncated = slot.msg.msg_flags & libc::MSG_TRUNC != 0;
            let payload = payload_at..payload_at + len.min(self.sizes.recv_buf_size);
            return Some(RecvView { from, buf, payload, gro_segment, truncated });
        }
        let out = types::RecvMsgOut::parse(&buf[..len], &self.recv_msg).ok()?;
        let start = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
        let payload = start..start + out.payload_data().len();
        let (from, gro_segment, truncated) =
            (parse_sockaddr(out.name_data()), gro_segment_size(out.control_data()), out.is_payload_truncated());
        Some(RecvView { from, buf, payload, gro_segment, truncated })
    }

    /// Writes bytes `offset..offset + len` of held receive buffer `bid` into
    /// the TUN; the buffer stays out of the ring until the write completes.
    pub fn write_to_tun(&mut self, bid: u16, offset: usize, len: usize, tag: u16) -> io::Result<()> {
        let stride = self.recv_stride();
        if usize::from(bid) >= usize::from(self.sizes.recv_bufs) || offset.checked_add(len).is_none_or(|end| end > stride) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "range outside the receive buffer"));
        }
        // SAFETY: bid and offset..offset+len were checked to lie within the slab.
        let ptr = unsafe { self.recv_bufs.ptr(bid).add(offset) };
        self.recv_refs[usize::from(bid)] += 1;
        let entry =
            opcode::Write::new(types::Fd(self.tun.as_raw_fd()), ptr, len as u32).build().user_data(tagged(TUN_WRITE, tag, u64::from(bid)));
        // SAFETY: the receive buffer is referenced (recv_refs) until this
        // write completes, so it is neither provided back nor freed.
        unsafe { self.push(entry) }
    }

    /// Writes `hdr` followed by `pieces` (offset, length) of held receive
    /// buffer `bid` into the TUN as one packet (`WRITEV`). `Ok(false)`: no
    /// free write slot or bad ranges; nothing was written.
    /// `packets` and `inner_bytes` say what the write carries, as received
    /// (for counting: a coalesced write is shorter by the headers it merged).
    pub fn write_to_tun_gather(
        &mut self,
        bid: u16,
        hdr: [u8; VNET_HDR_LEN],
        pieces: &[(usize, usize)],
        packets: u16,
        inner_bytes: u32,
        tag: u16,
    ) -> io::Result<bool> {
        let stride = self.recv_stride();
        if usize::from(bid) >= usize::from(self.sizes.recv_bufs) || pieces.is_empty() || pieces.len() > MAX_SEGMENTS {
            return Ok(false);
        }
        if pieces.iter().any(|&(o, l)| o.checked_add(l).is_none_or(|end| end > stride)) {
            return Ok(false);
        }
        let Some(slot_index) = self.free_writes.pop() else { return Ok(false) };
        let slot = &mut self.writes[usize::from(slot_index)];
        slot.hdr = hdr;
        slot.packets = packets;
        slot.inner_bytes = inner_bytes;
        slot.iov[0] = libc::iovec { iov_base: slot.hdr.as_mut_ptr().cast(), iov_len: VNET_HDR_LEN };
        for (k, &(o, l)) in pieces.iter().enumerate() {
            // SAFETY: each range was checked to lie within buffer bid.
            let base = unsafe { self.recv_bufs.ptr(bid).add(o) };
            slot.iov[k + 1] = libc::iovec { iov_base: base.cast(), iov_len: l };
        }
        self.recv_refs[usize::from(bid)] += 1;
        let entry = opcode::Writev::new(types::Fd(self.tun.as_raw_fd()), slot.iov.as_ptr(), (pieces.len() + 1) as u32)
            .build()
            .user_data(tagged(TUN_WRITEV, tag, (u64::from(bid) << 16) | u64::from(slot_index)));
        // SAFETY: the slot (boxed, never moved) is not reused and the receive
        // buffer is referenced until this write completes.
        unsafe { self.push(entry)? };
        Ok(true)
    }

    /// The caller is done dispatching receive buffer `bid`.
    pub fn finish_recv_buf(&mut self, bid: u16) {
        self.unref_recv(bid);
    }

    /// Stops reading: cancels the armed TUN reads and UDP receives and arms
    /// no new ones. What they had read before the cancellation still comes
    /// back as completions; once those are handled and every send and write
    /// has completed, [`is_idle`](Self::is_idle) holds.
    pub fn stop_reading(&mut self) -> io::Result<()> {
        if !std::mem::replace(&mut self.reading, false) {
            return Ok(());
        }
        let mut targets = Vec::new();
        for (kind, arming) in [(TUN_READ, &self.tun_reads), (UDP_RECV, &self.recvs)] {
            match arming {
                Arming::Multishot { armed: true } => targets.push(tag(kind, 0)),
                Arming::Multishot { armed: false } => {}
                Arming::Plain { armed, .. } => {
                    targets.extend(armed.iter().enumerate().filter(|(_, a)| **a).map(|(i, _)| tag(kind, i as u64)));
                }
            }
        }
        for target in targets {
            let entry = opcode::AsyncCancel::new(target).build().user_data(tag(CANCEL, 0));
            // SAFETY: a cancel request references no memory.
            unsafe { self.push(entry)? };
        }
        Ok(())
    }

    /// Reads and receives are armed again at the next submit.
    pub fn start_reading(&mut self) {
        self.reading = true;
    }

    /// Nothing is in flight: no read, receive, send, write or cancellation.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.pending_cqes.is_empty()
    }

    /// Cancels all operations and waits (bounded) until none is in flight.
    fn cancel_all(&mut self) -> bool {
        if !self.push_cancellations() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.in_flight > 0 && Instant::now() < deadline {
            let _ = self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&types::Timespec::new().nsec(50_000_000)));
            // Only bookkeeping matters now; do not re-arm anything.
            let cqes: Vec<(u64, u32)> = self.ring.completion().map(|c| (c.user_data(), c.flags())).collect();
            for (_, flags) in cqes {
                if !cqueue::more(flags) {
                    self.in_flight -= 1;
                }
            }
        }
        self.in_flight == 0
    }

    /// Asks the kernel to cancel everything that could wait forever: with
    /// `ASYNC_CANCEL_ANY` (5.19, which every kernel with buffer rings has)
    /// in one request, else each armed read and receive by its user data
    /// (sends and writes complete on their own).
    fn push_cancellations(&mut self) -> bool {
        let mut targets = Vec::new();
        if self.features.buf_ring {
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(tag(CANCEL, 0));
            targets.push(entry);
        } else {
            for (kind, arming) in [(TUN_READ, &self.tun_reads), (UDP_RECV, &self.recvs)] {
                if let Arming::Plain { armed, .. } = arming {
                    for (i, _) in armed.iter().enumerate().filter(|(_, a)| **a) {
                        targets.push(opcode::AsyncCancel::new(tag(kind, i as u64)).build().user_data(tag(CANCEL, 0)));
                    }
                }
            }
        }
        // SAFETY: a cancel request references no memory.
        targets.into_iter().all(|entry| unsafe { self.push(entry) }.is_ok())
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        if !self.cancel_all() {
            // The kernel may still write into our buffers: leak them rather
            // than free memory under it.
            self.tun_bufs.leak();
            self.recv_bufs.leak();
            log::warn!("io_uring operations still in flight at shutdown; leaking their buffers");
        }
    }
}
