//! Start-up with etcd: read flannel's network config, reconcile it with the
//! config file, and claim this node's subnet — the configured one, else the
//! one remembered in the state file, else the one etcd still holds for our
//! public IP, else a random free one between SubnetMin and SubnetMax — and,
//! in a dual-stack network, its IPv6 subnet by the same rules (the
//! configured `subnet6`, the one in our lease on that IPv4 subnet, the
//! remembered one, a free one), in a transaction guarded by
//! `Version(key) == 0` (or the lease's own revision, when taking over our
//! own lease) with a lease of `lease_ttl`. A lease of ours on the same IPv4
//! subnet under another key (IPv4 only, or another IPv6 subnet) is deleted
//! in the same transaction, as flanneld deletes a lease of its own that no
//! longer fits the config before it claims.

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
/// whether it decapsulates in its kernel (the kernel path is attached).
#[derive(Debug, Clone, Copy)]
pub struct LeaseHolder {
    pub public_ip: IpAddr,
    pub vtep_mac: Option<Mac>,
    /// This node's WireGuard public key (wireguard backend).
    pub public_key: Option<crate::wireguard::PublicKey>,
    pub kernel_decap: bool,
}

impl LeaseHolder {
    /// The lease value this holder writes in `network`.
    pub fn lease_value(&self, network: &NetworkConfig) -> String {
        match (network.backend, &self.public_key) {
            (FlannelBackend::WireGuard, Some(key)) => flannel::wireguard_lease_value(self.public_ip, key),
            _ => flannel::lease_value(self.public_ip, network.backend, self.vtep_mac, self.kernel_decap),
        }
    }

    /// Whether `value` is a lease value this holder writes, whatever it
    /// says about kernel decapsulation (which changes while it runs).
    fn wrote(&self, network: &NetworkConfig, value: &[u8]) -> bool {
        [false, true].iter().any(|&kernel_decap| LeaseHolder { kernel_decap, ..*self }.lease_value(network).as_bytes() == value)
    }
}

/// What a successful claim holds.
pub struct Claimed {
    pub subnet: Prefix,
    /// The IPv6 subnet, in a dual-stack network.
    pub subnet6: Option<Prefix>,
    pub lease_id: i64,
    /// The revision the leases were listed at, and the listing (without a
    /// key of ours the claim deleted).
    pub revision: i64,
    pub listed: Vec<Listed>,
    /// When the lease is due for renewal, from now.
    pub renew_in: Duration,
    /// Carried over from the process this one took over from (not claimed).
    pub adopted: bool,
    /// The value the key holds now.
    pub written: String,
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
    check_network(&network, src, ours, file, &config_key).map_err(ClaimError::Config)?;
    Ok(Some(network))
}

/// What the config file gave must agree with etcd's network config.
fn check_network(network: &NetworkConfig, src: &EtcdSource, ours: &Backend, file: &str, config_key: &str) -> Result<(), String> {
    if let Some(given) = src.given_cidr
        && given != network.network()
    {
        return Err(format!(
            "{file}: [network] cidr = {given}: differs from Network {} in etcd {config_key} (leave cidr out to take etcd's)",
            network.network()
        ));
    }
    match (network.network6(), src.given_cidr6, src.given_subnet6) {
        (Some(net6), Some(given), _) if given != net6 => {
            return Err(format!(
                "{file}: [network] cidr6 = {given}: differs from IPv6Network {net6} in etcd {config_key} (leave cidr6 out to take etcd's)"
            ));
        }
        (None, Some(given), _) => {
            return Err(format!(
                "{file}: [network] cidr6 = {given}: the network in etcd {config_key} has no IPv6 (EnableIPv6 is not true)"
            ));
        }
        (None, None, Some(given)) => {
            return Err(format!("{file}: [node] subnet6 = {given}: the network in etcd {config_key} has no IPv6 (EnableIPv6 is not true)"));
        }
        _ => {}
    }
    if let Some(given) = src.given_port
        && given != network.port
    {
        return Err(format!(
            "{file}: [network] port = {given}: differs from Backend.Port {} in etcd {config_key} (leave port out to take etcd's)",
            network.port
        ));
    }
    if network.backend.name() != ours.name() {
        return Err(format!(
            "{file}: [network] backend = {:?}: etcd {config_key} has Backend.Type {:?}; a node of one backend cannot talk to the others",
            ours.name(),
            network.backend.name()
        ));
    }
    if let (FlannelBackend::Vxlan { vni }, Some(given)) = (network.backend, src.given_vni)
        && vni != given
    {
        return Err(format!(
            "{file}: [network] vni = {given}: differs from Backend.VNI {vni} in etcd {config_key} (leave vni out to take etcd's)"
        ));
    }
    Ok(())
}

