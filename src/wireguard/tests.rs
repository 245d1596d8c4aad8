//! Node-level tests: two nodes handshaking through the public API, hostile
//! input on every path, and every timer rule at its exact boundary (time is
//! an argument, so a rule is checked one millisecond before and at its
//! deadline).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::wire::wireguard::{Initiation, Response};

const MS: Duration = Duration::from_millis(1);

fn a_addr() -> SocketAddr {
    "198.18.0.1:51820".parse().unwrap()
}

fn b_addr() -> SocketAddr {
    "198.18.0.2:51820".parse().unwrap()
}

/// Two nodes that know each other. Jitter off, so deadlines are exact.
struct Pair {
    a: Node,
    b: Node,
    /// B as A's peer, and A as B's.
    b_at_a: Arc<Peer>,
    a_at_b: Arc<Peer>,
    t0: Instant,
    rng: ChaCha20Rng,
}

fn exact_limits() -> Limits {
    Limits { rekey_timeout_jitter: Duration::ZERO, ..Limits::default() }
}

impl Pair {
    fn new() -> Pair {
        Pair::with(exact_limits(), None)
    }

    fn with(limits: Limits, psk: Option<PresharedKey>) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(31);
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = Node::new(NodeConfig { private_key: PrivateKey::generate(&mut rng), limits, padding_mtu: 1420 }, t0, wall);
        let b = Node::new(NodeConfig { private_key: PrivateKey::generate(&mut rng), limits, padding_mtu: 1420 }, t0, wall);
        let mut cfg = PeerConfig::new(*b.public_key());
        cfg.preshared_key = psk.clone();
        let b_at_a = a.add_peer(cfg, &mut rng).unwrap();
        let mut cfg = PeerConfig::new(*a.public_key());
        cfg.preshared_key = psk;
        let a_at_b = b.add_peer(cfg, &mut rng).unwrap();
        Pair { a, b, b_at_a, a_at_b, t0, rng }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// A starts a handshake at `now`; B answers; A completes it.
    fn handshake(&mut self, now: Instant) {
        let init = self.a.send_initiation(&self.b_at_a, now, &mut self.rng).expect("initiation");
        let resp = match self.b.handle_handshake(&init, a_addr(), now, &mut self.rng) {
            Ok(HandshakeOutcome::Response { message, .. }) => message,
            other => panic!("expected a response, got {other:?}"),
        };
        match self.a.handle_handshake(&resp, b_addr(), now, &mut self.rng) {
            Ok(HandshakeOutcome::Established { .. }) => {}
            other => panic!("expected established, got {other:?}"),
        }
    }

    /// A sends one data packet to B at `now`, B accepts it (confirming a
    /// `next` session); returns what B read.
    fn a_to_b(&mut self, now: Instant, payload: &[u8]) -> Result<Vec<u8>, DropReason> {
        let datagram = seal(&self.b_at_a, now, payload).expect("A has a session");
        self.b_at_a.note_transport_sent(now, !payload.is_empty());
        receive(&self.b, &datagram, now)
    }

    fn b_to_a(&mut self, now: Instant, payload: &[u8]) -> Result<Vec<u8>, DropReason> {
        let datagram = seal(&self.a_at_b, now, payload).expect("B has a session");
        self.a_at_b.note_transport_sent(now, !payload.is_empty());
        receive(&self.a, &datagram, now)
    }

    fn tick_a(&mut self, now: Instant) -> PeerTick {
        self.a.tick_peer(&self.b_at_a, now, &mut self.rng)
    }

    fn tick_b(&mut self, now: Instant) -> PeerTick {
        self.b.tick_peer(&self.a_at_b, now, &mut self.rng)
    }
}

