//! The kernel path (`[dataplane] kernel_path = "tc"`), end to end in
//! namespaces with both nodes running it: IPv4 between the pods crosses in
//! the kernel's eBPF programs, intact, while IPv6 still goes through the
//! workers; every datagram the ingress filter rejects is still rejected
//! and counted by the workers (the programs hand them on); the routes map
//! follows a peers-file change live; and the programs are attached while
//! encapd runs and gone once it stops. With only one node running it, the
//! other reading datagrams in user space (`kernel_decap` false), packets
//! to that peer go through the workers and arrive intact. Every test runs on
//! both underlay profiles (`veth::...`, `wire::...`; see `common::underlay`).
//! Root only.

use encapd_testbed as common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::netns::in_netns;
use common::packets::{Packet, fix_ipv4_header_checksum, udp_socket};
use common::traffic::hashed_transfer;
use common::{CTR_B, CTR_B6, ENCAPD_A, NODE_B_UNDERLAY, Node, Options, Topology, Underlay, require_root};
use encapd::sys::bpf::{TcxHook, ifindex, tcx_program_count};

const KERNEL_PATH: &str = "kernel_path = \"tc\"\n";
const KERNEL_DECAP: &str = "kernel_decap = true\n";
const INNER_PORT: u16 = 7777;

fn both_on_kernel_path(u: Underlay) -> Topology {
    let mut opts = Options { underlay: u, ..Options::new("uring") };
    opts.extra_a = KERNEL_PATH.into();
    opts.extra_b = KERNEL_PATH.into();
    opts.peer_extra_a = KERNEL_DECAP.into();
    opts.peer_extra_b = KERNEL_DECAP.into();
    Topology::with(opts)
}

/// The kernel path's packet counter of `node` in `direction`.
fn kernel_packets(t: &Topology, node: Node, direction: &str) -> f64 {
    common::counters::metric_sum(&t.scrape(node), "encapd_kernel_packets_total", &[("direction", direction)])
}

/// TCX programs on (TUN egress, underlay ingress) of `node`'s namespace.
fn attached(ns: &str) -> (u32, u32) {
    in_netns(ns, || {
        let tun = ifindex(common::TUN).map(|i| tcx_program_count(i, TcxHook::Egress).unwrap_or(0)).unwrap_or(0);
        let ul = tcx_program_count(ifindex("ul").expect("the underlay veth"), TcxHook::Ingress).expect("querying TCX");
        (tun, ul)
    })
}

fn ipv4_crosses_in_the_kernel_intact_and_ipv6_through_the_workers(u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = both_on_kernel_path(u);
    assert!(t.log(Node::A).contains("kernel path attached"), "{}", t.log(Node::A));
    assert_eq!(attached(&t.node_a), (1, 1), "one program on each hook while encapd runs");
    let workers_before = t.counters(Node::A);

    let total = 64 << 20;
    let to = SocketAddr::from((CTR_B.parse::<Ipv4Addr>().unwrap(), 5201));
    let x = hashed_transfer(&t.ctr_a, &t.ctr_b, to, 7, total, Duration::from_secs(60));
    assert_eq!((x.got, &x.got_hash), (x.sent, &x.sent_hash), "the stream arrived intact");
    let ping4 = t.ping(&t.ctr_a, &["-c", "3", "-i", "0.2", "-W", "2", CTR_B]);
    assert!(ping4.ok(), "IPv4 ping: {}", ping4.text());
    let ping6 = t.ping(&t.ctr_a, &["-6", "-c", "3", "-i", "0.2", "-W", "2", CTR_B6]);
    assert!(ping6.ok(), "IPv6 ping through the workers: {}", ping6.text());

    // 64 MiB leave nodeA as at least 1,000 TSO packets, in the kernel.
    let egress = kernel_packets(&t, Node::A, "egress");
    let ingress = kernel_packets(&t, Node::B, "ingress");
    assert!(egress >= 1_000.0, "kernel egress packets on nodeA: {egress}");
    assert!(ingress >= 1_000.0, "kernel ingress packets on nodeB: {ingress}");
    let bytes = common::counters::metric_sum(&t.scrape(Node::A), "encapd_kernel_bytes_total", &[("direction", "egress")]);
    assert!(bytes >= total as f64, "kernel egress bytes {bytes} carry the {total}-byte stream");
    let workers = t.counters(Node::A);
    let by_workers = workers.egress_pkts - workers_before.egress_pkts;
    assert!((3..200).contains(&by_workers), "the workers sent the IPv6 pings (and little else): {by_workers}");

    t.stop_node(Node::A);
    assert_eq!(attached(&t.node_a), (0, 0), "no program outlives encapd");
    assert!(t.log(Node::A).contains("kernel    egress"), "the summary has the kernel line: {}", t.log(Node::A));
}

