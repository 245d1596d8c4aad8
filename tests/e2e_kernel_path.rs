//! The kernel path (`[dataplane] kernel_path = "tc"`), end to end in
//! namespaces with both nodes running it: IPv4 and IPv6 between the pods
//! cross in the kernel's eBPF programs, intact, the workers sending next
//! to nothing; every datagram the ingress filter rejects is still rejected
//! and counted by the workers (the programs hand them on); the routes map
//! follows a peers-file change live; the programs are attached while
//! encapd runs, dump with their C source lines, and are gone once it
//! stops. With only one node running it, the other reading datagrams in
//! user space (`kernel_decap` false), packets to that peer go through the
//! workers and arrive intact. `kernel_path = "auto"` attaches here, and
//! where it cannot (trust-outer checksums) runs the workers and says why.
//! A predecessor that dropped its capabilities (`[process] user`) hands
//! the kernel path to the successor it starts itself (SIGUSR2), which
//! carries on with it without any privilege, the XDP link included. The
//! traffic tests run on both underlay profiles (`veth::...`, `wire::...`;
//! see `common::underlay`) with `xdp_decap = "auto"`, which attaches the
//! XDP decapsulation on `wire` (GRO on) and not on `veth` (GRO off), and
//! once more on `veth` with it forced on (`veth_xdp::...`), so that both
//! decapsulating programs carry every test's traffic somewhere. Root only.

use encapd_testbed as common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::netns::in_netns;
use common::packets::{Packet, fix_ipv4_header_checksum, udp_socket};
use common::traffic::hashed_transfer;
use common::{CTR_B, CTR_B6, ENCAPD_A, NODE_B_UNDERLAY, Node, Options, Topology, Underlay, require_root};
use encapd::sys::bpf::{TcxHook, ifindex, tcx_program_count, tcx_program_ids};

const KERNEL_PATH: &str = "kernel_path = \"tc\"\n";
const KERNEL_DECAP: &str = "kernel_decap = true\n";
const INNER_PORT: u16 = 7777;

/// An underlay profile and whether `xdp_decap` is forced on.
#[derive(Debug, Clone, Copy)]
struct Profile {
    underlay: Underlay,
    xdp_forced: bool,
}

/// An underlay profile by name (`veth`, `wire`) with `xdp_decap` left
/// to `auto`: what `on_each_underlay!` passes.
impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(name: &str) -> Result<Profile, String> {
        Ok(Profile { underlay: name.parse().map_err(|e| format!("{e:?}"))?, xdp_forced: false })
    }
}

impl Profile {
    /// The `[dataplane]` lines of a node on the kernel path.
    fn lines(self) -> String {
        if self.xdp_forced { format!("{KERNEL_PATH}xdp_decap = \"on\"\n") } else { KERNEL_PATH.into() }
    }

    /// Whether `xdp_decap` is attached: forced, or `auto` on an underlay
    /// with GRO on.
    fn xdp(self) -> bool {
        self.xdp_forced || self.underlay == Underlay::Wire
    }
}

