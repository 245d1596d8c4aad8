//! Talking to etcd: a [`Connector`] that tries the endpoints in turn with
//! the TLS and credentials read at start-up, one bound on every request
//! ([`op`]), the lease listing, and the typed errors all of it reports.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::config::EtcdSource;
use crate::route::Prefix;

/// Bound on every single etcd request.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to etcd. Each message names the endpoint or the
/// request, so a log line says where to look.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{endpoint}: {source}")]
    Connect { endpoint: String, source: etcd_client::Error },
    #[error("{endpoint}: connect timed out")]
    ConnectTimeout { endpoint: String },
    #[error("{what}: {source}")]
    Request { what: &'static str, source: etcd_client::Error },
    #[error("{what}: timed out after {} s", OP_TIMEOUT.as_secs())]
    Timeout { what: &'static str },
    #[error("[control] {key} = {path:?}: cannot read: {source}")]
    TlsFile { key: &'static str, path: String, source: std::io::Error },
    #[error("{key} now belongs to another node; this node keeps forwarding for {subnet} but must be restarted to get a new subnet")]
    LeaseTaken { key: String, subnet: Prefix },
    #[error("lost the race for a subnet {0} times in a row")]
    LostRace(usize),
    #[error("the watch answered nothing for {0} s")]
    WatchSilent(u64),
    #[error("the watch stream ended")]
    WatchEnded,
    #[error("watch canceled by the server: {0}")]
    WatchCanceled(String),
    #[error("watch: {0}")]
    Watch(etcd_client::Error),
}

/// Everything needed to open a client, read while still privileged (the
/// TLS key may be readable by root only).
#[derive(Clone)]
pub struct Connector {
    pub endpoints: Vec<String>,
    options: ConnectOptions,
    next: usize,
}

impl Connector {
    pub fn new(src: &EtcdSource) -> Result<Connector, EtcdError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let (Some(u), Some(p)) = (&src.username, &src.password) {
            options = options.with_user(u.clone(), p.clone());
        }
        if let Some(ca) = &src.ca {
            let read = |p: &Path, key: &'static str| {
                std::fs::read(p).map_err(|source| EtcdError::TlsFile { key, path: p.display().to_string(), source })
            };
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(ca, "ca")?));
            if let (Some(cert), Some(key)) = (&src.cert, &src.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
            }
            options = options.with_tls(tls);
        }
        Ok(Connector { endpoints: src.endpoints.clone(), options, next: 0 })
    }

    /// A client for the next endpoint in turn (connections are lazy: the
    /// first request tells whether it works).
    pub async fn connect(&mut self) -> Result<(Client, String), EtcdError> {
        let endpoint = self.endpoints[self.next % self.endpoints.len()].clone();
        self.next = (self.next + 1) % self.endpoints.len();
        match tokio::time::timeout(OP_TIMEOUT, Client::connect([endpoint.as_str()], Some(self.options.clone()))).await {
            Ok(Ok(c)) => Ok((c, endpoint)),
            Ok(Err(source)) => Err(EtcdError::Connect { endpoint, source }),
            Err(_) => Err(EtcdError::ConnectTimeout { endpoint }),
        }
    }
}

/// Runs one etcd request with [`OP_TIMEOUT`].
pub async fn op<T>(what: &'static str, f: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T, EtcdError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(EtcdError::Request { what, source }),
        Err(_) => Err(EtcdError::Timeout { what }),
    }
}

/// One lease as listed: key name (after `<prefix>/subnets/`), value, revision.
pub struct Listed {
    pub name: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// The etcd lease the key is attached to (0: none).
    pub lease: i64,
}

/// Every lease under `subnets_prefix`, and the revision they were read at.
pub async fn list_subnets(client: &mut Client, subnets_prefix: &str) -> Result<(i64, Vec<Listed>), EtcdError> {
    let resp = op("listing leases", client.get(subnets_prefix, Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let listed = resp
        .kvs()
        .iter()
        .map(|kv| Listed {
            name: String::from_utf8_lossy(&kv.key()[subnets_prefix.len().min(kv.key().len())..]).into_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
        .collect();
    Ok((revision, listed))
}
