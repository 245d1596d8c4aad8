//! The vxlan backend against the real thing: Linux kernel VTEPs configured
//! exactly as flannel configures `flannel.1`, in a fleet of namespaces on a
//! bridged underlay, with pods attached by the standard CNI plugins from
//! each node's subnet.env (see `common::fleet`). Root only.
//!
//! - an encapd node and a kernel VTEP: ping both ways (IPv4 and IPv6), 1 GB
//!   of TCP each way with matching SHA-256, UDP at 64, 512 and 1,400 bytes;
//! - two encapd nodes and a kernel VTEP: every pair reaches every other;
//!   from the kernel side a wrong VNI, a wrong inner MAC, a spoofed inner
//!   source and malformed frames are dropped and counted by reason; a
//!   kernel VTEP that lost its neighbour entry asks with ARP and is
//!   answered; the same with `kernel_path = "tc"` on both encapd nodes,
//!   where TCP between every pair of nodes crosses in the kernel, intact;
//! - pods: two per node attached by the CNI plugins reach the other node's
//!   pods, and a CNI DEL removes one while another pod's stream continues;
//! - with etcd: a kernel VTEP whose lease is written in flanneld's exact
//!   vxlan JSON is found and reached, and encapd's own lease reads back in
//!   the same schema; with the kernel path, that lease (a kernel VTEP
//!   decapsulates in the kernel) is sent to from encapd's eBPF program.
//!
//! The tests that move bulk data (1 GB each way; TCP through the kernel
//! path) run on both underlay profiles (`veth::...`, `wire::...`; see
//! `common::underlay`).

use encapd_testbed as common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::fleet::{ETCD_PREFIX, Fleet, FleetOptions, Kind, Pod, VNI};
use common::packets::{Packet, udp_socket};
use common::traffic::{UdpStream, hashed_transfer, sized_udp_delivered};
use common::{Underlay, in_netns, ip, require_root};
use encapd::wire::vxlan::{self, Frame, Mac};

const ENCAPD_VXLAN: Kind = Kind::Encapd { backend: "vxlan", engine: "uring" };

fn v6(pod: &Pod) -> IpAddr {
    IpAddr::V6(pod.addrs.ip6.expect("dual-stack pod"))
}

fn v4(pod: &Pod) -> IpAddr {
    IpAddr::V4(pod.addrs.ip)
}

fn an_encapd_node_and_a_kernel_vtep_talk_both_ways(u: Underlay) {
    if !require_root() || !common::require_tools(&["bridge"]) {
        return;
    }
    let mut fleet = Fleet::with(FleetOptions { underlay: u, ..FleetOptions::new(&[ENCAPD_VXLAN, Kind::KernelVtep], 2) });
    let (a, b) = (fleet.add_pod(0), fleet.add_pod(1));
    for (from, to) in [(&a, &b), (&b, &a)] {
        assert!(fleet.ping_ok(&from.ns, v4(to)), "IPv4 ping {} -> {}", from.ns, to.ns);
        assert!(fleet.ping_ok(&from.ns, v6(to)), "IPv6 ping {} -> {}", from.ns, to.ns);
    }
    let total = 1 << 30;
    for (from, to, seed) in [(&a, &b, 1), (&b, &a, 2)] {
        let t = hashed_transfer(&from.ns, &to.ns, SocketAddr::new(v4(to), 5201), seed, total, Duration::from_secs(180));
        assert_eq!((t.sent, t.got), (total, total), "bytes {} -> {}", from.ns, to.ns);
        assert_eq!(t.got_hash, t.sent_hash, "SHA-256 {} -> {}", from.ns, to.ns);
        let secs = (t.last_byte - t.first_byte).as_secs_f64();
        eprintln!("1 GB {} -> {}: {:.2} Gbit/s", from.ns, to.ns, total as f64 * 8.0 / secs / 1e9);
    }
    let t = hashed_transfer(&a.ns, &b.ns, SocketAddr::new(v6(&b), 5202), 3, 64 << 20, Duration::from_secs(60));
    assert_eq!(t.got_hash, t.sent_hash, "IPv6 TCP to the kernel VTEP's pod");
    for size in [64usize, 512, 1400] {
        for (from, to) in [(&a, &b), (&b, &a)] {
            let got = sized_udp_delivered(&from.ns, v4(from), &to.ns, SocketAddr::new(v4(to), 7000), size, 2000, 4000);
            assert!(got >= 1990, "UDP {size} B {} -> {}: {got} of 2000 arrived", from.ns, to.ns);
        }
    }
    let drops = fleet.metric(0, "encapd_drops_total", &[]);
    let sent = fleet.metric(0, "encapd_tx_packets_total", &[]);
    assert!(sent > 700_000.0, "encapd sent the traffic: {sent}");
    assert!(drops < 50.0, "encapd dropped {drops} packets of clean traffic:\n{}", fleet.metrics(0));
}

