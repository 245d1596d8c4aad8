//! Per-worker counters. Each worker owns one [`WorkerCounters`] (on its own
//! cache line) and is its only writer, so updates are plain relaxed
//! load+store pairs, never a locked read-modify-write; readers (the summary,
//! the metrics endpoint) take relaxed snapshots and sum them. A successor
//! that took the data path over adds its predecessor's final counts
//! ([`WorkerCounters::carry`]), so totals carry on across the takeover.

pub mod exposition;
pub mod format;
pub mod latency;
pub mod quantile;
pub mod scrape;
pub mod server;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Why a packet was not forwarded. One counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Ingress: datagram from an address that is no peer's public IP.
    UnknownSender,
    /// Ingress: inner source is not in the sending peer's subnet.
    SpoofedSource,
    /// Ingress: inner destination is not in this node's subnet.
    WrongDestination,
    /// Empty packet or IP version other than 4/6.
    Malformed,
    /// Shorter than its fixed IP header.
    Truncated,
    /// IPv4 header length field out of range.
    BadHeaderLength,
    /// IP length field disagrees with the bytes received.
    LengthMismatch,
    /// Egress: no peer owns the destination (ICMP unreachable sent).
    NoRoute,
    /// Egress: destination is this node's own subnet; sending it would loop.
    LocalDestination,
    /// Egress: TTL/hop limit expired here (ICMP time exceeded sent).
    TtlExpired,
    /// Egress: multicast, broadcast or link-local destination, which a
    /// router never forwards (e.g. the kernel's own IPv6 MLD reports).
    NotForwardable,
    /// Egress: larger than the path MTU (ICMP fragmentation needed sent).
    TooBig,
    /// Egress: the TUN's virtio-net header does not describe its packet.
    BadOffloadHeader,
    /// The UDP send failed (underlay down, buffer full, ...).
    SendFailed,
    /// The write into the TUN failed.
    TunWriteFailed,
    /// Ingress (vxlan): shorter than the VXLAN and Ethernet headers, or
    /// VXLAN flags without the VNI bit.
    BadVxlanHeader,
    /// Ingress (vxlan): a VNI other than ours.
    WrongVni,
    /// Ingress (vxlan): an inner Ethernet destination other than our VTEP
    /// MAC (broadcast is accepted for ARP only).
    WrongMac,
    /// Ingress (vxlan): neither IPv4, IPv6 nor an ARP request.
    UnsupportedFrame,
    /// Ingress (wireguard): shorter than its message type requires, or a handshake message of the wrong length.
    WgTruncated,
    /// Ingress (wireguard): not one of the four message types.
    WgUnknownType,
    /// Ingress (wireguard): a message type this node never takes (e.g. a cookie reply it did not ask for).
    WgWrongType,
    /// Ingress (wireguard): a handshake message whose mac1 is not for our public key.
    WgBadMac1,
    /// Ingress (wireguard): under load, a source over its handshake rate.
    WgRateLimited,
    /// Ingress (wireguard): an AEAD did not open (tampered, forged, or for another key).
    WgDecrypt,
    /// Ingress (wireguard): an initiation from a static key that is no peer's.
    WgUnknownPeer,
    /// Ingress (wireguard): a receiver index with no session or handshake behind it.
    WgUnknownIndex,
    /// Ingress (wireguard): an initiation whose timestamp is not newer than the last.
    WgReplayedInitiation,
    /// Ingress (wireguard): initiations from one peer closer than 20 ms.
    WgInitiationFlood,
    /// Ingress (wireguard): a low-order public key (no shared secret).
    WgWeakKey,
    /// Ingress (wireguard): a cookie reply that does not decrypt against our last mac1.
    WgBadCookie,
    /// Ingress (wireguard): a transport counter seen before or behind the replay window.
    WgReplayed,
    /// Ingress (wireguard): a transport message on a session past REJECT_AFTER_TIME.
    WgExpired,
    /// Ingress (wireguard): a transport counter at or beyond REJECT_AFTER_MESSAGES.
    WgCounterLimit,
    /// Ingress (wireguard): a decrypted payload that is not one IP packet.
    WgNotIp,
    /// Ingress (wireguard): cryptokey routing refused a decrypted packet: its inner source is not in the sending peer's subnets.
    WgSpoofedSource,
    /// Egress (wireguard): no session with the peer yet (a handshake was started; the packet is dropped, not queued).
    WgNoSession,
    /// Ingress (wireguard): under load, a handshake message without a valid mac2: not worked on, answered with a cookie reply (so this counts the cookie replies sent).
    WgCookieReply,
    /// Ingress (wireguard): under load, a handshake message past its worker's budget for the window (docs/wireguard.md, "Under load in the workers"): dropped unread.
    WgHandshakeOverload,
}

