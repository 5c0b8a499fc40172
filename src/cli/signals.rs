//! Fatal signals other than INT/TERM/HUP (those go through `cleanup.rs`): remove the
//! unfinished output's temporaries, say why on stderr, and exit.
//!
//! - SIGBUS: the weights are memory-mapped, and a mapped file truncated by another process
//!   raises SIGBUS on the next read past its new end. It becomes a named error (the mapped
//!   files), the temporaries are removed, exit code 2.
//! - SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGIO, SIGPWR,
//!   SIGSTKFLT, SIGSYS, SIGABRT (e.g. a failed allocation): cleanup, exit code 128 + signal.
//! - SIGSEGV, SIGILL, SIGFPE (bugs): cleanup, then the previous handler runs as before (Rust's
//!   stack-overflow report, then the default action).
//! - SIGXFSZ (`ulimit -f`) is ignored, so the write fails with EFBIG and takes the ordinary
//!   error path (message naming the output, temporaries removed, exit 2); SIGPIPE is ignored by
//!   the Rust runtime already (a closed reader is an EPIPE error, exit 2).
//! - SIGKILL and SIGSTOP cannot be caught: a SIGKILL leaves the hidden `.name.tmp-PID`
//!   temporary (never a file under the output's name).
//!
//! The handler only calls async-signal-safe functions (`unlink`, `rmdir`, `write`, `_exit`,
//! `sigaction`) on data prepared beforehand; the data is published through an atomic pointer
//! and never freed (a handler may still read an old snapshot).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What the handler removes and says, prepared outside it.
struct Pending {
    /// Temporary files, then the frame files of temporary directories, then those directories.
    files: Vec<CString>,
    dirs: Vec<CString>,
    /// The SIGBUS message (naming the memory-mapped inputs).
    bus_message: Vec<u8>,
}

static PENDING: AtomicPtr<Pending> = AtomicPtr::new(std::ptr::null_mut());

/// Signals whose default action ends the process and that are cleaned up then exited on.
const EXIT_SIGNALS: [libc::c_int; 12] = [
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSTKFLT,
    libc::SIGSYS,
    libc::SIGABRT,
];

/// Faults that mean a bug: cleaned up, then handed to the handler installed before ours.
const FAULT_SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGILL, libc::SIGFPE];

/// The handlers that were installed before ours, for the fault signals (index as in
/// FAULT_SIGNALS); written once in `install` before our handler is set.
static PREVIOUS: [AtomicPtr<libc::sigaction>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];

