//! The daemon's configuration: the TOML file as written ([`raw`]), and the
//! validated [`Config`] the rest of the program uses. Validation names the
//! file, the field and the offending value in every error, and the CLI turns
//! any [`ConfigError`] into exit code 2.

mod key;
mod peers;
mod raw;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use peers::{PeerDefaults, PeersError, PeersFile, load_peers, parse_peers, read_peers_text};

use crate::route::{Prefix, TableScope};
use crate::wire::vxlan::Mac;

/// Wire format spoken with peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// flannel's udp backend: the raw inner IP packet is the UDP payload.
    Udp,
    /// flannel's vxlan backend, as a kernel VTEP speaks it.
    Vxlan(VxlanSettings),
    /// WireGuard (flannel's wireguard backend's protocol): every inner
    /// packet encrypted and authenticated, cryptokey routing as the ingress
    /// filter. The node's key is [`Config::wireguard`].
    WireGuard,
}

/// `[network] backend = "wireguard"`: this node's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuardNode {
    /// `[node] private_key_file` (resolved against the configuration
    /// file's directory); read at start with the checks of
    /// `sys::key_file` (a regular file, 0600 or 0400, owned by the
    /// daemon's user).
    pub private_key_file: PathBuf,
}

/// flannel's wireguard port (`ListenPort`), and wg-quick's habit.
pub const DEFAULT_WIREGUARD_PORT: u16 = 51820;

/// What WireGuard costs per packet on the underlay, as flannel and
/// wg-quick count it: 80 bytes (an IPv6 outer header 40, UDP 8, the
/// transport header 16 and the tag 16), whatever the underlay family, so
/// that an MTU computed here matches theirs (1420 on a 1500-byte underlay).
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// `[network] backend = "vxlan"`: this node's VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanSettings {
    /// `[network] vni` (flannel's default 1).
    pub vni: u32,
    /// `[node] vtep_mac`, or one derived from `public_ip` (stable across restarts).
    pub vtep_mac: Mac,
}

impl Backend {
    /// flannel's name for it (`Backend.Type`, `BackendType`).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Udp => "udp",
            Backend::Vxlan(_) => "vxlan",
            Backend::WireGuard => "wireguard",
        }
    }

    /// flannel's default port for it.
    pub fn default_port(&self) -> u16 {
        match self {
            Backend::Udp => DEFAULT_UDP_PORT,
            Backend::Vxlan(_) => crate::wire::vxlan::FLANNEL_PORT,
            Backend::WireGuard => DEFAULT_WIREGUARD_PORT,
        }
    }

    /// Bytes this backend puts inside the UDP payload in front of each packet.
    pub fn header_len(&self) -> u32 {
        match self {
            Backend::Udp => 0,
            Backend::Vxlan(_) => crate::wire::vxlan::HEADER_LEN as u32,
            // The transport header; its tag and padding follow the packet.
            Backend::WireGuard => crate::wireguard::session::HEADROOM as u32,
        }
    }
}

/// flannel's udp backend port.
pub const DEFAULT_UDP_PORT: u16 = 8285;

/// How the workers do their I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring: batched TUN reads/writes, multishot receive, GSO sends.
    Uring,
    /// epoll + recvmmsg/sendmsg with GSO/GRO, for hosts without io_uring.
    Mmsg,
    /// One syscall per packet, the flannel-style baseline.
    Classic,
}

impl IoEngine {
    pub fn name(self) -> &'static str {
        match self {
            IoEngine::Uring => "uring",
            IoEngine::Mmsg => "mmsg",
            IoEngine::Classic => "classic",
        }
    }
}

