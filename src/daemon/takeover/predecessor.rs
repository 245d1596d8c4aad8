//! The successor's side: [`join`] connects to the running daemon, says
//! hello with this process's configuration, and receives everything it
//! hands over; once the daemon's own workers run on those fds,
//! [`Predecessor::complete`] finishes the handover (ready → released →
//! done) and carries its counters on.
//!
//! If the predecessor vanishes half-way (its connection closes and its
//! process is gone), what happens depends on what this process holds:
//! before it has every fd, it drops what it got and starts normally (the
//! TUN went with the predecessor); after, it carries on alone with the
//! fds it has. If the predecessor is alive but the session broke, this
//! process gives up (the predecessor resumes): two owners never forward
//! at once for long.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::channel::{Channel, ChannelError};
use super::compat::{Compat, differences};
use super::hooks::{self, Step};
use super::protocol::{Abort, Accepted, Hello, Message, Released};
use crate::config::Config;
use crate::control::ControlCounters;
use crate::daemon::dataplane::InheritedWorker;
use crate::stats::WorkerCounters;
use crate::sys::fdpass::{SeqpacketConn, SeqpacketListener};

/// How long the running daemon may take to answer the hello (it serves one
/// connection at a time; another takeover may be under way).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two messages of the fd transfer.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the predecessor may take to pause its workers and answer `ready`.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed connection's process may take to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(2);
/// How long the service manager may take to confirm `MAINPID=`.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TUN of a predecessor that died may take to disappear.
const TUN_GONE_WITHIN: Duration = Duration::from_secs(3);
/// More workers than any machine has cores: a peer claiming this many is confused.
const MAX_WORKERS: u32 = 4096;

/// Why this process could not take over.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// The running daemon said no: a configuration or version difference.
    #[error("takeover refused by the running encapd (pid {pid}): {reason}")]
    Refused { pid: u32, reason: String },
    #[error("control socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("handover with the running encapd (pid {pid}): {source}")]
    Channel { pid: u32, source: ChannelError },
    #[error("the running encapd (pid {pid}) called the handover off: {reason}")]
    Aborted { pid: u32, reason: String },
    /// An fd was not what the protocol said it was.
    #[error("the running encapd (pid {pid}) handed over {what}")]
    BadFds { pid: u32, what: String },
}

impl TakeoverError {
    /// 2 for a refusal (the configuration cannot be handed over), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if matches!(self, TakeoverError::Refused { .. }) { 2 } else { 1 }
    }
}

/// The running daemon this process is taking over from, and what it handed over.
pub struct Predecessor {
    channel: Channel,
    pid: u32,
    pub accepted: Accepted,
    workers: Vec<InheritedWorker>,
    listener: Option<SeqpacketListener>,
    /// The kernel path's fds, when the predecessor ran it.
    kernel: Option<crate::datapath::kernel::KernelFds>,
    completed: bool,
}

