//! The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake (Noise rev. 34,
//! whitepaper §5.4.2–5.4.5), written as the Noise specification's
//! `SymmetricState` and the two messages of the pattern
//!
//! ```text
//! IKpsk2:
//!   <- s
//!   ...
//!   -> e, es, s, ss, {payload}        handshake initiation (payload: TAI64N)
//!   <- e, ee, se, psk, {payload}      handshake response (payload: empty)
//! ```
//!
//! The message functions take any prologue and payload, so the same code
//! that WireGuard runs (prologue "WireGuard v1 zx2c4 Jason@zx2c4.com", a
//! 12-byte timestamp, an empty response payload) is checked against the
//! published Noise test vectors for this exact protocol name (cacophony's,
//! with their own prologue and payloads; the tests at the bottom). Pure:
//! keys and ephemerals come in as arguments, nothing is stored.

use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::crypto::{self, AeadError, HASH_LEN, Secret, WeakPoint};
use crate::wire::wireguard::{KEY_LEN, TAG_LEN};

/// The protocol name: `HASH` of it is the initial chaining key.
pub(crate) const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's prologue.
pub(crate) const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Why a handshake message does not complete the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoiseError {
    /// An AEAD field did not open: a forged or corrupted message, or one
    /// encrypted to another key.
    Decrypt,
    /// A Diffie-Hellman result was all zeros (a low-order point).
    WeakPoint,
    /// The initiator's static key is not one the caller knows.
    UnknownPeer,
}

impl From<AeadError> for NoiseError {
    fn from(_: AeadError) -> Self {
        NoiseError::Decrypt
    }
}

impl From<WeakPoint> for NoiseError {
    fn from(_: WeakPoint) -> Self {
        NoiseError::WeakPoint
    }
}

