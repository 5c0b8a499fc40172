//! The bad-input catalogue: every defect a stranger's checkpoint, latent, config or output path
//! can have gets a named `Error` variant (asserted here in the library) and exit code 2 with a
//! message naming the file, tensor and shapes (asserted through the binary in `cli_catalogue`).
//! Weight-level defects (missing, unexpected, mis-shaped weights) are also in tests/loader.rs.

mod common;

use movq::io::{
    Loader, VideoFormat, VideoOptions, VideoWriter, WeightFile, read_latent, write_npy, write_tensors,
};
use movq::model::DecodeMode;
use movq::{Decoder, DecoderConfig, Error, Shape, Tensor};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TINY: &str = r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 1], "num_res_blocks": 0,
    "attn_resolutions": [], "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}"#;

/// A safetensors file: the JSON header as given, then `data_len` zero bytes.
fn st_bytes(header: &serde_json::Value, data_len: usize) -> Vec<u8> {
    let text = header.to_string();
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

fn parse(bytes: Vec<u8>) -> movq::Result<WeightFile> {
    WeightFile::from_bytes("bad.safetensors", bytes)
}

/// Random weights of the TINY decoder with its config in the metadata: (name, shape, data).
fn tiny_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let cfg = DecoderConfig::from_json(TINY).unwrap();
    let loader = Loader::random(7);
    Decoder::<f32>::load(&loader.root(), &movq::model::DecoderPlan::new(&cfg).unwrap()).unwrap();
    loader.take_random()
}

fn write_weights(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let cfg = DecoderConfig::from_json(TINY).unwrap();
    let meta: BTreeMap<_, _> = [("config".to_string(), serde_json::to_string(&cfg).unwrap())].into();
    let entries: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    write_tensors(path, &entries, &meta).unwrap();
}

fn write_latent(path: &Path, dims: &[usize]) {
    let n: usize = dims.iter().product();
    write_npy(path, dims, &(0..n).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>()).unwrap();
}

