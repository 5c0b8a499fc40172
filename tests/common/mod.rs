//! Shared test helpers: locating the golden reference data, running the CLI, small random models.

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

/// A command running the `movq` binary. With `MOVQ_TEST_RUNNER` set (e.g. `qemu-aarch64 -L
/// /usr/aarch64-linux-gnu` for a cross-compiled binary, see scripts/test-aarch64.sh) the binary
/// runs under that program.
pub fn movq() -> std::process::Command {
    run_under_runner(std::path::Path::new(env!("CARGO_BIN_EXE_movq")))
}

/// A command re-running the current test binary (for a child process with another
/// environment), under `MOVQ_TEST_RUNNER` like [`movq`].
pub fn this_test_binary() -> std::process::Command {
    run_under_runner(&std::env::current_exe().expect("the test binary's path"))
}

fn run_under_runner(exe: &std::path::Path) -> std::process::Command {
    match std::env::var("MOVQ_TEST_RUNNER").ok().filter(|r| !r.trim().is_empty()) {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = std::process::Command::new(parts.next().expect("non-empty runner"));
            c.args(parts).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    }
}

/// The shell words that start the `movq` binary (runner included), for scripts.
pub fn movq_shell_prefix() -> String {
    let runner = std::env::var("MOVQ_TEST_RUNNER").unwrap_or_default();
    format!("{runner} '{}'", env!("CARGO_BIN_EXE_movq"))
}

/// A PNG's width, height, APNG frame count (None for a still PNG) and frames as 8-bit RGB.
pub fn png_frames(path: &std::path::Path) -> (u32, u32, Option<u32>, Vec<Vec<u8>>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let info = r.info();
    let (w, h) = (info.width, info.height);
    let animated = info.animation_control.map(|a| a.num_frames);
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight));
    let mut frames = Vec::new();
    for _ in 0..animated.unwrap_or(1) {
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let fi = r.next_frame(&mut buf).unwrap();
        buf.truncate(fi.buffer_size());
        frames.push(buf);
    }
    (w, h, animated, frames)
}

/// Writes `config` to dir/name.json and random weights and a latent of `shape` beside it.
pub fn random_model(dir: &std::path::Path, name: &str, config: &str, shape: &str) -> (PathBuf, PathBuf) {
    let cfg = dir.join(format!("{name}.json"));
    std::fs::write(&cfg, config).unwrap();
    let (w, z) = (dir.join(format!("{name}.safetensors")), dir.join(format!("{name}_z.npy")));
    let st = movq()
        .args(["random-weights", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&w)
        .args(["--latent-shape", shape, "--latent-out"])
        .arg(&z)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    (w, z)
}
