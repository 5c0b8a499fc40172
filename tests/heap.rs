//! Freed memory kept for reuse (`movq::tensor::heap`): its own test process, since the setting
//! is process-wide and the block counts below are the allocator's, shared by all threads.

mod common;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_blocks_come_from_the_heap_once_freed_memory_is_kept() {
    use movq::tensor::heap::{USER_SETTINGS, keep_freed_memory};
    let user_set = USER_SETTINGS.iter().any(|v| std::env::var_os(v).is_some());
    // Bytes in blocks with their own mapping, while a block of `bytes` is held.
    let mapped_with = |bytes: usize| {
        // SAFETY: FFI; mallinfo2 only reads the allocator's counters.
        let before = unsafe { libc::mallinfo2() }.hblkhd;
        let block = std::hint::black_box(vec![1u8; bytes]);
        let during = unsafe { libc::mallinfo2() }.hblkhd;
        drop(block);
        during.saturating_sub(before)
    };
    // Above glibc's largest dynamic threshold (32 MiB), so mapped by default; below the 64 MiB
    // of a heap of a thread's own arena (this test runs on such a thread).
    let bytes = 40 << 20;
    if !user_set {
        assert!(mapped_with(bytes) >= bytes, "by default a 40 MiB block has its own mapping");
    }
    assert_eq!(keep_freed_memory(), !user_set, "set unless the user tuned malloc");
    if !user_set {
        assert_eq!(mapped_with(bytes), 0, "a 40 MiB block came from a mapping of its own");
    }
}

/// The command line keeps freed memory and says so in its kernels line; glibc's own
/// variables, when set, win.
#[test]
fn the_command_line_reports_whether_it_keeps_freed_memory() {
    let expected = cfg!(all(target_os = "linux", target_env = "gnu"));
    for (var, keeps) in [(None, expected), (Some("MALLOC_TRIM_THRESHOLD_"), false)] {
        let mut cmd = common::movq();
        cmd.args(["--verbose", "inspect", "missing.safetensors"]);
        for v in movq::tensor::heap::USER_SETTINGS {
            cmd.env_remove(v);
        }
        if let Some(v) = var {
            cmd.env(v, "134217728");
        }
        let err = String::from_utf8_lossy(&cmd.output().unwrap().stderr).into_owned();
        assert!(err.contains(&format!(r#""malloc_keeps_freed":{keeps}"#)), "{var:?}: {err}");
    }
}
