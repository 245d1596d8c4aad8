//! Full-mesh reachability between pods: an ICMP echo from every pod to
//! every other pod, all pairs in flight at once, unanswered pairs retried.
//!
//! One raw ICMP socket per pod, created inside the pod's namespace (a
//! socket stays in the namespace it was created in), so one thread drives
//! the whole mesh: at N = 32 that is 992 pairs per attempt, which `ping`
//! processes could not send in any reasonable time. A request from pod `i`
//! to pod `j` carries identifier `base | i` and sequence `attempt << 8 | j`
//! (`base` from our pid, so another prober's replies are ignored); the
//! reply is matched by its identifier and the source address.

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::in_netns;
use crate::stats::{Percentiles, ms};

/// How [`probe`] retries.
#[derive(Debug, Clone, Copy)]
pub struct MeshOptions {
    /// Rounds of requests for the pairs still unanswered.
    pub attempts: u32,
    /// How long each round waits for answers.
    pub wait: Duration,
}

impl Default for MeshOptions {
    fn default() -> MeshOptions {
        MeshOptions { attempts: 5, wait: Duration::from_secs(1) }
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone)]
pub struct MeshResult {
    pub pairs: usize,
    pub ok: usize,
    /// Unanswered pairs (source index, destination index).
    pub failed: Vec<(usize, usize)>,
    pub seconds: f64,
    /// Round-trip times of the answered requests, in ms.
    pub rtt_ms: Percentiles,
}

const PAYLOAD: &[u8] = b"encapd-cluster-mesh";

/// Pings, from each pod (namespace, IPv4 address) to every other, the pairs
/// that involve a pod in `only` (every pair when `only` is `None`).
pub fn probe(pods: &[(String, Ipv4Addr)], only: Option<&[usize]>, opts: MeshOptions) -> MeshResult {
    let n = pods.len();
    assert!(n <= 256, "the mesh probe numbers pods in one byte");
    let index: HashMap<Ipv4Addr, usize> = pods.iter().enumerate().map(|(i, (_, ip))| (*ip, i)).collect();
    let wanted = |i: usize, j: usize| only.is_none_or(|o| o.contains(&i) || o.contains(&j));
    let pairs: BTreeSet<(usize, usize)> =
        (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).filter(|&(i, j)| i != j && wanted(i, j)).collect();
    let socks: Vec<Socket> = pods
        .iter()
        .map(|(ns, _)| {
            let s = in_netns(ns, || Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)))
                .unwrap_or_else(|e| panic!("a raw ICMP socket in {ns}: {e}"));
            s.set_nonblocking(true).expect("O_NONBLOCK");
            let _ = s.set_recv_buffer_size(1 << 20);
            s
        })
        .collect();
    let base = ((std::process::id() * 7) & 0xff00) as u16;
    let mut answered: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut sent_at: HashMap<(usize, usize, u32), Instant> = HashMap::new();
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    for attempt in 0..opts.attempts {
        let todo: Vec<(usize, usize)> = pairs.difference(&answered).copied().collect();
        if todo.is_empty() {
            break;
        }
        for &(i, j) in &todo {
            let request = echo_request(base | i as u16, ((attempt as u16) << 8) | j as u16);
            sent_at.insert((i, j, attempt), Instant::now());
            if let Err(e) = socks[i].send_to(&request, &SockAddr::from(SocketAddrV4::new(pods[j].1, 0))) {
                eprintln!("mesh: {} -> {}: {e}", pods[i].0, pods[j].1);
            }
        }
        let until = Instant::now() + opts.wait;
        while Instant::now() < until && !pairs.is_subset(&answered) {
            let mut any = false;
            for (i, s) in socks.iter().enumerate() {
                loop {
                    let len = match (&*s).read(&mut buf) {
                        Ok(len) => len,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("receiving on {}'s ICMP socket: {e}", pods[i].0),
                    };
                    any = true;
                    let Some((ident, seq, src)) = echo_reply(&buf[..len]) else { continue };
                    let (Some(&j), true) = (index.get(&src), ident & 0xff00 == base && usize::from(ident & 0xff) == i) else { continue };
                    if pairs.contains(&(i, j)) && answered.insert((i, j)) {
                        let att = u32::from(seq >> 8);
                        if let Some(t) = sent_at.get(&(i, j, att)) {
                            rtts.push(ms(t.elapsed()));
                        }
                    }
                }
            }
            if !any {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let left = pairs.len() - answered.len();
        if left > 0 && attempt + 1 < opts.attempts {
            eprintln!("mesh: attempt {}: {left} of {} pairs unanswered; retrying", attempt + 1, pairs.len());
        }
    }
    let failed: Vec<(usize, usize)> = pairs.difference(&answered).copied().collect();
    for &(i, j) in failed.iter().take(20) {
        eprintln!("mesh: no answer {} ({}) -> {} ({})", pods[i].0, pods[i].1, pods[j].0, pods[j].1);
    }
    MeshResult { pairs: pairs.len(), ok: answered.len(), failed, seconds: start.elapsed().as_secs_f64(), rtt_ms: Percentiles::of(&rtts) }
}

/// An ICMP echo request (RFC 792) with our payload.
fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    let sum = encapd::wire::checksum::checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// (identifier, sequence, source) of an IPv4 packet holding an ICMP echo
/// reply, as a raw socket returns it (IP header included).
fn echo_reply(pkt: &[u8]) -> Option<(u16, u16, Ipv4Addr)> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let icmp = pkt.get(ihl..ihl + 8)?;
    if icmp[0] != 0 {
        return None;
    }
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    Some((u16::from_be_bytes([icmp[4], icmp[5]]), u16::from_be_bytes([icmp[6], icmp[7]]), Ipv4Addr::from(src)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_to_our_request_is_recognised() {
        let mut reply = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 100, 96, 2, 3, 100, 96, 1, 2];
        let mut icmp = echo_request(0x1203, 0x0207);
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(echo_reply(&reply), Some((0x1203, 0x0207, Ipv4Addr::new(100, 96, 2, 3))));
        assert_eq!(encapd::wire::checksum::checksum(&echo_request(1, 2)), 0, "the request's checksum verifies");
        reply[20] = 8;
        assert_eq!(echo_reply(&reply), None, "a request is not a reply");
        assert_eq!(echo_reply(&reply[..25]), None, "short input");
    }
}