/// One listed lease, as the claim reads it.
struct Held<'a> {
    listed: &'a Listed,
    subnet: Prefix,
    subnet6: Option<Prefix>,
    /// The holder's PublicIP (of any backend), if the value names one.
    holder: Option<IpAddr>,
}

/// What to claim, given who holds what.
struct Choice<'a> {
    subnet: Prefix,
    subnet6: Option<Prefix>,
    /// Our lease on exactly this key: claimed again in place.
    existing: Option<&'a Listed>,
    /// Our lease on the same IPv4 subnet under another key: replaced.
    replaces: Option<&'a Listed>,
}

/// Claims this node's subnet(s) (see the module documentation).
pub async fn claim_lease(
    client: &mut Client,
    src: &EtcdSource,
    network: &NetworkConfig,
    node: &LeaseHolder,
    file: &str,
) -> Result<Claimed, ClaimError> {
    let subnets_prefix = format!("{}/subnets/", src.prefix);
    let remembered = read_state(&src.state_dir, network);
    let value = node.lease_value(network);
    for _race in 0..CLAIM_RACES {
        let (revision, mut listed) = list_subnets(client, &subnets_prefix).await?;
        let held: Vec<Held<'_>> = listed
            .iter()
            .filter_map(|l| {
                let (subnet, subnet6) = flannel::parse_lease_name(&l.name).ok()?;
                Some(Held { listed: l, subnet, subnet6, holder: holder(&l.value) })
            })
            .collect();
        let choice = Chooser { src, network, held: &held, public_ip: node.public_ip, file }.choose(remembered)?;
        let (subnet, subnet6) = (choice.subnet, choice.subnet6);
        let key = format!("{subnets_prefix}{}", flannel::lease_name(&subnet, subnet6.as_ref()));
        let mut guards = vec![match choice.existing {
            Some(l) => Compare::mod_revision(key.as_str(), CompareOp::Equal, l.mod_revision),
            None => Compare::version(key.as_str(), CompareOp::Equal, 0),
        }];
        let lease = op("granting a lease", client.lease_grant(src.lease_ttl.as_secs() as i64, None)).await?;
        let mut ops = vec![TxnOp::put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease.id())))];
        let replaced = choice.replaces.map(|l| (format!("{subnets_prefix}{}", l.name), l.name.clone(), l.mod_revision));
        if let Some((old_key, _, mod_revision)) = &replaced {
            guards.push(Compare::mod_revision(old_key.as_str(), CompareOp::Equal, *mod_revision));
            ops.push(TxnOp::delete(old_key.as_str(), None));
        }
        if op("claiming the subnet", client.txn(Txn::new().when(guards).and_then(ops))).await?.succeeded() {
            if let Some((old_key, name, _)) = replaced {
                log::info!("etcd: {key} replaces this node's lease {old_key}");
                listed.retain(|l| l.name != name);
            }
            let renew_in = src.lease_ttl.saturating_sub(src.renew_margin);
            return Ok(Claimed { subnet, subnet6, lease_id: lease.id(), revision, listed, renew_in, adopted: false, written: value });
        }
        log::info!("etcd: {key} was claimed by another node first; choosing again");
        let _ = op("revoking an unused lease", client.lease_revoke(lease.id())).await;
    }
    Err(ClaimError::Etcd(EtcdError::LostRace(CLAIM_RACES)))
}

