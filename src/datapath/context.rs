//! What a worker is given when it starts, and how the main thread talks to
//! it afterwards: the stop flag, and the one-shot "ready" signal a worker
//! sends once its I/O is set up.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::core::CoreSetup;
use crate::config::{Backend, IoEngine};

/// Everything one worker owns.
pub struct WorkerContext {
    pub id: usize,
    pub cpu: Option<usize>,
    pub engine: IoEngine,
    pub backend: Backend,
    /// This worker's TUN queue and UDP socket.
    pub tun: OwnedFd,
    pub udp: OwnedFd,
    /// Sockets to send from, one per source port, picked by flow (VXLAN);
    /// empty: send from `udp`.
    pub senders: Vec<OwnedFd>,
    /// TUN reads handled per loop iteration (in flight, with `uring`).
    pub batch: usize,
    /// The io_uring features the `uring` engine may use.
    pub uring: crate::sys::uring::UringFeatures,
    /// Poll for completions this long after the last one before sleeping
    /// (`uring`; zero: sleep at once).
    pub busy_poll: std::time::Duration,
    pub core: CoreSetup,
    pub lifecycle: std::sync::Arc<Lifecycle>,
    pub ready: ReadySignal,
}

/// What the main thread tells running workers.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Finish the current batch and exit.
    pub stop: AtomicBool,
}

impl Lifecycle {
    /// False once the worker must stop; checked once per loop iteration.
    #[inline]
    pub fn keep_running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// Tells the main thread, once, that a worker's I/O is set up.
pub struct ReadySignal {
    worker: usize,
    tx: Option<crossbeam_channel::Sender<usize>>,
    clear_caps: bool,
}

impl ReadySignal {
    /// `clear_caps`: the worker clears its own capabilities before it says
    /// ready. True unless the process will switch user: glibc carries a
    /// `setuid` to every thread (which clears their capabilities), and a
    /// thread that had already cleared its own would refuse the switch.
    pub fn new(worker: usize, tx: crossbeam_channel::Sender<usize>, clear_caps: bool) -> ReadySignal {
        ReadySignal { worker, tx: Some(tx), clear_caps }
    }

    /// Called by an engine once its fds and ring exist. Without a user
    /// switch the worker gives up every capability of its own thread first
    /// (`capset` acts per thread, and forwarding needs none), so that by the
    /// time the main thread hears "ready" from every worker and drops its
    /// own, no thread of the process holds one.
    pub fn announce(&mut self) {
        if self.clear_caps
            && let Err(e) = crate::sys::privileges::clear_thread_caps()
        {
            log::warn!("worker {}: could not clear its capabilities: {e}", self.worker);
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(self.worker);
        }
    }
}
