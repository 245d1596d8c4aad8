//! `datapath::offload::prepare_egress` on arbitrary virtio-net headers and
//! packets, as a TUN with `IFF_VNET_HDR` hands them over: on success every
//! segment lies within the buffer, segments do not overlap, and a GSO split
//! yields packets that parse, carry valid IPv4 header and transport
//! checksums, consecutive TCP sequence numbers, and together exactly the
//! payload of the super-packet; a finished partial checksum verifies.
//!
//! Input: bytes 0-9 = virtio-net header (`VnetHdr::decode`), then the packet.

use crate::{l4_checksum_ok, layout, tcp_seq};
use encapd::datapath::offload::prepare_egress;
use encapd::wire::checksum;
use encapd::wire::ip::{self, PROTO_TCP, PROTO_UDP};
use encapd::wire::virtio::{F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VNET_HDR_LEN, VnetHdr};

/// Room after the packet for the headers a split adds.
const SPARE: usize = 64 * 1024;

/// One input, as libFuzzer hands it over (panics on a finding).
pub fn run(data: &[u8]) {
    let Some(hdr) = VnetHdr::decode(data) else { return };
    let orig = &data[VNET_HDR_LEN..];
    let len = orig.len();
    // As the engines lay it out: the virtio header, then the packet.
    let mut buf = vec![0u8; VNET_HDR_LEN + len + SPARE];
    buf[..data.len()].copy_from_slice(data);
    let Ok(split) = prepare_egress(&mut buf, VNET_HDR_LEN, len, &hdr) else { return };

    assert_eq!(split.start, VNET_HDR_LEN);
    assert!(split.count >= 1);
    let mut prev_end = split.start;
    for i in 0..split.count {
        let (off, n) = split.segment(i);
        assert!(off >= prev_end, "segment {i} at {off} overlaps the previous one (ends at {prev_end})");
        assert!(off.checked_add(n).is_some_and(|e| e <= buf.len()), "segment {i} ({off}+{n}) beyond the buffer ({})", buf.len());
        prev_end = off + n;
    }

    let kind = hdr.gso_kind();
    if kind == GSO_NONE {
        assert_eq!((split.count, split.segment(0)), (1, (VNET_HDR_LEN, len)));
        let pkt = &buf[VNET_HDR_LEN..VNET_HDR_LEN + len];
        if hdr.flags & F_NEEDS_CSUM == 0 {
            assert_eq!(pkt, orig, "a plain packet without NEEDS_CSUM must be left untouched");
            return;
        }
        let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
        let field = start + offset;
        assert!(field + 2 <= len, "checksum field {field} outside a {len}-byte packet");
        for (i, (a, b)) in orig.iter().zip(pkt).enumerate() {
            assert!(a == b || i == field || i == field + 1, "byte {i} changed by the checksum completion");
        }
        if offset % 2 == 0 {
            // The field held the pseudo-header sum; with it, the completed sum verifies.
            let pseudo = checksum::accumulate(0, &orig[field..field + 2]);
            assert_eq!(checksum::finish(checksum::accumulate(pseudo, &pkt[start..])), 0, "completed checksum does not verify");
        }
        return;
    }

    // A GSO split: the headers must really be what the GSO type says.
    let l = layout(orig).unwrap_or_else(|| panic!("GSO type {kind} accepted for a packet with malformed TCP/UDP headers"));
    match kind {
        GSO_TCPV4 => assert!(l.v4 && l.proto == PROTO_TCP),
        GSO_TCPV6 => assert!(!l.v4 && l.proto == PROTO_TCP),
        GSO_UDP_L4 => assert_eq!(l.proto, PROTO_UDP),
        other => panic!("unknown GSO type {other} accepted"),
    }
    let head = l.head();
    let g = usize::from(hdr.gso_size);
    let payload = &orig[head..];
    assert!(g > 0 && !payload.is_empty());
    assert_eq!(split.count, payload.len().div_ceil(g), "segment count");
    assert_eq!(split.stride, head + g, "stride");
    let seq0 = if l.proto == PROTO_TCP { tcp_seq(orig, &l) } else { 0 };
    let mut joined = Vec::with_capacity(payload.len());
    for i in 0..split.count {
        let (off, n) = split.segment(i);
        let seg = &buf[off..off + n];
        let h = ip::parse(seg).unwrap_or_else(|e| panic!("segment {i}/{} does not parse: {e}", split.count));
        assert_eq!(h.header_len, l.ip_len);
        assert_eq!(h.protocol, l.proto);
        let fixed = if l.v4 { 2 } else { 4 };
        assert_eq!(&seg[..fixed], &orig[..fixed], "segment {i} version / header length / traffic class");
        let (ip_orig, ip_seg) = if l.v4 { (&orig[12..20], &seg[12..20]) } else { (&orig[8..40], &seg[8..40]) };
        assert_eq!(ip_seg, ip_orig, "segment {i} addresses");
        if l.v4 {
            assert_eq!(checksum::checksum(&seg[..l.ip_len]), 0, "segment {i} IPv4 header checksum");
        }
        assert!(l4_checksum_ok(seg, l.v4, l.proto, &seg[l.ip_len..]), "segment {i} transport checksum");
        let l4 = &seg[l.ip_len..];
        assert_eq!(&l4[..4], &orig[l.ip_len..l.ip_len + 4], "segment {i} ports");
        if l.proto == PROTO_TCP {
            assert_eq!(tcp_seq(seg, &l), seq0.wrapping_add((i * g) as u32), "segment {i} sequence number");
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([l4[4], l4[5]])), l4.len(), "segment {i} UDP length");
        }
        let chunk = &seg[head..];
        assert!(!chunk.is_empty() && chunk.len() <= g, "segment {i} carries {} bytes, segment size {g}", chunk.len());
        assert!(i + 1 == split.count || chunk.len() == g, "only the last segment may be short");
        joined.extend_from_slice(chunk);
    }
    assert!(joined == payload, "the segments' payloads do not add up to the super-packet's payload");
}