/// An npy file with a hand-written header dict and `data` (for shapes `write_npy` cannot make).
fn raw_npy(path: &Path, dict: &str, data: &[u8]) {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

fn entry(dtype: &str, shape: &[usize], offsets: [u64; 2]) -> serde_json::Value {
    json!({"dtype": dtype, "shape": shape, "data_offsets": offsets})
}

#[test]
fn truncated_safetensors_is_truncated() {
    let b = st_bytes(&json!({"a": entry("F32", &[4], [0, 16]), "b": entry("F32", &[2], [16, 24])}), 24);
    let full = b.len() as u64;
    match parse(b[..b.len() - 5].to_vec()) {
        Err(Error::Truncated { needed, got, .. }) => assert_eq!((needed, got), (full, full - 5)),
        other => panic!("expected Truncated, got {other:?}"),
    }
    for cut in [0, 3, 7] {
        assert!(matches!(parse(b[..cut].to_vec()), Err(Error::Truncated { needed: 8, .. })), "cut {cut}");
    }
}

#[test]
fn header_length_larger_than_the_file_or_absurd_is_header_length() {
    let b = st_bytes(&json!({"a": entry("F32", &[1], [0, 4])}), 4);
    let hl = u64::from_le_bytes(b[..8].try_into().unwrap());
    match parse(b[..20].to_vec()) {
        Err(Error::HeaderLength { header_len, file_len: 20, .. }) => assert_eq!(header_len, hl),
        other => panic!("expected HeaderLength, got {other:?}"),
    }
    let mut huge = (200_000_000u64).to_le_bytes().to_vec();
    huge.extend_from_slice(&[b' '; 64]);
    let e = parse(huge).unwrap_err();
    assert!(matches!(e, Error::HeaderLength { header_len: 200_000_000, limit: 100_000_000, .. }), "{e:?}");
    assert!(e.to_string().contains("larger than the 100000000-byte limit"), "{e}");
    let mut max = u64::MAX.to_le_bytes().to_vec();
    max.extend_from_slice(b"{}");
    assert!(matches!(parse(max), Err(Error::HeaderLength { .. })));
}

#[test]
fn invalid_json_header_is_invalid_header() {
    for text in [
        "{\"a\": ",
        "[1, 2]",
        "\u{1}",
        "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}",
    ] {
        let mut b = (text.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(&[0; 4]);
        assert!(matches!(parse(b), Err(Error::InvalidHeader { .. })), "{text}");
    }
    let mut b = 4u64.to_le_bytes().to_vec();
    b.extend_from_slice(&[0xff, 0xfe, b'{', b'}']);
    assert!(matches!(parse(b), Err(Error::InvalidHeader { reason, .. }) if reason.contains("UTF-8")));
}

#[test]
fn offsets_out_of_range_overlapping_or_reversed_are_bad_offsets() {
    // In range of the header's own sizes (8 bytes of data), but placed past the end.
    let out = json!({"a": entry("F32", &[1], [0, 4]), "b": entry("F32", &[1], [12, 16])});
    match parse(st_bytes(&out, 8)) {
        Err(Error::BadOffsets { name, offsets, .. }) => assert_eq!((name.as_str(), offsets), ("b", [12, 16])),
        other => panic!("expected BadOffsets, got {other:?}"),
    }
    let overlap = json!({"a": entry("F32", &[2], [0, 8]), "b": entry("F32", &[2], [4, 12])});
    match parse(st_bytes(&overlap, 16)) {
        Err(Error::BadOffsets { name, reason, .. }) => {
            assert_eq!(name, "b");
            assert!(reason.contains("overlap tensor `a`"), "{reason}");
        }
        other => panic!("expected BadOffsets, got {other:?}"),
    }
    // Two entries on the same bytes: their sizes add up to more than the file holds, but the
    // file is not truncated.
    let same = json!({"a": entry("F32", &[2], [0, 8]), "b": entry("F32", &[2], [0, 8])});
    match parse(st_bytes(&same, 8)) {
        Err(Error::BadOffsets { name, reason, .. }) => {
            assert_eq!(name, "b");
            assert!(reason.contains("overlap tensor `a`"), "{reason}");
        }
        other => panic!("expected BadOffsets, got {other:?}"),
    }
    let reversed = json!({"a": entry("F32", &[1], [8, 4])});
    assert!(matches!(parse(st_bytes(&reversed, 8)), Err(Error::BadOffsets { offsets: [8, 4], .. })));
}

#[test]
fn unsupported_dtype_is_unsupported_dtype() {
    // Known to safetensors but not read by movq: refused when read, naming the tensor.
    let f = parse(st_bytes(&json!({"ints": entry("I32", &[2], [0, 8])}), 8)).unwrap();
    match f.read::<f32>("ints") {
        Err(Error::UnsupportedDtype { name, dtype, .. }) => {
            assert_eq!((name.as_str(), dtype.as_str()), ("ints", "I32"))
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
    // Unknown to safetensors altogether: refused when opened.
    let f = parse(st_bytes(&json!({"q": entry("Q4_K", &[2], [0, 8])}), 8));
    assert!(matches!(f, Err(Error::UnsupportedDtype { name, dtype, .. }) if name == "q" && dtype == "Q4_K"));
}

#[test]
fn shape_and_byte_size_mismatch_is_byte_size() {
    let f = parse(st_bytes(&json!({"w": entry("F32", &[2, 3], [0, 20])}), 20));
    match f {
        Err(Error::ByteSize { name, shape, needed, got, .. }) => {
            assert_eq!((name.as_str(), shape, needed, got), ("w", vec![2, 3], 24, 20));
        }
        other => panic!("expected ByteSize, got {other:?}"),
    }
    // A shape whose byte count overflows 64 bits is a mismatch too, not a panic.
    let huge = json!({"w": entry("F32", &[1 << 40, 1 << 40], [0, 4])});
    assert!(matches!(parse(st_bytes(&huge, 4)), Err(Error::ByteSize { .. })));
}

#[test]
fn latent_rank_channels_empty_and_absurd_dims_have_their_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.npy");
    write_latent(&p, &[4, 2, 3, 3]);
    assert!(
        matches!(read_latent::<f32>(&p, None), Err(Error::LatentRank { shape, .. }) if shape == [4, 2, 3, 3])
    );
    write_latent(&p, &[1, 4, 0, 3, 3]);
    assert!(matches!(read_latent::<f32>(&p, None), Err(Error::EmptyLatent { .. })));
    // Dims whose byte size overflows: refused while parsing the header, before allocating.
    raw_npy(
        &p,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 1099511627776, 4194304, 8), }",
        &[],
    );
    assert!(matches!(read_latent::<f32>(&p, None), Err(Error::TooLarge { .. })));
    // Bytes are not a latent (npy reads them for images elsewhere).
    raw_npy(&p, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 4, 1, 2, 2), }", &[7; 16]);
    assert!(matches!(read_latent::<f32>(&p, None), Err(Error::UnsupportedDtype { .. })));

    let cfg = DecoderConfig::from_json(TINY).unwrap();
    let plan = movq::model::DecoderPlan::new(&cfg).unwrap();
    match plan.output_shape(Shape::new(1, 3, 2, 4, 4)) {
        Err(Error::LatentChannels { expected: 4, got: 3, .. }) => {}
        other => panic!("expected LatentChannels, got {other:?}"),
    }
    // A latent small enough to exist whose decoded size overflows: checked arithmetic.
    let r = plan.output_shape(Shape::new(1, 4, 2, 1 << 62, 1));
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    let decoder = Decoder::<f32>::load(&Loader::random(1).root(), &plan).unwrap();
    let z = Tensor::<f32>::zeros(Shape::new(1, 5, 2, 4, 4)).unwrap();
    assert!(matches!(decoder.decode(&z, &DecodeMode::Chunked), Err(Error::LatentChannels { got: 5, .. })));
}

