//! Grouping a batch of outgoing packets into UDP GSO sends.
//!
//! A GSO send carries segments of one size to one destination; only the last
//! may be shorter (kernel `udp_send_skb`). [`plan_runs`] cuts the batch, in
//! order, into maximal runs that satisfy that rule, so packets are never
//! reordered: consecutive packets to the same peer and flow share a send, a
//! change of peer, of flow or a larger packet starts a new one.
//! [`group_by_flow`] first moves each flow's packets together when short
//! runs of several flows interleave (packets of different flows have no
//! order to keep).
//!
//! Why the flow ([`crate::wire::flow::flow_key`]): the receiving node hands
//! each arriving GSO send to one worker, chosen by the inner flow of its
//! first datagram (`sys::steering`). A send that mixed flows would move the other flows'
//! packets to that worker for a moment, and packets of one flow handled by
//! two workers at once can be reordered.

use std::net::SocketAddr;

/// Batches of more packets than this are never regrouped
/// ([`group_by_flow`]): they are TSO super-packets split into long runs of
/// one flow already, and sorting them would cost more than it saves.
pub const REGROUP_MAX_PACKETS: usize = 256;

/// [`group_by_flow`] gives up on a batch of more flows than this: with
/// every packet its own flow, no run would grow.
const REGROUP_MAX_FLOWS: usize = 16;

pub use crate::sys::udp::{MAX_GSO_BYTES as MAX_SEND_BYTES, MAX_GSO_SEGMENTS as MAX_SEGMENTS};

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

impl SendRun {
    /// The GSO segment size to send the run with; `None` for a single datagram.
    pub fn gso_segment(&self) -> Option<u16> {
        (self.count > 1).then_some(self.segment as u16)
    }
}

