//! A WireGuard responder (`wireguard::Node`, as B) fed arbitrary datagrams
//! in arbitrary order and timing, mixed with genuine messages from its peer
//! A and tampered copies of them: it never panics, and it never accepts
//! what A did not send.
//!
//! - An initiation B answers (`HandshakeOutcome::Response`) is one A made,
//!   byte for byte before mac2 (mac2 is only checked under load), and B
//!   answers each of A's initiations at most once (replay protection).
//! - A cookie reply comes only under load. B completes a handshake
//!   (`Established`) only with a response A made to B's own initiation,
//!   byte for byte before mac2, once; B takes no cookie (A is never under
//!   load here).
//! - A transport datagram B opens and accepts is one A sealed, byte for
//!   byte, and each counter is accepted at most once; its plaintext is
//!   what A sealed.
//!
//! Input: byte 0 = flags (bit 0: B under load; bit 1: a preshared key),
//! then records until the input ends: a mode byte, a delay byte
//! (milliseconds × 8 added to the clock before delivery), a big-endian u16
//! length and that many bytes. Modes (low 3 bits):
//! 0. the bytes as a datagram;
//! 1. the bytes with a valid mac1 for B (and mac2 zeroed) put in their last
//!    32 bytes, so the Noise code behind mac1 is reached;
//! 2. a new genuine initiation from A, XORed with the bytes (repeated
//!    over its length), mac1 recomputed when bit 3 of the mode is set;
//! 3. A's latest genuine initiation again (a replay), or a new one;
//! 4. a genuine transport datagram from A on its current session, the
//!    bytes as its plaintext; with bit 3 of the mode, one byte of the
//!    datagram (at the second byte's value) XORed with the first byte;
//! 5. the last genuine transport datagram again (a replay);
//! 6. B's last response, delivered to A (A completes the handshake and
//!    can then seal transport data for mode 4);
//! 7. B initiates (when its rate limit allows), A answers, and A's
//!    response reaches B XORed with the bytes (mac1 recomputed with bit 3).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use encapd::wire::wireguard::{INITIATION_LEN, MessageType, Transport, message_type};
use encapd::wireguard::session::{HEADROOM, TAILROOM};
use encapd::wireguard::{HandshakeOutcome, Limits, Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey, PublicKey, Slot};

use crate::Records;