/// Seals `payload` with the peer's current session, as a data path does.
fn seal(peer: &Peer, now: Instant, payload: &[u8]) -> Option<Vec<u8>> {
    let ring = peer.keys();
    let session = ring.sending(now)?;
    let mut buf = vec![0u8; session::HEADROOM + payload.len() + session::TAILROOM];
    buf[session::HEADROOM..][..payload.len()].copy_from_slice(payload);
    let n = session.reserve(1, now).ok()?.seal(&mut buf, payload.len()).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Receives one transport datagram as a data path does; the plaintext.
fn receive(node: &Node, datagram: &[u8], now: Instant) -> Result<Vec<u8>, DropReason> {
    let mut buf = datagram.to_vec();
    let index = crate::wire::wireguard::Transport::new_checked(&buf[..])?.receiver();
    let rx = node.lookup(index).ok_or(DropReason::UnknownIndex)?;
    if rx.session.is_expired(now) {
        return Err(DropReason::Expired);
    }
    let opened = rx.session.open(&mut buf)?;
    if !rx.session.lock_replay().accept(opened.counter) {
        return Err(DropReason::Replayed);
    }
    rx.peer.note_transport_received(now, opened.len > 0);
    if rx.slot == Slot::Next {
        node.confirm(&rx.peer, &rx.session, now);
    }
    Ok(buf[session::HEADROOM..][..opened.len].to_vec())
}

#[test]
fn handshake_then_data_both_ways() {
    let mut p = Pair::new();
    let now = p.at(Duration::ZERO);
    p.handshake(now);
    // A (initiator) may send at once; B must wait for A's first packet.
    assert!(p.b_at_a.keys().current.is_some());
    assert!(p.a_at_b.keys().current.is_none());
    assert!(p.a_at_b.keys().next.is_some());
    assert_eq!(p.a_to_b(now, b"hello").unwrap()[..5], *b"hello");
    assert!(p.a_at_b.keys().next.is_none(), "the first packet confirmed B's session");
    assert_eq!(&p.b_to_a(now, b"world").unwrap()[..5], b"world");
    assert_eq!(p.a_at_b.last_handshake(), Some(now));
    assert_eq!(p.b_at_a.last_handshake(), Some(now));
}

#[test]
fn a_preshared_key_must_match() {
    let psk = PresharedKey::from_bytes([5; 32]);
    let mut p = Pair::with(exact_limits(), Some(psk));
    let now = p.at(Duration::ZERO);
    p.handshake(now);
    assert!(p.a_to_b(now, b"x").is_ok());
    // B with another psk: the response does not authenticate at A.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let c = Node::new(
        NodeConfig { private_key: PrivateKey::generate(&mut rng), limits: exact_limits(), padding_mtu: 1420 },
        now,
        SystemTime::UNIX_EPOCH,
    );
    let mut cfg = PeerConfig::new(*p.a.public_key());
    cfg.preshared_key = Some(PresharedKey::from_bytes([6; 32]));
    c.add_peer(cfg, &mut rng).unwrap();
    let mut cfg = PeerConfig::new(*c.public_key());
    cfg.preshared_key = Some(PresharedKey::from_bytes([5; 32]));
    let c_at_a = p.a.add_peer(cfg, &mut rng).unwrap();
    let init = p.a.send_initiation(&c_at_a, now, &mut rng).unwrap();
    let HandshakeOutcome::Response { message, .. } = c.handle_handshake(&init, a_addr(), now, &mut rng).unwrap() else { panic!() };
    assert_eq!(p.a.handle_handshake(&message, b_addr(), now, &mut rng).err(), Some(DropReason::Decrypt));
}

#[test]
fn hostile_handshake_messages_get_a_typed_drop() {
    let mut p = Pair::new();
    let now = p.at(Duration::ZERO);
    let init = p.a.send_initiation(&p.b_at_a, now, &mut p.rng).unwrap();
    let b = &p.b;
    let rng = &mut p.rng;
    let mut try_b = |bytes: &[u8]| b.handle_handshake(bytes, a_addr(), now, rng).err();
    assert_eq!(try_b(&[]), Some(DropReason::Truncated));
    assert_eq!(try_b(&init[..147]), Some(DropReason::Truncated));
    assert_eq!(try_b(&[init.as_slice(), &[0]].concat()), Some(DropReason::Truncated));
    assert_eq!(try_b(&[7, 0, 0, 0, 1, 2, 3]), Some(DropReason::UnknownType));
    let mut transport = [0u8; 48];
    transport[0] = 4;
    assert_eq!(try_b(&transport), Some(DropReason::WrongType));
    // Any changed byte before mac1 breaks mac1; a changed mac1 too.
    for i in [0usize, 4, 8, 40, 88, 115, 116, 131] {
        let mut bad = init;
        bad[i] ^= 0x40;
        let want = if i == 0 { DropReason::UnknownType } else { DropReason::BadMac1 };
        assert_eq!(try_b(&bad), Some(want), "byte {i}");
    }
    // mac2 is not checked when not under load: a changed mac2 passes screening.
    let mut other_mac2 = init;
    other_mac2[140] ^= 1;
    assert!(try_b(&other_mac2).is_none());
    // ...after which the original is a replay (same timestamp).
    assert_eq!(try_b(&init), Some(DropReason::ReplayedInitiation));
}

