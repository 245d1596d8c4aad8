//! Unix `SOCK_SEQPACKET` sockets that carry whole messages with file
//! descriptors attached (`SCM_RIGHTS`, unix(7)): the control socket over
//! which a running encapd hands its data path to its successor.
//!
//! Promises:
//! - every fd exists as an `OwnedFd` from the moment the kernel returns it
//!   (sockets, accepted connections, and each fd received in a message,
//!   with `MSG_CMSG_CLOEXEC` so none leaks into a spawned process);
//! - a message is received whole or not at all: a truncated payload or
//!   truncated control data is an error, and any fd that did arrive with it
//!   is closed (dropped) before the error returns;
//! - sends never raise `SIGPIPE` (`MSG_NOSIGNAL`): a peer that died is an
//!   `EPIPE` error, not the end of the process;
//! - every wait has a timeout; nothing here blocks forever on a peer.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::cvt;

/// Most fds one message may carry. The kernel allows 253 (`SCM_MAX_FD`);
/// a worker's TUN queue, socket and eight VXLAN senders are ten.
pub const MAX_FDS: usize = 16;

/// Bytes of control data for [`MAX_FDS`] descriptors (`CMSG_SPACE`), as u64
/// words so the buffer is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = (mem::size_of::<libc::cmsghdr>() + MAX_FDS * mem::size_of::<RawFd>()).div_ceil(8) + 1;

/// Who is at the other end of a connection (`SO_PEERCRED`: the peer's
/// credentials when it connected, or when the listener was created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A listening `SOCK_SEQPACKET` socket.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: OwnedFd,
}

/// One connected `SOCK_SEQPACKET` socket.
#[derive(Debug)]
pub struct SeqpacketConn {
    fd: OwnedFd,
}

/// One message as received: its length in the caller's buffer and the fds
/// that came with it.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(); the fd is wrapped in OwnedFd at once.
    let raw = cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: raw is a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `path` as a `sockaddr_un` and its length; a path that does not fit
/// (107 bytes and a NUL) or contains a NUL is refused.
fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unix socket path must be 1 to {} bytes without NUL", addr.sun_path.len() - 1),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn socket_int_option(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the stated size.
    cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, (&mut value as *mut libc::c_int).cast(), &mut len) })?;
    Ok(value)
}

