//! Freed memory kept for reuse (glibc's malloc), for processes that run decodes.
//!
//! glibc serves a block above its mmap threshold (at most 32 MiB with the default dynamic
//! threshold) with a fresh mapping and unmaps it on free, so every activation and Winograd
//! buffer of a decode is new memory that the kernel zeroes on first touch: on the seed config
//! that was about 2 s of system time per decode and 6-8 % of the samples in `clear_page`
//! (perf). With the threshold raised, such blocks come from the heap and freed ones are reused
//! by the next layer; the heap is not trimmed while it runs. Measured in README (Performance):
//! the seed decode 3 % faster once, 9 % in repeated decodes; peak RSS 8 % (seed) to 15 %
//! (CogVideoX chunked) higher. A process-wide setting, so the library never makes it itself:
//! the `movq` command line does, and an embedding program may call [`keep_freed_memory`].

/// Blocks from this size on still get their own mapping (a huge one-off output).
pub const MMAP_THRESHOLD: usize = 1 << 30;

/// Free space at the top of the heap that is kept rather than returned to the system.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Environment variables through which glibc's malloc is already tuned; any of them set
/// leaves the user's settings alone.
pub const USER_SETTINGS: [&str; 3] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"];

/// Raises glibc's mmap and trim thresholds ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`]) for the
/// whole process unless one of [`USER_SETTINGS`] is set. Returns whether the settings took
/// effect: false on other C libraries and operating systems, or when glibc refuses them.
pub fn keep_freed_memory() -> bool {
    if USER_SETTINGS.iter().any(|v| std::env::var_os(v).is_some()) {
        return false;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    let (mmap, trim) = (MMAP_THRESHOLD as libc::c_int, TRIM_THRESHOLD as libc::c_int);
    // SAFETY: FFI. mallopt only changes malloc's tuning parameters (it takes the allocator's
    // lock); blocks already handed out keep their kind and are freed as they were made.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}