/// An initiation with valid mac1 built by someone who knows B's public key
/// but is not B's peer, or tampered inside the AEAD fields with mac1 fixed.
#[test]
fn forged_initiations_are_refused_before_any_state_changes() {
    let p = Pair::new();
    let now = p.at(Duration::ZERO);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let stranger = Node::new(
        NodeConfig { private_key: PrivateKey::generate(&mut rng), limits: exact_limits(), padding_mtu: 0 },
        now,
        SystemTime::UNIX_EPOCH,
    );
    let b_at_stranger = stranger.add_peer(PeerConfig::new(*p.b.public_key()), &mut rng).unwrap();
    let init = stranger.send_initiation(&b_at_stranger, now, &mut rng).unwrap();
    assert_eq!(p.b.handle_handshake(&init, a_addr(), now, &mut rng).err(), Some(DropReason::UnknownPeer));

    // A's genuine initiation with its encrypted timestamp changed and mac1
    // recomputed (an attacker can compute mac1: it needs B's public key only).
    let init = p.a.send_initiation(&p.b_at_a, now, &mut rng).unwrap();
    for at in [10usize, 60, 100] {
        let mut bad = init;
        bad[at] ^= 1;
        restamp_mac1(&mut bad, p.b.public_key());
        assert_eq!(p.b.handle_handshake(&bad, a_addr(), now, &mut rng).err(), Some(DropReason::Decrypt), "byte {at}");
    }
    assert!(p.a_at_b.keys().next.is_none(), "no session from forgeries");
    // The genuine one is still accepted: the forgeries consumed nothing.
    assert!(matches!(p.b.handle_handshake(&init, a_addr(), now, &mut rng), Ok(HandshakeOutcome::Response { .. })));
}

/// Recomputes mac1 of a handshake message to `to`, zeroing mac2.
fn restamp_mac1(msg: &mut [u8], to: &PublicKey) {
    let key = crypto::hash(&[b"mac1----", to.as_bytes()]);
    let n = msg.len();
    let mac1 = crypto::mac(&key, &[&msg[..n - 32]]);
    msg[n - 32..n - 16].copy_from_slice(&mac1);
    msg[n - 16..].fill(0);
}

#[test]
fn replayed_and_flooding_initiations_are_refused() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    let first = p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    assert!(p.b.handle_handshake(&first, a_addr(), t, &mut p.rng).is_ok());
    assert_eq!(p.b.handle_handshake(&first, a_addr(), t + Duration::from_secs(30), &mut p.rng).err(), Some(DropReason::ReplayedInitiation));
    // A newer initiation within 20 ms of the last accepted one: a flood.
    let t2 = t + Duration::from_secs(6);
    let second = p.a.send_initiation(&p.b_at_a, t2, &mut p.rng).unwrap();
    let t3 = t2 + Duration::from_secs(6);
    let third = p.a.send_initiation(&p.b_at_a, t3, &mut p.rng).unwrap();
    assert!(p.b.handle_handshake(&second, a_addr(), t3, &mut p.rng).is_ok());
    assert_eq!(p.b.handle_handshake(&third, a_addr(), t3 + 19 * MS, &mut p.rng).err(), Some(DropReason::InitiationFlood));
    assert!(p.b.handle_handshake(&third, a_addr(), t3 + 20 * MS, &mut p.rng).is_ok());
}

