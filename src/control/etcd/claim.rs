//! Start-up with etcd: read flannel's network config, reconcile it with the
//! config file, and claim this node's subnet — the configured one, else the
//! one remembered in the state file, else the one etcd still holds for our
//! public IP, else a random free one between SubnetMin and SubnetMax — in a
//! transaction guarded by `Version(key) == 0` (or the lease's own revision,
//! when taking over our own lease) with a lease of `lease_ttl`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::client::{EtcdError, Listed, list_subnets, op};
use crate::config::{Backend, EtcdSource};
use crate::control::flannel::{self, FlannelBackend, NetworkConfig};
use crate::route::Prefix;
use crate::wire::vxlan::Mac;

/// The state file in `[control] state_dir`.
pub const STATE_FILE: &str = "encapd-etcd-lease.json";
/// Attempts at claiming before giving up (another node won every race).
const CLAIM_RACES: usize = 5;

/// Why a claim failed: the configuration disagrees with etcd (fatal), or
/// etcd did not answer (retried).
#[derive(Debug)]
pub enum ClaimError {
    Config(String),
    Etcd(EtcdError),
}

impl From<EtcdError> for ClaimError {
    fn from(e: EtcdError) -> Self {
        ClaimError::Etcd(e)
    }
}

/// Who holds a lease: this node's public IP, for vxlan its VTEP MAC, and
/// whether it decapsulates in its kernel (`kernel_path = "tc"`).
#[derive(Debug, Clone, Copy)]
pub struct LeaseHolder {
    pub public_ip: IpAddr,
    pub vtep_mac: Option<Mac>,
    pub kernel_decap: bool,
}

impl LeaseHolder {
    /// The lease value this holder writes in `network`.
    pub fn lease_value(&self, network: &NetworkConfig) -> String {
        flannel::lease_value(self.public_ip, network.backend, self.vtep_mac, self.kernel_decap)
    }
}

/// What a successful claim holds.
pub struct Claimed {
    pub subnet: Prefix,
    pub lease_id: i64,
    /// The revision the leases were listed at, and the listing.
    pub revision: i64,
    pub listed: Vec<Listed>,
    /// When the lease is due for renewal, from now.
    pub renew_in: Duration,
    /// Carried over from the process this one took over from (not claimed).
    pub adopted: bool,
}

/// The lease a predecessor held for this node's subnet (see
/// [`adopt_lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandedLease {
    pub subnet: Prefix,
    pub lease_id: i64,
}

/// Reads `<prefix>/config` and checks it against what the config file
/// says (`ours`: its backend). `Ok(None)`: the key does not exist (yet).
pub async fn read_network_config(
    client: &mut Client,
    src: &EtcdSource,
    ours: &Backend,
    file: &str,
) -> Result<Option<NetworkConfig>, ClaimError> {
    let config_key = format!("{}/config", src.prefix);
    let resp = op("reading the network config", client.get(config_key.as_str(), None)).await?;
    let Some(kv) = resp.kvs().first() else { return Ok(None) };
    let text = String::from_utf8_lossy(kv.value()).into_owned();
    let network = NetworkConfig::parse(&text).map_err(|e| ClaimError::Config(format!("etcd {config_key}: {e}")))?;
    if let Some(given) = src.given_cidr
        && given != network.network
    {
        return Err(ClaimError::Config(format!(
            "{file}: [network] cidr = {given}: differs from Network {} in etcd {config_key} (leave cidr out to take etcd's)",
            network.network
        )));
    }
    if let Some(given) = src.given_port
        && given != network.port
    {
        return Err(ClaimError::Config(format!(
            "{file}: [network] port = {given}: differs from Backend.Port {} in etcd {config_key} (leave port out to take etcd's)",
            network.port
        )));
    }
    if network.backend.name() != ours.name() {
        return Err(ClaimError::Config(format!(
            "{file}: [network] backend = {:?}: etcd {config_key} has Backend.Type {:?}; a node of one backend cannot talk to the others",
            ours.name(),
            network.backend.name()
        )));
    }
    if let (FlannelBackend::Vxlan { vni }, Some(given)) = (network.backend, src.given_vni)
        && vni != given
    {
        return Err(ClaimError::Config(format!(
            "{file}: [network] vni = {given}: differs from Backend.VNI {vni} in etcd {config_key} (leave vni out to take etcd's)"
        )));
    }
    Ok(Some(network))
}

/// Claims this node's subnet (see the module documentation).
pub async fn claim_lease(
    client: &mut Client,
    src: &EtcdSource,
    network: &NetworkConfig,
    node: &LeaseHolder,
    file: &str,
) -> Result<Claimed, ClaimError> {
    let public_ip = node.public_ip;
    let subnets_prefix = format!("{}/subnets/", src.prefix);
    let remembered = read_state(&src.state_dir, &network.network);
    for _race in 0..CLAIM_RACES {
        let (revision, listed) = list_subnets(client, &subnets_prefix).await?;
        let held: HashMap<Prefix, (&Listed, Option<IpAddr>)> =
            listed.iter().filter_map(|l| flannel::parse_lease_name(&l.name).ok().map(|(p, _)| (p, (l, holder(&l.value))))).collect();
        let subnet = choose_subnet(src, network, &held, remembered, public_ip, file)?;
        let key = format!("{subnets_prefix}{}", flannel::lease_name(&subnet));
        let value = node.lease_value(network);
        let guard = match held.get(&subnet) {
            Some((l, _)) => Compare::mod_revision(key.as_str(), CompareOp::Equal, l.mod_revision),
            None => Compare::version(key.as_str(), CompareOp::Equal, 0),
        };
        let lease = op("granting a lease", client.lease_grant(src.lease_ttl.as_secs() as i64, None)).await?;
        let txn =
            Txn::new().when([guard]).and_then([TxnOp::put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease.id())))]);
        if op("claiming the subnet", client.txn(txn)).await?.succeeded() {
            let renew_in = src.lease_ttl.saturating_sub(src.renew_margin);
            return Ok(Claimed { subnet, lease_id: lease.id(), revision, listed, renew_in, adopted: false });
        }
        log::info!("etcd: {key} was claimed by another node first; choosing again");
        let _ = op("revoking an unused lease", client.lease_revoke(lease.id())).await;
    }
    Err(ClaimError::Etcd(EtcdError::LostRace(CLAIM_RACES)))
}

