//! Giving up privileges once the TUN, sockets and rings exist: switching to
//! an unprivileged user and clearing every capability. After setup encapd
//! needs none: it only reads and writes fds it already holds (the TUN
//! disappears when they close, which needs no capability either).

use std::ffi::CString;
use std::io;

use super::cvt;

/// Capability sets of the calling thread (`capget` v3, two 32-bit words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The calling thread's capabilities.
pub fn current_caps() -> io::Result<Caps> {
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs (v3) into `data`.
    cvt(unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) })?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Caps { effective: join(data[0].effective, data[1].effective), permitted: join(data[0].permitted, data[1].permitted) })
}

/// Clears the effective, permitted and inheritable capabilities of the
/// calling thread. `capset` acts on one thread only: each thread that exists
/// at the drop calls this itself (the workers after their setup), and threads
/// started later inherit the empty sets.
pub fn clear_thread_caps() -> io::Result<()> {
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads two CapData structs (v3) from `data`.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) })?;
    Ok(())
}

/// A resolved user to switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Looks up `user` (and `group`, default: the user's primary group).
pub fn resolve(user: &str, group: Option<&str>) -> io::Result<Identity> {
    let name = CString::new(user).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0u8; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf holds the strings.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no such user {user:?}")));
    }
    let mut gid = pwd.pw_gid;
    if let Some(group) = group {
        let gname = CString::new(group).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
        // SAFETY: group is plain old data; all-zero is valid.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut gres: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { libc::getgrnam_r(gname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut gres) };
        if rc != 0 || gres.is_null() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no such group {group:?}")));
        }
        gid = grp.gr_gid;
    }
    Ok(Identity { uid: pwd.pw_uid, gid })
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is plain old data; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

impl Identity {
    /// True when the process already runs as this user and group: a
    /// service manager started it so (systemd's `User=`, with ambient
    /// capabilities), or it is a successor of an unprivileged predecessor.
    /// [`drop_privileges`] then switches nothing, so no `setuid` clears the
    /// other threads' capabilities: each must clear its own.
    pub fn is_current(&self) -> bool {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        unsafe { libc::geteuid() == self.uid && libc::getegid() == self.gid }
    }
}

/// Switches the whole process to `to` (if given) and clears all
/// capabilities. Called once, after setup, from the main thread; glibc
/// applies set*id to every thread. Already running as `to`: only the
/// capabilities are cleared. Returns the capabilities left (expected: none).
pub fn drop_privileges(to: Option<Identity>) -> io::Result<Caps> {
    // A process already running as that user has nothing to switch, and
    // may not call setgroups.
    if let Some(id) = to.filter(|id| !id.is_current()) {
        // SAFETY: setgroups with an empty list reads nothing.
        cvt(unsafe { libc::setgroups(0, std::ptr::null()) })?;
        // SAFETY: plain syscalls with integer arguments.
        cvt(unsafe { libc::setgid(id.gid) })?;
        // SAFETY: as above. Switching uid from 0 clears the capability sets.
        cvt(unsafe { libc::setuid(id.uid) })?;
    }
    clear_thread_caps()?;
    current_caps()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_and_rejects_unknown_users() {
        assert_eq!(resolve("root", None).unwrap(), Identity { uid: 0, gid: 0 });
        assert!(resolve("no-such-user-encapd", None).is_err());
        assert!(resolve("root", Some("no-such-group-encapd")).is_err());
    }

    #[test]
    fn clearing_caps_on_a_thread_leaves_none() {
        // On a thread of its own: capset affects only the calling thread, so
        // the test process keeps its capabilities.
        let caps = std::thread::spawn(|| {
            clear_thread_caps().unwrap();
            current_caps().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(caps, Caps::default());
    }
}
