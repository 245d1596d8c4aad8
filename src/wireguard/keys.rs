//! Keys as `wg` (wireguard-tools) writes them: 32 bytes in standard
//! base64 with padding, 44 characters ending in `=`; a private key from
//! [`PrivateKey::generate`] is clamped (RFC 7748 §5) exactly as
//! `wg genkey` clamps its random bytes, and a public key is X25519 of the
//! base point, as `wg pubkey` computes it. So keys made by either tool work
//! with the other (tests/wireguard_keys.rs runs both).
//!
//! Secrets never print: `Debug` of a private or preshared key is
//! `PrivateKey(..)`, and their bytes are wiped when dropped.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// Bytes in a key.
pub const KEY_LEN: usize = 32;
/// Characters of a key in base64.
pub const KEY_BASE64_LEN: usize = 44;

/// Why text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key is 44 characters of base64 ending in '=' (as `wg genkey` prints it), not {0} characters")]
    Length(usize),
    #[error("not a base64 key: {0}")]
    Base64(base64::DecodeError),
}

/// Decodes a key from its 44 base64 characters, as `wg` does: standard
/// alphabet, padded, the unused low bits of the last character zero.
pub fn decode_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    if text.len() != KEY_BASE64_LEN || !text.ends_with('=') {
        return Err(KeyError::Length(text.chars().count()));
    }
    // Room for what 44 characters could hold without padding (33 bytes);
    // with the '=' the engine checks, they hold 32 (31 with "==").
    let mut out = Zeroizing::new([0u8; KEY_LEN + 1]);
    let n = STANDARD.decode_slice(text, &mut out[..]).map_err(|e| match e {
        base64::DecodeSliceError::DecodeError(e) => KeyError::Base64(e),
        base64::DecodeSliceError::OutputSliceTooSmall => KeyError::Length(text.len()),
    })?;
    if n != KEY_LEN {
        return Err(KeyError::Base64(base64::DecodeError::InvalidPadding));
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&out[..KEY_LEN]);
    Ok(key)
}

/// Encodes a key as `wg` prints it.
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// RFC 7748 §5 `decodeScalar25519`'s clamping, which `wg genkey` applies
/// to its random bytes (X25519 applies it again, so it changes no public
/// key; it makes the stored key the one wg would store).
fn clamp(key: &mut [u8; KEY_LEN]) {
    key[0] &= 248;
    key[31] = (key[31] & 127) | 64;
}

/// A node's static private key.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A new random key, clamped as `wg genkey` makes them.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> PrivateKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut bytes[..]);
        clamp(&mut bytes);
        PrivateKey(StaticSecret::from(*bytes))
    }

    /// The key with these bytes (used as given; X25519 clamps when it
    /// multiplies, as `wg pubkey` does).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PrivateKey {
        PrivateKey(StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The key in base64, as `wg genkey` prints it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(encode_key(&self.0.to_bytes()))
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.0
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PrivateKey, KeyError> {
        let bytes = Zeroizing::new(decode_key(s)?);
        Ok(PrivateKey::from_bytes(*bytes))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A static public key: a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        decode_key(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_key(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An optional symmetric key mixed into the handshake (`wg genpsk`: 32
/// random bytes, not clamped).
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(Zeroizing<[u8; KEY_LEN]>);

impl PresharedKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PresharedKey {
        PresharedKey(Zeroizing::new(bytes))
    }

    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> PresharedKey {
        let mut key = PresharedKey::from_bytes([0; KEY_LEN]);
        rng.fill_bytes(&mut key.0[..]);
        key
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(encode_key(&self.0))
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PresharedKey, KeyError> {
        decode_key(s).map(PresharedKey::from_bytes)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

/// Reads a key the way `wg pubkey` reads it from stdin: the 44 characters
/// first, then nothing but whitespace (a trailing newline, as `wg genkey`
/// prints one).
pub fn key_from_text(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let trimmed = text.trim_end_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    Ok(Zeroizing::new(decode_key(trimmed)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn rfc7748_public_keys() {
        // RFC 7748 §6.1: Alice's and Bob's key pairs.
        let alice: PrivateKey = encode_key(&hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).parse().unwrap();
        assert_eq!(alice.public_key().as_bytes(), &hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"));
        let bob = PrivateKey::from_bytes(hex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
        assert_eq!(bob.public_key().as_bytes(), &hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"));
    }

    #[test]
    fn generated_keys_are_clamped_and_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for _ in 0..64 {
            let k = PrivateKey::generate(&mut rng);
            let b = k.to_bytes();
            assert_eq!(b[0] & 7, 0);
            assert_eq!(b[31] & 0xc0, 0x40);
            let text = k.to_base64();
            assert_eq!(text.len(), 44);
            assert!(text.ends_with('='));
            let back: PrivateKey = text.parse().unwrap();
            assert_eq!(*back.to_bytes(), *b);
            assert_eq!(back.public_key(), k.public_key());
            let public: PublicKey = k.public_key().to_string().parse().unwrap();
            assert_eq!(public, k.public_key());
        }
    }

    #[test]
    fn clamping_changes_no_public_key() {
        let raw = [0xffu8; 32];
        let mut clamped = raw;
        clamp(&mut clamped);
        assert_ne!(raw, clamped);
        assert_eq!(PrivateKey::from_bytes(raw).public_key(), PrivateKey::from_bytes(clamped).public_key());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = encode_key(&[0x11; 32]);
        assert!(decode_key(&good).is_ok());
        assert_eq!(decode_key(&good[..43]), Err(KeyError::Length(43)));
        assert_eq!(decode_key(""), Err(KeyError::Length(0)));
        assert!(matches!(decode_key(&format!("{}A", &good[..43])), Err(KeyError::Length(44))));
        // Not the base64 alphabet.
        assert!(matches!(decode_key(&format!("!{}", &good[1..])), Err(KeyError::Base64(_))));
        // URL-safe alphabet: not what wg writes.
        let plus = encode_key(&[0xfb; 32]);
        assert!(plus.contains('+') || plus.contains('/'));
        assert!(matches!(decode_key(&plus.replace('+', "-").replace('/', "_")), Err(KeyError::Base64(_))));
        // Low bits of the last character set: not canonical, wg refuses it too.
        let mut odd = good.clone().into_bytes();
        odd[42] = b'F'; // '=' follows; 'F' = 5 has low bits 01
        assert!(matches!(decode_key(std::str::from_utf8(&odd).unwrap()), Err(KeyError::Base64(_))));
        // Multibyte text of 44 bytes is refused, not sliced.
        assert!(decode_key(&format!("{}é=", &good[..41])).is_err());
    }

    #[test]
    fn text_like_wg_pubkey_reads_it() {
        let good = encode_key(&[0x22; 32]);
        assert_eq!(*key_from_text(&format!("{good}\n")).unwrap(), [0x22; 32]);
        assert_eq!(*key_from_text(&format!("{good} \t\n\n")).unwrap(), [0x22; 32]);
        assert!(key_from_text(&format!(" {good}")).is_err());
        assert!(key_from_text(&format!("{good}x\n")).is_err());
        assert!(key_from_text(&format!("{good}\n{good}\n")).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let k = PrivateKey::from_bytes([1; 32]);
        assert_eq!(format!("{k:?}"), "PrivateKey(..)");
        assert_eq!(format!("{:?}", PresharedKey::from_bytes([1; 32])), "PresharedKey(..)");
        assert!(format!("{:?}", k.public_key()).starts_with("PublicKey("));
    }

    pub(crate) fn hex32(s: &str) -> [u8; 32] {
        let v: Vec<u8> = (0..64).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    }
}