/// A VXLAN datagram as a kernel VTEP would send it to `to` (node 0).
fn frame(vni: u32, dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; vxlan::HEADER_LEN];
    vxlan::write_header(&mut h, &Frame { vni, dst, src, ethertype });
    [&h[..], payload].concat()
}

#[test]
fn three_nodes_two_encapd_one_kernel_vtep() {
    if !require_root() || !common::require_tools(&["bridge"]) {
        return;
    }
    let mut fleet = Fleet::new(&[ENCAPD_VXLAN, ENCAPD_VXLAN, Kind::KernelVtep], 1);
    let pods: Vec<Pod> = (0..3).map(|n| fleet.add_pod(n)).collect();
    every_pod_reaches_every_other(&fleet, &pods);
    the_kernel_side_is_filtered_and_answered(&mut fleet, &pods);
}

/// The same three nodes with `kernel_path = "tc"` on both encapd nodes:
/// IPv4 between every pair of nodes, encapd ↔ encapd and encapd ↔ kernel
/// VTEP, crosses in encapd's eBPF programs and arrives intact, and every
/// frame the programs must not take (the filter's cases, ARP) still
/// reaches the workers, which drop and count it or answer it.
fn three_nodes_two_encapd_one_kernel_vtep_with_the_kernel_path(u: Underlay) {
    if !require_root() || !common::require_tools(&["bridge"]) {
        return;
    }
    let mut options = FleetOptions::new(&[ENCAPD_VXLAN, ENCAPD_VXLAN, Kind::KernelVtep], 1);
    options.dataplane_extra = "kernel_path = \"tc\"\n".into();
    options.underlay = u;
    let mut fleet = Fleet::with(options);
    let pods: Vec<Pod> = (0..3).map(|n| fleet.add_pod(n)).collect();
    every_pod_reaches_every_other(&fleet, &pods);
    // Node 0's kernel path: (packets, inner bytes) it carried each way.
    let carried = |fleet: &Fleet, direction: &str| {
        let f = [("direction", direction)];
        (fleet.metric(0, "encapd_kernel_packets_total", &f), fleet.metric(0, "encapd_kernel_bytes_total", &f))
    };
    for (from, to) in [(0, 2), (2, 0), (0, 1)] {
        assert!(fleet.ping_ok(&pods[from].ns, v6(&pods[to])), "IPv6 node {from} -> node {to}");
    }
    let total = 64 << 20;
    for (from, to, seed) in [(0, 2, 11), (2, 0, 12), (0, 1, 13), (1, 0, 14)] {
        let (out0, in0) = (carried(&fleet, "egress"), carried(&fleet, "ingress"));
        let (a, b) = (&pods[from], &pods[to]);
        let t = hashed_transfer(&a.ns, &b.ns, SocketAddr::new(v4(b), 5300 + seed), seed.into(), total, Duration::from_secs(60));
        assert_eq!((t.got, &t.got_hash), (t.sent, &t.sent_hash), "node {from} -> node {to} arrived intact");
        // Node 0's programs carried the data one way (every byte of it)
        // and the ACKs the other.
        let (out1, in1) = (carried(&fleet, "egress"), carried(&fleet, "ingress"));
        let (data, acks) = if from == 0 { (out1.1 - out0.1, in1.0 - in0.0) } else { (in1.1 - in0.1, out1.0 - out0.0) };
        assert!(data >= total as f64, "node {from} -> node {to}: node 0's kernel path carried {data} of {total} bytes");
        assert!(acks >= 100.0, "node {from} -> node {to}: node 0's kernel path carried {acks} ACK packets");
    }
    assert_eq!(fleet.metric(0, "encapd_kernel_encap_failed_total", &[("reason", "dropped")]), 0.0);
    the_kernel_side_is_filtered_and_answered(&mut fleet, &pods);
}

