//! Every benchmark and test mode, defined once: its name (the label reports
//! and `results.csv` use), what it sets up on each node, its family (how
//! reports group it) and the sentence the README describes it with.
//!
//! A mode is one of:
//! - [`Setup::Routing`]: plain routes between the nodes over the underlay,
//!   the upper bound;
//! - [`Setup::KernelVxlan`]: a Linux VXLAN device on both nodes, set up as
//!   flannel's vxlan backend sets up `flannel.1` (see [`crate::kernel_paths`]);
//! - [`Setup::Encapd`]: encapd with a backend (wire format), an I/O engine,
//!   `[dataplane]` lines for every node or for one, lines for the peer
//!   entries of the peers files, and on nodeB either encapd too or a
//!   flannel.1-style kernel VTEP (the mixed pair);
//! - [`Setup::UserspaceWg`]: another WireGuard implementation
//!   (wireguard-go, boringtun) on both nodes, its device laid out as
//!   flanneld's `wireguard` backend lays out `flannel-wg` (see
//!   [`crate::wg_peer`]): what encapd's encrypted overlay is compared with.
//!
//! **Adding a mode is one entry in [`MODES`]**: the benchmark
//! (`encapd-bench run --modes NAME`), its configuration files, the
//! reports' labels and groups all read it from here. A family of modes
//! that differ in one number (`uring-batch8`) is one entry in
//! [`PATTERNS`]. Two variants exist for every encapd mode without an
//! entry of their own: `NAME-base` runs the baseline build
//! ([`Build::Baseline`], `encapd-bench run --baseline REV`).
//!
//! What a mode means on the nodes is carried out by [`crate::bed`].

use std::fmt;

use crate::wg_peer::{self, WgImpl};
use crate::wiring::Node;

/// Plain routing, the upper bound every mode is divided by.
pub const ROUTING: &str = "routing";
/// Kernel VXLAN on both nodes, as flannel sets up `flannel.1`: the base
/// every encapd mode is compared with.
pub const KERNEL_VXLAN: &str = "vxlan-kernel";
/// The flannel-style baseline: one syscall per packet.
pub const CLASSIC: &str = "classic";
/// The udp backend's headline mode (`uring`, offloads on, the defaults).
pub const URING: &str = "uring";
/// encapd's vxlan backend on both nodes (`uring`, offloads on).
pub const ENCAPD_VXLAN: &str = "encapd-vxlan";
/// encapd's vxlan backend on nodeA, a flannel.1-style kernel VTEP on nodeB.
pub const ENCAPD_VXLAN_MIXED: &str = "encapd-vxlan-mixed";
/// `uring` with the kernel path (`kernel_path = "tc"`) on both nodes.
pub const KERNEL_PATH: &str = "uring-kernel";
/// [`ENCAPD_VXLAN`] with the kernel path on both nodes.
pub const ENCAPD_VXLAN_KERNEL: &str = "encapd-vxlan-kernel";
/// [`ENCAPD_VXLAN_MIXED`] with the kernel path on nodeA's encapd.
pub const ENCAPD_VXLAN_MIXED_KERNEL: &str = "encapd-vxlan-mixed-kernel";
/// encapd's wireguard backend on both nodes.
pub const WIREGUARD: &str = "wireguard";
/// wireguard-go on both nodes, flannel-wg style.
pub const WIREGUARD_GO: &str = "wireguard-go";
/// boringtun on both nodes, flannel-wg style.
pub const BORINGTUN: &str = "boringtun";
/// The suffix of a mode run by the baseline build: `uring-base` is `uring`
/// as built from the baseline revision.
pub const BASELINE_SUFFIX: &str = "-base";

/// How reports group modes, in the order they list the groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// What encapd is compared with: plain routing and kernel VXLAN.
    Reference,
    /// encapd's udp backend (flannel's `udp` wire format), by I/O engine.
    UdpEngine,
    /// encapd's vxlan backend, against encapd and against a kernel VTEP.
    VxlanBackend,
    /// encapd's eBPF kernel path (`kernel_path = "tc"`).
    KernelPath,
    /// WireGuard: encrypted, authenticated overlays (userspace
    /// implementations now; encapd's `wireguard` backend when it lands).
    EncryptedOverlay,
    /// A setting under evaluation, run only when named.
    Evaluation,
}