#[test]
fn responses_must_answer_the_pending_initiation() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    let init = p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let HandshakeOutcome::Response { message, .. } = p.b.handle_handshake(&init, a_addr(), t, &mut p.rng).unwrap() else { panic!() };
    // Another receiver index: unknown.
    let mut other = message;
    Response::new_unchecked(&mut other[..]).set_receiver(Initiation::new_checked(&init[..]).unwrap().sender() ^ 0x100);
    restamp_mac1(&mut other, p.a.public_key());
    assert_eq!(p.a.handle_handshake(&other, b_addr(), t, &mut p.rng).err(), Some(DropReason::UnknownIndex));
    // Tampered ephemeral with mac1 fixed: does not authenticate.
    let mut bad = message;
    bad[20] ^= 1;
    restamp_mac1(&mut bad, p.a.public_key());
    assert_eq!(p.a.handle_handshake(&bad, b_addr(), t, &mut p.rng).err(), Some(DropReason::Decrypt));
    assert!(matches!(p.a.handle_handshake(&message, b_addr(), t, &mut p.rng), Ok(HandshakeOutcome::Established { .. })));
    // The same response again: the handshake it answered is done.
    assert_eq!(p.a.handle_handshake(&message, b_addr(), t, &mut p.rng).err(), Some(DropReason::UnknownIndex));
}

#[test]
fn under_load_cookies_then_mac2_then_the_rate_limit() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.b.set_under_load(true);
    let init = p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let reply = match p.b.handle_handshake(&init, a_addr(), t, &mut p.rng) {
        Ok(HandshakeOutcome::CookieReply(r)) => r,
        other => panic!("expected a cookie reply, got {other:?}"),
    };
    assert!(p.a_at_b.keys().next.is_none(), "no handshake work without mac2");
    // A forged cookie reply is refused; the real one is taken.
    let mut forged = reply;
    forged[40] ^= 1;
    assert_eq!(p.a.handle_handshake(&forged, b_addr(), t, &mut p.rng).err(), Some(DropReason::BadCookie));
    assert!(matches!(p.a.handle_handshake(&reply, b_addr(), t, &mut p.rng), Ok(HandshakeOutcome::CookieAccepted { .. })));
    // The retransmission carries mac2 and is answered.
    let t2 = t + Duration::from_secs(5);
    let Some(Outbound::Initiation(retry)) = p.tick_a(t2).send else { panic!("retransmission") };
    assert!(matches!(p.b.handle_handshake(&retry, a_addr(), t2, &mut p.rng), Ok(HandshakeOutcome::Response { .. })));
    // From another source port the same mac2 does not count.
    let other_src: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    assert!(matches!(p.b.handle_handshake(&retry, other_src, t2, &mut p.rng), Ok(HandshakeOutcome::CookieReply(_))));
    // A cookie reply for an index A never used is refused.
    let mut stray = reply;
    stray[4..8].copy_from_slice(&0x00ff_ff01u32.to_le_bytes());
    assert_eq!(p.a.handle_handshake(&stray, b_addr(), t, &mut p.rng).err(), Some(DropReason::UnknownIndex));
    // Past the per-source burst, valid-mac2 messages are rate limited
    // before any Diffie-Hellman.
    let limited = (0..10).filter(|_| p.b.handle_handshake(&retry, a_addr(), t2, &mut p.rng).err() == Some(DropReason::RateLimited)).count();
    assert!(limited >= 5, "{limited} of 10 limited");
    p.b.set_under_load(false);
    assert_eq!(p.b.handle_handshake(&retry, a_addr(), t2, &mut p.rng).err(), Some(DropReason::ReplayedInitiation));
}

#[test]
fn transport_hostile_input_and_replay() {
    let mut p = Pair::new();
    let now = p.at(Duration::ZERO);
    p.handshake(now);
    let d = seal(&p.b_at_a, now, b"payload").unwrap();
    assert!(receive(&p.b, &d, now).is_ok());
    assert_eq!(receive(&p.b, &d, now), Err(DropReason::Replayed));
    let mut bad = d.clone();
    bad[20] ^= 1;
    assert_eq!(receive(&p.b, &bad, now), Err(DropReason::Decrypt));
    let mut bad = d.clone();
    bad[4] ^= 0x7f;
    assert_eq!(receive(&p.b, &bad, now), Err(DropReason::UnknownIndex));
    assert_eq!(receive(&p.b, &d[..31], now), Err(DropReason::Truncated));
    // After REJECT_AFTER_TIME neither side uses the session.
    let late = now + Limits::PROTOCOL.reject_after_time;
    let d2 = seal(&p.b_at_a, late - MS, b"last").unwrap();
    assert_eq!(receive(&p.b, &d2, late), Err(DropReason::Expired));
    assert!(seal(&p.b_at_a, late, b"x").is_none());
}

