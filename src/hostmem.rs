//! Host memory for large buffers: transparent huge pages behind the
//! weight and activation buffers the cpu executor streams through, and
//! behind the bandwidth probe that `%roof` divides by, so both see the
//! same page size.

/// Asks the kernel for transparent huge pages behind a large, still
/// untouched allocation (Linux, where THP is in `madvise` mode): a weight
/// buffer streamed by lerp or gemm then takes one TLB entry per 2 MiB
/// instead of 512. Only advice: nothing changes where it is refused.
pub fn advise_huge<T>(v: Vec<T>) -> Vec<T> {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = std::mem::size_of_val(v.as_slice());
        if bytes >= HUGE {
            let start = v.as_ptr() as usize;
            let first = start.next_multiple_of(HUGE);
            let end = (start + bytes) / HUGE * HUGE;
            if end > first {
                // SAFETY: [first, end) lies inside the vector's allocation;
                // madvise only changes how those pages are backed.
                unsafe {
                    libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v
}

/// Asks glibc's allocator to serve blocks up to 64 MiB from its heap and
/// to keep freed memory, instead of a fresh mmap (page faults and zeroing
/// on every touch) for each block over 128 KiB-32 MiB: decoding an image
/// folder allocates and frees a few such blocks per image, and the faults
/// were a fifth of `dawin preprocess`'s time. A no-op elsewhere.
pub fn keep_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