fn node(seed: u8, now: Instant) -> Node {
    let key = PrivateKey::from_bytes([seed; 32]);
    Node::new(
        NodeConfig { private_key: key, limits: Limits::default(), padding_mtu: 1420 },
        now,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

/// mac1 of `msg` for the receiver `to` (as the whitepaper defines it,
/// through the public constructions only: a genuine message's mac1 is
/// reproduced by stamping it onto a copy).
fn restamp(msg: &mut [u8], to: &PublicKey) {
    use blake2::digest::consts::U16;
    use blake2::digest::{FixedOutput, KeyInit, Update};
    use blake2::{Blake2s256, Blake2sMac, Digest};
    let n = msg.len();
    if n < 32 {
        return;
    }
    let key: [u8; 32] = Blake2s256::new().chain_update(b"mac1----").chain_update(to.as_bytes()).finalize().into();
    let mut mac = Blake2sMac::<U16>::new_from_slice(&key).unwrap();
    Update::update(&mut mac, &msg[..n - 32]);
    let mac1: [u8; 16] = mac.finalize_fixed().into();
    msg[n - 32..n - 16].copy_from_slice(&mac1);
    msg[n - 16..].fill(0);
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(flags));
    let t0 = Instant::now();
    let a = node(1, t0);
    let b = node(2, t0);
    let psk = (flags & 2 != 0).then(|| PresharedKey::from_bytes([7; 32]));
    let mut cfg = PeerConfig::new(*b.public_key());
    cfg.preshared_key = psk.clone();
    let b_at_a = a.add_peer(cfg, &mut rng).unwrap();
    let mut cfg = PeerConfig::new(*a.public_key());
    cfg.preshared_key = psk;
    let a_at_b = b.add_peer(cfg, &mut rng).unwrap();
    let under_load = flags & 1 != 0;
    b.set_under_load(under_load);
    let a_addr: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let b_addr: SocketAddr = "198.18.0.2:51820".parse().unwrap();

    // What A really sent, and what B accepted.
    let mut genuine_initiations: Vec<[u8; INITIATION_LEN]> = Vec::new();
    let mut answered: HashSet<[u8; 132]> = HashSet::new();
    let mut genuine_transport: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut accepted_counters: HashSet<(u32, u64)> = HashSet::new();
    let mut last_response: Option<[u8; 92]> = None;
    let mut genuine_responses: Vec<[u8; 92]> = Vec::new();
    let mut completed: HashSet<[u8; 76]> = HashSet::new();

    let mut now = t0;
    let mut r = Records(rest);
    while let (Some(mode), Some(delay), Some(len)) = (r.byte(), r.byte(), r.u16()) {
        let bytes = r.bytes(usize::from(len));
        now += Duration::from_millis(u64::from(delay) * 8);
        let datagram: Vec<u8> = match mode & 7 {
            0 => bytes.to_vec(),
            1 => {
                let mut d = bytes.to_vec();
                restamp(&mut d, b.public_key());
                d
            }
            2 | 3 => {
                let fresh = mode & 7 == 2 || genuine_initiations.is_empty();
                if fresh {
                    // A sends at most one initiation per REKEY_TIMEOUT:
                    // move A's view of time on as far as it needs.
                    now += Limits::PROTOCOL.rekey_timeout;
                    if let Some(init) = a.send_initiation(&b_at_a, now, &mut rng) {
                        genuine_initiations.push(init);
                    }
                }
                let Some(mut d) = genuine_initiations.last().map(|m| m.to_vec()) else { continue };
                if mode & 7 == 2 && !bytes.is_empty() {
                    for (i, x) in d.iter_mut().enumerate() {
                        *x ^= bytes[i % bytes.len()];
                    }
                    if mode & 8 != 0 {
                        restamp(&mut d, b.public_key());
                    }
                }
                d
            }
            4 => {
                let ring = b_at_a.keys();
                let Some(session) = ring.sending(now) else { continue };
                let payload = bytes;
                let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
                buf[HEADROOM..][..payload.len()].copy_from_slice(payload);
                let Ok(mut batch) = session.reserve(1, now) else { continue };
                let Ok(n) = batch.seal(&mut buf, payload.len()) else { continue };
                buf.truncate(n);
                // What B must read back: the plaintext and its zero padding.
                let mut plain = payload.to_vec();
                plain.resize(n - 32, 0);
                genuine_transport.push((buf.clone(), plain));
                if let (Some(&pos), Some(&x)) = (bytes.get(1), bytes.first())
                    && mode & 8 != 0
                {
                    let at = usize::from(pos) % buf.len();
                    buf[at] ^= x;
                }
                buf
            }
            5 => match genuine_transport.last() {
                Some((d, _)) => d.clone(),
                None => continue,
            },
            6 => {
                if let Some(resp) = last_response.take() {
                    let _ = a.handle_handshake(&resp, b_addr, now, &mut rng);
                }
                continue;
            }
            _ => {
                let Some(init) = b.send_initiation(&a_at_b, now, &mut rng) else { continue };
                let Ok(HandshakeOutcome::Response { message, .. }) = a.handle_handshake(&init, b_addr, now, &mut rng) else { continue };
                genuine_responses.push(message);
                let mut d = message.to_vec();
                if !bytes.is_empty() {
                    for (i, x) in d.iter_mut().enumerate() {
                        *x ^= bytes[i % bytes.len()];
                    }
                    if mode & 8 != 0 {
                        restamp(&mut d, a.public_key());
                    }
                }
                d
            }
        };

        let mut delivery = Delivery {
            genuine_initiations: &genuine_initiations,
            answered: &mut answered,
            genuine_transport: &genuine_transport,
            accepted_counters: &mut accepted_counters,
            last_response: &mut last_response,
            genuine_responses: &genuine_responses,
            completed: &mut completed,
        };
        deliver_to_b(&b, &datagram, a_addr, now, &mut rng, under_load, &mut delivery);
    }
    // B's sessions belong to A, the only peer.
    let ring = a_at_b.keys();
    for s in [&ring.current, &ring.next].into_iter().flatten() {
        assert_eq!(s.peer(), a.public_key());
    }
}

struct Delivery<'a> {
    genuine_initiations: &'a [[u8; INITIATION_LEN]],
    answered: &'a mut HashSet<[u8; 132]>,
    genuine_transport: &'a [(Vec<u8>, Vec<u8>)],
    accepted_counters: &'a mut HashSet<(u32, u64)>,
    last_response: &'a mut Option<[u8; 92]>,
    genuine_responses: &'a [[u8; 92]],
    completed: &'a mut HashSet<[u8; 76]>,
}

