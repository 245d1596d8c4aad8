//! The running daemon's side: a thread that listens on the control socket
//! and hands the data path to a successor that asks, one connection at a
//! time. It needs no privilege: it only passes on fds the process holds
//! (a second set, duplicated at start, see [`HandoverSource::reserve`]).
//!
//! A session ([`ControlServer`] runs one per connection) either refuses,
//! or hands over and then ends in one of two ways: the successor said
//! `done` (the process exits 0, [`ServerEvent::HandedOver`]), or anything
//! else happened (the successor vanished, gave up, timed out, sent
//! nonsense): the workers are resumed if they were paused, and the daemon
//! forwards on as before. No input on the socket can end the process.
//!
//! It also starts successors itself, on SIGUSR2 and for `encapd upgrade`
//! (see [`successor`](super::successor)), and tells an upgrade client how
//! its successor's takeover ended.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::channel::{Channel, ChannelError};
use super::compat::{Compat, differences};
use super::hooks::{self, Step};
use super::protocol::{
    Abort, Accepted, CarriedCounters, ControlTotals, DataplaneFacts, Hello, Identity, LeaseState, Message, Refused, Released, SUPPORTED,
    Upgrade, UpgradeResult, WorkerFds,
};
use super::successor::{Successor, SuccessorCommand};
use crate::control::ControlCounters;
use crate::control::etcd::OwnLease;
use crate::daemon::dataplane::Dataplane;
use crate::datapath::context::Lifecycle;
use crate::route::SharedTable;
use crate::stats::WorkerCounters;
use crate::sys::fdpass::{SeqpacketConn, SeqpacketListener};

/// How long a client has to say what it wants.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a successor may take to start its workers (with etcd it first
/// reads the network config and the leases, which may wait for etcd).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the workers may take to pause (each finishes what it read).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a successor may take between `released` and `done` (it tells
/// the service manager its pid and waits for the manager to confirm).
const DONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the thread looks at its stop flag, requests and successor.
const POLL: Duration = Duration::from_millis(100);

/// Everything the running daemon hands over, and what it needs to pause.
pub struct HandoverSource {
    /// This daemon's configuration, as resolved.
    pub compat: Compat,
    pub facts: DataplaneFacts,
    /// Duplicates of the workers' fds, to send.
    pub reserve: Dataplane,
    /// Duplicates of the kernel path's fds, to send to a successor that
    /// asks for them (`kernel_path` = "tc" or "auto", attached).
    pub kernel: Option<crate::datapath::kernel::KernelFds>,
    pub counters: Vec<Arc<WorkerCounters>>,
    pub control: Arc<ControlCounters>,
    pub table: SharedTable,
    pub lease: Option<Arc<OwnLease>>,
    pub lifecycle: Arc<Lifecycle>,
    pub successor: SuccessorCommand,
}

/// What the control socket thread tells the main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// Process `pid` owns the data path now: exit 0, without telling the
    /// service manager anything (it follows the successor already).
    HandedOver { pid: u32 },
}

/// How one session ended.
enum Outcome {
    HandedOver,
    /// Refused before anything was handed over.
    Refused(String),
    /// Started, then called off; the workers forward as before.
    Abandoned(String),
    /// Not a successor (an upgrade request, or a connection that said nothing useful).
    Other,
}

