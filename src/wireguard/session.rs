//! A transport session: the pair of keys one handshake derived, the
//! indices both sides put in transport messages, the send counter and the
//! replay window. This is the data path's part of the protocol, built for
//! batches handled by several workers at once (see the module docs of
//! [`crate::wireguard`] for the whole design):
//!
//! - **Seal** ([`Session::reserve`], [`SealBatch::seal`]): one
//!   compare-and-swap on the shared send counter reserves a run of
//!   counters for a whole batch; each packet is then encrypted in place in
//!   the caller's buffer — its 16-byte header written in front, its padding
//!   and 16-byte tag behind — with no atomic, lock or allocation.
//! - **Open** ([`Session::open`]): decrypts one datagram in place; no
//!   atomic, no lock. Then [`Session::lock_replay`] takes the session's
//!   replay-window lock once for the batch, and [`ReplayGuard::accept`]
//!   decides each counter under it.
//!
//! A session is shared between workers through `Arc` and never changes
//! keys; a rekey makes a new session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::crypto::{AeadKey, Secret};
use super::keys::PublicKey;
use super::replay::ReplayWindow;
use super::{DropReason, Limits};
use crate::wire::wireguard::{TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_MIN_LEN, Transport, write_transport_header};

/// Room a caller leaves in front of each packet it seals: the transport
/// header.
pub const HEADROOM: usize = TRANSPORT_HEADER_LEN;
/// Room a caller leaves behind each packet it seals: up to 15 bytes of
/// padding and the tag.
pub const TAILROOM: usize = 15 + TAG_LEN;
/// Bytes a transport message adds to the packet it carries, before padding.
pub const OVERHEAD: usize = TRANSPORT_MIN_LEN;

/// The plaintext length a packet of `len` bytes is padded to (whitepaper
/// §5.4.6: a multiple of 16), never beyond `mtu` when the packet fits in it
/// (so a full-MTU packet still fits the underlay), as wireguard-go pads.
/// `mtu` 0: always a multiple of 16.
#[inline]
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let rounded = (len + 15) & !15;
    if mtu != 0 && len <= mtu { rounded.min(mtu) } else { rounded }
}

/// Which side of the handshake that made this session we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// The keys and indices of one session, as the handshake hands them over.
pub(crate) struct SessionKeys {
    pub(crate) send: Secret,
    pub(crate) receive: Secret,
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    pub(crate) role: Role,
}

/// One transport session; see the module documentation.
pub struct Session {
    peer: PublicKey,
    local_index: u32,
    remote_index: u32,
    role: Role,
    created: Instant,
    send_key: AeadKey,
    receive_key: AeadKey,
    /// The next counter to hand out; counters are never reused.
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    reject_after_messages: u64,
    reject_after: Instant,
    padding_mtu: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("role", &self.role)
            .field("sent", &self.send_counter.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why a batch cannot be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The session is `REJECT_AFTER_TIME` old: a new handshake is needed.
    #[error("session expired (REJECT_AFTER_TIME)")]
    Expired,
    /// Every counter below `REJECT_AFTER_MESSAGES` is used.
    #[error("send counter exhausted (REJECT_AFTER_MESSAGES)")]
    CounterExhausted,
    /// The reservation is used up.
    #[error("no counter left in this reservation")]
    ReservationUsed,
    /// The buffer cannot hold the header, padding and tag around the packet.
    #[error("no room around the packet for the WireGuard header, padding and tag")]
    NoRoom,
}

/// A decrypted transport message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub counter: u64,
    /// Length of the plaintext (the packet and its padding), which starts
    /// at [`HEADROOM`] in the datagram. 0 for a keepalive.
    pub len: usize,
}

impl Session {
    pub(crate) fn new(peer: PublicKey, keys: SessionKeys, limits: &Limits, padding_mtu: usize, now: Instant) -> Session {
        Session {
            peer,
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            role: keys.role,
            created: now,
            send_key: AeadKey::new(&keys.send),
            receive_key: AeadKey::new(&keys.receive),
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
            reject_after_messages: limits.reject_after_messages,
            reject_after: now + limits.reject_after_time,
            padding_mtu,
        }
    }

    /// The peer this session was made with: who sent what it opens, for
    /// the cryptokey routing check.
    #[inline]
    pub fn peer(&self) -> &PublicKey {
        &self.peer
    }

    /// Our index: the receiver index of the transport messages to us.
    #[inline]
    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    /// The peer's index, written into our transport messages.
    #[inline]
    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn created(&self) -> Instant {
        self.created
    }