fn inner(src: [u8; 4], dst: [u8; 4], tag: &str) -> Vec<u8> {
    Packet::new(src, dst).udp(40000, INNER_PORT, tag.as_bytes())
}

/// Sends `datagram` to nodeA and waits until the workers count it as
/// `reason`: the decapsulating program must have handed it on.
fn expect_worker_drop(t: &mut Topology, sock: &UdpSocket, datagram: &[u8], reason: &str) {
    let before = t.counters(Node::A);
    let kernel_before = kernel_packets(t, Node::A, "ingress");
    sock.send_to(datagram, ENCAPD_A).unwrap();
    let after = t.counters_until(Node::A, Duration::from_secs(3), |c| c.drop(reason) > before.drop(reason));
    assert_eq!(after.drop(reason), before.drop(reason) + 1, "{reason}: {before:?} -> {after:?}");
    assert_eq!(kernel_packets(t, Node::A, "ingress"), kernel_before, "{reason}: the kernel path delivered it");
}

fn the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on(u: Underlay) {
    if !require_root() {
        return;
    }
    let mut t = both_on_kernel_path(u);
    let (a, b, nowhere, spoof) = ([100, 96, 1, 2], [100, 96, 2, 3], [100, 96, 3, 3], [100, 96, 9, 9]);
    let listener = in_netns(&t.ctr_a, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, INNER_PORT))).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let node_b = t.node_b.clone();
    let from_b = udp_socket(&node_b, NODE_B_UNDERLAY);
    common::netns::ip(&node_b, &["addr", "add", "198.18.0.66/24", "dev", "ul", "nodad"]);
    let from_stranger = udp_socket(&node_b, "198.18.0.66");

    expect_worker_drop(&mut t, &from_stranger, &inner(b, a, "BAD stranger"), "unknown_sender");
    expect_worker_drop(&mut t, &from_b, &inner(spoof, a, "BAD spoofed"), "spoofed_source");
    expect_worker_drop(&mut t, &from_b, &inner(b, nowhere, "BAD dst"), "wrong_destination");
    let mut ihl4 = inner(b, a, "BAD ihl 4");
    ihl4[0] = 0x44;
    expect_worker_drop(&mut t, &from_b, &ihl4, "bad_header_length");
    let mut long = inner(b, a, "BAD length");
    let claimed = (long.len() + 8) as u16;
    long[2..4].copy_from_slice(&claimed.to_be_bytes());
    fix_ipv4_header_checksum(&mut long);
    expect_worker_drop(&mut t, &from_b, &long, "length_mismatch");

    // The legitimate datagram crosses in the kernel, not through a worker.
    let before = t.counters(Node::A);
    let kernel_before = kernel_packets(&t, Node::A, "ingress");
    from_b.send_to(&inner(b, a, "GOOD"), ENCAPD_A).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = listener.recv_from(&mut buf).expect("the legitimate datagram reaches ctrA");
    assert_eq!(&buf[..n], b"GOOD");
    assert_eq!(from, SocketAddr::from((b, 40000)), "inner source preserved");
    assert_eq!(kernel_packets(&t, Node::A, "ingress"), kernel_before + 1.0);
    assert_eq!(t.counters(Node::A).ingress_pkts, before.ingress_pkts, "no worker wrote it");
}

