//! The configuration file exactly as written, and its validation into
//! [`Config`]. Kept apart so that defaults and checks live in one place.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{
    Backend, Config, ConfigError, ControlSource, EtcdSource, IngressChecksum, IoEngine, KernelPathMode, SourcePorts, VxlanSettings,
    WireGuardNode, XdpDecapMode,
};
use crate::route::Prefix;
use crate::sys::sched::WorkerSched;
use crate::sys::uring::UringFeature;
use crate::wire::vxlan::{Mac, MacError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    node: RawNode,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    dataplane: RawDataplane,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    process: RawProcess,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    user: Option<String>,
    group: Option<String>,
    control_socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    public_ip: String,
    subnet: Option<String>,
    subnet6: Option<String>,
    vtep_mac: Option<String>,
    private_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    cidr: Option<String>,
    cidr6: Option<String>,
    backend: Option<String>,
    vni: Option<i64>,
    port: Option<i64>,
    underlay_mtu: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    tun: Option<String>,
    workers: Option<i64>,
    io: Option<String>,
    cpus: Option<Vec<i64>>,
    batch: Option<i64>,
    socket_buffer: Option<i64>,
    offload: Option<String>,
    uring_disable: Option<Vec<String>>,
    busy_poll_us: Option<i64>,
    ingress_checksum: Option<String>,
    sched: Option<String>,
    kernel_path: Option<String>,
    xdp_decap: Option<String>,
    source_ports: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    source: Option<String>,
    peers: Option<String>,
    // etcd source
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    username: Option<String>,
    password: Option<String>,
    state_dir: Option<String>,
    subnet_env: Option<String>,
    renew_margin: Option<i64>,
    lease_ttl: Option<i64>,
}

/// Default TUN device name.
pub const DEFAULT_TUN: &str = "encap0";
/// Default per-loop batch: TUN reads kept in flight per worker.
pub const DEFAULT_BATCH: i64 = 64;
/// Default `[dataplane] busy_poll_us`: off until a committed benchmark run
/// shows it pays on a machine that also runs the applications
/// (docs/performance.md).
pub const DEFAULT_BUSY_POLL_US: i64 = 0;
/// Default UDP socket buffer size: enough for a few ms at 10 Gbit/s.
pub const DEFAULT_SOCKET_BUFFER: i64 = 4 << 20;

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn err(&self, section: &'static str, key: &'static str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::Field { file: self.file.to_owned(), section, key, value: value.to_string(), reason: reason.into() }
    }

    fn prefix(&self, section: &'static str, key: &'static str, value: &str) -> Result<Prefix, ConfigError> {
        value.parse::<Prefix>().map_err(|e| self.err(section, key, format!("{value:?}"), e.to_string()))
    }

    fn int<T: TryFrom<i64>>(&self, section: &'static str, key: &'static str, value: i64, min: i64, max: i64) -> Result<T, ConfigError> {
        if value < min || value > max {
            return Err(self.err(section, key, value, format!("must be between {min} and {max}")));
        }
        T::try_from(value).map_err(|_| self.err(section, key, value, "out of range"))
    }
}

/// `[node]` and `[network]`, validated together (the subnets must lie in
/// the networks).
struct Addressing {
    public_ip: IpAddr,
    subnet: Option<Prefix>,
    subnet6: Option<Prefix>,
    cidr: Option<Prefix>,
    cidr6: Option<Prefix>,
    backend: Backend,
    given_port: Option<u16>,
    /// `[network] vni` as written (vxlan).
    given_vni: Option<u32>,
    underlay_mtu: Option<u32>,
}

/// `[dataplane]`, validated.
struct Dataplane {
    tun: String,
    workers: usize,
    io: IoEngine,
    cpus: Option<Vec<usize>>,
    batch: usize,
    socket_buffer: usize,
    offload: bool,
    uring_disable: Vec<UringFeature>,
    busy_poll_us: u32,
    ingress_checksum: IngressChecksum,
    worker_sched: WorkerSched,
    kernel_path: KernelPathMode,
    xdp_decap: XdpDecapMode,
    /// `None`: not set (the backend's default).
    source_ports: Option<SourcePorts>,
}