    /// Counters handed out so far (the next one to reserve).
    pub fn sent(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// True once the session is `REJECT_AFTER_TIME` old: neither side may
    /// use it any more.
    #[inline]
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.reject_after
    }

    /// Reserves counters for up to `n` packets — fewer when the message
    /// limit is near — with one compare-and-swap on the shared counter.
    /// Counters a caller leaves unused are simply never sent (the
    /// receiver's window does not care about gaps).
    ///
    /// Why compare-and-swap and not `fetch_add(n)`: a `fetch_add` past the
    /// limit would have to be undone, and concurrent reservations racing
    /// past `2^64 − 2^13 − 1` could wrap the counter and reuse a nonce. The
    /// loop never moves the counter beyond the limit; it retries only when
    /// another worker reserved in between.
    #[inline]
    pub fn reserve(&self, n: usize, now: Instant) -> Result<SealBatch<'_>, SealError> {
        if self.is_expired(now) {
            return Err(SealError::Expired);
        }
        let limit = self.reject_after_messages;
        let mut current = self.send_counter.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return Err(SealError::CounterExhausted);
            }
            let end = current + (n as u64).min(limit - current);
            match self.send_counter.compare_exchange_weak(current, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(SealBatch { session: self, next: current, end }),
                Err(now_current) => current = now_current,
            }
        }
    }

    /// Decrypts the transport message `datagram` in place: afterwards the
    /// plaintext is at `datagram[HEADROOM..HEADROOM + opened.len]`. No
    /// atomic, no lock; the counter is NOT yet checked against replay —
    /// pass it to [`ReplayGuard::accept`] before using the packet.
    #[inline]
    pub fn open(&self, datagram: &mut [u8]) -> Result<Opened, DropReason> {
        let mut msg = Transport::new_checked(datagram).map_err(DropReason::from)?;
        if msg.receiver() != self.local_index {
            return Err(DropReason::UnknownIndex);
        }
        let counter = msg.counter();
        if counter >= self.reject_after_messages {
            return Err(DropReason::CounterLimit);
        }
        let payload = msg.payload_mut();
        let (body, tag) = payload.split_at_mut(payload.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().expect("the tag is 16 bytes");
        self.receive_key.open(counter, &[], body, tag).map_err(|_| DropReason::Decrypt)?;
        Ok(Opened { counter, len: body.len() })
    }

    /// Takes the replay window for a batch: one lock for all the counters
    /// the batch opened under this session.
    #[inline]
    pub fn lock_replay(&self) -> ReplayGuard<'_> {
        ReplayGuard { window: self.replay.lock().unwrap_or_else(PoisonError::into_inner), limit: self.reject_after_messages }
    }

    /// Test and fuzz helper: moves the send counter (e.g. next to the limit).
    #[doc(hidden)]
    pub fn set_sent_for_test(&self, counter: u64) {
        self.send_counter.store(counter, Ordering::Relaxed);
    }
}

/// Counters reserved for one batch; see [`Session::reserve`].
pub struct SealBatch<'s> {
    session: &'s Session,
    next: u64,
    end: u64,
}

impl SealBatch<'_> {
    /// Counters left.
    #[inline]
    pub fn remaining(&self) -> usize {
        (self.end - self.next) as usize
    }

    /// Encrypts one packet in place. `buf` holds [`HEADROOM`] bytes of
    /// room, then the packet (`len` bytes), then room for the padding and
    /// tag (up to [`TAILROOM`]); on return `buf[..n]` is the transport
    /// message, `n` its length. Packets of equal length give messages of
    /// equal length (one GSO send).
    #[inline]
    pub fn seal(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SealError> {
        let padded = padded_len(len, self.session.padding_mtu);
        let total = HEADROOM + padded + TAG_LEN;
        if buf.len() < total {
            return Err(SealError::NoRoom);
        }
        if self.next == self.end {
            return Err(SealError::ReservationUsed);
        }
        let counter = self.next;
        self.next += 1;
        let (header, rest) = buf.split_at_mut(HEADROOM);
        let (body, rest) = rest.split_at_mut(padded);
        body[len..].fill(0);
        let tag = self.session.send_key.seal(counter, &[], body);
        rest[..TAG_LEN].copy_from_slice(&tag);
        write_transport_header(header.try_into().expect("HEADROOM is the header size"), self.session.remote_index, counter);
        Ok(total)
    }

    /// A keepalive (an empty transport message, 32 bytes).
    pub fn keepalive(&mut self) -> Result<[u8; TRANSPORT_MIN_LEN], SealError> {
        let mut out = [0u8; TRANSPORT_MIN_LEN];
        self.seal(&mut out, 0)?;
        Ok(out)
    }
}

