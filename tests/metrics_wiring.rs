//! The metrics are wired to what they measure, checked by behaviour (not by
//! reading source, where a comment would satisfy a check):
//!
//! 1. `every_counter_moves_exactly_its_own_series` (no root): every field of
//!    the per-worker and control-plane counters, every drop reason, the
//!    table and the latency recorders are changed one at a time in a
//!    synthetic source; each change must move its own series in the
//!    exposition and nothing else, every declared family must have samples,
//!    and every family but the constant info metrics must have moved. The
//!    counter structs' fields are read from their `Debug` output, so a field
//!    added without an exposed series fails the test.
//! 2. `every_drop_reason_is_counted_by_a_running_daemon` (root): each drop
//!    reason is provoked for real in the two-node topology, and nodeA's
//!    `/metrics` must show its `encapd_drops_total{reason=...}` rise. The
//!    only reason no test can provoke from outside is `bad_offload_header`
//!    (the kernel writes the virtio-net header of what it hands to the TUN,
//!    and it always describes the packet); it is listed, with that reason,
//!    and the test fails if it ever becomes provokable or goes away.

use encapd_testbed as common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::packets::{Packet, fix_ipv4_header_checksum, udp_socket};
use encapd::control::ControlCounters;
use encapd::route::{PeerSpec, Prefix, SubnetTable, TableScope};
use encapd::stats::exposition::{MetricsSource, StaticInfo, render};
use encapd::stats::format::Format;
use encapd::stats::latency::{Direction, LatencyHub, LatencyRecorder};
use encapd::stats::scrape::{self, Sample};
use encapd::stats::{CounterSnapshot, DropReason, WorkerCounters, bump};

// ---------------------------------------------------------------------------
// 1. The exposition side, in process

/// Series of a classic-format exposition, keyed by name and labels.
fn series(text: &str) -> BTreeMap<String, f64> {
    scrape::parse(text)
        .expect("the exposition parses")
        .into_iter()
        .map(|s: Sample| (format!("{}{:?}", s.name, s.labels), s.value))
        .collect()
}

/// Families the classic exposition declares, with their type.
fn declared(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The family a sample belongs to, among `families`.
fn family_of<'a>(sample: &str, families: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let name = sample.split('{').next().unwrap_or(sample);
    families.keys().map(String::as_str).find(|f| {
        name == *f || (families[*f] == "histogram" && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(*f)))
    })
}

/// Field names of a derived `Debug` rendering (`Name { a: .., b: [..] }`).
fn debug_fields(debug: &str) -> BTreeSet<String> {
    let body = debug.split_once('{').map_or("", |(_, b)| b).trim_end().strip_suffix('}').unwrap_or("");
    let (mut segments, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                segments.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&body[start..]);
    segments.iter().filter_map(|s| s.split_once(':')).map(|(name, _)| name.trim().to_owned()).filter(|n| !n.is_empty()).collect()
}

/// A synthetic daemon: two workers, the etcd control source (so every
/// control family is declared), an empty table, and latency recorders.
struct Synthetic {
    source: MetricsSource,
    hub: LatencyHub,
    recorders: Vec<LatencyRecorder>,
    /// Time handed to `maybe_flush`, moved on by more than the flush period each time.
    clock: Instant,
}

impl Synthetic {
    fn new() -> Synthetic {
        let (hub, recorders) = LatencyHub::new(2);
        let source = MetricsSource {
            workers: (0..2).map(|_| Arc::new(WorkerCounters::default())).collect(),
            control: Arc::new(ControlCounters::default()),
            table: Arc::new(ArcSwap::from_pointee(SubnetTable::default())),
            info: StaticInfo {
                engine: "uring",
                tun_offloads: "off".into(),
                udp_gso: false,
                udp_gro: false,
                control_source: "etcd",
                listen: None,
            },
            kernel: None,
        };
        Synthetic { source, hub, recorders, clock: Instant::now() }
    }

    fn render(&mut self) -> String {
        render(&self.source, &mut self.hub, Format::PrometheusText)
    }

    /// Hands worker `w`'s latency interval to the hub.
    fn flush(&mut self, w: usize) {
        self.clock += Duration::from_secs(2);
        self.recorders[w].maybe_flush(self.clock);
    }
}

