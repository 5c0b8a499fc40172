//! Shared test helpers: locating the golden reference data.

#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/golden` beside the repository. When it is missing, tests fail under `CI=true`
/// and are skipped with a message otherwise.
pub fn golden_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "golden reference data not found at {} (CI=true requires it). HINT: place the shared/ \
             folder beside the repository root",
            dir.display()
        );
    }
    eprintln!("SKIPPED: golden data not found at {}", dir.display());
    None
}

/// The golden file `name.safetensors`, or `None` when skipping (see [`golden_dir`]).
pub fn golden(name: &str) -> Option<PathBuf> {
    let p = golden_dir()?.join(format!("{name}.safetensors"));
    assert!(p.exists(), "golden case {} is missing", p.display());
    Some(p)
}
