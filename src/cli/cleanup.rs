//! Ctrl-C / SIGTERM during a decode: remove the unfinished output's temporary files, then exit
//! with 130. (SIGKILL cannot be caught; it leaves only the hidden `.name.tmp-PID` temporary,
//! never a file under the output's name. Other fatal signals and SIGBUS: `signals.rs`.)

use std::path::PathBuf;
use std::sync::Mutex;

static PARTIAL: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the handler; once per process.
pub fn install() {
    // Failing to install only loses the cleanup, not correctness: ignore the error.
    let _ = ctrlc::set_handler(|| {
        let paths = std::mem::take(&mut *PARTIAL.lock().unwrap_or_else(|e| e.into_inner()));
        for p in &paths {
            let _ = if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
        }
        eprintln!("interrupted; removed the unfinished output");
        std::process::exit(130);
    });
}

/// Temporaries to remove if interrupted; replaces the previous set (empty: nothing pending).
pub fn track(paths: Vec<PathBuf>) {
    *PARTIAL.lock().unwrap_or_else(|e| e.into_inner()) = paths;
}