/// Cuts `packets` (destination, datagram length, flow key), in order, into
/// runs of at most `max_segments` datagrams (1 when GSO is off) appended to
/// `runs`, which the caller clears and reuses: no allocation once warm.
pub fn plan_runs(packets: impl IntoIterator<Item = (SocketAddr, usize, u16)>, max_segments: usize, runs: &mut Vec<SendRun>) {
    let max_segments = max_segments.clamp(1, MAX_SEGMENTS);
    let mut open: Option<(SendRun, usize, u16)> = None; // run, bytes so far, flow
    for (i, (endpoint, len, flow)) in packets.into_iter().enumerate() {
        if let Some((run, bytes, run_flow)) = open.as_mut() {
            let fits = run.endpoint == endpoint
                && *run_flow == flow
                && run.count < max_segments
                && *bytes + len <= MAX_SEND_BYTES
                && len <= run.segment;
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
        open = Some((SendRun { endpoint, first: i, count: 1, segment: len }, len, flow));
    }
    if let Some((run, _, _)) = open {
        runs.push(run);
    }
}

/// Moves the packets of each flow together, flows in the order of their
/// first packet, each flow's packets in their order, so that
/// [`plan_runs`] cuts fewer, longer runs: the small packets of several
/// flows that one worker reads interleaved (the ACKs of four TCP streams)
/// then share a send per flow instead of taking one each. Packets of
/// different flows have no order to keep; those of one flow keep theirs.
///
/// Returns whether it moved anything: not when every flow's packets are
/// together already, nor for more than [`REGROUP_MAX_PACKETS`] packets or
/// more than 16 flows. `order` and `scratch` are the caller's, cleared and
/// reused (no allocation once they hold [`REGROUP_MAX_PACKETS`]); `items`
/// keeps its capacity.
pub fn group_by_flow<T: Copy>(items: &mut Vec<T>, flow: impl Fn(&T) -> u16, order: &mut Vec<u32>, scratch: &mut Vec<T>) -> bool {
    if items.len() < 3 || items.len() > REGROUP_MAX_PACKETS {
        return false;
    }
    let mut flows = [0u16; REGROUP_MAX_FLOWS];
    let (mut seen, mut last, mut interleaved) = (0, None, false);
    order.clear();
    for (i, item) in items.iter().enumerate() {
        let f = flow(item);
        let rank = match flows[..seen].iter().position(|&g| g == f) {
            Some(rank) => {
                interleaved |= last != Some(rank);
                rank
            }
            None if seen == REGROUP_MAX_FLOWS => return false,
            None => {
                flows[seen] = f;
                seen += 1;
                seen - 1
            }
        };
        last = Some(rank);
        // Rank of the flow above the position: sorting keeps each flow's order.
        order.push((rank as u32) << 16 | i as u32);
    }
    if !interleaved {
        return false;
    }
    order.sort_unstable();
    scratch.clear();
    scratch.extend(order.iter().map(|&k| items[(k & 0xffff) as usize]));
    items.clear();
    items.extend_from_slice(scratch);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(items: &[(u8, usize)]) -> Vec<(u8, usize, usize, usize)> {
        plan_flows(&items.iter().map(|&(n, l)| (n, l, 0)).collect::<Vec<_>>())
    }

    fn plan_flows(items: &[(u8, usize, u16)]) -> Vec<(u8, usize, usize, usize)> {
        let ep = |n: u8| SocketAddr::from(([198, 18, 0, n], 8285));
        let mut runs = Vec::new();
        plan_runs(items.iter().map(|&(n, l, f)| (ep(n), l, f)), MAX_SEGMENTS, &mut runs);
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
    fn flow_change_starts_a_run() {
        assert_eq!(plan_flows(&[(2, 100, 7), (2, 100, 7), (2, 100, 9), (2, 100, 7)]), vec![(2, 0, 2, 100), (2, 2, 1, 100), (2, 3, 1, 100)]);
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_run() {
        let ep = SocketAddr::from(([198, 18, 0, 2], 8285));
        let mut runs = Vec::new();
        plan_runs([(ep, 100, 0), (ep, 100, 0), (ep, 60, 0)], 1, &mut runs);
        assert_eq!(
            runs.iter().map(|r| (r.first, r.count, r.gso_segment())).collect::<Vec<_>>(),
            vec![(0, 1, None), (1, 1, None), (2, 1, None)]
        );
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

    /// (flow, serial) pairs through [`group_by_flow`].
    fn grouped(items: &[(u16, u32)]) -> (bool, Vec<(u16, u32)>) {
        let mut v = items.to_vec();
        let (mut order, mut scratch) = (Vec::new(), Vec::new());
        let moved = group_by_flow(&mut v, |&(f, _)| f, &mut order, &mut scratch);
        (moved, v)
    }

    #[test]
    fn interleaved_flows_are_grouped_in_first_seen_order() {
        let (moved, v) = grouped(&[(9, 0), (7, 1), (9, 2), (7, 3), (5, 4), (9, 5)]);
        assert!(moved);
        assert_eq!(v, vec![(9, 0), (9, 2), (9, 5), (7, 1), (7, 3), (5, 4)]);
    }

    #[test]
    fn grouped_batches_and_big_or_many_flow_batches_stay_as_they_are() {
        assert_eq!(grouped(&[(9, 0), (9, 1), (7, 2), (7, 3)]), (false, vec![(9, 0), (9, 1), (7, 2), (7, 3)]));
        let many: Vec<(u16, u32)> = (0..40).map(|i| ((i % 17) as u16, i)).collect();
        assert_eq!(grouped(&many), (false, many.clone()));
        let big: Vec<(u16, u32)> = (0..REGROUP_MAX_PACKETS as u32 + 1).map(|i| ((i % 2) as u16, i)).collect();
        assert_eq!(grouped(&big), (false, big.clone()));
    }

    #[test]
    fn grouping_interleaved_acks_halves_the_sends() {
        // Two flows' ACKs as one worker reads them: four sends become two.
        let ep = SocketAddr::from(([198, 18, 0, 2], 8285));
        let mut acks: Vec<(u16, u32)> = vec![(1, 0), (2, 1), (1, 2), (2, 3)];
        let mut runs = Vec::new();
        plan_runs(acks.iter().map(|&(f, _)| (ep, 60, f)), MAX_SEGMENTS, &mut runs);
        assert_eq!(runs.len(), 4);
        let (mut order, mut scratch) = (Vec::new(), Vec::new());
        assert!(group_by_flow(&mut acks, |&(f, _)| f, &mut order, &mut scratch));
        runs.clear();
        plan_runs(acks.iter().map(|&(f, _)| (ep, 60, f)), MAX_SEGMENTS, &mut runs);
        assert_eq!(runs.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn grouping_keeps_every_packet_and_each_flows_order(flows in proptest::collection::vec(0u16..20, 0..300)) {
            let items: Vec<(u16, u32)> = flows.iter().enumerate().map(|(i, &f)| (f, i as u32)).collect();
            let (_, v) = grouped(&items);
            let mut sorted = v.clone();
            sorted.sort_by_key(|&(_, i)| i);
            proptest::prop_assert_eq!(&sorted, &items);
            for f in 0..20u16 {
                let serials: Vec<u32> = v.iter().filter(|p| p.0 == f).map(|p| p.1).collect();
                proptest::prop_assert!(serials.windows(2).all(|w| w[0] < w[1]), "flow {} reordered: {:?}", f, v);
            }
            // Grouped means each flow's packets are adjacent, unless it gave up.
            let moved_or_kept = v == items || {
                let mut starts = v.iter().map(|p| p.0).collect::<Vec<_>>();
                starts.dedup();
                let mut distinct = starts.clone();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() == starts.len()
            };
            proptest::prop_assert!(moved_or_kept);
        }

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