fn every_pod_reaches_every_other(fleet: &Fleet, pods: &[Pod]) {
    for from in pods {
        for to in pods.iter().filter(|p| p.node != from.node) {
            assert!(fleet.ping_ok(&from.ns, v4(to)), "{} (node {}) -> {} (node {})", from.ns, from.node, to.ns, to.node);
        }
    }
}

/// From the kernel VTEP (node 2): frames encapd on node 0 must refuse are
/// dropped and counted by reason, the well-formed one is delivered, a
/// wrong inner MAC set up the kernel's way is refused, and a lost
/// neighbour entry is recovered by ARP, answered by encapd.
fn the_kernel_side_is_filtered_and_answered(fleet: &mut Fleet, pods: &[Pod]) {
    // From the kernel side (node 2), datagrams encapd on node 0 must refuse.
    let me: Mac = fleet.nodes[0].mac.parse().unwrap();
    let kernel: Mac = fleet.nodes[2].mac.parse().unwrap();
    let from_kernel = udp_socket(&fleet.nodes[2].ns, &fleet.nodes[2].ip.to_string());
    let good_inner = Packet::new(pods[2].addrs.ip, pods[0].addrs.ip).udp(1, 2, b"from the kernel side");
    let spoofed = Packet::new(pods[1].addrs.ip, pods[0].addrs.ip).udp(1, 2, b"claims node 1's pod");
    let cases: [(&str, Vec<u8>); 5] = [
        ("wrong_vni", frame(VNI + 1, me, kernel, vxlan::ETHERTYPE_IPV4, &good_inner)),
        ("wrong_mac", frame(VNI, "02:00:00:00:00:99".parse().unwrap(), kernel, vxlan::ETHERTYPE_IPV4, &good_inner)),
        ("spoofed_source", frame(VNI, me, kernel, vxlan::ETHERTYPE_IPV4, &spoofed)),
        ("bad_vxlan_header", frame(VNI, me, kernel, vxlan::ETHERTYPE_IPV4, &good_inner)[..21].to_vec()),
        ("unsupported_frame", frame(VNI, me, kernel, 0x88cc, &good_inner)),
    ];
    for (reason, datagram) in &cases {
        let before = fleet.metric(0, "encapd_drops_total", &[("reason", reason)]);
        for _ in 0..5 {
            from_kernel.send_to(datagram, fleet.vtep(0)).unwrap();
        }
        let counted =
            common::time_until(Duration::from_secs(3), || fleet.metric(0, "encapd_drops_total", &[("reason", reason)]) >= before + 5.0);
        assert!(counted.is_some(), "{reason}: not counted on node 0:\n{}", fleet.metrics(0));
    }
    // The same datagram, correct, is delivered (the cases above differ in
    // exactly what they say).
    let rx = in_netns(&pods[0].ns, || UdpSocket::bind((pods[0].addrs.ip, 2))).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    from_kernel.send_to(&frame(VNI, me, kernel, vxlan::ETHERTYPE_IPV4, &good_inner), fleet.vtep(0)).unwrap();
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).expect("the well-formed frame arrives");
    assert_eq!(&buf[..n], b"from the kernel side");

    // A wrong inner MAC set up the kernel's own way: its neighbour entry
    // for node 0 names another MAC, so every frame it sends there is
    // dropped (and counted), as a kernel VTEP would drop ours.
    let n2 = fleet.nodes[2].ns.clone();
    let gw0 = fleet.nodes[0].subnet.split('/').next().unwrap().to_owned();
    ip(&n2, &["neigh", "replace", &gw0, "lladdr", "02:00:00:00:00:77", "dev", "flannel.1", "nud", "permanent"]);
    common::must("bridge", &["-n", &n2, "fdb", "append", "02:00:00:00:00:77", "dev", "flannel.1", "dst", &fleet.nodes[0].ip.to_string()]);
    let before = fleet.metric(0, "encapd_drops_total", &[("reason", "wrong_mac")]);
    assert!(!fleet.ping_ok(&pods[2].ns, v4(&pods[0])), "a frame for another MAC must not be delivered");
    assert!(fleet.metric(0, "encapd_drops_total", &[("reason", "wrong_mac")]) > before, "counted as wrong_mac");

    // A VTEP that lost its neighbour entry asks with ARP (broadcast, through
    // an all-zero FDB entry); encapd answers with its MAC and traffic flows.
    ip(&n2, &["neigh", "del", &gw0, "dev", "flannel.1"]);
    common::must("bridge", &["-n", &n2, "fdb", "append", "00:00:00:00:00:00", "dev", "flannel.1", "dst", &fleet.nodes[0].ip.to_string()]);
    let answered = fleet.metric(0, "encapd_arp_replies_total", &[]);
    assert!(
        common::wait_for(Duration::from_secs(5), || fleet.ping_ok(&pods[2].ns, v4(&pods[0])).then_some(())).is_some(),
        "the kernel VTEP resolves node 0 by ARP and reaches its pod"
    );
    assert!(fleet.metric(0, "encapd_arp_replies_total", &[]) > answered, "the ARP request was answered by encapd");
    let learned = common::run("ip", &["-n", &n2, "neigh", "show", &gw0, "dev", "flannel.1"]).stdout;
    assert!(learned.contains(&fleet.nodes[0].mac), "the kernel learned encapd's VTEP MAC: {learned}");
}

