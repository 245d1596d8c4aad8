//! The static peers file: `[[peer]]` tables naming each remote node's
//! container subnet and underlay address.
//!
//! ```toml
//! [[peer]]
//! subnet    = "100.96.2.0/24"
//! public_ip = "198.18.0.2"
//! # port    = 8285          # default: [network] port
//! # subnet6 = "fd00:96:2::/64"
//! # kernel_decap = false    # true: the peer decapsulates in its kernel
//! # public_key = "…"        # wireguard: the peer's key (required there)
//! # preshared_key_file = "psk"  # wireguard: optional
//! ```
//!
//! With the wireguard backend every peer names its public key
//! (`public_key`, as `wg pubkey` prints it) and may name a preshared key
//! file; with the other backends neither is accepted, as a peer with a
//! key speaks a protocol a clear-text node cannot.
//!
//! A file with no peers must say so (`peer = []`): a zero-length file is far
//! more often a write caught half-way than an intent, so it is rejected.
//!
//! With the vxlan backend every peer names its VTEP MAC (`vtep_mac`, the
//! inner Ethernet destination a kernel VTEP checks); with the udp backend
//! none may, because a peer with a VTEP speaks VXLAN and a udp node cannot
//! reach it: the file is refused rather than traffic mis-sent.
//!
//! `kernel_decap = true` says the peer takes datagrams apart in its kernel
//! (a kernel VTEP such as flannel.1, or an encapd with `kernel_path =
//! "tc"`); only such peers are sent packets by this node's kernel path
//! (see `route::Route::kernel_decap`). It defaults to false, the answer
//! that is safe with every peer: a wrong `false` costs speed (the workers
//! carry that peer's packets), a wrong `true` can cost packets.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;

use crate::route::{PeerSpec, Prefix, WireGuardPeer};
use crate::wire::vxlan::Mac;
use crate::wireguard::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: the file is empty (write `peer = []` to run without peers)")]
    Empty { file: String },
    #[error("{file}: peer #{index}: {field} = {value:?}: {reason}")]
    Entry { file: String, index: usize, field: &'static str, value: String, reason: String },
    #[error("{file}: peer #{index}: {field} is missing: {reason}")]
    Missing { file: String, index: usize, field: &'static str, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeers {
    peer: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    subnet: String,
    subnet6: Option<String>,
    public_ip: String,
    port: Option<i64>,
    vtep_mac: Option<String>,
    kernel_decap: Option<bool>,
    public_key: Option<String>,
    preshared_key_file: Option<String>,
}

/// What the node's configuration says about every peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerDefaults {
    /// `[network] port`: the port of a peer that names none.
    pub port: u16,
    /// The node runs the vxlan backend: every peer needs a `vtep_mac`.
    pub vxlan: bool,
    /// The node runs the wireguard backend: every peer needs a
    /// `public_key`, and only such a node takes one.
    pub wireguard: bool,
}

/// A peers file as read: its text (to tell a real change from a rewrite of
/// the same bytes) and the peers it lists.
#[derive(Debug, Clone)]
pub struct PeersFile {
    pub text: String,
    pub peers: Vec<PeerSpec>,
}

/// Reads and parses the peers file at `path`.
pub fn load_peers(path: &Path, defaults: PeerDefaults) -> Result<PeersFile, PeersError> {
    let text = read_peers_text(path)?;
    let peers = parse_peers(&text, &path.display().to_string(), defaults)?;
    Ok(PeersFile { text, peers })
}

/// The text of the peers file at `path`.
pub fn read_peers_text(path: &Path) -> Result<String, PeersError> {
    std::fs::read_to_string(path).map_err(|source| PeersError::Read { file: path.display().to_string(), source })
}