/// Waits until `fd` has one of `events` (or an error or hangup), at most
/// until `deadline`. Returns the events seen, 0 on timeout.
pub fn wait_for_events(fd: BorrowedFd<'_>, events: libc::c_short, deadline: Instant) -> io::Result<libc::c_short> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
        // SAFETY: p is one valid pollfd for the duration of the call.
        match cvt(unsafe { libc::poll(&mut p, 1, ms) }) {
            Ok(0) => return Ok(0),
            Ok(_) => return Ok(p.revents),
            Err(e) if e.kind() == io::ErrorKind::Interrupted && Instant::now() < deadline => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

impl SeqpacketListener {
    /// Binds `path` (which must not exist) with mode 0600 and listens.
    pub fn bind(path: &Path) -> io::Result<SeqpacketListener> {
        let fd = seqpacket_socket()?;
        let (addr, len) = sockaddr_un(path)?;
        // Only the owner may connect: whoever connects can take the data
        // path. fchmod on an unbound socket sets the mode its file gets.
        // SAFETY: plain fchmod on a valid fd.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
        // SAFETY: addr is a valid sockaddr_un of `len` bytes.
        cvt(unsafe { libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) })?;
        // SAFETY: plain listen on a valid, bound socket.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 8) })?;
        Ok(SeqpacketListener { fd })
    }

    /// Takes over a listening socket received from another process; refuses
    /// an fd that is not a listening `SOCK_SEQPACKET` socket.
    pub fn from_fd(fd: OwnedFd) -> io::Result<SeqpacketListener> {
        let kind = socket_int_option(fd.as_fd(), libc::SO_TYPE)?;
        let listening = socket_int_option(fd.as_fd(), libc::SO_ACCEPTCONN)?;
        if kind != libc::SOCK_SEQPACKET || listening == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a listening SOCK_SEQPACKET socket"));
        }
        Ok(SeqpacketListener { fd })
    }

    /// Accepts one connection, waiting at most `timeout`; `None` when none came.
    pub fn accept(&self, timeout: Duration) -> io::Result<Option<SeqpacketConn>> {
        if wait_for_events(self.fd.as_fd(), libc::POLLIN, Instant::now() + timeout)? == 0 {
            return Ok(None);
        }
        // SAFETY: null address arguments are allowed; the result is a new fd.
        let raw = unsafe { libc::accept4(self.fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        match cvt(raw) {
            // SAFETY: accept4 returned a fresh fd nobody else owns.
            Ok(raw) => Ok(Some(SeqpacketConn { fd: unsafe { OwnedFd::from_raw_fd(raw) } })),
            // The connection went away between poll and accept.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ECONNABORTED) | Some(libc::EINTR)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for SeqpacketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl SeqpacketConn {
    /// Connects to the listener at `path`.
    pub fn connect(path: &Path) -> io::Result<SeqpacketConn> {
        let fd = seqpacket_socket()?;
        let (addr, len) = sockaddr_un(path)?;
        // SAFETY: addr is a valid sockaddr_un of `len` bytes.
        cvt(unsafe { libc::connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) })?;
        Ok(SeqpacketConn { fd })
    }

    /// Two connected ends (for tests of the protocol over a real socket).
    pub fn pair() -> io::Result<(SeqpacketConn, SeqpacketConn)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds has room for the two fds socketpair writes.
        cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
        // SAFETY: socketpair returned two fresh fds nobody else owns.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((SeqpacketConn { fd: a }, SeqpacketConn { fd: b }))
    }

    /// The credentials of the process at the other end.
    pub fn peer(&self) -> io::Result<PeerCred> {
        // SAFETY: ucred is plain old data; all-zero is valid.
        let mut cred: libc::ucred = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for writes of the stated size.
        cvt(unsafe {
            libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
        })?;
        Ok(PeerCred { pid: cred.pid as u32, uid: cred.uid, gid: cred.gid })
    }

    /// Sends `bytes` as one message with `fds` attached, waiting at most
    /// `timeout` for room in the peer's queue.
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<()> {
        if wait_for_events(self.fd.as_fd(), libc::POLLOUT, Instant::now() + timeout)? == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "peer did not take the message in time"));
        }
        let sent = send_with_fds(self.fd.as_fd(), bytes, fds, libc::MSG_DONTWAIT)?;
        if sent != bytes.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "message sent in part"));
        }
        Ok(())
    }

    /// Receives one message into `buf`, waiting at most `timeout`. A
    /// message longer than `buf`, or with more than [`MAX_FDS`] fds, is an
    /// `InvalidData` error (its fds are closed); the peer closing the
    /// connection is `UnexpectedEof`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Received> {
        let revents = wait_for_events(self.fd.as_fd(), libc::POLLIN, Instant::now() + timeout)?;
        if revents == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no message from the peer in time"));
        }
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; CONTROL_WORDS];
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control);
        // SAFETY: every pointer in msg refers to memory that outlives the
        // call (buf, iov, control), with the lengths stated.
        let n = cvt(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) })?;
        // Take ownership of every fd first, so that any error below closes them.
        // SAFETY: msg is the header recvmsg just filled in, over `control`.
        let fds = unsafe { received_fds(&msg) };
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message with more than {MAX_FDS} fds")));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message longer than {} bytes", buf.len())));
        }
        if n == 0 && fds.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection"));
        }
        Ok(Received { len: n as usize, fds })
    }
}

impl AsFd for SeqpacketConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Sends `bytes` with `fds` attached on a connected socket (stream,
/// datagram or seqpacket) with one `sendmsg`; returns the bytes sent.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>], flags: libc::c_int) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("more than {MAX_FDS} fds in one message")));
    }
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = (fds.len() * mem::size_of::<RawFd>()) as libc::c_uint;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        // SAFETY: msg_control points at `control`, which holds at least
        // CMSG_SPACE(MAX_FDS fds) bytes, so the first header and its data
        // (fds.len() <= MAX_FDS ints) lie inside it; CMSG_FIRSTHDR is
        // non-null because msg_controllen >= sizeof(cmsghdr).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: every pointer in msg refers to memory that outlives the call;
    // the kernel duplicates the fds, which stay borrowed (open) throughout.
    let n = cvt(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) })?;
    Ok(n as usize)
}