fn both_on_kernel_path(p: Profile) -> Topology {
    let mut opts = Options { underlay: p.underlay, ..Options::new("uring") };
    opts.extra_a = p.lines();
    opts.extra_b = p.lines();
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

/// Whether an XDP program is attached to the underlay of namespace `ns`
/// (`ip link` shows `prog/xdp`).
fn xdp_attached(ns: &str) -> bool {
    let o = common::run("ip", &["-n", ns, "-d", "link", "show", "dev", "ul"]);
    assert!(o.ok(), "{}", o.text());
    o.stdout.contains("prog/xdp")
}

/// A metric of `node` (summed over its labels).
fn metric(t: &Topology, node: Node, name: &str) -> f64 {
    common::counters::metric_sum(&t.scrape(node), name, &[])
}

/// A `total`-byte stream from ctrA to `to` in ctrB crosses intact, nodeA's
/// kernel path carries it and its workers send next to nothing (the
/// first packets, while the underlay neighbour resolves).
fn kernel_carries_a_stream(t: &mut Topology, p: Profile, to: SocketAddr, seed: u64, total: usize) {
    let (xdp_before, delivered_before) =
        (metric(t, Node::B, "encapd_kernel_xdp_decap_packets_total"), metric(t, Node::B, "encapd_kernel_xdp_delivered_packets_total"));
    let workers_before = t.counters(Node::A).egress_pkts;
    let (egress_before, ingress_before) = (kernel_packets(t, Node::A, "egress"), kernel_packets(t, Node::A, "ingress"));
    let bytes_before = common::counters::metric_sum(&t.scrape(Node::A), "encapd_kernel_bytes_total", &[("direction", "egress")]);
    let b_ingress_before = common::counters::metric_sum(&t.scrape(Node::B), "encapd_kernel_bytes_total", &[("direction", "ingress")]);
    let x = hashed_transfer(&t.ctr_a, &t.ctr_b, to, seed, total, Duration::from_secs(60));
    assert_eq!((x.got, &x.got_hash), (x.sent, &x.sent_hash), "the stream to {to} arrived intact");
    // The stream leaves nodeA in the kernel as packets of at most 64 KiB
    // (TSO) and enters nodeB through its decap (TCP: taken as GSO too);
    // nodeB's ACKs come back through nodeA's decap.
    let egress = kernel_packets(t, Node::A, "egress") - egress_before;
    let ingress = kernel_packets(t, Node::A, "ingress") - ingress_before;
    assert!(egress >= (total >> 16) as f64, "kernel egress packets on nodeA for {to}: {egress}");
    let b_ingress =
        common::counters::metric_sum(&t.scrape(Node::B), "encapd_kernel_bytes_total", &[("direction", "ingress")]) - b_ingress_before;
    assert!(ingress >= 100.0, "kernel ingress packets (ACKs) on nodeA for {to}: {ingress}");
    let bytes = common::counters::metric_sum(&t.scrape(Node::A), "encapd_kernel_bytes_total", &[("direction", "egress")]) - bytes_before;
    assert!(bytes >= total as f64, "kernel egress bytes {bytes} carry the {total}-byte stream");
    let by_workers = t.counters(Node::A).egress_pkts - workers_before;
    assert!(by_workers < 200, "nodeA's workers sent {by_workers} packets of the stream to {to}");
    assert!(b_ingress >= total as f64, "nodeB's decap took {b_ingress} of the {total} bytes to {to}");
    // With xdp_decap, nodeB's XDP program took the stream's datagrams
    // (each at most one segment: frames at the MTU, or a veth peer's,
    // whose TSO the XDP program turns off) and decap delivered them after
    // GRO: on `wire`, merged (fewer packets than datagrams).
    let xdp = metric(t, Node::B, "encapd_kernel_xdp_decap_packets_total") - xdp_before;
    let delivered = metric(t, Node::B, "encapd_kernel_xdp_delivered_packets_total") - delivered_before;
    eprintln!("{to}: nodeB's xdp_decap took {xdp} datagrams, decap delivered {delivered} packets after GRO");
    if p.xdp() {
        let segments = (total / 1500) as f64;
        assert!(xdp >= segments, "nodeB's xdp_decap took {xdp} datagrams of a {total}-byte stream");
        assert!(delivered > 0.0 && delivered <= xdp, "delivered after GRO: {delivered} of {xdp}");
        if p.underlay == Underlay::Wire {
            assert!(delivered < xdp, "GRO merged none of the {xdp} decapsulated datagrams");
        }
    } else {
        assert_eq!((xdp, delivered), (0.0, 0.0), "xdp_decap carried packets where it is not attached");
    }
}

fn ipv4_and_ipv6_cross_in_the_kernel_intact(p: Profile) {
    if !require_root() {
        return;
    }
    let mut t = both_on_kernel_path(p);
    let log = t.log(Node::A);
    assert!(log.contains("kernel path attached"), "{log}");
    assert_eq!(attached(&t.node_a), (1, 1), "one program on each hook while encapd runs");
    if p.xdp() {
        assert!(log.contains("xdp_decap on ul before GRO"), "{log}");
    } else {
        assert!(log.contains("no xdp_decap: GRO is off on ul"), "auto says why it does not attach: {log}");
    }
    assert_eq!(xdp_attached(&t.node_a), p.xdp(), "the XDP program on nodeA's underlay");

    kernel_carries_a_stream(&mut t, p, SocketAddr::from((CTR_B.parse::<Ipv4Addr>().unwrap(), 5201)), 7, 64 << 20);
    kernel_carries_a_stream(&mut t, p, SocketAddr::from((CTR_B6.parse::<std::net::Ipv6Addr>().unwrap(), 5202)), 8, 32 << 20);
    // Pings both ways, each echo a single packet: decapsulated in the
    // kernel on nodeB.
    let ingress_b = kernel_packets(&t, Node::B, "ingress");
    let ping4 = t.ping(&t.ctr_a, &["-c", "3", "-i", "0.2", "-W", "2", CTR_B]);
    assert!(ping4.ok(), "IPv4 ping: {}", ping4.text());
    let ping6 = t.ping(&t.ctr_a, &["-6", "-c", "3", "-i", "0.2", "-W", "2", CTR_B6]);
    assert!(ping6.ok(), "IPv6 ping: {}", ping6.text());
    assert!(kernel_packets(&t, Node::B, "ingress") >= ingress_b + 6.0, "nodeB's decap took the echo requests");

    t.stop_node(Node::A);
    assert_eq!(attached(&t.node_a), (0, 0), "no program outlives encapd");
    assert!(!xdp_attached(&t.node_a), "no XDP program outlives encapd");
    assert!(t.log(Node::A).contains("kernel    egress"), "the summary has the kernel line: {}", t.log(Node::A));
}

/// `bpftool prog dump xlated linum` shows the programs' C source lines
/// (the object keeps BTF and line info; docs/kernel-path-source.md).
#[test]
fn the_attached_programs_dump_with_their_source_lines() {
    if !require_root() || !common::env::require_tools(&["bpftool"]) {
        return;
    }
    let t = both_on_kernel_path(Profile { underlay: Underlay::Veth, xdp_forced: false });
    let ids = in_netns(&t.node_a, || tcx_program_ids(ifindex("ul").unwrap(), TcxHook::Ingress).unwrap());
    assert_eq!(ids.len(), 1, "decap on nodeA's underlay: {ids:?}");
    let dump = common::run("bpftool", &["prog", "dump", "xlated", "id", &ids[0].to_string(), "linum"]);
    assert!(dump.ok(), "{}", dump.text());
    assert!(dump.stdout.contains("int decap(struct __sk_buff * skb)"), "{}", dump.stdout);
    assert!(dump.stdout.contains("encapd.bpf.c line_num:"), "no source lines:\n{}", dump.stdout);
    assert!(dump.stdout.contains("skb->pkt_type != PACKET_HOST"), "the C source is shown:\n{}", dump.stdout);
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

fn the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on(p: Profile) {
    if !require_root() {
        return;
    }
    let mut t = both_on_kernel_path(p);
    let (a, b, nowhere, spoof) = ([100, 96, 1, 2], [100, 96, 2, 3], [100, 96, 3, 3], [100, 96, 9, 9]);
    let listener = in_netns(&t.ctr_a, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, INNER_PORT))).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let node_b = t.node_b.clone();
    // Without a UDP checksum, as the kernel path sends: a checksum no
    // device verified would be left to the stack (and so to the workers)
    // whatever the ingress filter says.
    let from_b = udp_socket(&node_b, NODE_B_UNDERLAY);
    encapd::sys::udp::send_without_checksum(std::os::fd::AsFd::as_fd(&from_b)).unwrap();
    common::netns::ip(&node_b, &["addr", "add", "198.18.0.66/24", "dev", "ul", "nodad"]);
    let from_stranger = udp_socket(&node_b, "198.18.0.66");
    encapd::sys::udp::send_without_checksum(std::os::fd::AsFd::as_fd(&from_stranger)).unwrap();

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

    // The legitimate datagram crosses in the kernel, not through a worker
    // (with xdp_decap, in XDP).
    let before = t.counters(Node::A);
    let kernel_before = kernel_packets(&t, Node::A, "ingress");
    let xdp_before = metric(&t, Node::A, "encapd_kernel_xdp_decap_packets_total");
    from_b.send_to(&inner(b, a, "GOOD"), ENCAPD_A).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = listener.recv_from(&mut buf).expect("the legitimate datagram reaches ctrA");
    assert_eq!(&buf[..n], b"GOOD");
    assert_eq!(from, SocketAddr::from((b, 40000)), "inner source preserved");
    assert_eq!(kernel_packets(&t, Node::A, "ingress"), kernel_before + 1.0);
    assert_eq!(t.counters(Node::A).ingress_pkts, before.ingress_pkts, "no worker wrote it");
    let by_xdp = metric(&t, Node::A, "encapd_kernel_xdp_decap_packets_total") - xdp_before;
    assert_eq!(by_xdp, if p.xdp() { 1.0 } else { 0.0 }, "xdp_decap took it where attached");
}