/// Parses peers-file text; `file` names it in errors and in each entry's origin.
pub fn parse_peers(text: &str, file: &str, defaults: PeerDefaults) -> Result<Vec<PeerSpec>, PeersError> {
    if text.trim().is_empty() {
        return Err(PeersError::Empty { file: file.to_owned() });
    }
    let raw: RawPeers =
        toml::from_str(text).map_err(|e| PeersError::Syntax { file: file.to_owned(), message: e.to_string().trim_end().to_owned() })?;
    let mut out = Vec::with_capacity(raw.peer.len());
    for (i, p) in raw.peer.into_iter().enumerate() {
        let index = i + 1;
        let entry = |field: &'static str, value: &str, reason: String| PeersError::Entry {
            file: file.to_owned(),
            index,
            field,
            value: value.to_owned(),
            reason,
        };
        let ip: IpAddr = p.public_ip.parse().map_err(|_| entry("public_ip", &p.public_ip, "not an IP address".into()))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(entry("public_ip", &p.public_ip, "must be a unicast address".into()));
        }
        let port = match p.port {
            None => defaults.port,
            Some(port) => u16::try_from(port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| entry("port", &port.to_string(), "must be between 1 and 65535".into()))?,
        };
        let endpoint = SocketAddr::new(ip, port);
        let origin = format!("{file}: peer #{index}");
        let subnet: Prefix = p.subnet.parse().map_err(|e: crate::route::PrefixError| entry("subnet", &p.subnet, e.to_string()))?;
        if !subnet.is_ipv4() {
            return Err(entry("subnet", &p.subnet, "must be an IPv4 prefix (use subnet6 for IPv6)".into()));
        }
        let vtep_mac = match (&p.vtep_mac, defaults.vxlan) {
            (Some(text), true) => {
                let mac: Mac = text.parse().map_err(|e: crate::wire::vxlan::MacError| entry("vtep_mac", text, e.to_string()))?;
                if mac.is_group() {
                    return Err(entry("vtep_mac", text, "must be a unicast MAC (the first byte even)".into()));
                }
                Some(mac)
            }
            (None, true) => {
                let reason = "the vxlan backend needs each peer's VTEP MAC (flannel's VtepMAC)".into();
                return Err(PeersError::Missing { file: file.to_owned(), index, field: "vtep_mac", reason });
            }
            (Some(text), false) => {
                let why = "a peer with a VTEP runs the vxlan backend, which this udp node cannot reach (set [network] backend = \"vxlan\" or remove the peer)";
                return Err(entry("vtep_mac", text, why.into()));
            }
            (None, false) => None,
        };
        let kernel_decap = p.kernel_decap.unwrap_or(false);
        let wireguard = wireguard_peer(file, index, &p, defaults.wireguard)?;
        if wireguard.is_some() && kernel_decap {
            let why = "a wireguard peer decrypts in its workers; the kernel path does not apply to the wireguard backend";
            return Err(entry("kernel_decap", "true", why.into()));
        }
        out.push(PeerSpec { wireguard: wireguard.clone(), vtep_mac, kernel_decap, subnet, endpoint, origin: origin.clone() });
        if let Some(s6) = p.subnet6 {
            let subnet6: Prefix = s6.parse().map_err(|e: crate::route::PrefixError| entry("subnet6", &s6, e.to_string()))?;
            if subnet6.is_ipv4() {
                return Err(entry("subnet6", &s6, "must be an IPv6 prefix".into()));
            }
            out.push(PeerSpec { wireguard, vtep_mac, kernel_decap, subnet: subnet6, endpoint, origin });
        }
    }
    Ok(out)
}

