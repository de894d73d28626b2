//! Giving memory back. glibc's malloc raises its mmap threshold each time
//! a large block is freed (up to 32 MiB) and then keeps up to twice that
//! free at the top of every heap, in every arena: after a few large
//! project documents (megabytes of compressed bytes, models, bodies in
//! chunks) Herald held a hundred megabytes it no longer used. A fixed
//! threshold keeps every block of 1 MiB or more in a mapping of its own,
//! returned to the system when it is freed, and heaps are trimmed past
//! 1 MiB of free space (smaller blocks, the common case on the ingest
//! path, stay in the heaps as before). Elsewhere this does nothing.

/// Fixes malloc's thresholds (glibc on Linux only); call once, early.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::fix_thresholds();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    // From glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    const THRESHOLD: c_int = 1024 * 1024;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn fix_thresholds() {
        // SAFETY: mallopt only sets allocator parameters; it takes the
        // arena lock itself and accepts these values (a refusal returns 0
        // and changes nothing).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, THRESHOLD);
            mallopt(M_TRIM_THRESHOLD, THRESHOLD);
        }
    }
}
