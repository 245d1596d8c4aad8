//! What the running kernel's io_uring can do, probed once at start-up.
//!
//! The `uring` engine needs io_uring itself with `READ`, `WRITE`, `WRITEV`,
//! `SENDMSG`, `RECVMSG`, `ASYNC_CANCEL` and submit-with-timeout
//! (`EXT_ARG`, Linux 5.11); without any of those it is unusable and the
//! daemon falls back to the `mmsg` engine. Everything newer is optional,
//! and the engine degrades per missing feature:
//!
//! | feature | kernel | without it |
//! |---|---|---|
//! | provided-buffer rings | 5.19 | neither multishot operation; cancel by operation at shutdown |
//! | multishot `RECVMSG` | 6.0 | a few plain `RECVMSG`s kept in flight, each with its own buffer |
//! | multishot `READ` | 6.7 | a few plain `READ`s kept in flight on the TUN queue |
//! | `COOP_TASKRUN` | 5.19 | completions interrupt the worker (an IPI) instead of waiting for its next `io_uring_enter` |

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, types};

use super::buffers::BufferPool;

/// An optional io_uring feature, as `[dataplane] uring_disable` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UringFeature {
    BufRing,
    MultishotRecv,
    MultishotRead,
    CoopTaskrun,
}

impl UringFeature {
    pub const ALL: [UringFeature; 4] =
        [UringFeature::BufRing, UringFeature::MultishotRecv, UringFeature::MultishotRead, UringFeature::CoopTaskrun];

    pub fn name(self) -> &'static str {
        match self {
            UringFeature::BufRing => "buf_ring",
            UringFeature::MultishotRecv => "multishot_recv",
            UringFeature::MultishotRead => "multishot_read",
            UringFeature::CoopTaskrun => "coop_taskrun",
        }
    }

    pub fn from_name(name: &str) -> Option<UringFeature> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The optional features the engine will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringFeatures {
    /// Provided-buffer rings (5.19); also means `ASYNC_CANCEL_ANY` (5.19).
    pub buf_ring: bool,
    /// Multishot `RECVMSG` over a buffer ring (6.0).
    pub multishot_recv: bool,
    /// Multishot `READ` over a buffer ring (6.7).
    pub multishot_read: bool,
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): the kernel runs the work that
    /// completes an operation (a TUN read woken by a packet) when the worker
    /// next enters the ring, which it does once per loop iteration anyway,
    /// instead of interrupting it. Fewer interruptions and context switches
    /// under load (docs/performance.md).
    pub coop_taskrun: bool,
}

impl UringFeatures {
    /// Every feature (what a current kernel has).
    pub const ALL: UringFeatures = UringFeatures { buf_ring: true, multishot_recv: true, multishot_read: true, coop_taskrun: true };

    /// These features without `disabled` (and without what depends on them).
    pub fn without(self, disabled: &[UringFeature]) -> UringFeatures {
        let mut f = self;
        for d in disabled {
            match d {
                UringFeature::BufRing => f.buf_ring = false,
                UringFeature::MultishotRecv => f.multishot_recv = false,
                UringFeature::MultishotRead => f.multishot_read = false,
                UringFeature::CoopTaskrun => f.coop_taskrun = false,
            }
        }
        // Both multishot operations pick their buffers from a ring.
        f.multishot_recv &= f.buf_ring;
        f.multishot_read &= f.buf_ring;
        f
    }

    /// For the start-up log line and `encapd check`.
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "multishot READ {}, multishot RECVMSG {}, provided-buffer rings {}, cooperative task work {}",
            on(self.multishot_read),
            on(self.multishot_recv),
            on(self.buf_ring),
            on(self.coop_taskrun)
        )
    }
}

/// Checks that io_uring is usable here and which optional features the
/// kernel has; the error says why io_uring is unusable (disabled by sysctl
/// or seccomp, too old a kernel).
pub fn probe() -> io::Result<UringFeatures> {
    let ring = IoUring::new(8)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::Read::CODE, "READ"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks {name}")));
        }
    }
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring lacks EXT_ARG (kernel < 5.11)"));
    }
    drop(ring);
    let buf_ring = has_buf_ring();
    let multishot_read = buf_ring && probe.is_supported(opcode::ReadMulti::CODE);
    // No opcode tells multishot RECVMSG (a flag of RECVMSG, 6.0) apart:
    // try it. A kernel with READ_MULTISHOT (6.7) has it for sure.
    let multishot_recv = buf_ring && (multishot_read || has_multishot_recv());
    let coop_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder().setup_coop_taskrun().build(4).is_ok();
    Ok(UringFeatures { buf_ring, multishot_recv, multishot_read, coop_taskrun })
}