/// Connects to the daemon running with `config`'s control socket and takes
/// its fds, or `Ok(None)` (logged) when there is none to take over from.
pub fn join(config: &Config, compat: Compat) -> Result<Option<Predecessor>, TakeoverError> {
    let Some(path) = &config.control_socket else {
        log::info!("takeover: [process] control_socket = \"off\": no running encapd can be found; starting normally");
        return Ok(None);
    };
    let conn = match SeqpacketConn::connect(path) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            log::info!("takeover: no running encapd at {} ({e}); starting normally", path.display());
            return Ok(None);
        }
        Err(source) => return Err(TakeoverError::Connect { path: path.clone(), source }),
    };
    let mut channel = Channel::new(conn);
    // Until the daemon says its pid (a listening socket's credentials are
    // its creator's, perhaps a predecessor long gone), errors name none.
    let hello = Hello {
        protocol: hooks::offered_versions(),
        pid: std::process::id(),
        version: super::build_version().to_owned(),
        compat,
        kernel_fds: true,
        kernel_xdp: true,
    };
    let predecessor = match receive_all(&mut channel, hello) {
        Ok((accepted, workers, listener, kernel)) => {
            Predecessor { channel, pid: accepted.pid, accepted, workers, listener: Some(listener), kernel, completed: false }
        }
        Err(TakeoverError::Channel { pid, source: ChannelError::Closed(_) }) if pid != 0 && process_gone(pid, GONE_WITHIN) => {
            log::warn!("takeover: the running encapd (pid {pid}) went away during the handover; starting normally");
            wait_device_gone(&config.tun, TUN_GONE_WITHIN);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let (a, pid) = (&predecessor.accepted, predecessor.pid);
    log::info!(
        "takeover: pid {pid} (encapd {}) handed over {} workers, protocol {}, table version {}{}",
        a.version,
        a.workers,
        a.protocol,
        a.table_version,
        a.lease.as_ref().map(|l| format!(", etcd lease {:x} on {}", l.lease_id, l.subnet)).unwrap_or_default()
    );
    hooks::pause_at(Step::AfterFds);
    Ok(Some(predecessor))
}

type Handed = (Accepted, Vec<InheritedWorker>, SeqpacketListener, Option<crate::datapath::kernel::KernelFds>);

/// Hello, then `accepted`, every worker's fds and the control socket.
fn receive_all(channel: &mut Channel, hello: Hello) -> Result<Handed, TakeoverError> {
    let compat = hello.compat.clone();
    let unknown = |source| TakeoverError::Channel { pid: 0, source };
    channel.send(&Message::Hello(hello), &[]).map_err(unknown)?;
    let accepted = match channel.recv_plain("accepted", ACCEPT_TIMEOUT).map_err(unknown)? {
        Message::Accepted(a) => a,
        Message::Refused(r) => return Err(TakeoverError::Refused { pid: r.pid, reason: r.reason }),
        other => return Err(unknown(ChannelError::Unexpected { expected: "accepted", got: other.name() })),
    };
    let pid = accepted.pid;
    let err = |source| TakeoverError::Channel { pid, source };
    // The running daemon checked this already; a build with other rules
    // must not hand over what this build cannot run on.
    let diffs = differences(&accepted.compat, &compat);
    if !diffs.is_empty() || accepted.workers > MAX_WORKERS {
        let reason = if diffs.is_empty() { format!("{} workers", accepted.workers) } else { diffs.join("; ") };
        let _ = channel.send(&Message::Abort(Abort { reason: reason.clone() }), &[]);
        return Err(TakeoverError::Refused { pid, reason });
    }
    let mut workers = Vec::with_capacity(accepted.workers as usize);
    for index in 0..accepted.workers {
        let (message, fds) = channel.recv("worker", TRANSFER_TIMEOUT).map_err(err)?;
        workers.push(inherited_worker(message, fds, index).map_err(|what| TakeoverError::BadFds { pid, what })?);
    }
    let (message, mut fds) = channel.recv("control_socket", TRANSFER_TIMEOUT).map_err(err)?;
    let listener = match (message, fds.len()) {
        (Message::ControlSocket, 1) => SeqpacketListener::from_fd(fds.remove(0))
            .map_err(|e| TakeoverError::BadFds { pid, what: format!("a control socket that is not one: {e}") })?,
        (m, n) => return Err(TakeoverError::BadFds { pid, what: format!("{} with {n} fds where the control socket was due", m.name()) }),
    };
    let kernel = if accepted.kernel_path {
        let (message, fds) = channel.recv("kernel_path", TRANSFER_TIMEOUT).map_err(err)?;
        let n = fds.len();
        match message {
            Message::KernelPath => Some(
                crate::datapath::kernel::KernelFds::from_vec(fds)
                    .ok_or_else(|| TakeoverError::BadFds { pid, what: format!("kernel_path with {n} fds where 5 or 6 were due") })?,
            ),
            m => return Err(TakeoverError::BadFds { pid, what: format!("{} where the kernel path's fds were due", m.name()) }),
        }
    } else {
        None
    };
    Ok((accepted, workers, listener, kernel))
}

/// One `worker` message: its fds in their order.
fn inherited_worker(message: Message, fds: Vec<OwnedFd>, index: u32) -> Result<InheritedWorker, String> {
    let w = match message {
        Message::Worker(w) => w,
        other => return Err(format!("{} where worker {index}'s fds were due", other.name())),
    };
    if w.index != index || fds.len() != 2 + w.senders as usize {
        return Err(format!("worker {} with {} fds ({} senders) where worker {index}'s were due", w.index, fds.len(), w.senders));
    }
    let mut fds = fds.into_iter();
    let (Some(tun), Some(udp)) = (fds.next(), fds.next()) else { return Err(format!("worker {index} without its fds")) };
    Ok(InheritedWorker { tun, udp, senders: fds.collect() })
}

impl Predecessor {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The workers' fds (once).
    pub fn take_workers(&mut self) -> Vec<InheritedWorker> {
        std::mem::take(&mut self.workers)
    }

    /// The kernel path's fds, if the predecessor handed them over (once).
    pub fn take_kernel(&mut self) -> Option<crate::datapath::kernel::KernelFds> {
        self.kernel.take()
    }

    /// The control socket, listening (once).
    pub fn take_listener(&mut self) -> Option<SeqpacketListener> {
        self.listener.take()
    }

    /// Checks what etcd resolved against what the predecessor ran with
    /// (etcd's network config may have changed in between).
    pub fn check_resolved(&self, resolved: &Compat) -> Result<(), TakeoverError> {
        let diffs = differences(&self.accepted.compat, resolved);
        if diffs.is_empty() {
            return Ok(());
        }
        Err(TakeoverError::Refused { pid: self.pid, reason: format!("{} (as etcd has it now)", diffs.join("; ")) })
    }

    /// This process's workers forward on the handed-over fds: tells the
    /// predecessor to stop reading, carries its final counters on, tells
    /// the service manager that this process is the main one now, and
    /// releases the predecessor.
    pub fn complete(mut self, counters: &[Arc<WorkerCounters>], control: &ControlCounters) -> Result<(), TakeoverError> {
        hooks::pause_at(Step::BeforeReady);
        let released = self.exchange_ready()?;
        if let Some(r) = &released {
            carry(r, counters, control);
        }
        notify_manager(self.pid);
        hooks::pause_at(Step::BeforeDone);
        if released.is_some()
            && let Err(e) = self.channel.send(&Message::Done, &[])
        {
            self.alone_or(e)?;
        }
        self.completed = true;
        log::info!("takeover from pid {} complete", self.pid);
        Ok(())
    }

    /// Sends `ready` and waits for `released`; `None` when the predecessor
    /// went away meanwhile (this process carries on alone).
    fn exchange_ready(&mut self) -> Result<Option<Released>, TakeoverError> {
        if let Err(e) = self.channel.send(&Message::Ready, &[]) {
            return self.alone_or(e).map(|()| None);
        }
        match self.channel.recv_plain("released", RELEASE_TIMEOUT) {
            Ok(Message::Released(r)) => Ok(Some(r)),
            Ok(Message::Abort(a)) => Err(TakeoverError::Aborted { pid: self.pid, reason: a.reason }),
            Ok(other) => {
                Err(TakeoverError::Channel { pid: self.pid, source: ChannelError::Unexpected { expected: "released", got: other.name() } })
            }
            Err(e) => self.alone_or(e).map(|()| None),
        }
    }

    /// The session broke: fine if the predecessor is gone (this process
    /// owns everything now), an error if it is still there.
    fn alone_or(&self, e: ChannelError) -> Result<(), TakeoverError> {
        if process_gone(self.pid, GONE_WITHIN) {
            log::warn!("takeover: the running encapd (pid {}) went away during the handover ({e}); carrying on alone", self.pid);
            return Ok(());
        }
        Err(TakeoverError::Channel { pid: self.pid, source: e })
    }
}

impl Drop for Predecessor {
    fn drop(&mut self) {
        if !self.completed {
            let reason = "the new process stopped before completing the takeover (its log says why)".to_owned();
            let _ = self.channel.send(&Message::Abort(Abort { reason }), &[]);
        }
    }
}

/// Adds the predecessor's final counts to this process's.
fn carry(released: &Released, counters: &[Arc<WorkerCounters>], control: &ControlCounters) {
    for (mine, theirs) in counters.iter().zip(&released.counters) {
        let (snapshot, unknown) = theirs.to_snapshot();
        if !unknown.is_empty() {
            log::warn!("takeover: drop reasons this build does not know were not carried over: {}", unknown.join(", "));
        }
        mine.carry(&snapshot);
    }
    control.tables_published.fetch_add(released.control.tables_published, Ordering::Relaxed);
    control.reload_failures.fetch_add(released.control.reload_failures, Ordering::Relaxed);
    control.malformed_leases.fetch_add(released.control.malformed_leases, Ordering::Relaxed);
}

/// Tells the service manager (if any) that this process is the service's
/// main process now and ready, and waits until it has taken that in:
/// only then may the predecessor exit without the manager taking the
/// service for dead.
fn notify_manager(predecessor: u32) {
    let state = format!("MAINPID={}\nREADY=1\nSTATUS=forwarding (took over from pid {predecessor})", std::process::id());
    match crate::sys::notify::notify(&state) {
        Ok(false) => return,
        Ok(true) => {}
        Err(e) => {
            log::warn!("could not notify the service manager: {e}");
            return;
        }
    }
    if let Err(e) = crate::sys::notify::barrier(BARRIER_TIMEOUT) {
        log::warn!("the service manager did not confirm MAINPID={}: {e}", std::process::id());
    }
}

/// True once process `pid` has exited with all its threads (so every fd it
/// held is closed), waiting up to `within`. A killed process's main thread
/// turns zombie before its other threads are gone; until they are, its fds
/// (the control socket among them) are still open.
fn process_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => true,
            Ok(status) => {
                let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
                let zombie = matches!(field("State:").chars().next(), Some('Z' | 'X'));
                zombie && field("Threads:") == "1"
            }
        };
        if gone || Instant::now() >= deadline {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most `within`) until the TUN device `name` of a predecessor
/// that died is gone, so that this process can create it afresh: the
/// kernel releases the last queue only once the dead process's io_uring
/// rings are torn down, a little after the process itself is gone.
fn wait_device_gone(name: &str, within: Duration) {
    let started = Instant::now();
    while crate::sys::tun::device_exists(name) {
        if started.elapsed() >= within {
            log::warn!("takeover: TUN {name} still exists {within:?} after its encapd went away; creating it may fail");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if started.elapsed() >= Duration::from_millis(10) {
        log::info!("takeover: TUN {name} was gone {:?} after its encapd", started.elapsed());
    }
}