fn deliver_to_b(b: &Node, datagram: &[u8], src: SocketAddr, now: Instant, rng: &mut ChaCha20Rng, under_load: bool, d: &mut Delivery<'_>) {
    if message_type(datagram) == Ok(MessageType::Transport) {
        let mut buf = datagram.to_vec();
        let Ok(index) = Transport::new_checked(&buf[..]).map(|t| t.receiver()) else { return };
        let Some(rx) = b.lookup(index) else { return };
        if rx.session.is_expired(now) {
            return;
        }
        let Ok(opened) = rx.session.open(&mut buf) else { return };
        let accepted = rx.session.lock_replay().accept(opened.counter);
        if !accepted {
            return;
        }
        // Accepted: it must be a datagram A sealed, opened to what A sealed,
        // and a counter not accepted before.
        let (_, plain) = d
            .genuine_transport
            .iter()
            .find(|(g, _)| g[..] == datagram[..])
            .unwrap_or_else(|| panic!("B accepted a transport datagram A never sent: {datagram:02x?}"));
        assert_eq!(&buf[HEADROOM..HEADROOM + opened.len], &plain[..], "plaintext differs from what A sealed");
        assert!(d.accepted_counters.insert((index, opened.counter)), "counter {} accepted twice", opened.counter);
        rx.peer.note_transport_received(now, opened.len > 0);
        if rx.slot == Slot::Next {
            b.confirm(&rx.peer, &rx.session, now);
        }
        return;
    }
    match b.handle_handshake(datagram, src, now, rng) {
        Ok(HandshakeOutcome::Response { message, .. }) => {
            let covered: [u8; 132] = datagram[..132].try_into().expect("a response answers a 148-byte initiation");
            assert!(
                d.genuine_initiations.iter().any(|g| g[..132] == covered[..]),
                "B answered an initiation A never made: {datagram:02x?}"
            );
            if under_load {
                assert!(d.genuine_initiations.iter().any(|g| g[..] == datagram[..]), "under load, mac2 must be A's");
            }
            assert!(d.answered.insert(covered), "B answered the same initiation twice");
            *d.last_response = Some(message);
        }
        Ok(HandshakeOutcome::CookieReply(_)) => assert!(under_load, "a cookie reply while not under load"),
        Ok(HandshakeOutcome::Established { .. }) => {
            let covered: [u8; 76] = datagram[..76].try_into().expect("a 92-byte response");
            assert!(
                d.genuine_responses.iter().any(|g| g[..76] == covered[..]),
                "B completed a handshake with a forged response: {datagram:02x?}"
            );
            assert!(d.completed.insert(covered), "B completed a handshake twice with one response");
        }
        Ok(other) => panic!("B took {other:?}, but A is never under load"),
        Err(_) => {}
    }
}