/// Whether a provided-buffer ring can be registered (Linux ≥ 5.19).
fn has_buf_ring() -> bool {
    let Ok(ring) = IoUring::new(4) else { return false };
    let Ok(mut pool) = BufferPool::new(1, 64, 0) else { return false };
    pool.register(&ring).is_ok()
}

/// Whether a multishot `RECVMSG` is accepted: one is armed on a loopback
/// socket and fed one datagram; a kernel without it fails it with EINVAL.
fn has_multishot_recv() -> bool {
    let Ok(rx) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let Ok(addr) = rx.local_addr() else { return false };
    let Ok(mut ring) = IoUring::new(4) else { return false };
    let Ok(mut pool) = BufferPool::new(2, 2048, 0) else { return false };
    if pool.register(&ring).is_err() {
        return false;
    }
    // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control).
    let msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    let recv = opcode::RecvMsgMulti::new(types::Fd(rx.as_raw_fd()), &*msg, 0).build().user_data(1);
    // SAFETY: msg and the registered buffers outlive the operation: it is
    // cancelled and reaped below (or the memory is leaked).
    if unsafe { ring.submission().push(&recv) }.is_err() || ring.submit().is_err() {
        return false;
    }
    let sent = UdpSocket::bind("127.0.0.1:0").and_then(|tx| tx.send_to(b"probe", addr)).is_ok();
    let mut outcome = ProbeRecv::default();
    outcome.wait(&mut ring, |o| o.supported.is_some() || !sent);
    let cancel = opcode::AsyncCancel::new(1).build().user_data(2);
    // SAFETY: a cancel request references no memory.
    let pushed = unsafe { ring.submission().push(&cancel) }.is_ok();
    if pushed {
        outcome.wait(&mut ring, |o| o.ended);
    }
    if !outcome.ended {
        // The kernel may still write into them: never free.
        std::mem::forget(msg);
        pool.leak();
    }
    outcome.supported.unwrap_or(false)
}

/// What the probe's receive did.
#[derive(Default)]
struct ProbeRecv {
    /// Its first completion: a datagram with more to come, or a failure.
    supported: Option<bool>,
    /// It has ended (no completion will follow).
    ended: bool,
}

impl ProbeRecv {
    /// Reaps completions (bounded: 500 ms) until `done`.
    fn wait(&mut self, ring: &mut IoUring, done: impl Fn(&ProbeRecv) -> bool) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while !done(self) && Instant::now() < deadline {
            let _ = ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&types::Timespec::new().nsec(10_000_000)));
            for c in ring.completion().filter(|c| c.user_data() == 1) {
                let more = cqueue::more(c.flags());
                self.supported.get_or_insert(c.result() >= 0 && more);
                self.ended |= !more;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_the_ring_disables_both_multishot_operations() {
        let f = UringFeatures::ALL.without(&[UringFeature::BufRing]);
        assert_eq!(f, UringFeatures { buf_ring: false, multishot_recv: false, multishot_read: false, coop_taskrun: true });
        let f = UringFeatures::ALL.without(&[UringFeature::MultishotRead]);
        assert_eq!(f, UringFeatures { buf_ring: true, multishot_recv: true, multishot_read: false, coop_taskrun: true });
        for feature in UringFeature::ALL {
            assert_eq!(UringFeature::from_name(feature.name()), Some(feature));
        }
    }

    /// This kernel (6.18) has everything; a test host without io_uring skips.
    #[test]
    fn the_probe_finds_what_this_kernel_has() {
        match probe() {
            Ok(f) => {
                if f.multishot_read {
                    assert!(f.buf_ring && f.multishot_recv, "{f:?}");
                }
                eprintln!("io_uring here: {}", f.describe());
            }
            Err(e) => eprintln!("skipped: io_uring unusable here: {e}"),
        }
    }
}