/// What a worker trusts about a received segment's transport checksum
/// before it merges segments into one TUN write (a merged packet gets a
/// fresh checksum from the kernel, so a corrupt segment must not join one).
///
/// `TrustOuter` is only offered for flannel's udp format: every peer that
/// speaks it (flanneld, encapd) sends UDP checksums, which cover the whole
/// inner packet from the sending gateway, which wrote each inner checksum,
/// to this one's socket, and the kernel delivers nothing that fails them.
/// Kernel VXLAN over IPv4 sends no outer checksum by default, so the vxlan
/// backend always verifies. What `TrustOuter` gives up is the detection of
/// a segment corrupted before the sending gateway (in the sender's memory
/// or by a faulty peer): it is merged, and arrives with a valid checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngressChecksum {
    /// Verify every segment before it may be merged (the default).
    #[default]
    Verify,
    /// Merge without verifying: the verified outer checksum vouches.
    TrustOuter,
}

impl IngressChecksum {
    pub fn name(self) -> &'static str {
        match self {
            IngressChecksum::Verify => "verify",
            IngressChecksum::TrustOuter => "trust-outer",
        }
    }

    pub fn from_name(name: &str) -> Option<IngressChecksum> {
        [IngressChecksum::Verify, IngressChecksum::TrustOuter].into_iter().find(|c| c.name() == name)
    }
}

/// Whether the backend's encapsulation (flannel's udp or vxlan) also runs
/// in the kernel (`[dataplane] kernel_path`; `datapath::kernel`).
///
/// `Tc` sends with an outer UDP checksum of 0 and, over an underlay that
/// leaves inner checksums to the receiver (veth, as between containers on
/// one host), can send inner TCP and UDP checksums unfinished: a peer that
/// decapsulates in the kernel (the kernel path, or a kernel VTEP such as
/// flannel's `flannel.1`) accepts them, as the kernel's own tunnels do,
/// but flanneld's udp backend or encapd without the kernel path would
/// drop them. On a physical NIC the sending kernel finishes every inner
/// checksum. So: on a veth underlay, every encapd node runs the kernel
/// path or none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelPathMode {
    /// The workers carry every packet (the default).
    #[default]
    Off,
    /// eBPF programs on the TUN's egress and the underlay's ingress carry
    /// IPv4 and IPv6 packets between routed peers, in the backend's wire
    /// format; the workers carry the rest. encapd refuses to start when
    /// they cannot be attached.
    Tc,
    /// `Tc` where this host can run it (an IPv4 public address, a kernel
    /// with TCX, the privilege to load programs); otherwise the workers
    /// carry everything and one log line says why.
    Auto,
}

impl KernelPathMode {
    pub fn name(self) -> &'static str {
        match self {
            KernelPathMode::Off => "off",
            KernelPathMode::Tc => "tc",
            KernelPathMode::Auto => "auto",
        }
    }

    /// Whether the kernel path is wanted at all.
    pub fn wanted(self) -> bool {
        self != KernelPathMode::Off
    }

    pub fn from_name(name: &str) -> Option<KernelPathMode> {
        [KernelPathMode::Off, KernelPathMode::Tc, KernelPathMode::Auto].into_iter().find(|m| m.name() == name)
    }
}

/// Whether the kernel path also decapsulates before GRO, in XDP on the
/// underlay device (`[dataplane] xdp_decap`; docs/kernel-path.md,
/// "Decapsulation before GRO"). Only with the kernel path on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpDecapMode {
    /// Where the underlay delivers MTU-sized frames and merges them with
    /// GRO (a device with GRO on: every NIC, a veth set up like one):
    /// there the TC decap alone sees one datagram at a time and the inner
    /// TCP gets no GRO. Not on a device with GRO off (a plain veth, which
    /// hands TSO packets whole), and not where native XDP cannot attach;
    /// one log line says which and why.
    #[default]
    Auto,
    /// Attach it wherever native XDP attaches (tests and measurements); a
    /// refusal is logged and the TC decap carries on alone.
    On,
    /// Never: the TC decap alone.
    Off,
}

