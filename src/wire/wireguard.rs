//! WireGuard's four messages (whitepaper §5.4), as views over a UDP
//! payload in the smoltcp style: a view is the buffer and nothing else;
//! named getters read fixed offsets, setters (when the buffer is mutable)
//! write them.
//!
//! | type | message | length | fields after the 4-byte type |
//! |---|---|---|---|
//! | 1 | [`Initiation`] | 148 | sender index, ephemeral (32), encrypted static (32 + 16), encrypted TAI64N (12 + 16), mac1 (16), mac2 (16) |
//! | 2 | [`Response`] | 92 | sender index, receiver index, ephemeral (32), encrypted nothing (16), mac1, mac2 |
//! | 3 | [`CookieReply`] | 64 | receiver index, nonce (24), encrypted cookie (16 + 16) |
//! | 4 | [`Transport`] | ≥ 32 | receiver index, counter (u64), ciphertext of the padded packet + 16-byte tag |
//!
//! The type is one byte followed by three reserved zero bytes; wireguard-go
//! and the kernel read the four as one little-endian u32, so a message with
//! a non-zero reserved byte is of no known type here either. Every integer
//! field is little-endian.
//!
//! `new_unchecked` wraps without looking (for bytes this crate wrote);
//! `new_checked` first checks the type and the length — exactly 148, 92 or
//! 64 bytes for the handshake messages (as wireguard-go and the kernel
//! require), at least 32 for transport data. **The promise:** once
//! `check_len()` has returned `Ok` for a buffer, no getter or setter of the
//! view panics, whatever the bytes hold. The cryptography that gives these
//! fields meaning is in `crate::wireguard`.

use std::fmt;

/// Message type numbers (the first byte; the next three are zero).
pub const TYPE_INITIATION: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
pub const TYPE_COOKIE_REPLY: u8 = 3;
pub const TYPE_TRANSPORT: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Type, receiver index and counter: the bytes in front of the ciphertext.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// The Poly1305 tag behind every ciphertext.
pub const TAG_LEN: usize = 16;
/// An empty (keepalive) transport message: header and tag.
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// A MAC field (mac1, mac2: keyed BLAKE2s-128).
pub const MAC_LEN: usize = 16;
/// The nonce of a cookie reply (XChaCha20-Poly1305).
pub const COOKIE_NONCE_LEN: usize = 24;
/// A Curve25519 public key.
pub const KEY_LEN: usize = 32;
/// An encrypted static key: the key and its tag.
pub const ENCRYPTED_STATIC_LEN: usize = KEY_LEN + TAG_LEN;
/// An encrypted TAI64N timestamp: 12 bytes and the tag.
pub const ENCRYPTED_TIMESTAMP_LEN: usize = 12 + TAG_LEN;
/// An encrypted cookie: 16 bytes and the tag.
pub const ENCRYPTED_COOKIE_LEN: usize = MAC_LEN + TAG_LEN;

/// The four message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Initiation,
    Response,
    CookieReply,
    Transport,
}

impl MessageType {
    /// The type number on the wire.
    pub const fn number(self) -> u8 {
        match self {
            MessageType::Initiation => TYPE_INITIATION,
            MessageType::Response => TYPE_RESPONSE,
            MessageType::CookieReply => TYPE_COOKIE_REPLY,
            MessageType::Transport => TYPE_TRANSPORT,
        }
    }

    /// The exact length of a handshake message; `None` for transport data,
    /// whose length varies.
    pub const fn fixed_len(self) -> Option<usize> {
        match self {
            MessageType::Initiation => Some(INITIATION_LEN),
            MessageType::Response => Some(RESPONSE_LEN),
            MessageType::CookieReply => Some(COOKIE_REPLY_LEN),
            MessageType::Transport => None,
        }
    }