/// The fds in the `SCM_RIGHTS` messages of a received header, owned.
///
/// # Safety
/// `msg` must be a header that `recvmsg` has just filled in, whose control
/// buffer is still alive; each fd in it is owned by the caller from now on.
unsafe fn received_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_control.is_null() || msg.msg_controllen == 0 {
        return fds;
    }
    // SAFETY: the caller guarantees msg and its control buffer are valid;
    // CMSG_FIRSTHDR/CMSG_NXTHDR only return headers that lie within
    // msg_controllen, and each header's data holds cmsg_len - CMSG_LEN(0)
    // bytes, which the kernel wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let data_len = header.cmsg_len.saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..data_len / mem::size_of::<RawFd>() {
                    let raw = data.add(i).read_unaligned();
                    if raw >= 0 {
                        fds.push(OwnedFd::from_raw_fd(raw));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

/// The inode of the calling process's network namespace (what
/// `/proc/self/ns/net` links to): two processes share a namespace exactly
/// when these are equal.
pub fn network_namespace() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn temp_file(text: &str) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("encapd-fdpass-{}-{}", std::process::id(), text.len()));
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn a_message_carries_its_fds() {
        let (a, b) = SeqpacketConn::pair().unwrap();
        let f = temp_file("hello through SCM_RIGHTS");
        a.send(b"one", &[f.as_fd()], Duration::from_secs(1)).unwrap();
        let mut buf = [0u8; 64];
        let got = b.recv(&mut buf, Duration::from_secs(1)).unwrap();
        assert_eq!(&buf[..got.len], b"one");
        assert_eq!(got.fds.len(), 1);
        let mut copy = std::fs::File::from(got.fds.into_iter().next().unwrap());
        copy.rewind().unwrap();
        let mut text = String::new();
        copy.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello through SCM_RIGHTS");
    }

    #[test]
    fn oversized_messages_and_closed_peers_are_errors() {
        let (a, b) = SeqpacketConn::pair().unwrap();
        let f = temp_file("x");
        a.send(&[7u8; 100], &[f.as_fd(), f.as_fd()], Duration::from_secs(1)).unwrap();
        let mut small = [0u8; 10];
        let e = b.recv(&mut small, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let e = b.recv(&mut small, Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        let too_many: Vec<BorrowedFd<'_>> = (0..=MAX_FDS).map(|_| f.as_fd()).collect();
        assert!(a.send(b"x", &too_many, Duration::from_secs(1)).is_err());
        drop(a);
        let e = b.recv(&mut small, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        // Sending to a closed peer is an error, not SIGPIPE.
        let (c, d) = SeqpacketConn::pair().unwrap();
        drop(d);
        assert!(c.send(b"x", &[], Duration::from_secs(1)).is_err());
    }

    #[test]
    fn listener_binds_accepts_and_is_owner_only() {
        let dir = std::env::temp_dir().join(format!("encapd-fdpass-l-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let listener = SeqpacketListener::bind(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(listener.accept(Duration::from_millis(20)).unwrap().is_none());
        let client = SeqpacketConn::connect(&path).unwrap();
        let server = listener.accept(Duration::from_secs(1)).unwrap().expect("a connection");
        assert_eq!(server.peer().unwrap().pid, std::process::id());
        client.send(b"ping", &[], Duration::from_secs(1)).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(server.recv(&mut buf, Duration::from_secs(1)).unwrap().len, 4);
        // The listener survives a trip through an fd.
        let again = SeqpacketListener::from_fd(listener.fd.try_clone().unwrap()).unwrap();
        assert!(again.accept(Duration::from_millis(10)).unwrap().is_none());
        assert!(SeqpacketListener::from_fd(client.fd.try_clone().unwrap()).is_err());
        assert!(sockaddr_un(&dir.join("x".repeat(120))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
