//! Where this daemon's data path comes from: made here (a fresh start), or
//! handed over by the daemon already running with this configuration
//! (`--takeover`). The lifecycle in the parent module is the same for
//! both; the few steps that differ ask the [`Origin`].

use super::dataplane::Dataplane;
use super::takeover::{self, ControlSocket, Predecessor, SocketError, TakeoverError, compat::Compat};
use super::{DaemonError, Plan};
use crate::config::Config;
use crate::control::ControlCounters;
use crate::control::etcd::HandedLease;
use crate::stats::WorkerCounters;

/// How `encapd run` was asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Create the TUN device and sockets.
    Fresh,
    /// Take them over from the daemon running with this configuration, if
    /// there is one (else start fresh).
    Takeover,
}

/// The data path's origin.
pub enum Origin {
    /// Made here; the control socket (if configured) is bound.
    Fresh(Option<ControlSocket>),
    /// Handed over by `Predecessor` (boxed: it holds the whole handover state).
    Successor(Box<Predecessor>),
}

impl Origin {
    /// Binds the control socket (a fresh start) or joins the running
    /// daemon (a takeover); a takeover without a running daemon starts fresh.
    pub fn open(config: &Config, plan: &Plan, start: Start) -> Result<Origin, DaemonError> {
        if start == Start::Takeover
            && let Some(p) = takeover::join(config, compat(config, plan))?
        {
            return Ok(Origin::Successor(Box::new(p)));
        }
        let Some(path) = &config.control_socket else { return Ok(Origin::Fresh(None)) };
        match takeover::bind_control_socket(path) {
            Ok(socket) => Ok(Origin::Fresh(socket)),
            Err(e @ SocketError::AlreadyRunning { .. }) => Err(e.into()),
            // Forwarding does not need it; only a takeover does.
            Err(e) => {
                log::warn!("{e}; this encapd cannot be taken over (set [process] control_socket to a writable place)");
                Ok(Origin::Fresh(None))
            }
        }
    }

    /// The etcd lease the predecessor held, to carry on with.
    pub fn handed_lease(&self) -> Option<HandedLease> {
        let Origin::Successor(p) = self else { return None };
        let lease = p.accepted.lease.as_ref()?;
        let subnet = lease.subnet.parse().ok()?;
        Some(HandedLease { subnet, lease_id: lease.lease_id })
    }

    /// After etcd resolved the configuration: it must still match the
    /// predecessor's.
    pub fn check_resolved(&self, config: &Config, plan: &Plan) -> Result<(), DaemonError> {
        match self {
            Origin::Successor(p) => Ok(p.check_resolved(&compat(config, plan))?),
            Origin::Fresh(_) => Ok(()),
        }
    }

    /// The first table's version: the predecessor's plus one, so versions
    /// only grow across takeovers.
    pub fn first_table_version(&self) -> u64 {
        match self {
            Origin::Successor(p) => p.accepted.table_version.saturating_add(1),
            Origin::Fresh(_) => 1,
        }
    }

    /// Creates the TUN device and the sockets, or adopts the handed-over ones.
    pub fn dataplane(&mut self, config: &Config, plan: &Plan) -> Result<Dataplane, DaemonError> {
        match self {
            Origin::Fresh(_) => Dataplane::open(config, plan),
            Origin::Successor(p) => {
                let (pid, facts, workers) = (p.pid(), p.accepted.dataplane, p.take_workers());
                Dataplane::adopt(config, facts, workers).map_err(|what| DaemonError::Takeover(TakeoverError::BadFds { pid, what }))
            }
        }
    }

    /// Once this daemon's workers forward: a successor completes the
    /// handover (the predecessor stops and exits). Returns the control
    /// socket to serve.
    pub fn finish(
        self,
        config: &Config,
        counters: &[std::sync::Arc<WorkerCounters>],
        control: &ControlCounters,
    ) -> Result<Option<ControlSocket>, DaemonError> {
        match self {
            Origin::Fresh(socket) => Ok(socket),
            Origin::Successor(mut p) => {
                let listener = p.take_listener();
                p.complete(counters, control)?;
                let path = config.control_socket.as_deref();
                Ok(listener.zip(path).map(|(l, path)| ControlSocket::adopt(l, path)))
            }
        }
    }

    /// The predecessor's kernel path fds, if it handed them over (once).
    pub fn take_kernel(&mut self) -> Option<crate::datapath::kernel::KernelFds> {
        match self {
            Origin::Successor(p) => p.take_kernel(),
            _ => None,
        }
    }

    pub fn is_successor(&self) -> bool {
        matches!(self, Origin::Successor(_))
    }
}

/// What a takeover must not change, for this configuration and plan.
pub fn compat(config: &Config, plan: &Plan) -> Compat {
    let netns = crate::sys::fdpass::network_namespace().unwrap_or(0);
    Compat::of(config, plan.engine.name(), plan.tun_mtu, netns)
}
