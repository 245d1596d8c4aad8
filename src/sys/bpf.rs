//! The `bpf(2)` calls of the kernel path (`datapath::kernel`) that aya,
//! which loads the programs and owns the maps, does not make the way the
//! kernel path needs them: attaching a program through a TCX link whose fd
//! this process owns (so that it can be handed to a successor, or closed to
//! detach), and asking which programs an interface has.
//!
//! Every object is an `OwnedFd`. A TCX link detaches its program when its
//! last fd closes, so a crashed or stopped encapd leaves no program behind.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
/// XDP_FLAGS_DRV_MODE (include/uapi/linux/if_link.h): the driver's own
/// (native) XDP, which runs before GRO; never the generic mode, which runs
/// after it.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const BPF_TCX_EGRESS: u32 = 47;

/// Where on an interface a TCX program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcxHook {
    /// Packets the interface receives, before the IP stack.
    Ingress,
    /// Packets leaving through the interface, before its queue.
    Egress,
}

impl TcxHook {
    fn attach_type(self) -> u32 {
        match self {
            TcxHook::Ingress => BPF_TCX_INGRESS,
            TcxHook::Egress => BPF_TCX_EGRESS,
        }
    }

    /// As log lines name it.
    pub fn name(self) -> &'static str {
        match self {
            TcxHook::Ingress => "ingress",
            TcxHook::Egress => "egress",
        }
    }
}

/// `union bpf_attr` for BPF_LINK_CREATE with the `tcx` member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// # Safety
/// `attr` must be the `bpf_attr` layout `cmd` expects, and every address in
/// it must point to memory valid for what the command reads or writes.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees the attribute layout and its pointers.
    cvt(unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) })
}

/// Attaches `program` to interface `ifindex` at `hook`, after any program
/// already there. The returned link fd is the attachment: closing it
/// detaches the program.
pub fn attach_tcx(program: BorrowedFd<'_>, ifindex: u32, hook: TcxHook) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: hook.attach_type(),
        ..Default::default()
    };
    // SAFETY: a LINK_CREATE attribute without pointers.
    let fd = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches XDP `program` to interface `ifindex` in the driver's native
/// mode (refused where the driver has none, or where another XDP program
/// is attached). The returned link fd is the attachment, as with TCX.
pub fn attach_xdp_native(program: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
        ..Default::default()
    };
    // SAFETY: a LINK_CREATE attribute without pointers.
    let fd = unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How many programs are attached to interface `ifindex` at `hook`
/// through TCX (in the calling thread's network namespace).
pub fn tcx_program_count(ifindex: u32, hook: TcxHook) -> io::Result<u32> {
    let mut attr = ProgQueryAttr { target_ifindex: ifindex, attach_type: hook.attach_type(), ..Default::default() };
    // SAFETY: a PROG_QUERY attribute with no id buffers: only the count is written.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    Ok(attr.count)
}

/// The ids of the programs attached to interface `ifindex` at `hook`
/// through TCX (at most 16), for `bpftool prog dump xlated id N`.
pub fn tcx_program_ids(ifindex: u32, hook: TcxHook) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 16];
    let mut attr = ProgQueryAttr {
        target_ifindex: ifindex,
        attach_type: hook.attach_type(),
        prog_ids: ids.as_mut_ptr() as u64,
        count: ids.len() as u32,
        ..Default::default()
    };
    // SAFETY: prog_ids points to `count` u32s, which the kernel fills.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    Ok(ids[..(attr.count as usize).min(ids.len())].to_vec())
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: c is a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asking for the TCX programs of the loopback device needs no program
    /// (and no privilege on a kernel with TCX): zero, or an error naming
    /// the kernel's refusal, never a panic.
    #[test]
    fn a_query_of_an_interface_without_programs_counts_none() {
        match tcx_program_count(ifindex("lo").unwrap(), TcxHook::Ingress) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
    }
}
