//! encapd's wireguard backend against the other WireGuard
//! implementations (issue 31, part 3), as root in namespaces:
//!
//! ```text
//! ctrA ── nodeA: encapd, backend = "wireguard" ══ nodeB: wireguard-go | boringtun-cli ── ctrB
//! ```
//!
//! nodeB runs no encapd: its `flannel-wg` is laid out as flanneld lays
//! it out (`common::wg_peer`; port 51820, MTU underlay − 80, encapd's
//! node as its one peer, no keepalive), with keys from `wg genkey`.
//! encapd's private key file is a `wg genkey` output too, so the key
//! format is part of what interoperates.
//!
//! Who initiated is judged three ways: on the wire (nftables counters on
//! nodeB for the 148-byte initiation message, in and out), by encapd's
//! `wg_no_session` (a packet with no session is what makes encapd start
//! a handshake), and for wireguard-go by its verbose log, which names
//! each handshake message (boringtun-cli logs none at its default
//! verbosity). For each implementation:
//!
//! - **encapd initiates**: the first ping goes ctrA → ctrB with nodeB
//!   idle; nodeB received an initiation and sent none, encapd counted
//!   `wg_no_session`. Then ping both ways (IPv4 and IPv6), 64 MiB of TCP
//!   each way with matching SHA-256, UDP at 64, 512 and 1,392 bytes both
//!   ways (1,392 is the largest a 1,420 MTU carries), and the peer's `wg
//!   show transfer` accounts for the TCP bytes (they went through
//!   WireGuard, not around it).
//! - **1 GiB of TCP each way** with matching SHA-256 (`tcp_1gib_each_way`,
//!   the issue's figure), a test of its own so that it runs beside the
//!   others: 60–66 s per implementation with a debug encapd here (0.23–0.37
//!   Gbit/s), less with the release build CI runs.
//! - **a preshared key** (`wg genpsk`) on both sides: encapd initiates,
//!   then the restarted peer does; pings both ways, IPv4 and IPv6.
//! - **the peer initiates**: the first ping goes ctrB → ctrA with encapd
//!   idle; nodeB sent an initiation and received none, encapd never
//!   counted `wg_no_session` (it answered, it did not start). Then
//!   recovery: the peer restarted (same key, no sessions) while encapd
//!   still holds the old session, and ctrA pings
//!   first — encapd must notice the silence and handshake again; then
//!   encapd restarted while the peer holds the old session, and ctrB
//!   pings first — the peer must notice. Each recovery has a generous
//!   deadline (90 s; WireGuard's rule is a new handshake 15 s after
//!   unanswered data) and prints the time it took.
//! - **rekeying on time**, each side as the session's initiator: an echo
//!   a second for 150 s from the initiator's container; the initiator
//!   (and only it) sends one new initiation 110–140 s after the first
//!   echo (REKEY_AFTER_TIME is 120 s: the protocol's real timers, no
//!   build shortens them), and no echo is lost across the change of keys.
//!
//! Without root (or without `wg`, `wireguard-go`, `boringtun-cli`) they
//! skip, unless `ENCAPD_REQUIRE_ROOT_TESTS=1`.

use encapd_testbed as common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::bed::{Bed, ping_ok};
use common::instance::{Encapd, print_log_if_panicking};
use common::kernel_paths::{UNDERLAY_MTU, subnets};
use common::traffic::{hashed_transfer, sized_udp_delivered};
use common::wg_peer::{self, DEVICE, KeyPair, Layout, WgDevice, WgImpl, WgPeerSpec, generate_key_pair};
use common::{CTR_A, CTR_A6, CTR_B, CTR_B6, Node, TUN, TempDir};

const TCP_BYTES: usize = 64 << 20;
/// Generous: a debug encapd against a userspace peer on a loaded machine.
const TRANSFER_LIMIT: Duration = Duration::from_secs(240);
/// How long a first echo (a handshake) or a recovery may take.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

/// encapd on nodeA facing `imp` on nodeB. Fields drop in order: the
/// daemons stop before the namespaces go.
struct Interop {
    imp: WgImpl,
    encapd: Option<Encapd>,
    peer: Option<WgDevice>,
    peer_keys: KeyPair,
    encapd_keys: KeyPair,
    /// encapd as the peer's peer (with the preshared key, if any).
    facing: WgPeerSpec,
    config: PathBuf,
    dir: TempDir,
    bed: Bed,
}

