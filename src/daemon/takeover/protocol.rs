//! The handover protocol's messages and their encoding; no I/O.
//!
//! Each message is one `SOCK_SEQPACKET` packet holding one JSON object
//! whose `"type"` field names it; fds travel as `SCM_RIGHTS` with the
//! message that announces them. JSON (not a binary layout) because both
//! ends are different builds by design: a field added later is ignored by
//! an older peer, a field it lacks takes its default, and a message that
//! does not parse is an error naming what was wrong, never a crash.
//!
//! The first message of a connection is the client's [`Hello`] (a
//! successor) or [`Upgrade`] (`encapd upgrade`); both carry the range of
//! protocol versions the client speaks, and the running daemon answers in
//! the highest version both speak, or refuses. Version 1 is the sequence
//! documented in the parent module.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::compat::Compat;
use crate::stats::{CounterSnapshot, DropReason};

/// The protocol versions this build speaks.
pub const SUPPORTED: VersionRange = VersionRange { min: 1, max: 1 };

/// Longest message accepted, in bytes (counters for 64 workers fit in a
/// fraction of it).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    pub min: u32,
    pub max: u32,
}

impl VersionRange {
    /// The highest version both ranges contain.
    pub fn negotiate(self, other: VersionRange) -> Option<u32> {
        let (lo, hi) = (self.min.max(other.min), self.max.min(other.max));
        (lo <= hi).then_some(hi)
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max { write!(f, "{}", self.min) } else { write!(f, "{} to {}", self.min, self.max) }
    }
}

/// Every message of the protocol, in either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Successor → running: "I would take over; here is my configuration".
    Hello(Hello),
    /// `encapd upgrade` → running: "start your successor and tell me how it went".
    Upgrade(Upgrade),
    /// Anyone → running: "who are you?" (a second `encapd run` finding the
    /// socket taken; the socket's own credentials name whoever created it,
    /// which after a takeover is a process long gone).
    Who,
    /// Running → `who`: its pid, network namespace and TUN.
    Identity(Identity),
    /// Running → client: no (the reason names the difference or the version).
    Refused(Refused),
    /// Running → successor: yes, and what it is handing over.
    Accepted(Accepted),
    /// Running → successor: one worker's fds, attached: TUN queue, UDP
    /// socket, then `senders` sender sockets.
    Worker(WorkerFds),
    /// Running → successor: the listening control socket, attached.
    ControlSocket,
    /// Running → successor, after the control socket when `accepted` says
    /// so: the kernel path's fds, attached (its two TCX links, then the
    /// IPv4 and IPv6 routes maps and the counters map;
    /// `datapath::kernel::KernelFds`).
    KernelPath,
    /// Successor → running: my workers are forwarding on the fds; stop reading.
    Ready,
    /// Running → successor: my workers are parked with nothing in flight;
    /// these are my final counters.
    Released(Released),
    /// Successor → running: I own the data path; exit.
    Done,
    /// Either way: the handover is off (the running daemon keeps forwarding).
    Abort(Abort),
    /// Running → `encapd upgrade`: how the successor's takeover ended.
    UpgradeResult(UpgradeResult),
}

impl Message {
    /// The message's name, as on the wire (for error messages).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Upgrade(_) => "upgrade",
            Message::Who => "who",
            Message::Identity(_) => "identity",
            Message::Refused(_) => "refused",
            Message::Accepted(_) => "accepted",
            Message::Worker(_) => "worker",
            Message::ControlSocket => "control_socket",
            Message::KernelPath => "kernel_path",
            Message::Ready => "ready",
            Message::Released(_) => "released",
            Message::Done => "done",
            Message::Abort(_) => "abort",
            Message::UpgradeResult(_) => "upgrade_result",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: VersionRange,
    pub pid: u32,
    /// The successor's `encapd --version`, for the log.
    #[serde(default)]
    pub version: String,
    pub compat: Compat,
    /// The successor carries on with the kernel path's fds (a `kernel_path`
    /// message); an older build does not ask, and is sent none.
    #[serde(default)]
    pub kernel_fds: bool,
    /// It also takes the XDP link (`xdp_decap`) as a sixth kernel-path fd;
    /// an older build does not ask, and is sent five (the XDP program then
    /// detaches with the predecessor; `decap` carries on alone).
    #[serde(default)]
    pub kernel_xdp: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    pub protocol: VersionRange,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
    /// The refusing daemon's pid.
    #[serde(default)]
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    /// Inode of its network namespace.
    pub netns: u64,
    pub tun: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abort {
    pub reason: String,
}

/// What the kernel granted the running daemon's fds; they keep these
/// properties when they change hands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataplaneFacts {
    pub gso: bool,
    pub gro: bool,
    pub vnet_hdr: bool,
    pub uso: bool,
}

