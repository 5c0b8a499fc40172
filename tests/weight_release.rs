//! Memory-mapped weights leave the process's resident set after use (`WeightFile::release`,
//! called by every conv layer after its call unless `--keep-weights-resident`): the values read
//! afterwards are unchanged, and a decode is bitwise the same either way.

use movq::io::{Loader, WeightFile, write_tensors};
use movq::model::{DecodeMode, DecoderConfig, DecoderPlan};
use movq::tensor::{Shape, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Resident kB of this process's mappings of `path` (/proc/self/smaps), summed.
#[cfg(target_os = "linux")]
fn resident_kb(path: &Path) -> u64 {
    let path = path.canonicalize().unwrap();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let (mut total, mut inside) = (0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(path.to_str().unwrap());
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
        }
    }
    total
}

#[cfg(target_os = "linux")]
#[test]
fn release_drops_the_mapped_pages_and_keeps_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    let n = 1 << 20; // 4 MiB per tensor
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
    write_tensors(&p, &[("a", &[n][..], &a[..]), ("b", &[n][..], &b[..])], &BTreeMap::new()).unwrap();
    let file = WeightFile::open(&p).unwrap();
    let before = resident_kb(&p);
    assert_eq!(file.f32_view("a").unwrap(), &a[..]);
    assert_eq!(file.f32_view("b").unwrap(), &b[..]);
    let touched = resident_kb(&p);
    assert!(touched >= before + 8000, "reading 8 MiB maps it in: {before} -> {touched} kB");

    file.release("a");
    let after_a = resident_kb(&p);
    assert!(after_a + 4000 <= touched, "releasing a (4 MiB) drops it: {touched} -> {after_a} kB");
    // b is untouched by a's release (only whole pages inside a's bytes are dropped).
    assert!(after_a >= 4000, "b stays resident: {after_a} kB");
    // A view taken again (and one held across the release) reads the file's values.
    let held = file.f32_view("b").unwrap();
    file.release("b");
    assert!(resident_kb(&p) + 8000 <= touched, "both released: {} kB", resident_kb(&p));
    assert_eq!(held, &b[..]);
    assert_eq!(file.f32_view("a").unwrap(), &a[..]);

    // A converted copy (f64 here) releases the bytes it was made from.
    file.release("a");
    file.release("b");
    let copied = file.read::<f64>("a").unwrap().1;
    assert!(copied.iter().zip(&a).all(|(x, y)| *x == *y as f64));
    assert!(resident_kb(&p) + 8000 <= touched, "read() released its source: {} kB", resident_kb(&p));
    // Unknown names and owned buffers are no-ops.
    file.release("no such tensor");
    WeightFile::from_bytes("owned", std::fs::read(&p).unwrap()).unwrap().release("a");
}

#[test]
fn decode_is_bitwise_the_same_with_and_without_release() {
    let cfg = DecoderConfig::from_json(
        r#"{"class": "CogVideoXDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1,
            "attn_resolutions": [], "resolution": 32, "z_channels": 4}"#,
    )
    .unwrap();
    let plan = DecoderPlan::new(&cfg).unwrap();
    // Random weights written to a file, then loaded memory-mapped (Loader::shared).
    let random = Loader::random(5);
    movq::Decoder::<f32>::load(&random.root(), &plan).unwrap();
    let made = random.take_random();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    let views: Vec<(&str, &[usize], &[f32])> =
        made.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    write_tensors(&p, &views, &BTreeMap::new()).unwrap();
    let file = Arc::new(WeightFile::open(&p).unwrap());
    let loader = Loader::shared(file, "");
    let dec = movq::Decoder::<f32>::load(&loader.root(), &plan).unwrap();
    let s = Shape::new(1, 4, 3, 6, 5);
    let z = Tensor::from_vec(s, movq::tensor::random_normal(&s.dims(), 9).unwrap()).unwrap();
    for mode in [DecodeMode::Whole, DecodeMode::Chunked] {
        assert!(movq::kernels::params::release_weights(), "the default");
        let released = [dec.decode(&z, &mode).unwrap(), dec.decode(&z, &mode).unwrap()];
        movq::kernels::params::set_release_weights(false);
        let kept = dec.decode(&z, &mode);
        movq::kernels::params::set_release_weights(true);
        let kept = kept.unwrap();
        assert_eq!(released[0].data(), kept.data(), "{mode:?}");
        assert_eq!(released[1].data(), kept.data(), "{mode:?}, second call");
    }
}