impl RawConfig {
    pub(super) fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let c = Checker { file: &file };
        let etcd = self.control.source.as_deref() == Some("etcd");
        let a = validate_addressing(&c, &self.node, &self.network, etcd)?;
        let d = self.dataplane.validate(&c)?;
        if d.ingress_checksum == IngressChecksum::TrustOuter && a.backend != Backend::Udp {
            let why = "only meaningful with [network] backend = \"udp\" (kernel VXLAN peers send no outer UDP checksum over IPv4)";
            return Err(c.err("dataplane", "ingress_checksum", "\"trust-outer\"", why));
        }
        if d.kernel_path == KernelPathMode::Tc {
            let refused = if a.backend == Backend::WireGuard {
                Some(
                    "the kernel path carries flannel's clear-text udp and vxlan formats only; the wireguard backend encrypts in the workers (set kernel_path = \"off\")",
                )
            } else if !a.public_ip.is_ipv4() {
                Some("needs an IPv4 public_ip (the programs write outer IPv4 headers)")
            } else if d.ingress_checksum == IngressChecksum::TrustOuter {
                Some(
                    "cannot be combined with ingress_checksum = \"trust-outer\": the kernel path sends no outer UDP checksum, so no node of such a cluster may trust one",
                )
            } else {
                None
            };
            if let Some(why) = refused {
                return Err(c.err("dataplane", "kernel_path", "\"tc\"", why));
            }
        }
        let source_ports = match (d.source_ports, a.backend) {
            (Some(SourcePorts::Flow), Backend::WireGuard) => {
                let why = "the wireguard backend sends from its listening port: its peers answer the port they last heard from";
                return Err(c.err("dataplane", "source_ports", "\"flow\"", why));
            }
            (_, Backend::WireGuard) => SourcePorts::Listen,
            (ports, _) => ports.unwrap_or_default(),
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let wireguard = validate_private_key_file(&c, &self.node, a.backend, dir)?;
        let subnet_env = self.control.subnet_env(&c, dir)?;
        let control = self.control.validate(&c, dir, &a)?;
        let control_socket = self.process.control_socket(&c, dir, &d.tun)?;
        let (user, group) = self.process.validate(&c)?;
        let metrics_listen = self.metrics.validate(&c)?;
        Ok(Config {
            path: path.to_owned(),
            public_ip: a.public_ip,
            subnet: a.subnet.unwrap_or(super::UNRESOLVED),
            subnet6: a.subnet6,
            cidr: a.cidr.unwrap_or(super::UNRESOLVED),
            cidr6: a.cidr6,
            backend: a.backend,
            wireguard,
            port: a.given_port.unwrap_or(a.backend.default_port()),
            underlay_mtu: a.underlay_mtu,
            tun: d.tun,
            workers: d.workers,
            io: d.io,
            cpus: d.cpus,
            batch: d.batch,
            socket_buffer: d.socket_buffer,
            offload: d.offload,
            uring_disable: d.uring_disable,
            busy_poll_us: d.busy_poll_us,
            ingress_checksum: d.ingress_checksum,
            worker_sched: d.worker_sched,
            kernel_path: d.kernel_path,
            xdp_decap: d.xdp_decap,
            source_ports,
            control,
            user,
            group,
            metrics_listen,
            subnet_env,
            control_socket,
        })
    }
}

