//! encapd's WireGuard core against an independent implementation,
//! in-process: boringtun's `noise::Tunn` (crates.io `boringtun` 0.7, the
//! library under Cloudflare's boringtun-cli). Each test drives both sides
//! with the same clock — ours through `now` arguments, boringtun's through
//! its mock clock (the `mock-instant` feature; per test thread) — and
//! carries every datagram between them by hand:
//!
//! - our initiator with boringtun responding, and the reverse;
//! - transport data both ways at sizes from empty to a full 1420-byte MTU,
//!   IPv4 and IPv6;
//! - rekeying after REKEY_AFTER_TIME started by each side, with data on
//!   the new session both ways, and REJECT_AFTER_TIME;
//! - cookie replies under load, each side the one under load;
//! - a preshared key;
//! - replays and tampering refused by both.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use encapd::wire::wireguard::{MessageType, Transport, message_type};
use encapd::wireguard::cryptokey::inner_packet;
use encapd::wireguard::session::{HEADROOM, TAILROOM};
use encapd::wireguard::{
    DropReason, HandshakeOutcome, Limits, Node, NodeConfig, Outbound, Peer, PeerConfig, PresharedKey, PrivateKey, PublicKey, Slot,
};
use mock_instant::MockClock;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const OURS: &str = "198.18.0.1:51820";
const THEIRS: &str = "198.18.0.2:51820";

fn ours() -> SocketAddr {
    OURS.parse().unwrap()
}

fn theirs() -> SocketAddr {
    THEIRS.parse().unwrap()
}

/// An IPv4/UDP packet from 100.96.2.3 (their pod) or 100.96.1.2 (ours)
/// with `len` bytes in all; the checksums are not filled in (neither side
/// checks them).
fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize, fill: u8) -> Vec<u8> {
    assert!(len >= 28);
    let mut p = vec![fill; len];
    p[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..24].copy_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p
}

fn ipv6(len: usize, fill: u8) -> Vec<u8> {
    assert!(len >= 48);
    let mut p = vec![fill; len];
    p[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, 17, 64]);
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[8..24].copy_from_slice(&"fd00:96:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&"fd00:96:2::3".parse::<std::net::Ipv6Addr>().unwrap().octets());
    p
}

const OUR_POD: [u8; 4] = [100, 96, 1, 2];
const THEIR_POD: [u8; 4] = [100, 96, 2, 3];

/// Our node and a boringtun tunnel that know each other.
struct Harness {
    node: Node,
    peer: Arc<Peer>,
    bt: Tunn,
    t0: Instant,
    /// How far both clocks have moved.
    elapsed: Duration,
    rng: ChaCha20Rng,
    buf: Vec<u8>,
}

impl Harness {
    fn new(seed: u64, psk: Option<[u8; 32]>, bt_limit: Option<u64>) -> Harness {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ours = PrivateKey::generate(&mut rng);
        let theirs = PrivateKey::generate(&mut rng);
        let t0 = Instant::now();
        let node = Node::new(NodeConfig { private_key: ours.clone(), limits: Limits::default(), padding_mtu: 1420 }, t0, SystemTime::now());
        let mut cfg = PeerConfig::new(theirs.public_key());
        cfg.preshared_key = psk.map(PresharedKey::from_bytes);
        let peer = node.add_peer(cfg, &mut rng).unwrap();
        let bt_secret = x25519::StaticSecret::from(*theirs.to_bytes());
        let bt_public = x25519::PublicKey::from(&bt_secret);
        assert_eq!(bt_public.as_bytes(), theirs.public_key().as_bytes(), "the same key, computed by both");
        let limiter = bt_limit.map(|limit| Arc::new(RateLimiter::new(&bt_public, limit)));
        let bt = Tunn::new(bt_secret, x25519::PublicKey::from(*ours.public_key().as_bytes()), psk, None, 7, limiter);
        Harness { node, peer, bt, t0, elapsed: Duration::ZERO, rng, buf: vec![0u8; 65536] }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    /// Moves both clocks.
    fn advance(&mut self, d: Duration) {
        MockClock::advance(d);
        self.elapsed += d;
    }

    /// boringtun receives `datagram` from us; what it wants done.
    fn bt_receive(&mut self, datagram: &[u8]) -> BtOut {
        let r = self.bt.decapsulate(Some(ours().ip()), datagram, &mut self.buf);
        BtOut::from(r)
    }

    /// boringtun's follow-up sends after a handshake (queued packets).
    fn bt_flush(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match BtOut::from(self.bt.decapsulate(None, &[], &mut self.buf)) {
                BtOut::Network(d) => out.push(d),
                BtOut::Done => return out,
                other => panic!("boringtun flush: {other:?}"),
            }
        }
    }

