//! Freed memory kept for reuse (glibc's malloc, 2.35 or later), for processes that run decodes.
//!
//! glibc serves a block above its mmap threshold (at most 32 MiB with the default dynamic
//! threshold) with a fresh mapping and unmaps it on free, so every activation and Winograd
//! buffer of a decode is new memory that the kernel zeroes on first touch: on the seed config
//! about 2 s of system time per decode and 6-8 % of the samples in `clear_page` (perf). With
//! the thresholds raised, such blocks come from the main arena's heap, whose free space is
//! kept (up to [`TRIM_THRESHOLD`] at its top) and reused by the next layer. Measured in
//! README (Performance, "freed memory kept"): a first decode 2-6 % faster, later ones in the
//! same process about 8 %; peak RSS 8-23 % higher (freed blocks a larger later request cannot
//! use). A process-wide setting, so the library never makes it itself: the `movq` command
//! line does, and an embedding program may call [`keep_freed_memory`].
//!
//! Not kept: blocks of threads other than the main one come from per-thread arenas whose
//! heaps hold at most 64 MiB and are unmapped once wholly free, so larger blocks there, and
//! freed heaps, are still new pages.

use crate::error::{Result, env_choice};
use std::sync::OnceLock;

/// Blocks from this size on still get their own mapping (a huge one-off output).
pub const MMAP_THRESHOLD: usize = 1 << 30;

/// Free space at the top of the main heap that is kept rather than returned to the system:
/// as large as the largest block the heap serves, so that block's space stays for reuse.
pub const TRIM_THRESHOLD: usize = MMAP_THRESHOLD;

/// Peak RSS rise, in percent, that a memory estimate made for glibc's defaults gets while
/// freed memory is kept: the largest measured was 23 % (the CogVideoX-2b 49x480x720 tiled
/// decode, 3.70 -> 4.56 GiB; bench config 20 %, CogVideoX chunked 15 %, seed 9 %; README,
/// "freed memory kept"), rounded up.
pub const KEPT_RSS_PERCENT: u64 = 25;

/// `bytes`, a peak estimated for glibc's defaults, raised by [`KEPT_RSS_PERCENT`] (rounded
/// up, saturating).
pub fn peak_while_kept(bytes: u64) -> u64 {
    bytes.saturating_add(bytes.div_ceil(100) * KEPT_RSS_PERCENT)
}

// mallopt takes a C int.
const _: () = assert!(MMAP_THRESHOLD <= i32::MAX as usize && TRIM_THRESHOLD <= i32::MAX as usize);

/// glibc's own ways to tune the thresholds: variables, and settings inside `GLIBC_TUNABLES`.
/// Any of them set leaves the user's tuning alone.
pub const USER_VARIABLES: [&str; 3] =
    ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"];
pub const USER_TUNABLES: [&str; 3] =
    ["glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.mmap_max"];

/// `MOVQ_MALLOC`: `keep` (the default) or `system` (glibc's defaults untouched).
pub const ENV: &str = "MOVQ_MALLOC";

/// What [`keep_freed_memory`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreedMemory {
    /// The thresholds are raised: freed blocks are kept for reuse.
    Kept,
    /// Left alone: `MOVQ_MALLOC=system`, or the user tuned malloc ([`USER_VARIABLES`],
    /// [`USER_TUNABLES`]).
    LeftAlone,
    /// Not glibc on Linux, or a glibc that refuses a threshold this high (before 2.35).
    Unavailable,
}

impl FreedMemory {
    /// As `movq bench` and `--verbose` report it.
    pub fn name(self) -> &'static str {
        match self {
            FreedMemory::Kept => "kept",
            FreedMemory::LeftAlone => "left_alone",
            FreedMemory::Unavailable => "unavailable",
        }
    }
}

/// Whether the user tuned glibc's malloc thresholds through its own variables.
pub fn user_tuned() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    USER_VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
        || USER_TUNABLES.iter().any(|t| tunables.contains(t))
}

/// What [`keep_freed_memory`] did in this process, once it ran.
static STATE: OnceLock<FreedMemory> = OnceLock::new();

/// Raises glibc's mmap and trim thresholds ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`]) for the
/// whole process, unless `MOVQ_MALLOC=system` or [`user_tuned`]; [`freed_memory`] reports
/// the outcome afterwards (a later call changes nothing and returns the first outcome). An
/// unknown `MOVQ_MALLOC` is [`crate::Error::InvalidEnv`].
pub fn keep_freed_memory() -> Result<FreedMemory> {
    let system = env_choice(ENV, &["keep", "system"])? == Some("system");
    Ok(*STATE.get_or_init(|| {
        if system || user_tuned() {
            FreedMemory::LeftAlone
        } else if set_thresholds() {
            FreedMemory::Kept
        } else {
            FreedMemory::Unavailable
        }
    }))
}

/// What [`keep_freed_memory`] did, or `None` if it has not run in this process (the library
/// never runs it; the CLI does at start-up).
pub fn freed_memory() -> Option<FreedMemory> {
    STATE.get().copied()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    let (mmap, trim) = (MMAP_THRESHOLD as libc::c_int, TRIM_THRESHOLD as libc::c_int);
    // SAFETY: FFI. mallopt only changes malloc's tuning parameters (it takes the allocator's
    // lock); blocks already handed out keep their kind and are freed as they were made. The
    // trim threshold is set only once the mmap threshold took (glibc before 2.35 refuses
    // values above 32 MiB), so a refusal changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peak_while_kept_is_a_quarter_higher_and_saturates() {
        assert_eq!(peak_while_kept(400), 500);
        assert_eq!(peak_while_kept(401), 526);
        assert!((5 << 30..(5 << 30) + 100).contains(&peak_while_kept(4 << 30)));
        assert_eq!(peak_while_kept(0), 0);
        assert_eq!(peak_while_kept(u64::MAX - 1), u64::MAX);
    }
}