impl XdpDecapMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpDecapMode::Auto => "auto",
            XdpDecapMode::On => "on",
            XdpDecapMode::Off => "off",
        }
    }

    pub fn from_name(name: &str) -> Option<XdpDecapMode> {
        [XdpDecapMode::Auto, XdpDecapMode::On, XdpDecapMode::Off].into_iter().find(|m| m.name() == name)
    }
}

/// Which UDP source ports the workers send from (`[dataplane]
/// source_ports`). Receivers never check it: flanneld's udp proxy reads
/// whatever arrives on its port, encapd checks the sender's address only
/// (NAT may rewrite ports), a kernel VTEP takes any source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePorts {
    /// Each worker sends from 8 ports of its own, picked by the inner flow
    /// (RFC 7348 §5 for VXLAN; the same for flannel's udp format). The
    /// receiving host's GRO merges only datagrams of one source port, and
    /// a NIC's RSS spreads by it: with one port, a peer's datagrams merge
    /// across flows and the receiver's steering (by the first datagram's
    /// flow) hands every flow to one worker (docs/performance.md, section
    /// 3). The wireguard backend always sends from its listening port.
    #[default]
    Flow,
    /// Every datagram from the listening port, as flanneld sends (for
    /// firewalls that match the source port).
    Listen,
}

impl SourcePorts {
    pub fn name(self) -> &'static str {
        match self {
            SourcePorts::Flow => "flow",
            SourcePorts::Listen => "listen",
        }
    }

    pub fn from_name(name: &str) -> Option<SourcePorts> {
        [SourcePorts::Flow, SourcePorts::Listen].into_iter().find(|m| m.name() == name)
    }
}

/// Where the subnet table comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSource {
    /// A TOML peers file, watched for changes.
    File { peers: PathBuf },
    /// flannel's lease store in etcd v3 (see `control::etcd`).
    Etcd(Box<EtcdSource>),
}

/// `[control] source = "etcd"`: where flannel's leases live and how this
/// node holds its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSource {
    /// `http://HOST:PORT` or `https://HOST:PORT`, tried in turn.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing `/` (default `/coreos.com/network`).
    pub prefix: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where the subnet this node last held is remembered.
    pub state_dir: PathBuf,
    /// Renew the lease this long before it expires.
    pub renew_margin: std::time::Duration,
    /// TTL of the etcd lease behind this node's subnet (flannel: 24 h).
    pub lease_ttl: std::time::Duration,
    /// `[node] subnet`, `[network] cidr` and `port` as the file gave them
    /// (`None`: taken from etcd). When given, etcd's values must agree.
    pub given_subnet: Option<Prefix>,
    pub given_cidr: Option<Prefix>,
    /// `[node] subnet6` and `[network] cidr6` as the file gave them
    /// (`None`: from etcd, when its network is dual-stack).
    pub given_subnet6: Option<Prefix>,
    pub given_cidr6: Option<Prefix>,
    pub given_port: Option<u16>,
    /// `[network] vni` as the file gave it (vxlan; `None`: etcd's).
    pub given_vni: Option<u32>,
    /// True once `Config::subnet`, `cidr` and `port` (and `subnet6`,
    /// `cidr6`, dual-stack) hold etcd's values.
    pub resolved: bool,
}