    fn bt_send(&mut self, packet: &[u8]) -> Vec<u8> {
        match BtOut::from(self.bt.encapsulate(packet, &mut self.buf)) {
            BtOut::Network(d) => d,
            other => panic!("boringtun encapsulate: {other:?}"),
        }
    }

    fn bt_timers(&mut self) -> BtOut {
        BtOut::from(self.bt.update_timers(&mut self.buf))
    }

    /// We seal `packet` for boringtun on our current session.
    fn seal(&mut self, packet: &[u8]) -> Vec<u8> {
        let now = self.now();
        let ring = self.peer.keys();
        let session = ring.sending(now).expect("a session to send with");
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..][..packet.len()].copy_from_slice(packet);
        let n = session.reserve(1, now).unwrap().seal(&mut buf, packet.len()).unwrap();
        buf.truncate(n);
        self.peer.note_transport_sent(now, !packet.is_empty());
        buf
    }

    /// We receive a datagram from boringtun: handshake messages go to the
    /// node, transport data through lookup/open/replay/cryptokey.
    fn receive(&mut self, datagram: &[u8]) -> Ours {
        let now = self.now();
        match message_type(datagram) {
            Ok(MessageType::Transport) => {}
            Ok(_) => {
                return match self.node.handle_handshake(datagram, theirs(), now, &mut self.rng) {
                    Ok(outcome) => Ours::Handshake(outcome),
                    Err(e) => Ours::Dropped(e),
                };
            }
            Err(e) => return Ours::Dropped(e.into()),
        }
        let mut buf = datagram.to_vec();
        let index = Transport::new_checked(&buf[..]).unwrap().receiver();
        let Some(rx) = self.node.lookup(index) else { return Ours::Dropped(DropReason::UnknownIndex) };
        if rx.session.is_expired(now) {
            return Ours::Dropped(DropReason::Expired);
        }
        let opened = match rx.session.open(&mut buf) {
            Ok(o) => o,
            Err(e) => return Ours::Dropped(e),
        };
        if !rx.session.lock_replay().accept(opened.counter) {
            return Ours::Dropped(DropReason::Replayed);
        }
        rx.peer.note_transport_received(now, opened.len > 0);
        if rx.slot == Slot::Next {
            self.node.confirm(&rx.peer, &rx.session, now);
        }
        let plaintext = &buf[HEADROOM..HEADROOM + opened.len];
        if plaintext.is_empty() {
            return Ours::Keepalive;
        }
        let inner = inner_packet(plaintext).expect("an IP packet");
        assert_eq!(rx.session.peer(), self.peer.public_key(), "the sender's identity for cryptokey routing");
        Ours::Packet(plaintext[..inner.len].to_vec())
    }

    /// Our handshake with boringtun responding.
    fn we_initiate(&mut self) {
        let now = self.now();
        let init = self.node.send_initiation(&self.peer, now, &mut self.rng).expect("initiation");
        let BtOut::Network(resp) = self.bt_receive(&init) else { panic!("boringtun did not respond") };
        let Ours::Handshake(HandshakeOutcome::Established { .. }) = self.receive(&resp) else { panic!("not established") };
        assert!(self.bt_flush().is_empty());
    }
}

#[derive(Debug)]
enum BtOut {
    Done,
    Network(Vec<u8>),
    Tunnel(Vec<u8>, IpAddr),
    Err(String),
}

impl From<TunnResult<'_>> for BtOut {
    fn from(r: TunnResult<'_>) -> BtOut {
        match r {
            TunnResult::Done => BtOut::Done,
            TunnResult::WriteToNetwork(d) => BtOut::Network(d.to_vec()),
            TunnResult::WriteToTunnelV4(p, a) => BtOut::Tunnel(p.to_vec(), IpAddr::V4(a)),
            TunnResult::WriteToTunnelV6(p, a) => BtOut::Tunnel(p.to_vec(), IpAddr::V6(a)),
            TunnResult::Err(e) => BtOut::Err(format!("{e:?}")),
        }
    }
}