fn validate_addressing(c: &Checker<'_>, node: &RawNode, network: &RawNetwork, etcd: bool) -> Result<Addressing, ConfigError> {
    let public_ip: IpAddr =
        node.public_ip.parse().map_err(|_| c.err("node", "public_ip", format!("{:?}", node.public_ip), "not an IP address"))?;
    if public_ip.is_unspecified() || public_ip.is_multicast() || public_ip.is_loopback() {
        return Err(c.err("node", "public_ip", public_ip, "must be a unicast address of this host's underlay interface"));
    }
    if etcd && !public_ip.is_ipv4() {
        let why = "the etcd source needs an IPv4 public_ip: flannel's leases name the holder's underlay address in PublicIP, an IPv4 field";
        return Err(c.err("node", "public_ip", public_ip, why));
    }
    let (subnet, cidr) = validate_ipv4_subnets(c, node, network, etcd)?;
    let (subnet6, cidr6) = validate_ipv6_subnets(c, node, network, etcd)?;
    let backend = validate_backend(c, node, network, public_ip)?;
    let given_port: Option<u16> = network.port.map(|p| c.int("network", "port", p, 1, 65535)).transpose()?;
    let min_mtu = if public_ip.is_ipv4() { 576 } else { 1280 };
    let underlay_mtu = network.underlay_mtu.map(|m| c.int::<u32>("network", "underlay_mtu", m, min_mtu, 65535)).transpose()?;
    let given_vni = network.vni.and_then(|v| u32::try_from(v).ok());
    Ok(Addressing { public_ip, subnet, subnet6, cidr, cidr6, backend, given_port, given_vni, underlay_mtu })
}

/// `[network] backend` (and `vni`, `[node] vtep_mac` for vxlan).
fn validate_backend(c: &Checker<'_>, node: &RawNode, network: &RawNetwork, public_ip: IpAddr) -> Result<Backend, ConfigError> {
    match network.backend.as_deref().unwrap_or("udp") {
        "udp" => {
            if let Some(v) = network.vni {
                return Err(c.err("network", "vni", v, "only meaningful with backend = \"vxlan\""));
            }
            if let Some(m) = &node.vtep_mac {
                return Err(c.err("node", "vtep_mac", format!("{m:?}"), "only meaningful with [network] backend = \"vxlan\""));
            }
            Ok(Backend::Udp)
        }
        "vxlan" => {
            let vni = c.int("network", "vni", network.vni.unwrap_or(1), 0, (1 << 24) - 1)?;
            let vtep_mac = match &node.vtep_mac {
                None => Mac::derived_from(public_ip),
                Some(text) => {
                    let mac: Mac = text.parse().map_err(|e: MacError| c.err("node", "vtep_mac", format!("{text:?}"), e.to_string()))?;
                    if mac.is_group() || mac == Mac::default() {
                        return Err(c.err(
                            "node",
                            "vtep_mac",
                            format!("{text:?}"),
                            "must be a unicast MAC (first byte even, not all zero)",
                        ));
                    }
                    mac
                }
            };
            Ok(Backend::Vxlan(VxlanSettings { vni, vtep_mac }))
        }
        "wireguard" => {
            if let Some(v) = network.vni {
                return Err(c.err("network", "vni", v, "only meaningful with backend = \"vxlan\""));
            }
            if let Some(m) = &node.vtep_mac {
                return Err(c.err("node", "vtep_mac", format!("{m:?}"), "only meaningful with [network] backend = \"vxlan\""));
            }
            Ok(Backend::WireGuard)
        }
        other => Err(c.err("network", "backend", format!("{other:?}"), "unknown backend; expected \"udp\", \"vxlan\" or \"wireguard\"")),
    }
}

/// `[node] private_key_file`: required with the wireguard backend, refused
/// with the others. Only the path is checked here; the file is read at
/// start (`sys::key_file`: a regular file, mode 0600 or 0400, owned by the
/// daemon's user), where `encapd check` also reads it.
fn validate_private_key_file(c: &Checker<'_>, node: &RawNode, backend: Backend, dir: &Path) -> Result<Option<WireGuardNode>, ConfigError> {
    match (&node.private_key_file, backend) {
        (Some(file), Backend::WireGuard) => {
            if file.is_empty() {
                return Err(c.err("node", "private_key_file", "\"\"", "must name the file holding this node's private key"));
            }
            Ok(Some(WireGuardNode { private_key_file: dir.join(file) }))
        }
        (None, Backend::WireGuard) => Err(c.err(
            "node",
            "private_key_file",
            "(missing)",
            "the wireguard backend needs this node's private key (`encapd genkey > private.key` under umask 077)",
        )),
        (Some(file), other) => Err(c.err(
            "node",
            "private_key_file",
            format!("{file:?}"),
            format!("only meaningful with [network] backend = \"wireguard\" (this node runs {:?})", other.name()),
        )),
        (None, _) => Ok(None),
    }
}

