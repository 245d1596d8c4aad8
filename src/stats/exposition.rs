//! The Prometheus exposition of everything the daemon counts, through the
//! `prometheus-client` crate: a collector that encodes one scrape-time
//! snapshot, in whichever [`Format`] the scraper negotiated. Both formats
//! come from the same collector, so they carry the same samples under the
//! same names; only the declarations differ (OpenMetrics declares the family
//! `encapd_tx_packets`, the classic format its sample `encapd_tx_packets_total`)
//! and so does the notation of bucket bounds (`le="0.000001"` in OpenMetrics,
//! Go's `le="1e-06"` in the classic format: the same number, which is all
//! `histogram_quantile` reads).
//!
//! Metric names carry their unit (`_bytes`, `_seconds`, `_packets`);
//! counters get `_total` from the encoder. Latency is a histogram only:
//! quantiles come from `histogram_quantile` over its buckets
//! (docs/operating.md, "Metrics, latency and `encapd stats`"), which
//! aggregates across workers and nodes and follows a query's time window,
//! where quantile gauges since start-up would do neither.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::format::Format;
use super::latency::{Direction, LatencyHub, LatencyTotals};
use super::{ControlCounters, CounterSnapshot, DropReason, WorkerCounters};
use crate::route::SharedTable;

/// Facts fixed at start-up, shown as info metrics.
#[derive(Debug, Clone)]
pub struct StaticInfo {
    pub engine: &'static str,
    /// e.g. "csum+tso4+tso6" or "off".
    pub tun_offloads: String,
    pub udp_gso: bool,
    pub udp_gro: bool,
    pub control_source: &'static str,
    pub listen: Option<SocketAddr>,
}

/// Where a scrape reads from.
pub struct MetricsSource {
    pub workers: Vec<Arc<WorkerCounters>>,
    pub control: Arc<ControlCounters>,
    pub table: SharedTable,
    pub info: StaticInfo,
    /// Reads the kernel path's counters (`kernel_path = "tc"`); `None`
    /// without it, and then its metrics are not declared.
    pub kernel: Option<KernelPathReader>,
}

/// The kernel path's counters, summed over CPUs, as read at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelPathTotals {
    pub egress_packets: u64,
    pub egress_bytes: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    /// Packets `encap` dropped half-built (a step the kernel refused after
    /// it had begun).
    pub encap_failed: u64,
    /// Packets `encap` handed to the workers because the underlay had no
    /// route to the peer, or its next hop no resolved neighbour.
    pub encap_no_route: u64,
    pub encap_no_neighbour: u64,
    /// Packets `encap` handed to the workers because the outer datagram
    /// would not fit the route's MTU (the workers' socket fragments it).
    pub encap_too_big: u64,
    /// Routes-map updates the kernel refused (each retried).
    pub route_update_failures: u64,
    /// Of `ingress_packets`: datagrams `xdp_decap` decapsulated before GRO,
    /// and the packets `decap` delivered from them after GRO (fewer when
    /// GRO merged them).
    pub xdp_decap_packets: u64,
    pub xdp_delivered_packets: u64,
}

/// How the metrics thread reads [`KernelPathTotals`] (from the programs'
/// per-CPU map; a closure so that this layer knows nothing of eBPF).
pub type KernelPathReader = Arc<dyn Fn() -> KernelPathTotals + Send + Sync>;