impl Family {
    /// The group's heading in reports.
    pub fn title(self) -> &'static str {
        match self {
            Family::Reference => "references",
            Family::UdpEngine => "udp backend, by I/O engine",
            Family::VxlanBackend => "vxlan backend",
            Family::KernelPath => "kernel path",
            Family::EncryptedOverlay => "encrypted overlays (WireGuard)",
            Family::Evaluation => "settings under evaluation",
        }
    }
}

/// encapd's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// flannel's `udp` backend: the inner packet is the UDP payload.
    Udp,
    /// RFC 7348 VXLAN as flannel's `vxlan` backend speaks it.
    Vxlan,
    /// WireGuard as flannel's `wireguard` backend speaks it (issue 31):
    /// each node gets a key pair, its peer's public key in the peers file.
    Wireguard,
}

impl Backend {
    /// The `[network] backend` value.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Udp => "udp",
            Backend::Vxlan => "vxlan",
            Backend::Wireguard => "wireguard",
        }
    }

    /// The UDP port (flannel's defaults).
    pub fn port(self) -> u16 {
        match self {
            Backend::Udp => 8285,
            Backend::Vxlan => 8472,
            Backend::Wireguard => 51820,
        }
    }

    /// Bytes the encapsulation adds to an inner packet on the underlay:
    /// IPv4 + UDP (28), and for VXLAN its header and the inner Ethernet
    /// header (8 + 14 more). The container MTU is the underlay MTU minus
    /// this, as flannel's CNI sets the pod MTU. WireGuard takes flannel's
    /// and wg-quick's 80 (room for an IPv6 underlay), as the userspace
    /// WireGuard modes do.
    pub fn overhead(self) -> u32 {
        match self {
            Backend::Udp => 28,
            Backend::Vxlan => 50,
            Backend::Wireguard => wg_peer::OVERHEAD,
        }
    }
}

/// What runs on nodeB in an encapd mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeB {
    /// encapd, like nodeA.
    Encapd,
    /// A flannel.1-style kernel VTEP, left exactly as flannel sets it up
    /// for a kernel peer (only with [`Backend::Vxlan`]).
    KernelVtep,
}

/// A `[dataplane]` line for one node, computed from the node and the
/// number of workers (`None`: nothing for that node).
pub type NodeLine = fn(Node, usize) -> Option<String>;

/// encapd's part of a mode.
#[derive(Debug, Clone, Copy)]
pub struct EncapdSetup {
    pub backend: Backend,
    /// `[dataplane] io`.
    pub engine: &'static str,
    /// `[dataplane]` lines on every encapd node.
    pub dataplane: &'static [&'static str],
    /// A `[dataplane]` line that differs per node.
    pub node_line: Option<NodeLine>,
    /// Lines added to the peer's entry in every peers file (e.g. that the
    /// peer decapsulates in its kernel).
    pub peer: &'static [&'static str],
    pub node_b: NodeB,
}

/// What a mode sets up on the nodes.
#[derive(Debug, Clone, Copy)]
pub enum Setup {
    /// Plain routes between the node subnets via the underlay.
    Routing,
    /// Kernel VXLAN on both nodes, flannel.1 style.
    KernelVxlan,
    /// encapd (and on nodeB possibly a kernel VTEP).
    Encapd(EncapdSetup),
    /// A userspace WireGuard implementation on both nodes, each the
    /// other's peer, laid out as flanneld lays out `flannel-wg`
    /// ([`crate::wg_peer::Pair`]).
    UserspaceWg(WgImpl),
}

/// One entry of the registry.
#[derive(Debug, Clone, Copy)]
pub struct ModeDef {
    pub name: &'static str,
    /// Names older runs recorded this mode under (read as this one).
    pub aliases: &'static [&'static str],
    pub family: Family,
    /// Whether a run without `--modes` measures it.
    pub in_default_run: bool,
    /// The README's description (Markdown).
    pub description: &'static str,
    pub setup: Setup,
    /// For a mode that differs from another in one setting only: the mode
    /// whose baseline build it is divided by (`NAME-base`), and what that
    /// baseline lacked (the report's note). See [`MODES`]' `uring-nocoop`.
    pub against_baseline_of: Option<(&'static str, &'static str)>,
}

