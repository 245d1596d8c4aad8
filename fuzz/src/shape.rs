//! Input shaping: edits that make fuzz inputs get past a length or checksum
//! check more often, so that the fuzzer reaches the logic behind it. They
//! make inputs and judge nothing (the judge is [`crate::oracle`]), so they
//! write through encapd's views without the views' checks: they must also
//! work on packets that are malformed on purpose.

use encapd::wire::checksum;
use encapd::wire::{Ipv4Packet, Ipv6Packet, ipv4, ipv6, tcp, udp};

use crate::oracle::{PROTO_TCP, PROTO_UDP};

/// Makes the IP length field agree with the bytes present (IPv4 total
/// length, IPv6 payload length). Lengths that do not fit the field, and
/// packets too short to hold it, are left alone.
pub fn fix_ip_length(pkt: &mut [u8]) {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= ipv4::field::TOTAL_LEN.end => {
            if let Ok(total) = u16::try_from(pkt.len()) {
                Ipv4Packet::new_unchecked(pkt).set_total_len(total);
            }
        }
        Some(6) if pkt.len() >= ipv6::HEADER_LEN => {
            if let Ok(payload) = u16::try_from(pkt.len() - ipv6::HEADER_LEN) {
                Ipv6Packet::new_unchecked(pkt).set_payload_len(payload);
            }
        }
        _ => {}
    }
}

/// Rewrites the IPv4 header checksum so the header verifies (when the IHL
/// is at least 5 and the header fits).
pub fn fix_ipv4_checksum(pkt: &mut [u8]) {
    if pkt.first().map(|b| b >> 4) != Some(4) || pkt.len() < ipv4::HEADER_LEN {
        return;
    }
    let header_len = Ipv4Packet::new_unchecked(&*pkt).header_len();
    if header_len < ipv4::HEADER_LEN || header_len > pkt.len() {
        return;
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..header_len]);
    ip.fill_checksum();
}

/// Where the transport header starts and which protocol it is, read
/// leniently (IHL taken as it is, lengths not checked).
fn transport_at(pkt: &[u8]) -> Option<(bool, usize, u8)> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= ipv4::HEADER_LEN => {
            let ip = Ipv4Packet::new_unchecked(pkt);
            Some((true, ip.header_len(), ip.protocol()))
        }
        Some(6) if pkt.len() >= ipv6::HEADER_LEN => Some((false, ipv6::HEADER_LEN, Ipv6Packet::new_unchecked(pkt).next_header())),
        _ => None,
    }
}

/// Rewrites the TCP/UDP checksum of a packet so that the transport sum over
/// everything after the IP header verifies. Lenient on purpose: a TCP header
/// too short to hold the checksum field (data offset below 5) gets the sum
/// fixed through the first half of its acknowledgment number instead, so
/// the fuzzer can also build packets that are malformed in that way yet
/// pass checksum validation. Packets that are not TCP/UDP, or too short,
/// are left alone.
pub fn fix_l4_checksum(pkt: &mut [u8]) {
    let Some((v4, ip_len, proto)) = transport_at(pkt) else { return };
    if ip_len < ipv4::HEADER_LEN || ip_len > pkt.len() {
        return;
    }
    let l4_len = pkt.len() - ip_len;
    let field = match proto {
        PROTO_UDP if l4_len >= udp::HEADER_LEN => udp::field::CHECKSUM.start,
        PROTO_TCP if l4_len >= tcp::field::CHECKSUM.end => tcp::field::CHECKSUM.start,
        PROTO_TCP if l4_len >= tcp::field::ACK_NUM.start + 2 => tcp::field::ACK_NUM.start,
        _ => return,
    };
    let at = ip_len + field;
    pkt[at..at + 2].fill(0);
    let addrs = if v4 {
        &pkt[ipv4::field::SRC_ADDR.start..ipv4::field::DST_ADDR.end]
    } else {
        &pkt[ipv6::field::SRC_ADDR.start..ipv6::field::DST_ADDR.end]
    };
    let mut sum = checksum::accumulate(0, addrs);
    sum = checksum::accumulate(sum, &[0, proto]);
    sum = checksum::accumulate(sum, &(l4_len as u32).to_be_bytes());
    let mut c = checksum::finish(checksum::accumulate(sum, &pkt[ip_len..]));
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}
