//! WireGuard's protocol core (the whitepaper, "WireGuard: Next Generation
//! Kernel Network Tunnel"): the Noise_IKpsk2 handshake with
//! mac1/mac2 and cookie replies, transport sessions with the 64-bit
//! counter and the replay window, and the timer state machine — as a pure
//! state machine in the quinn-proto style. It does no I/O and reads no
//! clock: every call that depends on time takes `now: Instant`, every call
//! that needs randomness takes the caller's CSPRNG, and datagrams go in and
//! out as bytes. It sits at the bottom layer beside `wire` and `route` and
//! imports nothing from `datapath`, `control`, `daemon` or `sys`.
//!
//! # How a data path drives it
//!
//! One [`Node`] per process (our static key, the peer table, the cookie
//! secret), shared by every worker through `Arc`; `Node` is `Sync`.
//!
//! **Egress**, per batch of packets for one peer:
//! ```text
//! let ring = peer.keys();                        // one ArcSwap load
//! match ring.sending(now) {
//!     Some(session) => {
//!         let mut batch = session.reserve(n, now)?;  // one CAS for n counters
//!         for each packet: batch.seal(buf, len)?     // in place, no atomic
//!         peer.note_transport_sent(now, true);     // a few relaxed loads, rare stores
//!     }
//!     None => node.send_initiation(&peer, now, rng)   // rate-limited; queue or drop the packets
//! }
//! ```
//! The caller leaves [`session::HEADROOM`] (16) bytes before each packet
//! and [`session::TAILROOM`] (31) after it; sealed packets of equal length
//! have equal length, so a GSO run stays one send.
//!
//! **Ingress**, per received batch:
//! ```text
//! match wire::wireguard::message_type(datagram) {
//!   Transport => {
//!     let rx = node.lookup(receiver_index)?;        // once per run of one index
//!     let opened = rx.session.open(datagram)?;      // in place, no atomic, no lock
//!     ... collect (rx, opened) for the batch ...
//!   }
//!   _ => node.handle_handshake(datagram, src, now, rng)   // a reply to send, or a drop reason
//! }
//! // then, per session in the batch:
//! let mut window = rx.session.lock_replay();         // one lock per batch
//! for each opened: if !window.accept(opened.counter) { drop Replayed }
//! // cryptokey routing: cryptokey::inner_packet(plaintext) → its source must
//! // be in a subnet whose owner is rx.session.peer() (the caller's table)
//! rx.peer.note_transport_received(now, any_data);
//! if rx.slot == Slot::Next { node.confirm(&rx.peer, &rx.session, now) }   // first packet of a new session
//! ```
//!
//! **Timers**: call [`Node::tick`] every 100 ms or so (a timer fires up to
//! one tick late; the rules themselves are exact functions of `now`). It
//! returns, per peer, at most one datagram to send (an initiation or a
//! keepalive) and the events the caller acts on (handshake given up: drop
//! queued packets; keys zeroed).
//!
//! # What takes a lock or an atomic, per packet and per batch
//!
//! | operation | per packet | per batch | why |
//! |---|---|---|---|
//! | counter reservation | — | one CAS on the session's counter | counters must be unique across workers; a CAS (not `fetch_add`) so that racing reservations can never pass `REJECT_AFTER_MESSAGES` and wrap |
//! | seal / open (ChaCha20-Poly1305) | — | — | keys never change within a session |
//! | replay window | — | one mutex lock/unlock | measured against a lock-free bitmap with a CAS per packet: see docs/wireguard.md |
//! | session lookup | — | two `ArcSwap` loads (peer table, key ring) and two `Arc` clones per run of one receiver index | rotation (rare) publishes a new key ring |
//! | activity times (timers' input) | — | relaxed loads; a store only when the millisecond changed | `tick` derives every timer from them |
//! | handshake, cookie reply, key rotation | per message | — | a per-peer mutex; handshakes are rare and per peer |
//!
//! # Security notes
//! Receiver indices are `(peer slot << 8 | per-peer counter) ^ mask`, with a
//! secret per-node mask: unpredictable to an off-path sender, but an
//! observer who sees them can tell that two sessions belong to one peer,
//! which the outer addresses already tell in a fixed overlay. Secrets are wiped on drop
//! (`zeroize`), except inside `ring`'s and x25519-dalek's own key types
//! (x25519-dalek zeroizes its secrets; `ring` keeps its expanded key until
//! the memory is reused). See docs/wireguard.md for what is and is not
//! protected.

