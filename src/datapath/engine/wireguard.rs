//! The WireGuard engine (`backend = "wireguard"`): the `mmsg` engine's
//! batched I/O (epoll; TUN reads until the queue is empty, up to a batch;
//! GSO `sendmsg`; `recvmmsg` with GRO; one `writev` per planned TUN write)
//! with the WireGuard protocol core (`crate::wireguard`) between the
//! forwarding core and the socket. The forwarding core still classifies,
//! splits TUN super-packets, plans GSO runs and coalesces TUN writes; this
//! engine seals each run and opens each received run, in batches:
//!
//! - **Egress, per run** (one peer, one flow, one size): one key-ring load,
//!   one counter reservation (a CAS) for the whole run; each packet copied
//!   into the seal arena with [`HEADROOM`] in front and [`TAILROOM`]
//!   behind, sealed in place there; one GSO send of the equal-size
//!   ciphertexts. Without a session the run is dropped and counted
//!   (`wg_no_session`) and a handshake is started (rate-limited by the
//!   core to one per REKEY_TIMEOUT): nothing is queued.
//! - **Ingress, per received run** (a GRO run from one source): each
//!   transport message's session is looked up once per run of one receiver
//!   index and opened in place; then, once per session, the replay window
//!   is locked once for all of the run's counters; then cryptokey routing
//!   (the inner source's owner must be the session's peer) and the usual
//!   destination check; the accepted plaintexts go to the forwarding core,
//!   which coalesces them into TUN writes. Handshake messages pass the
//!   worker's [`HandshakeGate`] (under-load detection and a budget per
//!   100 ms window, `crate::wireguard::load`), then go to
//!   [`Node::handle_handshake`]; its replies are sent at once. Under
//!   load, messages without a valid mac2 get cookie replies (counted as
//!   `wg_cookie_reply`), and those past the window's budget are dropped
//!   unread (`wg_handshake_overload`).
//! - **Timers**: worker 0 runs [`Node::tick`] about every
//!   [`TICK_INTERVAL`] (see [`Ticker`]).
//!
//! Why a copy into the seal arena rather than sealing in the TUN buffer:
//! the TUN read puts a packet (or the virtio-net header) at the start of
//! its buffer and the offload split lays segments back to back, so neither
//! leaves 16 bytes in front and 31 behind each packet. One `memcpy` of a
//! packet costs a few percent of its ChaCha20-Poly1305 seal.
//!
//! Nothing here allocates, locks (but the replay window, once per session
//! per received run) or logs per packet; the scratch vectors are sized
//! once. Handshakes (rare) may allocate inside the protocol core.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use rustc_hash::FxHashMap;

use super::{BUF_SIZE, IDLE_WAIT, tun_buf_size};
use crate::datapath::batch::{MAX_SEGMENTS, MAX_SEND_BYTES};
use crate::datapath::context::{Checkpoint, WorkerContext};
use crate::datapath::core::{ForwardingCore, Piece, SendOutcome};
use crate::datapath::format::flannel_udp::FlannelUdp;
use crate::datapath::packet;
use crate::route::SubnetTable;
use crate::stats::DropReason;
use crate::sys::mem::PageBuf;
use crate::sys::{fd, udp};
use crate::wire::wireguard::{MessageType, TRANSPORT_MIN_LEN, message_type};
use crate::wireguard::cryptokey;
use crate::wireguard::load::{Admission, HandshakeGate};
use crate::wireguard::session::{HEADROOM, TAILROOM};
use crate::wireguard::{HandshakeOutcome, Node, PublicKey, Receiving, Slot};

const TOKEN_TUN: u64 = 1;
const TOKEN_UDP: u64 = 2;
/// recvmmsg calls per wakeup at most (as `mmsg`).
const RECV_ROUNDS: usize = 8;
/// How often worker 0 runs the protocol's timers. The rules are exact
/// functions of time; a timer fires up to one interval late.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Distinct sessions one received run is tracked for; a run comes from one
/// source address, so more than a peer's current and previous session is
/// rare. Past this, packets of further sessions are dropped as replays
/// would be (counted), never accepted unchecked.
const MAX_RUN_SESSIONS: usize = 4;

/// One opened transport message of a received run.
#[derive(Clone, Copy)]
struct OpenedRef {
    /// Which of the run's sessions opened it.
    session: u8,
    /// Where its plaintext lies in the receive buffer, and how long it is.
    offset: usize,
    len: usize,
    counter: u64,
    /// Passed the replay window.
    fresh: bool,
}