/// One change to the synthetic daemon and the families it must move.
struct Stimulus {
    what: String,
    families: Vec<&'static str>,
    /// Labels every moved series must carry.
    labels: Vec<(&'static str, String)>,
    apply: Box<dyn Fn(&mut Synthetic)>,
}

fn stimulus(what: &str, families: &[&'static str], labels: &[(&'static str, &str)], apply: impl Fn(&mut Synthetic) + 'static) -> Stimulus {
    Stimulus {
        what: what.to_owned(),
        families: families.to_vec(),
        labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        apply: Box::new(apply),
    }
}

/// One stimulus per counter field (worker 1, so worker 0's series must
/// stay put), keyed by field name.
fn worker_field_stimuli() -> BTreeMap<&'static str, Vec<Stimulus>> {
    type Field = fn(&WorkerCounters) -> &std::sync::atomic::AtomicU64;
    let counters: [(&str, &str, Field); 10] = [
        ("egress_packets", "encapd_tx_packets_total", |w| &w.egress_packets),
        ("egress_bytes", "encapd_tx_bytes_total", |w| &w.egress_bytes),
        ("egress_sends", "encapd_tx_sends_total", |w| &w.egress_sends),
        ("ingress_packets", "encapd_rx_packets_total", |w| &w.ingress_packets),
        ("ingress_bytes", "encapd_rx_bytes_total", |w| &w.ingress_bytes),
        ("ingress_receives", "encapd_rx_receives_total", |w| &w.ingress_receives),
        ("icmp_sent", "encapd_icmp_sent_total", |w| &w.icmp_sent),
        ("icmp_rate_limited", "encapd_icmp_rate_limited_total", |w| &w.icmp_rate_limited),
        ("arp_replies", "encapd_arp_replies_total", |w| &w.arp_replies),
        ("table_version", "encapd_worker_table_version", |w| &w.table_version),
    ];
    let mut out: BTreeMap<&'static str, Vec<Stimulus>> = BTreeMap::new();
    for (field, family, get) in counters {
        out.entry(field).or_default().push(stimulus(field, &[family], &[("worker", "1")], move |s| bump(get(&s.source.workers[1]), 3)));
    }
    // What a predecessor counted (a takeover) feeds the same series.
    out.entry("carried").or_default().push(stimulus("carried over", &["encapd_tx_packets_total"], &[("worker", "1")], |s| {
        s.source.workers[1].carry(&CounterSnapshot { egress_packets: 5, ..CounterSnapshot::default() })
    }));
    for reason in DropReason::ALL {
        out.entry("drops").or_default().push(stimulus(
            &format!("drop {}", reason.name()),
            &["encapd_drops_total"],
            &[("worker", "1"), ("reason", reason.name())],
            move |s| WorkerCounters::drop(&s.source.workers[1], reason),
        ));
    }
    out
}

/// One stimulus per control-plane field, keyed by field name.
fn control_field_stimuli() -> BTreeMap<&'static str, Vec<Stimulus>> {
    let mut out: BTreeMap<&'static str, Vec<Stimulus>> = BTreeMap::new();
    out.entry("tables_published").or_default().push(stimulus("tables published", &["encapd_tables_published_total"], &[], |s| {
        s.source.control.tables_published.fetch_add(1, Ordering::Relaxed);
    }));
    out.entry("reload_failures").or_default().push(stimulus("reload failure", &["encapd_reload_failures_total"], &[], |s| {
        s.source.control.reload_failures.fetch_add(1, Ordering::Relaxed);
    }));
    out.entry("malformed_leases").or_default().push(stimulus("malformed lease", &["encapd_control_malformed_leases_total"], &[], |s| {
        s.source.control.malformed_leases.fetch_add(1, Ordering::Relaxed);
    }));
    out.entry("healthy").or_default().push(stimulus("control unhealthy", &["encapd_control_connected"], &[], |s| {
        s.source.control.healthy.store(false, Ordering::Relaxed);
    }));
    out.entry("table_published_unix_ms").or_default().push(stimulus(
        "table published later",
        &["encapd_table_published_timestamp_seconds"],
        &[],
        |s| {
            s.source.control.table_published_unix_ms.fetch_add(1500, Ordering::Relaxed);
        },
    ));
    out
}