impl Interop {
    /// The bed, the peer on nodeB (facing encapd's key and address),
    /// encapd on nodeA (its peers file naming the peer's key); returns
    /// once both run, before any traffic (no handshake yet).
    /// With `psk`, both sides share a preshared key from `wg genpsk`
    /// (flannel's optional `PSK`; encapd's per-peer
    /// `preshared_key_file`).
    fn start(imp: WgImpl, psk: bool) -> Interop {
        let bed = Bed::new(common::Underlay::Veth);
        bed.set_ctr_mtu(UNDERLAY_MTU - wg_peer::OVERHEAD);
        let dir = TempDir::new(&format!("wg-interop-{imp}"));
        let encapd_keys = generate_key_pair(dir.path(), "encapd-a").unwrap();
        let (sub_a, sub_a6) = subnets(Node::A);
        let mut facing = WgPeerSpec::facing_encapd(&encapd_keys.public_key, Node::A.underlay(), sub_a, Some(sub_a6));
        if psk {
            let key = common::run("wg", &["genpsk"]);
            assert!(key.ok(), "wg genpsk: {}", key.text());
            let path = dir.path().join("psk.key");
            wg_peer::write_private(&path, key.stdout.as_bytes()).unwrap();
            facing.preshared_key_file = Some(path);
        }
        let peer = wg_peer::start_facing_encapd(imp, bed.node_ns(Node::B), &Layout::of(Node::B), &facing, dir.path(), "peer-b")
            .unwrap_or_else(|e| panic!("{imp} on nodeB: {e}"));
        let peer_keys = peer.keys().clone();
        let config = write_encapd_config(dir.path(), &encapd_keys, &peer_keys.public_key, facing.preshared_key_file.as_deref());
        count_initiations(&bed, dir.path());
        let mut t = Interop { imp, encapd: None, peer: Some(peer), peer_keys, encapd_keys, facing, config, dir, bed };
        t.start_encapd();
        t
    }

    fn start_encapd(&mut self) {
        assert!(self.encapd.is_none());
        let log = self.dir.path().join("encapd-a.log");
        let mut d = Encapd::spawn_with(self.bed.node_ns(Node::A), &common::encapd_bin(), &[], &self.config, &log, &[]);
        let text = d.wait_ready(Duration::from_secs(20));
        assert!(text.contains("wireguard"), "encapd does not say it runs the wireguard backend:\n{text}");
        assert!(common::run("ip", &["-n", self.bed.node_ns(Node::A), "link", "show", TUN]).ok(), "no {TUN} on nodeA");
        self.encapd = Some(d);
    }

    fn restart_encapd(&mut self) {
        let st = self.encapd.take().expect("encapd runs").stop();
        assert!(st.success(), "encapd exited with {st} on SIGTERM");
        self.start_encapd();
    }

    /// Stops the peer and starts it again with the same key pair and
    /// layout, encapd again as its peer.
    fn restart_peer(&mut self) {
        let stopped = self.peer.take().expect("the peer runs").stop();
        assert!(stopped.status.is_ok(), "{} needed SIGKILL:\n{}", self.imp, stopped.log);
        assert!(stopped.device_gone, "{} left {DEVICE} behind", self.imp);
        let dev = WgDevice::start_with_keys(
            self.imp,
            self.bed.node_ns(Node::B),
            &Layout::of(Node::B),
            self.peer_keys.clone(),
            self.dir.path(),
            "peer-b",
        )
        .unwrap_or_else(|e| panic!("{} restarting: {e}", self.imp));
        dev.add_peer(&self.facing).unwrap();
        self.peer = Some(dev);
    }

    fn encapd(&mut self) -> &mut Encapd {
        self.encapd.as_mut().expect("encapd runs")
    }

    fn peer(&self) -> &WgDevice {
        self.peer.as_ref().expect("the peer runs")
    }

    fn ctr(&self, node: Node) -> &str {
        self.bed.ctr_ns(node)
    }