/// `[node] subnet` inside `[network] cidr`; both may be left to etcd.
fn validate_ipv4_subnets(
    c: &Checker<'_>,
    node: &RawNode,
    network: &RawNetwork,
    etcd: bool,
) -> Result<(Option<Prefix>, Option<Prefix>), ConfigError> {
    let missing = |section: &str, key: &str| ConfigError::Syntax {
        file: c.file.to_owned(),
        message: format!("missing field `{key}` in [{section}] (required unless [control] source = \"etcd\")"),
    };
    let subnet = match node.subnet.as_deref() {
        Some(text) => {
            let subnet = c.prefix("node", "subnet", text)?;
            if !subnet.is_ipv4() {
                return Err(c.err("node", "subnet", text, "must be an IPv4 prefix (use subnet6 for IPv6)"));
            }
            if subnet.len() > 30 {
                return Err(c.err("node", "subnet", subnet, "too small: need room for the TUN and container addresses (at most /30)"));
            }
            Some(subnet)
        }
        None if etcd => None,
        None => return Err(missing("node", "subnet")),
    };
    let cidr = match network.cidr.as_deref() {
        Some(text) => {
            let cidr = c.prefix("network", "cidr", text)?;
            if !cidr.is_ipv4() {
                return Err(c.err("network", "cidr", cidr, "must be an IPv4 prefix (use cidr6 for IPv6)"));
            }
            Some(cidr)
        }
        None if etcd => None,
        None => return Err(missing("network", "cidr")),
    };
    if let (Some(subnet), Some(cidr)) = (subnet, cidr)
        && (!cidr.covers(&subnet) || cidr == subnet)
    {
        return Err(c.err("node", "subnet", subnet, format!("must lie inside (and be smaller than) [network] cidr {cidr}")));
    }
    Ok((subnet, cidr))
}

/// `[node] subnet6` inside `[network] cidr6`: both or neither with the
/// file source; with etcd each may be left out (etcd's network then says
/// whether there is IPv6, and etcd allocates the subnet).
fn validate_ipv6_subnets(
    c: &Checker<'_>,
    node: &RawNode,
    network: &RawNetwork,
    etcd: bool,
) -> Result<(Option<Prefix>, Option<Prefix>), ConfigError> {
    let subnet6 = node.subnet6.as_deref().map(|s| c.prefix("node", "subnet6", s)).transpose()?;
    let cidr6 = network.cidr6.as_deref().map(|s| c.prefix("network", "cidr6", s)).transpose()?;
    if let Some(s) = subnet6
        && (s.is_ipv4() || s.len() > 126)
    {
        return Err(c.err("node", "subnet6", s, "must be an IPv6 prefix of at most /126"));
    }
    if let Some(n) = cidr6
        && n.is_ipv4()
    {
        return Err(c.err("network", "cidr6", n, "must be an IPv6 prefix"));
    }
    match (subnet6, cidr6) {
        (Some(s), Some(n)) if !n.covers(&s) || n == s => {
            Err(c.err("node", "subnet6", s, format!("must lie inside (and be smaller than) [network] cidr6 {n}")))
        }
        (Some(s), None) if !etcd => Err(c.err("node", "subnet6", s, "needs [network] cidr6 as well")),
        (None, Some(n)) if !etcd => Err(c.err("network", "cidr6", n, "needs [node] subnet6 as well")),
        _ => Ok((subnet6, cidr6)),
    }
}