    /// The shortest message of this type.
    pub const fn min_len(self) -> usize {
        match self.fixed_len() {
            Some(n) => n,
            None => TRANSPORT_MIN_LEN,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            MessageType::Initiation => "handshake initiation",
            MessageType::Response => "handshake response",
            MessageType::CookieReply => "cookie reply",
            MessageType::Transport => "transport data",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes are not the WireGuard message asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than the 4-byte type field.
    #[error("WireGuard message truncated: {len} bytes, no type field")]
    NoType { len: usize },
    /// A type field that is not 1..=4 followed by three zero bytes.
    #[error("WireGuard message of unknown type {0:#010x} (little-endian u32)")]
    UnknownType(u32),
    /// A known type, but another one than the view's.
    #[error("WireGuard {found} where a {expected} was expected")]
    WrongType { expected: MessageType, found: MessageType },
    /// A handshake message of the wrong length, or transport data shorter
    /// than its header and tag.
    #[error("WireGuard {kind} of {len} bytes: {}", expected_len(*kind))]
    BadLength { kind: MessageType, len: usize },
}

fn expected_len(kind: MessageType) -> String {
    match kind.fixed_len() {
        Some(n) => format!("must be exactly {n}"),
        None => format!("must be at least {TRANSPORT_MIN_LEN}"),
    }
}

/// The type of the message in `bytes` (from its first four bytes, as a
/// little-endian u32), without looking at its length.
#[inline]
pub fn message_type(bytes: &[u8]) -> Result<MessageType, MessageError> {
    let field = bytes.get(..4).ok_or(MessageError::NoType { len: bytes.len() })?;
    match u32::from_le_bytes([field[0], field[1], field[2], field[3]]) {
        1 => Ok(MessageType::Initiation),
        2 => Ok(MessageType::Response),
        3 => Ok(MessageType::CookieReply),
        4 => Ok(MessageType::Transport),
        other => Err(MessageError::UnknownType(other)),
    }
}

/// Checks that `bytes` hold a message of type `kind` of a valid length.
#[inline]
fn check(bytes: &[u8], kind: MessageType) -> Result<(), MessageError> {
    let found = message_type(bytes)?;
    if found != kind {
        return Err(MessageError::WrongType { expected: kind, found });
    }
    let ok = match kind.fixed_len() {
        Some(n) => bytes.len() == n,
        None => bytes.len() >= TRANSPORT_MIN_LEN,
    };
    if ok { Ok(()) } else { Err(MessageError::BadLength { kind, len: bytes.len() }) }
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn array<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
    b[at..at + N].try_into().expect("a view's fields lie inside its checked length")
}

#[inline]
fn array_mut<const N: usize>(b: &mut [u8], at: usize) -> &mut [u8; N] {
    (&mut b[at..at + N]).try_into().expect("a view's fields lie inside its checked length")
}

/// Generates the wrapper, the type-field setter and the index accessors a
/// view shares with the others.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps `buffer` without looking at it.
            #[inline]
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps `buffer` once its type and length are right.
            #[inline]
            pub fn new_checked(buffer: T) -> Result<Self, MessageError> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// `Ok` when the buffer holds this message type at a valid length.
            #[inline]
            pub fn check_len(&self) -> Result<(), MessageError> {
                check(self.buffer.as_ref(), $kind)
            }

            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The whole message.
            #[inline]
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Writes this view's type field (the type and three zero bytes).
            #[inline]
            pub fn set_message_type(&mut self) {
                self.buffer.as_mut()[..4].copy_from_slice(&[$kind.number(), 0, 0, 0]);
            }

            /// The whole message, writable.
            #[inline]
            pub fn as_bytes_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut()
            }
        }
    };
}

/// Generates a getter and a `_mut` accessor for a fixed-size byte field.
macro_rules! bytes_field {
    ($name:ident, $name_mut:ident, $at:expr, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[inline]
        pub fn $name(&self) -> &[u8; $len] {
            array::<{ $len }>(self.buffer.as_ref(), $at)
        }
    };
    (mut $name:ident, $name_mut:ident, $at:expr, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[inline]
        pub fn $name_mut(&mut self) -> &mut [u8; $len] {
            array_mut::<{ $len }>(self.buffer.as_mut(), $at)
        }
    };
}