/// Carries on with the lease a predecessor held, without claiming
/// anything: the subnet's key must still hold exactly the value this node
/// writes, and the lease is the one the key is on now (the predecessor may
/// have renewed it since it told us). Its renewal is due `renew_margin`
/// before the TTL etcd reports. `Ok(None)`: the key is gone or no longer
/// ours, and the caller claims the subnet instead.
pub async fn adopt_lease(
    client: &mut Client,
    src: &EtcdSource,
    network: &NetworkConfig,
    node: &LeaseHolder,
    handed: HandedLease,
) -> Result<Option<Claimed>, ClaimError> {
    let subnets_prefix = format!("{}/subnets/", src.prefix);
    let (revision, listed) = list_subnets(client, &subnets_prefix).await?;
    let name = flannel::lease_name(&handed.subnet);
    let value = node.lease_value(network);
    let Some(own) = listed.iter().find(|l| l.name == name && l.value == value.as_bytes() && l.lease != 0) else { return Ok(None) };
    let lease_id = own.lease;
    if lease_id != handed.lease_id {
        log::info!(
            "etcd: the lease on {} is {lease_id:x} now (the previous process said {:x}); carrying on with {lease_id:x}",
            handed.subnet,
            handed.lease_id
        );
    }
    let ttl = op("reading the lease's time to live", client.lease_time_to_live(lease_id, None)).await?.ttl();
    let remaining = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    let renew_in = remaining.saturating_sub(src.renew_margin);
    Ok(Some(Claimed { subnet: handed.subnet, lease_id, revision, listed, renew_in, adopted: true }))
}

/// Which subnet to claim, given who holds what.
fn choose_subnet(
    src: &EtcdSource,
    network: &NetworkConfig,
    held: &HashMap<Prefix, (&Listed, Option<IpAddr>)>,
    remembered: Option<Prefix>,
    public_ip: IpAddr,
    file: &str,
) -> Result<Prefix, ClaimError> {
    let ours = |p: &Prefix| held.get(p).is_some_and(|(_, ip)| *ip == Some(public_ip));
    let free = |p: &Prefix| !held.keys().any(|h| h.overlaps(p)) || ours(p);
    if let Some(given) = src.given_subnet {
        if !network.network.covers(&given) || network.network == given {
            return Err(ClaimError::Config(format!(
                "{file}: [node] subnet = {given}: must lie inside Network {} from etcd",
                network.network
            )));
        }
        if !free(&given) {
            let who = held.get(&given).and_then(|(_, ip)| *ip).map(|ip| ip.to_string()).unwrap_or_else(|| "another lease".into());
            return Err(ClaimError::Config(format!("{file}: [node] subnet = {given}: already leased in etcd to {who}")));
        }
        return Ok(given);
    }
    if let Some(r) = remembered.filter(|r| network.network.covers(r) && free(r)) {
        return Ok(r);
    }
    if let Some(p) = held.iter().filter(|(_, (_, ip))| *ip == Some(public_ip)).map(|(p, _)| *p).find(|p| network.allocatable(p)) {
        return Ok(p);
    }
    let taken: Vec<Prefix> = held.keys().copied().collect();
    network.allocate(&taken, random_u64()).ok_or_else(|| {
        ClaimError::Config(format!(
            "etcd: no free /{} subnet left in Network {} between SubnetMin and SubnetMax",
            network.subnet_len, network.network
        ))
    })
}

/// Whose a listed lease is: ours (same PublicIP), another node's, or unreadable.
fn holder(value: &[u8]) -> Option<IpAddr> {
    flannel::parse_lease_value(value).ok().map(|a| IpAddr::V4(a.public_ip)).or_else(|| {
        // A lease of another backend still names its holder.
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        v.get("PublicIP")?.as_str()?.parse().ok()
    })
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf)).is_ok() {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// The subnet this node held last time, if the state file names one in `network`.
fn read_state(dir: &Path, network: &Prefix) -> Option<Prefix> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let net: Prefix = v.get("Network")?.as_str()?.parse().ok()?;
    let subnet: Prefix = v.get("Subnet")?.as_str()?.parse().ok()?;
    (net == *network).then_some(subnet)
}

/// Remembers the subnet held, so a restart claims it again.
pub fn write_state(dir: &Path, network: &Prefix, subnet: &Prefix) {
    let text = format!("{{\"Network\":\"{network}\",\"Subnet\":\"{subnet}\"}}\n");
    if let Err(e) = super::write_atomically(&dir.join(STATE_FILE), &text) {
        log::warn!("cannot remember the subnet in {}: {e}", dir.join(STATE_FILE).display());
    }
}
