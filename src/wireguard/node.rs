//! This node's WireGuard identity and its peers: the peer table (by public
//! key and by receiver index), the handshake path (initiations, responses,
//! cookie replies, under-load mode) and key rotation. The timers are in
//! `timers.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::StaticSecret;

use super::cookie::{CookieChecker, CookieJar};
use super::crypto;
use super::keys::{PrivateKey, PublicKey};
use super::noise::{self, NoiseError, SymmetricState};
use super::peer::{KeyRing, Peer, PeerConfig, PeerState, Pending, Slot};
use super::ratelimit::RateLimiter;
use super::session::{Role, Session, SessionKeys};
use super::tai64n::Tai64N;
use super::{DropReason, Limits};
use crate::wire::wireguard::{
    COOKIE_REPLY_LEN, CookieReply, INITIATION_LEN, Initiation, MessageType, RESPONSE_LEN, Response, message_type,
};

/// Peers a node can hold: local indices carry the peer's slot in 24 bits.
pub const MAX_PEERS: usize = (1 << 24) - 1;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub private_key: PrivateKey,
    pub limits: Limits,
    /// The TUN MTU: transport plaintext is padded to a multiple of 16 but
    /// not beyond it (0: always to a multiple of 16).
    pub padding_mtu: usize,
}

/// Why a peer cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} is already configured")]
    Duplicate(PublicKey),
    #[error("peer {0} has this node's own public key")]
    OwnKey(PublicKey),
    #[error("peer {0}: the public key is a low-order point (no shared secret)")]
    WeakKey(PublicKey),
    #[error("more than {MAX_PEERS} peers")]
    TooMany,
}

/// What a handshake message asks the caller to do.
#[derive(Debug)]
pub enum HandshakeOutcome {
    /// An initiation from `peer` was accepted: send `message` back to the
    /// source. The new session waits in the peer's `next` slot for the
    /// peer's first transport message.
    Response { peer: Arc<Peer>, message: [u8; RESPONSE_LEN] },
    /// Under load, and the message had no valid mac2: send this cookie
    /// reply to the source instead of answering.
    CookieReply([u8; COOKIE_REPLY_LEN]),
    /// A response completed the handshake we started: the new session is
    /// current. Send the packets waiting for it, or, when none wait, a
    /// keepalive ([`Node::keepalive`]) — the peer needs a first packet to
    /// start sending.
    Established { peer: Arc<Peer> },
    /// A cookie reply from `peer` was taken; the next initiation (at the
    /// retransmission timer) carries a valid mac2.
    CookieAccepted { peer: Arc<Peer> },
}

/// A transport message's session, found by its receiver index.
#[derive(Debug, Clone)]
pub struct Receiving {
    pub peer: Arc<Peer>,
    pub session: Arc<Session>,
    pub slot: Slot,
}

#[derive(Default, Clone)]
struct PeerTable {
    by_key: HashMap<PublicKey, Arc<Peer>>,
    /// Index `slot` holds the peer whose local indices are `slot << 8 | n`.
    by_slot: Vec<Option<Arc<Peer>>>,
}

/// This node; see the module documentation. `Sync`: share it with `Arc`.
pub struct Node {
    private: PrivateKey,
    public: PublicKey,
    pub(crate) limits: Limits,
    padding_mtu: usize,
    epoch: Instant,
    unix_at_epoch: Duration,
    checker: CookieChecker,
    /// XORed into every local index: indices look random to anyone who has
    /// not seen one, so an off-path sender cannot aim forged transport
    /// messages at a session (each would cost us an AEAD open).
    index_mask: u32,
    under_load: AtomicBool,
    /// Under load until this many milliseconds after `epoch` (0: never);
    /// see [`Node::hold_under_load`].
    under_load_until_ms: AtomicU64,
    rate: Mutex<RateLimiter>,
    peers: ArcSwap<PeerTable>,
    /// Serialises peer-table writers (the control plane).
    peers_writer: Mutex<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("public", &self.public).field("peers", &self.peers.load().by_key.len()).finish_non_exhaustive()
    }
}

/// A random delay in `0..max`.
pub(crate) fn jitter<R: RngCore>(rng: &mut R, max: Duration) -> Duration {
    let ms = max.as_millis() as u64;
    if ms == 0 { Duration::ZERO } else { Duration::from_millis(u64::from(rng.next_u32()) % ms) }
}

