//! mac1, mac2 and cookie replies (whitepaper §5.3, §5.4.4, §5.4.7): the
//! DoS defence in front of the handshake's Diffie-Hellman work.
//!
//! - **mac1** on every handshake message is `MAC(HASH("mac1----" ||
//!   receiver's public key), message before mac1)`: a message that does
//!   not know the receiver's public key is dropped before any DH.
//! - **Under load** (the caller decides when: [`super::Node::hold_under_load`],
//!   which encapd's workers call from `super::load`; or [`super::Node::set_under_load`])
//!   a message must also carry a valid **mac2** = `MAC(cookie, message
//!   before mac2)`, where the cookie is `MAC(secret, source IP || port)`
//!   with a secret that changes every two minutes. Without one, the sender
//!   gets a **cookie reply** instead of an answer: the cookie, encrypted
//!   with XChaCha20-Poly1305 under `HASH("cookie--" || our public key)`
//!   and bound to the message's mac1 as associated data — so only the real
//!   sender can use it, and it proves the sender receives at that address.
//!
//! [`CookieChecker`] is the responder's half (one per node), [`CookieJar`]
//! the initiator's (one per peer). The source address is written as its IP
//! (4 or 16 bytes) and port (big-endian), as the Linux implementation does;
//! only this node ever recomputes its own cookies, so peers need not agree.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::crypto::{self, HASH_LEN, Secret};
use crate::wire::wireguard::{COOKIE_REPLY_LEN, CookieReply, MAC_LEN};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// The MAC of the sender's address under the current secret.
fn address_mac(secret: &[u8; HASH_LEN], src: &SocketAddr) -> [u8; MAC_LEN] {
    let port = src.port().to_be_bytes();
    match src.ip() {
        IpAddr::V4(a) => crypto::mac(secret, &[&a.octets(), &port]),
        IpAddr::V6(a) => crypto::mac(secret, &[&a.octets(), &port]),
    }
}

/// The responder's half: checks mac1 and mac2 of messages sent to us and
/// makes cookie replies.
pub(crate) struct CookieChecker {
    mac1_key: [u8; HASH_LEN],
    cookie_key: [u8; HASH_LEN],
    secret: Mutex<CookieSecret>,
    refresh: Duration,
}

struct CookieSecret {
    value: Secret,
    /// When `value` was drawn; `None` before the first reply.
    born: Option<Instant>,
}

impl CookieChecker {
    /// For a node whose public key is `local_public`.
    pub(crate) fn new(local_public: &[u8; 32], refresh: Duration) -> CookieChecker {
        CookieChecker {
            mac1_key: crypto::hash(&[LABEL_MAC1, local_public]),
            cookie_key: crypto::hash(&[LABEL_COOKIE, local_public]),
            secret: Mutex::new(CookieSecret { value: Zeroizing::new([0; HASH_LEN]), born: None }),
            refresh,
        }
    }

    /// mac1 of a message to us (`covered`: the bytes before mac1).
    pub(crate) fn mac1_ok(&self, covered: &[u8], mac1: &[u8; MAC_LEN]) -> bool {
        crypto::mac_eq(&crypto::mac(&self.mac1_key, &[covered]), mac1)
    }

    /// mac2 of a message to us from `src` (`covered`: the bytes before
    /// mac2), under a secret younger than the refresh time.
    pub(crate) fn mac2_ok(&self, covered: &[u8], mac2: &[u8; MAC_LEN], src: &SocketAddr, now: Instant) -> bool {
        let cookie = {
            let s = self.secret.lock().unwrap_or_else(PoisonError::into_inner);
            match s.born {
                Some(born) if now.saturating_duration_since(born) < self.refresh => address_mac(&s.value, src),
                _ => return false,
            }
        };
        crypto::mac_eq(&crypto::mac(&cookie, &[covered]), mac2)
    }