#[test]
fn rotation_keeps_the_previous_session_for_packets_in_flight() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"1").unwrap();
    let old = seal(&p.b_at_a, t, b"in flight").unwrap();
    let t2 = t + Duration::from_secs(10);
    p.handshake(t2);
    // A now sends on the new session; the old one is `previous` at A. B's
    // new session is `next` until A's first packet on it arrives.
    assert!(p.a_at_b.keys().next.is_some());
    assert_eq!(&receive(&p.b, &old, t2).unwrap()[..9], b"in flight");
    p.a_to_b(t2, b"2").unwrap();
    let ring = p.a_at_b.keys();
    assert!(ring.next.is_none() && ring.previous.is_some());
    assert_eq!(
        ring.current.as_ref().unwrap().local_index(),
        p.b.lookup(ring.current.as_ref().unwrap().local_index()).unwrap().session.local_index()
    );
}

#[test]
fn simultaneous_initiations_converge() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    let from_a = p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let from_b = p.b.send_initiation(&p.a_at_b, t, &mut p.rng).unwrap();
    let HandshakeOutcome::Response { message: resp_b, .. } = p.b.handle_handshake(&from_a, a_addr(), t, &mut p.rng).unwrap() else {
        panic!()
    };
    let HandshakeOutcome::Response { message: resp_a, .. } = p.a.handle_handshake(&from_b, b_addr(), t, &mut p.rng).unwrap() else {
        panic!()
    };
    assert!(matches!(p.a.handle_handshake(&resp_b, b_addr(), t, &mut p.rng), Ok(HandshakeOutcome::Established { .. })));
    assert!(matches!(p.b.handle_handshake(&resp_a, a_addr(), t, &mut p.rng), Ok(HandshakeOutcome::Established { .. })));
    // Each side sends on the session it initiated; both arrive.
    assert_eq!(&p.a_to_b(t, b"ab").unwrap()[..2], b"ab");
    assert_eq!(&p.b_to_a(t, b"ba").unwrap()[..2], b"ba");
}

#[test]
fn peer_table_rules() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let now = Instant::now();
    let node = Node::new(
        NodeConfig { private_key: PrivateKey::generate(&mut rng), limits: Limits::default(), padding_mtu: 0 },
        now,
        SystemTime::now(),
    );
    let k1 = PrivateKey::generate(&mut rng).public_key();
    let k2 = PrivateKey::generate(&mut rng).public_key();
    let p1 = node.add_peer(PeerConfig::new(k1), &mut rng).unwrap();
    assert_eq!(node.add_peer(PeerConfig::new(k1), &mut rng).err(), Some(PeerError::Duplicate(k1)));
    assert_eq!(node.add_peer(PeerConfig::new(*node.public_key()), &mut rng).err(), Some(PeerError::OwnKey(*node.public_key())));
    let weak = PublicKey::from_bytes([0; 32]);
    assert_eq!(node.add_peer(PeerConfig::new(weak), &mut rng).err(), Some(PeerError::WeakKey(weak)));
    let p2 = node.add_peer(PeerConfig::new(k2), &mut rng).unwrap();
    assert_ne!(p1.slot, p2.slot);
    assert!(p1.slot >= 1 && p2.slot >= 1);
    assert!(Arc::ptr_eq(&node.peer(&k2).unwrap(), &p2));
    assert!(node.remove_peer(&k1));
    assert!(!node.remove_peer(&k1));
    assert!(node.peer(&k1).is_none());
    // The freed slot is reused.
    let k3 = PrivateKey::generate(&mut rng).public_key();
    assert_eq!(node.add_peer(PeerConfig::new(k3), &mut rng).unwrap().slot, p1.slot);
    assert_eq!(node.peers().len(), 2);
}

