//! The etcd thread's work after start-up: watch `<prefix>/subnets` from the
//! listed revision + 1 and turn every response into one
//! [`Command::ApplyPeers`] for the control thread (still the only table
//! writer); renew this node's lease `renew_margin` before expiry (fresh
//! grant + put, as flanneld), and at once when its value changed (the
//! kernel path was attached after the claim: `EncapdKernelDecap`); list
//! again after a compaction; on any failure mark the source unhealthy,
//! keep the last table and retry with capped backoff across every
//! endpoint, resuming from the last revision seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions, WatchResponse};

use super::client::{Connector, EtcdError, list_subnets, op};
use super::leases::Leases;
use super::{BACKOFF_MAX, BACKOFF_MIN, Bootstrap, LOG_EVERY, OwnLease, PROBE_EVERY};
use crate::config::EtcdSource;
use crate::control::flannel;
use crate::control::{Command, ControlCounters, PeerChange};
use crate::route::Prefix;

/// How a watch session ended.
enum WatchEnd {
    /// The watched revision was compacted: list again.
    Relist,
    /// The connection failed: reconnect and resume.
    Failed(EtcdError),
}

pub struct Watcher {
    connector: Connector,
    src: EtcdSource,
    subnet: Prefix,
    own_key: String,
    /// The value this node's lease should hold.
    own_value: String,
    /// The value it holds in etcd (guards the renewal).
    written: String,
    lease_id: i64,
    renew_at: Instant,
    leases: Leases,
    /// Last revision applied.
    revision: i64,
    commands: Sender<Command>,
    counters: Arc<ControlCounters>,
    stopping: Arc<AtomicBool>,
    /// The lease as a successor would be told it.
    own_lease: Arc<OwnLease>,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Watcher {
    pub fn new(
        boot: Bootstrap,
        src: EtcdSource,
        commands: Sender<Command>,
        counters: Arc<ControlCounters>,
        stopping: Arc<AtomicBool>,
        own_lease: Arc<OwnLease>,
    ) -> Watcher {
        let own_key = format!("{}/subnets/{}", src.prefix, flannel::lease_name(&boot.subnet, boot.subnet6.as_ref()));
        let own_value = boot.holder.lease_value(&boot.network);
        // A value to change is written with the first renewal, due now.
        let renew_at = if own_value == boot.written { boot.renew_at } else { Instant::now() };
        Watcher {
            connector: boot.connector,
            subnet: boot.subnet,
            own_key,
            own_value,
            written: boot.written,
            lease_id: boot.lease_id,
            renew_at,
            leases: boot.leases,
            revision: boot.revision,
            src,
            commands,
            counters,
            stopping,
            own_lease,
            last_log: None,
            suppressed: 0,
        }
    }

    /// Logs a failure at most once per [`LOG_EVERY`], counting the rest.
    fn log_failure(&mut self, what: &str) {
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            let more = if self.suppressed > 0 { format!(" ({} similar messages suppressed)", self.suppressed) } else { String::new() };
            log::warn!("etcd: {what}; forwarding continues with table version as is, retrying{more}");
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    fn send(&self, changes: Vec<PeerChange>, why: String) {
        if !changes.is_empty() {
            let _ = self.commands.send(Command::ApplyPeers { changes, why });
        }
    }

    pub async fn run(&mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut relist = false;
        let mut failures_in_a_row = 0usize;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            let (mut client, endpoint) = match self.connector.connect().await {
                Ok(c) => c,
                Err(e) => {
                    self.fail(&e.to_string());
                    failures_in_a_row += 1;
                    self.pause(&mut backoff, failures_in_a_row).await;
                    continue;
                }
            };
            match self.session(&mut client, &endpoint, &mut relist).await {
                WatchEnd::Relist => {
                    relist = true;
                    backoff = BACKOFF_MIN;
                    failures_in_a_row = 0;
                }
                WatchEnd::Failed(e) => {
                    self.fail(&format!("{endpoint}: {e}"));
                    failures_in_a_row += 1;
                    self.pause(&mut backoff, failures_in_a_row).await;
                }
            }
        }
    }

    fn fail(&mut self, e: &str) {
        if self.counters.healthy.swap(false, Ordering::Relaxed) {
            // Always log the moment the connection is lost.
            self.last_log = None;
        }
        self.log_failure(&format!("disconnected: {e}"));
    }

    /// Backs off once every endpoint has been tried in this round.
    async fn pause(&mut self, backoff: &mut Duration, failures_in_a_row: usize) {
        if failures_in_a_row.is_multiple_of(self.connector.endpoints.len()) {
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connected session: (re-list if asked), watch, renew; returns when
    /// the watch must be re-created.
    async fn session(&mut self, client: &mut Client, endpoint: &str, relist: &mut bool) -> WatchEnd {
        let subnets_prefix = self.leases.subnets_prefix.clone();
        if *relist {
            match list_subnets(client, &subnets_prefix).await {
                Ok((revision, listed)) => {
                    let changes = self.leases.relist(&listed, Some(&self.counters));
                    self.send(changes, format!("etcd re-list at revision {revision}"));
                    self.revision = revision;
                    *relist = false;
                }
                Err(e) => return WatchEnd::Failed(e),
            }
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(self.revision + 1);
        let mut stream = match op("starting the watch", client.watch(subnets_prefix.as_str(), Some(options))).await {
            Ok(s) => s,
            Err(e) => return WatchEnd::Failed(e),
        };
        // A watch on a member can stall without an error (e.g. around a
        // leader change): ask for a progress notification now and then, and
        // treat a stream that answers nothing as dead.
        let mut probe = tokio::time::interval(PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_message = Instant::now();
        loop {
            let renew_in = self.renew_at.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = probe.tick() => {
                    if last_message.elapsed() > PROBE_EVERY * 2 {
                        return WatchEnd::Failed(EtcdError::WatchSilent(last_message.elapsed().as_secs()));
                    }
                    if let Err(e) = stream.request_progress().await {
                        return WatchEnd::Failed(EtcdError::Watch(e));
                    }
                }
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return WatchEnd::Failed(EtcdError::WatchEnded),
                        Err(e) => return WatchEnd::Failed(EtcdError::Watch(e)),
                    };
                    last_message = Instant::now();
                    if let Some(end) = self.apply(&resp, endpoint, &subnets_prefix) {
                        return end;
                    }
                }
                _ = tokio::time::sleep(renew_in) => {
                    if let Err(e) = self.renew(client).await {
                        // Try again soon; the watch keeps running.
                        self.renew_at = Instant::now() + Duration::from_secs(1);
                        self.log_failure(&format!("renewing the lease on {}: {e}", self.subnet));
                    }
                }
            }
        }
    }

    /// Applies one watch response: its lease changes become one table
    /// change. Returns how the session ends, if it must.
    fn apply(&mut self, resp: &WatchResponse, endpoint: &str, subnets_prefix: &str) -> Option<WatchEnd> {
        if resp.compact_revision() > 0 {
            log::warn!(
                "etcd: revision {} was compacted (oldest kept {}); listing the leases again",
                self.revision + 1,
                resp.compact_revision()
            );
            return Some(WatchEnd::Relist);
        }
        if resp.canceled() {
            return Some(WatchEnd::Failed(EtcdError::WatchCanceled(resp.cancel_reason().to_owned())));
        }
        if resp.created() && !self.counters.healthy.swap(true, Ordering::Relaxed) {
            log::info!("etcd {endpoint}: connected; watching {subnets_prefix} from revision {}", self.revision + 1);
            self.suppressed = 0;
        }
        let mut changes = Vec::new();
        let mut own_lost = false;
        let mut last = self.revision;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            last = last.max(kv.mod_revision());
            let Some(name) = self.leases.name_of(kv.key()).map(|n| n.into_owned()) else { continue };
            match ev.event_type() {
                EventType::Put => self.leases.put(&name, kv.value(), kv.mod_revision(), Some(&self.counters), &mut changes),
                EventType::Delete => {
                    own_lost |= name == self.leases.own_name;
                    self.leases.delete(&name, &mut changes);
                }
            }
        }
        let header_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        if !resp.events().is_empty() {
            self.revision = last.max(self.revision);
            let n = changes.len();
            self.send(changes, format!("etcd revision {}: {n} lease changes", self.revision));
        } else if header_rev > self.revision && !resp.created() {
            // Progress notification: every event up to header_rev has been sent.
            self.revision = header_rev;
        }
        if own_lost {
            log::warn!("etcd: this node's lease {} disappeared; claiming {} again", self.own_key, self.subnet);
            self.renew_at = Instant::now();
        }
        None
    }

    /// A fresh grant and a put of our key on it (with the value it should
    /// hold), guarded so that a subnet that another node took after ours
    /// expired is never overwritten.
    async fn renew(&mut self, client: &mut Client) -> Result<(), EtcdError> {
        let lease = op("granting a lease", client.lease_grant(self.src.lease_ttl.as_secs() as i64, None)).await?;
        let key = self.own_key.as_str();
        let put = TxnOp::put(key, self.own_value.as_str(), Some(PutOptions::new().with_lease(lease.id())));
        let ours = Txn::new().when([Compare::value(key, CompareOp::Equal, self.written.as_str())]).and_then([put.clone()]);
        let mut ok = op("renewing the lease", client.txn(ours)).await?.succeeded();
        if !ok {
            let absent = Txn::new().when([Compare::version(key, CompareOp::Equal, 0)]).and_then([put]);
            ok = op("claiming the subnet again", client.txn(absent)).await?.succeeded();
        }
        if !ok {
            let _ = op("revoking an unused lease", client.lease_revoke(lease.id())).await;
            return Err(EtcdError::LeaseTaken { key: key.to_owned(), subnet: self.subnet });
        }
        let old = std::mem::replace(&mut self.lease_id, lease.id());
        let _ = op("revoking the old lease", client.lease_revoke(old)).await;
        self.renew_at = Instant::now() + self.src.lease_ttl.saturating_sub(self.src.renew_margin);
        self.own_lease.set(self.lease_id, self.renew_at);
        if self.written != self.own_value {
            log::info!("etcd: lease {} now reads {}", self.own_key, self.own_value);
            self.written = self.own_value.clone();
        }
        log::info!("etcd: lease on {} renewed (lease {:x}, ttl {} s)", self.subnet, self.lease_id, self.src.lease_ttl.as_secs());
        Ok(())
    }
}
