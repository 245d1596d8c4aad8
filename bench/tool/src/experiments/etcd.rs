//! `encapd-bench etcd-propagation`: the etcd control plane's speed. One
//! encapd on nodeA with flannel's lease store in a real etcd (one member,
//! in nodeA's namespace) as its control source:
//! - put → table published: the time from an etcd put of a lease until
//!   encapd's `/metrics` shows a newer `encapd_table_version`, over
//!   `--puts` puts (median, p99, max), each put made with an etcd client
//!   inside the namespace;
//! - start-up: with `--leases` leases in etcd, the time from spawning
//!   encapd until it forwards, and until `/metrics` shows all of them as
//!   routes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use encapd_testbed::cmd::{TempDir, wait_for};
use encapd_testbed::counters::{METRICS, metric_value};
use encapd_testbed::etcd::EtcdCluster;
use encapd_testbed::instance::Encapd;
use encapd_testbed::netns::in_netns;
use encapd_testbed::wiring::{NODE_A_UNDERLAY, Wiring};

use super::setup;
use crate::run::info;

#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// Puts whose propagation is timed.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub puts: u64,
    /// Leases in etcd for the start-up measurement (at least --puts).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub leases: u64,
    /// Do not run `cargo build --release` first.
    #[arg(long)]
    pub no_build: bool,
}

const PREFIX: &str = "/coreos.com/network";
const READY: Duration = Duration::from_secs(20);

/// A flannel udp lease of a node at `ip`.
fn udp_lease(ip: &str) -> String {
    format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null}}"#)
}

/// The key of lease `i` (100.64.0.0/10, /24 subnets from 100.64.1.0).
fn lease_key(i: u64) -> String {
    format!("{PREFIX}/subnets/100.{}.{}.0-24", 64 + (i + 1) / 256, (i + 1) % 256)
}

/// `/metrics`' value of `name` from inside the namespace (0 when absent).
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = encapd::stats::scrape::fetch(addr).unwrap_or_default();
    metric_value(&text, name).unwrap_or(0.0)
}

fn quantile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn main(a: EtcdArgs) -> Result<(), String> {
    if a.leases < a.puts {
        return Err("--leases must be at least --puts".into());
    }
    let s = setup(&["@run", "etcd-server", "etcd-client"], a.no_build)?;
    let wiring = Wiring::build(false, false);
    let ns = wiring.node_a.clone();
    let dir = TempDir::new("etcd-propagation");
    let etcd = EtcdCluster::start(&ns, NODE_A_UNDERLAY, 1);
    etcd.etcdctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"100.64.0.0/10","Backend":{"Type":"udp"}}"#]);
    let endpoint = etcd.endpoint(0);
    let config = format!(
        "[node]\npublic_ip = \"{NODE_A_UNDERLAY}\"\nsubnet = \"100.64.0.0/24\"\n\n[dataplane]\nworkers = 1\n\n\
         [control]\nsource = \"etcd\"\nendpoints = [\"{endpoint}\"]\nstate_dir = \"state\"\nsubnet_env = \"subnet.env\"\n\n\
         [metrics]\nlisten = \"{METRICS}\"\n\n[process]\ncontrol_socket = \"encapd.sock\"\n"
    );
    let config_path = dir.write("encapd.toml", &config);
    let log = dir.path().join("encapd.log");
    let start = |what: &str| -> Result<Encapd, String> {
        let mut d = Encapd::spawn_with(&ns, &s.encapd, &[], &config_path, &log, &[]);
        let ok = wait_for(READY, || (d.is_ready() || d.exited().is_some()).then_some(()));
        if ok.is_none() || !d.is_ready() {
            return Err(format!("encapd ({what}) not ready within {READY:?}:\n{}", d.log()));
        }
        Ok(d)
    };
    let daemon = start("first start")?;
    let addr: SocketAddr = METRICS.parse().expect("a socket address");
    let puts = a.puts;
    let mut lat = in_netns(&ns, || -> Result<Vec<Duration>, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await.map_err(|e| format!("etcd: {e}"))?;
            let mut lat = Vec::with_capacity(puts as usize);
            for i in 0..puts {
                let before = metric(addr, "encapd_table_version");
                let t0 = Instant::now();
                client.put(lease_key(i), udp_lease("198.18.0.2"), None).await.map_err(|e| format!("put {i}: {e}"))?;
                while metric(addr, "encapd_table_version") <= before {
                    if t0.elapsed() > Duration::from_secs(5) {
                        return Err(format!("put {i} not applied within 5 s"));
                    }
                }
                lat.push(t0.elapsed());
            }
            Ok(lat)
        })
    })?;
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "etcd put -> table published ({} puts): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99)),
        ms(lat[lat.len() - 1])
    );

    // Start-up with the leases present.
    let _ = daemon.try_stop();
    let total = a.leases;
    in_netns(&ns, || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await.map_err(|e| format!("etcd: {e}"))?;
            for chunk in (puts..total).collect::<Vec<_>>().chunks(100) {
                let ops: Vec<etcd_client::TxnOp> =
                    chunk.iter().map(|&i| etcd_client::TxnOp::put(lease_key(i), udp_lease("198.18.0.2"), None)).collect();
                client.txn(etcd_client::Txn::new().and_then(ops)).await.map_err(|e| format!("txn: {e}"))?;
            }
            Ok(())
        })
    })?;
    info(&format!("{total} leases in etcd; starting encapd"));
    let t0 = Instant::now();
    let daemon = start("with the leases")?;
    let ready_after = t0.elapsed();
    let routes = in_netns(&ns, || wait_for(Duration::from_secs(30), || (metric(addr, "encapd_routes") as u64 >= total).then_some(())));
    let loaded = t0.elapsed();
    let _ = daemon.try_stop();
    if routes.is_none() {
        return Err(format!("{total} leases not loaded within 30 s"));
    }
    println!(
        "start-up with {total} leases in etcd: ready (forwarding, table with all leases) after {:.0} ms; /metrics shows {total} routes after {:.0} ms",
        ms(ready_after),
        ms(loaded)
    );
    drop(etcd);
    drop(wiring);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_and_quantiles() {
        assert_eq!(lease_key(0), "/coreos.com/network/subnets/100.64.1.0-24");
        assert_eq!(lease_key(255), "/coreos.com/network/subnets/100.65.0.0-24");
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
    }
}