#[derive(Debug)]
enum Ours {
    Handshake(HandshakeOutcome),
    Packet(Vec<u8>),
    Keepalive,
    Dropped(DropReason),
}

/// Packets of every interesting size, IPv4 and IPv6, each way.
fn exchange(h: &mut Harness, rounds: usize) {
    let sizes = [28usize, 29, 44, 100, 511, 512, 1000, 1404, 1405, 1419, 1420];
    for round in 0..rounds {
        for (i, &len) in sizes.iter().enumerate() {
            let fill = (round * 31 + i) as u8;
            let p = ipv4(OUR_POD, THEIR_POD, len, fill);
            let d = h.seal(&p);
            match h.bt_receive(&d) {
                BtOut::Tunnel(got, src) => {
                    assert_eq!(got, p, "boringtun read our {len}-byte packet");
                    assert_eq!(src, IpAddr::V4(Ipv4Addr::from(OUR_POD)));
                }
                other => panic!("boringtun on our {len}-byte packet: {other:?}"),
            }
            let q = ipv4(THEIR_POD, OUR_POD, len, !fill);
            let d = h.bt_send(&q);
            match h.receive(&d) {
                Ours::Packet(got) => assert_eq!(got, q, "we read boringtun's {len}-byte packet"),
                other => panic!("we on boringtun's {len}-byte packet: {other:?}"),
            }
        }
        let v6 = ipv6(300, round as u8);
        let d = h.seal(&v6);
        assert!(matches!(h.bt_receive(&d), BtOut::Tunnel(got, _) if got == v6));
        let d = h.bt_send(&v6);
        assert!(matches!(h.receive(&d), Ours::Packet(got) if got == v6));
    }
}

#[test]
fn our_initiator_with_boringtun_responder() {
    let mut h = Harness::new(1, None, None);
    h.we_initiate();
    exchange(&mut h, 3);
}

#[test]
fn boringtun_initiator_with_our_responder() {
    let mut h = Harness::new(2, None, None);
    // boringtun has no session: it queues the packet and initiates.
    let first = ipv4(THEIR_POD, OUR_POD, 200, 0x42);
    let init = h.bt_send(&first);
    let Ours::Handshake(HandshakeOutcome::Response { message, .. }) = h.receive(&init) else { panic!("no response") };
    assert!(h.peer.keys().next.is_some(), "waits for key confirmation");
    assert!(h.peer.keys().sending(h.now()).is_none(), "the responder cannot send yet");
    // boringtun completes the handshake with a keepalive, then sends the queued packet.
    let BtOut::Network(keepalive) = h.bt_receive(&message) else { panic!("no keepalive") };
    assert!(matches!(h.receive(&keepalive), Ours::Keepalive));
    assert!(h.peer.keys().next.is_none() && h.peer.keys().current.is_some(), "confirmed by the keepalive");
    let queued = h.bt_flush();
    assert_eq!(queued.len(), 1);
    assert!(matches!(h.receive(&queued[0]), Ours::Packet(p) if p == first));
    exchange(&mut h, 3);
}

#[test]
fn a_preshared_key_both_ways() {
    let mut h = Harness::new(3, Some([0x5a; 32]), None);
    h.we_initiate();
    exchange(&mut h, 1);
    // And boringtun initiating with the psk.
    let mut h = Harness::new(4, Some([0x5a; 32]), None);
    let init = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 60, 1));
    let Ours::Handshake(HandshakeOutcome::Response { message, .. }) = h.receive(&init) else { panic!() };
    let BtOut::Network(keepalive) = h.bt_receive(&message) else { panic!() };
    assert!(matches!(h.receive(&keepalive), Ours::Keepalive));
}