const fn encapd(backend: Backend, engine: &'static str, dataplane: &'static [&'static str]) -> Setup {
    Setup::Encapd(EncapdSetup { backend, engine, dataplane, node_line: None, peer: &[], node_b: NodeB::Encapd })
}

/// Both nodes decapsulate in their kernel: encapd's kernel path sends from
/// the kernel only to peers that say so (`kernel_decap = true`).
const KERNEL_DECAP: &[&str] = &["kernel_decap = true"];
const TC: &[&str] = &["kernel_path = \"tc\""];

const fn def(name: &'static str, family: Family, in_default_run: bool, description: &'static str, setup: Setup) -> ModeDef {
    ModeDef { name, aliases: &[], family, in_default_run, description, setup, against_baseline_of: None }
}

/// nodeB's workers pinned in the reverse order of nodeA's: worker i on
/// the CPU of nodeA's worker W-1-i.
fn crossed_pins(node: Node, workers: usize) -> Option<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (node == Node::B).then(|| {
        let list: Vec<String> = (0..workers).rev().map(|i| (i % cpus).to_string()).collect();
        format!("cpus = [{}]", list.join(", "))
    })
}

/// The registry, in the order a default run measures the modes.
pub const MODES: &[ModeDef] = &[
    def(ROUTING, Family::Reference, true, "plain routing", Setup::Routing),
    ModeDef {
        aliases: &["vxlan"],
        ..def(KERNEL_VXLAN, Family::Reference, true, "kernel VXLAN ↔ kernel VXLAN (both flannel.1 style)", Setup::KernelVxlan)
    },
    def(CLASSIC, Family::UdpEngine, true, "encapd `classic` (one syscall per packet, flannel style)", encapd(Backend::Udp, "classic", &[])),
    def("mmsg-nooffload", Family::UdpEngine, true, "encapd `mmsg`, offloads off", encapd(Backend::Udp, "mmsg", &["offload = \"off\""])),
    def("mmsg", Family::UdpEngine, true, "encapd `mmsg`, offloads on", encapd(Backend::Udp, "mmsg", &[])),
    def("uring-nooffload", Family::UdpEngine, true, "encapd `uring`, offloads off", encapd(Backend::Udp, "uring", &["offload = \"off\""])),
    def(URING, Family::UdpEngine, true, "encapd `uring`, offloads on (the default)", encapd(Backend::Udp, "uring", &[])),
    def(
        ENCAPD_VXLAN,
        Family::VxlanBackend,
        true,
        "encapd `vxlan` backend ↔ encapd `vxlan` (`uring`, offloads on)",
        encapd(Backend::Vxlan, "uring", &[]),
    ),
    def(
        ENCAPD_VXLAN_MIXED,
        Family::VxlanBackend,
        true,
        "encapd `vxlan` backend ↔ kernel VTEP (flannel.1 style)",
        Setup::Encapd(EncapdSetup { node_b: NodeB::KernelVtep, ..vxlan_uring() }),
    ),
    def(
        KERNEL_PATH,
        Family::KernelPath,
        false,
        "encapd `uring` with the kernel path (`kernel_path = \"tc\"`: eBPF encapsulation)",
        Setup::Encapd(EncapdSetup { dataplane: TC, peer: KERNEL_DECAP, ..udp_uring() }),
    ),
    def(
        ENCAPD_VXLAN_KERNEL,
        Family::KernelPath,
        false,
        "encapd `vxlan` ↔ encapd `vxlan`, both with the kernel path",
        Setup::Encapd(EncapdSetup { dataplane: TC, peer: KERNEL_DECAP, ..vxlan_uring() }),
    ),
    def(
        ENCAPD_VXLAN_MIXED_KERNEL,
        Family::KernelPath,
        false,
        "encapd `vxlan` with the kernel path ↔ kernel VTEP (flannel.1 style)",
        Setup::Encapd(EncapdSetup { dataplane: TC, peer: KERNEL_DECAP, node_b: NodeB::KernelVtep, ..vxlan_uring() }),
    ),
    // Encrypted overlays, run only when named (`--modes
    // wireguard,wireguard-go,boringtun`): encapd's `wireguard` backend and
    // the userspace WireGuard implementations operators know, each pair
    // laid out with the same MTU (underlay − 80).
    def(
        WIREGUARD,
        Family::EncryptedOverlay,
        false,
        "encapd `wireguard` backend ↔ encapd `wireguard` (`mmsg` I/O, which this backend runs whatever `io` says; offloads on)",
        encapd(Backend::Wireguard, "mmsg", &[]),
    ),
    def(
        WIREGUARD_GO,
        Family::EncryptedOverlay,
        false,
        "wireguard-go ↔ wireguard-go (Debian's userspace WireGuard, `flannel-wg` as flanneld lays it out)",
        Setup::UserspaceWg(WgImpl::WireguardGo),
    ),
    def(
        BORINGTUN,
        Family::EncryptedOverlay,
        false,
        "boringtun ↔ boringtun (Cloudflare's userspace WireGuard, `boringtun-cli`, `flannel-wg` as flanneld lays it out)",
        Setup::UserspaceWg(WgImpl::Boringtun),
    ),
    def(
        "uring-trust",
        Family::Evaluation,
        false,
        "encapd `uring`, `ingress_checksum = \"trust-outer\"`",
        encapd(Backend::Udp, "uring", &["ingress_checksum = \"trust-outer\""]),
    ),
    def(
        "uring-nopin",
        Family::Evaluation,
        false,
        "encapd `uring`, workers not pinned (`cpus = []`)",
        encapd(Backend::Udp, "uring", &["cpus = []"]),
    ),
    def(
        "uring-crossed",
        Family::Evaluation,
        false,
        "encapd `uring`, nodeB's workers pinned in reverse (a flow's two gateways on two CPUs)",
        Setup::Encapd(EncapdSetup { node_line: Some(crossed_pins), ..udp_uring() }),
    ),
    ModeDef {
        against_baseline_of: Some((URING, "cooperative task work off, as in every build from before bc481df")),
        ..def(
            "uring-nocoop",
            Family::Evaluation,
            false,
            "encapd `uring`, cooperative task work off",
            encapd(Backend::Udp, "uring", &["uring_disable = [\"coop_taskrun\"]"]),
        )
    },
    def(
        "uring-busypoll",
        Family::Evaluation,
        false,
        "encapd `uring`, workers poll 200 µs before they sleep (`busy_poll_us = 200`)",
        encapd(Backend::Udp, "uring", &["busy_poll_us = 200"]),
    ),
    def(
        "uring-slice",
        Family::Evaluation,
        false,
        "encapd `uring`, workers on a short slice (`sched = \"short-slice\"`)",
        encapd(Backend::Udp, "uring", &["sched = \"short-slice\""]),
    ),
];