struct WgIo {
    tun: OwnedFd,
    udp: OwnedFd,
    epoll: fd::Epoll,
    tun_bufs: PageBuf,
    buf_size: usize,
    batch: usize,
    receiver: udp::MmsgReceiver,
    /// [`MAX_SEGMENTS`] slots of `slot_size` bytes: where a run is sealed.
    arena: PageBuf,
    slot_size: usize,
    node: Arc<Node>,
    /// This worker's count of handshake messages (under-load detection).
    gate: HandshakeGate,
    /// Per received run: its sessions, its opened messages, its accepted packets.
    sessions: Vec<Receiving>,
    opened: Vec<OpenedRef>,
    accepted: Vec<Piece>,
    /// (slot offset, length) of each sealed datagram of one send.
    sealed: Vec<(usize, usize)>,
}

pub fn run(mut ctx: WorkerContext, node: Arc<Node>) -> io::Result<()> {
    let buf_size = tun_buf_size(ctx.core.vnet_hdr);
    let epoll = fd::Epoll::new(4)?;
    epoll.add_readable(ctx.tun.as_fd(), TOKEN_TUN)?;
    epoll.add_readable(ctx.udp.as_fd(), TOKEN_UDP)?;
    // Room for the largest packet the TUN hands over (its MTU), with the
    // transport header in front and the padding and tag behind.
    let slot_size = (HEADROOM + ctx.core.node.max_inner + TAILROOM).next_multiple_of(64);
    let mut io = WgIo {
        tun: ctx.tun,
        udp: ctx.udp,
        epoll,
        tun_bufs: PageBuf::new(ctx.batch * buf_size)?,
        buf_size,
        batch: ctx.batch,
        receiver: udp::MmsgReceiver::new(ctx.batch.min(64), BUF_SIZE)?,
        arena: PageBuf::new(MAX_SEGMENTS * slot_size)?,
        slot_size,
        node,
        gate: HandshakeGate::new(Instant::now()),
        sessions: Vec::with_capacity(MAX_RUN_SESSIONS),
        opened: Vec::with_capacity(MAX_SEGMENTS * 2),
        accepted: Vec::with_capacity(MAX_SEGMENTS * 2),
        sealed: Vec::with_capacity(MAX_SEGMENTS),
    };
    let mut ticker = (ctx.id == 0).then(|| Ticker::new(Instant::now()));
    // The forwarding core speaks flannel's udp format for what it plans:
    // nothing in front of the inner packet; this engine adds WireGuard's.
    let mut core = ForwardingCore::new(ctx.core, FlannelUdp, Instant::now());
    ctx.ready.announce();
    loop {
        match ctx.lifecycle.checkpoint() {
            Checkpoint::Forward => {}
            Checkpoint::Resumed => continue,
            Checkpoint::Stop => break,
        }
        let (tun_ready, udp_ready) = io.wait(ticker.as_ref())?;
        let now = Instant::now();
        if tun_ready || udp_ready {
            core.begin_batch(now);
            if tun_ready {
                io.read_tun(&mut core)?;
                io.seal_and_send(&mut core);
            }
            if udp_ready {
                io.receive_and_write(&mut core);
            }
        } else {
            core.idle(now);
        }
        if let Some(t) = ticker.as_mut() {
            t.maybe_tick(&io.node, core.table(), io.udp.as_fd(), now);
        }
    }
    Ok(())
}

impl WgIo {
    /// Waits for either fd (at most until the next tick, on worker 0).
    fn wait(&mut self, ticker: Option<&Ticker>) -> io::Result<(bool, bool)> {
        let wait = ticker.map_or(IDLE_WAIT, |t| t.next.saturating_duration_since(Instant::now()).min(IDLE_WAIT));
        let (mut tun, mut udp) = (false, false);
        for token in self.epoll.wait(wait.as_millis() as i32)? {
            tun |= token == TOKEN_TUN;
            udp |= token == TOKEN_UDP;
        }
        Ok((tun, udp))
    }

    /// Reads the TUN until it is empty or the batch is full (as `mmsg`).
    fn read_tun(&mut self, core: &mut ForwardingCore<FlannelUdp>) -> io::Result<()> {
        let slots = self.batch * self.buf_size;
        super::read_tun_batch(self.tun.as_fd(), &mut self.tun_bufs[..slots], self.buf_size, core)
    }