/// Default etcd key prefix (flannel's).
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";
/// Default path of flannel's subnet.env.
pub const DEFAULT_SUBNET_ENV: &str = "/run/flannel/subnet.env";
/// Default lease TTL and renewal margin, in seconds (flannel's).
pub const DEFAULT_LEASE_TTL_S: i64 = 24 * 3600;
pub const DEFAULT_RENEW_MARGIN_S: i64 = 3600;
/// Placeholder for `subnet`/`cidr` the etcd source has not resolved yet.
pub const UNRESOLVED: Prefix = Prefix::V4 { addr: 0, len: 0 };

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    pub public_ip: IpAddr,
    pub subnet: Prefix,
    pub subnet6: Option<Prefix>,
    pub cidr: Prefix,
    pub cidr6: Option<Prefix>,
    pub backend: Backend,
    /// This node's WireGuard identity: `Some` exactly with `backend = "wireguard"`.
    pub wireguard: Option<WireGuardNode>,
    pub port: u16,
    /// `None`: the MTU of the interface holding `public_ip`, read at start.
    pub underlay_mtu: Option<u32>,
    pub tun: String,
    pub workers: usize,
    pub io: IoEngine,
    /// The CPU each worker is pinned to (`[dataplane] cpus`); `None`: worker
    /// i on online core i mod cores; an empty list: no pinning, the
    /// scheduler places the workers.
    pub cpus: Option<Vec<usize>>,
    /// Packets handled per worker loop iteration (TUN reads in flight).
    pub batch: usize,
    /// SO_RCVBUF/SO_SNDBUF of each UDP socket, in bytes.
    pub socket_buffer: usize,
    /// Use TUN segmentation offloads when the kernel grants them
    /// (`offload = "auto"`, the default) or never (`"off"`). The `classic`
    /// engine never uses them: it is the per-packet baseline.
    pub offload: bool,
    /// io_uring features the `uring` engine must not use even where the
    /// kernel has them (`[dataplane] uring_disable`; to work around a kernel
    /// bug, and to test the degraded paths).
    pub uring_disable: Vec<crate::sys::uring::UringFeature>,
    /// How long (µs) a `uring` worker keeps polling its completion queue
    /// after the last completion before it sleeps in the kernel; 0: never
    /// polls. Polling trades CPU for the wakeup of a sleeping thread on the
    /// path of every packet of a quiet flow (docs/performance.md).
    pub busy_poll_us: u32,
    /// Whether received segments are re-verified before they are merged
    /// into one TUN write (see [`IngressChecksum`]).
    pub ingress_checksum: IngressChecksum,
    /// How the kernel schedules each worker against the applications on
    /// its CPU (`[dataplane] sched`).
    pub worker_sched: crate::sys::sched::WorkerSched,
    /// `[dataplane] kernel_path`: see [`KernelPathMode`].
    pub kernel_path: KernelPathMode,
    /// `[dataplane] xdp_decap`: see [`XdpDecapMode`].
    pub xdp_decap: XdpDecapMode,
    /// `[dataplane] source_ports`: see [`SourcePorts`] (always `Listen`
    /// with the wireguard backend).
    pub source_ports: SourcePorts,
    pub control: ControlSource,
    /// Switch to this user once the TUN, sockets and rings exist (and drop
    /// every capability either way). `None`: keep the starting user.
    pub user: Option<String>,
    /// Group for `user` (default: the user's primary group).
    pub group: Option<String>,
    /// Where `/metrics` is served; `None` when `listen = "off"`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// flannel's `subnet.env` (for the CNI plugin), written once the node's
    /// subnet is known; `None` when `[control] subnet_env = "off"`.
    pub subnet_env: Option<PathBuf>,
    /// Where the running daemon listens for a successor (`[process]
    /// control_socket`); `None` when "off".
    pub control_socket: Option<PathBuf>,
}

/// Where the control socket goes by default (as `<tun>.sock`) outside
/// systemd; under systemd, `RuntimeDirectory=encapd` is the same place.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/encapd";

/// Default metrics address: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9285";

/// A configuration problem; the message names file, field and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: [{section}] {key} = {value}: {reason}")]
    Field { file: String, section: &'static str, key: &'static str, value: String, reason: String },
    #[error("{0}")]
    Peers(#[from] PeersError),
}