pub mod cookie;
pub(crate) mod crypto;
pub mod cryptokey;
pub mod keys;
pub mod load;
mod node;
pub(crate) mod noise;
mod peer;
pub mod ratelimit;
pub mod replay;
pub mod session;
pub mod tai64n;
mod timers;

use std::time::Duration;

pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use node::{HandshakeOutcome, Node, NodeConfig, PeerError, Receiving};
pub use peer::{KeyRing, Peer, PeerConfig, Slot};
pub use session::{Opened, Role, SealBatch, SealError, Session};
pub use timers::{Outbound, PeerTick};

use crate::wire::wireguard::MessageError;

/// The protocol's limits and timers (whitepaper §6). [`Limits::default`]
/// is the protocol; tests (and a test build of the daemon) may shorten the
/// times and message counts to exercise rekeying quickly — a peer does not
/// notice, as every rule here is a local decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// REKEY_AFTER_MESSAGES (2^60): past this many sent messages, rekey.
    pub rekey_after_messages: u64,
    /// REJECT_AFTER_MESSAGES (2^64 − 2^13 − 1): no counter at or beyond it
    /// is sent or accepted.
    pub reject_after_messages: u64,
    /// REKEY_AFTER_TIME (120 s): the initiator of a session rekeys when it
    /// sends on a session this old.
    pub rekey_after_time: Duration,
    /// REJECT_AFTER_TIME (180 s): a session this old is not used.
    pub reject_after_time: Duration,
    /// REKEY_ATTEMPT_TIME (90 s): how long initiations are retried.
    pub rekey_attempt_time: Duration,
    /// REKEY_TIMEOUT (5 s): between initiations; retransmission delay.
    pub rekey_timeout: Duration,
    /// Most random delay added to a retransmission (wireguard-go: 334 ms).
    pub rekey_timeout_jitter: Duration,
    /// KEEPALIVE_TIMEOUT (10 s): after receiving data without sending
    /// anything, send a keepalive.
    pub keepalive_timeout: Duration,
    /// How long a cookie, and the secret cookies come from, live (120 s).
    pub cookie_refresh_time: Duration,
    /// Initiations from one peer closer than this are dropped (wireguard-go's
    /// HandshakeInitationRate: 1/50 s).
    pub initiation_min_interval: Duration,
}

impl Limits {
    /// The whitepaper's values.
    pub const PROTOCOL: Limits = Limits {
        rekey_after_messages: 1 << 60,
        reject_after_messages: u64::MAX - (1 << 13),
        rekey_after_time: Duration::from_secs(120),
        reject_after_time: Duration::from_secs(180),
        rekey_attempt_time: Duration::from_secs(90),
        rekey_timeout: Duration::from_secs(5),
        rekey_timeout_jitter: Duration::from_millis(334),
        keepalive_timeout: Duration::from_secs(10),
        cookie_refresh_time: Duration::from_secs(120),
        initiation_min_interval: Duration::from_millis(20),
    };

    /// Retransmissions before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT.
    pub fn max_retransmissions(&self) -> u32 {
        (self.rekey_attempt_time.as_millis() / self.rekey_timeout.as_millis().max(1)) as u32
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::PROTOCOL
    }
}