    /// Seals every planned run under its peer's current session and sends
    /// it; a run whose peer has no session is dropped (counted) and starts
    /// a handshake.
    fn seal_and_send(&mut self, core: &mut ForwardingCore<FlannelUdp>) {
        let tag = core.batch_tag();
        let now = core.now();
        let sock = self.udp.as_fd();
        for i in 0..core.plan_sends() {
            let run = core.run(i);
            let packets = core.run_packets(&run);
            let Some(peer) = packets[0].route.public_key.and_then(|key| self.node.peer(&key)) else {
                // The table names a peer the node does not hold (yet): the
                // control thread adds peers right after it publishes.
                core.drop_packets(DropReason::WgNoSession, run.count as u64);
                continue;
            };
            let ring = peer.keys();
            let reserved = ring.sending(now).map(|s| s.reserve(run.count, now));
            let mut batch = match reserved {
                Some(Ok(batch)) if batch.remaining() == run.count => batch,
                _ => {
                    core.drop_packets(DropReason::WgNoSession, run.count as u64);
                    if let Some(init) = self.node.send_initiation(&peer, now, &mut OsRng) {
                        let _ = udp::send_segments(sock, run.endpoint, &[IoSlice::new(&init)], None);
                    }
                    continue;
                }
            };
            self.sealed.clear();
            let mut refused = 0u64;
            for (k, p) in packets.iter().enumerate() {
                let at = p.buf as usize * self.buf_size + p.offset as usize;
                let len = p.len as usize;
                let slot = &mut self.arena[k * self.slot_size..(k + 1) * self.slot_size];
                if HEADROOM + len + TAILROOM > slot.len() {
                    refused += 1;
                    continue;
                }
                slot[HEADROOM..HEADROOM + len].copy_from_slice(&self.tun_bufs[at..at + len]);
                match batch.seal(slot, len) {
                    Ok(n) => self.sealed.push((k * self.slot_size, n)),
                    Err(_) => refused += 1,
                }
            }
            if refused > 0 {
                core.drop_packets(DropReason::TooBig, refused);
            }
            if self.sealed.is_empty() {
                continue;
            }
            peer.note_transport_sent(now, true);
            send_sealed(core, sock, run.endpoint, &self.arena, &self.sealed, tag);
        }
        core.end_egress_batch();
    }

    /// Receives up to [`RECV_ROUNDS`] `recvmmsg` batches; opens, filters
    /// and writes what they carry.
    fn receive_and_write(&mut self, core: &mut ForwardingCore<FlannelUdp>) {
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
                let Some(from) = from else {
                    core.drop_packets(DropReason::UnknownSender, 1);
                    continue;
                };
                let mut run = RunState {
                    node: &self.node,
                    gate: &mut self.gate,
                    sessions: &mut self.sessions,
                    opened: &mut self.opened,
                    accepted: &mut self.accepted,
                };
                run.open(core, sock, from, payload, gro);
                run.filter(core, payload);
                let writes = core.ingress_accepted(payload, &self.accepted);
                write_planned(core, tun, payload, writes);
            }
            if n < self.receiver.capacity() {
                break;
            }
        }
    }
}

/// The scratch of one received run.
struct RunState<'a> {
    node: &'a Node,
    gate: &'a mut HandshakeGate,
    sessions: &'a mut Vec<Receiving>,
    opened: &'a mut Vec<OpenedRef>,
    accepted: &'a mut Vec<Piece>,
}

