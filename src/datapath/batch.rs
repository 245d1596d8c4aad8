//! Grouping a batch of outgoing packets into UDP GSO sends.
//!
//! A GSO send carries segments of one size to one destination; only the last
//! may be shorter (kernel `udp_send_skb`). [`plan_runs`] cuts the batch, in
//! order, into maximal runs that satisfy that rule, so packets are never
//! reordered: consecutive packets to the same peer share a send, a change of
//! peer or a larger packet starts a new one.

use std::net::SocketAddr;

/// Segments per GSO send. The kernel's UDP_MAX_SEGMENTS is 64 on older
/// kernels (raised to 128 later); 64 works everywhere.
pub const MAX_SEGMENTS: usize = 64;
/// Bytes per GSO send: the payload of one maximal UDP datagram, with room to
/// spare for an IPv6 header.
pub const MAX_SEND_BYTES: usize = 65_000;

/// A run of consecutive packets sent with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRun {
    pub endpoint: SocketAddr,
    /// Index of the first packet of the run in the planned batch.
    pub first: usize,
    pub count: usize,
    /// Size of every segment but the last (the GSO segment size).
    pub segment: usize,
}

/// Cuts `packets` (destination, length), in order, into GSO runs appended to
/// `runs` (which the caller clears and reuses: no allocation once warm).
pub fn plan_runs(packets: impl IntoIterator<Item = (SocketAddr, usize)>, runs: &mut Vec<SendRun>) {
    let mut open: Option<(SendRun, usize)> = None; // run, bytes so far
    for (i, (endpoint, len)) in packets.into_iter().enumerate() {
        if let Some((run, bytes)) = open.as_mut() {
            let fits = run.endpoint == endpoint && run.count < MAX_SEGMENTS && *bytes + len <= MAX_SEND_BYTES && len <= run.segment;
            if fits {
                run.count += 1;
                *bytes += len;
                if len < run.segment {
                    // A short segment must be the last one.
                    runs.push(*run);
                    open = None;
                }
                continue;
            }
            runs.push(*run);
        }
        open = Some((SendRun { endpoint, first: i, count: 1, segment: len }, len));
    }
    if let Some((run, _)) = open {
        runs.push(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(items: &[(u8, usize)]) -> Vec<(u8, usize, usize, usize)> {
        let ep = |n: u8| SocketAddr::from(([198, 18, 0, n], 8285));
        let mut runs = Vec::new();
        plan_runs(items.iter().map(|&(n, l)| (ep(n), l)), &mut runs);
        runs.iter()
            .map(|r| (r.endpoint.ip().to_string().rsplit('.').next().unwrap().parse().unwrap(), r.first, r.count, r.segment))
            .collect()
    }

    #[test]
    fn equal_sizes_share_a_send_and_a_short_tail_closes_it() {
        assert_eq!(plan(&[(2, 1400), (2, 1400), (2, 1400), (2, 60), (2, 1400)]), vec![(2, 0, 4, 1400), (2, 4, 1, 1400)]);
    }

    #[test]
    fn peer_change_or_larger_packet_starts_a_run() {
        assert_eq!(plan(&[(2, 100), (3, 100), (3, 200), (3, 200)]), vec![(2, 0, 1, 100), (3, 1, 1, 100), (3, 2, 2, 200)]);
    }

    #[test]
    fn runs_respect_segment_and_byte_limits() {
        let many: Vec<(u8, usize)> = vec![(2, 100); MAX_SEGMENTS + 1];
        assert_eq!(plan(&many), vec![(2, 0, MAX_SEGMENTS, 100), (2, MAX_SEGMENTS, 1, 100)]);
        let big: Vec<(u8, usize)> = vec![(2, 1472); 50];
        let runs = plan(&big);
        assert_eq!(runs[0], (2, 0, MAX_SEND_BYTES / 1472, 1472));
        assert_eq!(runs.iter().map(|r| r.2).sum::<usize>(), 50);
    }

    proptest::proptest! {
        #[test]
        fn every_packet_planned_once_in_order(items in proptest::collection::vec((2u8..4, 1usize..3000), 0..300)) {
            let runs = plan(&items);
            let mut next = 0;
            for (peer, first, count, seg) in runs {
                proptest::prop_assert_eq!(first, next);
                let members = &items[first..first + count];
                proptest::prop_assert!(count <= MAX_SEGMENTS);
                proptest::prop_assert!(members.iter().map(|m| m.1).sum::<usize>() <= MAX_SEND_BYTES);
                for (k, m) in members.iter().enumerate() {
                    proptest::prop_assert_eq!(m.0, peer);
                    if k + 1 < count { proptest::prop_assert_eq!(m.1, seg); } else { proptest::prop_assert!(m.1 <= seg); }
                }
                next += count;
            }
            proptest::prop_assert_eq!(next, items.len());
        }
    }
}