const fn udp_uring() -> EncapdSetup {
    EncapdSetup { backend: Backend::Udp, engine: "uring", dataplane: &[], node_line: None, peer: &[], node_b: NodeB::Encapd }
}

const fn vxlan_uring() -> EncapdSetup {
    EncapdSetup { backend: Backend::Vxlan, ..udp_uring() }
}

/// Modes that differ from a registry mode in one number: `PREFIX<N>`
/// sets `[dataplane] KEY = N` on every node.
#[derive(Debug, Clone, Copy)]
pub struct ModePattern {
    pub prefix: &'static str,
    pub min: u32,
    pub max: u32,
    /// The registry mode it varies.
    pub base: &'static str,
    pub key: &'static str,
    /// The README's description, `{N}` standing for the number.
    pub description: &'static str,
}

pub const PATTERNS: &[ModePattern] = &[ModePattern {
    prefix: "uring-batch",
    min: 1,
    max: 256,
    base: URING,
    key: "batch",
    description: "encapd `uring` with `batch = {N}` ({N} TUN read buffers in flight per worker instead of 64)",
}];

/// Which encapd binary runs a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The binary under test.
    Current,
    /// The baseline build (`NAME-base`).
    Baseline,
}

/// A mode resolved from its name: a registry entry, a pattern instance, or
/// the baseline build of either.
#[derive(Debug, Clone)]
pub struct Mode {
    /// The name as reports use it (`uring`, `uring-batch8`, `uring-base`).
    pub name: String,
    /// The registry entry (a pattern's base mode for a pattern instance).
    pub def: &'static ModeDef,
    /// `[dataplane]` lines a pattern instance adds.
    pub pattern_lines: Vec<String>,
    pattern_description: Option<String>,
    pub build: Build,
}

/// A name that is no mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode {
    pub name: String,
    pub why: String,
}

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mode {:?}: {}", self.name, self.why)
    }
}