    /// The cookie reply to a message with sender index `receiver` and
    /// `mac1`, from `src`. Draws a new secret when the last one is older
    /// than the refresh time.
    pub(crate) fn reply<R: RngCore + CryptoRng>(
        &self,
        receiver: u32,
        mac1: &[u8; MAC_LEN],
        src: &SocketAddr,
        now: Instant,
        rng: &mut R,
    ) -> [u8; COOKIE_REPLY_LEN] {
        let cookie = {
            let mut s = self.secret.lock().unwrap_or_else(PoisonError::into_inner);
            if s.born.is_none_or(|born| now.saturating_duration_since(born) >= self.refresh) {
                rng.fill_bytes(&mut s.value[..]);
                s.born = Some(now);
            }
            address_mac(&s.value, src)
        };
        let mut out = [0u8; COOKIE_REPLY_LEN];
        let mut reply = CookieReply::new_unchecked(&mut out[..]);
        reply.set_message_type();
        reply.set_receiver(receiver);
        rng.fill_bytes(reply.nonce_mut());
        let nonce = *reply.nonce();
        *reply.encrypted_cookie_mut() = crypto::xseal_cookie(&self.cookie_key, &nonce, mac1, &cookie);
        out
    }
}

/// The initiator's half, for one peer: the MACs on messages to that peer,
/// and the cookie it sent us last.
pub(crate) struct CookieJar {
    mac1_key: [u8; HASH_LEN],
    cookie_key: [u8; HASH_LEN],
    /// The cookie and when it arrived.
    cookie: Option<([u8; MAC_LEN], Instant)>,
    /// mac1 of the last handshake message we sent: a cookie reply must be
    /// bound to it.
    last_mac1: Option<[u8; MAC_LEN]>,
    refresh: Duration,
}

impl CookieJar {
    pub(crate) fn new(peer_public: &[u8; 32], refresh: Duration) -> CookieJar {
        CookieJar {
            mac1_key: crypto::hash(&[LABEL_MAC1, peer_public]),
            cookie_key: crypto::hash(&[LABEL_COOKIE, peer_public]),
            cookie: None,
            last_mac1: None,
            refresh,
        }
    }

    /// Writes mac1 and mac2 (a cookie younger than the refresh time, else
    /// zeros) into the last 32 bytes of a handshake message.
    pub(crate) fn stamp(&mut self, msg: &mut [u8], now: Instant) {
        let mac1_at = msg.len() - 2 * MAC_LEN;
        let mac2_at = msg.len() - MAC_LEN;
        let mac1 = crypto::mac(&self.mac1_key, &[&msg[..mac1_at]]);
        msg[mac1_at..mac2_at].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let mac2 = match self.cookie {
            Some((cookie, at)) if now.saturating_duration_since(at) < self.refresh => crypto::mac(&cookie, &[&msg[..mac2_at]]),
            _ => [0; MAC_LEN],
        };
        msg[mac2_at..].copy_from_slice(&mac2);
    }