/// Stimuli for what is not a counter field: the table and the recorders.
fn other_stimuli() -> Vec<Stimulus> {
    let mut out = vec![stimulus("a table with one peer", &["encapd_table_version", "encapd_routes", "encapd_peers"], &[], |s| {
        let scope = TableScope { own: vec![prefix("100.96.1.0/24")], networks: vec![prefix("100.96.0.0/16")], underlay_ipv4: true };
        let peer = PeerSpec {
            wireguard: None,
            vtep_mac: None,
            kernel_decap: false,
            subnet: prefix("100.96.2.0/24"),
            endpoint: "198.18.0.2:8285".parse().unwrap(),
            origin: "test".into(),
        };
        s.source.table.store(Arc::new(SubnetTable::build(2, &scope, &[peer]).expect("a valid table")));
    })];
    for (dir, name) in [(Direction::Egress, "egress"), (Direction::Ingress, "ingress")] {
        out.push(stimulus(&format!("{name} latency"), &["encapd_gateway_latency_seconds"], &[("direction", name)], move |s| {
            s.recorders[1].latency(dir, Duration::from_micros(40), 5);
            s.flush(1);
        }));
        out.push(stimulus(&format!("{name} batch"), &["encapd_batch_packets"], &[("direction", name)], move |s| {
            s.recorders[1].batch(dir, 17);
            s.flush(1);
        }));
    }
    out
}

fn prefix(text: &str) -> Prefix {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

#[test]
fn every_counter_moves_exactly_its_own_series() {
    let mut s = Synthetic::new();
    let first = s.render();
    let families = declared(&first);

    // Every declared family is produced, and every sample is declared.
    let mut before = series(&first);
    for family in families.keys() {
        assert!(before.keys().any(|k| family_of(k, &families) == Some(family)), "family {family} is declared but has no samples");
    }
    for key in before.keys() {
        assert!(family_of(key, &families).is_some(), "sample {key} belongs to no declared family");
    }

    // Every field of the counter structs has a stimulus here.
    let (worker, control) = (worker_field_stimuli(), control_field_stimuli());
    let worker_fields = debug_fields(&format!("{:?}", WorkerCounters::default()));
    let control_fields = debug_fields(&format!("{:?}", ControlCounters::default()));
    assert_eq!(worker_fields, worker.keys().map(|k| k.to_string()).collect(), "WorkerCounters fields vs. the series they feed");
    assert_eq!(control_fields, control.keys().map(|k| k.to_string()).collect(), "ControlCounters fields vs. the series they feed");

    let mut moved: BTreeSet<String> = BTreeSet::new();
    let stimuli = worker.into_values().chain(control.into_values()).flatten().chain(other_stimuli());
    for st in stimuli {
        (st.apply)(&mut s);
        let after = series(&s.render());
        assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{}: the set of series changed", st.what);
        let changed: Vec<&String> = after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k).collect();
        assert!(!changed.is_empty(), "{}: no series moved", st.what);
        for key in &changed {
            let family = family_of(key, &families).unwrap_or_default();
            assert!(st.families.contains(&family), "{}: moved {key}, outside {:?}", st.what, st.families);
            for (k, v) in &st.labels {
                assert!(key.contains(&format!("{k:?}: {v:?}")), "{}: moved {key}, which lacks {k}={v}", st.what);
            }
            moved.insert(family.to_owned());
        }
        for family in &st.families {
            assert!(moved.contains(*family), "{}: family {family} did not move", st.what);
        }
        before = after;
    }

    let constant: BTreeSet<String> = ["encapd_engine_info", "encapd_offload_info"].map(String::from).into();
    let never: Vec<&String> = families.keys().filter(|f| !moved.contains(*f) && !constant.contains(*f)).collect();
    assert!(never.is_empty(), "families no stimulus moves (wire them or add a stimulus): {never:?}");
}

#[test]
fn debug_fields_reads_a_derived_debug() {
    let fields = debug_fields("X { a: 1, drops: [0, 0], inner: Y { z: 2 }, healthy: true }");
    assert_eq!(fields, ["a", "drops", "inner", "healthy"].map(String::from).into());
}

// ---------------------------------------------------------------------------
// 2. The daemon side, in namespaces

