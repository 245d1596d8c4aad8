//! Subnet-table benchmarks (criterion): longest-prefix lookup with 10 to
//! 100,000 peers (all /24, and mixed lengths /16../28), and the time to build
//! and publish a 10,000-peer table. Run: `cargo bench --bench table`.
//! The table's approximate memory is printed once per size.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use encapd::route::{PeerSpec, Prefix, SubnetTable, TableScope};

/// A deterministic pseudo-random sequence (xorshift), so runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn scope() -> TableScope {
    TableScope { own: vec![], networks: vec!["0.0.0.0/0".parse().unwrap()], underlay_ipv4: true }
}

/// `n` distinct prefixes inside 10.0.0.0/7: all /24, or lengths 16..=28.
fn peers(n: usize, mixed: bool) -> Vec<PeerSpec> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = if mixed { 16 + (rng.next() % 13) as u8 } else { 24 };
        let addr = (10u32 << 24) | (rng.next() as u32 & 0x01ff_ffff);
        let subnet = Prefix::containing(IpAddr::from(addr.to_be_bytes()), len).unwrap();
        if seen.insert(subnet) {
            let i = out.len() as u32;
            out.push(PeerSpec {
                wireguard: None,
                vtep_mac: None,
                kernel_decap: false,
                subnet,
                endpoint: SocketAddr::new(IpAddr::from([198, 18, (i >> 8) as u8, i as u8]), 8285),
                origin: String::new(),
            });
        }
    }
    out
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for &n in &[10usize, 1_000, 10_000, 100_000] {
        for mixed in [false, true] {
            let ps = peers(n, mixed);
            let table = SubnetTable::build(1, &scope(), &ps).unwrap();
            if !mixed {
                println!("table of {n} /24 peers: ~{} KiB", table.approx_bytes() / 1024);
            }
            // Probe addresses: half inside random peer prefixes, half random.
            let mut rng = Rng(42);
            let probes: Vec<IpAddr> = (0..4096)
                .map(|i| {
                    if i % 2 == 0 {
                        let p = &ps[(rng.next() as usize) % ps.len()];
                        let IpAddr::V4(net) = p.subnet.network() else { unreachable!() };
                        IpAddr::from((u32::from(net) | (rng.next() as u32 & 0xf)).to_be_bytes())
                    } else {
                        IpAddr::from(((10u32 << 24) | (rng.next() as u32 & 0x01ff_ffff)).to_be_bytes())
                    }
                })
                .collect();
            let name = if mixed { "mixed" } else { "slash24" };
            group.bench_with_input(BenchmarkId::new(name, n), &probes, |b, probes| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(table.lookup(black_box(probes[i])))
                })
            });
        }
    }
    group.finish();
}

fn build_and_publish(c: &mut Criterion) {
    let ps = peers(10_000, false);
    let shared = Arc::new(ArcSwap::from_pointee(SubnetTable::default()));
    let mut version = 1;
    c.bench_function("build_and_publish_10000", |b| {
        b.iter(|| {
            version += 1;
            let t = SubnetTable::build(version, &scope(), black_box(&ps)).unwrap();
            shared.store(Arc::new(t));
        })
    });
}

criterion_group!(benches, lookups, build_and_publish);
criterion_main!(benches);