/// Generates a getter and a setter for a little-endian u32 field.
macro_rules! u32_field {
    ($name:ident, $set:ident, $at:expr, $doc:expr) => {
        #[doc = $doc]
        #[inline]
        pub fn $name(&self) -> u32 {
            read_u32(self.buffer.as_ref(), $at)
        }
    };
    (mut $name:ident, $set:ident, $at:expr, $doc:expr) => {
        #[doc = $doc]
        #[inline]
        pub fn $set(&mut self, value: u32) {
            self.buffer.as_mut()[$at..$at + 4].copy_from_slice(&value.to_le_bytes());
        }
    };
}

mod initiation {
    pub const SENDER: usize = 4;
    pub const EPHEMERAL: usize = 8;
    pub const STATIC: usize = EPHEMERAL + super::KEY_LEN;
    pub const TIMESTAMP: usize = STATIC + super::ENCRYPTED_STATIC_LEN;
    pub const MAC1: usize = TIMESTAMP + super::ENCRYPTED_TIMESTAMP_LEN;
    pub const MAC2: usize = MAC1 + super::MAC_LEN;
}

view!(
    /// A handshake initiation (type 1, 148 bytes): the first message of the
    /// Noise IKpsk2 handshake, from initiator to responder.
    Initiation,
    MessageType::Initiation
);

impl<T: AsRef<[u8]>> Initiation<T> {
    u32_field!(sender, set_sender, initiation::SENDER, "The initiator's index for this handshake.");
    bytes_field!(ephemeral, ephemeral_mut, initiation::EPHEMERAL, KEY_LEN, "The initiator's ephemeral public key.");
    bytes_field!(
        encrypted_static,
        encrypted_static_mut,
        initiation::STATIC,
        ENCRYPTED_STATIC_LEN,
        "The initiator's static public key, encrypted."
    );
    bytes_field!(
        encrypted_timestamp,
        encrypted_timestamp_mut,
        initiation::TIMESTAMP,
        ENCRYPTED_TIMESTAMP_LEN,
        "The TAI64N timestamp, encrypted."
    );
    bytes_field!(mac1, mac1_mut, initiation::MAC1, MAC_LEN, "mac1: keyed by the responder's public key.");
    bytes_field!(mac2, mac2_mut, initiation::MAC2, MAC_LEN, "mac2: keyed by a cookie, or zero.");

    /// The bytes mac1 covers: everything in front of it.
    #[inline]
    pub fn mac1_input(&self) -> &[u8] {
        &self.buffer.as_ref()[..initiation::MAC1]
    }