/// Carries on with the lease a predecessor held, without claiming
/// anything: a key on the handed-over IPv4 subnet must still hold a value
/// this node writes (whatever it says about kernel decapsulation), its
/// IPv6 part must fit the network (present and inside it when dual-stack,
/// absent otherwise), and the lease is the one the key is on now (the
/// predecessor may have renewed it since it told us). Its renewal is due
/// `renew_margin` before the TTL etcd reports. `Ok(None)`: the key is gone
/// or no longer ours, and the caller claims the subnet instead.
pub async fn adopt_lease(
    client: &mut Client,
    src: &EtcdSource,
    network: &NetworkConfig,
    node: &LeaseHolder,
    handed: HandedLease,
) -> Result<Option<Claimed>, ClaimError> {
    let subnets_prefix = format!("{}/subnets/", src.prefix);
    let (revision, listed) = list_subnets(client, &subnets_prefix).await?;
    let fits = |subnet6: Option<Prefix>| match (network.network6(), subnet6) {
        (Some(net6), Some(s6)) => net6.covers(&s6) && net6 != s6,
        (None, None) => true,
        _ => false,
    };
    let own = listed.iter().find_map(|l| {
        let (subnet, subnet6) = flannel::parse_lease_name(&l.name).ok()?;
        (subnet == handed.subnet && fits(subnet6) && l.lease != 0 && node.wrote(network, &l.value)).then_some((l, subnet6))
    });
    let Some((own, subnet6)) = own else { return Ok(None) };
    let lease_id = own.lease;
    if lease_id != handed.lease_id {
        log::info!(
            "etcd: the lease on {} is {lease_id:x} now (the previous process said {:x}); carrying on with {lease_id:x}",
            handed.subnet,
            handed.lease_id
        );
    }
    let written = String::from_utf8_lossy(&own.value).into_owned();
    let ttl = op("reading the lease's time to live", client.lease_time_to_live(lease_id, None)).await?.ttl();
    let remaining = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    let renew_in = remaining.saturating_sub(src.renew_margin);
    Ok(Some(Claimed { subnet: handed.subnet, subnet6, lease_id, revision, listed, renew_in, adopted: true, written }))
}

/// Chooses the subnets to claim from the listed leases.
struct Chooser<'a, 'l> {
    src: &'a EtcdSource,
    network: &'a NetworkConfig,
    held: &'a [Held<'l>],
    public_ip: IpAddr,
    file: &'a str,
}

