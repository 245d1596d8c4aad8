//! The daemon's configuration: the TOML file as written ([`raw`]), and the
//! validated [`Config`] the rest of the program uses. Validation names the
//! file, the field and the offending value in every error, and the CLI turns
//! any [`ConfigError`] into exit code 2.

mod peers;
mod raw;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use peers::{PeersError, load_peers, parse_peers};

use crate::route::{Prefix, TableScope};

/// Wire format spoken with peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// flannel's udp backend: the raw inner IP packet is the UDP payload.
    Udp,
}

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

/// Where the subnet table comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSource {
    /// A TOML peers file, watched for changes.
    File { peers: PathBuf },
}

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
    pub port: u16,
    /// `None`: the MTU of the interface holding `public_ip`, read at start.
    pub underlay_mtu: Option<u32>,
    pub tun: String,
    pub workers: usize,
    pub io: IoEngine,
    pub cpus: Option<Vec<usize>>,
    /// Packets handled per worker loop iteration (TUN reads in flight).
    pub batch: usize,
    /// SO_RCVBUF/SO_SNDBUF of each UDP socket, in bytes.
    pub socket_buffer: usize,
    /// Use TUN segmentation offloads when the kernel grants them
    /// (`offload = "auto"`, the default) or never (`"off"`). The `classic`
    /// engine never uses them: it is the per-packet baseline.
    pub offload: bool,
    pub control: ControlSource,
    /// Switch to this user once the TUN, sockets and rings exist (and drop
    /// every capability either way). `None`: keep the starting user.
    pub user: Option<String>,
    /// Group for `user` (default: the user's primary group).
    pub group: Option<String>,
    /// Where `/metrics` is served; `None` when `listen = "off"`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

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

/// Bytes of encapsulation overhead per packet: outer IP + UDP headers.
pub fn encap_overhead(underlay_ipv4: bool) -> u32 {
    if underlay_ipv4 { 20 + 8 } else { 40 + 8 }
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
        underlay_mtu - encap_overhead(self.public_ip.is_ipv4())
    }

    /// What a subnet table built for this node is validated against.
    pub fn table_scope(&self) -> TableScope {
        TableScope {
            own: std::iter::once(self.subnet).chain(self.subnet6).collect(),
            networks: std::iter::once(self.cidr).chain(self.cidr6).collect(),
            underlay_ipv4: self.public_ip.is_ipv4(),
        }
    }

    /// The peers file path, when the control source is a file.
    pub fn peers_path(&self) -> Option<&Path> {
        match &self.control {
            ControlSource::File { peers } => Some(peers),
        }
    }
}

impl std::fmt::Display for Config {
    /// The effective configuration, as TOML with every default filled in.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "[node]\npublic_ip = \"{}\"\nsubnet = \"{}\"", self.public_ip, self.subnet)?;
        if let Some(s) = self.subnet6 {
            writeln!(f, "subnet6 = \"{s}\"")?;
        }
        writeln!(f, "\n[network]\ncidr = \"{}\"", self.cidr)?;
        if let Some(c) = self.cidr6 {
            writeln!(f, "cidr6 = \"{c}\"")?;
        }
        writeln!(f, "backend = \"udp\"\nport = {}", self.port)?;
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
        match &self.control {
            ControlSource::File { peers } => writeln!(f, "\n[control]\nsource = \"file\"\npeers = \"{}\"", peers.display())?,
        }
        match self.metrics_listen {
            Some(a) => writeln!(f, "\n[metrics]\nlisten = \"{a}\"")?,
            None => writeln!(f, "\n[metrics]\nlisten = \"off\"")?,
        }
        match (&self.user, &self.group) {
            (Some(u), Some(g)) => writeln!(f, "\n[process]\nuser = \"{u}\"\ngroup = \"{g}\""),
            (Some(u), None) => writeln!(f, "\n[process]\nuser = \"{u}\""),
            _ => writeln!(f, "\n# [process] user: not set; encapd keeps the starting user (all capabilities are dropped after setup)"),
        }
    }
}

#[cfg(test)]
mod tests;
