//! The primitives of the whitepaper (§5.4), each a thin wrapper over a
//! reviewed crate — nothing here implements a cipher, a hash or a curve:
//!
//! - `HASH` = BLAKE2s-256 and `MAC(key, input)` = keyed BLAKE2s-128
//!   (RFC 7693; the `blake2` crate);
//! - `HMAC` = HMAC (RFC 2104) over BLAKE2s-256 with its 64-byte block (the
//!   `hmac` crate), and `KDF1..3` = HKDF (RFC 5869) built from it exactly
//!   as §5.4 writes it out;
//! - `AEAD` = ChaCha20-Poly1305 (RFC 8439) with WireGuard's nonce: 32 zero
//!   bits, then the 64-bit counter little-endian (`ring`: its
//!   assembly was measured faster than RustCrypto's, bench/wireguard.rs);
//! - `XAEAD` = XChaCha20-Poly1305 for cookie replies (RustCrypto's
//!   `chacha20poly1305`; `ring` has no XChaCha);
//! - `DH` = X25519 (RFC 7748; `x25519-dalek`), refusing a result of all
//!   zeros (a low-order peer point), as wireguard-go and the kernel do.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::SimpleHmac;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::wire::wireguard::{MAC_LEN, TAG_LEN};

/// Output of `HASH` and of `HMAC`, and the size of every symmetric key.
pub(crate) const HASH_LEN: usize = 32;

/// A 32-byte secret that is wiped when dropped.
pub(crate) type Secret = Zeroizing<[u8; HASH_LEN]>;

/// An AEAD open failed: the ciphertext, its tag or the associated data
/// were not what the key sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadError;

/// A Diffie-Hellman result of all zeros: the peer's point has a small
/// order, so the "shared" secret is known to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WeakPoint;

/// `HASH(parts[0] || parts[1] || ...)`: BLAKE2s-256.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// `HMAC(key, parts[0] || ...)` with BLAKE2s-256.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> Secret {
    let mut m = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        Update::update(&mut m, p);
    }
    Zeroizing::new(m.finalize_fixed().into())
}

/// `KDF1(key, input)`: τ1 of HKDF with BLAKE2s.
pub(crate) fn kdf1(key: &[u8; HASH_LEN], input: &[u8]) -> Secret {
    let prk = hmac(key, &[input]);
    hmac(&prk[..], &[&[1]])
}

/// `KDF2(key, input)`: τ1, τ2.
pub(crate) fn kdf2(key: &[u8; HASH_LEN], input: &[u8]) -> (Secret, Secret) {
    let prk = hmac(key, &[input]);
    let t1 = hmac(&prk[..], &[&[1]]);
    let t2 = hmac(&prk[..], &[&t1[..], &[2]]);
    (t1, t2)
}

/// `KDF3(key, input)`: τ1, τ2, τ3.
pub(crate) fn kdf3(key: &[u8; HASH_LEN], input: &[u8]) -> (Secret, Secret, Secret) {
    let prk = hmac(key, &[input]);
    let t1 = hmac(&prk[..], &[&[1]]);
    let t2 = hmac(&prk[..], &[&t1[..], &[2]]);
    let t3 = hmac(&prk[..], &[&t2[..], &[3]]);
    (t1, t2, t3)
}

/// `MAC(key, input)`: keyed BLAKE2s with a 16-byte output (`key` is 32
/// bytes for mac1 and cookies' secrets, 16 for a cookie keying mac2).
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut m = Blake2sMac::<U16>::new_from_slice(key).expect("BLAKE2s takes keys up to 32 bytes");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// Compares two MACs in constant time.
pub(crate) fn mac_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    bool::from(a.ct_eq(b))
}

/// WireGuard's 96-bit nonce: 32 zero bits, the counter little-endian.
#[inline]
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// A ChaCha20-Poly1305 key, ready to seal or open many messages.
pub(crate) struct AeadKey(LessSafeKey);

impl AeadKey {
    pub(crate) fn new(key: &[u8; HASH_LEN]) -> AeadKey {
        AeadKey(LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte ChaCha20-Poly1305 key")))
    }

    /// Encrypts `in_out` in place under `counter`; returns the tag.
    #[inline]
    pub(crate) fn seal(&self, counter: u64, aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), in_out)
            .expect("ChaCha20-Poly1305 seals any length WireGuard uses");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `in_out` in place if `tag` authenticates it under `counter`
    /// and `aad`. On failure the contents of `in_out` are unspecified.
    #[inline]
    pub(crate) fn open(&self, counter: u64, aad: &[u8], in_out: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), AeadError> {
        self.0.open_in_place_separate_tag(nonce(counter), Aad::from(aad), Tag::from(*tag), in_out, 0..).map(|_| ()).map_err(|_| AeadError)
    }
}

/// `AEAD(key, 0, plaintext, aad)` of the handshake: `out` gets the
/// ciphertext and the tag (`plaintext.len() + 16` bytes).
pub(crate) fn seal_once(key: &[u8; HASH_LEN], aad: &[u8], plaintext: &[u8], out: &mut [u8]) {
    let (body, tag) = out.split_at_mut(plaintext.len());
    body.copy_from_slice(plaintext);
    tag.copy_from_slice(&AeadKey::new(key).seal(0, aad, body));
}

/// The inverse of [`seal_once`]: `out` gets the plaintext
/// (`ciphertext.len() - 16` bytes).
pub(crate) fn open_once(key: &[u8; HASH_LEN], aad: &[u8], ciphertext: &[u8], out: &mut [u8]) -> Result<(), AeadError> {
    let split = ciphertext.len().checked_sub(TAG_LEN).ok_or(AeadError)?;
    let (body, tag) = ciphertext.split_at(split);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| AeadError)?;
    out.copy_from_slice(body);
    AeadKey::new(key).open(0, aad, out, tag)
}