fn the_kernel_routes_follow_the_peers_file(p: Profile) {
    if !require_root() {
        return;
    }
    let t = both_on_kernel_path(p);
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
fn a_peer_without_the_kernel_path_is_reached_through_the_workers(p: Profile) {
    if !require_root() {
        return;
    }
    let mut opts = Options { underlay: p.underlay, ..Options::new("uring") };
    opts.extra_a = p.lines();
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

/// `kernel_path = "auto"` attaches where it can (here), and where it
/// cannot it runs the workers and says why in one line.
#[test]
fn auto_attaches_here_and_falls_back_to_the_workers_with_a_reason() {
    if !require_root() {
        return;
    }
    let mut opts = Options::new("uring");
    opts.extra_a = "kernel_path = \"auto\"\n".into();
    // Outer checksums trusted: the kernel path sends none, so it cannot run.
    opts.extra_b = "kernel_path = \"auto\"\ningress_checksum = \"trust-outer\"\n".into();
    let t = Topology::with(opts);
    assert!(t.log(Node::A).contains("kernel path attached"), "{}", t.log(Node::A));
    assert_eq!(attached(&t.node_a), (1, 1));
    let why: Vec<String> = t.log(Node::B).lines().filter(|l| l.contains("kernel path")).map(str::to_owned).collect();
    assert_eq!(why.len(), 1, "one line says why: {why:?}");
    assert!(
        why[0].contains("not attached") && why[0].contains("trust-outer") && why[0].contains("the workers carry every packet"),
        "{why:?}"
    );
    assert_eq!(attached(&t.node_b), (0, 0));
    let ping = t.ping(&t.ctr_a, &["-c", "3", "-i", "0.2", "-W", "2", CTR_B]);
    assert!(ping.ok(), "ping across a kernel-path node and a workers-only one: {}", ping.text());
}

/// A daemon that dropped its capabilities (`[process] user = "nobody"`)
/// starts its own successor on SIGUSR2, with its own (no) privileges: the
/// successor cannot load or attach a program, so it carries on with the
/// predecessor's links and maps, handed over the takeover socket, and the
/// kernel path keeps carrying traffic, its routes still writable.
#[test]
fn a_successor_without_privileges_carries_on_with_the_kernel_path() {
    if !require_root() {
        return;
    }
    let mut opts = Options::new("uring");
    // xdp_decap forced on (a veth underlay): its link is handed over too.
    opts.extra_a = format!("{KERNEL_PATH}xdp_decap = \"on\"\n");
    opts.extra_b = KERNEL_PATH.into();
    opts.peer_extra_a = KERNEL_DECAP.into();
    opts.peer_extra_b = KERNEL_DECAP.into();
    opts.sections_a = "[process]\nuser = \"nobody\"\ngroup = \"nogroup\"\n".into();
    let t = Topology::with(opts);
    assert!(t.log(Node::A).contains("kernel path attached"), "{}", t.log(Node::A));
    // The successor, as nobody, rewrites subnet.env in nodeA's directory
    // (a deployment gives the user its runtime directory).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.dir().join("a"), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Resolves the underlay neighbours (until then encap leaves packets
    // to the workers, whose sends resolve them).
    assert!(t.ping(&t.ctr_a, &["-c", "2", "-i", "0.2", "-W", "2", CTR_B]).ok());
    let old = t.pid(Node::A);
    common::process::signal(old, libc::SIGUSR2);
    let handed = common::cmd::wait_for(Duration::from_secs(30), || {
        let log = t.log(Node::A);
        let line = log.lines().find(|l| l.contains("handed over to pid"))?.to_owned();
        line.rsplit("pid ").next()?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<i32>().ok()
    })
    .unwrap_or_else(|| panic!("no handover after SIGUSR2:\n{}", t.log(Node::A)));
    let _reap = common::takeover::Orphan(handed);
    let log = t.log(Node::A);
    assert!(log.contains("kernel path carried on from the predecessor"), "{log}");
    assert_eq!(attached(&t.node_a), (1, 1), "the predecessor's programs, still attached");
    assert!(xdp_attached(&t.node_a), "the predecessor's XDP program, still attached");
    // The successor serves /metrics once its predecessor, which exits
    // after the handover, has let go of the port.
    let served = common::cmd::wait_for(Duration::from_secs(10), || common::counters::scrape(&t.node_a));
    assert!(served.is_some(), "the successor never served /metrics:\n{}", t.log(Node::A));
    // The successor forwards through the kernel path...
    let before = kernel_packets(&t, Node::B, "ingress");
    let xdp_before = metric(&t, Node::A, "encapd_kernel_xdp_decap_packets_total");
    let ping = t.ping(&t.ctr_a, &["-c", "3", "-i", "0.2", "-W", "2", CTR_B]);
    assert!(ping.ok(), "ping after the handover: {}", ping.text());
    let after = kernel_packets(&t, Node::B, "ingress");
    assert!(after >= before + 3.0, "nodeA's encap (nodeB's decap) carried the pings: {before} -> {after}\nnodeA:\n{}", t.scrape(Node::A));
    let xdp = metric(&t, Node::A, "encapd_kernel_xdp_decap_packets_total") - xdp_before;
    assert!(xdp >= 3.0, "nodeA's handed-over xdp_decap took the replies: {xdp}");
    // ...and, unprivileged, still writes its routes: a removed peer leaves
    // the kernel's map.
    t.replace_peers(Node::A, "peer = []\n");
    assert!(t.wait_unreachable(CTR_B, true, Duration::from_secs(5)), "nodeB's subnet still routed after removal");
    assert!(!t.ping(&t.ctr_a, &["-c", "1", "-W", "1", CTR_B]).ok(), "the removed route is still in the kernel");
    assert!(!t.log(Node::A).contains("cannot install the route"), "{}", t.log(Node::A));
    assert!(!t.log(Node::A).contains("cannot remove the route"), "{}", t.log(Node::A));
}

encapd_testbed::on_each_underlay!(
    ipv4_and_ipv6_cross_in_the_kernel_intact,
    the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on,
    the_kernel_routes_follow_the_peers_file,
    a_peer_without_the_kernel_path_is_reached_through_the_workers,
);

/// The same on a veth with `xdp_decap = "on"` (where `auto` leaves it off).
mod veth_xdp {
    use super as s;

    fn p() -> s::Profile {
        s::Profile { underlay: s::Underlay::Veth, xdp_forced: true }
    }

    #[test]
    fn ipv4_and_ipv6_cross_in_the_kernel_intact() {
        s::ipv4_and_ipv6_cross_in_the_kernel_intact(p());
    }
    #[test]
    fn the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on() {
        s::the_ingress_filter_still_rejects_and_counts_what_the_kernel_path_hands_on(p());
    }
    #[test]
    fn the_kernel_routes_follow_the_peers_file() {
        s::the_kernel_routes_follow_the_peers_file(p());
    }
    #[test]
    fn a_peer_without_the_kernel_path_is_reached_through_the_workers() {
        s::a_peer_without_the_kernel_path_is_reached_through_the_workers(p());
    }
}