/// The drop reasons no test can provoke from outside the daemon, and why.
const UNPROVOKABLE: [(DropReason, &str); 1] = [(
    DropReason::BadOffloadHeader,
    "the kernel writes the virtio-net header of every packet it hands to the TUN, and it always describes the packet",
)];
/// The drop reasons only a vxlan node has; tests/e2e_vxlan.rs provokes each
/// from a kernel VTEP and checks its counter.
const VXLAN_ONLY: [DropReason; 4] = [DropReason::BadVxlanHeader, DropReason::WrongVni, DropReason::WrongMac, DropReason::UnsupportedFrame];
/// The drop reasons only a wireguard node has: the protocol core's
/// refusals (`DropReason::from_wireguard`), `wg_no_session` and the
/// under-load ones (`wg_cookie_reply`, `wg_handshake_overload`);
/// tests/e2e_wireguard.rs provokes the ones an outside sender can cause
/// (replayed, tampered, truncated, unknown index, wrong type, cryptokey
/// routing, a handshake flood) and checks their counters; the protocol core's own tests give
/// every refusal its reason.
fn wireguard_only(reason: DropReason) -> bool {
    reason.name().starts_with("wg_")
}

fn drops_on_a(t: &common::Topology, reason: DropReason) -> f64 {
    let text = common::counters::scrape(&t.node_a).expect("GET /metrics on nodeA");
    scrape::sum(&scrape::parse(&text).expect("parses"), "encapd_drops_total", &[("reason", reason.name())])
}

/// Sockets the stimuli send from.
struct Senders {
    /// nodeB's underlay address: a peer of nodeA.
    peer: UdpSocket,
    /// Another address on nodeB's underlay: no peer.
    stranger: UdpSocket,
    /// ctrA, a container behind nodeA.
    container: UdpSocket,
    /// nodeA itself.
    node: UdpSocket,
}

fn inner(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    Packet::new(src, dst).udp(40000, 7777, b"metrics wiring")
}

/// Makes encapd on nodeA drop one (or a few) packets for `reason`. The
/// match has no catch-all: a new reason does not compile until it has a
/// way to be provoked here (or is listed in [`UNPROVOKABLE`]).
fn provoke(t: &common::Topology, s: &Senders, reason: DropReason) {
    let to_a = common::ENCAPD_A;
    let (a, b) = ([100, 96, 1, 2], [100, 96, 2, 3]);
    let send = |sock: &UdpSocket, datagram: &[u8], to: (&str, u16)| {
        sock.send_to(datagram, to).unwrap_or_else(|e| panic!("{}: send to {to:?}: {e}", reason.name()));
    };
    match reason {
        DropReason::UnknownSender => send(&s.stranger, &inner(b, a), to_a),
        DropReason::SpoofedSource => send(&s.peer, &inner([100, 96, 9, 9], a), to_a),
        DropReason::WrongDestination => send(&s.peer, &inner(b, [100, 96, 3, 3]), to_a),
        DropReason::Malformed => send(&s.peer, &[0x55; 40], to_a),
        DropReason::Truncated => send(&s.peer, &inner(b, a)[..10], to_a),
        DropReason::BadHeaderLength => {
            let mut p = inner(b, a);
            p[0] = 0x44;
            send(&s.peer, &p, to_a);
        }
        DropReason::LengthMismatch => {
            let mut p = inner(b, a);
            let claimed = (p.len() + 8) as u16;
            p[2..4].copy_from_slice(&claimed.to_be_bytes());
            fix_ipv4_header_checksum(&mut p);
            send(&s.peer, &p, to_a);
        }
        DropReason::NoRoute => send(&s.container, b"no route", ("100.96.7.7", 9)),
        // Routed into the TUN by a host route on nodeA (see the set-up).
        DropReason::LocalDestination => send(&s.node, b"local", ("100.96.1.200", 9)),
        // TTL 2 leaves ctrA, nodeA's kernel forwards it with TTL 1.
        DropReason::TtlExpired => {
            s.container.set_ttl(2).unwrap();
            send(&s.container, b"ttl", (common::CTR_B, 9));
            s.container.set_ttl(64).unwrap();
        }
        // Multicast, routed into the TUN by a host route on nodeA.
        DropReason::NotForwardable => send(&s.node, b"multicast", ("239.1.2.3", 9)),
        // A TUN MTU above what the underlay carries lets a 1500-byte packet in.
        DropReason::TooBig => {
            common::ip(&t.node_a, &["link", "set", common::TUN, "mtu", "1500"]);
            let _ = t.ping(&t.ctr_a, &["-M", "do", "-s", "1472", "-c", "1", "-W", "1", common::CTR_B]);
            common::ip(&t.node_a, &["link", "set", common::TUN, "mtu", "1472"]);
        }
        // nftables refuses the tunnel datagram on nodeA's output: the send fails (EPERM).
        DropReason::SendFailed => {
            let path = t.dir().join("block-tunnel.nft");
            let rules = format!(
                "table inet encapd_test_block {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
                 udp dport {} drop\n  }}\n}}\n",
                common::PORT
            );
            std::fs::write(&path, rules).unwrap();
            let o = common::ns_exec(&t.node_a, &["nft", "-f", path.to_str().unwrap()], Duration::from_secs(10));
            assert!(o.ok(), "nft -f: {}", o.text());
            send(&s.container, b"blocked", (common::CTR_B, 9));
            std::thread::sleep(Duration::from_millis(300));
            let o = common::ns_exec(&t.node_a, &["nft", "delete", "table", "inet", "encapd_test_block"], Duration::from_secs(10));
            assert!(o.ok(), "nft delete: {}", o.text());
        }
        // A TUN that is down refuses writes (EIO). Last in `ALL`: nodeA's
        // overlay route goes with the link.
        DropReason::TunWriteFailed => {
            common::ip(&t.node_a, &["link", "set", common::TUN, "down"]);
            send(&s.peer, &inner(b, a), to_a);
        }
        DropReason::BadOffloadHeader => unreachable!("listed in UNPROVOKABLE"),
        DropReason::BadVxlanHeader | DropReason::WrongVni | DropReason::WrongMac | DropReason::UnsupportedFrame => {
            unreachable!("listed in VXLAN_ONLY")
        }
        DropReason::WgTruncated
        | DropReason::WgUnknownType
        | DropReason::WgWrongType
        | DropReason::WgBadMac1
        | DropReason::WgRateLimited
        | DropReason::WgDecrypt
        | DropReason::WgUnknownPeer
        | DropReason::WgUnknownIndex
        | DropReason::WgReplayedInitiation
        | DropReason::WgInitiationFlood
        | DropReason::WgWeakKey
        | DropReason::WgBadCookie
        | DropReason::WgReplayed
        | DropReason::WgExpired
        | DropReason::WgCounterLimit
        | DropReason::WgNotIp
        | DropReason::WgSpoofedSource
        | DropReason::WgNoSession
        | DropReason::WgCookieReply
        | DropReason::WgHandshakeOverload => unreachable!("wireguard only (see wireguard_only)"),
    }
}