    /// The bytes mac2 covers: everything in front of it, mac1 included.
    #[inline]
    pub fn mac2_input(&self) -> &[u8] {
        &self.buffer.as_ref()[..initiation::MAC2]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Initiation<T> {
    u32_field!(mut sender, set_sender, initiation::SENDER, "Sets the initiator's index.");
    bytes_field!(mut ephemeral, ephemeral_mut, initiation::EPHEMERAL, KEY_LEN, "The ephemeral key field, writable.");
    bytes_field!(
        mut encrypted_static,
        encrypted_static_mut,
        initiation::STATIC,
        ENCRYPTED_STATIC_LEN,
        "The encrypted static key field, writable."
    );
    bytes_field!(
        mut encrypted_timestamp,
        encrypted_timestamp_mut,
        initiation::TIMESTAMP,
        ENCRYPTED_TIMESTAMP_LEN,
        "The encrypted timestamp field, writable."
    );
    bytes_field!(mut mac1, mac1_mut, initiation::MAC1, MAC_LEN, "mac1, writable.");
    bytes_field!(mut mac2, mac2_mut, initiation::MAC2, MAC_LEN, "mac2, writable.");
}

mod response {
    pub const SENDER: usize = 4;
    pub const RECEIVER: usize = 8;
    pub const EPHEMERAL: usize = 12;
    pub const EMPTY: usize = EPHEMERAL + super::KEY_LEN;
    pub const MAC1: usize = EMPTY + super::TAG_LEN;
    pub const MAC2: usize = MAC1 + super::MAC_LEN;
}

view!(
    /// A handshake response (type 2, 92 bytes): the responder's half of the
    /// handshake.
    Response,
    MessageType::Response
);

impl<T: AsRef<[u8]>> Response<T> {
    u32_field!(sender, set_sender, response::SENDER, "The responder's index for the new session.");
    u32_field!(receiver, set_receiver, response::RECEIVER, "The initiator's index, from its initiation.");
    bytes_field!(ephemeral, ephemeral_mut, response::EPHEMERAL, KEY_LEN, "The responder's ephemeral public key.");
    bytes_field!(
        encrypted_nothing,
        encrypted_nothing_mut,
        response::EMPTY,
        TAG_LEN,
        "The AEAD tag over an empty plaintext: authenticates the transcript."
    );
    bytes_field!(mac1, mac1_mut, response::MAC1, MAC_LEN, "mac1: keyed by the initiator's public key.");
    bytes_field!(mac2, mac2_mut, response::MAC2, MAC_LEN, "mac2: keyed by a cookie, or zero.");

    /// The bytes mac1 covers.
    #[inline]
    pub fn mac1_input(&self) -> &[u8] {
        &self.buffer.as_ref()[..response::MAC1]
    }

    /// The bytes mac2 covers.
    #[inline]
    pub fn mac2_input(&self) -> &[u8] {
        &self.buffer.as_ref()[..response::MAC2]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Response<T> {
    u32_field!(mut sender, set_sender, response::SENDER, "Sets the responder's index.");
    u32_field!(mut receiver, set_receiver, response::RECEIVER, "Sets the initiator's index.");
    bytes_field!(mut ephemeral, ephemeral_mut, response::EPHEMERAL, KEY_LEN, "The ephemeral key field, writable.");
    bytes_field!(mut encrypted_nothing, encrypted_nothing_mut, response::EMPTY, TAG_LEN, "The encrypted-nothing field, writable.");
    bytes_field!(mut mac1, mac1_mut, response::MAC1, MAC_LEN, "mac1, writable.");
    bytes_field!(mut mac2, mac2_mut, response::MAC2, MAC_LEN, "mac2, writable.");
}

mod cookie {
    pub const RECEIVER: usize = 4;
    pub const NONCE: usize = 8;
    pub const COOKIE: usize = NONCE + super::COOKIE_NONCE_LEN;
}

view!(
    /// A cookie reply (type 3, 64 bytes): a responder under load answers a
    /// handshake message without a valid mac2 with a cookie, encrypted to
    /// the sender and bound to that message's mac1.
    CookieReply,
    MessageType::CookieReply
);

impl<T: AsRef<[u8]>> CookieReply<T> {
    u32_field!(receiver, set_receiver, cookie::RECEIVER, "The sender index of the message this answers.");
    bytes_field!(nonce, nonce_mut, cookie::NONCE, COOKIE_NONCE_LEN, "The XChaCha20-Poly1305 nonce.");
    bytes_field!(encrypted_cookie, encrypted_cookie_mut, cookie::COOKIE, ENCRYPTED_COOKIE_LEN, "The cookie (16 bytes) and its tag.");
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CookieReply<T> {
    u32_field!(mut receiver, set_receiver, cookie::RECEIVER, "Sets the receiver index.");
    bytes_field!(mut nonce, nonce_mut, cookie::NONCE, COOKIE_NONCE_LEN, "The nonce field, writable.");
    bytes_field!(mut encrypted_cookie, encrypted_cookie_mut, cookie::COOKIE, ENCRYPTED_COOKIE_LEN, "The encrypted cookie field, writable.");
}

view!(
    /// Transport data (type 4, at least 32 bytes): one IP packet (or none:
    /// a keepalive), padded to a multiple of 16 and encrypted under the
    /// session key with the counter as nonce.
    Transport,
    MessageType::Transport
);

impl<T: AsRef<[u8]>> Transport<T> {
    u32_field!(receiver, set_receiver, 4, "The receiving side's session index.");

    /// The 64-bit counter: the AEAD nonce, and the replay window's input.
    #[inline]
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(*array::<8>(self.buffer.as_ref(), 8))
    }

    /// The ciphertext and its tag (everything behind the 16-byte header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[TRANSPORT_HEADER_LEN..]
    }

    /// The plaintext length this message carries (padding included).
    #[inline]
    pub fn plaintext_len(&self) -> usize {
        self.buffer.as_ref().len() - TRANSPORT_MIN_LEN
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Transport<T> {
    u32_field!(mut receiver, set_receiver, 4, "Sets the receiver index.");

    #[inline]
    pub fn set_counter(&mut self, value: u64) {
        self.buffer.as_mut()[8..16].copy_from_slice(&value.to_le_bytes());
    }

    /// The ciphertext and its tag, writable (decrypted in place).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[TRANSPORT_HEADER_LEN..]
    }
}

/// Writes a transport header (type 4, `receiver`, `counter`) into
/// `header` — the 16 bytes in front of the ciphertext.
#[inline]
pub fn write_transport_header(header: &mut [u8; TRANSPORT_HEADER_LEN], receiver: u32, counter: u64) {
    header[..4].copy_from_slice(&[TYPE_TRANSPORT, 0, 0, 0]);
    header[4..8].copy_from_slice(&receiver.to_le_bytes());
    header[8..16].copy_from_slice(&counter.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake initiation with recognisable field contents: every byte
    /// of a field holds the field's number.
    fn initiation_bytes() -> Vec<u8> {
        let mut b = vec![1, 0, 0, 0, 0x78, 0x56, 0x34, 0x12];
        b.extend([2u8; 32]);
        b.extend([3u8; 48]);
        b.extend([4u8; 28]);
        b.extend([5u8; 16]);
        b.extend([6u8; 16]);
        assert_eq!(b.len(), 148);
        b
    }

    #[test]
    fn initiation_fields_at_their_offsets() {
        let b = initiation_bytes();
        let m = Initiation::new_checked(&b[..]).unwrap();
        assert_eq!(m.sender(), 0x1234_5678);
        assert_eq!(m.ephemeral(), &[2; 32]);
        assert_eq!(m.encrypted_static(), &[3; 48]);
        assert_eq!(m.encrypted_timestamp(), &[4; 28]);
        assert_eq!(m.mac1(), &[5; 16]);
        assert_eq!(m.mac2(), &[6; 16]);
        assert_eq!(m.mac1_input().len(), 116);
        assert_eq!(m.mac2_input().len(), 132);
    }

    #[test]
    fn initiation_setters_write_what_getters_read() {
        let mut b = [0u8; INITIATION_LEN];
        let mut m = Initiation::new_unchecked(&mut b[..]);
        m.set_message_type();
        m.set_sender(0xdead_beef);
        *m.ephemeral_mut() = [2; 32];
        *m.encrypted_static_mut() = [3; 48];
        *m.encrypted_timestamp_mut() = [4; 28];
        *m.mac1_mut() = [5; 16];
        *m.mac2_mut() = [6; 16];
        assert!(m.check_len().is_ok());
        let mut want = initiation_bytes();
        want[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn response_fields_at_their_offsets() {
        let mut b = vec![2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        b.extend([7u8; 32]);
        b.extend([8u8; 16]);
        b.extend([9u8; 16]);
        b.extend([10u8; 16]);
        let m = Response::new_checked(&b[..]).unwrap();
        assert_eq!((m.sender(), m.receiver()), (1, 2));
        assert_eq!(m.ephemeral(), &[7; 32]);
        assert_eq!(m.encrypted_nothing(), &[8; 16]);
        assert_eq!(m.mac1(), &[9; 16]);
        assert_eq!(m.mac2(), &[10; 16]);
        assert_eq!(m.mac1_input().len(), 60);
        assert_eq!(m.mac2_input().len(), 76);
    }

    #[test]
    fn cookie_reply_and_transport_fields() {
        let mut b = vec![3, 0, 0, 0, 9, 0, 0, 0];
        b.extend([1u8; 24]);
        b.extend([2u8; 32]);
        let m = CookieReply::new_checked(&b[..]).unwrap();
        assert_eq!(m.receiver(), 9);
        assert_eq!(m.nonce(), &[1; 24]);
        assert_eq!(m.encrypted_cookie(), &[2; 32]);

        let mut t = [0u8; 40];
        write_transport_header((&mut t[..16]).try_into().unwrap(), 0x0102_0304, 0x1122_3344_5566_7788);
        assert_eq!(&t[..16], &[4, 0, 0, 0, 4, 3, 2, 1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        let m = Transport::new_checked(&t[..]).unwrap();
        assert_eq!((m.receiver(), m.counter()), (0x0102_0304, 0x1122_3344_5566_7788));
        assert_eq!((m.payload().len(), m.plaintext_len()), (24, 8));
    }

    #[test]
    fn lengths_are_checked_per_type() {
        let b = initiation_bytes();
        assert_eq!(Initiation::new_checked(&b[..147]), Err(MessageError::BadLength { kind: MessageType::Initiation, len: 147 }));
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Initiation::new_checked(&long[..]).unwrap_err(), MessageError::BadLength { kind: MessageType::Initiation, len: 149 });
        let keepalive = [4u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Transport::new_checked(&keepalive[..]).is_ok());
        assert_eq!(Transport::new_checked(&keepalive[..31]), Err(MessageError::BadLength { kind: MessageType::Transport, len: 31 }));
    }

    #[test]
    fn types_are_checked() {
        assert_eq!(message_type(&[1, 0, 0]), Err(MessageError::NoType { len: 3 }));
        assert_eq!(message_type(&[]), Err(MessageError::NoType { len: 0 }));
        assert_eq!(message_type(&[5, 0, 0, 0]), Err(MessageError::UnknownType(5)));
        assert_eq!(message_type(&[0, 0, 0, 0]), Err(MessageError::UnknownType(0)));
        // A reserved byte that is not zero: not type 1.
        assert_eq!(message_type(&[1, 0, 0, 1]), Err(MessageError::UnknownType(0x0100_0001)));
        let mut b = initiation_bytes();
        b[0] = 2;
        assert_eq!(
            Initiation::new_checked(&b[..]),
            Err(MessageError::WrongType { expected: MessageType::Initiation, found: MessageType::Response })
        );
        assert_eq!(Response::new_checked(&b[..]), Err(MessageError::BadLength { kind: MessageType::Response, len: 148 }));
    }

    #[test]
    fn no_prefix_of_any_message_panics() {
        let messages: [Vec<u8>; 4] = [initiation_bytes(), vec![2; 92], vec![3; 64], vec![4; 100]];
        for m in &messages {
            for len in 0..=m.len() + 1 {
                let mut b = m.clone();
                b.resize(len, 0);
                let _ = Initiation::new_checked(&b[..]).map(|v| (v.sender(), *v.mac2()));
                let _ = Response::new_checked(&b[..]).map(|v| (v.receiver(), *v.mac2()));
                let _ = CookieReply::new_checked(&b[..]).map(|v| *v.encrypted_cookie());
                let _ = Transport::new_checked(&b[..]).map(|v| (v.counter(), v.payload().len()));
            }
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = MessageError::BadLength { kind: MessageType::Response, len: 91 };
        assert_eq!(e.to_string(), "WireGuard handshake response of 91 bytes: must be exactly 92");
        let e = MessageError::BadLength { kind: MessageType::Transport, len: 20 };
        assert_eq!(e.to_string(), "WireGuard transport data of 20 bytes: must be at least 32");
    }
}
