//! Worker scheduling, end to end in namespaces: with `[dataplane] sched =
//! "short-slice"` every worker thread of a running encapd has the kernel's
//! shortest fair slice, the other threads keep the default, and the
//! gateway forwards; with the default setting no thread has that slice.
//! The threads are read from outside the process (`sched_getattr` on each
//! thread id), as an operator's tools would. Root only.

use encapd_testbed as common;

use common::{CTR_B, Node, Options, Topology, require_root};
use encapd::sys::sched::{SHORT_SLICE_NS, thread};

/// (thread name, slice in ns) of every thread of `pid`.
fn slices(pid: i32) -> Vec<(String, u64)> {
    let dir = format!("/proc/{pid}/task");
    let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
        .filter_map(|entry| {
            let tid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(format!("{dir}/{tid}/comm")).ok()?.trim().to_owned();
            let (policy, slice) = thread(tid).ok()?;
            assert_eq!(policy, libc::SCHED_OTHER, "thread {name} ({tid}) left the fair class");
            Some((name, slice))
        })
        .collect();
    out.sort();
    out
}

fn running(sched: Option<&str>) -> Topology {
    let mut opts = Options::new("uring");
    if let Some(s) = sched {
        opts.extra_a = format!("sched = \"{s}\"\n");
    }
    Topology::with(opts)
}

#[test]
fn short_slice_reaches_every_worker_and_only_the_workers() {
    if !require_root() {
        return;
    }
    let t = running(Some("short-slice"));
    let threads = slices(t.pid(Node::A));
    let (workers, others): (Vec<_>, Vec<_>) = threads.iter().partition(|(name, _)| name.starts_with("encapd-w"));
    assert_eq!(workers.len(), 2, "two workers among {threads:?}");
    if workers.iter().all(|(_, slice)| *slice == 0) {
        // A kernel before 6.12 has no per-task slice: encapd says so.
        eprintln!("branch: this kernel has no per-task slice (before 6.12); checked that encapd says so");
        assert!(t.log(Node::A).contains("has no effect on this kernel"), "{}", t.log(Node::A));
    } else {
        eprintln!("branch: this kernel sets per-task slices; checked every worker has {SHORT_SLICE_NS} ns and no other thread does");
        assert!(workers.iter().all(|(_, slice)| *slice == SHORT_SLICE_NS), "worker slices: {threads:?}");
        assert!(others.iter().all(|(_, slice)| *slice != SHORT_SLICE_NS), "only workers take the short slice: {threads:?}");
    }
    let o = t.ping(&t.ctr_a, &["-c", "2", "-i", "0.2", "-W", "2", CTR_B]);
    assert!(o.ok(), "ping through workers on a short slice: {}", o.text());
}

#[test]
fn default_leaves_every_thread_on_the_kernels_slice() {
    if !require_root() {
        return;
    }
    let t = running(None);
    let threads = slices(t.pid(Node::A));
    assert!(threads.iter().any(|(name, _)| name.starts_with("encapd-w")), "{threads:?}");
    assert!(threads.iter().all(|(_, slice)| *slice != SHORT_SLICE_NS), "{threads:?}");
}
