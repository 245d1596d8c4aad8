//! Userspace offload work per byte (criterion): the internet checksum over
//! one MTU-sized segment and over a 64 KB super-packet, the egress split of a
//! 64 KB TCP super-packet into 1,420-byte segments (copy, headers,
//! checksums), and the ingress plan + finish of 45 such segments into one
//! super-packet (flow matching, per-segment checksum verification).
//! Throughput is reported in bytes of packet per second.
//! Run: `cargo bench --bench offload`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use encapd::datapath::offload::{CoalescePlan, PacketRef, prepare_egress};
use encapd::wire::build::{Packet, Tcp};
use encapd::wire::virtio::{F_NEEDS_CSUM, GSO_TCPV4, VNET_HDR_LEN, VnetHdr};
use encapd::wire::{Ipv4Packet, TcpPacket, checksum};

/// Bytes of TCP payload per segment at a 1,472-byte MTU (20 IP + 32 TCP).
const MSS: usize = 1420;
const SEGMENTS: usize = 45;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// An IPv4/TCP packet (timestamps option) at `seq` with `payload`, full
/// checksums; or, with `partial`, the pseudo-header sum a TUN hands out.
fn tcp4(seq: u32, payload: &[u8], partial: bool) -> Vec<u8> {
    let mut p = Packet::new([100, 96, 1, 2], [100, 96, 2, 3]).tcp(Tcp::new(40000, 5201).seq(seq).options(&Tcp::TIMESTAMPS), payload);
    if partial {
        let mut ip = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        let pseudo = ip.pseudo_header(ip.protocol());
        let l4 = ip.payload_mut();
        let partial = pseudo.partial_checksum(l4.len());
        TcpPacket::new_checked(l4).unwrap().set_checksum(partial);
    }
    p
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [1472usize, 65_000] {
        let buf = data(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len}B"), |b| b.iter(|| checksum::checksum(black_box(&buf))));
    }
    g.finish();
}

fn bench_split(c: &mut Criterion) {
    let payload = data(SEGMENTS * MSS);
    let pkt = tcp4(1000, &payload, true);
    let hdr = VnetHdr { flags: F_NEEDS_CSUM, gso_type: GSO_TCPV4, hdr_len: 52, gso_size: MSS as u16, csum_start: 20, csum_offset: 16 };
    let mut buf = vec![0u8; VNET_HDR_LEN + pkt.len() + SEGMENTS * 52];
    let mut g = c.benchmark_group("egress_split");
    g.throughput(Throughput::Bytes(pkt.len() as u64));
    g.bench_function(format!("tcp4_{SEGMENTS}x{MSS}"), |b| {
        b.iter(|| {
            buf[VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()].copy_from_slice(&pkt);
            prepare_egress(black_box(&mut buf), VNET_HDR_LEN, pkt.len(), &hdr).unwrap()
        })
    });
    g.finish();
}

fn bench_coalesce(c: &mut Criterion) {
    let payload = data(SEGMENTS * MSS);
    let mut buf = Vec::new();
    let mut packets = Vec::new();
    for (i, chunk) in payload.chunks(MSS).enumerate() {
        let p = tcp4(1000 + (i * MSS) as u32, chunk, false);
        packets.push(PacketRef { offset: buf.len(), len: p.len() });
        buf.extend_from_slice(&p);
    }
    let pristine = buf.clone();
    let mut plan = CoalescePlan::default();
    let mut g = c.benchmark_group("ingress_coalesce");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(format!("tcp4_{SEGMENTS}x{MSS}"), |b| {
        b.iter(|| {
            buf[..52].copy_from_slice(&pristine[..52]);
            plan.plan(black_box(&buf), &packets, false);
            let group = plan.groups()[0];
            assert_eq!(group.count, SEGMENTS);
            plan.finish_group(&mut buf, &packets, &group)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_checksum, bench_split, bench_coalesce);
criterion_main!(benches);