#[test]
fn pods_attached_by_cni_reach_each_other_and_leave_cleanly() {
    if !require_root() {
        return;
    }
    for backend in ["udp", "vxlan"] {
        let mut fleet = Fleet::new(&[Kind::Encapd { backend, engine: "uring" }; 2], 2);
        let a: Vec<Pod> = (0..2).map(|_| fleet.add_pod(0)).collect();
        let b: Vec<Pod> = (0..2).map(|_| fleet.add_pod(1)).collect();
        for from in a.iter().chain(&b) {
            for to in a.iter().chain(&b).filter(|p| p.node != from.node) {
                assert!(fleet.ping_ok(&from.ns, v4(to)), "{backend}: {} -> {}", from.ns, to.ns);
                assert!(fleet.ping_ok(&from.ns, v6(to)), "{backend}: {} -> {} (IPv6)", from.ns, to.ns);
            }
        }
        // The MTU the pods got is encapd's (FLANNEL_MTU).
        let mtu = common::run("ip", &["-n", &a[0].ns, "-o", "link", "show", "eth0"]).stdout;
        let want = if backend == "vxlan" { "mtu 1450" } else { "mtu 1472" };
        assert!(mtu.contains(want), "{backend}: pod MTU: {mtu}");
        // A stream from a[1] to b[0] runs while a[0] is deleted.
        let to = SocketAddr::new(v4(&b[0]), 7100);
        let stream = UdpStream::start(&a[1].ns, v4(&a[1]), &b[0].ns, to, 1000, 4000);
        assert!(stream.wait_flowing(100, Duration::from_secs(5)), "{backend}: stream flowing");
        fleet.del_pod(&a[0]);
        let gone = common::run("ip", &["-n", &a[0].ns, "link", "show", "eth0"]);
        assert!(!gone.ok(), "{backend}: the deleted pod still has its interface");
        assert!(!fleet.ping_ok(&b[0].ns, v4(&a[0])), "{backend}: the deleted pod still answers");
        let r = stream.complete();
        assert_eq!(r.lost(), 0, "{backend}: the other pod's stream lost datagrams while a pod was deleted: {} of {}", r.lost(), r.sent);
        // Its address is free again: a new pod may get it.
        let again = fleet.add_pod(0);
        assert!(fleet.ping_ok(&again.ns, v4(&b[1])), "{backend}: a pod added after the delete reaches the other node");
    }
}

