//! In-gateway latency and batch-size histograms (HdrHistogram, 3
//! significant digits), recorded by each worker without locks or
//! allocation, merged by the metrics side without stopping the workers.
//!
//! Each worker records into its own [`Interval`]; about once a second it
//! hands the full interval to the [`LatencyHub`] over a channel and takes a
//! cleared one back (each worker owns two, so nothing is allocated after
//! start-up). The hub adds intervals into cumulative histograms.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use hdrhistogram::Histogram;

/// Largest latency recorded, in nanoseconds (larger values are clamped).
const MAX_LATENCY_NS: u64 = 10_000_000_000;
/// Largest batch recorded, in packets.
const MAX_BATCH: u64 = 1 << 16;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Which way packets go through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// TUN → UDP (to peers).
    Egress,
    /// UDP → TUN (from peers).
    Ingress,
}

/// One worker's histograms for one interval.
#[derive(Debug, Clone)]
pub struct Interval {
    pub worker: usize,
    /// Time a packet spent inside encapd, ns: read completion to send
    /// (egress) or TUN-write (ingress) completion.
    pub latency: [Histogram<u64>; 2],
    /// Packets handled per batch.
    pub batch: [Histogram<u64>; 2],
}

impl Interval {
    pub fn new(worker: usize) -> Interval {
        let lat = || Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds");
        let batch = || Histogram::new_with_bounds(1, MAX_BATCH, 3).expect("valid histogram bounds");
        Interval { worker, latency: [lat(), lat()], batch: [batch(), batch()] }
    }

    fn reset(&mut self) {
        self.latency.iter_mut().chain(self.batch.iter_mut()).for_each(Histogram::reset);
    }
}

/// A worker's recorder: the interval being filled and the way to the hub.
pub struct LatencyRecorder {
    current: Box<Interval>,
    full: Sender<Box<Interval>>,
    empty: Receiver<Box<Interval>>,
    next_flush: Instant,
}

impl LatencyRecorder {
    /// `count` packets that spent `elapsed` inside the gateway.
    #[inline]
    pub fn latency(&mut self, dir: Direction, elapsed: Duration, count: u64) {
        let ns = (elapsed.as_nanos() as u64).clamp(1, MAX_LATENCY_NS);
        let _ = self.current.latency[dir as usize].record_n(ns, count.max(1));
    }

    /// One batch of `packets` packets.
    #[inline]
    pub fn batch(&mut self, dir: Direction, packets: u64) {
        if packets > 0 {
            let _ = self.current.batch[dir as usize].record(packets.min(MAX_BATCH));
        }
    }

    /// Hands the interval over about once a second (call once per loop).
    #[inline]
    pub fn maybe_flush(&mut self, now: Instant) {
        if now < self.next_flush {
            return;
        }
        self.next_flush = now + FLUSH_EVERY;
        match self.empty.try_recv() {
            Ok(fresh) => {
                let full = std::mem::replace(&mut self.current, fresh);
                // The hub is gone only at shutdown; then nothing needs it.
                let _ = self.full.try_send(full);
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
    }
}

/// Cumulative histograms over all workers since start.
#[derive(Debug, Clone)]
pub struct LatencyTotals {
    pub latency: [Histogram<u64>; 2],
    pub batch: [Histogram<u64>; 2],
}

/// The merging side: collects intervals and returns them cleared.
pub struct LatencyHub {
    full: Receiver<Box<Interval>>,
    empties: Vec<Sender<Box<Interval>>>,
    totals: Box<Interval>,
}

impl LatencyHub {
    /// A hub and one recorder per worker.
    pub fn new(workers: usize) -> (LatencyHub, Vec<LatencyRecorder>) {
        let (full_tx, full_rx) = crossbeam_channel::bounded(workers * 2);
        let mut empties = Vec::with_capacity(workers);
        let mut recorders = Vec::with_capacity(workers);
        for w in 0..workers {
            let (empty_tx, empty_rx) = crossbeam_channel::bounded(2);
            let _ = empty_tx.send(Box::new(Interval::new(w)));
            empties.push(empty_tx);
            recorders.push(LatencyRecorder {
                current: Box::new(Interval::new(w)),
                full: full_tx.clone(),
                empty: empty_rx,
                next_flush: Instant::now() + FLUSH_EVERY,
            });
        }
        (LatencyHub { full: full_rx, empties, totals: Box::new(Interval::new(usize::MAX)) }, recorders)
    }

    /// Merges every interval handed over so far.
    pub fn collect(&mut self) {
        while let Ok(mut interval) = self.full.try_recv() {
            for (total, part) in self.totals.latency.iter_mut().zip(&interval.latency) {
                let _ = total.add(part);
            }
            for (total, part) in self.totals.batch.iter_mut().zip(&interval.batch) {
                let _ = total.add(part);
            }
            interval.reset();
            if let Some(back) = self.empties.get(interval.worker) {
                let _ = back.try_send(interval);
            }
        }
    }

    pub fn totals(&self) -> LatencyTotals {
        LatencyTotals { latency: self.totals.latency.clone(), batch: self.totals.batch.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_reach_the_hub_and_come_back_cleared() {
        let (mut hub, mut recs) = LatencyHub::new(2);
        recs[0].latency(Direction::Egress, Duration::from_micros(20), 10);
        recs[1].latency(Direction::Ingress, Duration::from_micros(80), 5);
        recs[1].batch(Direction::Ingress, 32);
        let later = Instant::now() + Duration::from_secs(2);
        for r in &mut recs {
            r.maybe_flush(later);
        }
        hub.collect();
        let t = hub.totals();
        assert_eq!(t.latency[Direction::Egress as usize].len(), 10);
        assert_eq!(t.latency[Direction::Ingress as usize].len(), 5);
        let p50 = t.latency[Direction::Egress as usize].value_at_quantile(0.5);
        assert!((19_980..=20_020).contains(&p50), "{p50}");
        assert_eq!(t.batch[Direction::Ingress as usize].max(), 32);
        // The cleared intervals went back: another round works the same way.
        recs[0].latency(Direction::Egress, Duration::from_micros(20), 1);
        let much_later = later + Duration::from_secs(2);
        recs[0].maybe_flush(much_later);
        hub.collect();
        assert_eq!(hub.totals().latency[Direction::Egress as usize].len(), 11);
    }
}
