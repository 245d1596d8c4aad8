//! The timer state machine (whitepaper §6, as wireguard-go's timers.go
//! arms and fires its five timers), evaluated from times instead of armed
//! timers: [`Node::tick`] looks at each peer's activity times and
//! handshake state at `now` and says what to send. The rules, each a
//! function of `now` (so tests step time exactly):
//!
//! 1. **Retransmit** (`retransmit_at`): an initiation unanswered for
//!    REKEY_TIMEOUT + jitter is sent again with a new ephemeral; after
//!    REKEY_ATTEMPT_TIME / REKEY_TIMEOUT + 1 retransmissions (20
//!    initiations in all, as wireguard-go) the peer gives up
//!    ([`PeerTick::gave_up`]: drop queued packets) and arms rule 5.
//! 2. **New handshake**: data sent but nothing authenticated received for
//!    KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter since the first such send.
//! 3. **Keep key fresh**: (a) on send — the session's sent counter is past
//!    REKEY_AFTER_MESSAGES, or we initiated it and sent on it after it was
//!    REKEY_AFTER_TIME old; (b) on receive, once per session — we initiated
//!    it and received on it after it was REJECT_AFTER_TIME −
//!    KEEPALIVE_TIMEOUT − REKEY_TIMEOUT old. The responder never rekeys on
//!    time, so both ends do not rekey at once.
//! 4. **Keepalive**: data received but nothing sent for KEEPALIVE_TIMEOUT.
//!    **Persistent keepalive** (optional): nothing sent or received for the
//!    interval.
//! 5. **Zero keys**: 3 × REJECT_AFTER_TIME after the last session was made
//!    (or after giving up), every session and handshake is wiped
//!    ([`PeerTick::keys_zeroed`]).
//!
//! Initiations from rules 2–4 go through the same REKEY_TIMEOUT rate limit
//! as a data path's ([`Node::send_initiation`]); a keepalive due without a
//! usable session becomes an initiation, as in wireguard-go.

use std::sync::Arc;
use std::time::Instant;

use rand_core::{CryptoRng, RngCore};

use super::node::{Node, jitter};
use super::peer::{KeyRing, Peer, PeerState};
use super::session::Role;
use crate::wire::wireguard::{INITIATION_LEN, TRANSPORT_MIN_LEN};

/// A datagram a timer wants sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    Initiation([u8; INITIATION_LEN]),
    Keepalive([u8; TRANSPORT_MIN_LEN]),
}

impl Outbound {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Outbound::Initiation(b) => b,
            Outbound::Keepalive(b) => b,
        }
    }
}

/// What one tick decided for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerTick {
    /// Send this to the peer.
    pub send: Option<Outbound>,
    /// The handshake was retried for REKEY_ATTEMPT_TIME without an answer:
    /// drop the packets queued for this peer.
    pub gave_up: bool,
    /// Every session and handshake state of this peer was wiped.
    pub keys_zeroed: bool,
}

impl PeerTick {
    pub fn is_empty(&self) -> bool {
        *self == PeerTick::default()
    }
}

impl Node {
    /// Runs every peer's timers at `now`; calls `each` for every peer with
    /// something to do. Call it every 100 ms or so.
    pub fn tick<R: RngCore + CryptoRng>(&self, now: Instant, rng: &mut R, mut each: impl FnMut(&Arc<Peer>, PeerTick)) {
        for peer in self.peers() {
            let t = self.tick_peer(&peer, now, rng);
            if !t.is_empty() {
                each(&peer, t);
            }
        }
    }

