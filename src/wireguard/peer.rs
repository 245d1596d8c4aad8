//! One peer: its identity and keys, its sessions (the [`KeyRing`] the data
//! path reads lock-free), the times the timers run on ([`Activity`],
//! written by the data path once per batch), and the handshake state that
//! only the handshake path touches, under a mutex.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use super::cookie::CookieJar;
use super::crypto::Secret;
use super::keys::{PresharedKey, PublicKey};
use super::noise::InitiatorState;
use super::session::Session;
use super::tai64n::Tai64N;

/// What the control plane knows about a peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    /// Mixed into every handshake when set (flannel's cluster-wide `PSK`).
    pub preshared_key: Option<PresharedKey>,
    /// Send a keepalive when nothing was sent or received for this long
    /// (flannel's default: none).
    pub persistent_keepalive: Option<Duration>,
}

impl PeerConfig {
    pub fn new(public_key: PublicKey) -> PeerConfig {
        PeerConfig { public_key, preshared_key: None, persistent_keepalive: None }
    }
}

/// Where a session sits in a peer's key ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The session we send with.
    Current,
    /// The one before it, still accepted for packets in flight.
    Previous,
    /// A session we answered a handshake for and have not heard on yet:
    /// the first packet on it makes it current ([`super::Node::confirm`]).
    Next,
}

/// A peer's sessions (whitepaper §6.1's current, previous and next
/// keypairs). Published whole through an `ArcSwap`, so a worker sees one
/// consistent ring per load.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    pub current: Option<Arc<Session>>,
    pub previous: Option<Arc<Session>>,
    pub next: Option<Arc<Session>>,
}

impl KeyRing {
    /// The session to send with at `now`: the current one, unless it is
    /// expired. (`Session::reserve` also refuses one whose counters ran out.)
    #[inline]
    pub fn sending(&self, now: Instant) -> Option<&Arc<Session>> {
        self.current.as_ref().filter(|s| !s.is_expired(now))
    }

    /// The session whose local index is `index`, and where it sits.
    #[inline]
    pub fn find(&self, index: u32) -> Option<(&Arc<Session>, Slot)> {
        [(&self.current, Slot::Current), (&self.next, Slot::Next), (&self.previous, Slot::Previous)]
            .into_iter()
            .find_map(|(s, slot)| s.as_ref().filter(|s| s.local_index() == index).map(|s| (s, slot)))
    }
}

/// A time in milliseconds since the node's epoch, plus one: 0 is "never".
pub(crate) type Millis = u64;

/// The times the timer rules read. The data path writes them once per
/// batch ([`Peer::note_transport_sent`], [`Peer::note_transport_received`]);
/// a store happens only when the value changes, so a steady stream makes
/// mostly loads of shared cache lines. Each field is independent: relaxed
/// ordering suffices, `tick` reads a close-enough snapshot.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Last authenticated packet of any kind sent / received (persistent keepalive).
    pub(crate) any_sent: AtomicU64,
    pub(crate) any_received: AtomicU64,
    /// Last transport message (data or keepalive) sent / received (rekey rules).
    pub(crate) transport_sent: AtomicU64,
    pub(crate) transport_received: AtomicU64,
    /// First data packet sent since we last heard from the peer: the
    /// "new handshake" rule (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT).
    pub(crate) data_sent_unanswered: AtomicU64,
    /// First data packet received since we last sent anything: the
    /// keepalive rule (KEEPALIVE_TIMEOUT).
    pub(crate) data_received_unanswered: AtomicU64,
}

#[inline]
fn store_if_changed(a: &AtomicU64, v: Millis) {
    if a.load(Ordering::Relaxed) != v {
        a.store(v, Ordering::Relaxed);
    }
}

