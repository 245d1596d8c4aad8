//! `datapath::offload::prepare_egress` on arbitrary virtio-net headers and
//! packets, as a TUN with `IFF_VNET_HDR` hands them over, judged by
//! etherparse ([`crate::oracle`]):
//! - on success every segment lies within the buffer and segments do not
//!   overlap;
//! - a plain packet is left alone but for a completed checksum that
//!   verifies (etherparse's one's-complement sum);
//! - a GSO split is accepted only for what etherparse reads as one whole
//!   TCP or UDP packet of the GSO type's kind, and always for such a packet
//!   when the virtio header and the room allow it; every segment is a
//!   valid packet by etherparse's reading and checksums, with the
//!   original's header fields (but lengths, IPv4 ID, sequence number,
//!   FIN/PSH/CWR and checksums), consecutive sequence numbers and IDs,
//!   FIN/PSH only on the last and CWR only on the first, full-size payloads
//!   but the last, and payloads that add up to the super-packet's.
//!
//! Input: bytes 0-9 = virtio-net header (`VnetHdr::decode`), then the packet.

use etherparse::checksum::Sum16BitWords;

use crate::oracle::{L4, assert_same_headers, l4};
use encapd::datapath::offload::{OffloadError, prepare_egress};
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
    let room = buf.len();
    let result = prepare_egress(&mut buf, VNET_HDR_LEN, len, &hdr);
    let kind = hdr.gso_kind();
    if kind != GSO_NONE {
        check_gso_acceptance(&result, orig, &hdr, room);
    }
    let Ok(split) = result else { return };

    assert_eq!(split.start, VNET_HDR_LEN);
    assert!(split.count >= 1);
    let mut prev_end = split.start;
    for i in 0..split.count {
        let (off, n) = split.segment(i);
        assert!(off >= prev_end, "segment {i} at {off} overlaps the previous one (ends at {prev_end})");
        assert!(off.checked_add(n).is_some_and(|e| e <= buf.len()), "segment {i} ({off}+{n}) beyond the buffer ({})", buf.len());
        prev_end = off + n;
    }

    if kind == GSO_NONE {
        assert_eq!((split.count, split.segment(0)), (1, (VNET_HDR_LEN, len)));
        check_plain(&buf[VNET_HDR_LEN..VNET_HDR_LEN + len], orig, &hdr);
        return;
    }
    let o = l4(orig).expect("checked by check_gso_acceptance");
    let g = usize::from(hdr.gso_size);
    assert_eq!(split.count, o.payload.len().div_ceil(g), "segment count");
    assert_eq!(split.stride, o.head + g, "stride");
    let mut joined = Vec::with_capacity(o.payload.len());
    for i in 0..split.count {
        let (off, n) = split.segment(i);
        let seg = &buf[off..off + n];
        let s = l4(seg).unwrap_or_else(|| panic!("segment {i}/{} is not a whole TCP/UDP packet per etherparse", split.count));
        check_segment(&s, &o, i, split.count, joined.len());
        assert!(!s.payload.is_empty() && s.payload.len() <= g, "segment {i} carries {} bytes, segment size {g}", s.payload.len());
        assert!(i + 1 == split.count || s.payload.len() == g, "only the last segment may be short");
        joined.extend_from_slice(s.payload);
    }
    assert!(joined == o.payload, "the segments' payloads do not add up to the super-packet's payload");
}

/// A GSO split is accepted exactly when etherparse reads one whole TCP or
/// UDP packet of the kind the GSO type names and the virtio header and the
/// buffer allow the cut.
fn check_gso_acceptance(result: &Result<encapd::datapath::offload::Split, OffloadError>, orig: &[u8], hdr: &VnetHdr, room: usize) {
    let kind = hdr.gso_kind();
    let known = matches!(kind, GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4);
    let Some(o) = l4(orig) else {
        assert!(result.is_err(), "GSO type {kind} accepted for a packet etherparse does not read as one whole TCP/UDP packet");
        return;
    };
    let kind_ok = match kind {
        GSO_TCPV4 => o.ipv4 && o.tcp,
        GSO_TCPV6 => !o.ipv4 && o.tcp,
        GSO_UDP_L4 => !o.tcp,
        _ => false,
    };
    let g = usize::from(hdr.gso_size);
    let csum_ok = hdr.flags & F_NEEDS_CSUM == 0 || usize::from(hdr.csum_start) == o.ip_len;
    let count = if g == 0 { 0 } else { o.payload.len().div_ceil(g) };
    let fits = VNET_HDR_LEN + count * o.head + o.payload.len() <= room;
    let expect = known && kind_ok && csum_ok && g > 0 && !o.payload.is_empty() && fits;
    assert_eq!(
        result.is_ok(),
        expect,
        "prepare_egress gives {result:?} for GSO type {kind}, size {g}, a {}-byte header of a valid packet",
        o.head
    );
}

/// A plain packet: untouched, or with the checksum at `csum_start +
/// csum_offset` completed so that the sum from `csum_start` verifies.
fn check_plain(pkt: &[u8], orig: &[u8], hdr: &VnetHdr) {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        assert_eq!(pkt, orig, "a plain packet without NEEDS_CSUM must be left untouched");
        return;
    }
    let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
    let field = start + offset;
    assert!(field + 2 <= pkt.len(), "checksum field {field} outside a {}-byte packet", pkt.len());
    for (i, (a, b)) in orig.iter().zip(pkt).enumerate() {
        assert!(a == b || i == field || i == field + 1, "byte {i} changed by the checksum completion");
    }
    if offset % 2 == 0 {
        // The field held the pseudo-header sum; with it, the completed sum verifies.
        let sum = Sum16BitWords::new().add_2bytes([orig[field], orig[field + 1]]).add_slice(&pkt[start..]);
        assert_eq!(sum.ones_complement(), 0, "completed checksum does not verify");
        // Where the offsets name a TCP/UDP checksum field that held its
        // pseudo-header sum (by etherparse's sums), etherparse verifies the
        // completed packet.
        if let (Some(o), Some(p)) = (l4(orig), l4(pkt))
            && start == o.ip_len
            && offset == o.checksum_offset()
            && o.partial_checksum() == o.checksum_field()
        {
            assert!(p.transport_checksum_ok(), "etherparse does not verify the completed checksum");
        }
    }
}

/// Segment `i` of `count` against the original `o`: valid, the same header
/// fields, and the fields a split changes right.
fn check_segment(s: &L4<'_>, o: &L4<'_>, i: usize, count: usize, offset: usize) {
    assert!(s.ip_checksum_ok(), "segment {i} IPv4 header checksum");
    assert!(s.transport_checksum_ok(), "segment {i} transport checksum");
    assert_same_headers(s, o, &format!("segment {i}"));
    if o.ipv4 {
        assert_eq!(s.ipv4_header().identification, o.ipv4_header().identification.wrapping_add(i as u16), "segment {i} IPv4 ID");
    }
    if o.tcp {
        let (t, ot) = (s.tcp(), o.tcp());
        assert_eq!(t.sequence_number(), ot.sequence_number().wrapping_add(offset as u32), "segment {i} sequence number");
        let last = i + 1 == count;
        assert_eq!((t.fin(), t.psh()), (ot.fin() && last, ot.psh() && last), "segment {i}: FIN/PSH only on the last");
        assert_eq!(t.cwr(), ot.cwr() && i == 0, "segment {i}: CWR only on the first");
    } else {
        assert_eq!(usize::from(s.udp().length()), 8 + s.payload.len(), "segment {i} UDP length");
    }
}