impl DropReason {
    pub const ALL: [DropReason; 39] = [
        DropReason::UnknownSender,
        DropReason::SpoofedSource,
        DropReason::WrongDestination,
        DropReason::Malformed,
        DropReason::Truncated,
        DropReason::BadHeaderLength,
        DropReason::LengthMismatch,
        DropReason::NoRoute,
        DropReason::LocalDestination,
        DropReason::TtlExpired,
        DropReason::NotForwardable,
        DropReason::TooBig,
        DropReason::BadOffloadHeader,
        DropReason::SendFailed,
        DropReason::TunWriteFailed,
        DropReason::BadVxlanHeader,
        DropReason::WrongVni,
        DropReason::WrongMac,
        DropReason::UnsupportedFrame,
        DropReason::WgTruncated,
        DropReason::WgUnknownType,
        DropReason::WgWrongType,
        DropReason::WgBadMac1,
        DropReason::WgRateLimited,
        DropReason::WgDecrypt,
        DropReason::WgUnknownPeer,
        DropReason::WgUnknownIndex,
        DropReason::WgReplayedInitiation,
        DropReason::WgInitiationFlood,
        DropReason::WgWeakKey,
        DropReason::WgBadCookie,
        DropReason::WgReplayed,
        DropReason::WgExpired,
        DropReason::WgCounterLimit,
        DropReason::WgNotIp,
        DropReason::WgSpoofedSource,
        DropReason::WgNoSession,
        DropReason::WgCookieReply,
        DropReason::WgHandshakeOverload,
    ];