/// Upper bounds of `encapd_gateway_latency_seconds`, 1 µs to 1 s, six per
/// decade (1, 1.5, 2, 3, 5, 7.5): `histogram_quantile` interpolates inside a
/// bucket, so its error is bounded by the bucket's width, here at most half a
/// step of ×1.5. Buckets cost the workers nothing (they are read out of the
/// HdrHistogram at scrape time), only series in Prometheus.
pub const LATENCY_BUCKETS_S: [f64; 37] = [
    1e-6, 1.5e-6, 2e-6, 3e-6, 5e-6, 7.5e-6, //
    1e-5, 1.5e-5, 2e-5, 3e-5, 5e-5, 7.5e-5, //
    1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, //
    1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3, //
    1e-2, 1.5e-2, 2e-2, 3e-2, 5e-2, 7.5e-2, //
    1e-1, 1.5e-1, 2e-1, 3e-1, 5e-1, 7.5e-1, //
    1.0,
];
/// Upper bounds of `encapd_batch_packets`.
pub const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// One scrape's worth of values.
#[derive(Debug)]
struct Scrape {
    workers: Vec<CounterSnapshot>,
    tables_published: u64,
    reload_failures: u64,
    malformed_leases: u64,
    control_healthy: bool,
    table_published_unix_ms: u64,
    table_version: u64,
    routes: usize,
    peers: usize,
    info: StaticInfo,
    latency: LatencyTotals,
    kernel: Option<KernelPathTotals>,
}

/// Renders the exposition of the current state in `format`.
pub fn render(source: &MetricsSource, hub: &mut LatencyHub, format: Format) -> String {
    hub.collect();
    let table = source.table.load();
    let scrape = Scrape {
        workers: source.workers.iter().map(|w| w.snapshot()).collect(),
        tables_published: source.control.tables_published.load(Ordering::Relaxed),
        reload_failures: source.control.reload_failures.load(Ordering::Relaxed),
        malformed_leases: source.control.malformed_leases.load(Ordering::Relaxed),
        control_healthy: source.control.healthy.load(Ordering::Relaxed),
        table_published_unix_ms: source.control.table_published_unix_ms.load(Ordering::Relaxed),
        table_version: table.version(),
        routes: table.len(),
        peers: table.peer_count(),
        info: source.info.clone(),
        latency: hub.totals(),
        kernel: source.kernel.as_ref().map(|read| read()),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector's own encoding
    // only fails when its writer does.
    let _ = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::PrometheusText => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
    };
    out
}

fn direction_name(d: usize) -> &'static str {
    if d == Direction::Egress as usize { "egress" } else { "ingress" }
}

/// Per-bucket (not cumulative) counts of `h` at `bounds` (in `scale` units
/// per histogram unit), ending with the +Inf bucket.
fn buckets(h: &Histogram<u64>, bounds: &[f64], scale: f64) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0u64;
    for &b in bounds {
        // Rounded: 7.5e-6 / 1e-9 is 7499.999... in floating point.
        let upto = (b / scale).round() as u64;
        let cum = if h.is_empty() { 0 } else { h.count_between(0, upto) };
        out.push((b, cum.saturating_sub(below)));
        below = below.max(cum);
    }
    out.push((f64::INFINITY, h.len().saturating_sub(below)));
    out
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_worker_counters(&mut enc)?;
        self.encode_table_and_control(&mut enc)?;
        self.encode_kernel_path(&mut enc)?;
        self.encode_info(&mut enc)?;
        self.encode_histograms(&mut enc)
    }
}

