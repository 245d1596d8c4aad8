//! The internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are kept as a `u64` accumulator of 16-bit big-endian words and folded
//! at the end, so callers can checksum a pseudo-header and a payload in parts;
//! [`PseudoHeader`] is the transport checksum's pseudo-header sum.

/// Adds `data` to a running one's-complement accumulator. Data is taken as
/// big-endian 16-bit words; an odd trailing byte is padded with zero, so only
/// the last part of a multi-part sum may have odd length.
///
/// This is the hottest loop of the offload path (every byte of bulk TCP is
/// summed once on each side), so it is written for the vectorizer: the
/// even-length part is summed as native-endian 32-bit words into eight
/// independent 64-bit lanes, which cannot overflow for any buffer below
/// 2^34 bytes, and folded once. The one's-complement sum does not depend on
/// byte order except for a final byte swap (RFC 1071 §2(B)), and a 32-bit
/// word is congruent to the sum of its two 16-bit halves modulo 0xffff.
pub fn accumulate(sum: u64, data: &[u8]) -> u64 {
    let (even, odd) = data.split_at(data.len() & !1);
    let native = fold(sum_native_words(even));
    // `native` is the folded sum of native-endian words: read its bytes as
    // big-endian to get the folded sum of big-endian words.
    let be = u16::from_be_bytes(native.to_ne_bytes());
    let mut sum = add(sum, u64::from(be));
    if let [last] = odd {
        sum = add(sum, u64::from(*last) << 8);
    }
    sum
}

/// Sum of `data` (even length) as native-endian 32-bit words, plus a final
/// 16-bit word, without end-around carries (the caller folds).
fn sum_native_words(data: &[u8]) -> u64 {
    const LANES: usize = 8;
    let mut lanes = [0u64; LANES];
    let mut blocks = data.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
        }
    }
    let mut total = lanes.iter().fold(0u64, |acc, &l| add(acc, l));
    let mut words = blocks.remainder().chunks_exact(4);
    for word in &mut words {
        total = add(total, u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]])));
    }
    if let [a, b] = words.remainder() {
        total = add(total, u64::from(u16::from_ne_bytes([*a, *b])));
    }
    total
}

/// One's-complement addition of two 64-bit accumulators.
fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Folds an accumulator to 16 bits, keeping its one's-complement value.
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Folds an accumulator into the final 16-bit one's-complement checksum.
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Checksum of one contiguous buffer.
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old`
/// to `new`, without touching the rest of the data.
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The sum of a transport pseudo-header without its length (addresses and
/// protocol; RFC 768, RFC 9293 §3.1, RFC 8200 §8.1): the transport views add
/// their own length and bytes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PseudoHeader {
    sum: u64,
    ipv4: bool,
}

impl PseudoHeader {
    /// Over `addrs` (source then destination, as in the IP header) and
    /// `protocol`, from an IPv4 header or not.
    #[inline]
    pub fn new(addrs: &[u8], protocol: u8, ipv4: bool) -> PseudoHeader {
        PseudoHeader { sum: accumulate(accumulate(0, addrs), &[0, protocol]), ipv4 }
    }

    /// The accumulated sum with an upper-layer length of `l4_len` bytes.
    /// (IPv4 has a 16-bit length field, IPv6 a 32-bit one; for lengths
    /// below 2^16 both add the same to a one's-complement sum.)
    #[inline]
    pub fn sum(&self, l4_len: usize) -> u64 {
        accumulate(self.sum, &(l4_len as u32).to_be_bytes())
    }

    /// The folded, uncomplemented pseudo-header sum that a packet whose
    /// checksum is left to finish (`NEEDS_CSUM`, `CHECKSUM_PARTIAL`)
    /// carries in its checksum field.
    #[inline]
    pub fn partial_checksum(&self, l4_len: usize) -> u16 {
        !finish(self.sum(l4_len))
    }

    /// From an IPv4 header (where a UDP checksum of 0 means "none").
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.ipv4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Word-at-a-time reference straight from RFC 1071's definition.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2, checksum 220d.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
    }

    #[test]
    fn known_ipv4_header() {
        // A captured IPv4 header whose checksum field (b861) is correct.
        let hdr = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
        assert_eq!(checksum(&hdr), 0);
    }

    /// The lane sums must not lose carries at the largest sizes an IP
    /// packet can have, with every word at its maximum.
    #[test]
    fn largest_packets_of_all_ones_match_reference() {
        for len in [65_535usize, 65_534, 65_533, 131_072] {
            let data = vec![0xffu8; len];
            assert_eq!(checksum(&data), reference(&data), "len {len}");
        }
        let ramp: Vec<u8> = (0..65_535u32).map(|i| (i * 7 + (i >> 8)) as u8).collect();
        assert_eq!(checksum(&ramp), reference(&ramp));
    }

    proptest::proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000), start in 0usize..40) {
            // Any alignment of the slice in memory.
            let data = &data[start.min(data.len())..];
            proptest::prop_assert_eq!(checksum(data), reference(data));
        }

        #[test]
        fn split_sums_match_whole(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(data.len() & !1);
            let split = finish(accumulate(accumulate(0, &data[..cut]), &data[cut..]));
            proptest::prop_assert_eq!(split, checksum(&data));
        }

        #[test]
        fn incremental_update_matches_recompute(mut data in proptest::collection::vec(proptest::num::u8::ANY, 2..200), new in proptest::num::u16::ANY) {
            let len = data.len() & !1;
            data.truncate(len);
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[0], data[1]]);
            data[..2].copy_from_slice(&new.to_be_bytes());
            let updated = update16(before, old, new);
            // One's complement has two zeros; both verify the same way.
            let recomputed = checksum(&data);
            proptest::prop_assert!(updated == recomputed || (updated == 0xffff && recomputed == 0) || (updated == 0 && recomputed == 0xffff));
        }
    }
}
