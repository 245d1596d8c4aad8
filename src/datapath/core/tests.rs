//! The forwarding core without any I/O: packets in, plans and counters out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::*;
use crate::datapath::format::flannel_udp::FlannelUdp;
use crate::route::{PeerSpec, TableScope, share};
use crate::stats::latency::LatencyHub;
use crate::wire::Ipv4Packet;
use crate::wire::build::{Packet, Tcp};
use crate::wire::virtio::{GSO_TCPV4, VNET_HDR_LEN, VnetHdr};

const B: &str = "198.18.0.2:8285";

fn table(version: u64, peers: &[(&str, &str)]) -> SubnetTable {
    let scope =
        TableScope { own: vec!["100.96.1.0/24".parse().unwrap()], networks: vec!["100.96.0.0/16".parse().unwrap()], underlay_ipv4: true };
    let peers: Vec<PeerSpec> = peers
        .iter()
        .map(|(s, e)| PeerSpec {
            wireguard: None,
            vtep_mac: None,
            kernel_decap: false,
            subnet: s.parse().unwrap(),
            endpoint: e.parse().unwrap(),
            origin: (*s).into(),
        })
        .collect();
    SubnetTable::build(version, &scope, &peers).unwrap()
}

struct Fixture {
    core: ForwardingCore<FlannelUdp>,
    counters: Arc<WorkerCounters>,
    shared: SharedTable,
    _hub: LatencyHub,
}

fn fixture(vnet_hdr: bool) -> Fixture {
    let shared = share(table(1, &[("100.96.2.0/24", B)]));
    let counters = Arc::new(WorkerCounters::default());
    let (hub, mut recorders) = LatencyHub::new(1);
    let setup = CoreSetup {
        worker: 0,
        node: NodeScope { own_v4: "100.96.1.0/24".parse().unwrap(), own_v6: None, max_inner: 1472 },
        vnet_hdr,
        uso: false,
        gso: true,
        trust_outer_checksum: false,
        batch: 8,
        table: Arc::clone(&shared),
        counters: Arc::clone(&counters),
        latency: recorders.remove(0),
    };
    Fixture { core: ForwardingCore::new(setup, FlannelUdp, Instant::now()), counters, shared, _hub: hub }
}

fn from_a(payload: usize) -> Vec<u8> {
    Packet::new([100, 96, 1, 2], [100, 96, 2, 3]).udp(4000, 5000, &vec![9; payload])
}

fn into_buf(pkt: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    buf[..pkt.len()].copy_from_slice(pkt);
    buf
}

#[test]
fn a_forwarded_packet_is_planned_and_its_send_counted() {
    let mut f = fixture(false);
    let tag = f.core.begin_batch(Instant::now());
    let pkt = from_a(100);
    let mut buf = into_buf(&pkt);
    assert!(f.core.egress_read(3, &mut buf, pkt.len()).is_none());
    assert_eq!(Ipv4Packet::new_checked(&buf[..pkt.len()]).unwrap().ttl(), 63, "TTL decremented in place");
    assert_eq!(f.core.plan_sends(), 1);
    let run = f.core.run(0);
    assert_eq!((run.endpoint, run.count, run.gso_segment()), (B.parse().unwrap(), 1, None));
    let p = f.core.run_packets(&run)[0];
    assert_eq!((p.buf, p.offset, p.len as usize), (3, 0, pkt.len()));
    assert!(f.core.header_for(&run).is_empty(), "flannel's format has no header");
    let outcome = f.core.send_done(Ok(pkt.len()), 1, false, tag, Instant::now());
    assert_eq!(outcome, SendOutcome::Sent);
    let s = f.counters.snapshot();
    assert_eq!((s.egress_packets, s.egress_bytes, s.egress_sends), (1, pkt.len() as u64, 1));
}

#[test]
fn one_flow_shares_a_gso_send_until_the_kernel_refuses_gso() {
    let mut f = fixture(false);
    let tag = f.core.begin_batch(Instant::now());
    let pkt = from_a(500);
    let mut bufs: Vec<Vec<u8>> = (0..3).map(|_| into_buf(&pkt)).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        f.core.egress_read(i as u32, b, pkt.len());
    }
    assert_eq!(f.core.plan_sends(), 1);
    let run = f.core.run(0);
    assert_eq!((run.count, run.gso_segment()), (3, Some(pkt.len() as u16)));
    let refused = f.core.send_done(Err(std::io::Error::from_raw_os_error(libc::EIO)), 3, true, tag, Instant::now());
    assert_eq!(refused, SendOutcome::GsoRefused);
    assert_eq!(f.counters.snapshot().drop_count(DropReason::SendFailed), 0, "the engine decides: resend or abandon");
    f.core.end_egress_batch();
    f.core.begin_batch(Instant::now());
    for (i, b) in bufs.iter_mut().enumerate() {
        f.core.egress_read(i as u32, b, pkt.len());
    }
    assert_eq!(f.core.plan_sends(), 3, "without GSO every datagram is a send of its own");
    assert!((0..3).all(|i| f.core.run(i).gso_segment().is_none()));
}