    /// One peer's timers at `now`.
    pub fn tick_peer<R: RngCore + CryptoRng>(&self, peer: &Peer, now: Instant, rng: &mut R) -> PeerTick {
        let mut out = PeerTick::default();
        let mut st = peer.lock();
        let l = self.limits;

        // 5. Zero key material.
        if st.zero_at.is_some_and(|t| now >= t) {
            peer.publish(KeyRing::default());
            st.pending = None;
            st.zero_at = None;
            st.retransmit_at = None;
            st.retransmissions = 0;
            peer.activity.reset();
            out.keys_zeroed = true;
            return out;
        }

        // 1. Retransmission.
        if st.retransmit_at.is_some_and(|t| now >= t) {
            if st.retransmissions > l.max_retransmissions() {
                st.retransmit_at = None;
                st.pending = None;
                out.gave_up = true;
                // wireguard-go stops the keepalive timer and makes sure the
                // keys are wiped in time.
                clear(&peer.activity.data_received_unanswered);
                if st.zero_at.is_none() {
                    st.zero_at = Some(now + l.reject_after_time * 3);
                }
            } else if let Some(wait) = st.last_handshake_sent.map(|t| t + l.rekey_timeout).filter(|&t| now < t) {
                // A response we sent since holds the rate limit: try when
                // it lets us (wireguard-go would drop the retransmission).
                st.retransmit_at = Some(wait);
            } else {
                st.retransmissions += 1;
                out.send = self.initiation(peer, &mut st, now, rng).map(Outbound::Initiation);
            }
            return out;
        }

        let a = &peer.activity;
        let at = |field: &std::sync::atomic::AtomicU64| {
            let v = field.load(std::sync::atomic::Ordering::Relaxed);
            (v != 0).then(|| peer.instant(v))
        };

        // 2. New handshake: data went out and nothing came back.
        if let Some(since) = at(&a.data_sent_unanswered)
            && now >= since + l.keepalive_timeout + l.rekey_timeout + st.new_handshake_jitter
        {
            clear(&a.data_sent_unanswered);
            st.new_handshake_jitter = jitter(rng, l.rekey_timeout_jitter);
            out.send = self.fresh_initiation(peer, &mut st, now, rng);
            return out;
        }

        // 3. Keep the key fresh.
        let ring = peer.keys();
        if let Some(current) = ring.current.as_ref() {
            let initiator = current.role() == Role::Initiator;
            let on_send = at(&a.transport_sent).is_some_and(|sent| {
                current.sent() > l.rekey_after_messages || (initiator && sent >= current.created() + l.rekey_after_time)
            });
            let last_minute = l.reject_after_time.saturating_sub(l.keepalive_timeout + l.rekey_timeout);
            let on_receive = initiator
                && !st.sent_last_minute_handshake
                && at(&a.transport_received).is_some_and(|received| received >= current.created() + last_minute);
            if on_send || on_receive {
                if on_receive {
                    st.sent_last_minute_handshake = true;
                }
                if let Some(msg) = self.fresh_initiation(peer, &mut st, now, rng) {
                    out.send = Some(msg);
                    return out;
                }
            }
        }

        // 4. Keepalives.
        let keepalive_due = at(&a.data_received_unanswered).is_some_and(|since| now >= since + l.keepalive_timeout);
        let persistent_due = peer.persistent_keepalive.is_some_and(|interval| {
            let last = at(&a.any_sent).max(at(&a.any_received));
            last.is_none_or(|last| now >= last + interval)
        });
        if keepalive_due || persistent_due {
            drop(ring);
            out.send = match self.keepalive(peer, now) {
                Some(k) => Some(Outbound::Keepalive(k)),
                None => self.fresh_initiation(peer, &mut st, now, rng),
            };
        }
        out
    }

    /// An initiation that is not a retransmission (resets the count).
    fn fresh_initiation<R: RngCore + CryptoRng>(&self, peer: &Peer, st: &mut PeerState, now: Instant, rng: &mut R) -> Option<Outbound> {
        st.retransmissions = 0;
        self.initiation(peer, st, now, rng).map(Outbound::Initiation)
    }
}

fn clear(a: &std::sync::atomic::AtomicU64) {
    a.store(0, std::sync::atomic::Ordering::Relaxed);
}
