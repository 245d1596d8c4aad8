//! Readers never see a torn or freed table while a writer publishes
//! continuously: the replication scheme the workers use (an `ArcSwap` with a
//! per-reader `arc_swap::Cache`, through `TableReplica`) under real threads.
//!
//! Every published version `v` maps all of its prefixes to port `v`, and its
//! route count is a function of `v`; a reader checks, on each snapshot it
//! loads, that every route agrees with the snapshot's version (nothing torn),
//! that versions never go backwards, and at the end that every superseded
//! table was freed exactly once (nothing leaked, nothing freed early: a use
//! after free would read a wrong version or crash).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use encapd::route::{PeerSpec, Prefix, SubnetTable, TableReplica, TableScope};

fn table(version: u64) -> SubnetTable {
    let scope = TableScope { own: vec![], networks: vec!["100.64.0.0/10".parse().unwrap()], underlay_ipv4: true };
    let routes = 1 + (version % 50) as u32;
    let peers: Vec<PeerSpec> = (0..routes)
        .map(|i| PeerSpec {
            wireguard: None,
            vtep_mac: None,
            kernel_decap: false,
            subnet: Prefix::containing(IpAddr::from([100, 64 + (i / 256) as u8, (i % 256) as u8, 0]), 24).unwrap(),
            endpoint: SocketAddr::new(IpAddr::from([198, 18, 0, 2]), (version % 65_536) as u16),
            origin: String::new(),
        })
        .collect();
    SubnetTable::build(version, &scope, &peers).unwrap()
}

#[test]
fn readers_never_see_torn_or_freed_tables() {
    const VERSIONS: u64 = 20_000;
    let shared = Arc::new(ArcSwap::from_pointee(table(1)));
    let stop = Arc::new(AtomicBool::new(false));
    let loads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (shared, stop, loads) = (Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&loads));
            std::thread::spawn(move || {
                let mut replica = TableReplica::new(&shared);
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = replica.load();
                    let v = t.version();
                    assert!(v >= last, "version went backwards: {last} -> {v}");
                    last = v;
                    assert_eq!(t.len() as u64, 1 + v % 50, "route count of version {v}");
                    for r in t.routes() {
                        assert_eq!(u64::from(r.endpoint.port()), v % 65_536, "route of another version in table {v}");
                        let hit = t.lookup(r.subnet.network()).expect("own prefix found");
                        assert_eq!(hit.subnet, r.subnet);
                    }
                    loads.fetch_add(1, Ordering::Relaxed);
                }
                last
            })
        })
        .collect();
    // Keep a weak handle on every table to prove each one is freed.
    let mut weak = Vec::with_capacity(VERSIONS as usize);
    weak.push(Arc::downgrade(&shared.load_full()));
    for v in 2..=VERSIONS {
        let t = Arc::new(table(v));
        weak.push(Arc::downgrade(&t));
        shared.store(t);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let last = r.join().expect("reader thread panicked");
        assert!(last <= VERSIONS);
    }
    assert!(loads.load(Ordering::Relaxed) > 0, "readers ran");
    // The readers' caches are gone; only the current table may be alive.
    let alive: Vec<usize> = weak.iter().enumerate().filter(|(_, w)| w.strong_count() > 0).map(|(i, _)| i + 1).collect();
    assert_eq!(alive, vec![VERSIONS as usize], "exactly the published table is alive; the rest were freed");
}