#[test]
fn every_drop_reason_is_counted_by_a_running_daemon() {
    if !common::require_root() || !common::require_tools(&["nft"]) {
        return;
    }
    let t = common::Topology::new("uring");
    common::ip(&t.node_b, &["addr", "add", "198.18.0.66/24", "dev", "ul", "nodad"]);
    common::ip(&t.node_a, &["route", "add", "100.96.1.200/32", "dev", common::TUN]);
    common::ip(&t.node_a, &["route", "add", "239.1.2.3/32", "dev", common::TUN]);
    let senders = Senders {
        peer: udp_socket(&t.node_b, common::NODE_B_UNDERLAY),
        stranger: udp_socket(&t.node_b, "198.18.0.66"),
        container: udp_socket(&t.ctr_a, common::CTR_A),
        node: udp_socket(&t.node_a, "0.0.0.0"),
    };
    // Neighbours resolved, so that nothing below waits for ARP.
    let o = t.ping(&t.ctr_a, &["-c", "1", "-W", "2", common::CTR_B]);
    assert!(o.ok(), "{}", o.text());

    let unprovokable: BTreeSet<&str> = UNPROVOKABLE.iter().map(|(r, _)| r.name()).collect();
    let mut counted = BTreeSet::new();
    for reason in DropReason::ALL {
        if unprovokable.contains(reason.name()) || VXLAN_ONLY.contains(&reason) || wireguard_only(reason) {
            continue;
        }
        let before = drops_on_a(&t, reason);
        // Up to three attempts: the first packet of a kind may meet a cold cache.
        let moved = (0..3).any(|_| {
            provoke(&t, &senders, reason);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if drops_on_a(&t, reason) > before {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(moved, "encapd_drops_total{{reason=\"{}\"}} on nodeA did not rise when provoked", reason.name());
        counted.insert(reason.name());
    }
    let all: BTreeSet<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
    let vxlan: BTreeSet<&str> =
        VXLAN_ONLY.iter().map(|r| r.name()).chain(DropReason::ALL.iter().filter(|r| wireguard_only(**r)).map(|r| r.name())).collect();
    assert_eq!(counted.union(&unprovokable).chain(&vxlan).copied().collect::<BTreeSet<_>>(), all);
    assert!(unprovokable.iter().all(|r| all.contains(r)));
}
