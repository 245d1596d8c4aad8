//! The flow hash of an inner IP packet: which packets belong to one
//! conversation, computed the same way by the sender (so a GSO send never
//! mixes flows) and by the receiver's socket-steering program
//! (`sys::steering`, which must agree with it bit for bit).
//!
//! Because it mirrors a classic BPF program, which loads words at fixed
//! offsets and checks nothing, it reads the header fields by their offsets
//! (the views' `field` constants) on any bytes, well-formed or not,
//! instead of through a checked view: a view would refuse packets the
//! program still hashes.

use super::ip::{PROTO_TCP, PROTO_UDP};
use super::{ipv4, ipv6, read_u32, tcp};

/// Multiplier of the final mix (2^32 / φ, Knuth's multiplicative hashing).
pub const MIX: u32 = 0x9E37_79B1;

/// The 16-bit flow hash of an IP packet: inner addresses, and for TCP and
/// UDP the ports, XORed and folded to 16 bits, so that both directions of
/// a flow hash alike; then multiplied by [`MIX`] and the high half taken,
/// so that every bit of the result depends on every bit of the fold. The
/// fold alone left its low bit (what picks one of two workers) to the
/// parity of bits 0 and 8 of the ports: the even source ports Linux
/// gives `connect()` put every stream of an `iperf3 -P 4` on one worker.
/// 0 for a packet too short to hold them (the steering program then
/// picks socket 0).
#[inline]
pub fn flow_key(pkt: &[u8]) -> u16 {
    let word = |at: usize| pkt.get(at..at + 4).map(|w| read_u32(w, 0));
    let (addrs, proto, ports_at) = match pkt.first().map(|b| b >> 4) {
        Some(4) => (
            // The IPv4 addresses are adjacent: source at 12, destination at 16.
            word(ipv4::field::SRC_ADDR.start).zip(word(ipv4::field::DST_ADDR.start)),
            pkt.get(ipv4::field::PROTOCOL),
            usize::from(pkt[ipv4::field::VER_IHL] & 0x0f) * 4,
        ),
        // The IPv6 addresses' last words, as the steering program loads them.
        Some(6) => (
            word(ipv6::field::SRC_ADDR.end - 4).zip(word(ipv6::field::DST_ADDR.end - 4)),
            pkt.get(ipv6::field::NEXT_HEADER),
            ipv6::HEADER_LEN,
        ),
        _ => return 0,
    };
    let (Some((src, dst)), Some(&proto)) = (addrs, proto) else { return 0 };
    let mut h = src ^ dst;
    if proto == PROTO_TCP || proto == PROTO_UDP {
        // Source and destination port, one word (the same place in both).
        let Some(ports) = word(ports_at + tcp::field::SRC_PORT.start) else { return 0 };
        h ^= ports;
    }
    let h = (h ^ (h >> 16)) & 0xffff;
    (h.wrapping_mul(MIX) >> 16) as u16
}