#[test]
fn a_removed_peers_sessions_are_not_found() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    let d = seal(&p.b_at_a, t, b"x").unwrap();
    assert!(p.b.remove_peer(p.a.public_key()));
    assert_eq!(receive(&p.b, &d, t), Err(DropReason::UnknownIndex));
}

#[test]
fn indices_of_live_sessions_are_never_reused() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"1").unwrap();
    let live = p.a_at_b.keys().current.as_ref().unwrap().local_index();
    // B answers 300 initiations (more than the 256 index values per peer).
    for i in 1..=300u64 {
        let ti = t + Duration::from_secs(6 * i);
        let init = p.a.send_initiation(&p.b_at_a, ti, &mut p.rng).unwrap();
        let HandshakeOutcome::Response { message, .. } = p.b.handle_handshake(&init, a_addr(), ti, &mut p.rng).unwrap() else { panic!() };
        let new = Response::new_checked(&message[..]).unwrap().sender();
        assert_ne!(new, live, "round {i}");
    }
}

// ---- timers: each rule at its boundary ----

#[test]
fn retransmission_every_rekey_timeout_then_give_up_then_zero() {
    let mut p = Pair::new();
    let l = exact_limits();
    let t = p.at(Duration::ZERO);
    p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let mut sent = 1;
    let mut now = t;
    loop {
        let next = now + l.rekey_timeout;
        assert!(p.tick_a(next - MS).is_empty(), "nothing before REKEY_TIMEOUT");
        let tick = p.tick_a(next);
        now = next;
        if tick.gave_up {
            assert!(tick.send.is_none());
            break;
        }
        assert!(matches!(tick.send, Some(Outbound::Initiation(_))));
        sent += 1;
    }
    assert_eq!(sent, 20, "wireguard-go sends 20 initiations before giving up");
    assert_eq!(now - t, l.rekey_timeout * 20);
    // Nothing more, until the keys are zeroed 3 × REJECT_AFTER_TIME later.
    let zero = now + l.reject_after_time * 3;
    assert!(p.tick_a(zero - MS).is_empty());
    assert!(p.tick_a(zero).keys_zeroed);
}

#[test]
fn retransmissions_use_fresh_ephemerals_and_indices() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    let first = p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let Some(Outbound::Initiation(second)) = p.tick_a(t + Limits::PROTOCOL.rekey_timeout).send else { panic!() };
    let (a, b) = (Initiation::new_checked(&first[..]).unwrap(), Initiation::new_checked(&second[..]).unwrap());
    assert_ne!(a.ephemeral(), b.ephemeral());
    assert_ne!(a.sender(), b.sender());
    // B answers the first (late): A ignores it, the pending one is the second.
    let HandshakeOutcome::Response { message, .. } = p.b.handle_handshake(&first, a_addr(), t, &mut p.rng).unwrap() else { panic!() };
    assert_eq!(p.a.handle_handshake(&message, b_addr(), t, &mut p.rng).err(), Some(DropReason::UnknownIndex));
}

#[test]
fn jitter_stays_within_its_bound() {
    let mut p = Pair::with(Limits::default(), None);
    let t = p.at(Duration::ZERO);
    p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let mut now = t;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let mut step = now + Limits::PROTOCOL.rekey_timeout;
        while p.tick_a(step).send.is_none() {
            step += MS;
            assert!(step - now <= Limits::PROTOCOL.rekey_timeout + Limits::PROTOCOL.rekey_timeout_jitter, "beyond the jitter");
        }
        seen.push(step - now);
        now = step;
    }
    assert!(seen.iter().any(|d| *d != seen[0]), "jitter varies: {seen:?}");
}

#[test]
fn handshake_initiation_is_rate_limited_to_one_per_rekey_timeout() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    assert!(p.a.send_initiation(&p.b_at_a, t, &mut p.rng).is_some());
    assert!(p.a.send_initiation(&p.b_at_a, t + Duration::from_secs(5) - MS, &mut p.rng).is_none());
    assert!(p.a.send_initiation(&p.b_at_a, t + Duration::from_secs(5), &mut p.rng).is_some());
}