#[test]
fn we_rekey_after_rekey_after_time_and_boringtun_follows() {
    let mut h = Harness::new(5, None, None);
    h.we_initiate();
    exchange(&mut h, 1);
    let first = h.peer.keys().current.as_ref().unwrap().local_index();
    // Keep both sides talking every 10 s up to REKEY_AFTER_TIME.
    for _ in 0..12 {
        h.advance(Duration::from_secs(10));
        exchange(&mut h, 1);
        let now = h.now();
        let tick = h.node.tick_peer(&h.peer, now, &mut h.rng);
        if h.elapsed < Limits::PROTOCOL.rekey_after_time {
            assert!(tick.send.is_none(), "no rekey at {:?}", h.elapsed);
            assert!(matches!(h.bt_timers(), BtOut::Done));
        } else {
            // We initiated the session and sent on it at 120 s: rekey.
            let Some(Outbound::Initiation(init)) = tick.send else { panic!("expected a rekey at {:?}", h.elapsed) };
            let BtOut::Network(resp) = h.bt_receive(&init) else { panic!("boringtun did not answer the rekey") };
            assert!(matches!(h.receive(&resp), Ours::Handshake(HandshakeOutcome::Established { .. })));
        }
    }
    let second = h.peer.keys().current.as_ref().unwrap().local_index();
    assert_ne!(first, second);
    // Data on the new session both ways; boringtun switches to it when our
    // first packet on it arrives.
    exchange(&mut h, 2);
    // boringtun's packets still in flight on the old session are accepted
    // (it is `previous` now).
    assert!(h.peer.keys().previous.is_some());
}

#[test]
fn boringtun_rekeys_and_we_follow() {
    let mut h = Harness::new(6, None, None);
    // boringtun initiates the first session, so it rekeys on time.
    let init = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 60, 1));
    let Ours::Handshake(HandshakeOutcome::Response { message, .. }) = h.receive(&init) else { panic!() };
    let BtOut::Network(keepalive) = h.bt_receive(&message) else { panic!() };
    assert!(matches!(h.receive(&keepalive), Ours::Keepalive));
    for d in h.bt_flush() {
        h.receive(&d);
    }
    let first = h.peer.keys().current.as_ref().unwrap().local_index();
    let mut rekeyed = false;
    for _ in 0..14 {
        h.advance(Duration::from_secs(10));
        exchange(&mut h, 1);
        let now = h.now();
        assert!(h.node.tick_peer(&h.peer, now, &mut h.rng).send.is_none(), "the responder does not rekey on time");
        if let BtOut::Network(init) = h.bt_timers() {
            let Ours::Handshake(HandshakeOutcome::Response { message, .. }) = h.receive(&init) else { panic!("no response to the rekey") };
            let BtOut::Network(keepalive) = h.bt_receive(&message) else { panic!() };
            assert!(matches!(h.receive(&keepalive), Ours::Keepalive));
            rekeyed = true;
        }
    }
    assert!(rekeyed, "boringtun rekeyed");
    assert_ne!(h.peer.keys().current.as_ref().unwrap().local_index(), first);
    exchange(&mut h, 2);
}

#[test]
fn reject_after_time_on_both_sides() {
    let mut h = Harness::new(7, None, None);
    h.we_initiate();
    exchange(&mut h, 1);
    let stale = h.seal(&ipv4(OUR_POD, THEIR_POD, 100, 3));
    let from_bt = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 100, 4));
    h.advance(Limits::PROTOCOL.reject_after_time + Duration::from_secs(1));
    assert!(h.peer.keys().sending(h.now()).is_none(), "we do not send on an expired session");
    assert!(matches!(h.receive(&from_bt), Ours::Dropped(DropReason::Expired)));
    // boringtun, its timers run, drops the expired session too.
    let _ = h.bt_timers();
    assert!(!matches!(h.bt_receive(&stale), BtOut::Tunnel(..)));
}

#[test]
fn our_cookie_reply_under_load_is_understood_by_boringtun() {
    let mut h = Harness::new(8, None, None);
    h.node.set_under_load(true);
    let init = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 60, 1));
    let Ours::Handshake(HandshakeOutcome::CookieReply(cookie)) = h.receive(&init) else { panic!("expected a cookie reply") };
    assert!(matches!(h.bt_receive(&cookie), BtOut::Done), "boringtun took the cookie");
    // boringtun's retransmission carries mac2 for our cookie: answered.
    h.advance(Limits::PROTOCOL.rekey_timeout + Duration::from_millis(400));
    let BtOut::Network(retry) = h.bt_timers() else { panic!("no retransmission") };
    let Ours::Handshake(HandshakeOutcome::Response { message, .. }) = h.receive(&retry) else { panic!("mac2 not accepted") };
    let BtOut::Network(keepalive) = h.bt_receive(&message) else { panic!() };
    assert!(matches!(h.receive(&keepalive), Ours::Keepalive));
}