impl<'l> Chooser<'_, 'l> {
    fn ours(&self, h: &Held<'_>) -> bool {
        h.holder == Some(self.public_ip)
    }

    /// Free for us: every lease it overlaps is ours.
    fn free(&self, p: &Prefix) -> bool {
        self.held.iter().filter(|h| h.subnet.overlaps(p)).all(|h| self.ours(h))
    }

    fn choose(&self, remembered: (Option<Prefix>, Option<Prefix>)) -> Result<Choice<'l>, ClaimError> {
        let subnet = self.choose_ipv4(remembered.0)?;
        let subnet6 = match self.network.ipv6 {
            Some(_) => Some(self.choose_ipv6(&subnet, remembered.1)?),
            None => None,
        };
        let name = flannel::lease_name(&subnet, subnet6.as_ref());
        let existing = self.held.iter().find(|h| h.listed.name == name).map(|h| h.listed);
        let replaces =
            self.held.iter().find(|h| self.ours(h) && h.subnet == subnet && h.listed.name != name && h.listed.lease != 0).map(|h| h.listed);
        Ok(Choice { subnet, subnet6, existing, replaces })
    }

    fn choose_ipv4(&self, remembered: Option<Prefix>) -> Result<Prefix, ClaimError> {
        let network = self.network.network();
        if let Some(given) = self.src.given_subnet {
            if !network.covers(&given) || network == given {
                return Err(ClaimError::Config(format!(
                    "{}: [node] subnet = {given}: must lie inside Network {network} from etcd",
                    self.file
                )));
            }
            if !self.free(&given) {
                let who = self.held.iter().find(|h| h.subnet.overlaps(&given) && !self.ours(h)).and_then(|h| h.holder);
                let who = who.map_or_else(|| "another lease".to_owned(), |ip| ip.to_string());
                return Err(ClaimError::Config(format!("{}: [node] subnet = {given}: already leased in etcd to {who}", self.file)));
            }
            return Ok(given);
        }
        if let Some(r) = remembered.filter(|r| network.covers(r) && *r != network && self.free(r)) {
            return Ok(r);
        }
        // Ours, preferring a lease whose IPv6 part already fits.
        let reusable = self.held.iter().filter(|h| self.ours(h) && self.network.ipv4.allocatable(&h.subnet));
        if let Some(h) = reusable.min_by_key(|h| !self.ipv6_fits(h)) {
            return Ok(h.subnet);
        }
        let taken: Vec<Prefix> = self.held.iter().map(|h| h.subnet).collect();
        self.network.ipv4.allocate(&taken, random_u64()).ok_or_else(|| {
            ClaimError::Config(format!(
                "etcd: no free /{} subnet left in Network {network} between SubnetMin and SubnetMax",
                self.network.ipv4.subnet_len
            ))
        })
    }

    /// Whether a lease's IPv6 part is what this network would keep: one
    /// flanneld would reuse when dual-stack (`isIPv6SubnetConfigCompat`),
    /// none otherwise.
    fn ipv6_fits(&self, h: &Held<'_>) -> bool {
        match (self.network.ipv6, h.subnet6) {
            (Some(r), Some(s6)) => r.allocatable(&s6),
            (None, None) => true,
            _ => false,
        }
    }

    /// The IPv6 subnet to pair with `subnet` in a dual-stack network.
    fn choose_ipv6(&self, subnet: &Prefix, remembered: Option<Prefix>) -> Result<Prefix, ClaimError> {
        let range = self.network.ipv6.expect("a dual-stack network");
        let network6 = range.network;
        // Our leases on the chosen IPv4 subnet are claimed again or
        // replaced: their IPv6 subnets do not count as taken.
        let taken: Vec<Prefix> = self.held.iter().filter(|h| !(self.ours(h) && h.subnet == *subnet)).filter_map(|h| h.subnet6).collect();
        let free = |p: &Prefix| !taken.iter().any(|t| t.overlaps(p));
        if let Some(given) = self.src.given_subnet6 {
            if !network6.covers(&given) || network6 == given {
                return Err(ClaimError::Config(format!(
                    "{}: [node] subnet6 = {given}: must lie inside IPv6Network {network6} from etcd",
                    self.file
                )));
            }
            if !free(&given) {
                let who =
                    self.held.iter().find(|h| h.subnet6.is_some_and(|s6| s6.overlaps(&given)) && !self.ours(h)).and_then(|h| h.holder);
                let who = who.map_or_else(|| "another lease".to_owned(), |ip| ip.to_string());
                return Err(ClaimError::Config(format!("{}: [node] subnet6 = {given}: already leased in etcd to {who}", self.file)));
            }
            return Ok(given);
        }
        let mut ours_on_subnet = self.held.iter().filter(|h| self.ours(h) && h.subnet == *subnet).filter_map(|h| h.subnet6);
        if let Some(s6) = ours_on_subnet.find(|s6| range.allocatable(s6) && free(s6)) {
            return Ok(s6);
        }
        if let Some(r) = remembered.filter(|r| network6.covers(r) && *r != network6 && free(r)) {
            return Ok(r);
        }
        range.allocate(&taken, random_u64()).ok_or_else(|| {
            ClaimError::Config(format!(
                "etcd: no free /{} subnet left in IPv6Network {network6} between IPv6SubnetMin and IPv6SubnetMax",
                range.subnet_len
            ))
        })
    }
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

/// The subnets this node held last time, if the state file names them in
/// `network`: the IPv4 one when `Network` is the same, the IPv6 one when
/// `IPv6Network` is too.
fn read_state(dir: &Path, network: &NetworkConfig) -> (Option<Prefix>, Option<Prefix>) {
    let Some(v) = std::fs::read_to_string(dir.join(STATE_FILE)).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return (None, None);
    };
    let prefix = |field: &str| v.get(field)?.as_str()?.parse::<Prefix>().ok();
    let subnet = prefix("Subnet").filter(|_| prefix("Network") == Some(network.network()));
    let subnet6 = prefix("IPv6Subnet").filter(|_| network.network6().is_some() && prefix("IPv6Network") == network.network6());
    (subnet, subnet6)
}

/// Remembers the subnets held, so a restart claims them again.
pub fn write_state(dir: &Path, network: &NetworkConfig, subnet: &Prefix, subnet6: Option<&Prefix>) {
    let v6 = match (network.network6(), subnet6) {
        (Some(n6), Some(s6)) => format!(",\"IPv6Network\":\"{n6}\",\"IPv6Subnet\":\"{s6}\""),
        _ => String::new(),
    };
    let text = format!("{{\"Network\":\"{}\",\"Subnet\":\"{subnet}\"{v6}}}\n", network.network());
    if let Err(e) = super::write_atomically(&dir.join(STATE_FILE), &text) {
        log::warn!("cannot remember the subnet in {}: {e}", dir.join(STATE_FILE).display());
    }
}