impl RunState<'_> {
    /// Cuts the run into datagrams: transport messages are opened in
    /// place (their session looked up once per run of one receiver index),
    /// handshake messages answered.
    fn open(
        &mut self,
        core: &mut ForwardingCore<FlannelUdp>,
        sock: BorrowedFd<'_>,
        from: SocketAddr,
        payload: &mut [u8],
        gro: Option<u16>,
    ) {
        self.sessions.clear();
        self.opened.clear();
        self.accepted.clear();
        let now = core.now();
        let size = gro.map_or(payload.len(), usize::from).max(1);
        let mut at = 0;
        // The session of the last transport message: (receiver index, its slot in `sessions`).
        let mut last: Option<(u32, u8)> = None;
        loop {
            let end = (at + size).min(payload.len());
            let datagram = &mut payload[at..end];
            match message_type(datagram) {
                Ok(MessageType::Transport) => {
                    if let Some(reason) = self.open_transport(datagram, at, &mut last, now) {
                        core.drop_packets(reason, 1);
                    }
                }
                Ok(_) => match self.gate.admit(self.node, now) {
                    Admission::Handle => handshake(self.node, core, sock, from, datagram, now),
                    Admission::OverBudget => core.drop_packets(DropReason::WgHandshakeOverload, 1),
                },
                Err(e) => core.drop_packets(DropReason::from_wireguard(e.into()), 1),
            }
            at = end;
            if at >= payload.len() {
                break;
            }
        }
    }

    /// One transport message at `at` of the run: `None` when opened.
    fn open_transport(&mut self, datagram: &mut [u8], at: usize, last: &mut Option<(u32, u8)>, now: Instant) -> Option<DropReason> {
        if datagram.len() < TRANSPORT_MIN_LEN {
            return Some(DropReason::WgTruncated);
        }
        let index = u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        let slot = match *last {
            Some((i, slot)) if i == index => slot,
            _ => {
                let Some(rx) = self.node.lookup(index) else { return Some(DropReason::WgUnknownIndex) };
                let slot = match self.sessions.iter().position(|s| Arc::ptr_eq(&s.session, &rx.session)) {
                    Some(slot) => slot,
                    None if self.sessions.len() < MAX_RUN_SESSIONS => {
                        self.sessions.push(rx);
                        self.sessions.len() - 1
                    }
                    None => return Some(DropReason::WgReplayed),
                };
                *last = Some((index, slot as u8));
                slot as u8
            }
        };
        let session = &self.sessions[usize::from(slot)].session;
        if session.is_expired(now) {
            return Some(DropReason::WgExpired);
        }
        match session.open(datagram) {
            Ok(o) => {
                self.opened.push(OpenedRef { session: slot, offset: at + HEADROOM, len: o.len, counter: o.counter, fresh: false });
                None
            }
            Err(reason) => Some(DropReason::from_wireguard(reason)),
        }
    }

    /// The replay window (one lock per session for the whole run), then,
    /// in arrival order, cryptokey routing and the destination check.
    /// Accepted packets are left in `accepted`.
    fn filter(&mut self, core: &mut ForwardingCore<FlannelUdp>, payload: &[u8]) {
        let now = core.now();
        for (slot, rx) in self.sessions.iter().enumerate() {
            let mut window = rx.session.lock_replay();
            for o in self.opened.iter_mut().filter(|o| usize::from(o.session) == slot) {
                o.fresh = window.accept(o.counter);
            }
        }
        // Per session: anything accepted (keepalives too), any data.
        let mut heard = [(false, false); MAX_RUN_SESSIONS];
        for o in self.opened.iter() {
            if !o.fresh {
                core.drop_packets(DropReason::WgReplayed, 1);
                continue;
            }
            let rx = &self.sessions[usize::from(o.session)];
            heard[usize::from(o.session)].0 = true;
            if o.len == 0 {
                continue; // a keepalive: authenticated, nothing to deliver
            }
            heard[usize::from(o.session)].1 = true;
            match accept_plaintext(&payload[o.offset..o.offset + o.len], rx.session.peer(), core.table(), core.node_scope()) {
                Ok(len) => self.accepted.push(Piece { offset: o.offset, len }),
                Err(reason) => core.drop_packets(reason, 1),
            }
        }
        for (rx, &(any, data)) in self.sessions.iter().zip(&heard) {
            if !any {
                continue;
            }
            rx.peer.note_transport_received(now, data);
            if rx.slot == Slot::Next {
                self.node.confirm(&rx.peer, &rx.session, now);
            }
        }
    }
}

/// Cryptokey routing and the ingress filter for one plaintext (a packet
/// and its padding) that `sender`'s session opened: the owner of its
/// source in the table must be `sender`, and the usual checks (well
/// formed, destination in our subnets) must pass. The packet's length.
fn accept_plaintext(plaintext: &[u8], sender: &PublicKey, table: &SubnetTable, node: &packet::NodeScope) -> Result<usize, DropReason> {
    let inner = cryptokey::inner_packet(plaintext).map_err(DropReason::from_wireguard)?;
    let owner = table.lookup(inner.src);
    cryptokey::check_source(&inner, sender, |_| owner.and_then(|r| r.public_key)).map_err(DropReason::from_wireguard)?;
    // The owner is the sender: the rest of the filter sees it as the sender.
    let endpoint = owner.map(|r| r.endpoint.ip()).ok_or(DropReason::WgSpoofedSource)?;
    packet::check_ingress(endpoint, &plaintext[..inner.len], table, node)?;
    Ok(inner.len)
}