    /// Takes a cookie reply from this peer; false when it does not decrypt
    /// against the mac1 we sent last (forged, stale, or for another message).
    pub(crate) fn consume(&mut self, reply: &CookieReply<&[u8]>, now: Instant) -> bool {
        let Some(mac1) = self.last_mac1 else { return false };
        match crypto::xopen_cookie(&self.cookie_key, reply.nonce(), &mac1, reply.encrypted_cookie()) {
            Ok(cookie) => {
                self.cookie = Some((cookie, now));
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;
    use crate::wire::wireguard::{INITIATION_LEN, Initiation};

    const REFRESH: Duration = Duration::from_secs(120);

    fn message() -> [u8; INITIATION_LEN] {
        let mut m = [0x5au8; INITIATION_LEN];
        m[..4].copy_from_slice(&[1, 0, 0, 0]);
        m
    }

    #[test]
    fn mac1_binds_the_receiver_key_and_the_bytes() {
        let responder = [7u8; 32];
        let checker = CookieChecker::new(&responder, REFRESH);
        let mut jar = CookieJar::new(&responder, REFRESH);
        let mut m = message();
        let now = Instant::now();
        jar.stamp(&mut m, now);
        let v = Initiation::new_checked(&m[..]).unwrap();
        assert!(checker.mac1_ok(v.mac1_input(), v.mac1()));
        assert_eq!(v.mac2(), &[0; 16], "no cookie yet: mac2 is zero");
        let other = CookieChecker::new(&[8u8; 32], REFRESH);
        assert!(!other.mac1_ok(v.mac1_input(), v.mac1()));
        let mut bad = m;
        bad[50] ^= 1;
        let v = Initiation::new_checked(&bad[..]).unwrap();
        assert!(!checker.mac1_ok(v.mac1_input(), v.mac1()));
    }

    #[test]
    fn cookie_round_trip_makes_mac2_valid_for_that_address_only() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let responder = [7u8; 32];
        let checker = CookieChecker::new(&responder, REFRESH);
        let mut jar = CookieJar::new(&responder, REFRESH);
        let src: SocketAddr = "198.18.0.2:51820".parse().unwrap();
        let now = Instant::now();
        let mut m = message();
        jar.stamp(&mut m, now);
        let v = Initiation::new_checked(&m[..]).unwrap();
        assert!(!checker.mac2_ok(v.mac2_input(), v.mac2(), &src, now));
        let reply = checker.reply(v.sender(), v.mac1(), &src, now, &mut rng);
        let reply_view = CookieReply::new_checked(&reply[..]).unwrap();
        assert_eq!(reply_view.receiver(), v.sender());
        assert!(jar.consume(&reply_view, now));
        // The next message carries a mac2 the checker accepts from src only.
        let mut m2 = message();
        m2[4] = 9;
        jar.stamp(&mut m2, now + Duration::from_secs(1));
        let v2 = Initiation::new_checked(&m2[..]).unwrap();
        let later = now + Duration::from_secs(1);
        assert!(checker.mac2_ok(v2.mac2_input(), v2.mac2(), &src, later));
        assert!(!checker.mac2_ok(v2.mac2_input(), v2.mac2(), &"198.18.0.2:51821".parse().unwrap(), later));
        assert!(!checker.mac2_ok(v2.mac2_input(), v2.mac2(), &"198.18.0.3:51820".parse().unwrap(), later));
        // Once the secret is older than the refresh time, mac2 no longer counts.
        assert!(!checker.mac2_ok(v2.mac2_input(), v2.mac2(), &src, now + REFRESH));
        // And the jar stops using a cookie that old.
        let mut m3 = message();
        jar.stamp(&mut m3, now + REFRESH);
        assert_eq!(Initiation::new_checked(&m3[..]).unwrap().mac2(), &[0; 16]);
    }

    #[test]
    fn cookie_replies_must_match_the_last_mac1() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let responder = [7u8; 32];
        let checker = CookieChecker::new(&responder, REFRESH);
        let mut jar = CookieJar::new(&responder, REFRESH);
        let src: SocketAddr = "[fd00::2]:51820".parse().unwrap();
        let now = Instant::now();
        let reply = checker.reply(1, &[3; 16], &src, now, &mut rng);
        assert!(!jar.consume(&CookieReply::new_checked(&reply[..]).unwrap(), now), "nothing sent yet");
        let mut m = message();
        jar.stamp(&mut m, now);
        assert!(!jar.consume(&CookieReply::new_checked(&reply[..]).unwrap(), now), "bound to another mac1");
        let v = Initiation::new_checked(&m[..]).unwrap();
        let mut reply = checker.reply(1, v.mac1(), &src, now, &mut rng);
        reply[40] ^= 1;
        assert!(!jar.consume(&CookieReply::new_checked(&reply[..]).unwrap(), now), "tampered");
        // From a responder with another key.
        let stranger = CookieChecker::new(&[1u8; 32], REFRESH);
        let reply = stranger.reply(1, v.mac1(), &src, now, &mut rng);
        assert!(!jar.consume(&CookieReply::new_checked(&reply[..]).unwrap(), now));
    }
}