#[test]
fn nonfinite_latent_is_nonfinite_latent_with_the_first_index() {
    let mut z = Tensor::<f32>::zeros(Shape::new(1, 4, 2, 3, 3)).unwrap();
    movq::io::check_finite(Path::new("z.npy"), &z).unwrap();
    z.data_mut()[40] = f32::NAN;
    z.data_mut()[50] = f32::INFINITY;
    match movq::io::check_finite(Path::new("z.npy"), &z) {
        Err(Error::NonFiniteLatent { count: 2, first, .. }) => assert_eq!(first, [0, 2, 0, 1, 1]),
        other => panic!("expected NonFiniteLatent, got {other:?}"),
    }
}

fn tiny_with(edit: impl FnOnce(&mut serde_json::Value)) -> movq::Result<DecoderConfig> {
    let mut v: serde_json::Value = serde_json::from_str(TINY).unwrap();
    edit(&mut v);
    // The per-level checks are the plan's.
    DecoderConfig::from_json(&v.to_string()).and_then(|c| movq::model::DecoderPlan::new(&c).map(|_| c))
}

#[test]
fn channels_not_divisible_by_the_group_count_is_group_count() {
    let r = tiny_with(|v| v["ch"] = json!(48));
    assert!(matches!(r, Err(Error::GroupCount { channels: 48, groups: 32, .. })), "{r:?}");
    let r = tiny_with(|v| {
        v["ch"] = json!(16);
        v["ch_mult"] = json!([2, 1]);
    });
    assert!(matches!(r, Err(Error::GroupCount { channels: 16, .. })), "{r:?}");
}

#[test]
fn config_values_out_of_range_are_invalid_config() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 8] = [
        ("temporal_compress_times", |v| v["temporal_compress_times"] = json!(3)),
        ("ch_mult is empty", |v| v["ch_mult"] = json!([])),
        ("ch_mult[1] is 0", |v| v["ch_mult"] = json!([1, 0])),
        ("ch must be positive", |v| v["ch"] = json!(0)),
        ("z_channels must be positive", |v| v["z_channels"] = json!(0)),
        ("dropout", |v| v["dropout"] = json!(1.5)),
        ("num_res_blocks", |v| v["num_res_blocks"] = json!(100000)),
        ("levels", |v| v["ch_mult"] = json!(vec![1; 40])),
    ];
    for (what, edit) in cases {
        match tiny_with(edit) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains(what), "{what}: {m}"),
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn unwritable_output_is_output_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape::new(1, 3, 2, 4, 4);
    let missing = dir.path().join("no/such/dir/y.npy");
    let r = movq::io::FrameWriter::create::<f32>(&missing, movq::io::Container::Npy, shape, &BTreeMap::new());
    assert!(matches!(r, Err(Error::OutputNotWritable { path, .. }) if path == missing));
    let opts = VideoOptions { format: VideoFormat::Y4m, fps: 8, chroma: movq::io::Chroma::C420 };
    let r = VideoWriter::create(&dir.path().join("no/y.y4m"), shape, opts);
    assert!(matches!(r, Err(Error::OutputNotWritable { .. })));
    let busy = dir.path().join("frames");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "keep me").unwrap();
    let opts = VideoOptions { format: VideoFormat::PngDir, ..opts };
    assert!(matches!(VideoWriter::create(&busy, shape, opts), Err(Error::OutputNotWritable { .. })));
    assert_eq!(std::fs::read_to_string(busy.join("notes.txt")).unwrap(), "keep me");
}

