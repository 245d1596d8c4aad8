//! The multiqueue TUN device (`IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`), made
//! with `tun-rs` (the `tun` crate cannot open several queues). Each queue is
//! handed out as an `OwnedFd`; the device is not persistent, so it disappears
//! when the last queue closes — on a clean stop and on a crash alike.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};

/// How to create the device.
#[derive(Debug, Clone)]
pub struct TunSpec {
    pub name: String,
    pub queues: usize,
    pub mtu: u16,
    /// Address and prefix length; the kernel adds the connected route for
    /// the whole prefix through the device.
    pub ipv4: (Ipv4Addr, u8),
    pub ipv6: Option<(Ipv6Addr, u8)>,
    pub txqueuelen: u32,
    /// Ask for `IFF_VNET_HDR` with TCP (and, where the kernel has them, UDP)
    /// segmentation offloads.
    pub offload: bool,
}

/// The queues of a created device and the offloads the kernel granted.
#[derive(Debug)]
pub struct TunQueues {
    pub fds: Vec<OwnedFd>,
    /// Every read and write carries a virtio-net header; TSO4/TSO6/CSUM on.
    pub vnet_hdr: bool,
    /// USO4/USO6 on as well (Linux ≥ 6.2).
    pub uso: bool,
    /// Why offloads were asked for but not granted.
    pub refused: Option<String>,
}

/// Creates the device, configures it and returns one non-blocking fd per
/// queue. When offloads are asked for but refused (EINVAL/EIO from
/// `TUNSETOFFLOAD`), the device is created without them and `refused` says why.
pub fn create_multiqueue(spec: &TunSpec) -> io::Result<TunQueues> {
    if spec.offload {
        match create(spec, true) {
            Ok(q) => return Ok(q),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO) | Some(libc::EOPNOTSUPP)) => {
                let mut q = create(spec, false)?;
                q.refused = Some(format!("TUN offloads refused by the kernel ({e})"));
                return Ok(q);
            }
            Err(e) => return Err(e),
        }
    }
    create(spec, false)
}

fn create(spec: &TunSpec, offload: bool) -> io::Result<TunQueues> {
    if spec.queues == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a TUN device needs at least one queue"));
    }
    let mut builder = tun_rs::DeviceBuilder::new()
        .name(&spec.name)
        .mtu(spec.mtu)
        .ipv4(spec.ipv4.0, spec.ipv4.1, None)
        .multi_queue(true)
        .tx_queue_len(spec.txqueuelen)
        .offload(offload)
        .enable(true);
    if let Some((addr, len)) = spec.ipv6 {
        builder = builder.ipv6(addr, len);
    }
    let first = builder.build_sync()?;
    let (vnet_hdr, uso) = (first.tcp_gso(), first.udp_gso());
    let mut devices = Vec::with_capacity(spec.queues);
    for _ in 1..spec.queues {
        devices.push(first.try_clone()?);
    }
    devices.insert(0, first);
    let mut fds = Vec::with_capacity(spec.queues);
    for dev in devices {
        let raw = dev.into_raw_fd();
        // SAFETY: into_raw_fd hands over sole ownership of a valid, open fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        super::fd::set_nonblocking(fd.as_fd(), true)?;
        fds.push(fd);
    }
    Ok(TunQueues { fds, vnet_hdr, uso, refused: None })
}

/// What the kernel says about a TUN queue fd (`TUNGETIFF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The device the queue belongs to.
    pub name: String,
    /// Reads and writes carry a virtio-net header (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// A queue of a multiqueue device (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
}

/// True while a network device named `name` exists in this network
/// namespace (`if_nametoindex(3)`). A TUN device outlives the process
/// that held its last queue by a few milliseconds when that process's
/// io_uring rings are torn down after it exited (the kernel does that in
/// a work queue), so a fresh start after a crash may have to wait for it.
pub fn device_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else { return false };
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Describes the TUN queue behind `fd`; an fd that is not an attached TUN
/// queue is an error (`EBADFD` from the kernel, or `ENOTTY`).
pub fn queue_info(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<QueueInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one ifreq (name and flags) into `req`.
    super::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) })?;
    let name: Vec<u8> = req.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    // SAFETY: TUNGETIFF filled the ifru_flags member of the union.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(QueueInfo {
        name: String::from_utf8_lossy(&name).into_owned(),
        vnet_hdr: flags & libc::IFF_VNET_HDR != 0,
        multi_queue: flags & libc::IFF_MULTI_QUEUE != 0,
    })
}
