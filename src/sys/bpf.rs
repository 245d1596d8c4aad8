//! The `bpf(2)` calls the kernel path needs (`datapath::kernel`): maps
//! (create, update, delete, read a per-CPU value), loading a traffic-control
//! program with the verifier's log on refusal, and attaching it to an
//! interface through a TCX link (Linux 6.6).
//!
//! Every object is an `OwnedFd`. A TCX link detaches its program when its
//! last fd closes, so a crashed or stopped encapd leaves no program behind;
//! a program and a map live as long as a link or an fd refers to them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::cvt;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// `BPF_F_NO_PREALLOC`: an LPM trie must be created with it.
const BPF_F_NO_PREALLOC: u32 = 1;

/// The map kinds the kernel path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Longest-prefix match; the key is a host-order `u32` prefix length
    /// followed by the address bytes.
    LpmTrie,
    /// An array with one value per possible CPU for each index.
    PerCpuArray,
}

impl MapKind {
    fn type_id(self) -> u32 {
        match self {
            MapKind::LpmTrie => 11,
            MapKind::PerCpuArray => 6,
        }
    }

    fn flags(self) -> u32 {
        match self {
            MapKind::LpmTrie => BPF_F_NO_PREALLOC,
            MapKind::PerCpuArray => 0,
        }
    }
}

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
}

/// `union bpf_attr` for BPF_MAP_CREATE (the fields up to `map_name`).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD (the fields up to
/// `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
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

fn name_bytes(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // The kernel takes up to 15 characters of [A-Za-z0-9_.] and a NUL.
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' { b } else { b'_' };
    }
    out
}

/// A BPF map, with the sizes its elements were created with.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
    kind: MapKind,
}

impl Map {
    pub fn create(kind: MapKind, name: &str, key_size: u32, value_size: u32, max_entries: u32) -> io::Result<Map> {
        let mut attr = MapCreateAttr {
            map_type: kind.type_id(),
            key_size,
            value_size,
            max_entries,
            map_flags: kind.flags(),
            map_name: name_bytes(name),
            ..Default::default()
        };
        // SAFETY: a MAP_CREATE attribute without pointers.
        let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Map { fd, key_size: key_size as usize, value_size: value_size as usize, kind })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Inserts or replaces one element; the lookup a program runs meanwhile
    /// sees the old value or the new one, never neither.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key.len(), value.len())?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key and value are live buffers of the map's element sizes.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
    }

    /// Removes one element; `Ok(false)` when it was not there.
    pub fn delete(&self, key: &[u8]) -> io::Result<bool> {
        self.check(key.len(), self.value_size)?;
        let mut attr = MapElemAttr { map_fd: self.fd.as_raw_fd() as u32, key: key.as_ptr() as u64, ..Default::default() };
        // SAFETY: key is a live buffer of the map's key size.
        match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The values of a per-CPU array's element `index`, one per possible
    /// CPU, each `value_size` bytes.
    pub fn per_cpu_values(&self, index: u32, cpus: usize) -> io::Result<Vec<Vec<u8>>> {
        if self.kind != MapKind::PerCpuArray {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a per-CPU map"));
        }
        // Each CPU's value is padded to 8 bytes in the buffer.
        let stride = self.value_size.div_ceil(8) * 8;
        let mut buf = vec![0u8; stride * cpus];
        let key = index.to_ne_bytes();
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: buf.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: key is 4 bytes (the array's key); buf holds a value for
        // every possible CPU, as the kernel writes for a per-CPU map.
        unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }?;
        Ok(buf.chunks(stride).map(|c| c[..self.value_size].to_vec()).collect())
    }

    fn check(&self, key: usize, value: usize) -> io::Result<()> {
        if key != self.key_size || value != self.value_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map element of {key}+{value} bytes, map has {}+{}", self.key_size, self.value_size),
            ));
        }
        Ok(())
    }
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`): the
/// number of values a per-CPU map holds per element.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim()).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse possible CPUs {text:?}")))
}

/// Highest CPU number + 1 of a list such as `0-3,5`.
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut max = None;
    for part in text.split(',') {
        let last = part.rsplit('-').next()?;
        let n: usize = last.trim().parse().ok()?;
        max = Some(max.map_or(n, |m: usize| m.max(n)));
    }
    max.map(|m| m + 1)
}

/// Loads a traffic-control (`SCHED_CLS`) program of encoded instructions.
/// When the verifier refuses it, the error carries the end of its log.
pub fn load_tc_program(name: &str, insns: &[u64]) -> io::Result<OwnedFd> {
    load(name, insns, None).or_else(|first| {
        let mut log = vec![0u8; 1 << 20];
        match load(name, insns, Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0').trim_end();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(io::Error::new(first.kind(), format!("{first}; verifier: {}", tail.join(" | "))))
            }
        }
    })
}

fn load(name: &str, insns: &[u64], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: name_bytes(name),
        ..Default::default()
    };
    // SAFETY: insns, the license and the log buffer outlive the call and
    // have the lengths stated.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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

/// How many programs are attached to interface `ifindex` at `hook`
/// through TCX (in the calling thread's network namespace).
pub fn tcx_program_count(ifindex: u32, hook: TcxHook) -> io::Result<u32> {
    let mut attr = ProgQueryAttr { target_ifindex: ifindex, attach_type: hook.attach_type(), ..Default::default() };
    // SAFETY: a PROG_QUERY attribute with no id buffers: only the count is written.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    Ok(attr.count)
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

    #[test]
    fn cpu_lists_parse_to_their_highest_cpu_plus_one() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn names_are_cut_and_cleaned_for_the_kernel() {
        assert_eq!(&name_bytes("encapd-routes")[..14], b"encapd_routes\0");
        assert_eq!(name_bytes("a_very_long_program_name")[15], 0);
    }

    #[test]
    fn a_map_checks_element_sizes_before_the_kernel_does() {
        // Creating maps needs CAP_BPF; without it there is nothing to check.
        let Ok(map) = Map::create(MapKind::LpmTrie, "encapd_test", 8, 4, 16) else { return };
        assert!(map.update(&[0; 7], &[0; 4]).is_err());
        let mut key = 24u32.to_ne_bytes().to_vec();
        key.extend_from_slice(&[100, 96, 1, 0]);
        map.update(&key, &[198, 18, 0, 2]).unwrap();
        assert!(map.delete(&key).unwrap());
        assert!(!map.delete(&key).unwrap());
    }
}