#[test]
fn keepalive_after_receiving_data_and_sending_nothing() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"data").unwrap();
    let due = t + Limits::PROTOCOL.keepalive_timeout;
    assert!(p.tick_b(due - MS).is_empty());
    let Some(Outbound::Keepalive(k)) = p.tick_b(due).send else { panic!("keepalive") };
    assert_eq!(receive(&p.a, &k, due).unwrap().len(), 0);
    assert!(p.tick_b(due + Duration::from_secs(30)).is_empty(), "one keepalive per unanswered data");
    // A keepalive received does not ask for one back.
    assert!(p.tick_a(due + Duration::from_secs(30)).send.is_none());
    // Data answered by data: no keepalive.
    let t2 = due + Duration::from_secs(40);
    p.a_to_b(t2, b"data").unwrap();
    p.b_to_a(t2 + Duration::from_secs(1), b"reply").unwrap();
    assert!(p.tick_b(t2 + Duration::from_secs(12)).is_empty());
}

#[test]
fn new_handshake_after_sending_data_and_hearing_nothing() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    let t1 = t + Duration::from_secs(1);
    p.a_to_b(t1, b"x").unwrap();
    p.a_to_b(t1 + Duration::from_secs(3), b"y").unwrap();
    // 15 s after the first unanswered data packet (not the last one).
    let due = t1 + Limits::PROTOCOL.keepalive_timeout + Limits::PROTOCOL.rekey_timeout;
    assert!(p.tick_a(due - MS).is_empty());
    assert!(matches!(p.tick_a(due).send, Some(Outbound::Initiation(_))));
    // A reply in time stops it.
    let mut q = Pair::new();
    q.handshake(t);
    q.a_to_b(t1, b"x").unwrap();
    q.b_to_a(t1 + Duration::from_secs(14), b"keepalive-ish").unwrap();
    assert!(q.tick_a(due).send.is_none());
}

#[test]
fn initiator_rekeys_after_rekey_after_time_when_sending() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"x").unwrap();
    p.b_to_a(t, b"y").unwrap();
    let l = Limits::PROTOCOL;
    // Sending just before 120 s does not rekey; sending at 120 s does.
    let before = t + l.rekey_after_time - MS;
    p.a_to_b(before, b"x").unwrap();
    p.b_to_a(before, b"y").unwrap();
    assert!(p.tick_a(before).is_empty());
    let at = t + l.rekey_after_time;
    p.a_to_b(at, b"x").unwrap();
    assert!(matches!(p.tick_a(at).send, Some(Outbound::Initiation(_))));
    // The responder sends at 120 s too, and does not rekey on time.
    p.b_to_a(at, b"y").unwrap();
    assert!(p.tick_b(at).is_empty());
}

#[test]
fn rekey_after_messages_on_either_side() {
    let l = Limits { rekey_after_messages: 1000, ..exact_limits() };
    let mut p = Pair::with(l, None);
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"x").unwrap();
    let session = Arc::clone(p.a_at_b.keys().current.as_ref().unwrap());
    session.set_sent_for_test(999);
    // (B answered A's handshake at t: its own initiations wait REKEY_TIMEOUT.)
    let t5 = t + Limits::PROTOCOL.rekey_timeout;
    p.b_to_a(t5, b"y").unwrap();
    assert!(p.tick_b(t5).is_empty(), "1000 sent: not past the limit");
    p.b_to_a(t5, b"y").unwrap();
    assert!(matches!(p.tick_b(t5).send, Some(Outbound::Initiation(_))), "the responder rekeys on messages");
}

#[test]
fn initiator_rekeys_once_near_reject_when_receiving() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"x").unwrap();
    let l = Limits::PROTOCOL;
    let last_minute = t + l.reject_after_time - l.keepalive_timeout - l.rekey_timeout;
    p.b_to_a(last_minute - MS, b"y").unwrap();
    assert!(p.tick_a(last_minute - MS).send.is_none());
    p.b_to_a(last_minute, b"y").unwrap();
    assert!(matches!(p.tick_a(last_minute).send, Some(Outbound::Initiation(_))));
    // Once per session: the retransmission timer takes over, not this rule.
    p.b_to_a(last_minute + Duration::from_secs(1), b"y").unwrap();
    assert!(p.tick_a(last_minute + Duration::from_secs(1)).send.is_none());
}

