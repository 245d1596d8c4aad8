//! Start-up and upkeep of the WireGuard node (`backend = "wireguard"`):
//! this node's key read from `[node] private_key_file`, and the node's
//! peers kept equal to the keys the subnet table names — once before the
//! workers start, then after every table the control thread publishes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rand_core::OsRng;

use super::DaemonError;
use crate::config::Config;
use crate::control::TableListener;
use crate::route::SubnetTable;
use crate::sys::key_file::read_key_file;
use crate::wireguard::{Limits, Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey, PublicKey};

/// This node's WireGuard identity, with the table's peers added; `None`
/// with the other backends. `owner` is the uid the daemon runs as once
/// set up: key files must belong to it.
pub fn start_node(config: &Config, owner: u32, tun_mtu: u32, table: &SubnetTable) -> Result<Option<Arc<Node>>, DaemonError> {
    let Some(wg) = &config.wireguard else { return Ok(None) };
    let bytes = read_key_file(&wg.private_key_file, owner)
        .map_err(|e| DaemonError::Config(format!("{}: [node] private_key_file: {e}", config.path.display())))?;
    let node_config = NodeConfig { private_key: PrivateKey::from_bytes(*bytes), limits: Limits::default(), padding_mtu: tun_mtu as usize };
    let node = Arc::new(Node::new(node_config, Instant::now(), SystemTime::now()));
    log::info!("wireguard: public key {}", node.public_key());
    sync_peers(&node, table, owner);
    Ok(Some(node))
}

/// The listener that keeps the node's peers equal to each published table's.
pub fn listener(node: Arc<Node>, owner: u32) -> TableListener {
    Box::new(move |table: &SubnetTable| sync_peers(&node, table, owner))
}

/// Adds the table's peers the node lacks and removes those the table no
/// longer names. A peer that cannot be added (its preshared key file
/// refused, its key our own or low-order) is logged and left out: its
/// packets are counted as `wg_no_session`.
fn sync_peers(node: &Node, table: &SubnetTable, owner: u32) {
    let wanted: BTreeSet<PublicKey> = table.routes().iter().filter_map(|r| r.public_key).collect();
    for peer in node.peers() {
        if !wanted.contains(peer.public_key()) {
            node.remove_peer(peer.public_key());
            log::info!("wireguard: peer {} removed", peer.public_key());
        }
    }
    for key in wanted {
        if node.peer(&key).is_some() {
            continue;
        }
        let mut peer = PeerConfig::new(key);
        if let Some(file) = table.preshared_key_file(&key) {
            match read_key_file(file, owner) {
                Ok(bytes) => peer.preshared_key = Some(PresharedKey::from_bytes(*bytes)),
                Err(e) => {
                    log::error!("wireguard: peer {key} left out: preshared_key_file: {e}");
                    continue;
                }
            }
        }
        match node.add_peer(peer, &mut OsRng) {
            Ok(_) => log::info!("wireguard: peer {key} added"),
            Err(e) => log::error!("wireguard: peer left out: {e}"),
        }
    }
}
