//! Pinning the calling thread to one CPU.

/// Pins the calling thread to `cpu`. Returns false when the CPU does not
/// exist or the kernel refused (the caller logs it and runs unpinned).
pub fn pin_current_thread(cpu: usize) -> bool {
    // core_affinity indexes a cpu_set_t without a bounds check of its own
    // (it panics past CPU_SETSIZE).
    cpu < libc::CPU_SETSIZE as usize && core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// The CPUs this process may run on, in order.
pub fn online_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect()).unwrap_or_default()
}