/// `XAEAD(key, nonce, cookie, aad)`: the encrypted cookie of a reply.
pub(crate) fn xseal_cookie(key: &[u8; HASH_LEN], nonce: &[u8; 24], aad: &[u8], cookie: &[u8; MAC_LEN]) -> [u8; MAC_LEN + TAG_LEN] {
    let mut out = [0u8; MAC_LEN + TAG_LEN];
    out[..MAC_LEN].copy_from_slice(cookie);
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut out[..MAC_LEN])
        .expect("XChaCha20-Poly1305 seals 16 bytes");
    out[MAC_LEN..].copy_from_slice(&tag);
    out
}

/// Opens the encrypted cookie of a reply.
pub(crate) fn xopen_cookie(
    key: &[u8; HASH_LEN],
    nonce: &[u8; 24],
    aad: &[u8],
    sealed: &[u8; MAC_LEN + TAG_LEN],
) -> Result<[u8; MAC_LEN], AeadError> {
    let mut cookie = [0u8; MAC_LEN];
    cookie.copy_from_slice(&sealed[..MAC_LEN]);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut cookie, sealed[MAC_LEN..].into())
        .map_err(|_| AeadError)?;
    Ok(cookie)
}

/// `DH(private, public)`: X25519, refusing a non-contributory result.
pub(crate) fn dh(private: &StaticSecret, public: &[u8; 32]) -> Result<Secret, WeakPoint> {
    let shared = private.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(WeakPoint);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn blake2s_matches_rfc7693() {
        // RFC 7693 appendix B: BLAKE2s-256("abc").
        assert_eq!(hash(&[b"abc"]).to_vec(), hex("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"));
        assert_eq!(hash(&[b"a", b"bc"]), hash(&[b"abc"]));
    }

    #[test]
    fn construction_constants_match_the_whitepaper() {
        // Ci = HASH(CONSTRUCTION), Hi = HASH(Ci || IDENTIFIER): wireguard-go
        // and boringtun hard-code the chaining key as these bytes.
        let ck = hash(&[b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"]);
        assert_eq!(
            ck,
            [
                96, 226, 109, 174, 243, 39, 239, 192, 46, 195, 53, 226, 160, 37, 210, 208, 22, 235, 66, 6, 248, 114, 119, 245, 45, 56, 209,
                152, 139, 120, 205, 54
            ]
        );
    }

    #[test]
    fn hmac_is_rfc2104_over_blake2s() {
        // HMAC written out with the 64-byte block, as RFC 2104 defines it.
        let key = [0x0bu8; 32];
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&key);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = hash(&[&ipad, b"Hi There"]);
        let want = hash(&[&opad, &inner]);
        assert_eq!(*hmac(&key, &[b"Hi ", b"There"]), want);
    }

    #[test]
    fn kdf_outputs_chain() {
        let key = [7u8; 32];
        let (a1, a2) = kdf2(&key, b"input");
        let (b1, b2, b3) = kdf3(&key, b"input");
        assert_eq!((*a1, *a2), (*b1, *b2));
        assert_eq!(*kdf1(&key, b"input"), *a1);
        assert_ne!(*b3, *b2);
        let prk = hmac(&key, &[b"input"]);
        assert_eq!(*b3, *hmac(&prk[..], &[&b2[..], &[3]]));
    }

    #[test]
    fn chacha20poly1305_round_trip_and_tamper() {
        // Exact outputs are checked by the Noise test vectors (noise.rs)
        // and against boringtun (tests/wireguard_boringtun.rs).
        let key = AeadKey::new(&[0x80; 32]);
        let mut buf = *b"Ladies and Gentlemen of the class of '99";
        let tag = key.seal(0x4746_4544_4342_4140, b"aad", &mut buf);
        assert_ne!(&buf[..], b"Ladies and Gentlemen of the class of '99");
        let mut copy = buf;
        assert!(key.open(0x4746_4544_4342_4140, b"aad", &mut copy, &tag).is_ok());
        assert_eq!(&copy[..], b"Ladies and Gentlemen of the class of '99");
        let mut copy = buf;
        assert_eq!(key.open(1, b"aad", &mut copy, &tag), Err(AeadError));
        let mut copy = buf;
        assert_eq!(key.open(0x4746_4544_4342_4140, b"aaD", &mut copy, &tag), Err(AeadError));
    }

    #[test]
    fn xchacha_cookie_round_trip() {
        let key = [3u8; 32];
        let nonce = [9u8; 24];
        let sealed = xseal_cookie(&key, &nonce, b"mac1", &[5; 16]);
        assert_eq!(xopen_cookie(&key, &nonce, b"mac1", &sealed), Ok([5; 16]));
        assert_eq!(xopen_cookie(&key, &nonce, b"mac2", &sealed), Err(AeadError));
        let mut bad = sealed;
        bad[0] ^= 1;
        assert_eq!(xopen_cookie(&key, &nonce, b"mac1", &bad), Err(AeadError));
    }

    #[test]
    fn dh_refuses_low_order_points() {
        let private = StaticSecret::from([0x42; 32]);
        assert_eq!(dh(&private, &[0; 32]), Err(WeakPoint));
        // A point of order 8 (RFC 7748 §6.1's list, as libsodium's blocklist).
        let mut p = hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        assert_eq!(dh(&private, p.as_slice().try_into().unwrap()), Err(WeakPoint));
        p = hex("0900000000000000000000000000000000000000000000000000000000000000");
        assert!(dh(&private, p.as_slice().try_into().unwrap()).is_ok());
    }
}