    /// Bytes the peer's `wg show transfer` counts for encapd: (received, sent).
    fn peer_transfer(&self) -> (u64, u64) {
        let o = self.peer().wg(&["show", DEVICE, "transfer"]);
        assert!(o.ok(), "wg show transfer: {}", o.text());
        let line = o.stdout.lines().find(|l| l.starts_with(&self.encapd_keys.public_key)).unwrap_or_else(|| {
            panic!("encapd's key is not a peer of {}: {}", self.imp, o.stdout);
        });
        let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
        (f[0], f[1])
    }
}

impl Drop for Interop {
    fn drop(&mut self) {
        drop(self.encapd.take());
        if let Some(p) = self.peer.take() {
            let log = p.log();
            drop(p);
            if std::thread::panicking() {
                eprintln!("---- {} log (nodeB) ----\n{log}----", self.imp);
                eprintln!("---- encapd config ----\n{}", std::fs::read_to_string(&self.config).unwrap_or_default());
            }
        }
        print_log_if_panicking("encapd log (nodeA)", &self.dir.path().join("encapd-a.log"));
    }
}

/// nodeA's configuration, as the testbed's other wireguard nodes have it
/// (`[dataplane] tun`, two workers, the control socket and subnet.env
/// beside it), and its peers file naming nodeB with the peer's key.
fn write_encapd_config(dir: &std::path::Path, keys: &KeyPair, peer_public_key: &str, psk: Option<&std::path::Path>) -> PathBuf {
    let (subnet, subnet6) = subnets(Node::A);
    let (peer_subnet, peer_subnet6) = subnets(Node::B);
    let config = format!(
        "[node]\npublic_ip = \"{}\"\nsubnet = \"{subnet}\"\nsubnet6 = \"{subnet6}\"\nprivate_key_file = \"{}\"\n\n\
         [network]\ncidr = \"{}\"\ncidr6 = \"{}\"\nbackend = \"wireguard\"\n\n\
         [dataplane]\ntun = \"{TUN}\"\nworkers = 2\nio = \"mmsg\"\n\n\
         [control]\nsource = \"file\"\npeers = \"peers-a.toml\"\nsubnet_env = \"subnet-a.env\"\n\n\
         [process]\ncontrol_socket = \"a.sock\"\n",
        Node::A.underlay(),
        keys.private_key_file.display(),
        wg_peer::CLUSTER_CIDR,
        wg_peer::CLUSTER_CIDR6,
    );
    let mut peers = format!(
        "[[peer]]\nsubnet = \"{peer_subnet}\"\nsubnet6 = \"{peer_subnet6}\"\npublic_ip = \"{}\"\npublic_key = \"{peer_public_key}\"\n",
        Node::B.underlay()
    );
    if let Some(psk) = psk {
        peers += &format!("preshared_key_file = \"{}\"\n", psk.display());
    }
    std::fs::write(dir.join("peers-a.toml"), peers).unwrap();
    let path = dir.join("encapd-a.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Pings `dst` from `ns` once a second until one echo comes back;
/// returns how long that took. Panics after [`RECOVERY_DEADLINE`].
fn ping_until_answered(ns: &str, dst: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if common::ns_exec(ns, &["ping", "-n", "-c", "1", "-W", "1", dst], Duration::from_secs(5)).ok() {
            return start.elapsed();
        }
        assert!(start.elapsed() < RECOVERY_DEADLINE, "{what}: {ns} -> {dst}: no echo within {RECOVERY_DEADLINE:?}");
    }
}

fn assert_three_pings(ns: &str, dst: &str, what: &str) {
    let o = common::ns_exec(ns, &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", dst], Duration::from_secs(30));
    assert!(o.ok() && o.stdout.contains(" 0% packet loss"), "{what}: {ns} -> {dst}: expected three echoes:\n{}", o.text());
}

/// nftables counters on nodeB for WireGuard handshake initiations, seen
/// on the wire whatever the implementation logs: a initiation is the
/// one message of 148 bytes (WireGuard paper §5.4.2; UDP length 156); a
/// response is 92, a cookie reply 64, and a transport message is 32 + a
/// multiple of 16, never 148. `input` counts those nodeB received (encapd
/// initiated), `output` those it sent.
fn count_initiations(bed: &Bed, dir: &std::path::Path) {
    let script = format!(
        "table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         udp dport {port} udp length 156 counter\n  }}\n  chain output {{\n    type filter hook output priority 0; \
         policy accept;\n    udp sport {port} udp length 156 counter\n  }}\n}}\n",
        port = wg_peer::WG_PORT
    );
    let path = dir.join("initiations.nft");
    std::fs::write(&path, &script).unwrap();
    let o = common::ns_exec(bed.node_ns(Node::B), &["nft", "-f", path.to_str().unwrap()], Duration::from_secs(10));
    assert!(o.ok(), "nft -f in nodeB: {}\n{script}", o.text());
}

const NFT_TABLE: &str = "encapd_wg_interop";

/// Handshake initiations nodeB has (received, sent) so far.
fn initiations(bed: &Bed) -> (u64, u64) {
    let o = common::ns_exec(bed.node_ns(Node::B), &["nft", "list", "table", "inet", NFT_TABLE], Duration::from_secs(10));
    assert!(o.ok(), "nft list: {}", o.text());
    let counts: Vec<u64> = o
        .stdout
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|rest| rest.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a packet count"))
        .collect();
    assert_eq!(counts.len(), 2, "two counters (input, output) in:\n{}", o.stdout);
    (counts[0], counts[1])
}

/// Which side sent the first handshake initiation, by wireguard-go's
/// verbose log (`device/send.go` "Sending handshake initiation",
/// `device/receive.go` "Received handshake initiation"): `Some(true)`
/// when the peer did. `None` when the log names neither (boringtun-cli
/// logs no handshakes at its default verbosity).
fn peer_initiated_first(log: &str) -> Option<bool> {
    let sent = log.find("Sending handshake initiation");
    let received = log.find("Received handshake initiation");
    match (sent, received) {
        (Some(s), Some(r)) => Some(s < r),
        (Some(_), None) => Some(true),
        (None, Some(_)) => Some(false),
        (None, None) => None,
    }
}

fn assert_initiator(t: &mut Interop, encapd_initiated: bool) {
    let c = t.encapd().counters();
    let no_session = c.drop("wg_no_session");
    let imp = t.imp;
    if encapd_initiated {
        assert!(no_session > 0, "{imp}: encapd should have started the handshake (wg_no_session > 0): {c:?}");
    } else {
        assert_eq!(no_session, 0, "{imp}: encapd should only have answered the handshake, yet it lacked a session: {c:?}");
    }
    let (received, sent) = initiations(&t.bed);
    eprintln!("{imp}: on the wire nodeB received {received} and sent {sent} handshake initiations");
    if encapd_initiated {
        assert!(received > 0 && sent == 0, "{imp}: encapd should have sent the initiation: nodeB received {received}, sent {sent}");
    } else {
        assert!(sent > 0 && received == 0, "{imp}: {imp} should have sent the initiation: nodeB received {received}, sent {sent}");
    }
    let log = t.peer().log();
    match peer_initiated_first(&log) {
        Some(peer_first) => {
            assert_eq!(peer_first, !encapd_initiated, "{imp}'s log disagrees about who initiated:\n{log}");
            eprintln!("{imp}: its log confirms {} initiated", if encapd_initiated { "encapd" } else { imp.name() });
        }
        None if imp == WgImpl::WireguardGo => panic!("wireguard-go logged no handshake:\n{log}"),
        None => eprintln!("{imp}: logs no handshakes; initiator judged by the wire and encapd's wg_no_session ({no_session})"),
    }
}

// ---------------------------------------------------------------------------

/// `bytes` of TCP ctrA → ctrB, then ctrB → ctrA, each with matching
/// SHA-256; the peer's `wg show transfer` must account for them.
fn tcp_each_way(t: &Interop, bytes: usize, limit: Duration) {
    let imp = t.imp;
    let (rx0, tx0) = t.peer_transfer();
    for (seed, from, to, dst) in [(1, Node::A, Node::B, CTR_B), (2, Node::B, Node::A, CTR_A)] {
        let addr: SocketAddr = format!("{dst}:5001").parse().unwrap();
        let tr = hashed_transfer(t.ctr(from), t.ctr(to), addr, seed, bytes, limit);
        let secs = tr.last_byte.duration_since(tr.first_byte).as_secs_f64();
        eprintln!("{imp}: {} MiB TCP ctr{from:?} -> ctr{to:?} in {secs:.2} s ({:.3} Gbit/s)", bytes >> 20, bytes as f64 * 8.0 / secs / 1e9);
        assert_eq!(tr.sent, bytes, "{imp}: ctr{from:?} -> ctr{to:?}: not everything was sent");
        assert_eq!((tr.got, &tr.got_hash), (tr.sent, &tr.sent_hash), "{imp}: ctr{from:?} -> ctr{to:?} not intact");
    }
    let (rx1, tx1) = t.peer_transfer();
    eprintln!("{imp}: wg show transfer on nodeB: {} bytes received, {} sent during the TCP transfers", rx1 - rx0, tx1 - tx0);
    assert!(rx1 - rx0 >= bytes as u64 && tx1 - tx0 >= bytes as u64, "{imp}: the TCP bytes did not go through WireGuard");
}

/// The issue's 1 GiB each way, with matching SHA-256.
fn tcp_1gib(imp: WgImpl) {
    if !wg_peer::require(imp) {
        return;
    }
    let t = Interop::start(imp, false);
    ping_until_answered(t.ctr(Node::A), CTR_B, imp.name());
    tcp_each_way(&t, 1 << 30, Duration::from_secs(900));
}

fn encapd_initiates_and_carries_traffic(imp: WgImpl) {
    if !wg_peer::require(imp) {
        return;
    }
    let mut t = Interop::start(imp, false);
    let took = ping_until_answered(t.ctr(Node::A), CTR_B, imp.name());
    eprintln!("{imp}: first echo ctrA -> ctrB after {took:?} (encapd initiating)");
    assert_initiator(&mut t, true);
    for (from, dst) in [(Node::A, CTR_B), (Node::B, CTR_A), (Node::A, CTR_B6), (Node::B, CTR_A6)] {
        assert_three_pings(t.ctr(from), dst, imp.name());
    }
    tcp_each_way(&t, TCP_BYTES, TRANSFER_LIMIT);
    for size in [64, 512, 1392] {
        for (from, from_ip, to, to_ip) in [(Node::A, CTR_A, Node::B, CTR_B), (Node::B, CTR_B, Node::A, CTR_A)] {
            let sent = 200;
            let to_addr = SocketAddr::new(to_ip.parse().unwrap(), 7000);
            let got = sized_udp_delivered(t.ctr(from), from_ip.parse().unwrap(), t.ctr(to), to_addr, size, sent, 1000);
            eprintln!("{imp}: UDP {size} B ctr{from:?} -> ctr{to:?}: {got} of {sent} arrived intact");
            // A rare loss on a loaded machine is allowed; a size the path
            // breaks loses all of them.
            assert!(got * 10 >= sent * 9, "{imp}: UDP {size} B ctr{from:?} -> ctr{to:?}: only {got} of {sent} arrived");
        }
    }
    let c = t.encapd().counters();
    for reason in ["wg_decrypt", "wg_replayed", "wg_spoofed_source", "wg_unknown_index", "wg_bad_mac1", "wg_truncated"] {
        assert_eq!(c.drop(reason), 0, "{imp}: encapd dropped {reason} in clean traffic: {c:?}");
    }
}

fn peer_initiates_and_both_recover(imp: WgImpl) {
    if !wg_peer::require(imp) {
        return;
    }
    let mut t = Interop::start(imp, false);
    let took = ping_until_answered(t.ctr(Node::B), CTR_A, imp.name());
    eprintln!("{imp}: first echo ctrB -> ctrA after {took:?} ({imp} initiating)");
    assert_initiator(&mut t, false);
    assert_three_pings(t.ctr(Node::A), CTR_B, imp.name());

    // The peer comes back without sessions; encapd still has one and
    // sends first: it must find out and handshake again.
    t.restart_peer();
    let took = ping_until_answered(t.ctr(Node::A), CTR_B, &format!("after {imp} restarted"));
    eprintln!("{imp} restarted: traffic ctrA -> ctrB flows again after {took:?}");
    assert!(ping_ok(t.ctr(Node::B), CTR_A6, 10), "{imp} restarted: no IPv6 ping ctrB -> ctrA");

    // encapd comes back without sessions; the peer still has one and
    // sends first.
    t.restart_encapd();
    let took = ping_until_answered(t.ctr(Node::B), CTR_A, &format!("after encapd restarted ({imp})"));
    eprintln!("encapd restarted: traffic ctrB -> ctrA ({imp}) flows again after {took:?}");
    assert_three_pings(t.ctr(Node::A), CTR_B, "after encapd restarted");
    assert_three_pings(t.ctr(Node::A), CTR_B6, "after encapd restarted");
}

/// Both sides with one preshared key: each initiating in turn (a
/// handshake with the wrong or a missing PSK fails, so a side that
/// ignored it would get no echo), IPv4 and IPv6 both ways.
fn preshared_key(imp: WgImpl) {
    if !wg_peer::require(imp) {
        return;
    }
    let mut t = Interop::start(imp, true);
    let took = ping_until_answered(t.ctr(Node::A), CTR_B, &format!("{imp} with a PSK"));
    eprintln!("{imp} with a PSK: first echo ctrA -> ctrB after {took:?} (encapd initiating)");
    assert_initiator(&mut t, true);
    for (from, dst) in [(Node::B, CTR_A), (Node::A, CTR_B6), (Node::B, CTR_A6)] {
        assert_three_pings(t.ctr(from), dst, &format!("{imp} with a PSK"));
    }
    // The peer, restarted, initiates this time (ctrB sends first, and
    // encapd's session is not stale in its direction: nodeB has none).
    t.restart_peer();
    let took = ping_until_answered(t.ctr(Node::B), CTR_A, &format!("{imp} with a PSK, restarted"));
    eprintln!("{imp} with a PSK, restarted and initiating: first echo ctrB -> ctrA after {took:?}");
    let (received, sent) = initiations(&t.bed);
    assert!(sent > 0, "{imp} with a PSK: the restarted peer sent no initiation (received {received})");
    assert_three_pings(t.ctr(Node::A), CTR_B, &format!("{imp} with a PSK, restarted"));
}

/// How long the rekey tests keep an echo a second going after the first
/// handshake: past REKEY_AFTER_TIME (120 s; the protocol's own, which no
/// build of encapd shortens) with room for a loaded machine, and short of
/// REJECT_AFTER_TIME (180 s), after which the old session would be gone.
const REKEY_WATCH: Duration = Duration::from_secs(150);
/// The window the rekey must fall in, from the first echo: around
/// REKEY_AFTER_TIME, allowing that the session may be up to a couple of
/// seconds older than the first echo (when encapd initiates, the ping that
/// started the handshake is dropped and the next one, a second later, is
/// the first answered), and for the next send plus scheduling on a loaded
/// machine after it. Well clear of the 15 s of a handshake for unanswered
/// data, which is what a wrong rekey would look like.
const REKEY_WINDOW: (Duration, Duration) = (Duration::from_secs(110), Duration::from_secs(140));

/// Rekeying on time, with the real timers: the session's initiator (encapd
/// or the peer) starts a new handshake once it sends on a session older
/// than REKEY_AFTER_TIME, the other side follows, and the echo a second
/// that the initiator's container keeps going loses nothing across the
/// change of keys (both sides keep the previous session for packets in
/// flight). Judged on the wire: the new initiation is sent by the side
/// that initiated the first, in the window after REKEY_AFTER_TIME, and
/// none other is sent in between. Rekeying after REKEY_AFTER_MESSAGES
/// (2^60) cannot be reached in a test; `src/wireguard/tests.rs` steps it
/// with lowered limits against the same state machine.
fn rekeys_on_time(imp: WgImpl, encapd_initiates: bool) {
    if !wg_peer::require(imp) {
        return;
    }
    let mut t = Interop::start(imp, false);
    let (from, dst, initiator) = if encapd_initiates { (Node::A, CTR_B, "encapd") } else { (Node::B, CTR_A, imp.name()) };
    let took = ping_until_answered(t.ctr(from), dst, &format!("{imp}, {initiator} initiating"));
    let session = Instant::now();
    eprintln!("{imp}: first echo ctr{from:?} -> {dst} after {took:?} ({initiator} initiating)");
    assert_initiator(&mut t, encapd_initiates);
    // Initiations nodeB saw in the direction of the session's initiator.
    let initiator_sent = |t: &Interop| {
        let (received, sent) = initiations(&t.bed);
        if encapd_initiates { (received, sent) } else { (sent, received) }
    };
    let (first, _) = initiator_sent(&t);
    let (mut echoes, mut answered, mut rekeyed_at) = (0u32, 0u32, None);
    while session.elapsed() < REKEY_WATCH {
        let tick = Instant::now();
        echoes += 1;
        if common::ns_exec(t.ctr(from), &["ping", "-n", "-c", "1", "-W", "2", dst], Duration::from_secs(5)).ok() {
            answered += 1;
        }
        let (by_initiator, by_other) = initiator_sent(&t);
        assert_eq!(by_other, 0, "{imp}: the side that did not initiate sent an initiation at {:?}", session.elapsed());
        if by_initiator > first && rekeyed_at.is_none() {
            rekeyed_at = Some(session.elapsed());
            eprintln!("{imp}: {initiator} sent a new initiation {:?} after the first echo", session.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
    }
    let (last, _) = initiator_sent(&t);
    eprintln!(
        "{imp}: {answered} of {echoes} echoes answered over {REKEY_WATCH:?}; {initiator} sent {} initiation(s) after the first",
        last - first
    );
    let at = rekeyed_at.unwrap_or_else(|| panic!("{imp}: {initiator} did not rekey within {REKEY_WATCH:?} of the first echo"));
    assert!(
        at >= REKEY_WINDOW.0 && at <= REKEY_WINDOW.1,
        "{imp}: the rekey came {at:?} after the first echo, outside {REKEY_WINDOW:?} (REKEY_AFTER_TIME is 120 s)"
    );
    assert_eq!(last - first, 1, "{imp}: one rekey expected, {initiator} sent {} initiations", last - first);
    assert_eq!(answered, echoes, "{imp}: echoes lost across the rekey");
    assert_three_pings(t.ctr(from.other()), if from == Node::A { CTR_A } else { CTR_B }, &format!("{imp} after the rekey"));
}

mod wireguard_go {
    use super::*;

    #[test]
    fn encapd_rekeys_on_time_and_the_peer_follows() {
        super::rekeys_on_time(WgImpl::WireguardGo, true);
    }

    #[test]
    fn the_peer_rekeys_on_time_and_encapd_follows() {
        super::rekeys_on_time(WgImpl::WireguardGo, false);
    }

    #[test]
    fn encapd_initiates_and_carries_traffic() {
        super::encapd_initiates_and_carries_traffic(WgImpl::WireguardGo);
    }

    #[test]
    fn peer_initiates_and_both_recover_from_restarts() {
        super::peer_initiates_and_both_recover(WgImpl::WireguardGo);
    }

    #[test]
    fn preshared_key() {
        super::preshared_key(WgImpl::WireguardGo);
    }

    #[test]
    fn tcp_1gib_each_way() {
        super::tcp_1gib(WgImpl::WireguardGo);
    }
}

mod boringtun {
    use super::*;

    #[test]
    fn encapd_rekeys_on_time_and_the_peer_follows() {
        super::rekeys_on_time(WgImpl::Boringtun, true);
    }

    #[test]
    fn the_peer_rekeys_on_time_and_encapd_follows() {
        super::rekeys_on_time(WgImpl::Boringtun, false);
    }

    #[test]
    fn encapd_initiates_and_carries_traffic() {
        super::encapd_initiates_and_carries_traffic(WgImpl::Boringtun);
    }

    #[test]
    fn peer_initiates_and_both_recover_from_restarts() {
        super::peer_initiates_and_both_recover(WgImpl::Boringtun);
    }

    #[test]
    fn preshared_key() {
        super::preshared_key(WgImpl::Boringtun);
    }

    #[test]
    fn tcp_1gib_each_way() {
        super::tcp_1gib(WgImpl::Boringtun);
    }
}
