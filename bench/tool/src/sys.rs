//! The latency probe's system calls, and the only `unsafe` code of
//! encapd-bench (each block says why it is sound): timer slack, socket
//! buffer sizes, and batched datagram I/O (`recvmmsg`/`sendmmsg`).

#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Nanosecond timer slack, so that the pacing sleeps wake on time (the
/// default slack is 50 µs). Inherited by threads spawned afterwards.
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no
    // memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
}

/// Large socket buffers (4 MiB; beyond rmem_max/wmem_max when privileged),
/// so that a burst of replies is not dropped before the receiver runs.
pub fn big_buffers(sock: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        for opt in [force, plain] {
            // SAFETY: the fd is open for the duration of the call and the
            // option value points to a live c_int of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// `n` message slots of `slot` bytes each, with the iovecs, addresses and
/// headers that point into them. The vectors are allocated once and
/// never resized, so the pointers stay valid for the batch's lifetime
/// (moving the struct does not move their heap storage).
pub struct Batch {
    bufs: Vec<u8>,
    slot: usize,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    pub fn new(n: usize, slot: usize) -> Batch {
        let mut bufs = vec![0u8; n * slot];
        let mut iov: Vec<libc::iovec> =
            (0..n).map(|i| libc::iovec { iov_base: bufs[i * slot..].as_mut_ptr().cast(), iov_len: slot }).collect();
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let mut names: Vec<libc::sockaddr_storage> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        let hdrs = (0..n)
            .map(|i| {
                // SAFETY: mmsghdr is plain old data; all-zero is valid.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut iov[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Batch { bufs, slot, iov, names, hdrs }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.slot..(i + 1) * self.slot]
    }

    /// Receives up to `capacity()` datagrams: blocks (up to the socket's
    /// receive timeout) for the first, then takes what is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            self.iov[i].iov_len = self.slot;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers, iovecs and
        // addresses owned by `self` with the lengths set above; the
        // kernel writes at most that much into each.
        let rc = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), self.hdrs.len() as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
    }

    /// Datagram `i` of the last `recv` (truncated to the slot size).
    pub fn datagram(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.slot);
        &self.bufs[i * self.slot..i * self.slot + len]
    }

    /// Source address of datagram `i` of the last `recv`.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        let ss = &self.names[i];
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in,
                // which is smaller than and aligned like sockaddr_storage.
                let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
            }
            _ => None,
        }
    }

    /// Echoes datagrams `0..n` of the last `recv` to their sources
    /// (best effort: a datagram that cannot be sent is skipped).
    pub fn reply_all(&mut self, fd: RawFd, n: usize) {
        for i in 0..n {
            self.iov[i].iov_len = (self.hdrs[i].msg_len as usize).min(self.slot);
        }
        self.send(fd, n);
    }

    /// Sends slots `0..n`, `len` bytes each, on a connected socket;
    /// returns how many went out.
    pub fn send_connected(&mut self, fd: RawFd, n: usize, len: usize) -> usize {
        for i in 0..n {
            self.iov[i].iov_len = len.min(self.slot);
            self.hdrs[i].msg_hdr.msg_namelen = 0;
        }
        self.send(fd, n)
    }

    fn send(&mut self, fd: RawFd, n: usize) -> usize {
        let mut done = 0;
        let mut sent = 0;
        while done < n {
            // SAFETY: headers done..n point at live buffers, iovecs and
            // addresses owned by `self`; the kernel only reads them.
            let rc = unsafe { libc::sendmmsg(fd, self.hdrs[done..].as_mut_ptr(), (n - done) as libc::c_uint, 0) };
            if rc > 0 {
                done += rc as usize;
                sent += rc as usize;
            } else if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            } else {
                done += 1; // skip the datagram that failed
            }
        }
        sent
    }
}