#[inline]
fn set_if_unset(a: &AtomicU64, v: Millis) {
    if a.load(Ordering::Relaxed) == 0 {
        let _ = a.compare_exchange(0, v, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[inline]
fn clear(a: &AtomicU64) {
    if a.load(Ordering::Relaxed) != 0 {
        a.store(0, Ordering::Relaxed);
    }
}

impl Activity {
    /// An authenticated packet was sent (timersAnyAuthenticatedPacketSent
    /// and ...Traversal: the keepalive timer stops).
    pub(crate) fn sent(&self, at: Millis) {
        store_if_changed(&self.any_sent, at);
        clear(&self.data_received_unanswered);
    }

    /// An authenticated packet was received (...Received and ...Traversal:
    /// the new-handshake timer stops).
    pub(crate) fn received(&self, at: Millis) {
        store_if_changed(&self.any_received, at);
        clear(&self.data_sent_unanswered);
    }

    pub(crate) fn reset(&self) {
        for a in [
            &self.any_sent,
            &self.any_received,
            &self.transport_sent,
            &self.transport_received,
            &self.data_sent_unanswered,
            &self.data_received_unanswered,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// The handshake we started and wait for an answer to.
pub(crate) struct Pending {
    pub(crate) local_index: u32,
    pub(crate) state: InitiatorState,
}

/// Handshake and timer state: touched by handshake messages, `tick` and
/// key confirmation, never per packet.
pub(crate) struct PeerState {
    pub(crate) pending: Option<Pending>,
    /// The low byte of the next local index we hand out.
    pub(crate) index_counter: u8,
    pub(crate) cookie: CookieJar,
    /// Newest initiation timestamp accepted from this peer.
    pub(crate) last_timestamp: Option<Tai64N>,
    pub(crate) last_initiation_consumed: Option<Instant>,
    /// Last initiation or response we sent: initiations wait REKEY_TIMEOUT.
    pub(crate) last_handshake_sent: Option<Instant>,
    /// When the retransmission timer fires, if armed.
    pub(crate) retransmit_at: Option<Instant>,
    pub(crate) retransmissions: u32,
    /// The "last minute" rekey on receive was sent for the current session.
    pub(crate) sent_last_minute_handshake: bool,
    /// Jitter of the next new-handshake deadline.
    pub(crate) new_handshake_jitter: Duration,
    /// When all keys are wiped unless a new session comes first.
    pub(crate) zero_at: Option<Instant>,
    pub(crate) last_handshake_completed: Option<Instant>,
}

/// One peer; see the module documentation. Shared by every worker.
pub struct Peer {
    public_key: PublicKey,
    /// The high 24 bits of every local index of this peer (before the
    /// node's index mask).
    pub(crate) slot: u32,
    /// The node's index mask (see `Node::new`).
    index_mask: u32,
    pub(crate) psk: Secret,
    /// `DH(our static, its static)`, computed once.
    pub(crate) static_static: Secret,
    pub(crate) persistent_keepalive: Option<Duration>,
    keys: ArcSwap<KeyRing>,
    pub(crate) activity: Activity,
    state: Mutex<PeerState>,
    epoch: Instant,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("public_key", &self.public_key).field("slot", &self.slot).finish_non_exhaustive()
    }
}

impl Peer {
    pub(crate) fn new(
        config: &PeerConfig,
        slot: u32,
        index_mask: u32,
        static_static: Secret,
        cookie: CookieJar,
        epoch: Instant,
        jitter: Duration,
    ) -> Peer {
        Peer {
            public_key: config.public_key,
            slot,
            index_mask,
            psk: zeroize::Zeroizing::new(config.preshared_key.as_ref().map_or([0; 32], |k| *k.as_bytes())),
            static_static,
            persistent_keepalive: config.persistent_keepalive.filter(|d| !d.is_zero()),
            keys: ArcSwap::from_pointee(KeyRing::default()),
            activity: Activity::default(),
            state: Mutex::new(PeerState {
                pending: None,
                index_counter: 0,
                cookie,
                last_timestamp: None,
                last_initiation_consumed: None,
                last_handshake_sent: None,
                retransmit_at: None,
                retransmissions: 0,
                sent_last_minute_handshake: false,
                new_handshake_jitter: jitter,
                zero_at: None,
                last_handshake_completed: None,
            }),
            epoch,
        }
    }

    /// The peer's static public key: its identity, the one the data path
    /// checks inner sources against (cryptokey routing).
    #[inline]
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The peer's sessions now (one lock-free load).
    #[inline]
    pub fn keys(&self) -> Guard<Arc<KeyRing>> {
        self.keys.load()
    }

    pub(crate) fn publish(&self, ring: KeyRing) {
        self.keys.store(Arc::new(ring));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `now` on the activity clock.
    #[inline]
    pub(crate) fn millis(&self, now: Instant) -> Millis {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// The instant of an activity time (not "never").
    pub(crate) fn instant(&self, at: Millis) -> Instant {
        self.epoch + Duration::from_millis(at - 1)
    }

    /// A batch of transport messages went out at `now`; `data` when any
    /// was not a keepalive. Call once per batch after sealing.
    #[inline]
    pub fn note_transport_sent(&self, now: Instant, data: bool) {
        let at = self.millis(now);
        let a = &self.activity;
        store_if_changed(&a.transport_sent, at);
        a.sent(at);
        if data {
            set_if_unset(&a.data_sent_unanswered, at);
        }
    }

    /// A batch of transport messages from this peer was accepted (opened
    /// and not replayed) at `now`; `data` when any was not a keepalive.
    #[inline]
    pub fn note_transport_received(&self, now: Instant, data: bool) {
        let at = self.millis(now);
        let a = &self.activity;
        store_if_changed(&a.transport_received, at);
        a.received(at);
        if data {
            set_if_unset(&a.data_received_unanswered, at);
        }
    }

    /// When the last handshake with this peer completed, if one did.
    pub fn last_handshake(&self) -> Option<Instant> {
        self.lock().last_handshake_completed
    }

    /// The next local index for this peer: `(slot << 8 | counter) ^ mask`, skipping
    /// the (at most four) indices still in use, so that even a peer that
    /// makes us answer hundreds of handshakes never makes two live
    /// sessions share one.
    pub(crate) fn next_index(&self, st: &mut PeerState) -> u32 {
        let ring = self.keys.load();
        loop {
            st.index_counter = st.index_counter.wrapping_add(1);
            let index = ((self.slot << 8) | u32::from(st.index_counter)) ^ self.index_mask;
            let pending = st.pending.as_ref().is_some_and(|p| p.local_index == index);
            if !pending && ring.find(index).is_none() {
                return index;
            }
        }
    }
}