fn cstring(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

/// Sets what a fatal signal removes: the temporaries `tmps` (a directory gets its
/// `frame_NNNNN.png` for `frames` frames removed, then itself), and the memory-mapped inputs the
/// SIGBUS message names. An empty `tmps` means nothing is pending.
pub fn track(tmps: &[PathBuf], frames: usize, mapped: &[PathBuf]) {
    let mut p = Pending { files: Vec::new(), dirs: Vec::new(), bus_message: Vec::new() };
    for t in tmps {
        if t.is_dir() {
            p.files.extend((0..frames).filter_map(|i| cstring(&t.join(format!("frame_{i:05}.png")))));
            p.dirs.extend(cstring(t));
        } else {
            p.files.extend(cstring(t));
        }
    }
    let names: Vec<String> = mapped.iter().map(|m| m.display().to_string()).collect();
    let msg = format!(
        "error: {}: a memory-mapped input changed during the decode (truncated or rewritten by another process); {}\n",
        movq::error::escape(&names.join(", ")),
        if tmps.is_empty() { "nothing was written" } else { "removed the unfinished output" }
    );
    p.bus_message = msg.into_bytes();
    // Leaked on purpose: a handler running on another thread may hold the previous snapshot.
    PENDING.store(Box::into_raw(Box::new(p)), Ordering::Release);
}

/// Removes the pending temporaries; async-signal-safe.
fn remove_pending() -> Option<&'static Pending> {
    let p = PENDING.load(Ordering::Acquire);
    // SAFETY: PENDING is null or a pointer from Box::into_raw that is never freed (track leaks
    // every snapshot), so it is valid for 'static and never mutated after publication.
    let pending = unsafe { p.as_ref() }?;
    for f in &pending.files {
        // SAFETY: a NUL-terminated path owned by the leaked snapshot; unlink is
        // async-signal-safe (POSIX.1-2017 2.4.3) and a missing file is just an error code.
        unsafe { libc::unlink(f.as_ptr()) };
    }
    for d in &pending.dirs {
        // SAFETY: as above, for rmdir.
        unsafe { libc::rmdir(d.as_ptr()) };
    }
    Some(pending)
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: write(2) on fd 2 from a valid slice; async-signal-safe. A short or failed write
    // loses only the message.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

fn signal_name(sig: libc::c_int) -> &'static [u8] {
    match sig {
        libc::SIGQUIT => b"SIGQUIT",
        libc::SIGUSR1 => b"SIGUSR1",
        libc::SIGUSR2 => b"SIGUSR2",
        libc::SIGALRM => b"SIGALRM",
        libc::SIGVTALRM => b"SIGVTALRM",
        libc::SIGPROF => b"SIGPROF",
        libc::SIGXCPU => b"SIGXCPU",
        libc::SIGIO => b"SIGIO",
        libc::SIGPWR => b"SIGPWR",
        libc::SIGSTKFLT => b"SIGSTKFLT",
        libc::SIGSYS => b"SIGSYS",
        libc::SIGABRT => b"SIGABRT",
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGILL => b"SIGILL",
        libc::SIGFPE => b"SIGFPE",
        _ => b"a fatal signal",
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let pending = remove_pending();
    if sig == libc::SIGBUS {
        match pending {
            Some(p) => write_stderr(&p.bus_message),
            None => write_stderr(
                b"error: a memory-mapped input changed while movq was reading it (truncated by another process?)\n",
            ),
        }
        // SAFETY: _exit is async-signal-safe and ends the process without running Rust code.
        unsafe { libc::_exit(2) };
    }
    write_stderr(b"movq: caught ");
    write_stderr(signal_name(sig));
    write_stderr(if pending.is_some_and(|p| !p.files.is_empty() || !p.dirs.is_empty()) {
        b"; removed the unfinished output\n"
    } else {
        b"\n"
    });
    if let Some(i) = FAULT_SIGNALS.iter().position(|&s| s == sig) {
        let prev = PREVIOUS[i].load(Ordering::Acquire);
        // SAFETY: prev is null or a leaked, fully written sigaction (set in install before our
        // handler); sigaction is async-signal-safe. Returning re-executes the faulting
        // instruction, which then reaches the previous handler (or the default action).
        unsafe {
            if prev.is_null() {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            } else {
                libc::sigaction(sig, prev, std::ptr::null_mut());
            }
        }
        return;
    }
    // SAFETY: as above.
    unsafe { libc::_exit(128 + sig) };
}

/// Installs the handlers; once per process, before the first `track`.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain FFI calls with zero-initialised, then filled, sigaction structs (all
        // fields are integers, pointers or a sigset_t, for which all-zero is valid). The handler
        // is an extern "C" fn of the one-argument form (no SA_SIGINFO); SA_ONSTACK lets it run
        // on the alternate stack Rust sets up for stack overflows.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            for s in EXIT_SIGNALS.iter().chain(&FAULT_SIGNALS).chain(&[libc::SIGBUS]) {
                libc::sigaddset(&mut act.sa_mask, *s);
            }
            for (i, &s) in FAULT_SIGNALS.iter().enumerate() {
                let prev: *mut libc::sigaction = Box::into_raw(Box::new(std::mem::zeroed()));
                if libc::sigaction(s, std::ptr::null(), prev) == 0 {
                    PREVIOUS[i].store(prev, Ordering::Release);
                }
                libc::sigaction(s, &act, std::ptr::null_mut());
            }
            for &s in EXIT_SIGNALS.iter().chain(&[libc::SIGBUS]) {
                libc::sigaction(s, &act, std::ptr::null_mut());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    });
}