impl RawDataplane {
    fn validate(self, c: &Checker<'_>) -> Result<Dataplane, ConfigError> {
        let tun = self.tun.unwrap_or_else(|| DEFAULT_TUN.to_owned());
        if tun.is_empty() || tun.len() > 15 || !tun.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return Err(c.err("dataplane", "tun", format!("{tun:?}"), "must be 1-15 characters of [A-Za-z0-9._-]"));
        }
        let workers: usize = match self.workers {
            Some(w) => c.int("dataplane", "workers", w, 1, 256)?,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        let io = match self.io.as_deref().unwrap_or("uring") {
            "uring" => IoEngine::Uring,
            "mmsg" => IoEngine::Mmsg,
            "classic" => IoEngine::Classic,
            other => {
                let expected = "unknown I/O engine; expected \"uring\", \"mmsg\" or \"classic\"";
                return Err(c.err("dataplane", "io", format!("{other:?}"), expected));
            }
        };
        let cpus = match self.cpus {
            None => None,
            // An empty list: the workers are not pinned at all.
            Some(list) if !list.is_empty() && list.len() != workers => {
                return Err(c.err(
                    "dataplane",
                    "cpus",
                    format!("{list:?}"),
                    format!("must list one CPU per worker ({workers}), or be [] for no pinning"),
                ));
            }
            Some(list) => Some(list.into_iter().map(|cpu| c.int::<usize>("dataplane", "cpus", cpu, 0, 4095)).collect::<Result<_, _>>()?),
        };
        let batch = c.int("dataplane", "batch", self.batch.unwrap_or(DEFAULT_BATCH), 1, 256)?;
        let socket_buffer = c.int("dataplane", "socket_buffer", self.socket_buffer.unwrap_or(DEFAULT_SOCKET_BUFFER), 65536, 1 << 30)?;
        let offload = match self.offload.as_deref().unwrap_or("auto") {
            "auto" => true,
            "off" => false,
            other => return Err(c.err("dataplane", "offload", format!("{other:?}"), "expected \"auto\" or \"off\"")),
        };
        let uring_disable = self
            .uring_disable
            .unwrap_or_default()
            .iter()
            .map(|name| {
                UringFeature::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = UringFeature::ALL.iter().map(|f| f.name()).collect();
                    c.err("dataplane", "uring_disable", format!("{name:?}"), format!("unknown io_uring feature; expected one of {known:?}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let busy_poll_us = c.int("dataplane", "busy_poll_us", self.busy_poll_us.unwrap_or(DEFAULT_BUSY_POLL_US), 0, 10_000)?;
        let ingress_checksum = match self.ingress_checksum.as_deref() {
            None => IngressChecksum::default(),
            Some(name) => IngressChecksum::from_name(name)
                .ok_or_else(|| c.err("dataplane", "ingress_checksum", format!("{name:?}"), "expected \"verify\" or \"trust-outer\""))?,
        };
        let worker_sched = match self.sched.as_deref() {
            None => WorkerSched::default(),
            Some(name) => WorkerSched::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = WorkerSched::ALL.iter().map(|s| s.name()).collect();
                c.err("dataplane", "sched", format!("{name:?}"), format!("unknown scheduling class; expected one of {known:?}"))
            })?,
        };
        let kernel_path = match self.kernel_path.as_deref() {
            None => KernelPathMode::default(),
            Some(name) => KernelPathMode::from_name(name)
                .ok_or_else(|| c.err("dataplane", "kernel_path", format!("{name:?}"), "expected \"off\", \"tc\" or \"auto\""))?,
        };
        let xdp_decap = match self.xdp_decap.as_deref() {
            None => XdpDecapMode::default(),
            Some(name) => XdpDecapMode::from_name(name)
                .ok_or_else(|| c.err("dataplane", "xdp_decap", format!("{name:?}"), "expected \"auto\", \"on\" or \"off\""))?,
        };
        let source_ports = self
            .source_ports
            .as_deref()
            .map(|name| {
                SourcePorts::from_name(name)
                    .ok_or_else(|| c.err("dataplane", "source_ports", format!("{name:?}"), "expected \"flow\" or \"listen\""))
            })
            .transpose()?;
        Ok(Dataplane {
            tun,
            workers,
            io,
            cpus,
            batch,
            socket_buffer,
            offload,
            uring_disable,
            busy_poll_us,
            ingress_checksum,
            worker_sched,
            kernel_path,
            xdp_decap,
            source_ports,
        })
    }
}

impl RawProcess {
    /// The user to switch to and its group.
    fn validate(self, c: &Checker<'_>) -> Result<(Option<String>, Option<String>), ConfigError> {
        if let Some(u) = &self.user
            && (u.is_empty() || u.contains('\0'))
        {
            return Err(c.err("process", "user", format!("{u:?}"), "must be a user name"));
        }
        if self.group.is_some() && self.user.is_none() {
            return Err(c.err("process", "group", format!("{:?}", self.group.unwrap_or_default()), "needs [process] user as well"));
        }
        Ok((self.user, self.group))
    }
}

impl RawProcess {
    /// `control_socket`: where this daemon listens for a successor (and for
    /// `encapd upgrade`). Default: `<tun>.sock` in systemd's
    /// `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`), else in /run/encapd;
    /// relative paths are relative to the config file; "off" for none.
    fn control_socket(&self, c: &Checker<'_>, dir: &Path, tun: &str) -> Result<Option<PathBuf>, ConfigError> {
        let path = match self.control_socket.as_deref() {
            Some("off") => return Ok(None),
            Some("") => return Err(c.err("process", "control_socket", "\"\"", "must name a socket path (or \"off\")")),
            Some(s) => dir.join(s),
            None => systemd_runtime_directory().unwrap_or_else(|| PathBuf::from(super::DEFAULT_RUNTIME_DIR)).join(format!("{tun}.sock")),
        };
        // sockaddr_un holds 107 bytes and a NUL.
        if path.as_os_str().len() > 107 {
            let shown = format!("{:?}", path.display().to_string());
            return Err(c.err("process", "control_socket", shown, "longer than the 107 bytes a unix socket path may have"));
        }
        Ok(Some(path))
    }
}

impl RawMetrics {
    fn validate(self, c: &Checker<'_>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        match self.listen.as_deref().unwrap_or(super::DEFAULT_METRICS_LISTEN) {
            "off" => Ok(None),
            text => text
                .parse::<std::net::SocketAddr>()
                .map(Some)
                .map_err(|_| c.err("metrics", "listen", format!("{text:?}"), "not an ADDRESS:PORT (or \"off\")")),
        }
    }
}

impl RawControl {
    /// `[control]`: the peers file, or etcd.
    fn validate(self, c: &Checker<'_>, dir: &Path, a: &Addressing) -> Result<ControlSource, ConfigError> {
        match self.source.as_deref().unwrap_or("file") {
            "file" => self.validate_file(c, dir),
            "etcd" => {
                let mut etcd = self.validate_etcd(c, dir, a.subnet, a.cidr, a.given_port)?;
                etcd.given_vni = a.given_vni;
                (etcd.given_subnet6, etcd.given_cidr6) = (a.subnet6, a.cidr6);
                Ok(ControlSource::Etcd(Box::new(etcd)))
            }
            other => Err(c.err("control", "source", format!("{other:?}"), "unknown control source; expected \"file\" or \"etcd\"")),
        }
    }

