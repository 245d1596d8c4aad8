//! The configuration file exactly as written, and its validation into
//! [`Config`]. Kept apart so that defaults and checks live in one place.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::{Backend, Config, ConfigError, ControlSource, IoEngine};
use crate::route::Prefix;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    node: RawNode,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    public_ip: String,
    subnet: String,
    subnet6: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    cidr: String,
    cidr6: Option<String>,
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default = "default_port")]
    port: i64,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    source: Option<String>,
    peers: Option<String>,
}

fn default_backend() -> String {
    "udp".to_owned()
}

fn default_port() -> i64 {
    8285
}

/// Default TUN device name.
pub const DEFAULT_TUN: &str = "encap0";
/// Default per-loop batch: TUN reads kept in flight per worker.
pub const DEFAULT_BATCH: i64 = 64;
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

impl RawConfig {
    pub(super) fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let c = Checker { file: &file };

        let public_ip: IpAddr = self
            .node
            .public_ip
            .parse()
            .map_err(|_| c.err("node", "public_ip", format!("{:?}", self.node.public_ip), "not an IP address"))?;
        if public_ip.is_unspecified() || public_ip.is_multicast() || public_ip.is_loopback() {
            return Err(c.err("node", "public_ip", public_ip, "must be a unicast address of this host's underlay interface"));
        }
        let subnet = c.prefix("node", "subnet", &self.node.subnet)?;
        if !subnet.is_ipv4() {
            return Err(c.err("node", "subnet", &self.node.subnet, "must be an IPv4 prefix (use subnet6 for IPv6)"));
        }
        if subnet.len() > 30 {
            return Err(c.err("node", "subnet", subnet, "too small: need room for the TUN and container addresses (at most /30)"));
        }
        let cidr = c.prefix("network", "cidr", &self.network.cidr)?;
        if !cidr.is_ipv4() {
            return Err(c.err("network", "cidr", cidr, "must be an IPv4 prefix (use cidr6 for IPv6)"));
        }
        if !cidr.covers(&subnet) || cidr == subnet {
            return Err(c.err("node", "subnet", subnet, format!("must lie inside (and be smaller than) [network] cidr {cidr}")));
        }
        let subnet6 = self.node.subnet6.as_deref().map(|s| c.prefix("node", "subnet6", s)).transpose()?;
        let cidr6 = self.network.cidr6.as_deref().map(|s| c.prefix("network", "cidr6", s)).transpose()?;
        match (subnet6, cidr6) {
            (None, None) => {}
            (Some(s), Some(n)) => {
                if s.is_ipv4() || s.len() > 126 {
                    return Err(c.err("node", "subnet6", s, "must be an IPv6 prefix of at most /126"));
                }
                if n.is_ipv4() {
                    return Err(c.err("network", "cidr6", n, "must be an IPv6 prefix"));
                }
                if !n.covers(&s) || n == s {
                    return Err(c.err("node", "subnet6", s, format!("must lie inside (and be smaller than) [network] cidr6 {n}")));
                }
            }
            (Some(s), None) => return Err(c.err("node", "subnet6", s, "needs [network] cidr6 as well")),
            (None, Some(n)) => return Err(c.err("network", "cidr6", n, "needs [node] subnet6 as well")),
        }
        let backend = match self.network.backend.as_str() {
            "udp" => Backend::Udp,
            "vxlan" => {
                return Err(c.err("network", "backend", "\"vxlan\"", "the vxlan backend is not implemented yet; use \"udp\""));
            }
            other => return Err(c.err("network", "backend", format!("{other:?}"), "unknown backend; expected \"udp\"")),
        };
        let port: u16 = c.int("network", "port", self.network.port, 1, 65535)?;
        let min_mtu = if public_ip.is_ipv4() { 576 } else { 1280 };
        let underlay_mtu = self.network.underlay_mtu.map(|m| c.int::<u32>("network", "underlay_mtu", m, min_mtu, 65535)).transpose()?;

        let d = self.dataplane;
        let tun = d.tun.unwrap_or_else(|| DEFAULT_TUN.to_owned());
        if tun.is_empty() || tun.len() > 15 || !tun.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return Err(c.err("dataplane", "tun", format!("{tun:?}"), "must be 1-15 characters of [A-Za-z0-9._-]"));
        }
        let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers: usize = match d.workers {
            Some(w) => c.int("dataplane", "workers", w, 1, 256)?,
            None => online,
        };
        let io = match d.io.as_deref().unwrap_or("uring") {
            "uring" => IoEngine::Uring,
            "mmsg" => IoEngine::Mmsg,
            "classic" => IoEngine::Classic,
            other => {
                return Err(c.err(
                    "dataplane",
                    "io",
                    format!("{other:?}"),
                    "unknown I/O engine; expected \"uring\", \"mmsg\" or \"classic\"",
                ));
            }
        };
        let cpus = match d.cpus {
            None => None,
            Some(list) => {
                if list.len() != workers {
                    return Err(c.err("dataplane", "cpus", format!("{list:?}"), format!("must list one CPU per worker ({workers})")));
                }
                let mut cpus = Vec::with_capacity(list.len());
                for cpu in list {
                    cpus.push(c.int::<usize>("dataplane", "cpus", cpu, 0, 4095)?);
                }
                Some(cpus)
            }
        };
        let batch = c.int("dataplane", "batch", d.batch.unwrap_or(DEFAULT_BATCH), 1, 256)?;
        let socket_buffer = c.int("dataplane", "socket_buffer", d.socket_buffer.unwrap_or(DEFAULT_SOCKET_BUFFER), 65536, 1 << 30)?;

        let offload = match d.offload.as_deref().unwrap_or("auto") {
            "auto" => true,
            "off" => false,
            other => return Err(c.err("dataplane", "offload", format!("{other:?}"), "expected \"auto\" or \"off\"")),
        };

        let control = match self.control.source.as_deref().unwrap_or("file") {
            "file" => {
                let peers = self.control.peers.unwrap_or_else(|| "peers.toml".to_owned());
                if peers.is_empty() {
                    return Err(c.err("control", "peers", "\"\"", "must name the peers file"));
                }
                let dir = path.parent().unwrap_or(Path::new("."));
                ControlSource::File { peers: dir.join(peers) }
            }
            "etcd" => return Err(c.err("control", "source", "\"etcd\"", "the etcd source is not implemented yet; use \"file\"")),
            other => return Err(c.err("control", "source", format!("{other:?}"), "unknown control source; expected \"file\"")),
        };

        let process = self.process;
        if let Some(u) = &process.user
            && (u.is_empty() || u.contains('\0'))
        {
            return Err(c.err("process", "user", format!("{u:?}"), "must be a user name"));
        }
        if process.group.is_some() && process.user.is_none() {
            return Err(c.err("process", "group", format!("{:?}", process.group.unwrap_or_default()), "needs [process] user as well"));
        }

        let metrics_listen = match self.metrics.listen.as_deref().unwrap_or(super::DEFAULT_METRICS_LISTEN) {
            "off" => None,
            text => Some(
                text.parse::<std::net::SocketAddr>()
                    .map_err(|_| c.err("metrics", "listen", format!("{text:?}"), "not an ADDRESS:PORT (or \"off\")"))?,
            ),
        };

        Ok(Config {
            path: path.to_owned(),
            public_ip,
            subnet,
            subnet6,
            cidr,
            cidr6,
            backend,
            port,
            underlay_mtu,
            tun,
            workers,
            io,
            cpus,
            batch,
            socket_buffer,
            offload,
            control,
            user: process.user,
            group: process.group,
            metrics_listen,
        })
    }
}