impl Scrape {
    /// Per-worker traffic counters and drops by reason.
    fn encode_worker_counters(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Field = fn(&CounterSnapshot) -> u64;
        let per_worker: [(&str, &str, Field); 9] = [
            ("encapd_tx_packets", "Packets read from the TUN and sent to a peer", |s| s.egress_packets),
            ("encapd_tx_bytes", "Bytes of inner packets sent to peers", |s| s.egress_bytes),
            ("encapd_tx_sends", "UDP send operations (one GSO send carries many packets)", |s| s.egress_sends),
            ("encapd_rx_packets", "Packets received from peers and written to the TUN", |s| s.ingress_packets),
            ("encapd_rx_bytes", "Bytes of inner packets received from peers and delivered", |s| s.ingress_bytes),
            ("encapd_rx_receives", "UDP receive completions (one GRO receive carries many datagrams)", |s| s.ingress_receives),
            ("encapd_icmp_sent", "ICMP errors sent back to containers", |s| s.icmp_sent),
            ("encapd_icmp_rate_limited", "ICMP errors owed but not sent: over the worker's rate limit", |s| s.icmp_rate_limited),
            ("encapd_arp_replies", "ARP requests from peer VTEPs answered (vxlan backend)", |s| s.arp_replies),
        ];
        for (name, help, field) in per_worker {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (w, s) in self.workers.iter().enumerate() {
                let labels = [("worker", w.to_string())];
                ConstCounter::new(field(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = enc.encode_descriptor("encapd_drops", "Packets dropped, by worker and reason", None, MetricType::Counter)?;
        for (w, s) in self.workers.iter().enumerate() {
            for r in DropReason::ALL {
                let labels = [("worker", w.to_string()), ("reason", r.name().to_owned())];
                ConstCounter::new(s.drop_count(r)).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m =
            enc.encode_descriptor("encapd_worker_table_version", "Subnet table version each worker last used", None, MetricType::Gauge)?;
        for (w, s) in self.workers.iter().enumerate() {
            ConstGauge::new(s.table_version as i64).encode(m.encode_family(&[("worker", w.to_string())])?)?;
        }
        Ok(())
    }

    /// The published table and the control plane.
    fn encode_table_and_control(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges: [(&str, &str, i64); 4] = [
            ("encapd_table_version", "Version of the published subnet table", self.table_version as i64),
            ("encapd_routes", "Prefixes in the published subnet table", self.routes as i64),
            ("encapd_peers", "Distinct peer endpoints in the published table", self.peers as i64),
            (
                "encapd_control_connected",
                "1 while the control source is readable and its last change was applied",
                i64::from(self.control_healthy),
            ),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        ConstGauge::new(self.table_published_unix_ms as f64 / 1000.0).encode(enc.encode_descriptor(
            "encapd_table_published_timestamp_seconds",
            "Unix time the table in force was published (start-up time for the initial table)",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(self.tables_published).encode(enc.encode_descriptor(
            "encapd_tables_published",
            "Subnet tables published after start",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(self.reload_failures).encode(enc.encode_descriptor(
            "encapd_reload_failures",
            "Table changes rejected as invalid",
            None,
            MetricType::Counter,
        )?)?;
        // Only the etcd source has leases: under the file source this
        // counter could never move, so it is not declared.
        if self.info.control_source == "etcd" {
            ConstCounter::new(self.malformed_leases).encode(enc.encode_descriptor(
                "encapd_control_malformed_leases",
                "etcd leases skipped as malformed (bad JSON or key, wrong types, subnet outside the network)",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }

    /// The kernel path's counters, when it runs.
    fn encode_kernel_path(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(k) = self.kernel else { return Ok(()) };
        let per_direction: [(&str, &str, u64, u64); 2] = [
            (
                "encapd_kernel_packets",
                "Packets the kernel path carried (egress: encapsulated; ingress: decapsulated)",
                k.egress_packets,
                k.ingress_packets,
            ),
            ("encapd_kernel_bytes", "Bytes of inner packets the kernel path carried", k.egress_bytes, k.ingress_bytes),
        ];
        for (name, help, egress, ingress) in per_direction {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(egress).encode(m.encode_family(&[("direction", "egress")])?)?;
            ConstCounter::new(ingress).encode(m.encode_family(&[("direction", "ingress")])?)?;
        }
        // Every packet encap could not send itself, by reason: "dropped"
        // was half-built when the kernel refused a step; the others went to
        // the workers, because the peer had no route or no resolved
        // neighbour on the underlay (which the workers' send may resolve).
        let mut m = enc.encode_descriptor(
            "encapd_kernel_encap_failed",
            "Packets the kernel path could not encapsulate and send, by reason (dropped: half-built; no_route, no_neighbour: handed to the workers)",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in [("dropped", k.encap_failed), ("no_route", k.encap_no_route), ("no_neighbour", k.encap_no_neighbour)] {
            ConstCounter::new(value).encode(m.encode_family(&[("reason", reason)])?)?;
        }
        ConstCounter::new(k.encap_too_big).encode(enc.encode_descriptor(
            "encapd_kernel_encap_too_big",
            "Packets the kernel path handed to the workers because the outer datagram exceeded the route's MTU (the workers' socket fragments it)",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(k.xdp_decap_packets).encode(enc.encode_descriptor(
            "encapd_kernel_xdp_decap_packets",
            "Of the kernel path's ingress packets: datagrams decapsulated in XDP before GRO",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(k.xdp_delivered_packets).encode(enc.encode_descriptor(
            "encapd_kernel_xdp_delivered_packets",
            "Packets delivered to the TUN from XDP-decapsulated datagrams after GRO (datagrams per packet: GRO's merging)",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(k.route_update_failures).encode(enc.encode_descriptor(
            "encapd_kernel_route_update_failures",
            "Routes-map updates the kernel refused (each is retried until the map matches the table)",
            None,
            MetricType::Counter,
        )?)
    }

    /// Start-up facts as info metrics (`encapd_engine_info`, `encapd_offload_info`).
    fn encode_info(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = [("engine", self.info.engine.to_owned()), ("source", self.info.control_source.to_owned())];
        enc.encode_descriptor("encapd_engine", "I/O engine and control source in use", None, MetricType::Info)?.encode_info(&labels)?;
        let on = |b: bool| if b { "on" } else { "off" }.to_owned();
        let labels = [("tun", self.info.tun_offloads.clone()), ("udp_gso", on(self.info.udp_gso)), ("udp_gro", on(self.info.udp_gro))];
        enc.encode_descriptor("encapd_offload", "Offloads in use", None, MetricType::Info)?.encode_info(&labels)
    }

    /// In-gateway latency and batch sizes, per direction.
    fn encode_histograms(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(
            "encapd_gateway_latency_seconds",
            "Time a packet spends inside encapd (read completion to send or TUN-write completion)",
            None,
            MetricType::Histogram,
        )?;
        for (d, h) in self.latency.latency.iter().enumerate() {
            let sum = h.mean() * h.len() as f64 / 1e9;
            let b = buckets(h, &LATENCY_BUCKETS_S, 1e-9);
            m.encode_family(&[("direction", direction_name(d))])?.encode_histogram::<NoLabelSet>(sum, h.len(), &b, None)?;
        }
        let mut m = enc.encode_descriptor("encapd_batch_packets", "Packets handled per worker batch", None, MetricType::Histogram)?;
        for (d, h) in self.latency.batch.iter().enumerate() {
            let sum = h.mean() * h.len() as f64;
            let b = buckets(h, &BATCH_BUCKETS, 1.0);
            m.encode_family(&[("direction", direction_name(d))])?.encode_histogram::<NoLabelSet>(sum, h.len(), &b, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use arc_swap::ArcSwap;

    use super::*;
    use crate::route::SubnetTable;
    use crate::stats::bump;
    use crate::stats::scrape::{self, Sample};

    fn source(workers: usize, control_source: &'static str) -> MetricsSource {
        MetricsSource {
            workers: (0..workers).map(|_| Arc::new(WorkerCounters::default())).collect(),
            control: Arc::new(ControlCounters::default()),
            table: Arc::new(ArcSwap::from_pointee(SubnetTable::default())),
            info: StaticInfo {
                engine: "uring",
                tun_offloads: "csum+tso4".into(),
                udp_gso: true,
                udp_gro: false,
                control_source,
                listen: None,
            },
            kernel: None,
        }
    }

    /// The samples of `text`, sorted, with `le` bounds as numbers (each
    /// format writes them in its own float notation).
    fn samples(text: &str) -> Vec<Sample> {
        let mut s = scrape::parse(text).expect("parses");
        for sample in &mut s {
            if let Some(le) = sample.labels.get_mut("le") {
                *le = format!("{:?}", if le == "+Inf" { f64::INFINITY } else { le.parse::<f64>().expect("numeric le") });
            }
        }
        s.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        s
    }

    #[test]
    fn both_formats_carry_the_same_samples() {
        let src = source(2, "etcd");
        let (mut hub, mut recs) = LatencyHub::new(2);
        bump(&src.workers[1].egress_packets, 7);
        WorkerCounters::drop(&src.workers[0], DropReason::NoRoute);
        recs[0].latency(Direction::Egress, Duration::from_micros(12), 3);
        recs[0].maybe_flush(Instant::now() + Duration::from_secs(2));
        let om = render(&src, &mut hub, Format::OpenMetrics);
        let text = render(&src, &mut hub, Format::PrometheusText);
        assert_eq!(samples(&om), samples(&text));
        assert!(om.ends_with("# EOF\n") && !text.contains("# EOF"));
        assert!(om.contains("# TYPE encapd_tx_packets counter\n"), "{om}");
        assert!(text.contains("# TYPE encapd_tx_packets_total counter\n"), "{text}");
        assert!(text.contains("encapd_tx_packets_total{worker=\"1\"} 7\n"), "{text}");
        assert!(text.contains("# TYPE encapd_engine_info gauge\n"), "{text}");
        assert!(om.contains("# TYPE encapd_engine info\n"), "{om}");
        assert!(text.contains("encapd_drops_total{worker=\"0\",reason=\"no_route\"} 1\n"), "{text}");
        assert!(!text.contains("quantile"), "quantiles come from histogram_quantile, not gauges");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let src = source(1, "file");
        let (mut hub, mut recs) = LatencyHub::new(1);
        for (us, n) in [(1, 2), (12, 3), (80, 4), (5_000_000, 1)] {
            recs[0].latency(Direction::Ingress, Duration::from_micros(us), n);
        }
        recs[0].batch(Direction::Ingress, 3);
        recs[0].maybe_flush(Instant::now() + Duration::from_secs(2));
        let s = scrape::parse(&render(&src, &mut hub, Format::PrometheusText)).unwrap();
        let b = scrape::buckets(&s, "encapd_gateway_latency_seconds", &[("direction", "ingress")]);
        assert_eq!(b.len(), LATENCY_BUCKETS_S.len() + 1);
        let at = |le: f64| b.iter().find(|(bound, _)| *bound == le).map(|(_, n)| *n);
        assert_eq!(at(1e-6), Some(2.0));
        assert_eq!(at(1e-5), Some(2.0));
        assert_eq!(at(1.5e-5), Some(5.0));
        assert_eq!(at(7.5e-5), Some(5.0));
        assert_eq!(at(1e-4), Some(9.0));
        assert_eq!(at(1.0), Some(9.0), "5 s is above the last finite bound");
        assert_eq!(at(f64::INFINITY), Some(10.0));
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {b:?}");
        assert_eq!(scrape::sum(&s, "encapd_gateway_latency_seconds_count", &[("direction", "ingress")]), 10.0);
        let batches = scrape::buckets(&s, "encapd_batch_packets", &[("direction", "ingress")]);
        assert_eq!(batches.iter().find(|(le, _)| *le == 2.0).map(|b| b.1), Some(0.0));
        assert_eq!(batches.iter().find(|(le, _)| *le == 4.0).map(|b| b.1), Some(1.0));
    }

    #[test]
    fn malformed_lease_counter_only_under_etcd() {
        let (mut hub, _recs) = LatencyHub::new(1);
        assert!(!render(&source(1, "file"), &mut hub, Format::PrometheusText).contains("malformed_leases"));
        assert!(render(&source(1, "etcd"), &mut hub, Format::PrometheusText).contains("encapd_control_malformed_leases_total 0\n"));
    }
}