/// Noise's `SymmetricState`: the chaining key `ck` and the transcript
/// hash `h`. Every `MixKey` in this pattern is followed by at most one
/// AEAD before the next, so the cipher key is returned by the mix and
/// always used with nonce 0, as WireGuard writes it.
#[derive(Clone)]
pub(crate) struct SymmetricState {
    pub(crate) ck: Secret,
    pub(crate) h: [u8; HASH_LEN],
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.h.zeroize();
    }
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)` then `MixHash(prologue)`. The
    /// name is longer than 32 bytes, so `h = ck = HASH(name)`.
    pub(crate) fn new(prologue: &[u8]) -> SymmetricState {
        let ck = crypto::hash(&[CONSTRUCTION]);
        let h = crypto::hash(&[&ck, prologue]);
        SymmetricState { ck: Zeroizing::new(ck), h }
    }

    /// WireGuard's starting state: its prologue and the responder's static
    /// key (the pattern's pre-message `<- s`).
    pub(crate) fn wireguard(responder_static: &[u8; KEY_LEN]) -> SymmetricState {
        let mut s = SymmetricState::new(IDENTIFIER);
        s.mix_hash(responder_static);
        s
    }

    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        self.h = crypto::hash(&[&self.h, data]);
    }

    /// `MixKey(input)`: the new chaining key, and the cipher key.
    pub(crate) fn mix_key(&mut self, input: &[u8]) -> Secret {
        let (ck, k) = crypto::kdf2(&self.ck, input);
        self.ck = ck;
        k
    }

    /// `MixKey(input)` where the cipher key it makes is replaced unused by
    /// the next mix (the `e` token of a psk pattern, `ee`, `se`): only the
    /// chaining key, as WireGuard writes it (`C := KDF1(C, input)`).
    fn mix_chain(&mut self, input: &[u8]) {
        self.ck = crypto::kdf1(&self.ck, input);
    }

    /// `MixKeyAndHash(psk)`.
    fn mix_key_and_hash(&mut self, psk: &[u8; KEY_LEN]) -> Secret {
        let (ck, t, k) = crypto::kdf3(&self.ck, psk);
        self.ck = ck;
        self.mix_hash(&t[..]);
        k
    }

    /// `EncryptAndHash(plaintext)` under `k`, nonce 0: `out` gets
    /// `plaintext.len() + 16` bytes.
    fn encrypt_and_hash(&mut self, k: &Secret, plaintext: &[u8], out: &mut [u8]) {
        crypto::seal_once(k, &self.h, plaintext, out);
        self.mix_hash(out);
    }

    /// `DecryptAndHash(ciphertext)` under `k`, nonce 0.
    fn decrypt_and_hash(&mut self, k: &Secret, ciphertext: &[u8], out: &mut [u8]) -> Result<(), AeadError> {
        crypto::open_once(k, &self.h, ciphertext, out)?;
        self.mix_hash(ciphertext);
        Ok(())
    }

    /// `Split()`: (initiator's sending key, responder's sending key).
    pub(crate) fn split(&self) -> (Secret, Secret) {
        crypto::kdf2(&self.ck, &[])
    }
}

/// The public key of a secret.
pub(crate) fn public_of(secret: &StaticSecret) -> [u8; KEY_LEN] {
    DalekPublic::from(secret).to_bytes()
}

/// What the initiator keeps between its message and the response.
pub(crate) struct InitiatorState {
    pub(crate) sym: SymmetricState,
    pub(crate) ephemeral: StaticSecret,
}

/// Writes `-> e, es, s, ss, {payload}` into `out` (32 + 48 +
/// `payload.len()` + 16 bytes). `static_static` is `DH(s_i, S_r)`, which
/// a caller precomputes per peer.
pub(crate) fn write_initiation(
    mut sym: SymmetricState,
    local_static_public: &[u8; KEY_LEN],
    remote_static: &[u8; KEY_LEN],
    static_static: &Secret,
    ephemeral: StaticSecret,
    payload: &[u8],
    out: &mut [u8],
) -> Result<InitiatorState, NoiseError> {
    let (e_out, rest) = out.split_at_mut(KEY_LEN);
    let (s_out, p_out) = rest.split_at_mut(KEY_LEN + TAG_LEN);
    // e
    let e_pub = public_of(&ephemeral);
    e_out.copy_from_slice(&e_pub);
    sym.mix_hash(&e_pub);
    sym.mix_chain(&e_pub);
    // es
    let k = sym.mix_key(&crypto::dh(&ephemeral, remote_static)?[..]);
    // s
    sym.encrypt_and_hash(&k, local_static_public, s_out);
    // ss
    let k = sym.mix_key(&static_static[..]);
    // payload
    sym.encrypt_and_hash(&k, payload, &mut p_out[..payload.len() + TAG_LEN]);
    Ok(InitiatorState { sym, ephemeral })
}

/// What the responder learned from an initiation.
pub(crate) struct ReadInitiation<P> {
    pub(crate) sym: SymmetricState,
    pub(crate) remote_ephemeral: [u8; KEY_LEN],
    pub(crate) remote_static: [u8; KEY_LEN],
    /// What `peer_for` returned for the initiator's static key.
    pub(crate) peer: P,
}

/// Reads `-> e, es, s, ss, {payload}` from `msg`, writing the payload into
/// `payload_out`. `peer_for` maps the decrypted static key to the caller's
/// peer and its precomputed `DH(s_r, S_i)`, or `None` for a stranger.
pub(crate) fn read_initiation<P>(
    mut sym: SymmetricState,
    local_static: &StaticSecret,
    msg: &[u8],
    payload_out: &mut [u8],
    peer_for: impl FnOnce(&[u8; KEY_LEN]) -> Option<(P, Secret)>,
) -> Result<ReadInitiation<P>, NoiseError> {
    let (e_in, rest) = msg.split_at(KEY_LEN);
    let (s_in, p_in) = rest.split_at(KEY_LEN + TAG_LEN);
    let mut remote_ephemeral = [0u8; KEY_LEN];
    remote_ephemeral.copy_from_slice(e_in);
    // e
    sym.mix_hash(&remote_ephemeral);
    sym.mix_chain(&remote_ephemeral);
    // es
    let k = sym.mix_key(&crypto::dh(local_static, &remote_ephemeral)?[..]);
    // s
    let mut remote_static = [0u8; KEY_LEN];
    sym.decrypt_and_hash(&k, s_in, &mut remote_static)?;
    let (peer, static_static) = peer_for(&remote_static).ok_or(NoiseError::UnknownPeer)?;
    // ss
    let k = sym.mix_key(&static_static[..]);
    // payload
    sym.decrypt_and_hash(&k, &p_in[..payload_out.len() + TAG_LEN], payload_out)?;
    Ok(ReadInitiation { sym, remote_ephemeral, remote_static, peer })
}

/// Writes `<- e, ee, se, psk, {payload}` into `out` (32 + `payload.len()`
/// + 16 bytes); returns the state for [`SymmetricState::split`].
pub(crate) fn write_response(
    mut sym: SymmetricState,
    remote_ephemeral: &[u8; KEY_LEN],
    remote_static: &[u8; KEY_LEN],
    ephemeral: &StaticSecret,
    psk: &[u8; KEY_LEN],
    payload: &[u8],
    out: &mut [u8],
) -> Result<SymmetricState, NoiseError> {
    let (e_out, p_out) = out.split_at_mut(KEY_LEN);
    // e
    let e_pub = public_of(ephemeral);
    e_out.copy_from_slice(&e_pub);
    sym.mix_hash(&e_pub);
    sym.mix_chain(&e_pub);
    // ee
    sym.mix_chain(&crypto::dh(ephemeral, remote_ephemeral)?[..]);
    // se
    sym.mix_chain(&crypto::dh(ephemeral, remote_static)?[..]);
    // psk
    let k = sym.mix_key_and_hash(psk);
    // payload
    sym.encrypt_and_hash(&k, payload, &mut p_out[..payload.len() + TAG_LEN]);
    Ok(sym)
}

/// Reads `<- e, ee, se, psk, {payload}` on the initiator's side.
pub(crate) fn read_response(
    state: &InitiatorState,
    local_static: &StaticSecret,
    psk: &[u8; KEY_LEN],
    msg: &[u8],
    payload_out: &mut [u8],
) -> Result<SymmetricState, NoiseError> {
    let mut sym = state.sym.clone();
    let (e_in, p_in) = msg.split_at(KEY_LEN);
    let mut remote_ephemeral = [0u8; KEY_LEN];
    remote_ephemeral.copy_from_slice(e_in);
    // e
    sym.mix_hash(&remote_ephemeral);
    sym.mix_chain(&remote_ephemeral);
    // ee
    sym.mix_chain(&crypto::dh(&state.ephemeral, &remote_ephemeral)?[..]);
    // se
    sym.mix_chain(&crypto::dh(local_static, &remote_ephemeral)?[..]);
    // psk
    let k = sym.mix_key_and_hash(psk);
    // payload
    sym.decrypt_and_hash(&k, &p_in[..payload_out.len() + TAG_LEN], payload_out)?;
    Ok(sym)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wireguard::crypto::AeadKey;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn key(s: &str) -> [u8; 32] {
        hex(s).try_into().unwrap()
    }

    /// cacophony's vector for Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s
    /// (the one in snow's tests/vectors/cacophony.txt): the handshake with
    /// fixed keys, its two messages, the handshake hash and four transport
    /// messages after `Split`.
    #[test]
    fn cacophony_ikpsk2_vector() {
        let prologue = hex("4a6f686e2047616c74");
        let psk = key("54686973206973206d7920417573747269616e20706572737065637469766521");
        let init_static = StaticSecret::from(key("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"));
        let init_ephemeral = StaticSecret::from(key("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"));
        let resp_static = StaticSecret::from(key("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"));
        let resp_ephemeral = StaticSecret::from(key("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b"));
        let resp_public = public_of(&resp_static);
        assert_eq!(resp_public, key("31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62"));
        let init_public = public_of(&init_static);

        let start = || {
            let mut s = SymmetricState::new(&prologue);
            s.mix_hash(&resp_public);
            s
        };

        // Message 1, initiator -> responder.
        let payload1 = hex("4c756477696720766f6e204d69736573");
        let mut msg1 = vec![0u8; 32 + 48 + payload1.len() + 16];
        let ss = crypto::dh(&init_static, &resp_public).unwrap();
        let init = write_initiation(start(), &init_public, &resp_public, &ss, init_ephemeral, &payload1, &mut msg1).unwrap();
        assert_eq!(
            msg1,
            hex(
                "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944001e21de9f98ddd8e2ad57527207feb56253c9c94a9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab5000980c84831215f2441eba616548e832985464cf17e51ee93109008399a21f7e13f"
            )
        );
        let mut got1 = vec![0u8; payload1.len()];
        let read = read_initiation(start(), &resp_static, &msg1, &mut got1, |s| {
            assert_eq!(s, &init_public);
            Some(((), crypto::dh(&resp_static, s).unwrap()))
        })
        .unwrap();
        assert_eq!(got1, payload1);

        // Message 2, responder -> initiator.
        let payload2 = hex("4d757272617920526f746862617264");
        let mut msg2 = vec![0u8; 32 + payload2.len() + 16];
        let resp_sym =
            write_response(read.sym, &read.remote_ephemeral, &read.remote_static, &resp_ephemeral, &psk, &payload2, &mut msg2).unwrap();
        assert_eq!(
            msg2,
            hex(
                "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843cb765f2caef0751b8f007572dab0322217755c0632f365717edbf34d33e87a"
            )
        );
        let mut got2 = vec![0u8; payload2.len()];
        let init_sym = read_response(&init, &init_static, &psk, &msg2, &mut got2).unwrap();
        assert_eq!(got2, payload2);
        let want_hash = hex("f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5");
        assert_eq!(init_sym.h.to_vec(), want_hash);
        assert_eq!(resp_sym.h.to_vec(), want_hash);

        // Transport: the initiator sends with the first key, nonces count up.
        let (i_send, i_recv) = init_sym.split();
        let (r_send_as_i, r_recv_as_i) = resp_sym.split();
        assert_eq!((*i_send, *i_recv), (*r_send_as_i, *r_recv_as_i));
        let to_resp = AeadKey::new(&i_send);
        let to_init = AeadKey::new(&i_recv);
        let cases = [
            (&to_resp, 0, "462e20412e20486179656b", "8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7"),
            (&to_init, 0, "4361726c204d656e676572", "07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef"),
            (&to_resp, 1, "4a65616e2d426170746973746520536179", "6ab1467c0448cc78394494abaaf23afce0e234315d6e2624dcbfa8a21c1c4d073d"),
            (
                &to_init,
                1,
                "457567656e2042f6686d20766f6e2042617765726b",
                "dfc346c0d2296ae6cf1acf6f12b8456a1dba228cf8d8b774aacf1c47fc53aa80ebc7a4c292",
            ),
        ];
        for (k, n, payload, ciphertext) in cases {
            let mut buf = hex(payload);
            let tag = k.seal(n, &[], &mut buf);
            buf.extend_from_slice(&tag);
            assert_eq!(buf, hex(ciphertext), "transport message with nonce {n}");
        }
    }

    #[test]
    fn tampering_with_either_message_fails_it() {
        let i_static = StaticSecret::from([1u8; 32]);
        let r_static = StaticSecret::from([2u8; 32]);
        let r_pub = public_of(&r_static);
        let i_pub = public_of(&i_static);
        let ss = crypto::dh(&i_static, &r_pub).unwrap();
        let mut msg1 = [0u8; 32 + 48 + 12 + 16];
        let init =
            write_initiation(SymmetricState::wireguard(&r_pub), &i_pub, &r_pub, &ss, StaticSecret::from([3u8; 32]), &[9; 12], &mut msg1)
                .unwrap();
        for i in 0..msg1.len() {
            let mut bad = msg1;
            bad[i] ^= 0x20;
            let r = read_initiation(SymmetricState::wireguard(&r_pub), &r_static, &bad, &mut [0u8; 12], |s| {
                Some(((), crypto::dh(&r_static, s).unwrap()))
            });
            assert!(r.is_err(), "flipping byte {i} went unnoticed");
        }
        let read = read_initiation(SymmetricState::wireguard(&r_pub), &r_static, &msg1, &mut [0u8; 12], |s| {
            Some(((), crypto::dh(&r_static, s).unwrap()))
        })
        .unwrap();
        let mut msg2 = [0u8; 48];
        write_response(read.sym, &read.remote_ephemeral, &read.remote_static, &StaticSecret::from([4u8; 32]), &[0; 32], &[], &mut msg2)
            .unwrap();
        assert!(read_response(&init, &i_static, &[0; 32], &msg2, &mut []).is_ok());
        assert_eq!(read_response(&init, &i_static, &[1; 32], &msg2, &mut []).err(), Some(NoiseError::Decrypt), "another psk");
        for i in 0..msg2.len() {
            let mut bad = msg2;
            bad[i] ^= 1;
            assert!(read_response(&init, &i_static, &[0; 32], &bad, &mut []).is_err(), "flipping byte {i} went unnoticed");
        }
        // An unknown static key is refused after it is decrypted.
        let r = read_initiation(SymmetricState::wireguard(&r_pub), &r_static, &msg1, &mut [0u8; 12], |_| None::<((), Secret)>);
        assert_eq!(r.err(), Some(NoiseError::UnknownPeer));
    }
}