    /// The label used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::UnknownSender => "unknown_sender",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::Malformed => "malformed",
            DropReason::Truncated => "truncated",
            DropReason::BadHeaderLength => "bad_header_length",
            DropReason::LengthMismatch => "length_mismatch",
            DropReason::NoRoute => "no_route",
            DropReason::LocalDestination => "local_destination",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::NotForwardable => "not_forwardable",
            DropReason::TooBig => "too_big",
            DropReason::BadOffloadHeader => "bad_offload_header",
            DropReason::SendFailed => "send_failed",
            DropReason::TunWriteFailed => "tun_write_failed",
            DropReason::BadVxlanHeader => "bad_vxlan_header",
            DropReason::WrongVni => "wrong_vni",
            DropReason::WrongMac => "wrong_mac",
            DropReason::UnsupportedFrame => "unsupported_frame",
            DropReason::WgTruncated => "wg_truncated",
            DropReason::WgUnknownType => "wg_unknown_type",
            DropReason::WgWrongType => "wg_wrong_type",
            DropReason::WgBadMac1 => "wg_bad_mac1",
            DropReason::WgRateLimited => "wg_rate_limited",
            DropReason::WgDecrypt => "wg_decrypt",
            DropReason::WgUnknownPeer => "wg_unknown_peer",
            DropReason::WgUnknownIndex => "wg_unknown_index",
            DropReason::WgReplayedInitiation => "wg_replayed_initiation",
            DropReason::WgInitiationFlood => "wg_initiation_flood",
            DropReason::WgWeakKey => "wg_weak_key",
            DropReason::WgBadCookie => "wg_bad_cookie",
            DropReason::WgReplayed => "wg_replayed",
            DropReason::WgExpired => "wg_expired",
            DropReason::WgCounterLimit => "wg_counter_limit",
            DropReason::WgNotIp => "wg_not_ip",
            DropReason::WgSpoofedSource => "wg_spoofed_source",
            DropReason::WgNoSession => "wg_no_session",
            DropReason::WgCookieReply => "wg_cookie_reply",
            DropReason::WgHandshakeOverload => "wg_handshake_overload",
        }
    }

    /// The counter for a refusal of the WireGuard protocol core.
    pub const fn from_wireguard(reason: crate::wireguard::DropReason) -> DropReason {
        use crate::wireguard::DropReason as Wg;
        match reason {
            Wg::Truncated => DropReason::WgTruncated,
            Wg::UnknownType => DropReason::WgUnknownType,
            Wg::WrongType => DropReason::WgWrongType,
            Wg::BadMac1 => DropReason::WgBadMac1,
            Wg::RateLimited => DropReason::WgRateLimited,
            Wg::Decrypt => DropReason::WgDecrypt,
            Wg::UnknownPeer => DropReason::WgUnknownPeer,
            Wg::UnknownIndex => DropReason::WgUnknownIndex,
            Wg::ReplayedInitiation => DropReason::WgReplayedInitiation,
            Wg::InitiationFlood => DropReason::WgInitiationFlood,
            Wg::WeakKey => DropReason::WgWeakKey,
            Wg::BadCookie => DropReason::WgBadCookie,
            Wg::Replayed => DropReason::WgReplayed,
            Wg::Expired => DropReason::WgExpired,
            Wg::CounterLimit => DropReason::WgCounterLimit,
            Wg::NotIp => DropReason::WgNotIp,
            Wg::SpoofedSource => DropReason::WgSpoofedSource,
        }
    }

    pub fn from_name(name: &str) -> Option<DropReason> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Counters of the control plane (written by the control thread and the
/// etcd source, read by the metrics endpoint and the summary).
#[derive(Debug)]
pub struct ControlCounters {
    pub tables_published: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Leases in etcd skipped as malformed (bad JSON, wrong types, bad key,
    /// subnet outside the network), each distinct write counted once.
    pub malformed_leases: AtomicU64,
    /// The source is readable and its last change was applied.
    pub healthy: AtomicBool,
    /// Unix time (ms) the table in force was published; until the control
    /// thread publishes one, the time these counters were made (start-up).
    pub table_published_unix_ms: AtomicU64,
}

impl Default for ControlCounters {
    fn default() -> Self {
        ControlCounters {
            tables_published: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            malformed_leases: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            table_published_unix_ms: AtomicU64::new(unix_time_ms()),
        }
    }
}

/// One worker's counters. Written only by that worker.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerCounters {
    /// Packets read from the TUN and sent to a peer.
    pub egress_packets: AtomicU64,
    pub egress_bytes: AtomicU64,
    /// UDP send operations (one GSO send carries many packets).
    pub egress_sends: AtomicU64,
    /// Packets received from peers and written to the TUN.
    pub ingress_packets: AtomicU64,
    pub ingress_bytes: AtomicU64,
    /// UDP receive completions (one GRO receive carries many datagrams).
    pub ingress_receives: AtomicU64,
    pub icmp_sent: AtomicU64,
    /// ICMP errors owed but not sent because the worker's rate limit
    /// (1000/s, bursts of 100) was exhausted.
    pub icmp_rate_limited: AtomicU64,
    /// ARP requests from peer VTEPs answered (vxlan backend).
    pub arp_replies: AtomicU64,
    pub drops: [AtomicU64; DropReason::ALL.len()],
    /// Version of the subnet table this worker used for its latest batch.
    pub table_version: AtomicU64,
    /// What this worker's predecessors counted (see [`carry`](Self::carry)).
    carried: Carried,
}

// By hand: `Default` is derived for arrays of at most 32 elements.
impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            egress_packets: AtomicU64::new(0),
            egress_bytes: AtomicU64::new(0),
            egress_sends: AtomicU64::new(0),
            ingress_packets: AtomicU64::new(0),
            ingress_bytes: AtomicU64::new(0),
            ingress_receives: AtomicU64::new(0),
            icmp_sent: AtomicU64::new(0),
            icmp_rate_limited: AtomicU64::new(0),
            arp_replies: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            table_version: AtomicU64::new(0),
            carried: Carried::default(),
        }
    }
}

/// Counts carried over from the process this one took the data path from:
/// added to every [`WorkerCounters::snapshot`], never touched by the
/// worker, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Carried(std::sync::Mutex<CounterSnapshot>);

/// Milliseconds since the Unix epoch (0 if the clock is before it), for
/// `_timestamp_seconds` gauges. Not for the hot path: it reads the clock.
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Adds to a counter that only the calling thread writes.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerCounters {
    #[inline]
    pub fn drop(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }

    /// Adds a predecessor's final counts: from now on every snapshot
    /// includes them, so the totals carry on across a takeover. Called by
    /// the main thread (never the worker), while the worker may be counting.
    pub fn carry(&self, counts: &CounterSnapshot) {
        let mut carried = self.carried.0.lock().unwrap_or_else(|e| e.into_inner());
        let version = carried.table_version;
        carried.add(counts);
        carried.table_version = version;
    }

    /// The counts so far, including those carried over from predecessors.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut own = self.own_snapshot();
        let carried = self.carried.0.lock().unwrap_or_else(|e| e.into_inner());
        let version = own.table_version;
        own.add(&carried);
        own.table_version = version;
        own
    }

    fn own_snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            egress_packets: self.egress_packets.load(Relaxed),
            egress_bytes: self.egress_bytes.load(Relaxed),
            egress_sends: self.egress_sends.load(Relaxed),
            ingress_packets: self.ingress_packets.load(Relaxed),
            ingress_bytes: self.ingress_bytes.load(Relaxed),
            ingress_receives: self.ingress_receives.load(Relaxed),
            icmp_sent: self.icmp_sent.load(Relaxed),
            icmp_rate_limited: self.icmp_rate_limited.load(Relaxed),
            arp_replies: self.arp_replies.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Relaxed)),
            table_version: self.table_version.load(Relaxed),
        }
    }
}

