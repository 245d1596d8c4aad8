//! Packet buffer memory straight from the kernel: [`PageBuf`], zeroed
//! anonymous memory, page-aligned, and backed by transparent huge pages
//! where it is large enough and the host allows it.
//!
//! Why huge pages: every TUN read, UDP receive, egress split, checksum and
//! kernel copy crosses a packet's buffer page by page. A 64 KB TSO packet
//! spans sixteen 4 KB pages, each a TLB entry and, under a hypervisor, a
//! two-dimensional page walk when it misses; a worker's buffers (about
//! 10 MB with offloads) are far beyond what the TLB covers in 4 KB pages,
//! while one 2 MB page holds 21–32 such packets. Measured in
//! docs/performance.md (lever 13).

use std::io;
use std::ops::{Deref, DerefMut};

/// Base page size assumed for alignment (x86-64 and arm64 with 4 KB pages).
const PAGE: usize = 4096;
/// The transparent huge page size on those (a PMD: 2 MB).
pub const HUGE_PAGE: usize = 2 << 20;

/// Zeroed, private, anonymous memory, unmapped on drop (unless leaked).
///
/// A buffer of at least [`HUGE_PAGE`] bytes is rounded up to whole huge
/// pages, aligned to them and offered to transparent huge pages
/// (`MADV_HUGEPAGE`) before anything touches it, so its first touches fault
/// in 2 MB pages where the host's THP mode is `always` or `madvise`. With
/// THP `never` it keeps 4 KB pages and works the same.
pub struct PageBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: PageBuf owns its mapping exclusively, like a Box<[u8]>.
unsafe impl Send for PageBuf {}

impl PageBuf {
    /// Maps at least `len` bytes (at least one page).
    pub fn new(len: usize) -> io::Result<PageBuf> {
        let (len, align) = match len.max(1).next_multiple_of(PAGE) {
            small if small < HUGE_PAGE => (small, PAGE),
            large => (large.next_multiple_of(HUGE_PAGE), HUGE_PAGE),
        };
        let ptr = map_aligned(len, align)?;
        let mut buf = PageBuf { ptr, len };
        if align == HUGE_PAGE {
            // Best effort: without THP the memory keeps base pages.
            // SAFETY: advice on our own mapping changes no contents.
            unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
        }
        buf.populate()?;
        Ok(buf)
    }

    /// Faults every page in now, so that the data path never takes a page
    /// fault (a huge page's first touch zeroes 2 MB) and the process's RSS
    /// is what it will stay: the buffer rings hand out every buffer in turn
    /// under load anyway.
    fn populate(&mut self) -> io::Result<()> {
        // SAFETY: our own mapping; populating writes nothing visible.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_POPULATE_WRITE) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::new(err.kind(), format!("cannot commit {} KiB of packet buffers: {err}", self.len / 1024)));
        }
        // Before Linux 5.14: touch each page (writing the zero it holds).
        for page in self.chunks_mut(PAGE) {
            // SAFETY: a volatile write keeps the touch from being optimised away.
            unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
        }
        Ok(())
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Forgets the memory: it stays mapped for the life of the process
    /// (for memory the kernel may still write into; see the io_uring teardown).
    pub fn leak(&mut self) {
        self.ptr = std::ptr::null_mut();
        self.len = 0;
    }
}

impl Deref for PageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: ptr maps len readable, initialised (zero-filled) bytes
        // that this PageBuf owns.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: as in deref, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: the mapping is ours, of this length, and unused from here on.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Maps `len` zeroed bytes aligned to `align`: over-maps by `align`, then
/// returns the slack on both sides of the aligned start to the kernel.
fn map_aligned(len: usize, align: usize) -> io::Result<*mut u8> {
    let span = len.checked_add(align - PAGE).ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "buffer too large"))?;
    // SAFETY: a fresh private anonymous mapping aliases nothing.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), span, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = base as usize;
    let start = base.next_multiple_of(align);
    let (head, tail) = (start - base, span - (start - base) - len);
    // SAFETY: both ranges lie inside the mapping made above and outside the
    // part handed out.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    Ok(start as *mut u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_are_whole_zeroed_pages() {
        let mut b = PageBuf::new(100).unwrap();
        assert_eq!(b.len(), PAGE);
        assert_eq!(b.as_ptr() as usize % PAGE, 0);
        assert!(b.iter().all(|&x| x == 0));
        b[PAGE - 1] = 7;
        assert_eq!(b[PAGE - 1], 7);
    }

    #[test]
    fn large_buffers_are_whole_aligned_huge_pages() {
        let mut b = PageBuf::new(HUGE_PAGE + 1).unwrap();
        assert_eq!(b.len(), 2 * HUGE_PAGE);
        assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0);
        b[2 * HUGE_PAGE - 1] = 1;
        assert!(b[..2 * HUGE_PAGE - 1].iter().all(|&x| x == 0));
    }

    /// The smaps block of the mapping that contains `addr` (adjacent
    /// mappings with the same flags are merged into one).
    fn smaps_block(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut block = Vec::new();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
            if let Some((lo, hi)) =
                range.and_then(|(lo, hi)| Some((usize::from_str_radix(lo, 16).ok()?, usize::from_str_radix(hi, 16).ok()?)))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside {
                block.push(line.to_string());
            }
        }
        block
    }

    #[test]
    fn a_huge_page_buffer_is_offered_to_thp() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("skipped: this kernel has no transparent huge pages");
            return;
        }
        let b = PageBuf::new(HUGE_PAGE).unwrap();
        let block = smaps_block(b.as_ptr() as usize);
        let flags = block.iter().find(|l| l.starts_with("VmFlags:")).expect("the mapping is in smaps");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "no MADV_HUGEPAGE on the mapping: {flags}");
    }

    #[test]
    fn buffers_are_resident_from_the_start() {
        for len in [3 * PAGE, 2 * HUGE_PAGE] {
            let b = PageBuf::new(len).unwrap();
            let mut resident = vec![0u8; len / PAGE];
            // SAFETY: the range is our mapping; the vector has a byte per page.
            assert_eq!(unsafe { libc::mincore(b.as_ptr().cast(), len, resident.as_mut_ptr()) }, 0);
            let missing = resident.iter().filter(|&&r| r & 1 == 0).count();
            assert_eq!(missing, 0, "{missing} of {} pages of a fresh {len}-byte buffer are not resident", len / PAGE);
        }
    }

    #[test]
    fn a_leaked_buffer_is_empty_and_not_unmapped() {
        let mut b = PageBuf::new(PAGE).unwrap();
        let ptr = b.as_ptr();
        b.leak();
        assert!(b.is_empty());
        drop(b);
        // Still mapped: writing it does not fault.
        // SAFETY: the leaked mapping stays ours for the life of the process.
        unsafe { ptr.write(1) };
    }
}