impl std::error::Error for UnknownMode {}

/// The registry entry named `name` or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static ModeDef> {
    MODES.iter().find(|d| d.name == name || d.aliases.contains(&name))
}

/// A mode's current name (an old alias read as the mode it names; any
/// other name unchanged).
pub fn canonical(name: &str) -> &str {
    match lookup(name) {
        Some(d) => d.name,
        None => name,
    }
}

impl Mode {
    /// Resolves `name` (see the type's docs). Old aliases resolve to the
    /// mode's current name.
    pub fn named(name: &str) -> Result<Mode, UnknownMode> {
        let unknown = |why: String| UnknownMode { name: name.to_owned(), why };
        if let Some(base) = name.strip_suffix(BASELINE_SUFFIX) {
            let mut m = Mode::named(base).map_err(|e| unknown(e.why))?;
            if m.build == Build::Baseline || !matches!(m.def.setup, Setup::Encapd(_)) {
                return Err(unknown(format!("`{BASELINE_SUFFIX}` names the baseline build of an encapd mode")));
            }
            m.name = format!("{}{BASELINE_SUFFIX}", m.name);
            m.build = Build::Baseline;
            return Ok(m);
        }
        if let Some(def) = lookup(name) {
            return Ok(Mode {
                name: def.name.to_owned(),
                def,
                pattern_lines: Vec::new(),
                pattern_description: None,
                build: Build::Current,
            });
        }
        for p in PATTERNS {
            let Some(n) = name.strip_prefix(p.prefix) else { continue };
            let n: u32 = n.parse().map_err(|_| unknown(format!("expected {}N with N a number", p.prefix)))?;
            if n < p.min || n > p.max {
                return Err(unknown(format!("N must be {}-{}", p.min, p.max)));
            }
            let def = lookup(p.base).expect("a pattern's base mode is in the registry");
            return Ok(Mode {
                name: format!("{}{n}", p.prefix),
                def,
                pattern_lines: vec![format!("{} = {n}", p.key)],
                pattern_description: Some(p.description.replace("{N}", &n.to_string())),
                build: Build::Current,
            });
        }
        Err(unknown(format!("not in the registry; choose from {}", all_names().join(", "))))
    }

    /// The modes a run measures without `--modes`.
    pub fn defaults() -> Vec<Mode> {
        MODES.iter().filter(|d| d.in_default_run).map(|d| Mode::named(d.name).expect("registry names resolve")).collect()
    }

    pub fn family(&self) -> Family {
        self.def.family
    }

    /// The README's description.
    pub fn description(&self) -> String {
        let d = self.pattern_description.clone().unwrap_or_else(|| self.def.description.to_owned());
        match self.build {
            Build::Current => d,
            Build::Baseline => format!("{d}, as built from the baseline revision"),
        }
    }

    /// encapd's part, if the mode runs encapd.
    pub fn encapd(&self) -> Option<&EncapdSetup> {
        match &self.def.setup {
            Setup::Encapd(e) => Some(e),
            _ => None,
        }
    }

    /// The userspace WireGuard implementation both nodes run, if any.
    pub fn userspace_wg(&self) -> Option<WgImpl> {
        match self.def.setup {
            Setup::UserspaceWg(i) => Some(i),
            _ => None,
        }
    }

