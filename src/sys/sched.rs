//! How the kernel schedules the calling thread against the other threads
//! on its CPU (`sched_setattr`). A worker sleeps until packets arrive; how
//! soon it runs after that wakeup, when an application is running on the
//! same CPU, decides how much a flood can queue up in the meantime
//! (docs/performance.md, lever 14).

use std::io;

use super::cvt;

/// A worker thread's scheduling (`[dataplane] sched`).
///
/// A real-time class (`SCHED_FIFO`) is deliberately not offered: measured
/// under the benchmark's probe at 50 % load, real-time workers held the
/// CPUs against the probe's own sender and receiver until the kernel's
/// real-time limit let fair tasks run, and the round trip's p50 went from
/// 0.3 ms to 32–48 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerSched {
    /// The kernel's fair class with its default slice: a woken worker may
    /// wait for the running task's slice to end.
    #[default]
    Normal,
    /// The fair class with the shortest slice the kernel takes (0.1 ms,
    /// `sched_attr.sched_runtime`, honoured from kernel 6.12 on): its
    /// earlier virtual deadline lets a woken worker preempt the running
    /// task. The worker's CPU share stays the fair one.
    ShortSlice,
}

impl WorkerSched {
    pub const ALL: [WorkerSched; 2] = [WorkerSched::Normal, WorkerSched::ShortSlice];

    pub fn name(self) -> &'static str {
        match self {
            WorkerSched::Normal => "normal",
            WorkerSched::ShortSlice => "short-slice",
        }
    }

    pub fn from_name(name: &str) -> Option<WorkerSched> {
        WorkerSched::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The slice asked for with [`WorkerSched::ShortSlice`]: the kernel's
/// lower clamp for a fair task's requested slice.
pub const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` as first published (`SCHED_ATTR_SIZE_VER0`, 48
/// bytes); every kernel that has the call accepts this size.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Applies `sched` to the calling thread and returns the slice the kernel
/// reports afterwards (ns): a kernel before 6.12 accepts the request and
/// reports 0, because it has no per-task slice. `Normal` makes no system
/// call at all (a new thread starts in the fair class with the default
/// slice; a sandbox that filters the scheduler calls costs nothing then)
/// and returns 0.
pub fn set_current_thread(sched: WorkerSched) -> io::Result<u64> {
    if sched == WorkerSched::Normal {
        return Ok(0);
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        runtime: SHORT_SLICE_NS,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads `attr.size` bytes from a live, initialised
    // struct laid out as the kernel's VER0 sched_attr; pid 0 is this thread.
    cvt(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) })?;
    Ok(current_thread()?.1)
}

/// The calling thread's policy and slice (ns; 0 where the kernel has no
/// per-task slice), as `sched_getattr` reports them.
pub fn current_thread() -> io::Result<(i32, u64)> {
    thread(0)
}

/// [`current_thread`] for the thread `tid` (0: the calling thread).
pub fn thread(tid: i32) -> io::Result<(i32, u64)> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: sched_getattr writes at most `size` bytes into `attr`, which
    // is that large; it only reads the thread named by `tid`.
    cvt(unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut attr as *mut SchedAttr, size, 0) })?;
    Ok((attr.policy as i32, attr.runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in WorkerSched::ALL {
            assert_eq!(WorkerSched::from_name(s.name()), Some(s));
        }
        assert_eq!(WorkerSched::from_name("fifo"), None);
    }

    #[test]
    fn short_slice_applies_to_the_calling_thread_only() {
        let before = current_thread().unwrap();
        std::thread::spawn(|| {
            let slice = set_current_thread(WorkerSched::ShortSlice).unwrap();
            // Kernels before 6.12 accept the call and report no slice.
            assert!(slice == SHORT_SLICE_NS || slice == 0, "slice {slice}");
            assert_eq!(current_thread().unwrap(), (libc::SCHED_OTHER, slice));
        })
        .join()
        .unwrap();
        assert_eq!(current_thread().unwrap(), before, "the spawning thread kept its own scheduling");
        assert_ne!(before.1, SHORT_SLICE_NS);
    }

    #[test]
    fn normal_changes_nothing() {
        std::thread::spawn(|| {
            let before = current_thread().unwrap();
            assert_eq!(set_current_thread(WorkerSched::Normal).unwrap(), 0);
            assert_eq!(current_thread().unwrap(), before);
        })
        .join()
        .unwrap();
    }
}