/// Bytes of encapsulation overhead per packet: outer IP + UDP headers, and
/// what the backend puts in front of the packet (VXLAN: 22).
pub fn encap_overhead(underlay_ipv4: bool, backend: &Backend) -> u32 {
    if *backend == Backend::WireGuard {
        return WIREGUARD_OVERHEAD;
    }
    let outer = if underlay_ipv4 { 20 + 8 } else { 40 + 8 };
    outer + backend.header_len()
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&text, path)
    }

    /// Validates `text` as if read from `path` (relative paths inside it are
    /// resolved against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { file: path.display().to_string(), message: e.to_string().trim_end().to_owned() })?;
        raw.validate(path)
    }

    /// The MTU of the TUN device for a given underlay MTU.
    pub fn tun_mtu(&self, underlay_mtu: u32) -> u32 {
        underlay_mtu.saturating_sub(encap_overhead(self.public_ip.is_ipv4(), &self.backend))
    }

    /// What a subnet table built for this node is validated against.
    pub fn table_scope(&self) -> TableScope {
        TableScope {
            own: std::iter::once(self.subnet).chain(self.subnet6).collect(),
            networks: std::iter::once(self.cidr).chain(self.cidr6).collect(),
            underlay_ipv4: self.public_ip.is_ipv4(),
        }
    }

    /// What every peer gets unless its entry says otherwise.
    pub fn peer_defaults(&self) -> PeerDefaults {
        PeerDefaults { port: self.port, vxlan: matches!(self.backend, Backend::Vxlan(_)), wireguard: self.backend == Backend::WireGuard }
    }

    /// The peers file path, when the control source is a file.
    pub fn peers_path(&self) -> Option<&Path> {
        match &self.control {
            ControlSource::File { peers } => Some(peers),
            ControlSource::Etcd(_) => None,
        }
    }

    /// The etcd source's settings, when that is the control source.
    pub fn etcd(&self) -> Option<&EtcdSource> {
        match &self.control {
            ControlSource::Etcd(e) => Some(e),
            ControlSource::File { .. } => None,
        }
    }

    /// False while `subnet`/`cidr`/`port` still wait for etcd's values.
    pub fn is_resolved(&self) -> bool {
        self.etcd().is_none_or(|e| e.resolved)
    }
}