/// A handshake message from `from`: answered as the protocol core says.
fn handshake(node: &Node, core: &mut ForwardingCore<FlannelUdp>, sock: BorrowedFd<'_>, from: SocketAddr, message: &[u8], now: Instant) {
    let reply = |bytes: &[u8]| udp::send_segments(sock, from, &[IoSlice::new(bytes)], None);
    let sent = match node.handle_handshake(message, from, now, &mut OsRng) {
        Ok(HandshakeOutcome::Response { message, .. }) => reply(&message),
        Ok(HandshakeOutcome::CookieReply(message)) => {
            // The message itself was not worked on: counted as a drop of
            // its own reason, which is also the count of cookie replies.
            core.drop_packets(DropReason::WgCookieReply, 1);
            reply(&message)
        }
        // Nothing was queued (see the module documentation): the peer
        // needs a first transport message to confirm the session.
        Ok(HandshakeOutcome::Established { peer }) => match node.keepalive(&peer, now) {
            Some(k) => reply(&k),
            None => Ok(0),
        },
        Ok(HandshakeOutcome::CookieAccepted { .. }) => Ok(0),
        Err(reason) => {
            core.drop_packets(DropReason::from_wireguard(reason), 1);
            Ok(0)
        }
    };
    if let Err(e) = sent {
        core.drop_packets(DropReason::SendFailed, 1);
        core.warn(|| format!("sending a WireGuard handshake reply to {from} failed: {e}"));
    }
}

/// Sends the sealed datagrams of one run: GSO sends of equal-size
/// datagrams (only the last may be shorter), cut where a send would pass
/// the kernel's 64 KiB limit.
fn send_sealed(
    core: &mut ForwardingCore<FlannelUdp>,
    sock: BorrowedFd<'_>,
    to: SocketAddr,
    arena: &[u8],
    sealed: &[(usize, usize)],
    tag: u16,
) {
    let segment = sealed[0].1;
    let per_send = (MAX_SEND_BYTES / segment).clamp(1, MAX_SEGMENTS);
    for chunk in sealed.chunks(per_send) {
        let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS];
        for (slot, &(at, len)) in iov.iter_mut().zip(chunk) {
            *slot = IoSlice::new(&arena[at..at + len]);
        }
        let gso = (chunk.len() > 1).then_some(segment as u16);
        let result = udp::send_segments(sock, to, &iov[..chunk.len()], gso);
        if core.send_done(result, chunk.len(), gso.is_some(), tag, Instant::now()) == SendOutcome::GsoRefused {
            for d in &iov[..chunk.len()] {
                let result = udp::send_segments(sock, to, std::slice::from_ref(d), None);
                core.send_done(result, 1, false, tag, Instant::now());
            }
        }
    }
}

/// Writes what the forwarding core planned for one received run (as `mmsg`).
fn write_planned(core: &mut ForwardingCore<FlannelUdp>, tun: BorrowedFd<'_>, payload: &[u8], writes: usize) {
    let tag = core.batch_tag();
    for i in 0..writes {
        let w = core.tun_write(i);
        let mut parts = [IoSlice::new(&[]); MAX_SEGMENTS * 2 + 1];
        let mut k = 0;
        if let Some(hdr) = &w.vnet_hdr {
            parts[0] = IoSlice::new(hdr);
            k = 1;
        }
        for p in core.write_pieces(&w) {
            if k == parts.len() {
                break;
            }
            parts[k] = IoSlice::new(&payload[p.offset..p.offset + p.len]);
            k += 1;
        }
        let result = fd::writev(tun, &parts[..k]);
        core.tun_written(result, w.packets, w.inner_bytes, tag, Instant::now());
    }
}

/// Runs the protocol's timers from one place, worker 0, about every
/// [`TICK_INTERVAL`]. Why a worker and not the control thread: what a
/// timer sends (an initiation, a keepalive) must leave from the port
/// peers know us by, and every worker owns a socket bound to it; worker 0
/// wakes at least every [`IDLE_WAIT`] anyway, so the tick costs no thread
/// and no extra fd. Why one worker: `tick` walks every peer under its
/// handshake mutex, which one caller does as well as many, and only one
/// should send what it decides.
struct Ticker {
    next: Instant,
    /// Each peer's endpoint by key, rebuilt when the table changes (the
    /// only allocation here, once per table version).
    endpoints: FxHashMap<PublicKey, SocketAddr>,
    version: Option<u64>,
}

impl Ticker {
    fn new(now: Instant) -> Ticker {
        Ticker { next: now + TICK_INTERVAL, endpoints: FxHashMap::default(), version: None }
    }

    fn maybe_tick(&mut self, node: &Node, table: &SubnetTable, sock: BorrowedFd<'_>, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + TICK_INTERVAL;
        if self.version != Some(table.version()) {
            self.version = Some(table.version());
            self.endpoints = table.routes().iter().filter_map(|r| Some((r.public_key?, r.endpoint))).collect();
        }
        node.tick(now, &mut OsRng, |peer, tick| {
            if let (Some(out), Some(&to)) = (tick.send, self.endpoints.get(peer.public_key())) {
                let _ = udp::send_segments(sock, to, &[IoSlice::new(out.as_bytes())], None);
            }
        });
    }
}