#[test]
fn estimate_over_the_budget_is_over_memory_budget() {
    let cfg = DecoderConfig::from_json(TINY).unwrap();
    let z = Shape::new(1, 4, 5, 16, 16);
    let est = movq::model::memory::estimate_peak_bytes(
        &movq::model::DecoderPlan::new(&cfg).unwrap(),
        z,
        &DecodeMode::Chunked,
        &movq::model::memory::Footprint {
            elem: 4,
            weight_bytes: 1 << 20,
            keep_output: false,
            held_transform_bytes: 0,
        },
    )
    .unwrap();
    movq::model::memory::check_budget(est, est).unwrap();
    let r = movq::model::memory::check_budget(est, est - 1);
    assert!(matches!(r, Err(Error::OverMemoryBudget { needed, .. }) if needed == est));
}

/// Runs `movq decode` and returns (exit code, stderr).
fn decode(weights: &Path, latent: &Path, output: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let st = common::movq()
        .args(["decode", "--quiet", "--weights"])
        .arg(weights)
        .arg("--latent")
        .arg(latent)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    (st.status.code(), String::from_utf8_lossy(&st.stderr).into_owned())
}

#[test]
fn cli_catalogue_exits_2_naming_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let good = d("good.safetensors");
    write_weights(&good, &tiny_tensors());
    let z = d("z.npy");
    write_latent(&z, &[1, 4, 2, 4, 4]);
    let out = d("out.npy");
    let (code, err) = decode(&good, &z, &out, &[]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::remove_file(&out).unwrap();

    let good_bytes = std::fs::read(&good).unwrap();
    let mut weights: Vec<(PathBuf, Vec<&str>)> = Vec::new();
    let mut add = |name: &str, bytes: &[u8], expect: Vec<&'static str>| {
        std::fs::write(d(name), bytes).unwrap();
        weights.push((d(name), expect));
    };
    add("truncated.safetensors", &good_bytes[..good_bytes.len() - 100], vec!["truncated file"]);
    add("short_header.safetensors", &good_bytes[..200], vec!["header length", "larger than the file"]);
    let mut absurd = good_bytes.clone();
    absurd[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    add("absurd_header.safetensors", &absurd, vec!["larger than the 100000000-byte limit"]);
    let mut bad_json = good_bytes.clone();
    bad_json[8] = b'[';
    add("bad_json.safetensors", &bad_json, vec!["invalid safetensors header"]);
    let two = json!({"a": entry("F32", &[2], [0, 8]), "b": entry("F32", &[2], [4, 12])});
    add("overlap.safetensors", &st_bytes(&two, 16), vec!["`b`", "overlap tensor `a`"]);
    let size = json!({"w": entry("F32", &[2, 3], [0, 20])});
    add("size.safetensors", &st_bytes(&size, 20), vec!["`w`", "[2, 3]", "needs 24 bytes"]);
    let q = json!({"q": entry("Q4_K", &[2], [0, 8])});
    add("dtype.safetensors", &st_bytes(&q, 8), vec!["`q`", "unsupported dtype Q4_K"]);

    // Weight-level defects of an otherwise valid file.
    let mut t = tiny_tensors();
    let conv = t.iter().position(|(_, s, _)| s.len() == 5).unwrap();
    let (name, shape, _) = t.remove(conv);
    let missing = d("missing.safetensors");
    write_weights(&missing, &t);
    weights.push((missing, vec!["missing weight", Box::leak(name.clone().into_boxed_str())]));
    let mut t = tiny_tensors();
    t.push(("extra.weight".into(), vec![2], vec![0.0; 2]));
    let extra = d("extra.safetensors");
    write_weights(&extra, &t);
    weights.push((extra, vec!["unexpected weight `extra.weight`"]));
    let mut t = tiny_tensors();
    let n: usize = shape.iter().product();
    t[conv] = (name.clone(), vec![n], vec![0.0; n]);
    let misshaped = d("misshaped.safetensors");
    write_weights(&misshaped, &t);
    weights.push((misshaped, vec!["has shape", Box::leak(format!("needs {shape:?}").into_boxed_str())]));

    for (w, expect) in &weights {
        let (code, err) = decode(w, &z, &out, &[]);
        assert_eq!(code, Some(2), "{}: {err}", w.display());
        assert!(err.contains(&*w.to_string_lossy()), "{}: {err}", w.display());
        for e in expect {
            assert!(err.contains(e), "{}: `{e}` not in: {err}", w.display());
        }
        assert!(!out.exists());
    }

    // Latent defects.
    let mut latents: Vec<(PathBuf, Vec<&str>)> = Vec::new();
    for (name, dims, expect) in [
        ("rank4.npy", &[4, 2, 4, 4][..], "expected rank 5"),
        ("channels.npy", &[1, 3, 2, 4, 4], "has 3 channels, the decoder takes 4"),
        ("empty.npy", &[1, 4, 0, 4, 4], "empty axis"),
    ] {
        write_latent(&d(name), dims);
        latents.push((d(name), vec![expect]));
    }
    raw_npy(
        &d("absurd.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 1099511627776, 4194304, 8), }",
        &[],
    );
    latents.push((d("absurd.npy"), vec!["overflows"]));
    raw_npy(
        &d("short.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 4, 4), }",
        &[0; 100],
    );
    latents.push((d("short.npy"), vec!["truncated file", "needs 640 bytes, the file has 228"]));
    let mut v = vec![0.0f32; 128];
    v[70] = f32::NAN;
    write_npy(&d("nan.npy"), &[1, 4, 2, 4, 4], &v).unwrap();
    latents.push((d("nan.npy"), vec!["1 NaN or infinite values", "(0, 2, 0, 1, 2)", "--allow-nonfinite"]));
    for (l, expect) in &latents {
        let (code, err) = decode(&good, l, &out, &[]);
        assert_eq!(code, Some(2), "{}: {err}", l.display());
        assert!(err.contains(&*l.to_string_lossy()), "{}: {err}", l.display());
        for e in expect {
            assert!(err.contains(e), "{}: `{e}` not in: {err}", l.display());
        }
        assert!(!out.exists());
    }

    // Config, output and memory.
    let cfg = d("config.json");
    std::fs::write(&cfg, TINY.replace("\"temporal_compress_times\": 2", "\"temporal_compress_times\": 3"))
        .unwrap();
    let cfg_arg = cfg.to_string_lossy().into_owned();
    let (code, err) = decode(&good, &z, &out, &["--config", &cfg_arg]);
    assert_eq!(code, Some(2));
    assert!(err.contains("config.json") && err.contains("not a power of two"), "{err}");
    std::fs::write(&cfg, TINY.replace("\"ch\": 32", "\"ch\": 40")).unwrap();
    let (code, err) = decode(&good, &z, &out, &["--config", &cfg_arg]);
    assert_eq!(code, Some(2));
    assert!(err.contains("40 channels are not divisible by the 32 GroupNorm groups"), "{err}");
    let nowhere = d("no/such/dir/out.npy");
    let (code, err) = decode(&good, &z, &nowhere, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no/such/dir/out.npy: cannot write the output"), "{err}");
    let (code, err) = decode(&good, &z, &out, &["--max-memory", "0.0001"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("memory budget is 0.00 GiB") && err.contains("--force"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A file of another format passed as weights fails the header-length check; the message says
/// what it looks like instead of quoting a meaningless header length.
#[test]
fn other_formats_as_safetensors_are_named() {
    let mut npy = b"\x93NUMPY\x01\x00v\x00".to_vec();
    npy.extend_from_slice(&[b' '; 118]);
    for (bytes, kind) in [
        (npy, "an .npy array"),
        (b"{\"ch\": 64, \"z_channels\": 4}\n".to_vec(), "JSON text"),
        (b"\x80\x02}q\x00.  a pickle, not a checkpoint".to_vec(), "a Python pickle"),
    ] {
        match parse(bytes) {
            Err(Error::InvalidHeader { reason, .. }) => assert!(reason.contains(kind), "{reason}"),
            other => panic!("{kind}: expected InvalidHeader, got {other:?}"),
        }
    }
}