#[test]
fn persistent_keepalive_when_idle() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    let interval = Duration::from_secs(25);
    // Re-add A at B with a persistent keepalive.
    assert!(p.b.remove_peer(p.a.public_key()));
    let mut cfg = PeerConfig::new(*p.a.public_key());
    cfg.persistent_keepalive = Some(interval);
    p.a_at_b = p.b.add_peer(cfg, &mut rng).unwrap();
    // Without a session the first tick starts a handshake (as wireguard-go's
    // persistent keepalive does).
    assert!(matches!(p.tick_b(t).send, Some(Outbound::Initiation(_))));
    // Handshake B -> A, data A -> B confirms nothing B needs: B initiated.
    let t1 = t + Duration::from_secs(1);
    let init = p.b.send_initiation(&p.a_at_b, t1 + Duration::from_secs(5), &mut p.rng).unwrap();
    let t2 = t1 + Duration::from_secs(5);
    let HandshakeOutcome::Response { message, .. } = p.a.handle_handshake(&init, b_addr(), t2, &mut p.rng).unwrap() else { panic!() };
    assert!(matches!(p.b.handle_handshake(&message, a_addr(), t2, &mut p.rng), Ok(HandshakeOutcome::Established { .. })));
    assert!(p.tick_b(t2 + interval - MS).is_empty());
    assert!(matches!(p.tick_b(t2 + interval).send, Some(Outbound::Keepalive(_))));
    assert!(p.tick_b(t2 + interval + interval - MS).is_empty());
}

#[test]
fn sessions_expire_and_keys_are_zeroed() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    p.a_to_b(t, b"x").unwrap();
    let l = Limits::PROTOCOL;
    assert!(p.b_at_a.keys().sending(t + l.reject_after_time - MS).is_some());
    assert!(p.b_at_a.keys().sending(t + l.reject_after_time).is_none());
    let zero = t + l.reject_after_time * 3;
    // Keep the timers quiet until then: nothing is sent, nothing is due.
    assert!(!p.tick_b(zero - MS).keys_zeroed);
    assert!(p.tick_b(zero).keys_zeroed);
    assert!(p.a_at_b.keys().current.is_none());
}

#[test]
fn counter_exhaustion_needs_a_new_handshake() {
    let l = Limits { reject_after_messages: 10, rekey_after_messages: 5, ..exact_limits() };
    let mut p = Pair::with(l, None);
    let t = p.at(Duration::ZERO);
    p.handshake(t);
    for _ in 0..10 {
        p.a_to_b(t, b"x").unwrap();
    }
    let ring = p.b_at_a.keys();
    let session = ring.sending(t).unwrap();
    assert_eq!(session.reserve(1, t).err(), Some(SealError::CounterExhausted));
    drop(ring);
    // The timers saw the counter pass REKEY_AFTER_MESSAGES: a new handshake.
    assert!(matches!(p.tick_a(t + Duration::from_secs(5)).send, Some(Outbound::Initiation(_))));
}

#[test]
fn drop_reason_labels_are_unique() {
    let mut labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), DropReason::ALL.len());
}

#[test]
fn receiver_indices_are_masked_per_node() {
    let mut p = Pair::new();
    let t = p.at(Duration::ZERO);
    let from_a = p.a.send_initiation(&p.b_at_a, t, &mut p.rng).unwrap();
    let from_b = p.b.send_initiation(&p.a_at_b, t, &mut p.rng).unwrap();
    let (ia, ib) = (Initiation::new_checked(&from_a[..]).unwrap().sender(), Initiation::new_checked(&from_b[..]).unwrap().sender());
    // Both peers sit in slot 1 with counter 1; the indices differ by the
    // nodes' masks and do not show the slot.
    assert_eq!((p.b_at_a.slot, p.a_at_b.slot), (1, 1));
    assert_ne!(ia, ib);
    assert_ne!(ia, 0x101);
    assert_ne!(ib, 0x101);
}