    /// The `[control]` keys of the file source (and no etcd key).
    fn validate_file(self, c: &Checker<'_>, dir: &Path) -> Result<ControlSource, ConfigError> {
        let etcd_only = [
            ("endpoints", self.endpoints.is_some()),
            ("prefix", self.prefix.is_some()),
            ("ca", self.ca.is_some()),
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("state_dir", self.state_dir.is_some()),
            ("renew_margin", self.renew_margin.is_some()),
            ("lease_ttl", self.lease_ttl.is_some()),
        ];
        if let Some((key, _)) = etcd_only.iter().find(|(_, set)| *set) {
            return Err(c.err("control", key, "(set)", "only meaningful with [control] source = \"etcd\""));
        }
        let peers = self.peers.unwrap_or_else(|| "peers.toml".to_owned());
        if peers.is_empty() {
            return Err(c.err("control", "peers", "\"\"", "must name the peers file"));
        }
        Ok(ControlSource::File { peers: dir.join(peers) })
    }

    /// The `[control]` keys of the etcd source (and not `peers`).
    fn validate_etcd(
        &self,
        c: &Checker<'_>,
        dir: &Path,
        subnet: Option<Prefix>,
        cidr: Option<Prefix>,
        port: Option<u16>,
    ) -> Result<EtcdSource, ConfigError> {
        if let Some(p) = &self.peers {
            return Err(c.err("control", "peers", format!("{p:?}"), "only meaningful with [control] source = \"file\""));
        }
        let (endpoints, tls) = self.etcd_endpoints(c)?;
        let prefix = self.prefix.clone().unwrap_or_else(|| super::DEFAULT_ETCD_PREFIX.to_owned());
        let prefix_trimmed = prefix.trim_end_matches('/').to_owned();
        if !prefix.starts_with('/') || prefix_trimmed.is_empty() {
            return Err(c.err("control", "prefix", format!("{prefix:?}"), "must be an absolute key path such as \"/coreos.com/network\""));
        }
        let (ca, cert, key) = self.tls_files(c, dir, tls, &endpoints)?;
        match (&self.username, &self.password) {
            (Some(u), None) => return Err(c.err("control", "username", format!("{u:?}"), "needs [control] password as well")),
            (None, Some(_)) => return Err(c.err("control", "password", "(hidden)", "needs [control] username as well")),
            (Some(u), Some(_)) if u.is_empty() => return Err(c.err("control", "username", "\"\"", "must not be empty")),
            _ => {}
        }
        let (lease_ttl, renew_margin) = self.lease_timing(c)?;
        Ok(EtcdSource {
            endpoints,
            prefix: prefix_trimmed,
            ca,
            cert,
            key,
            username: self.username.clone(),
            password: self.password.clone(),
            state_dir: self.state_dir(c, dir)?,
            renew_margin,
            lease_ttl,
            given_subnet: subnet,
            given_cidr: cidr,
            given_port: port,
            given_vni: None,
            given_subnet6: None,
            given_cidr6: None,
            resolved: false,
        })
    }