/// The etcd lease the running daemon holds for its subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub subnet: String,
    pub lease_id: i64,
    /// When the holder planned to renew it (Unix time, ms).
    #[serde(default)]
    pub renew_at_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The version both speak, used from here on.
    pub protocol: u32,
    pub pid: u32,
    #[serde(default)]
    pub version: String,
    /// The running daemon's configuration, as it resolved it.
    pub compat: Compat,
    pub dataplane: DataplaneFacts,
    /// `Worker` messages that follow.
    pub workers: u32,
    /// The version of the subnet table in force.
    pub table_version: u64,
    #[serde(default)]
    pub lease: Option<LeaseState>,
    /// A `kernel_path` message follows the control socket.
    #[serde(default)]
    pub kernel_path: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFds {
    pub index: u32,
    pub senders: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Released {
    /// Per worker, in worker order.
    pub counters: Vec<CarriedCounters>,
    #[serde(default)]
    pub control: ControlTotals,
}

/// The control plane's counters, to carry on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlTotals {
    pub tables_published: u64,
    pub reload_failures: u64,
    pub malformed_leases: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeResult {
    /// The successor took over.
    pub ok: bool,
    /// It was refused (a configuration or version difference).
    #[serde(default)]
    pub refused: bool,
    /// The successor's pid, once it was started.
    #[serde(default)]
    pub pid: Option<u32>,
    pub message: String,
}

/// One worker's counters, by name: drop reasons travel by their metric
/// label, so builds that know different reasons still agree on the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CarriedCounters {
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub egress_sends: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    pub ingress_receives: u64,
    pub icmp_sent: u64,
    pub icmp_rate_limited: u64,
    pub arp_replies: u64,
    pub drops: BTreeMap<String, u64>,
}

impl From<&CounterSnapshot> for CarriedCounters {
    fn from(s: &CounterSnapshot) -> Self {
        CarriedCounters {
            egress_packets: s.egress_packets,
            egress_bytes: s.egress_bytes,
            egress_sends: s.egress_sends,
            ingress_packets: s.ingress_packets,
            ingress_bytes: s.ingress_bytes,
            ingress_receives: s.ingress_receives,
            icmp_sent: s.icmp_sent,
            icmp_rate_limited: s.icmp_rate_limited,
            arp_replies: s.arp_replies,
            drops: DropReason::ALL.iter().filter(|r| s.drop_count(**r) > 0).map(|r| (r.name().to_owned(), s.drop_count(*r))).collect(),
        }
    }
}

impl CarriedCounters {
    /// As a snapshot to add to this build's counters, and the drop reasons
    /// this build does not know (their counts cannot be carried).
    pub fn to_snapshot(&self) -> (CounterSnapshot, Vec<String>) {
        let mut s = CounterSnapshot {
            egress_packets: self.egress_packets,
            egress_bytes: self.egress_bytes,
            egress_sends: self.egress_sends,
            ingress_packets: self.ingress_packets,
            ingress_bytes: self.ingress_bytes,
            ingress_receives: self.ingress_receives,
            icmp_sent: self.icmp_sent,
            icmp_rate_limited: self.icmp_rate_limited,
            arp_replies: self.arp_replies,
            ..CounterSnapshot::default()
        };
        let mut unknown = Vec::new();
        for (name, &n) in &self.drops {
            match DropReason::from_name(name) {
                Some(r) => s.drops[r as usize] = n,
                None => unknown.push(name.clone()),
            }
        }
        (s, unknown)
    }
}

/// Why bytes from the peer are not a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes, more than {MAX_MESSAGE}")]
    TooLong(usize),
    /// Not JSON, not an object, an unknown `"type"`, or a field of the
    /// wrong type.
    #[error("not a handover message: {0}")]
    Json(#[from] serde_json::Error),
}

/// The bytes of `message` on the wire.
pub fn encode(message: &Message) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string
    // keys, no custom serializers); an empty object would be refused by
    // the peer rather than mistaken for something else.
    serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec())
}