    /// What carries the packets between the nodes: `kernel` (routing,
    /// kernel VXLAN), `encapd` (on nodeA at least), or the userspace
    /// WireGuard implementation (`wireguard-go`, `boringtun`).
    pub fn carried_by(&self) -> &'static str {
        match self.def.setup {
            Setup::Routing | Setup::KernelVxlan => "kernel",
            Setup::Encapd(_) => "encapd",
            Setup::UserspaceWg(i) => i.name(),
        }
    }

    /// Whether encapd runs on `node` in this mode.
    pub fn runs_encapd_on(&self, node: Node) -> bool {
        self.encapd().is_some_and(|e| node == Node::A || e.node_b == NodeB::Encapd)
    }

    /// The container MTU flannel's CNI would set for this mode on an
    /// underlay of `underlay_mtu`.
    pub fn ctr_mtu(&self, underlay_mtu: u32) -> u32 {
        match &self.def.setup {
            Setup::Routing => underlay_mtu,
            Setup::KernelVxlan => underlay_mtu - Backend::Vxlan.overhead(),
            Setup::Encapd(e) => underlay_mtu - e.backend.overhead(),
            Setup::UserspaceWg(_) => underlay_mtu - wg_peer::OVERHEAD,
        }
    }

    /// The `[dataplane]` lines of `node`'s encapd with `workers` workers
    /// (empty for a mode without encapd).
    pub fn dataplane_lines(&self, node: Node, workers: usize) -> Vec<String> {
        let Some(e) = self.encapd() else { return Vec::new() };
        let mut lines: Vec<String> = e.dataplane.iter().map(|l| (*l).to_owned()).collect();
        lines.extend(self.pattern_lines.iter().cloned());
        lines.extend(e.node_line.and_then(|f| f(node, workers)));
        lines
    }

    /// What the mode is compared with in before/after tables when a
    /// baseline build runs: (mode built as, what differs besides the build).
    pub fn against_baseline_of(&self) -> Option<(&'static str, &'static str)> {
        self.def.against_baseline_of
    }
}

/// Every name `--modes` accepts, registry order, patterns as `PREFIXN`.
pub fn all_names() -> Vec<String> {
    let mut v: Vec<String> = MODES.iter().map(|d| d.name.to_owned()).collect();
    v.extend(PATTERNS.iter().map(|p| format!("{}N", p.prefix)));
    v.push(format!("NAME{BASELINE_SUFFIX}"));
    v
}