#[test]
fn with_etcd_a_kernel_vteps_flanneld_lease_is_found_and_ours_reads_back() {
    if !require_root() || !common::require_tools(&["bridge", "etcd", "etcdctl"]) {
        return;
    }
    let mut options = FleetOptions::new(&[ENCAPD_VXLAN, Kind::KernelVtep], 1);
    options.etcd_members = Some(1);
    let mut fleet = Fleet::with(options);
    // encapd's own lease, in flanneld's vxlan schema, key for key.
    let etcd = fleet.etcd.as_ref().unwrap();
    let key = format!("{ETCD_PREFIX}/subnets/100.96.1.0-24");
    let value = etcd.etcdctl(&["get", &key, "--print-value-only"]);
    let lease: serde_json::Value = serde_json::from_str(value.trim()).unwrap_or_else(|e| panic!("{key}: {e}: {value}"));
    let keys: Vec<&String> = lease.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["BackendData", "BackendType", "PublicIP", "PublicIPv6"], "{value}");
    assert_eq!(lease["PublicIP"], "198.18.0.1");
    assert!(lease["PublicIPv6"].is_null());
    assert_eq!(lease["BackendType"], "vxlan");
    assert_eq!(lease["BackendData"]["VNI"], VNI);
    assert_eq!(lease["BackendData"]["VtepMAC"], fleet.nodes[0].mac.as_str());
    assert_eq!(lease["BackendData"]["EncapdKernelDecap"], false, "without the kernel path it decapsulates in user space");
    let written = std::fs::read_to_string(&fleet.nodes[0].subnet_env).unwrap();
    assert!(written.contains("FLANNEL_SUBNET=100.96.1.1/24") && written.contains("FLANNEL_MTU=1450"), "{written}");

    // The kernel VTEP's lease does not exist yet: its pod is unreachable.
    let (a, b) = (fleet.add_pod(0), fleet.add_pod(1));
    assert!(!fleet.ping_ok(&a.ns, v4(&b)), "reached a node without a lease");
    fleet.put_flanneld_lease(1);
    let reached = common::time_until(Duration::from_secs(5), || fleet.ping_ok(&a.ns, v4(&b)));
    assert!(reached.is_some(), "the kernel VTEP's lease was not routed:\n{}", fleet.encapd(0).log());
    assert!(fleet.ping_ok(&b.ns, v4(&a)), "and back");
    let routes = fleet.metric(0, "encapd_routes", &[]);
    assert_eq!(routes, 1.0, "one route, to the kernel VTEP");
}

/// With etcd and the kernel path, a kernel VTEP's lease as flanneld writes
/// it (no `EncapdKernelDecap`: a kernel VTEP decapsulates in the kernel)
/// is sent to from encapd's kernel path, and encapd's own lease says it
/// decapsulates in the kernel too.
#[test]
fn with_etcd_the_kernel_path_sends_to_a_kernel_vtep_found_by_its_flanneld_lease() {
    if !require_root() || !common::require_tools(&["bridge", "etcd", "etcdctl"]) {
        return;
    }
    let mut options = FleetOptions::new(&[ENCAPD_VXLAN, Kind::KernelVtep], 1);
    options.etcd_members = Some(1);
    options.dataplane_extra = "kernel_path = \"tc\"\n".into();
    let mut fleet = Fleet::with(options);
    let key = format!("{ETCD_PREFIX}/subnets/100.96.1.0-24");
    let value = || fleet.etcd.as_ref().unwrap().etcdctl(&["get", &key, "--print-value-only"]);
    // Written once the programs are attached, shortly after ready.
    let said = common::time_until(Duration::from_secs(5), || value().contains(r#""EncapdKernelDecap":true"#));
    assert!(said.is_some(), "{}", value());
    fleet.put_flanneld_lease(1);
    let (a, b) = (fleet.add_pod(0), fleet.add_pod(1));
    let reached = common::time_until(Duration::from_secs(5), || fleet.ping_ok(&a.ns, v4(&b)));
    assert!(reached.is_some(), "the kernel VTEP's lease was not routed:\n{}", fleet.encapd(0).log());
    assert!(fleet.ping_ok(&b.ns, v4(&a)), "and back");
    // The first packets went to the workers while the underlay neighbours
    // resolved (docs/kernel-path.md); these go through the kernel.
    for _ in 0..2 {
        assert!(fleet.ping_ok(&a.ns, v4(&b)));
    }
    let egress = fleet.metric(0, "encapd_kernel_packets_total", &[("direction", "egress")]);
    let ingress = fleet.metric(0, "encapd_kernel_packets_total", &[("direction", "ingress")]);
    assert!(egress >= 2.0, "the pings to the kernel VTEP left through the kernel path: {egress}");
    assert!(ingress >= 2.0, "and its replies came in through it: {ingress}");
}

encapd_testbed::on_each_underlay!(
    an_encapd_node_and_a_kernel_vtep_talk_both_ways,
    three_nodes_two_encapd_one_kernel_vtep_with_the_kernel_path,
);
