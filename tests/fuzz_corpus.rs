//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`, crash inputs included once
//! fixed) through the same harnesses the cargo-fuzz targets run, so an ordinary `cargo test`
//! exercises every input the fuzzer kept. See README "Fuzzing" for running the fuzzer itself.

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::path::PathBuf;

/// Runs `harness` on every file of fuzz/corpus/`target`; returns how many there were.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus is committed)", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        // A panic names the input, so it can be rerun with `cargo fuzz run <target> <file>`.
        let r = std::panic::catch_unwind(|| harness(&data));
        assert!(r.is_ok(), "{target}: input {} panicked", f.display());
    }
    files.len()
}

#[test]
fn corpus_safetensors_header() {
    assert!(replay("safetensors_header", harness::safetensors_header) >= 20);
}

#[test]
fn corpus_npy_parse() {
    assert!(replay("npy_parse", harness::npy_parse) >= 20);
}

#[test]
fn corpus_config_json() {
    assert!(replay("config_json", harness::config_json) >= 20);
}

#[test]
fn corpus_decode_tiny() {
    assert!(replay("decode_tiny", harness::decode_tiny) >= 20);
}

#[test]
fn corpus_torch_pickle() {
    assert!(replay("torch_pickle", harness::torch_pickle) >= 20);
}
