//! Worker threads: one per TUN queue, each pinned to a core and owning its
//! queue fd, its UDP socket and (with `uring`) its ring. Workers share
//! nothing writable but their own counters; they read the subnet table
//! through a per-worker replica, refreshed once per batch. A worker runs
//! its I/O engine over a forwarding core for the configured wire format.

use std::thread::JoinHandle;

use super::context::WorkerContext;
use super::engine;
use super::format::flannel_udp::FlannelUdp;
use super::format::vxlan::Vxlan;
use crate::config::{Backend, IoEngine};
use crate::sys::sched::WorkerSched;

/// Starts a named worker thread; it pins itself and runs its engine until
/// the stop flag is set or an I/O error it cannot survive.
pub fn spawn(ctx: WorkerContext) -> std::io::Result<JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new().name(format!("encapd-w{}", ctx.id)).spawn(move || {
        if let Some(cpu) = ctx.cpu
            && !crate::sys::affinity::pin_current_thread(cpu)
        {
            log::warn!("worker {}: could not pin to CPU {cpu}; running unpinned", ctx.id);
        }
        apply_sched(ctx.id, ctx.sched);
        let id = ctx.id;
        let result = match ctx.backend {
            Backend::Udp => run_engine(ctx, FlannelUdp),
            Backend::Vxlan(v) => run_engine(ctx, Vxlan { vni: v.vni, mac: v.vtep_mac }),
            Backend::WireGuard => match ctx.wireguard.clone() {
                Some(wg) => engine::wireguard::run(ctx, wg),
                None => Err(std::io::Error::other("backend = \"wireguard\" without a WireGuard node")),
            },
        };
        if let Err(e) = &result {
            log::error!("worker {id} stopped: {e}");
        }
        result
    })
}

/// Applies `[dataplane] sched` to the calling worker; a kernel that cannot
/// leaves it a normal thread, which forwards all the same.
fn apply_sched(id: usize, sched: WorkerSched) {
    use crate::sys::sched::{SHORT_SLICE_NS, set_current_thread};
    match set_current_thread(sched) {
        Err(e) => log::warn!("worker {id}: sched = {:?} refused ({e}); running with the kernel's default scheduling", sched.name()),
        Ok(slice) if sched == WorkerSched::ShortSlice && slice != SHORT_SLICE_NS => {
            log::warn!("worker {id}: sched = \"short-slice\" has no effect on this kernel (a per-task slice needs Linux 6.12 or later)")
        }
        Ok(_) => {}
    }
}

/// Runs the configured engine over a core speaking `format`.
fn run_engine<W: super::format::WireFormat>(ctx: WorkerContext, format: W) -> std::io::Result<()> {
    match ctx.engine {
        IoEngine::Uring => engine::uring::run(ctx, format),
        IoEngine::Mmsg => engine::mmsg::run(ctx, format),
        IoEngine::Classic => engine::classic::run(ctx, format),
    }
}