/// A plain copy of counters, from one worker or summed over all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub egress_sends: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    pub ingress_receives: u64,
    pub icmp_sent: u64,
    pub icmp_rate_limited: u64,
    pub arp_replies: u64,
    pub drops: [u64; DropReason::ALL.len()],
    pub table_version: u64,
}

// By hand: `Default` is derived for arrays of at most 32 elements.
impl Default for CounterSnapshot {
    fn default() -> Self {
        CounterSnapshot {
            egress_packets: 0,
            egress_bytes: 0,
            egress_sends: 0,
            ingress_packets: 0,
            ingress_bytes: 0,
            ingress_receives: 0,
            icmp_sent: 0,
            icmp_rate_limited: 0,
            arp_replies: 0,
            drops: [0; DropReason::ALL.len()],
            table_version: 0,
        }
    }
}

impl CounterSnapshot {
    pub fn add(&mut self, o: &CounterSnapshot) {
        self.egress_packets += o.egress_packets;
        self.egress_bytes += o.egress_bytes;
        self.egress_sends += o.egress_sends;
        self.ingress_packets += o.ingress_packets;
        self.ingress_bytes += o.ingress_bytes;
        self.ingress_receives += o.ingress_receives;
        self.icmp_sent += o.icmp_sent;
        self.icmp_rate_limited += o.icmp_rate_limited;
        self.arp_replies += o.arp_replies;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        self.table_version = self.table_version.max(o.table_version);
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

/// The human-readable counter summary printed on exit and on SIGUSR1: one
/// line per worker and a total, then drops by reason (non-zero only).
pub fn summary(workers: &[&WorkerCounters]) -> String {
    let mut out = String::new();
    let mut total = CounterSnapshot::default();
    for (i, w) in workers.iter().enumerate() {
        let s = w.snapshot();
        line(&mut out, &format!("worker {i}"), &s);
        total.add(&s);
    }
    line(&mut out, "total", &total);
    for r in DropReason::ALL {
        let n = total.drop_count(r);
        if n > 0 {
            let _ = writeln!(out, "  drops {:<18} {n}", r.name());
        }
    }
    out
}

fn line(out: &mut String, who: &str, s: &CounterSnapshot) {
    let drops: u64 = s.drops.iter().sum();
    let _ = writeln!(
        out,
        "  {who:<9} egress {} pkts {} bytes in {} sends | ingress {} pkts {} bytes in {} receives | icmp {} ({} rate-limited) | drops {} | table v{}",
        s.egress_packets,
        s.egress_bytes,
        s.egress_sends,
        s.ingress_packets,
        s.ingress_bytes,
        s.ingress_receives,
        s.icmp_sent,
        s.icmp_rate_limited,
        drops,
        s.table_version
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "ALL is in discriminant order");
            assert_eq!(DropReason::from_name(r.name()), Some(r));
        }
    }

    #[test]
    fn carried_counts_add_to_every_snapshot() {
        let w = WorkerCounters::default();
        bump(&w.egress_packets, 5);
        w.table_version.store(7, Relaxed);
        let mut before = CounterSnapshot { egress_packets: 100, table_version: 3, ..CounterSnapshot::default() };
        before.drops[DropReason::NoRoute as usize] = 2;
        w.carry(&before);
        w.carry(&before);
        let s = w.snapshot();
        assert_eq!((s.egress_packets, s.drop_count(DropReason::NoRoute), s.table_version), (205, 4, 7));
    }

    #[test]
    fn summary_sums_workers() {
        let a = WorkerCounters::default();
        let b = WorkerCounters::default();
        bump(&a.egress_packets, 3);
        bump(&b.egress_packets, 4);
        b.drop(DropReason::SpoofedSource);
        let text = summary(&[&a, &b]);
        assert!(text.contains("total     egress 7 pkts"), "{text}");
        assert!(text.contains("drops spoofed_source     1"), "{text}");
    }
}
