//! Memory the kernel reads into: page-aligned slabs of fixed-size buffers,
//! optionally registered as a provided-buffer ring (Linux ≥ 5.19) from which
//! multishot operations pick a free buffer themselves.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, types};

use crate::sys::mem::PageBuf;

/// `entries` buffers of `stride` bytes; with [`register`](Self::register),
/// also a provided-buffer ring of group `group` that the kernel picks from.
pub(super) struct BufferPool {
    ring: Option<PageBuf>,
    slab: PageBuf,
    entries: u16,
    pub(super) stride: usize,
    tail: u16,
    group: u16,
}

impl BufferPool {
    pub(super) fn new(entries: u16, stride: usize, group: u16) -> io::Result<BufferPool> {
        Ok(BufferPool { ring: None, slab: PageBuf::new(usize::from(entries) * stride)?, entries, stride, tail: 0, group })
    }

    /// Registers the buffers as a provided-buffer ring and provides them all.
    pub(super) fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        assert!(self.entries.is_power_of_two(), "a buffer ring needs a power-of-two size");
        let mem = PageBuf::new(usize::from(self.entries) * std::mem::size_of::<types::BufRingEntry>())?;
        // SAFETY: the ring memory is page-aligned, sized for `entries`, and
        // outlives the registration (UringIo tears the ring down first or
        // leaks this memory; see its Drop).
        unsafe { ring.submitter().register_buf_ring_with_flags(mem.as_ptr() as u64, self.entries, self.group, 0)? };
        self.ring = Some(mem);
        for bid in 0..self.entries {
            self.provide(bid);
        }
        Ok(())
    }

    pub(super) fn ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.entries);
        // SAFETY: bid < entries, so the offset lies within the slab.
        unsafe { self.slab.as_ptr().add(usize::from(bid) * self.stride) }
    }

    /// Returns buffer `bid` to the kernel's ring (registered pools only).
    pub(super) fn provide(&mut self, bid: u16) {
        let Some(ring) = &self.ring else { return };
        let mask = self.entries - 1;
        let base = ring.as_ptr().cast::<types::BufRingEntry>();
        // SAFETY: the index is masked into the ring; the kernel only reads
        // entries between its head and the tail we publish below.
        let entry = unsafe { &mut *base.add(usize::from(self.tail & mask)) };
        entry.set_addr(self.ptr(bid) as u64);
        entry.set_len(self.stride as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail lives in the first entry's reserved field; publish
        // it with release ordering so the kernel sees the entry contents.
        unsafe {
            let tail = types::BufRingEntry::tail(base).cast_mut();
            (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release);
        }
    }

    pub(super) fn leak(&mut self) {
        if let Some(r) = &mut self.ring {
            r.leak();
        }
        self.slab.leak();
    }
}