/// Why a datagram was not accepted: one counter per reason. Every path
/// that refuses input returns one of these, never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than its type requires, or a handshake message of the wrong length.
    #[error("truncated or wrong-length message")]
    Truncated,
    /// Not one of the four message types.
    #[error("unknown message type")]
    UnknownType,
    /// A type the function called does not handle (transport data to the
    /// handshake handler, a handshake message to `Session::open`).
    #[error("message of the wrong type for this path")]
    WrongType,
    /// mac1 does not match our public key: not meant for us, or forged.
    #[error("bad mac1")]
    BadMac1,
    /// Under load, a source over its handshake rate.
    #[error("handshake rate limit")]
    RateLimited,
    /// An AEAD did not open: tampered, forged, or encrypted to another key.
    #[error("decryption failed")]
    Decrypt,
    /// A well-formed initiation from a static key we have no peer for.
    #[error("unknown peer public key")]
    UnknownPeer,
    /// A response, cookie or transport message for a receiver index we
    /// have no handshake or session under.
    #[error("unknown receiver index")]
    UnknownIndex,
    /// An initiation whose timestamp is not newer than the last accepted.
    #[error("replayed handshake initiation")]
    ReplayedInitiation,
    /// An initiation sooner than `initiation_min_interval` after the last.
    #[error("handshake initiation flood")]
    InitiationFlood,
    /// A Diffie-Hellman result of zeros (a low-order key).
    #[error("weak public key")]
    WeakKey,
    /// A cookie reply that does not decrypt against our last mac1.
    #[error("bad cookie reply")]
    BadCookie,
    /// A transport counter seen before, or too far behind the window.
    #[error("replayed transport counter")]
    Replayed,
    /// A transport message on a session REJECT_AFTER_TIME old.
    #[error("session expired")]
    Expired,
    /// A transport counter at or beyond REJECT_AFTER_MESSAGES.
    #[error("counter beyond REJECT_AFTER_MESSAGES")]
    CounterLimit,
    /// A decrypted packet that is not one well-formed IP packet.
    #[error("decrypted payload is not an IP packet")]
    NotIp,
    /// A decrypted packet whose source is not in the sender's subnets.
    #[error("inner source not allowed for this peer (cryptokey routing)")]
    SpoofedSource,
}

impl DropReason {
    /// Every reason, for counter tables.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::UnknownType,
        DropReason::WrongType,
        DropReason::BadMac1,
        DropReason::RateLimited,
        DropReason::Decrypt,
        DropReason::UnknownPeer,
        DropReason::UnknownIndex,
        DropReason::ReplayedInitiation,
        DropReason::InitiationFlood,
        DropReason::WeakKey,
        DropReason::BadCookie,
        DropReason::Replayed,
        DropReason::Expired,
        DropReason::CounterLimit,
        DropReason::NotIp,
        DropReason::SpoofedSource,
    ];

    /// A label for metrics (`snake_case`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "wg_truncated",
            DropReason::UnknownType => "wg_unknown_type",
            DropReason::WrongType => "wg_wrong_type",
            DropReason::BadMac1 => "wg_bad_mac1",
            DropReason::RateLimited => "wg_rate_limited",
            DropReason::Decrypt => "wg_decrypt",
            DropReason::UnknownPeer => "wg_unknown_peer",
            DropReason::UnknownIndex => "wg_unknown_index",
            DropReason::ReplayedInitiation => "wg_replayed_initiation",
            DropReason::InitiationFlood => "wg_initiation_flood",
            DropReason::WeakKey => "wg_weak_key",
            DropReason::BadCookie => "wg_bad_cookie",
            DropReason::Replayed => "wg_replayed",
            DropReason::Expired => "wg_expired",
            DropReason::CounterLimit => "wg_counter_limit",
            DropReason::NotIp => "wg_not_ip",
            DropReason::SpoofedSource => "wg_spoofed_source",
        }
    }
}

impl From<MessageError> for DropReason {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::NoType { .. } | MessageError::BadLength { .. } => DropReason::Truncated,
            MessageError::UnknownType(_) => DropReason::UnknownType,
            MessageError::WrongType { .. } => DropReason::WrongType,
        }
    }
}

#[cfg(test)]
mod tests;
