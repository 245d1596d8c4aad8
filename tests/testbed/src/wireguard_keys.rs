//! WireGuard keys for test nodes (`backend = "wireguard"`): key pairs from
//! deterministic seeds, written as `wg genkey` writes a private key (base64,
//! mode 0600, owned by the test's user), and the configuration lines that
//! point a node at its key and its peer at its public key. The files live
//! in a [`TempDir`] of their own, removed when the keys drop.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use encapd::wireguard::{PrivateKey, PublicKey};

use crate::cmd::TempDir;
use crate::data::Prng;

/// One node's key pair and its private key file.
pub struct NodeKey {
    pub private_key: PrivateKey,
    pub public_key: PublicKey,
    pub file: PathBuf,
}

/// Key pairs for nodeA and nodeB, each written to a private file.
pub struct WireGuardKeys {
    pub a: NodeKey,
    pub b: NodeKey,
    _dir: TempDir,
}

impl WireGuardKeys {
    /// Two key pairs from `seed` (distinct per test, so that two tests'
    /// nodes never share a key).
    pub fn new(seed: u64) -> WireGuardKeys {
        let dir = TempDir::new("wgkeys");
        let mut rng = Prng::new(seed);
        let mut make = |name: &str| {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            let private_key = PrivateKey::from_bytes(bytes);
            let file = dir.write(name, &format!("{}\n", &*private_key.to_base64()));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod 600 a key file");
            NodeKey { public_key: private_key.public_key(), private_key, file }
        };
        let (a, b) = (make("a.key"), make("b.key"));
        WireGuardKeys { a, b, _dir: dir }
    }

    /// `[node]` lines for a node whose key is `key`.
    pub fn node_lines(key: &NodeKey) -> String {
        format!("private_key_file = \"{}\"\n", key.file.display())
    }

    /// `[network]` lines for the wireguard backend (on its default port, 51820).
    pub fn network_lines() -> String {
        "backend = \"wireguard\"\n".to_owned()
    }

    /// The peers-file line naming a peer's key.
    pub fn peer_line(key: &NodeKey) -> String {
        format!("public_key = \"{}\"\n", key.public_key)
    }
}
