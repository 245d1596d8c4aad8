//! What a worker is given when it starts, and how the main thread talks to
//! it afterwards: the stop and pause flags, and the one-shot "ready" signal
//! a worker sends once its I/O is set up.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::core::CoreSetup;
use crate::config::{Backend, IoEngine};

/// Everything one worker owns.
pub struct WorkerContext {
    pub id: usize,
    pub cpu: Option<usize>,
    /// The scheduling class the worker asks for once it is pinned.
    pub sched: crate::sys::sched::WorkerSched,
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
    /// The WireGuard node every worker shares (`backend = "wireguard"`).
    pub wireguard: Option<std::sync::Arc<crate::wireguard::Node>>,
    pub lifecycle: std::sync::Arc<Lifecycle>,
    pub ready: ReadySignal,
}

/// What the main thread tells running workers: stop, or pause.
///
/// Pausing is how a running encapd hands its data path to a successor
/// without losing a packet: a paused worker has stopped reading its TUN
/// queue and socket, has finished everything it had read (every send and
/// TUN write completed), and waits parked until it is resumed or stopped.
/// What arrives meanwhile waits in the kernel's queues for whoever reads
/// them next.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Finish the current batch and exit.
    pub stop: AtomicBool,
    /// Stop reading, finish what is in flight, park.
    pause: AtomicBool,
    /// Workers parked right now.
    parked: Mutex<usize>,
    changed: Condvar,
}

/// How long a parked worker sleeps between looks at the stop flag.
const PARK_POLL: Duration = Duration::from_millis(50);

/// What a synchronous engine does after [`Lifecycle::checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Carry on forwarding.
    Forward,
    /// It was paused and has been resumed: start the iteration afresh.
    Resumed,
    /// Leave the loop.
    Stop,
}

impl Lifecycle {
    /// False once the worker must stop; checked once per loop iteration.
    #[inline]
    pub fn keep_running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// True when the worker must quiesce and [`park`](Self::park); checked
    /// once per loop iteration.
    #[inline]
    pub fn pause_requested(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    /// The top of a synchronous engine's loop, where every send and write
    /// of the last iteration has completed, so pausing needs nothing more
    /// than not reading: parks here when asked to pause.
    pub fn checkpoint(&self) -> Checkpoint {
        if !self.keep_running() {
            Checkpoint::Stop
        } else if !self.pause_requested() {
            Checkpoint::Forward
        } else if self.park() {
            Checkpoint::Resumed
        } else {
            Checkpoint::Stop
        }
    }

    /// Called by a worker that has quiesced: waits until it is resumed
    /// (true) or stopped (false).
    pub fn park(&self) -> bool {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        *parked += 1;
        self.changed.notify_all();
        while self.pause.load(Ordering::Acquire) && self.keep_running() {
            parked = self.changed.wait_timeout(parked, PARK_POLL).unwrap_or_else(|e| e.into_inner()).0;
        }
        *parked -= 1;
        self.changed.notify_all();
        self.keep_running()
    }

    /// Asks every worker to pause and waits until `workers` of them are
    /// parked; false (workers still asked to pause) if that takes longer
    /// than `timeout`.
    pub fn pause_all(&self, workers: usize, timeout: Duration) -> bool {
        self.pause.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        while *parked < workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            parked = self.changed.wait_timeout(parked, left.min(PARK_POLL)).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Lets paused workers read again.
    pub fn resume_all(&self) {
        self.pause.store(false, Ordering::Release);
        let _guard = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    /// Stops every worker, parked or not.
    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _guard = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
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
    /// ready. True unless the process will switch user from root: glibc
    /// carries a `setuid` to every thread (which clears their
    /// capabilities), and a thread that had already cleared its own would
    /// refuse the switch. A process already running as its `[process]
    /// user` switches nothing, so its workers clear their own.
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