/// `s` as a quoted TOML string, escaped so the printed config parses back.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl std::fmt::Display for Config {
    /// The effective configuration, as TOML with every default filled in.
    /// Longer than the other functions on purpose: one `writeln!` per
    /// setting, in the order of the file, which reads best as one list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.etcd().filter(|e| !e.resolved);
        writeln!(f, "[node]\npublic_ip = \"{}\"", self.public_ip)?;
        match pending {
            Some(e) if e.given_subnet.is_none() => writeln!(f, "# subnet: allocated from etcd at start (kept across restarts)")?,
            _ => writeln!(f, "subnet = \"{}\"", self.subnet)?,
        }
        match (self.subnet6, pending) {
            (Some(s), _) => writeln!(f, "subnet6 = \"{s}\"")?,
            (None, Some(_)) => writeln!(f, "# subnet6: allocated from etcd at start when its network is dual-stack (EnableIPv6)")?,
            (None, None) => {}
        }
        if let Backend::Vxlan(v) = &self.backend {
            writeln!(f, "vtep_mac = \"{}\"", v.vtep_mac)?;
        }
        if let Some(wg) = &self.wireguard {
            writeln!(f, "private_key_file = {}", toml_string(&wg.private_key_file.display().to_string()))?;
        }
        match pending {
            Some(e) if e.given_cidr.is_none() => writeln!(f, "\n[network]\n# cidr: etcd's Network, read at start")?,
            _ => writeln!(f, "\n[network]\ncidr = \"{}\"", self.cidr)?,
        }
        match (self.cidr6, pending) {
            (Some(c), _) => writeln!(f, "cidr6 = \"{c}\"")?,
            (None, Some(_)) => writeln!(f, "# cidr6: etcd's IPv6Network, read at start (dual-stack networks)")?,
            (None, None) => {}
        }
        writeln!(f, "backend = \"{}\"", self.backend.name())?;
        if let Backend::Vxlan(v) = &self.backend {
            writeln!(f, "vni = {}", v.vni)?;
        }
        match pending {
            Some(e) if e.given_port.is_none() => writeln!(f, "# port: etcd's Backend.Port (default {}), read at start", self.port)?,
            _ => writeln!(f, "port = {}", self.port)?,
        }
        match self.underlay_mtu {
            Some(m) => writeln!(f, "underlay_mtu = {m}")?,
            None => writeln!(f, "# underlay_mtu: read from the interface holding public_ip at start")?,
        }
        writeln!(f, "\n[dataplane]\ntun = \"{}\"\nworkers = {}\nio = \"{}\"", self.tun, self.workers, self.io.name())?;
        match &self.cpus {
            Some(c) => writeln!(f, "cpus = {c:?}")?,
            None => writeln!(f, "# cpus: worker i is pinned to online core i mod cores")?,
        }
        writeln!(f, "batch = {}\nsocket_buffer = {}", self.batch, self.socket_buffer)?;
        writeln!(f, "offload = \"{}\"", if self.offload { "auto" } else { "off" })?;
        let disabled: Vec<String> = self.uring_disable.iter().map(|u| toml_string(u.name())).collect();
        writeln!(f, "uring_disable = [{}]", disabled.join(", "))?;
        writeln!(f, "busy_poll_us = {}", self.busy_poll_us)?;
        writeln!(f, "ingress_checksum = \"{}\"", self.ingress_checksum.name())?;
        writeln!(f, "sched = \"{}\"", self.worker_sched.name())?;
        writeln!(f, "kernel_path = \"{}\"", self.kernel_path.name())?;
        writeln!(f, "xdp_decap = \"{}\"", self.xdp_decap.name())?;
        writeln!(f, "source_ports = \"{}\"", self.source_ports.name())?;
        match &self.control {
            ControlSource::File { peers } => {
                writeln!(f, "\n[control]\nsource = \"file\"\npeers = {}", toml_string(&peers.display().to_string()))?
            }
            ControlSource::Etcd(e) => {
                let endpoints: Vec<String> = e.endpoints.iter().map(|s| toml_string(s)).collect();
                writeln!(f, "\n[control]\nsource = \"etcd\"\nendpoints = [{}]\nprefix = {}", endpoints.join(", "), toml_string(&e.prefix))?;
                for (key, v) in [("ca", &e.ca), ("cert", &e.cert), ("key", &e.key)] {
                    if let Some(p) = v {
                        writeln!(f, "{key} = {}", toml_string(&p.display().to_string()))?;
                    }
                }
                if let Some(u) = &e.username {
                    writeln!(f, "username = {}\npassword = \"(hidden)\"", toml_string(u))?;
                }
                writeln!(
                    f,
                    "state_dir = {}\nlease_ttl = {}\nrenew_margin = {}",
                    toml_string(&e.state_dir.display().to_string()),
                    e.lease_ttl.as_secs(),
                    e.renew_margin.as_secs()
                )?;
            }
        }
        match &self.subnet_env {
            Some(p) => writeln!(f, "subnet_env = {}", toml_string(&p.display().to_string()))?,
            None => writeln!(f, "subnet_env = \"off\"")?,
        }
        match self.metrics_listen {
            Some(a) => writeln!(f, "\n[metrics]\nlisten = \"{a}\"")?,
            None => writeln!(f, "\n[metrics]\nlisten = \"off\"")?,
        }
        writeln!(f, "\n[process]")?;
        match &self.control_socket {
            Some(p) => writeln!(f, "control_socket = {}", toml_string(&p.display().to_string()))?,
            None => writeln!(f, "control_socket = \"off\"")?,
        }
        match (&self.user, &self.group) {
            (Some(u), Some(g)) => writeln!(f, "user = {}\ngroup = {}", toml_string(u), toml_string(g)),
            (Some(u), None) => writeln!(f, "user = {}", toml_string(u)),
            _ => writeln!(f, "# user: not set; encapd keeps the starting user (all capabilities are dropped after setup)"),
        }
    }
}

#[cfg(test)]
mod tests;
