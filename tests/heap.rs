//! Freed memory kept for reuse (`movq::tensor::heap`): its own test process, since the setting
//! is process-wide; the tests hold one lock, since the block counts read below are the
//! allocator's, shared by all threads.

mod common;

use movq::tensor::heap::FreedMemory;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What the thresholds give on this C library: glibc takes an mmap threshold of 1 GiB from
/// 2.35 on (before, at most 32 MiB).
fn expected() -> FreedMemory {
    match glibc_version().is_some_and(|v| v >= (2, 35)) {
        true => FreedMemory::Kept,
        false => FreedMemory::Unavailable,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> Option<(u32, u32)> {
    // SAFETY: FFI; gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let mut parts = version.to_str().ok()?.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> Option<(u32, u32)> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_blocks_come_from_the_heap_once_freed_memory_is_kept() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mapped = || {
        // SAFETY: FFI; mallinfo only reads the allocator's counters (the int version exists in
        // every glibc; the 40 MiB below fits).
        #[allow(deprecated)]
        let info = unsafe { libc::mallinfo() };
        info.hblkhd as i64
    };
    // Bytes in blocks with their own mapping, while a block of `bytes` is held.
    let mapped_with = |bytes: usize| {
        let before = mapped();
        let block = std::hint::black_box(vec![1u8; bytes]);
        let during = mapped();
        drop(block);
        during - before
    };
    // Above glibc's largest dynamic threshold (32 MiB), so mapped by default; below the 64 MiB
    // of a heap of a thread's own arena (this test runs on such a thread).
    let bytes = 40 << 20;
    if movq::tensor::heap::user_tuned() || std::env::var_os(movq::tensor::heap::ENV).is_some() {
        return; // The user's settings decide; the command-line test covers the choice.
    }
    assert!(mapped_with(bytes) >= bytes as i64, "by default a 40 MiB block has its own mapping");
    let got = movq::tensor::heap::keep_freed_memory().unwrap();
    assert_eq!(got, expected());
    if got == FreedMemory::Kept {
        assert_eq!(mapped_with(bytes), 0, "a 40 MiB block came from a mapping of its own");
    }
}

/// The command line keeps freed memory and says so in its kernels line; glibc's own malloc
/// settings and `MOVQ_MALLOC=system` leave malloc alone, other glibc tunables do not; an
/// unknown `MOVQ_MALLOC` is refused.
#[test]
fn the_command_line_reports_what_it_did_with_freed_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cases = [
        (None, expected().name()),
        (Some(("MALLOC_TRIM_THRESHOLD_", "134217728")), "left_alone"),
        (Some(("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")), "left_alone"),
        (Some(("MOVQ_MALLOC", "system")), "left_alone"),
        (Some(("GLIBC_TUNABLES", "glibc.pthread.rseq=0")), expected().name()),
        (Some(("MOVQ_MALLOC", "keep")), expected().name()),
    ];
    let run = |var: Option<(&str, &str)>| {
        let mut cmd = common::movq();
        cmd.args(["--verbose", "inspect", "missing.safetensors"]);
        let heap = movq::tensor::heap::USER_VARIABLES;
        for v in heap.into_iter().chain(["GLIBC_TUNABLES", movq::tensor::heap::ENV]) {
            cmd.env_remove(v);
        }
        if let Some((k, v)) = var {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    for (var, want) in cases {
        let err = String::from_utf8_lossy(&run(var).stderr).into_owned();
        assert!(err.contains(&format!(r#""freed_memory":"{want}""#)), "{var:?}: {err}");
    }
    let o = run(Some(("MOVQ_MALLOC", "sometimes")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("MOVQ_MALLOC") && err.contains("sometimes"), "{err}");
}