    /// The endpoints, and whether they use TLS.
    fn etcd_endpoints(&self, c: &Checker<'_>) -> Result<(Vec<String>, bool), ConfigError> {
        let endpoints = self.endpoints.clone().unwrap_or_default();
        if endpoints.is_empty() {
            return Err(c.err("control", "endpoints", "[]", "list at least one etcd endpoint, e.g. [\"http://127.0.0.1:2379\"]"));
        }
        let mut tls = false;
        for e in &endpoints {
            let rest = if let Some(r) = e.strip_prefix("https://") {
                tls = true;
                r
            } else if let Some(r) = e.strip_prefix("http://") {
                r
            } else {
                return Err(c.err("control", "endpoints", format!("{e:?}"), "must start with http:// or https://"));
            };
            if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
                return Err(c.err("control", "endpoints", format!("{e:?}"), "must be a URL of the form http(s)://HOST:PORT"));
            }
        }
        Ok((endpoints, tls))
    }

    /// `ca`, `cert` and `key`: a CA for https endpoints, a client cert and key together.
    #[allow(clippy::type_complexity)]
    fn tls_files(
        &self,
        c: &Checker<'_>,
        dir: &Path,
        tls: bool,
        endpoints: &[String],
    ) -> Result<(Option<PathBuf>, Option<PathBuf>, Option<PathBuf>), ConfigError> {
        let file = |key: &'static str, v: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) if s.is_empty() => Err(c.err("control", key, "\"\"", "must name a file")),
                Some(s) => Ok(Some(dir.join(s))),
            }
        };
        let (ca, cert, key) = (file("ca", &self.ca)?, file("cert", &self.cert)?, file("key", &self.key)?);
        match (&cert, &key) {
            (Some(_), None) => {
                return Err(c.err("control", "cert", format!("{:?}", self.cert.as_deref().unwrap_or("")), "needs [control] key as well"));
            }
            (None, Some(_)) => {
                return Err(c.err("control", "key", format!("{:?}", self.key.as_deref().unwrap_or("")), "needs [control] cert as well"));
            }
            _ => {}
        }
        if tls && ca.is_none() {
            let why = "https endpoints need [control] ca (the CA that signed etcd's certificate)";
            return Err(c.err("control", "endpoints", format!("{endpoints:?}"), why));
        }
        if !tls && (ca.is_some() || cert.is_some()) {
            return Err(c.err("control", "ca", "(set)", "TLS files need https:// endpoints"));
        }
        Ok((ca, cert, key))
    }

    /// `subnet_env`: flannel's file for the CNI plugin (default
    /// /run/flannel/subnet.env, as flanneld; "off" writes none).
    fn subnet_env(&self, c: &Checker<'_>, dir: &Path) -> Result<Option<PathBuf>, ConfigError> {
        match self.subnet_env.as_deref() {
            None => Ok(Some(PathBuf::from(super::DEFAULT_SUBNET_ENV))),
            Some("off") => Ok(None),
            Some("") => Err(c.err("control", "subnet_env", "\"\"", "must name a file (or \"off\")")),
            Some(s) => Ok(Some(dir.join(s))),
        }
    }

    /// `lease_ttl` and `renew_margin` (shorter than the TTL).
    fn lease_timing(&self, c: &Checker<'_>) -> Result<(Duration, Duration), ConfigError> {
        let lease_ttl: u64 = c.int("control", "lease_ttl", self.lease_ttl.unwrap_or(super::DEFAULT_LEASE_TTL_S), 10, 7 * 86400)?;
        let renew_margin: u64 =
            c.int("control", "renew_margin", self.renew_margin.unwrap_or(super::DEFAULT_RENEW_MARGIN_S), 1, 7 * 86400)?;
        if renew_margin >= lease_ttl {
            let why = format!("must be shorter than [control] lease_ttl ({lease_ttl} s)");
            return Err(c.err("control", "renew_margin", renew_margin, why));
        }
        Ok((Duration::from_secs(lease_ttl), Duration::from_secs(renew_margin)))
    }

    /// `state_dir`; by default the directory systemd gives the service
    /// (`StateDirectory=` sets `$STATE_DIRECTORY`), else the config file's.
    fn state_dir(&self, c: &Checker<'_>, dir: &Path) -> Result<PathBuf, ConfigError> {
        match &self.state_dir {
            Some(s) if s.is_empty() => Err(c.err("control", "state_dir", "\"\"", "must name a directory")),
            Some(s) => Ok(dir.join(s)),
            None => Ok(systemd_state_directory().unwrap_or_else(|| dir.to_owned())),
        }
    }
}

/// The first directory of `$STATE_DIRECTORY` (systemd's `StateDirectory=`).
fn systemd_state_directory() -> Option<PathBuf> {
    first_directory("STATE_DIRECTORY")
}

/// The first directory of `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`).
fn systemd_runtime_directory() -> Option<PathBuf> {
    first_directory("RUNTIME_DIRECTORY")
}

/// The first of the colon-separated directories in environment variable `var`.
fn first_directory(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var)?;
    let first = value.to_str()?.split(':').next()?;
    (!first.is_empty()).then(|| PathBuf::from(first))
}
