//! UDP sockets for the underlay: `SO_REUSEPORT` so every worker binds its own
//! socket to the same address, large buffers, `UDP_GRO` on receive and
//! `UDP_SEGMENT` (GSO) control messages on send; plus sockaddr conversions
//! and the cmsg parsing shared by all engines.

use std::io::{self, IoSlice};
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;
use super::mem::PageBuf;

/// `SOL_UDP` option numbers (linux/udp.h), not all exported by libc.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Room for one cmsg carrying a u16 (GSO size) or an int (GRO size).
pub const CMSG_SPACE_U32: usize = 24;

/// Segments per UDP GSO send. The kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels (raised to 128 in 5.x); 64 works everywhere.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Bytes per UDP GSO send: the payload of one maximal UDP datagram, with
/// room to spare for an IPv6 header.
pub const MAX_GSO_BYTES: usize = 65_000;
/// Longest encapsulation header a send may put in front of each datagram's
/// payload (see `UringIo::send`).
pub const MAX_ENCAP_HEADER: usize = 32;

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: value lives for the call; its size is passed alongside.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&value as *const T).cast(), mem::size_of::<T>() as libc::socklen_t) })?;
    Ok(())
}

/// Makes the socket send IPv4 datagrams without a UDP checksum
/// (`SO_NO_CHECK`), as the kernel's own tunnels and encapd's kernel path
/// send them (the end-to-end tests send such datagrams, which the kernel
/// path's `decap` takes without a device having verified them).
pub fn send_without_checksum(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` lives for the call; its size is passed alongside.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Options for an underlay socket.
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    pub buffer_bytes: usize,
    /// Ask for coalesced receives (`UDP_GRO`).
    pub gro: bool,
}

/// Creates a blocking UDP socket bound to `addr` with `SO_REUSEPORT`.
/// Receives that must not block pass `MSG_DONTWAIT`.
/// Returns the socket and whether GRO was enabled.
pub fn bind(addr: SocketAddr, opts: UdpOptions) -> io::Result<(OwnedFd, bool)> {
    bind_with(addr, opts, true)
}

fn bind_with(addr: SocketAddr, opts: UdpOptions, reuseport: bool) -> io::Result<(OwnedFd, bool)> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(); the fd is wrapped in OwnedFd at once.
    let raw = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if reuseport {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1 as libc::c_int)?;
    }
    let bytes = opts.buffer_bytes.min(i32::MAX as usize) as libc::c_int;
    // The FORCE variants ignore net.core.{r,w}mem_max but need CAP_NET_ADMIN;
    // fall back to the capped ones when they are refused.
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    }
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes).is_err() {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes)?;
    }
    let gro = opts.gro && setsockopt(&fd, libc::SOL_UDP, UDP_GRO, 1 as libc::c_int).is_ok();
    let mut storage = SockAddrBuf::default();
    let len = storage.set(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes for the family.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), storage.as_ptr(), len) })?;
    Ok((fd, gro))
}

/// Creates a UDP socket that only sends: bound to `ip` and a port the kernel
/// picks, so that a peer sees traffic from it come from that port (VXLAN
/// spreads flows over source ports, RFC 7348 §5).
pub fn bind_sender(ip: IpAddr, buffer_bytes: usize) -> io::Result<OwnedFd> {
    let (fd, _) = bind_with(SocketAddr::new(ip, 0), UdpOptions { buffer_bytes, gro: false }, false)?;
    Ok(fd)
}

/// The address a socket is bound to (`getsockname`), and whether it is a
/// UDP socket at all (`SO_TYPE` is `SOCK_DGRAM` and `SO_PROTOCOL` UDP).
pub fn bound_udp_addr(fd: BorrowedFd<'_>) -> io::Result<Option<SocketAddr>> {
    let int_option = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are valid for writes of the stated size.
        cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, (&mut value as *mut libc::c_int).cast(), &mut len) })?;
        Ok(value)
    };
    if int_option(libc::SO_TYPE)? != libc::SOCK_DGRAM || int_option(libc::SO_PROTOCOL)? != libc::IPPROTO_UDP {
        return Ok(None);
    }
    let mut name = SockAddrBuf::default();
    let mut len = SockAddrBuf::capacity();
    // SAFETY: name is valid for writes of len bytes.
    cvt(unsafe { libc::getsockname(fd.as_raw_fd(), name.as_mut_ptr(), &mut len) })?;
    Ok(name.get())
}

/// True when the kernel accepts the `UDP_SEGMENT` option on this socket.
pub fn supports_gso(fd: BorrowedFd<'_>) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the stated size.
    unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_UDP, UDP_SEGMENT, (&mut value as *mut libc::c_int).cast(), &mut len) == 0 }
}

/// A sockaddr_storage with conversions to and from `SocketAddr`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SockAddrBuf(libc::sockaddr_storage);

impl Default for SockAddrBuf {
    fn default() -> Self {
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        SockAddrBuf(unsafe { mem::zeroed() })
    }
}

impl SockAddrBuf {
    /// Stores `addr`; returns the length to pass to the kernel.
    pub fn set(&mut self, addr: SocketAddr) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&mut self.0 as *mut libc::sockaddr_storage).cast(), sin) };
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((&mut self.0 as *mut libc::sockaddr_storage).cast(), sin6) };
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.0 as *const libc::sockaddr_storage).cast()
    }

    pub fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.0 as *mut libc::sockaddr_storage).cast()
    }

    pub const fn capacity() -> libc::socklen_t {
        mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
    }

    pub fn get(&self) -> Option<SocketAddr> {
        // SAFETY: sockaddr_storage is plain bytes of sufficient size.
        let bytes = unsafe {
            std::slice::from_raw_parts((&self.0 as *const libc::sockaddr_storage).cast::<u8>(), mem::size_of::<libc::sockaddr_storage>())
        };
        parse_sockaddr(bytes)
    }
}

/// Parses a sockaddr_in / sockaddr_in6 from raw bytes (as the kernel lays
/// them out, e.g. in an io_uring multishot receive buffer).
pub fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET if b.len() >= 8 => Some(SocketAddr::new(IpAddr::from([b[4], b[5], b[6], b[7]]), port)),
        libc::AF_INET6 if b.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            Some(SocketAddr::new(IpAddr::from(o), port))
        }
        _ => None,
    }
}

/// Finds the `UDP_GRO` segment size in received control data, laid out as a
/// sequence of `cmsghdr`s (64-bit Linux: len u64, level i32, type i32, data
/// aligned to 8). Returns `None` when the datagram was not coalesced.
pub fn gro_segment_size(control: &[u8]) -> Option<u16> {
    const HDR: usize = mem::size_of::<libc::cmsghdr>();
    let align = mem::size_of::<usize>();
    let mut at = 0;
    while at + HDR <= control.len() {
        let len_bytes: [u8; 8] = control[at..at + 8].try_into().ok()?;
        let len = u64::from_ne_bytes(len_bytes) as usize;
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().ok()?);
        let kind = i32::from_ne_bytes(control[at + 12..at + 16].try_into().ok()?);
        if len < HDR || at + len > control.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= HDR + 2 {
            let data = &control[at + HDR..at + len];
            // The kernel puts an int; read the low 16 bits (sizes are < 64 KiB).
            return match data.len() {
                n if n >= 4 => Some(i32::from_ne_bytes(data[..4].try_into().ok()?) as u16),
                _ => Some(u16::from_ne_bytes(data[..2].try_into().ok()?)),
            };
        }
        at += (len + align - 1) & !(align - 1);
    }
    None
}

/// Writes a `UDP_SEGMENT` cmsg carrying `segment` into `buf` (at least
/// [`CMSG_SPACE_U32`] bytes, 8-aligned); returns the control length.
pub fn encode_gso_cmsg(buf: &mut [u8], segment: u16) -> usize {
    const HDR: usize = mem::size_of::<libc::cmsghdr>();
    let len = HDR + 2;
    buf[..8].copy_from_slice(&(len as u64).to_ne_bytes());
    buf[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    buf[12..16].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    buf[16..18].copy_from_slice(&segment.to_ne_bytes());
    buf[18..CMSG_SPACE_U32].fill(0);
    CMSG_SPACE_U32
}

/// Sends `iov` to `to` with one `sendmsg`; with `segment`, the kernel splits
/// the concatenated payload into datagrams of that size (UDP GSO).
pub fn send_segments(fd: BorrowedFd<'_>, to: SocketAddr, iov: &[IoSlice<'_>], segment: Option<u16>) -> io::Result<usize> {
    let mut name = SockAddrBuf::default();
    let namelen = name.set(to);
    #[repr(align(8))]
    struct Ctrl([u8; CMSG_SPACE_U32]);
    let mut ctrl = Ctrl([0; CMSG_SPACE_U32]);
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = namelen;
    // IoSlice is ABI-compatible with iovec (std guarantees it on Unix).
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    if let Some(seg) = segment {
        msg.msg_control = ctrl.0.as_mut_ptr().cast();
        msg.msg_controllen = encode_gso_cmsg(&mut ctrl.0, seg);
    }
    // SAFETY: every pointer in msg refers to memory that outlives the call.
    let n = cvt(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) })?;
    Ok(n as usize)
}

/// One datagram, non-blocking; returns its length and sender.
pub fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let mut name = SockAddrBuf::default();
    let mut len = SockAddrBuf::capacity();
    // SAFETY: buf and name are valid for writes of the lengths passed.
    let n = cvt(unsafe {
        libc::recvfrom(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT, name.as_mut_ptr(), &mut len)
    })?;
    let from = name.get().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP sender"))?;
    Ok((n as usize, from))
}

/// A reusable `recvmmsg` batch: buffers, addresses and control space for
/// `count` datagrams, allocated once.
pub struct MmsgReceiver {
    bufs: PageBuf,
    buf_size: usize,
    names: Vec<SockAddrBuf>,
    ctrl: Vec<[u64; 4]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

/// One received datagram (possibly a GRO run of several).
pub struct Datagram<'a> {
    pub from: Option<SocketAddr>,
    pub payload: &'a [u8],
    pub gro_segment: Option<u16>,
}

impl MmsgReceiver {
    pub fn new(count: usize, buf_size: usize) -> io::Result<MmsgReceiver> {
        let count = count.max(1);
        Ok(MmsgReceiver {
            bufs: PageBuf::new(count * buf_size)?,
            buf_size,
            names: vec![SockAddrBuf::default(); count],
            ctrl: vec![[0; 4]; count],
            // SAFETY: iovec and mmsghdr are plain old data; all-zero is valid.
            iovs: vec![unsafe { mem::zeroed() }; count],
            // SAFETY: as above.
            hdrs: vec![unsafe { mem::zeroed() }; count],
            received: 0,
        })
    }

    /// Receives up to the batch size without blocking; returns the count.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        let n = self.hdrs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i * self.buf_size..].as_mut_ptr().cast(), iov_len: self.buf_size };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = self.names[i].as_mut_ptr().cast();
            h.msg_hdr.msg_namelen = SockAddrBuf::capacity();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = mem::size_of::<[u64; 4]>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by self, which are
        // neither moved nor freed during the call.
        let got =
            cvt(unsafe { libc::recvmmsg(fd.as_raw_fd(), self.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) })?;
        self.received = got as usize;
        Ok(self.received)
    }

    /// Datagrams per `recv` call.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The i-th datagram's sender, segment size and payload, mutable, with
    /// the payload's offset in [`slot_mut`](Self::slot_mut).
    pub fn get_mut(&mut self, i: usize) -> (Option<SocketAddr>, Option<u16>, &mut [u8]) {
        let d = self.get(i);
        let (from, gro, len) = (d.from, d.gro_segment, d.payload.len());
        (from, gro, &mut self.bufs[i * self.buf_size..i * self.buf_size + len])
    }

    /// The i-th datagram of the last [`recv`](Self::recv).
    pub fn get(&self, i: usize) -> Datagram<'_> {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.buf_size);
        let ctrl_len = h.msg_hdr.msg_controllen.min(32);
        // SAFETY: ctrl[i] is 32 bytes of plain data the kernel may have written.
        let ctrl = unsafe { std::slice::from_raw_parts(self.ctrl[i].as_ptr().cast::<u8>(), ctrl_len) };
        Datagram {
            from: self.names[i].get(),
            payload: &self.bufs[i * self.buf_size..i * self.buf_size + len],
            gro_segment: gro_segment_size(ctrl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["198.18.0.1:8285", "[fd00::1]:9"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut b = SockAddrBuf::default();
            b.set(addr);
            assert_eq!(b.get(), Some(addr));
        }
        assert_eq!(parse_sockaddr(&[0, 0]), None);
    }

    #[test]
    fn gso_cmsg_encodes_and_parses_back_as_gro() {
        let mut buf = [0u8; CMSG_SPACE_U32];
        encode_gso_cmsg(&mut buf, 1400);
        // The same layout with type UDP_GRO is what the kernel sends back.
        buf[12..16].copy_from_slice(&UDP_GRO.to_ne_bytes());
        assert_eq!(gro_segment_size(&buf), Some(1400));
        assert_eq!(gro_segment_size(&buf[..10]), None);
        let mut bogus = buf;
        bogus[..8].copy_from_slice(&1000u64.to_ne_bytes());
        assert_eq!(gro_segment_size(&bogus), None);
    }

    /// Real sockets on loopback: a GSO send of three segments arrives as
    /// three datagrams (no GRO on the receiver) with the right sizes.
    #[test]
    fn gso_send_over_loopback() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap(), UdpOptions { buffer_bytes: 1 << 20, gro: false }).unwrap();
        let mut name = SockAddrBuf::default();
        let mut len = SockAddrBuf::capacity();
        // SAFETY: name is valid for writes of len bytes.
        assert_eq!(unsafe { libc::getsockname(rx.as_raw_fd(), name.as_mut_ptr(), &mut len) }, 0);
        let to = name.get().unwrap();
        let (tx, _) = bind("127.0.0.1:0".parse().unwrap(), UdpOptions { buffer_bytes: 1 << 20, gro: false }).unwrap();
        if !supports_gso(tx.as_fd()) {
            eprintln!("skipped: kernel without UDP GSO");
            return;
        }
        let a = [1u8; 100];
        let b = [2u8; 100];
        let c = [3u8; 40];
        let sent = send_segments(tx.as_fd(), to, &[IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)], Some(100)).unwrap();
        assert_eq!(sent, 240);
        let mut r = MmsgReceiver::new(8, 2048).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            if let Ok(n) = r.recv(rx.as_fd()) {
                for i in 0..n {
                    got.push(r.get(i).payload.to_vec());
                }
            }
            if got.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, vec![a.to_vec(), b.to_vec(), c.to_vec()]);
    }
}