#[test]
fn unroutable_packets_earn_icmp_errors_up_to_the_rate_limit() {
    let mut f = fixture(false);
    f.core.begin_batch(Instant::now());
    let pkt = Packet::new([100, 96, 1, 2], [100, 96, 9, 9]).udp(1, 2, &[0; 10]);
    let mut sent = 0;
    for _ in 0..ICMP_BURST + 20 {
        let mut buf = into_buf(&pkt);
        let reply = f.core.egress_read(0, &mut buf, pkt.len()).map(|reply| {
            let h = crate::wire::ip::parse(reply).unwrap();
            assert_eq!(h.dst, IpAddr::from([100, 96, 1, 2]), "the error goes back to the sender");
            reply.len()
        });
        if let Some(len) = reply {
            f.core.icmp_written(Ok(len));
            sent += 1;
        }
    }
    let s = f.counters.snapshot();
    assert_eq!(sent, ICMP_BURST);
    assert_eq!((s.icmp_sent, s.icmp_rate_limited), (u64::from(ICMP_BURST), 20));
    assert_eq!(s.drop_count(DropReason::NoRoute), u64::from(ICMP_BURST) + 20);
    assert_eq!(f.core.plan_sends(), 0);
}

#[test]
fn ingress_accepts_the_owner_of_the_source_and_counts_the_rest() {
    let mut f = fixture(false);
    let tag = f.core.begin_batch(Instant::now());
    let good = Packet::new([100, 96, 2, 3], [100, 96, 1, 2]).udp(1, 2, &[1; 40]);
    let spoofed = Packet::new([100, 96, 7, 3], [100, 96, 1, 2]).udp(1, 2, &[1; 40]);
    let from_b: SocketAddr = B.parse().unwrap();
    let mut buf = good.clone();
    let n = buf.len();
    assert_eq!(f.core.ingress_datagram(Some(from_b), &mut buf, 0..n, None), 1);
    let w = f.core.tun_write(0);
    assert_eq!(w.vnet_hdr, None);
    assert_eq!(f.core.write_pieces(&w), &[Piece { offset: 0, len: n }]);
    f.core.tun_written(Ok(n), w.packets, w.inner_bytes, tag, Instant::now() + Duration::from_micros(30));
    let mut buf = spoofed.clone();
    assert_eq!(f.core.ingress_datagram(Some(from_b), &mut buf, 0..n, None), 0);
    let mut buf = good.clone();
    assert_eq!(f.core.ingress_datagram(Some("198.18.0.9:8285".parse().unwrap()), &mut buf, 0..n, None), 0);
    let s = f.counters.snapshot();
    assert_eq!((s.ingress_packets, s.ingress_bytes, s.ingress_receives), (1, n as u64, 3));
    assert_eq!(s.drop_count(DropReason::SpoofedSource), 1);
    assert_eq!(s.drop_count(DropReason::UnknownSender), 1);
}

#[test]
fn a_gro_run_of_one_flow_is_written_as_one_super_packet() {
    let mut f = fixture(true);
    f.core.begin_batch(Instant::now());
    let seg =
        |seq: u32| Packet::new([100, 96, 2, 3], [100, 96, 1, 2]).tcp(Tcp::new(5201, 40000).seq(seq).options(&Tcp::TIMESTAMPS), &[7; 1000]);
    let (a, b, c) = (seg(0), seg(1000), seg(2000));
    // The run sits 16 bytes into the receive buffer, as behind a recvmsg header.
    let mut buf = vec![0u8; 16];
    buf.extend_from_slice(&a);
    buf.extend_from_slice(&b);
    buf.extend_from_slice(&c);
    let end = buf.len();
    assert_eq!(f.core.ingress_datagram(Some(B.parse().unwrap()), &mut buf, 16..end, Some(a.len() as u16)), 1);
    let w = f.core.tun_write(0);
    let hdr = VnetHdr::decode(&w.vnet_hdr.unwrap()).unwrap();
    assert_eq!((hdr.gso_type, usize::from(hdr.gso_size)), (GSO_TCPV4, 1000));
    assert_eq!((w.packets, w.inner_bytes as usize), (3, 3 * a.len()));
    let head = a.len() - 1000;
    let lens: Vec<usize> = f.core.write_pieces(&w).iter().map(|p| p.len).collect();
    assert_eq!(lens, vec![a.len(), 1000, 1000], "later segments go in without their headers");
    assert_eq!(f.core.write_pieces(&w)[1].offset, 16 + a.len() + head);
    assert_eq!(VNET_HDR_LEN, w.vnet_hdr.unwrap().len());
}

#[test]
fn a_new_table_is_used_from_the_next_batch_and_reported() {
    let mut f = fixture(false);
    assert_eq!(f.counters.table_version.load(Relaxed), 1);
    f.core.begin_batch(Instant::now());
    let pkt = Packet::new([100, 96, 1, 2], [100, 96, 3, 3]).udp(1, 2, &[0; 10]);
    let mut buf = into_buf(&pkt);
    let _ = f.core.egress_read(0, &mut buf, pkt.len());
    assert_eq!(f.core.plan_sends(), 0, "100.96.3.0/24 is not routed in version 1");
    f.core.end_egress_batch();
    f.shared.store(Arc::new(table(2, &[("100.96.2.0/24", B), ("100.96.3.0/24", "198.18.0.3:8285")])));
    f.core.begin_batch(Instant::now());
    assert_eq!(f.counters.table_version.load(Relaxed), 2, "the worker reports the version it runs");
    let mut buf = into_buf(&pkt);
    let _ = f.core.egress_read(0, &mut buf, pkt.len());
    assert_eq!(f.core.plan_sends(), 1);
    assert_eq!(f.core.run(0).endpoint, "198.18.0.3:8285".parse().unwrap());
}