/// The registry as a Markdown table (`encapd-bench modes`).
pub fn markdown_table() -> String {
    let mut s = String::from("| mode | family | default run | nodes | description |\n|---|---|---|---|---|\n");
    let setup = |def: &ModeDef, extra: &[String]| match &def.setup {
        Setup::Routing => "plain routes via the underlay".to_owned(),
        Setup::KernelVxlan => "kernel VXLAN, flannel.1 style, on both".to_owned(),
        Setup::Encapd(e) => {
            let mut lines: Vec<String> = e.dataplane.iter().map(|l| format!("`{l}`")).collect();
            lines.extend(extra.iter().map(|l| format!("`{l}`")));
            if e.node_line.is_some() {
                lines.push("a per-node line (see mode.rs)".into());
            }
            lines.extend(e.peer.iter().map(|l| format!("peers: `{l}`")));
            let b = match e.node_b {
                NodeB::Encapd => "encapd on both",
                NodeB::KernelVtep => "encapd on nodeA, flannel.1-style kernel VTEP on nodeB",
            };
            let set = if lines.is_empty() { String::new() } else { format!(", {}", lines.join(", ")) };
            format!("{b}: `{}` backend, `io = \"{}\"`{set}", e.backend.name(), e.engine)
        }
        Setup::UserspaceWg(i) => format!(
            "`{}` on both: `{}` as flanneld lays it out (port {}, MTU underlay − {}, peer = the other node's subnets)",
            i.program(),
            wg_peer::DEVICE,
            wg_peer::WG_PORT,
            wg_peer::OVERHEAD
        ),
    };
    for d in MODES {
        let aliases = if d.aliases.is_empty() { String::new() } else { format!(" (was `{}`)", d.aliases.join("`, `")) };
        s += &format!(
            "| `{}`{aliases} | {} | {} | {} | {} |\n",
            d.name,
            d.family.title(),
            if d.in_default_run { "yes" } else { "on request" },
            setup(d, &[]),
            d.description
        );
    }
    for p in PATTERNS {
        let base = lookup(p.base).expect("a pattern's base mode is in the registry");
        s += &format!(
            "| `{}N` ({}-{}) | {} | on request | {} | {} |\n",
            p.prefix,
            p.min,
            p.max,
            base.family.title(),
            setup(base, &[format!("{} = N", p.key)]),
            p.description.replace("{N}", "N")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_resolve_to_themselves() {
        let mut seen = std::collections::BTreeSet::new();
        for d in MODES {
            assert!(seen.insert(d.name), "{} twice", d.name);
            for a in d.aliases {
                assert!(seen.insert(a), "alias {a} clashes");
            }
            assert_eq!(Mode::named(d.name).unwrap().name, d.name);
            assert!(!d.name.ends_with(BASELINE_SUFFIX), "{} looks like a baseline build", d.name);
            if let Setup::Encapd(e) = d.setup {
                assert!(e.node_b == NodeB::Encapd || e.backend == Backend::Vxlan, "{}: a kernel VTEP speaks VXLAN only", d.name);
            }
            if let Some((built_as, _)) = d.against_baseline_of {
                assert!(lookup(built_as).is_some(), "{}: unknown {built_as}", d.name);
            }
        }
    }

    #[test]
    fn old_names_read_as_the_current_ones() {
        assert_eq!(canonical("vxlan"), KERNEL_VXLAN);
        assert_eq!(Mode::named("vxlan").unwrap().name, KERNEL_VXLAN);
        assert_eq!(canonical("uring-batch8"), "uring-batch8");
    }

    #[test]
    fn patterns_and_baselines_resolve() {
        let m = Mode::named("uring-batch8").unwrap();
        assert_eq!(m.dataplane_lines(Node::A, 2), ["batch = 8"]);
        assert_eq!(m.description(), "encapd `uring` with `batch = 8` (8 TUN read buffers in flight per worker instead of 64)");
        assert!(Mode::named("uring-batch0").is_err());
        assert!(Mode::named("uring-batch257").is_err());
        assert!(Mode::named("uring-batchx").is_err());
        let b = Mode::named("uring-base").unwrap();
        assert_eq!((b.name.as_str(), b.build), ("uring-base", Build::Baseline));
        assert!(Mode::named("routing-base").is_err(), "no encapd, no baseline build");
        assert!(Mode::named("uring-base-base").is_err());
        assert!(Mode::named("nonsense").unwrap_err().to_string().contains("uring"));
    }

    #[test]
    fn each_mode_says_what_runs_on_each_node() {
        let mixed = Mode::named(ENCAPD_VXLAN_MIXED_KERNEL).unwrap();
        assert!(mixed.runs_encapd_on(Node::A) && !mixed.runs_encapd_on(Node::B));
        assert_eq!(mixed.dataplane_lines(Node::A, 2), ["kernel_path = \"tc\""]);
        assert_eq!(mixed.encapd().unwrap().peer, ["kernel_decap = true"]);
        assert_eq!(mixed.ctr_mtu(1500), 1450);
        assert_eq!(Mode::named(URING).unwrap().ctr_mtu(1500), 1472);
        assert_eq!(Mode::named(ROUTING).unwrap().ctr_mtu(1500), 1500);
        let crossed = Mode::named("uring-crossed").unwrap();
        assert!(crossed.dataplane_lines(Node::A, 2).is_empty());
        assert_eq!(crossed.dataplane_lines(Node::B, 2).len(), 1);
        assert!(!Mode::named(ROUTING).unwrap().runs_encapd_on(Node::A));
    }

    #[test]
    fn the_default_run_is_the_udp_comparison_and_the_vxlan_backend() {
        let names: Vec<String> = Mode::defaults().into_iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            [ROUTING, KERNEL_VXLAN, CLASSIC, "mmsg-nooffload", "mmsg", "uring-nooffload", URING, ENCAPD_VXLAN, ENCAPD_VXLAN_MIXED]
        );
        assert!(markdown_table().lines().count() > MODES.len());
    }

    #[test]
    fn userspace_wireguard_pairs_are_encrypted_overlays_run_on_request() {
        for (name, imp) in [(WIREGUARD_GO, WgImpl::WireguardGo), (BORINGTUN, WgImpl::Boringtun)] {
            let m = Mode::named(name).unwrap();
            assert_eq!(m.family(), Family::EncryptedOverlay);
            assert!(!m.def.in_default_run, "{name} runs only when named");
            assert_eq!(m.userspace_wg(), Some(imp));
            assert_eq!(m.carried_by(), name);
            assert!(!m.runs_encapd_on(Node::A) && !m.runs_encapd_on(Node::B));
            assert_eq!(m.ctr_mtu(1500), 1420, "flannel's wireguard MTU: underlay - 80");
            assert!(Mode::named(&format!("{name}-base")).is_err(), "no encapd, no baseline build");
        }
        assert_eq!(Mode::named(URING).unwrap().carried_by(), "encapd");
        assert_eq!(Mode::named(ROUTING).unwrap().carried_by(), "kernel");
        assert!(markdown_table().contains("`wireguard-go` on both"));
    }
}
