//! Every WireGuard parser on arbitrary bytes: `wire::wireguard`'s
//! `message_type` and the four views (`new_checked` and every accessor),
//! `wireguard::cryptokey::inner_packet` on a decrypted payload, and the key
//! readers (`keys::decode_key`, `keys::key_from_text`). None may panic,
//! and each must agree with a second opinion written out here from the
//! whitepaper (§5.4): the type is a little-endian u32 of 1 to 4, the
//! handshake messages have exactly 148, 92 and 64 bytes, transport data at
//! least 32; the fields lie at the offsets the whitepaper lists; a key is
//! exactly 44 characters of standard base64 whose last character is `=`
//! and whose unused bits are zero, and its encoding round-trips.
//!
//! Input: the bytes, used as a datagram, as a decrypted payload and (when
//! UTF-8) as key text.

use std::net::IpAddr;

use encapd::wire::wireguard::{CookieReply, Initiation, Response, Transport, message_type};
use encapd::wireguard::cryptokey::inner_packet;
use encapd::wireguard::keys::{decode_key, encode_key, key_from_text};

/// The type by the whitepaper: a little-endian u32 in 1..=4.
fn reference_type(d: &[u8]) -> Option<u32> {
    let t = u32::from_le_bytes(d.get(..4)?.try_into().ok()?);
    (1..=4).contains(&t).then_some(t)
}

fn reference_len_ok(t: u32, len: usize) -> bool {
    match t {
        1 => len == 148,
        2 => len == 92,
        3 => len == 64,
        _ => len >= 32,
    }
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}

fn check_views(d: &[u8]) {
    let t = reference_type(d);
    match message_type(d) {
        Ok(kind) => assert_eq!(Some(u32::from(kind.number())), t, "type of {:02x?}", &d[..4]),
        Err(_) => assert_eq!(t, None),
    }
    let valid = |want: u32| t == Some(want) && reference_len_ok(want, d.len());

    match Initiation::new_checked(d) {
        Ok(m) => {
            assert!(valid(1));
            assert_eq!(m.sender(), le32(d, 4));
            assert_eq!(&m.ephemeral()[..], &d[8..40]);
            assert_eq!(&m.encrypted_static()[..], &d[40..88]);
            assert_eq!(&m.encrypted_timestamp()[..], &d[88..116]);
            assert_eq!(&m.mac1()[..], &d[116..132]);
            assert_eq!(&m.mac2()[..], &d[132..148]);
            assert_eq!(m.mac1_input(), &d[..116]);
            assert_eq!(m.mac2_input(), &d[..132]);
        }
        Err(_) => assert!(!valid(1)),
    }
    match Response::new_checked(d) {
        Ok(m) => {
            assert!(valid(2));
            assert_eq!((m.sender(), m.receiver()), (le32(d, 4), le32(d, 8)));
            assert_eq!(&m.ephemeral()[..], &d[12..44]);
            assert_eq!(&m.encrypted_nothing()[..], &d[44..60]);
            assert_eq!(&m.mac1()[..], &d[60..76]);
            assert_eq!(&m.mac2()[..], &d[76..92]);
            assert_eq!(m.mac1_input(), &d[..60]);
            assert_eq!(m.mac2_input(), &d[..76]);
        }
        Err(_) => assert!(!valid(2)),
    }
    match CookieReply::new_checked(d) {
        Ok(m) => {
            assert!(valid(3));
            assert_eq!(m.receiver(), le32(d, 4));
            assert_eq!(&m.nonce()[..], &d[8..32]);
            assert_eq!(&m.encrypted_cookie()[..], &d[32..64]);
        }
        Err(_) => assert!(!valid(3)),
    }
    match Transport::new_checked(d) {
        Ok(m) => {
            assert!(valid(4));
            assert_eq!(m.receiver(), le32(d, 4));
            assert_eq!(m.counter(), u64::from_le_bytes(d[8..16].try_into().unwrap()));
            assert_eq!(m.payload(), &d[16..]);
            assert_eq!(m.plaintext_len(), d.len() - 32);
        }
        Err(_) => assert!(!valid(4)),
    }
}

fn check_inner(d: &[u8]) {
    // The second opinion: version, length field within [header, bytes].
    let reference = match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= 20 => {
            let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
            (20..=d.len()).contains(&len).then(|| (len, IpAddr::from(<[u8; 4]>::try_from(&d[12..16]).unwrap())))
        }
        Some(6) if d.len() >= 40 => {
            let len = 40 + usize::from(u16::from_be_bytes([d[4], d[5]]));
            (len <= d.len()).then(|| (len, IpAddr::from(<[u8; 16]>::try_from(&d[8..24]).unwrap())))
        }
        _ => None,
    };
    match inner_packet(d) {
        Ok(p) => assert_eq!(Some((p.len, p.src)), reference),
        Err(_) => assert_eq!(reference, None),
    }
}

/// Standard base64 of exactly 32 bytes, written out: 43 alphabet
/// characters, the last with its two low bits zero, then '='.
fn reference_key(text: &str) -> Option<[u8; 32]> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = text.as_bytes();
    if b.len() != 44 || b[43] != b'=' {
        return None;
    }
    let mut acc = 0u64;
    let mut bits = 0;
    let mut out = Vec::with_capacity(33);
    for &c in &b[..43] {
        acc = (acc << 6) | ALPHABET.iter().position(|&a| a == c)? as u64;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    out.try_into().ok()
}

fn check_keys(text: &str) {
    let reference = reference_key(text);
    match decode_key(text) {
        Ok(k) => {
            assert_eq!(Some(k), reference, "{text:?}");
            assert_eq!(encode_key(&k), text);
        }
        Err(_) => assert_eq!(reference, None, "{text:?} refused"),
    }
    // key_from_text: the key, then only whitespace (or NULs).
    let trimmed = text.trim_end_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    match key_from_text(text) {
        Ok(k) => assert_eq!(Some(*k), reference_key(trimmed)),
        Err(_) => assert_eq!(reference_key(trimmed), None),
    }
}

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    check_views(data);
    check_inner(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_keys(text);
    }
}
