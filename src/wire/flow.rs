//! The flow hash of an inner IP packet: which packets belong to one
//! conversation, computed the same way by the sender (so a GSO send never
//! mixes flows) and by the receiver's socket-steering program
//! (`sys::steering`, which must agree with it bit for bit).

use super::ip::{PROTO_TCP, PROTO_UDP};

/// The 16-bit flow hash of an IP packet: inner addresses, and for TCP and
/// UDP the ports, XORed and folded, so that both directions of a flow hash
/// alike. 0 for a packet too short to hold them (the steering program then
/// picks socket 0).
pub fn flow_key(pkt: &[u8]) -> u16 {
    let word = |at: usize| pkt.get(at..at + 4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    let (addrs, proto, ports_at) = match pkt.first().map(|b| b >> 4) {
        Some(4) => (word(12).zip(word(16)), pkt.get(9), usize::from(pkt[0] & 0x0f) * 4),
        Some(6) => (word(20).zip(word(36)), pkt.get(6), 40),
        _ => return 0,
    };
    let (Some((src, dst)), Some(&proto)) = (addrs, proto) else { return 0 };
    let mut h = src ^ dst;
    if proto == PROTO_TCP || proto == PROTO_UDP {
        let Some(ports) = word(ports_at) else { return 0 };
        h ^= ports;
    }
    let h = (h ^ (h >> 16)) & 0xffff;
    (h ^ (h >> 8)) as u16
}