/// A peer's `public_key` and `preshared_key_file`: required and allowed
/// (respectively) exactly when the node runs the wireguard backend. The
/// preshared key file is only named here; it is read (with the checks of
/// `sys::key_file`) when the peer is added to the WireGuard node, so that
/// `encapd check` on another host does not need the file.
fn wireguard_peer(file: &str, index: usize, p: &RawPeer, wireguard: bool) -> Result<Option<WireGuardPeer>, PeersError> {
    let entry = |field: &'static str, value: &str, reason: &str| PeersError::Entry {
        file: file.to_owned(),
        index,
        field,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if !wireguard {
        let refused = "only meaningful with [network] backend = \"wireguard\"";
        if let Some(k) = &p.public_key {
            return Err(entry("public_key", k, refused));
        }
        if let Some(f) = &p.preshared_key_file {
            return Err(entry("preshared_key_file", f, refused));
        }
        return Ok(None);
    }
    let Some(text) = &p.public_key else {
        let reason = "the wireguard backend needs each peer's public key (base64, as `wg pubkey` prints it)".into();
        return Err(PeersError::Missing { file: file.to_owned(), index, field: "public_key", reason });
    };
    let public_key: PublicKey = text.trim().parse().map_err(|e: crate::wireguard::KeyError| entry("public_key", text, &e.to_string()))?;
    let preshared_key_file = p.preshared_key_file.as_ref().map(|f| {
        let path = std::path::PathBuf::from(f);
        match Path::new(file).parent().filter(|d| !d.as_os_str().is_empty() && path.is_relative()) {
            Some(dir) => dir.join(path),
            None => path,
        }
    });
    Ok(Some(WireGuardPeer { public_key, preshared_key_file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: PeerDefaults = PeerDefaults { port: 8285, vxlan: false, wireguard: false };
    const VXLAN: PeerDefaults = PeerDefaults { port: 8472, vxlan: true, wireguard: false };
    const WG: PeerDefaults = PeerDefaults { port: 51820, vxlan: false, wireguard: true };
    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn wireguard_peers_name_their_key_and_others_do_not() {
        let one = |extra: &str| format!("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n{extra}");
        let peers =
            parse_peers(&one(&format!("public_key = \"{KEY}\"\npreshared_key_file = \"psk\"\n")), "/etc/encapd/peers.toml", WG).unwrap();
        let wg = peers[0].wireguard.as_ref().unwrap();
        assert_eq!(wg.public_key.to_string(), KEY);
        assert_eq!(wg.preshared_key_file.as_deref(), Some(Path::new("/etc/encapd/psk")), "relative to the peers file");
        assert_eq!(peers[0].endpoint.port(), 51820);
        for (text, defaults, want) in [
            (one(""), WG, "p: peer #1: public_key is missing: the wireguard backend needs"),
            (one("public_key = \"abc\"\n"), WG, "p: peer #1: public_key = \"abc\""),
            (one(&format!("public_key = \"{KEY}\"\n")), UDP, "only meaningful with [network] backend = \"wireguard\""),
            (one("preshared_key_file = \"psk\"\n"), UDP, "preshared_key_file"),
            (one(&format!("public_key = \"{KEY}\"\nkernel_decap = true\n")), WG, "the kernel path does not apply"),
        ] {
            let e = parse_peers(&text, "p", defaults).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn vxlan_peers_name_their_vtep_and_udp_peers_do_not() {
        let one = |mac: &str| format!("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n{mac}");
        let peers = parse_peers(&one("vtep_mac = \"c6:d2:32:6f:8f:44\"\n"), "p", VXLAN).unwrap();
        assert_eq!(peers[0].vtep_mac, Some("c6:d2:32:6f:8f:44".parse().unwrap()));
        assert_eq!(peers[0].endpoint.port(), 8472);
        for (text, defaults, want) in [
            (one(""), VXLAN, "p: peer #1: vtep_mac is missing: the vxlan backend"),
            (one("vtep_mac = \"c6:d2:32:6f:8f\"\n"), VXLAN, "p: peer #1: vtep_mac = \"c6:d2:32:6f:8f\": not a MAC address"),
            (one("vtep_mac = \"ff:ff:ff:ff:ff:ff\"\n"), VXLAN, "must be a unicast MAC"),
            (one("vtep_mac = \"c6:d2:32:6f:8f:44\"\n"), UDP, "this udp node cannot reach"),
        ] {
            let e = parse_peers(&text, "p", defaults).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn parses_peers_with_defaults() {
        let peers = parse_peers(
            "[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\n\n[[peer]]\nsubnet = \"100.96.3.0/24\"\npublic_ip = \"198.18.0.3\"\nport = 9000\nsubnet6 = \"fd00:96:3::/64\"\n",
            "peers.toml",
            UDP,
        )
        .unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[0].endpoint, "198.18.0.2:8285".parse().unwrap());
        assert_eq!(peers[1].endpoint, "198.18.0.3:9000".parse().unwrap());
        assert_eq!(peers[2].subnet, "fd00:96:3::/64".parse().unwrap());
        assert_eq!(peers[2].origin, "peers.toml: peer #2");
        assert!(peers.iter().all(|p| !p.kernel_decap), "a peer decapsulates in user space unless the file says otherwise");
        assert!(parse_peers("peer = []", "p", UDP).unwrap().is_empty());
    }

    #[test]
    fn kernel_decap_is_stated_per_peer_and_covers_its_subnet6() {
        let text = "[[peer]]\nsubnet = \"100.96.2.0/24\"\nsubnet6 = \"fd00:96:2::/64\"\npublic_ip = \"198.18.0.2\"\nkernel_decap = true\n\n\
                    [[peer]]\nsubnet = \"100.96.3.0/24\"\npublic_ip = \"198.18.0.3\"\nkernel_decap = false\n";
        let peers = parse_peers(text, "p", UDP).unwrap();
        assert_eq!(peers.iter().map(|p| p.kernel_decap).collect::<Vec<_>>(), [true, true, false]);
        let err = parse_peers(&text.replace("kernel_decap = true", "kernel_decap = \"yes\""), "p", UDP).unwrap_err().to_string();
        assert!(err.contains("kernel_decap") && err.contains("bool"), "{err}");
    }

    #[test]
    fn errors_name_file_entry_and_field() {
        let cases = [
            ("", "the file is empty"),
            ("  \n", "the file is empty"),
            ("[[peer]]\nsubnet = \"100.96.2.0/24\"\n", "missing field `public_ip`"),
            ("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\ncolor = 1\n", "unknown field `color`"),
            ("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2", "peers.toml"),
            ("[[peer]]\nsubnet = \"100.96.2.0/33\"\npublic_ip = \"198.18.0.2\"\n", "peer #1: subnet = \"100.96.2.0/33\""),
            ("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"nope\"\n", "peer #1: public_ip = \"nope\": not an IP address"),
            ("[[peer]]\nsubnet = \"100.96.2.0/24\"\npublic_ip = \"198.18.0.2\"\nport = 0\n", "peer #1: port = \"0\""),
            ("[[peer]]\nsubnet = \"fd00::/64\"\npublic_ip = \"198.18.0.2\"\n", "use subnet6"),
        ];
        for (text, want) in cases {
            let err = parse_peers(text, "peers.toml", UDP).unwrap_err().to_string();
            assert!(err.starts_with("peers.toml"), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