/// Parses one message from the peer.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    Ok(serde_json::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_compat() -> Compat {
        Compat { tun: "encap0".into(), workers: 2, ..Compat::default() }
    }

    #[test]
    fn versions_negotiate_to_the_highest_common_one() {
        let r = |min, max| VersionRange { min, max };
        assert_eq!(r(1, 1).negotiate(r(1, 1)), Some(1));
        assert_eq!(r(1, 3).negotiate(r(2, 5)), Some(3));
        assert_eq!(r(1, 1).negotiate(r(2, 2)), None);
        assert_eq!(r(3, 1).negotiate(r(1, 3)), None);
        assert_eq!(r(1, 1).to_string(), "1");
        assert_eq!(r(1, 2).to_string(), "1 to 2");
    }

    #[test]
    fn every_message_round_trips() {
        let messages = vec![
            Message::Hello(Hello {
                protocol: SUPPORTED,
                pid: 7,
                version: "x".into(),
                compat: sample_compat(),
                kernel_fds: true,
                kernel_xdp: true,
            }),
            Message::KernelPath,
            Message::Upgrade(Upgrade { protocol: SUPPORTED }),
            Message::Refused(Refused { reason: "no".into(), pid: 4 }),
            Message::Who,
            Message::Identity(Identity { pid: 1, netns: 2, tun: "encap0".into() }),
            Message::Accepted(Accepted {
                protocol: 1,
                pid: 9,
                version: "y".into(),
                compat: sample_compat(),
                dataplane: DataplaneFacts { gso: true, gro: true, vnet_hdr: true, uso: false },
                workers: 2,
                table_version: 5,
                lease: Some(LeaseState { subnet: "100.96.1.0/24".into(), lease_id: 0x1234, renew_at_unix_ms: 1 }),
                kernel_path: true,
            }),
            Message::Worker(WorkerFds { index: 1, senders: 8 }),
            Message::ControlSocket,
            Message::Ready,
            Message::Released(Released { counters: vec![CarriedCounters::default()], control: ControlTotals::default() }),
            Message::Done,
            Message::Abort(Abort { reason: "r".into() }),
            Message::UpgradeResult(UpgradeResult { ok: true, refused: false, pid: Some(3), message: "m".into() }),
        ];
        for m in messages {
            let bytes = encode(&m);
            assert_eq!(decode(&bytes).unwrap(), m, "{}", String::from_utf8_lossy(&bytes));
        }
        assert_eq!(encode(&Message::Ready), br#"{"type":"ready"}"#);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases: Vec<&[u8]> = vec![
            b"",
            b"null",
            b"[]",
            b"{}",
            b"{\"type\":\"launch_missiles\"}",
            b"{\"type\":\"worker\",\"index\":-1,\"senders\":2}",
            b"{\"type\":\"hello\",\"protocol\":{\"min\":1}}",
            b"\xff\xfe",
            b"{\"type\":\"released\",\"counters\":[{\"egress_packets\":1e999}]}",
        ];
        for c in cases {
            assert!(decode(c).is_err(), "{:?} parsed", String::from_utf8_lossy(c));
        }
        assert!(matches!(decode(&vec![b' '; MAX_MESSAGE + 1]), Err(DecodeError::TooLong(_))));
    }

    #[test]
    fn later_fields_are_ignored_and_missing_optional_ones_default() {
        let newer = br#"{"type":"upgrade","protocol":{"min":1,"max":4},"colour":"blue"}"#;
        assert_eq!(decode(newer).unwrap(), Message::Upgrade(Upgrade { protocol: VersionRange { min: 1, max: 4 } }));
        let sparse = br#"{"type":"released","counters":[{"egress_packets":3,"drops":{"no_route":2,"cosmic_rays":1}}]}"#;
        let Message::Released(r) = decode(sparse).unwrap() else { panic!("not released") };
        let (snap, unknown) = r.counters[0].to_snapshot();
        assert_eq!(snap.egress_packets, 3);
        assert_eq!(snap.drop_count(DropReason::NoRoute), 2);
        assert_eq!(unknown, vec!["cosmic_rays".to_owned()]);
    }

    #[test]
    fn counters_carry_by_name() {
        let mut s = CounterSnapshot { egress_packets: 10, ingress_bytes: 99, ..CounterSnapshot::default() };
        s.drops[DropReason::TtlExpired as usize] = 4;
        let carried = CarriedCounters::from(&s);
        assert_eq!(carried.drops.get("ttl_expired"), Some(&4));
        assert_eq!(carried.drops.len(), 1);
        let (back, unknown) = carried.to_snapshot();
        assert!(unknown.is_empty());
        assert_eq!(back, CounterSnapshot { table_version: 0, ..s });
    }
}
