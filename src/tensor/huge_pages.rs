//! Transparent huge pages for large fresh buffers.
//!
//! A decode allocates its activations and convolution scratch anew per layer (idle memory
//! would count towards the peak RSS), so it touches every page of them for the first time
//! while it runs: with 4 KiB pages that was about 1.3 million page faults and 4 s of system
//! time on the seed config (README, Performance). Asking for 2 MiB pages
//! (`madvise(MADV_HUGEPAGE)`, honoured when THP is in `always` or `madvise` mode) makes that
//! 512 times fewer faults. Only a hint: contents and lifetimes are unchanged, and a kernel
//! that refuses leaves plain pages. The `movq` command line also keeps freed blocks for reuse
//! ([`super::heap`]), so most of its allocations after the first layers touch no new page.

/// Buffers below this many bytes keep plain pages (a huge page would round their RSS up).
pub const MIN_BYTES: usize = 4 << 20;

/// Asks for huge pages under the whole 4 KiB pages of `buf`, before its first touch.
pub fn advise<T>(buf: &[T]) {
    let bytes = std::mem::size_of_val(buf);
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_ptr() as usize;
        let (a, b) = (start.next_multiple_of(PAGE), (start + bytes) / PAGE * PAGE);
        if a < b {
            // SAFETY: FFI. [a, b) lies inside `buf`, memory this process owns and that stays
            // mapped for the call; MADV_HUGEPAGE only sets a flag on the mapping (no contents
            // change, nothing is freed), and its failure leaves the pages as they were.
            let _ = unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
}