impl Node {
    /// A node created at `now`; `wall` is the wall-clock time at `now`.
    /// Initiation timestamps are `wall` plus the monotonic time since, so a
    /// wall-clock step while running never makes them go backwards (a peer
    /// would refuse every initiation until the clock caught up again).
    pub fn new(config: NodeConfig, now: Instant, wall: SystemTime) -> Node {
        let public = config.private_key.public_key();
        // A secret derived from the private key: stable for a node, unknown to others.
        let mask = crypto::hash(&[b"encapd receiver index mask", &config.private_key.to_bytes()[..]]);
        Node {
            index_mask: u32::from_le_bytes([mask[0], mask[1], mask[2], mask[3]]),
            checker: CookieChecker::new(public.as_bytes(), config.limits.cookie_refresh_time),
            private: config.private_key,
            public,
            limits: config.limits,
            padding_mtu: config.padding_mtu,
            epoch: now,
            unix_at_epoch: wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default(),
            under_load: AtomicBool::new(false),
            under_load_until_ms: AtomicU64::new(0),
            rate: Mutex::new(RateLimiter::default()),
            peers: ArcSwap::from_pointee(PeerTable::default()),
            peers_writer: Mutex::new(()),
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Adds a peer (the control plane; the data path sees it at its next
    /// lookup). Needs randomness only for its timers' jitter.
    pub fn add_peer<R: RngCore + CryptoRng>(&self, config: PeerConfig, rng: &mut R) -> Result<Arc<Peer>, PeerError> {
        let key = config.public_key;
        if key == self.public {
            return Err(PeerError::OwnKey(key));
        }
        let static_static = crypto::dh(self.private.secret(), key.as_bytes()).map_err(|_| PeerError::WeakKey(key))?;
        let _writer = self.peers_writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = PeerTable::clone(&self.peers.load());
        if table.by_key.contains_key(&key) {
            return Err(PeerError::Duplicate(key));
        }
        // Slot 0 is never used, so no local index is below 256.
        let slot = match table.by_slot.iter().skip(1).position(Option::is_none) {
            Some(free) => free + 1,
            None => table.by_slot.len().max(1),
        };
        if slot > MAX_PEERS {
            return Err(PeerError::TooMany);
        }
        let cookie = CookieJar::new(key.as_bytes(), self.limits.cookie_refresh_time);
        let jitter = jitter(rng, self.limits.rekey_timeout_jitter);
        let peer = Arc::new(Peer::new(&config, slot as u32, self.index_mask, static_static, cookie, self.epoch, jitter));
        if table.by_slot.len() <= slot {
            table.by_slot.resize(slot + 1, None);
        }
        table.by_slot[slot] = Some(Arc::clone(&peer));
        table.by_key.insert(key, Arc::clone(&peer));
        self.peers.store(Arc::new(table));
        Ok(peer)
    }

    /// Removes a peer; its sessions stop being found at once. False when
    /// there was no such peer.
    pub fn remove_peer(&self, key: &PublicKey) -> bool {
        let _writer = self.peers_writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = PeerTable::clone(&self.peers.load());
        let Some(peer) = table.by_key.remove(key) else { return false };
        table.by_slot[peer.slot as usize] = None;
        self.peers.store(Arc::new(table));
        true
    }

    /// The peer with this public key.
    pub fn peer(&self, key: &PublicKey) -> Option<Arc<Peer>> {
        self.peers.load().by_key.get(key).cloned()
    }

    /// Every peer (the control plane's view; not for the data path).
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        let table = self.peers.load();
        table.by_slot.iter().flatten().cloned().collect()
    }

    /// Switches under-load mode on for good, or off (a hold from
    /// [`Node::hold_under_load`] still applies): handshake messages then
    /// need a valid mac2 (else they get a cookie reply) and are
    /// rate-limited per source. Tests and callers that decide themselves.
    pub fn set_under_load(&self, on: bool) {
        self.under_load.store(on, Ordering::Relaxed);
    }

    /// Under load until at least `until` (a later hold wins): what the
    /// workers call when they see more handshakes than they should
    /// (`load.rs`). One relaxed `fetch_max`.
    pub fn hold_under_load(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.epoch).as_millis() as u64;
        self.under_load_until_ms.fetch_max(ms.max(1), Ordering::Relaxed);
    }

    /// The switch ([`Node::set_under_load`]) alone.
    pub fn is_under_load(&self) -> bool {
        self.under_load.load(Ordering::Relaxed)
    }

    /// Under load at `now`: the switch is on, or a hold lasts past `now`.
    pub fn is_under_load_at(&self, now: Instant) -> bool {
        self.is_under_load()
            || now.saturating_duration_since(self.epoch).as_millis() < u128::from(self.under_load_until_ms.load(Ordering::Relaxed))
    }

    /// The session a transport message with this receiver index is for.
    #[inline]
    pub fn lookup(&self, receiver_index: u32) -> Option<Receiving> {
        let table = self.peers.load();
        let peer = table.by_slot.get(self.slot_of(receiver_index))?.as_ref()?;
        let ring = peer.keys();
        let (session, slot) = ring.find(receiver_index)?;
        Some(Receiving { peer: Arc::clone(peer), session: Arc::clone(session), slot })
    }

    /// The peer-table slot a local index belongs to.
    #[inline]
    fn slot_of(&self, index: u32) -> usize {
        ((index ^ self.index_mask) >> 8) as usize
    }

    /// The TAI64N timestamp for an initiation sent at `now`.
    fn timestamp(&self, now: Instant) -> Tai64N {
        Tai64N::from_unix(self.unix_at_epoch + now.saturating_duration_since(self.epoch))
    }

    /// Starts a handshake with `peer` because there is something to send
    /// and no usable session (not a retransmission): resets the
    /// retransmission count. `None` when an initiation or response went
    /// out less than REKEY_TIMEOUT ago — the one in flight will do.
    pub fn send_initiation<R: RngCore + CryptoRng>(&self, peer: &Peer, now: Instant, rng: &mut R) -> Option<[u8; INITIATION_LEN]> {
        let mut st = peer.lock();
        st.retransmissions = 0;
        self.initiation(peer, &mut st, now, rng)
    }

    /// An initiation to `peer`, rate-limited to one per REKEY_TIMEOUT.
    pub(crate) fn initiation<R: RngCore + CryptoRng>(
        &self,
        peer: &Peer,
        st: &mut PeerState,
        now: Instant,
        rng: &mut R,
    ) -> Option<[u8; INITIATION_LEN]> {
        if st.last_handshake_sent.is_some_and(|t| now.saturating_duration_since(t) < self.limits.rekey_timeout) {
            return None;
        }
        let local_index = peer.next_index(st);
        let ephemeral = StaticSecret::random_from_rng(&mut *rng);
        let mut out = [0u8; INITIATION_LEN];
        let state = noise::write_initiation(
            SymmetricState::wireguard(peer.public_key().as_bytes()),
            self.public.as_bytes(),
            peer.public_key().as_bytes(),
            &peer.static_static,
            ephemeral,
            self.timestamp(now).as_bytes(),
            &mut out[8..116],
        )
        .ok()?;
        let mut msg = Initiation::new_unchecked(&mut out[..]);
        msg.set_message_type();
        msg.set_sender(local_index);
        st.cookie.stamp(&mut out, now);
        st.pending = Some(Pending { local_index, state });
        st.last_handshake_sent = Some(now);
        st.retransmit_at = Some(now + self.limits.rekey_timeout + jitter(rng, self.limits.rekey_timeout_jitter));
        peer.activity.sent(peer.millis(now));
        Some(out)
    }

    /// A keepalive for `peer` on its current session, if it has one.
    pub fn keepalive(&self, peer: &Peer, now: Instant) -> Option<[u8; 32]> {
        let ring = peer.keys();
        let session = ring.sending(now)?;
        let keepalive = session.reserve(1, now).ok()?.keepalive().ok()?;
        peer.note_transport_sent(now, false);
        Some(keepalive)
    }

    /// A handshake message (initiation, response or cookie reply) from
    /// `src`: what to send back, or why it is dropped. Transport data
    /// belongs to [`Node::lookup`] and `Session::open` (here it is
    /// [`DropReason::WrongType`]).
    pub fn handle_handshake<R: RngCore + CryptoRng>(
        &self,
        datagram: &[u8],
        src: SocketAddr,
        now: Instant,
        rng: &mut R,
    ) -> Result<HandshakeOutcome, DropReason> {
        match message_type(datagram)? {
            MessageType::Initiation => {
                let msg = Initiation::new_checked(datagram)?;
                if let Some(reply) =
                    self.screen(msg.mac1_input(), msg.mac1(), msg.mac2_input(), msg.mac2(), msg.sender(), &src, now, rng)?
                {
                    return Ok(HandshakeOutcome::CookieReply(reply));
                }
                self.consume_initiation(&msg, now, rng)
            }
            MessageType::Response => {
                let msg = Response::new_checked(datagram)?;
                if let Some(reply) =
                    self.screen(msg.mac1_input(), msg.mac1(), msg.mac2_input(), msg.mac2(), msg.sender(), &src, now, rng)?
                {
                    return Ok(HandshakeOutcome::CookieReply(reply));
                }
                self.consume_response(&msg, now)
            }
            MessageType::CookieReply => self.consume_cookie(&CookieReply::new_checked(datagram)?, now),
            MessageType::Transport => Err(DropReason::WrongType),
        }
    }

    /// mac1 always; under load, mac2 (else a cookie reply) and the
    /// per-source rate. `Ok(Some(reply))`: answer with a cookie.
    #[allow(clippy::too_many_arguments)]
    fn screen<R: RngCore + CryptoRng>(
        &self,
        mac1_input: &[u8],
        mac1: &[u8; 16],
        mac2_input: &[u8],
        mac2: &[u8; 16],
        sender: u32,
        src: &SocketAddr,
        now: Instant,
        rng: &mut R,
    ) -> Result<Option<[u8; COOKIE_REPLY_LEN]>, DropReason> {
        if !self.checker.mac1_ok(mac1_input, mac1) {
            return Err(DropReason::BadMac1);
        }
        if !self.is_under_load_at(now) {
            return Ok(None);
        }
        if !self.checker.mac2_ok(mac2_input, mac2, src, now) {
            return Ok(Some(self.checker.reply(sender, mac1, src, now, rng)));
        }
        if !self.rate.lock().unwrap_or_else(PoisonError::into_inner).allow(src.ip(), now) {
            return Err(DropReason::RateLimited);
        }
        Ok(None)
    }

    fn consume_initiation<R: RngCore + CryptoRng>(
        &self,
        msg: &Initiation<&[u8]>,
        now: Instant,
        rng: &mut R,
    ) -> Result<HandshakeOutcome, DropReason> {
        let table = self.peers.load();
        let mut timestamp = [0u8; 12];
        let read = noise::read_initiation(
            SymmetricState::wireguard(self.public.as_bytes()),
            self.private.secret(),
            &msg.as_bytes()[8..116],
            &mut timestamp,
            |key| table.by_key.get(&PublicKey::from_bytes(*key)).map(|p| (Arc::clone(p), p.static_static.clone())),
        )
        .map_err(noise_drop)?;
        let peer = read.peer.clone();
        let mut st = peer.lock();
        let timestamp = Tai64N::from_bytes(timestamp);
        if st.last_timestamp.is_some_and(|last| timestamp <= last) {
            return Err(DropReason::ReplayedInitiation);
        }
        if st.last_initiation_consumed.is_some_and(|t| now.saturating_duration_since(t) < self.limits.initiation_min_interval) {
            return Err(DropReason::InitiationFlood);
        }
        // The answer: a new ephemeral, a new index, the session keys.
        let local_index = peer.next_index(&mut st);
        let ephemeral = StaticSecret::random_from_rng(&mut *rng);
        let mut out = [0u8; RESPONSE_LEN];
        let sym =
            noise::write_response(read.sym, &read.remote_ephemeral, &read.remote_static, &ephemeral, &peer.psk, &[], &mut out[12..60])
                .map_err(noise_drop)?;
        // The initiation is authentic and fresh: from here on it counts.
        st.last_timestamp = Some(timestamp);
        st.last_initiation_consumed = Some(now);
        peer.activity.received(peer.millis(now));
        let mut response = Response::new_unchecked(&mut out[..]);
        response.set_message_type();
        response.set_sender(local_index);
        response.set_receiver(msg.sender());
        st.cookie.stamp(&mut out, now);
        let (receive, send) = sym.split();
        let keys = SessionKeys { send, receive, local_index, remote_index: msg.sender(), role: Role::Responder };
        let session = Arc::new(Session::new(*peer.public_key(), keys, &self.limits, self.padding_mtu, now));
        // Responder: the new session waits as `next`; `previous` goes.
        let ring = peer.keys();
        peer.publish(KeyRing { current: ring.current.clone(), previous: None, next: Some(session) });
        st.last_handshake_sent = Some(now);
        st.zero_at = Some(now + self.limits.reject_after_time * 3);
        peer.activity.sent(peer.millis(now));
        drop(st);
        Ok(HandshakeOutcome::Response { peer, message: out })
    }

    fn consume_response(&self, msg: &Response<&[u8]>, now: Instant) -> Result<HandshakeOutcome, DropReason> {
        let table = self.peers.load();
        let peer = table.by_slot.get(self.slot_of(msg.receiver())).and_then(Option::as_ref).ok_or(DropReason::UnknownIndex)?;
        let mut st = peer.lock();
        let pending = st.pending.as_ref().filter(|p| p.local_index == msg.receiver()).ok_or(DropReason::UnknownIndex)?;
        let sym =
            noise::read_response(&pending.state, self.private.secret(), &peer.psk, &msg.as_bytes()[12..60], &mut []).map_err(noise_drop)?;
        let local_index = pending.local_index;
        st.pending = None;
        let (send, receive) = sym.split();
        let keys = SessionKeys { send, receive, local_index, remote_index: msg.sender(), role: Role::Initiator };
        let session = Arc::new(Session::new(*peer.public_key(), keys, &self.limits, self.padding_mtu, now));
        // Initiator: the new session is current at once. If we had also
        // answered a handshake of the peer's (`next`), that one becomes
        // `previous` and the old current goes (wireguard-go's rotation).
        let ring = peer.keys();
        let previous = if ring.next.is_some() { ring.next.clone() } else { ring.current.clone() };
        peer.publish(KeyRing { current: Some(session), previous, next: None });
        peer.activity.received(peer.millis(now));
        st.zero_at = Some(now + self.limits.reject_after_time * 3);
        handshake_complete(&mut st, now);
        drop(st);
        Ok(HandshakeOutcome::Established { peer: Arc::clone(peer) })
    }

    fn consume_cookie(&self, msg: &CookieReply<&[u8]>, now: Instant) -> Result<HandshakeOutcome, DropReason> {
        let table = self.peers.load();
        let index = msg.receiver();
        let peer = table.by_slot.get(self.slot_of(index)).and_then(Option::as_ref).ok_or(DropReason::UnknownIndex)?;
        let mut st = peer.lock();
        // The reply answers our initiation (pending) or our response (the
        // session it made waits as `next`).
        let ours = st.pending.as_ref().is_some_and(|p| p.local_index == index)
            || peer.keys().next.as_ref().is_some_and(|s| s.local_index() == index);
        if !ours {
            return Err(DropReason::UnknownIndex);
        }
        if !st.cookie.consume(msg, now) {
            return Err(DropReason::BadCookie);
        }
        drop(st);
        Ok(HandshakeOutcome::CookieAccepted { peer: Arc::clone(peer) })
    }

    /// The first transport message on a peer's `next` session arrived
    /// (and passed the replay window): it becomes current (whitepaper
    /// §6.1: key confirmation). Call once per batch in which
    /// [`Node::lookup`] said [`Slot::Next`].
    pub fn confirm(&self, peer: &Peer, session: &Arc<Session>, now: Instant) {
        let mut st = peer.lock();
        let ring = peer.keys();
        if !ring.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, session)) {
            return;
        }
        peer.publish(KeyRing { current: ring.next.clone(), previous: ring.current.clone(), next: None });
        handshake_complete(&mut st, now);
    }
}

/// timersHandshakeComplete: the retransmissions stop.
pub(crate) fn handshake_complete(st: &mut PeerState, now: Instant) {
    st.retransmit_at = None;
    st.retransmissions = 0;
    st.sent_last_minute_handshake = false;
    st.last_handshake_completed = Some(now);
}

fn noise_drop(e: NoiseError) -> DropReason {
    match e {
        NoiseError::Decrypt => DropReason::Decrypt,
        NoiseError::WeakPoint => DropReason::WeakKey,
        NoiseError::UnknownPeer => DropReason::UnknownPeer,
    }
}