fn the_kernel_routes_follow_the_peers_file(u: Underlay) {
    if !require_root() {
        return;
    }
    let t = both_on_kernel_path(u);
    let ping = |t: &Topology| t.ping(&t.ctr_a, &["-c", "1", "-W", "2", CTR_B]).ok();
    assert!(ping(&t));
    // nodeA forgets nodeB: its route leaves the map, and the workers answer
    // for the destination as for any unrouted one; nodeB's datagrams are
    // no longer decapsulated either.
    t.replace_peers(Node::A, "peer = []\n");
    assert!(t.wait_unreachable(CTR_B, true, Duration::from_secs(5)), "nodeB's subnet still routed after removal");
    let (sent, received) = (kernel_packets(&t, Node::A, "egress"), kernel_packets(&t, Node::A, "ingress"));
    assert!(!ping(&t));
    assert!(!t.ping(&t.ctr_b, &["-c", "1", "-W", "1", common::CTR_A]).ok(), "nodeA still takes a removed peer's traffic");
    assert_eq!(kernel_packets(&t, Node::A, "egress"), sent, "nothing encapsulated for a removed route");
    assert_eq!(kernel_packets(&t, Node::A, "ingress"), received, "nothing decapsulated from a removed peer");
    t.replace_peers(Node::A, &t.peers_file(Node::A));
    assert!(t.wait_unreachable(CTR_B, false, Duration::from_secs(5)), "nodeB's subnet not routed again");
    assert!(common::cmd::wait_for(Duration::from_secs(5), || ping(&t).then_some(())).is_some(), "ping after the route returned");
    assert!(kernel_packets(&t, Node::A, "egress") > sent, "the returned route is carried in the kernel");
}

/// nodeA runs the kernel path, nodeB does not: nodeB reads datagrams in
/// user space, where a TSO packet or an inner checksum the veth left
/// unfinished would be lost, so nodeA's peers file leaves `kernel_decap`
/// unset for it and nodeA's `encap` sends it nothing; its workers carry
/// the traffic. Both directions arrive intact.
fn a_peer_without_the_kernel_path_is_reached_through_the_workers(u: Underlay) {
    if !require_root() {
        return;
    }
    let mut opts = Options { underlay: u, ..Options::new("uring") };
    opts.extra_a = KERNEL_PATH.into();
    opts.peer_extra_b = KERNEL_DECAP.into();
    let mut t = Topology::with(opts);
    assert!(t.log(Node::A).contains("kernel path attached"), "{}", t.log(Node::A));
    let workers_before = t.counters(Node::A);
    let total = 32 << 20;
    let to_b = SocketAddr::from((CTR_B.parse::<Ipv4Addr>().unwrap(), 5201));
    let x = hashed_transfer(&t.ctr_a, &t.ctr_b, to_b, 11, total, Duration::from_secs(60));
    assert_eq!((x.got, &x.got_hash), (x.sent, &x.sent_hash), "nodeA to nodeB arrived intact");
    let to_a = SocketAddr::from((common::CTR_A.parse::<Ipv4Addr>().unwrap(), 5202));
    let y = hashed_transfer(&t.ctr_b, &t.ctr_a, to_a, 12, total, Duration::from_secs(60));
    assert_eq!((y.got, &y.got_hash), (y.sent, &y.sent_hash), "nodeB to nodeA arrived intact");
    assert_eq!(kernel_packets(&t, Node::A, "egress"), 0.0, "nodeA's kernel path sent to a peer that decapsulates in user space");
    let sent_by_workers = t.counters(Node::A).egress_pkts - workers_before.egress_pkts;
    assert!(sent_by_workers >= 500, "nodeA's workers carried the stream to nodeB: {sent_by_workers} packets");
}

/// Every test on one underlay profile: `veth::...`, `wire::...`.
macro_rules! profile_tests {
    ($underlay:ident) => {
        mod $underlay {
            use super as s;

            fn u() -> encapd_testbed::Underlay {
                stringify!($underlay).parse().expect("an underlay profile")
            }

            #[test]
            fn ipv4_crosses_in_the_kernel_intact_and_ipv6_through_the_workers() {
                s::ipv4_crosses_in_the_kernel_intact_and_ipv6_through_the_workers(u());
            }
            #[test]
            fn the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on() {
                s::the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on(u());
            }
            #[test]
            fn the_kernel_routes_follow_the_peers_file() {
                s::the_kernel_routes_follow_the_peers_file(u());
            }
            #[test]
            fn a_peer_without_the_kernel_path_is_reached_through_the_workers() {
                s::a_peer_without_the_kernel_path_is_reached_through_the_workers(u());
            }
        }
    };
}

profile_tests!(veth);
profile_tests!(wire);