/// The replay window of one session, locked for one batch.
pub struct ReplayGuard<'s> {
    window: MutexGuard<'s, ReplayWindow>,
    limit: u64,
}

impl ReplayGuard<'_> {
    /// True (and the counter is marked) when a packet with `counter`, which
    /// [`Session::open`] authenticated, is not a replay and not too old.
    #[inline]
    pub fn accept(&mut self, counter: u64) -> bool {
        self.window.accept(counter, self.limit)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::*;

    /// Two ends of one session, with a given message limit.
    pub(crate) fn pair(limits: &Limits, mtu: usize, now: Instant) -> (Session, Session) {
        let (a, b) = (Zeroizing::new([1u8; 32]), Zeroizing::new([2u8; 32]));
        let peer = PublicKey::from_bytes([9; 32]);
        let i = Session::new(
            peer,
            SessionKeys { send: a.clone(), receive: b.clone(), local_index: 10, remote_index: 20, role: Role::Initiator },
            limits,
            mtu,
            now,
        );
        let r = Session::new(
            peer,
            SessionKeys { send: b, receive: a, local_index: 20, remote_index: 10, role: Role::Responder },
            limits,
            mtu,
            now,
        );
        (i, r)
    }

    fn frame(packet: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xeeu8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        buf
    }

    #[test]
    fn padding_follows_wireguard_go() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1405, 1420), 1408);
        assert_eq!(padded_len(1421, 1420), 1424);
        assert_eq!(padded_len(17, 0), 32);
    }

    #[test]
    fn seal_then_open_round_trip_in_place() {
        let now = Instant::now();
        let (i, r) = pair(&Limits::default(), 1420, now);
        let packet: Vec<u8> = (0..100u8).collect();
        let mut buf = frame(&packet);
        let mut batch = i.reserve(4, now).unwrap();
        assert_eq!(batch.remaining(), 4);
        let n = batch.seal(&mut buf, packet.len()).unwrap();
        assert_eq!(n, 16 + 112 + 16);
        assert_eq!(&buf[..8], &[4, 0, 0, 0, 20, 0, 0, 0]);
        assert_eq!(&buf[8..16], &0u64.to_le_bytes());
        let opened = r.open(&mut buf[..n]).unwrap();
        assert_eq!(opened, Opened { counter: 0, len: 112 });
        assert_eq!(&buf[16..116], &packet[..]);
        assert_eq!(&buf[116..128], &[0; 12], "padding is zeros");
        assert!(r.lock_replay().accept(0));
        // A keepalive is 32 bytes and opens to nothing.
        let ka = batch.keepalive().unwrap();
        assert_eq!(u64::from_le_bytes(ka[8..16].try_into().unwrap()), 1);
        assert_eq!(r.open(&mut ka.clone()).unwrap(), Opened { counter: 1, len: 0 });
    }

    #[test]
    fn equal_packets_give_equal_messages() {
        let now = Instant::now();
        let (i, _) = pair(&Limits::default(), 1420, now);
        let mut batch = i.reserve(64, now).unwrap();
        let lens: Vec<usize> = (0..64).map(|_| batch.seal(&mut frame(&[7; 1380]), 1380).unwrap()).collect();
        assert!(lens.iter().all(|&l| l == 16 + 1392 + 16));
    }

    #[test]
    fn hostile_transport_messages_are_dropped_with_a_reason() {
        let now = Instant::now();
        let (i, r) = pair(&Limits::default(), 1420, now);
        let mut buf = frame(&[1; 60]);
        let n = i.reserve(1, now).unwrap().seal(&mut buf, 60).unwrap();
        let good = buf[..n].to_vec();
        // Every flipped bit of the header's counter or of the ciphertext or tag.
        for byte in 8..good.len() {
            let mut bad = good.clone();
            bad[byte] ^= 0x01;
            assert_eq!(r.open(&mut bad), Err(DropReason::Decrypt), "byte {byte}");
        }
        let mut bad = good.clone();
        bad[4] ^= 1;
        assert_eq!(r.open(&mut bad), Err(DropReason::UnknownIndex));
        assert_eq!(r.open(&mut good[..31].to_vec()), Err(DropReason::Truncated));
        assert_eq!(r.open(&mut []), Err(DropReason::Truncated));
        let mut wrong_type = good.clone();
        wrong_type[0] = 1;
        assert_eq!(r.open(&mut wrong_type), Err(DropReason::WrongType));
        wrong_type[0] = 9;
        assert_eq!(r.open(&mut wrong_type), Err(DropReason::UnknownType));
        // Our own message does not open with our receive key.
        assert_eq!(i.open(&mut good.clone()), Err(DropReason::UnknownIndex));
        // Replayed: opens, but the window refuses it the second time.
        let o = r.open(&mut good.clone()).unwrap();
        let mut w = r.lock_replay();
        assert!(w.accept(o.counter));
        assert!(!w.accept(o.counter));
    }

    #[test]
    fn reservations_never_overlap_and_stop_at_the_limit() {
        let limits = Limits { reject_after_messages: 100, ..Limits::default() };
        let now = Instant::now();
        let (i, r) = pair(&limits, 0, now);
        let a = i.reserve(64, now).unwrap();
        let b = i.reserve(64, now).unwrap();
        assert_eq!((a.next, a.end, b.next, b.end), (0, 64, 64, 100), "the second is cut at the limit");
        assert_eq!(i.reserve(1, now).err(), Some(SealError::CounterExhausted));
        assert_eq!(i.sent(), 100);
        // The receiver refuses counters at the limit even if they decrypt.
        let mut batch = b;
        let mut last = None;
        while batch.remaining() > 0 {
            last = Some(batch.keepalive().unwrap());
        }
        assert_eq!(batch.keepalive(), Err(SealError::ReservationUsed));
        let last = last.unwrap();
        assert_eq!(r.open(&mut last.clone()).unwrap().counter, 99);
    }

    #[test]
    fn the_protocol_limit_is_exact() {
        let now = Instant::now();
        let limits = Limits::default();
        let (i, r) = pair(&limits, 0, now);
        let limit = limits.reject_after_messages;
        assert_eq!(limit, u64::MAX - (1 << 13), "2^64 - 2^13 - 1");
        i.set_sent_for_test(limit - 2);
        let mut batch = i.reserve(64, now).unwrap();
        assert_eq!(batch.remaining(), 2);
        let a = batch.keepalive().unwrap();
        let b = batch.keepalive().unwrap();
        assert_eq!(i.reserve(1, now).err(), Some(SealError::CounterExhausted));
        let (oa, ob) = (r.open(&mut a.clone()).unwrap(), r.open(&mut b.clone()).unwrap());
        assert_eq!((oa.counter, ob.counter), (limit - 2, limit - 1));
        // A forged header counter at the limit is refused before decryption.
        let mut forged = b;
        forged[8..16].copy_from_slice(&limit.to_le_bytes());
        assert_eq!(r.open(&mut forged), Err(DropReason::CounterLimit));
        // Racing reservations never pass the limit (no wrap-around).
        i.set_sent_for_test(limit - 100);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| while i.reserve(7, now).is_ok() {});
            }
        });
        assert_eq!(i.sent(), limit);
    }

    #[test]
    fn concurrent_reservations_hand_out_every_counter_once() {
        let now = Instant::now();
        let (i, _) = pair(&Limits::default(), 0, now);
        let taken: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..2000)
                            .map(|_| {
                                let b = i.reserve(5, now).unwrap();
                                (b.next, b.end)
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<(u64, u64)> = taken.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all.len(), 8000);
        for (k, w) in all.iter().enumerate() {
            assert_eq!(*w, (k as u64 * 5, k as u64 * 5 + 5));
        }
    }

    #[test]
    fn expired_sessions_neither_seal_nor_count() {
        let now = Instant::now();
        let limits = Limits::default();
        let (i, _) = pair(&limits, 0, now);
        assert!(i.reserve(1, now + limits.reject_after_time - Duration::from_millis(1)).is_ok());
        assert_eq!(i.reserve(1, now + limits.reject_after_time).err(), Some(SealError::Expired));
        assert!(i.is_expired(now + limits.reject_after_time));
    }

    #[test]
    fn a_buffer_without_room_is_refused() {
        let now = Instant::now();
        let (i, _) = pair(&Limits::default(), 1420, now);
        let mut batch = i.reserve(1, now).unwrap();
        let mut small = vec![0u8; HEADROOM + 100 + 16 + 11];
        assert_eq!(batch.seal(&mut small, 100), Err(SealError::NoRoom));
        assert_eq!(batch.remaining(), 1, "a refused packet keeps its counter");
        let mut exact = vec![0u8; HEADROOM + 112 + 16];
        assert_eq!(batch.seal(&mut exact, 100), Ok(144));
    }
}