#[test]
fn boringtuns_cookie_reply_under_load_is_understood_by_us() {
    // A rate limit of 0: boringtun is under load for every handshake.
    let mut h = Harness::new(9, None, Some(0));
    let now = h.now();
    let init = h.node.send_initiation(&h.peer, now, &mut h.rng).unwrap();
    let BtOut::Network(cookie) = h.bt_receive(&init) else { panic!("expected a cookie reply") };
    assert_eq!(message_type(&cookie), Ok(MessageType::CookieReply));
    assert!(matches!(h.receive(&cookie), Ours::Handshake(HandshakeOutcome::CookieAccepted { .. })));
    // Our retransmission carries mac2: boringtun answers it.
    h.advance(Limits::PROTOCOL.rekey_timeout + Duration::from_millis(400));
    let now = h.now();
    let Some(Outbound::Initiation(retry)) = h.node.tick_peer(&h.peer, now, &mut h.rng).send else { panic!("no retransmission") };
    let BtOut::Network(resp) = h.bt_receive(&retry) else { panic!("boringtun refused our mac2") };
    assert!(matches!(h.receive(&resp), Ours::Handshake(HandshakeOutcome::Established { .. })));
    exchange(&mut h, 1);
}

#[test]
fn replays_and_tampering_are_refused_by_both() {
    let mut h = Harness::new(10, None, None);
    h.we_initiate();
    let p = ipv4(OUR_POD, THEIR_POD, 120, 9);
    let d = h.seal(&p);
    assert!(matches!(h.bt_receive(&d), BtOut::Tunnel(..)));
    assert!(matches!(h.bt_receive(&d), BtOut::Err(e) if e == "DuplicateCounter"), "boringtun refuses our replayed packet");
    let mut bad = h.seal(&p);
    bad[40] ^= 1;
    assert!(matches!(h.bt_receive(&bad), BtOut::Err(e) if e == "InvalidAeadTag"));

    let q = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 120, 8));
    assert!(matches!(h.receive(&q), Ours::Packet(_)));
    assert!(matches!(h.receive(&q), Ours::Dropped(DropReason::Replayed)));
    let mut bad = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 120, 8));
    bad[50] ^= 1;
    assert!(matches!(h.receive(&bad), Ours::Dropped(DropReason::Decrypt)));
    // Reordered (older but within the window) is fine.
    let older = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 80, 1));
    let newer = h.bt_send(&ipv4(THEIR_POD, OUR_POD, 80, 2));
    assert!(matches!(h.receive(&newer), Ours::Packet(_)));
    assert!(matches!(h.receive(&older), Ours::Packet(_)));
}

#[test]
fn keys_agree_with_boringtun() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for _ in 0..16 {
        let k = PrivateKey::generate(&mut rng);
        let bt = x25519::StaticSecret::from(*k.to_bytes());
        assert_eq!(x25519::PublicKey::from(&bt).as_bytes(), k.public_key().as_bytes());
        let text = k.public_key().to_string();
        let parsed: PublicKey = text.parse().unwrap();
        assert_eq!(parsed, k.public_key());
    }
}

#[test]
fn a_batch_sealed_under_one_reservation_opens_at_boringtun_in_any_order() {
    let mut h = Harness::new(12, None, None);
    h.we_initiate();
    let now = h.now();
    // 64 packets in one buffer, each with its header room and tail room,
    // sealed under one counter reservation — as a worker seals a batch.
    let stride = HEADROOM + 1400 + TAILROOM;
    let mut buf = vec![0u8; 64 * stride];
    let packets: Vec<Vec<u8>> = (0..64).map(|i| ipv4(OUR_POD, THEIR_POD, 1400 - i, i as u8)).collect();
    let mut lens = Vec::new();
    {
        let ring = h.peer.keys();
        let session = ring.sending(now).unwrap();
        let mut batch = session.reserve(64, now).unwrap();
        for (i, p) in packets.iter().enumerate() {
            let slot = &mut buf[i * stride..(i + 1) * stride];
            slot[HEADROOM..][..p.len()].copy_from_slice(p);
            lens.push(batch.seal(slot, p.len()).unwrap());
        }
        assert_eq!(batch.remaining(), 0);
    }
    for i in (0..64).rev() {
        let d = &buf[i * stride..][..lens[i]];
        match h.bt_receive(d) {
            BtOut::Tunnel(got, _) => assert_eq!(got, packets[i]),
            other => panic!("packet {i}: {other:?}"),
        }
    }
}