/// The running control socket thread; stopped (and joined) on drop.
pub struct ControlServer {
    stop: Arc<AtomicBool>,
    requests: Sender<()>,
    events: Receiver<ServerEvent>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Serves `listener` on a new thread.
    pub fn start(listener: SeqpacketListener, source: HandoverSource) -> std::io::Result<ControlServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, request_rx) = crossbeam_channel::unbounded();
        let (event_tx, events) = crossbeam_channel::bounded(1);
        let state = ServerState { listener, source, stop: Arc::clone(&stop), requests: request_rx, events: event_tx, pending: None };
        let thread = std::thread::Builder::new().name("encapd-takeover".into()).spawn(move || state.run())?;
        Ok(ControlServer { stop, requests, events, thread: Some(thread) })
    }

    /// Starts a successor from the binary on disk (SIGUSR2).
    pub fn spawn_successor(&self) {
        let _ = self.requests.send(());
    }

    /// Waits at most `timeout` for an event.
    pub fn wait_event(&self, timeout: Duration) -> Option<ServerEvent> {
        self.events.recv_timeout(timeout).ok()
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A successor this daemon started, and the upgrade client waiting for it.
struct Pending {
    successor: Successor,
    client: Option<Channel>,
}

struct ServerState {
    listener: SeqpacketListener,
    source: HandoverSource,
    stop: Arc<AtomicBool>,
    requests: Receiver<()>,
    events: Sender<ServerEvent>,
    pending: Option<Pending>,
}

impl ServerState {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if self.requests.try_iter().count() > 0 {
                self.start_successor(None);
            }
            self.reap_successor();
            let conn = match self.listener.accept(POLL) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            if let Some(pid) = self.serve(conn) {
                let _ = self.events.send(ServerEvent::HandedOver { pid });
                return;
            }
        }
    }

    /// Serves one connection; `Some(pid)` once the data path belongs to `pid`.
    fn serve(&mut self, conn: SeqpacketConn) -> Option<u32> {
        let mut channel = Channel::new(conn);
        let peer = match channel.peer() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("control socket: {e}");
                return None;
            }
        };
        let me = super::current_uid();
        if peer.uid != 0 && peer.uid != me {
            log::warn!("control socket: refused pid {} (uid {}): only root or uid {me} may take over", peer.pid, peer.uid);
            let reason = format!("uid {} may not take over (root or uid {me} only)", peer.uid);
            let _ = channel.send(&Message::Refused(Refused { reason, pid: std::process::id() }), &[]);
            return None;
        }
        let outcome = match channel.recv_plain("hello", HELLO_TIMEOUT) {
            Ok(Message::Hello(hello)) => self.hand_over(&mut channel, peer.pid, hello),
            Ok(Message::Upgrade(request)) => {
                self.upgrade(channel, peer.pid, request);
                return None;
            }
            Ok(Message::Who) => {
                let identity = Identity { pid: std::process::id(), netns: self.source.compat.netns, tun: self.source.compat.tun.clone() };
                let _ = channel.send(&Message::Identity(identity), &[]);
                return None;
            }
            Ok(other) => refuse(&channel, format!("expected hello or upgrade, got {}", other.name())),
            Err(e) => {
                log::warn!("control socket: pid {}: {e}", peer.pid);
                Outcome::Other
            }
        };
        let handed_over = matches!(outcome, Outcome::HandedOver);
        self.report_to_upgrade_client(peer.pid, outcome);
        handed_over.then_some(peer.pid)
    }

    /// One handover to the successor `pid`, from its hello to its done.
    fn hand_over(&mut self, channel: &mut Channel, pid: u32, hello: Hello) -> Outcome {
        let Some(version) = SUPPORTED.negotiate(hello.protocol) else {
            let reason = format!(
                "protocol version: the running encapd (pid {}) speaks {SUPPORTED}, the new one {}",
                std::process::id(),
                hello.protocol
            );
            return refuse(channel, reason);
        };
        let diffs = differences(&self.source.compat, &hello.compat);
        if !diffs.is_empty() {
            return refuse(channel, format!("{}; these cannot change in a takeover (stop and start instead)", diffs.join("; ")));
        }
        log::info!("takeover: pid {pid} (encapd {}) takes over, protocol {version}; sending the fds", hello.version);
        if let Err(e) = self.send_everything(channel, version, hello.kernel_fds, hello.kernel_xdp) {
            return abandon(channel, pid, "sending the fds", &e);
        }
        match channel.recv_plain("ready", READY_TIMEOUT) {
            Ok(Message::Ready) => {}
            Ok(Message::Abort(a)) => return abandoned(pid, format!("it gave up before it was ready: {}", a.reason)),
            Ok(other) => {
                let e = ChannelError::Unexpected { expected: "ready", got: other.name() };
                return abandon(channel, pid, "waiting for ready", &e);
            }
            Err(e) => return abandon(channel, pid, "waiting for ready", &e),
        }
        self.release(channel, pid)
    }

    /// Sends `accepted`, every worker's fds and the control socket, and the
    /// kernel path's fds when the successor asked for them (it adopts them
    /// without any privilege, which a predecessor that dropped its own
    /// cannot lend it).
    /// `kernel_xdp`: the successor also takes the XDP link.
    fn send_everything(&self, channel: &Channel, version: u32, kernel_fds: bool, kernel_xdp: bool) -> Result<(), ChannelError> {
        let kernel = self.source.kernel.as_ref().filter(|_| kernel_fds);
        let src = &self.source;
        let accepted = Accepted {
            protocol: version,
            pid: std::process::id(),
            version: super::build_version().to_owned(),
            compat: src.compat.clone(),
            dataplane: src.facts,
            workers: src.reserve.tun_queues.len() as u32,
            table_version: src.table.load().version(),
            lease: src.lease.as_ref().map(|l| LeaseState {
                subnet: l.subnet.to_string(),
                lease_id: l.lease_id(),
                renew_at_unix_ms: l.renew_at_unix_ms(),
            }),
            kernel_path: kernel.is_some(),
        };
        channel.send(&Message::Accepted(accepted), &[])?;
        hooks::pause_at(Step::BeforeFds);
        let reserve = &src.reserve;
        for (i, ((tun, udp), senders)) in reserve.tun_queues.iter().zip(&reserve.sockets).zip(&reserve.senders).enumerate() {
            let mut fds = vec![tun.as_fd(), udp.as_fd()];
            fds.extend(senders.iter().map(|s| s.as_fd()));
            channel.send(&Message::Worker(WorkerFds { index: i as u32, senders: senders.len() as u32 }), &fds)?;
        }
        channel.send(&Message::ControlSocket, &[self.listener.as_fd()])?;
        if let Some(k) = kernel {
            let mut fds = vec![k.links[0].as_fd(), k.links[1].as_fd(), k.routes4.as_fd(), k.routes6.as_fd(), k.counters.as_fd()];
            fds.extend(k.xdp.as_ref().filter(|_| kernel_xdp).map(|x| x.as_fd()));
            channel.send(&Message::KernelPath, &fds)?;
        }
        Ok(())
    }

    /// The successor forwards: pause the workers, send the final counters,
    /// wait for `done`. Anything but `done` resumes the workers.
    fn release(&mut self, channel: &mut Channel, pid: u32) -> Outcome {
        hooks::pause_at(Step::BeforePause);
        let workers = self.source.counters.len();
        if !self.source.lifecycle.pause_all(workers, PAUSE_TIMEOUT) {
            self.source.lifecycle.resume_all();
            let reason = format!("the workers did not pause within {PAUSE_TIMEOUT:?}");
            let _ = channel.send(&Message::Abort(Abort { reason: reason.clone() }), &[]);
            return abandoned(pid, reason);
        }
        hooks::pause_at(Step::BeforeReleased);
        let released = Released {
            counters: self.source.counters.iter().map(|c| CarriedCounters::from(&c.snapshot())).collect(),
            control: ControlTotals {
                tables_published: self.source.control.tables_published.load(Ordering::Relaxed),
                reload_failures: self.source.control.reload_failures.load(Ordering::Relaxed),
                malformed_leases: self.source.control.malformed_leases.load(Ordering::Relaxed),
            },
        };
        let result = channel.send(&Message::Released(released), &[]).and_then(|()| channel.recv_plain("done", DONE_TIMEOUT));
        match result {
            Ok(Message::Done) => {
                log::info!("takeover: pid {pid} owns the data path now; exiting");
                Outcome::HandedOver
            }
            other => {
                self.source.lifecycle.resume_all();
                let why = match other {
                    Ok(Message::Abort(a)) => format!("it gave up: {}", a.reason),
                    Ok(m) => format!("unexpected message {} (waiting for done)", m.name()),
                    Err(e) => e.to_string(),
                };
                abandoned(pid, format!("{why}; workers resumed"))
            }
        }
    }

    /// `encapd upgrade`: start a successor and answer once it is known
    /// how its takeover ended.
    fn upgrade(&mut self, channel: Channel, pid: u32, request: Upgrade) {
        if SUPPORTED.negotiate(request.protocol).is_none() {
            let message = format!("protocol version: the running encapd speaks {SUPPORTED}, `encapd upgrade` {}", request.protocol);
            answer(&channel, UpgradeResult { ok: false, refused: true, pid: None, message });
            return;
        }
        if self.pending.is_some() {
            answer(&channel, UpgradeResult { ok: false, refused: false, pid: None, message: "an upgrade is already under way".into() });
            return;
        }
        log::info!("control socket: pid {pid} asks for an upgrade");
        self.start_successor(Some(channel));
    }

    fn start_successor(&mut self, client: Option<Channel>) {
        if self.pending.is_some() {
            log::warn!("upgrade: a successor is already starting; not starting another");
            return;
        }
        match self.source.successor.spawn() {
            Ok(successor) => self.pending = Some(Pending { successor, client }),
            Err(e) => {
                log::error!("upgrade: {e}");
                if let Some(c) = client {
                    answer(&c, UpgradeResult { ok: false, refused: false, pid: None, message: e.to_string() });
                }
            }
        }
    }

    /// A successor this daemon started has exited without a session: tell
    /// its upgrade client.
    fn reap_successor(&mut self) {
        let Some(pending) = &mut self.pending else { return };
        let Some(status) = pending.successor.exited() else { return };
        let pid = pending.successor.pid();
        log::warn!("upgrade: the new process (pid {pid}) exited ({status}) without taking over; still forwarding");
        if let Some(c) = pending.client.take() {
            let message = format!("the new process (pid {pid}) exited ({status}) without taking over; its log says why");
            answer(&c, UpgradeResult { ok: false, refused: false, pid: Some(pid), message });
        }
        self.pending = None;
    }

    /// Tells the upgrade client (if the session was with the successor it
    /// asked for) how it ended.
    fn report_to_upgrade_client(&mut self, pid: u32, outcome: Outcome) {
        let Some(pending) = self.pending.as_mut().filter(|p| p.successor.pid() == pid) else { return };
        let (ok, refused, message) = match outcome {
            Outcome::HandedOver => (true, false, format!("pid {pid} took over")),
            Outcome::Refused(r) => (false, true, r),
            Outcome::Abandoned(r) => (false, false, r),
            Outcome::Other => return,
        };
        if let Some(c) = pending.client.take() {
            answer(&c, UpgradeResult { ok, refused, pid: Some(pid), message });
        }
        // The successor is left to exit on its own; it is reaped then.
        if ok {
            self.pending = None;
        }
    }
}

fn refuse(channel: &Channel, reason: String) -> Outcome {
    log::warn!("takeover refused: {reason}");
    let _ = channel.send(&Message::Refused(Refused { reason: reason.clone(), pid: std::process::id() }), &[]);
    Outcome::Refused(reason)
}

/// The session failed at `step`: tell the successor (if it still listens).
fn abandon(channel: &Channel, pid: u32, step: &str, e: &ChannelError) -> Outcome {
    let reason = format!("{step}: {e}");
    let _ = channel.send(&Message::Abort(Abort { reason: reason.clone() }), &[]);
    abandoned(pid, reason)
}

fn abandoned(pid: u32, reason: String) -> Outcome {
    log::warn!("takeover by pid {pid} abandoned ({reason}); still forwarding");
    Outcome::Abandoned(reason)
}

fn answer(channel: &Channel, result: UpgradeResult) {
    if let Err(e) = channel.send(&Message::UpgradeResult(result), &[]) {
        log::warn!("upgrade: could not answer the client: {e}");
    }
}
