//! Per-module traces (`movq::trace`) on golden decoders: names and order, the decode unchanged
//! by tracing, a perturbed weight found as the first divergence, f32 error growing layer by
//! layer, and agreement with a trace written by PyTorch forward hooks (diffusers, float64).

mod common;

use movq::checkpoint::{Checkpoint, OpenOptions};
use movq::io::WeightFile;
use movq::metrics::distance;
use movq::model::{DecodeMode, TileConfig};
use movq::trace::{Bounds, Crop, Cut, TraceFile, TraceOptions, compare_traces, module_names, trace};
use movq::{Error, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const IGNORE: &[&str] = &["input.", "output"];

fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path, &OpenOptions { ignore: IGNORE, ..Default::default() }).unwrap()
}

fn latent<T: movq::kernels::Float>(path: &Path) -> Tensor<T> {
    let (dims, data) = WeightFile::open(path).unwrap().read::<T>("input.z").unwrap();
    Tensor::from_vec(movq::Shape::from_dims(&dims).unwrap(), data).unwrap()
}

fn golden_meta(path: &Path) -> serde_json::Value {
    serde_json::from_str(&WeightFile::open(path).unwrap().metadata()["meta"]).unwrap()
}

/// A copy of golden file `src` at `dst` with `delta` added to element 0 of weight `name`.
fn perturbed(src: &Path, dst: &Path, name: &str, delta: f32) {
    let f = WeightFile::open(src).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for n in f.names() {
        let (dims, mut data) = f.read::<f32>(n).unwrap();
        if n == name {
            data[0] += delta;
        }
        tensors.push((n.to_string(), dims, data));
    }
    assert!(tensors.iter().any(|t| t.0 == name), "no weight {name}");
    let entries: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v.as_slice())).collect();
    let md: BTreeMap<String, String> = f.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    movq::io::write_tensors(dst, &entries, &md).unwrap();
}

fn trace_file<T: movq::kernels::Float>(
    ck: &Checkpoint,
    z: &Tensor<T>,
    mode: &DecodeMode,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let dec = ck.load::<T>().unwrap();
    let t = trace(ck, &dec, z, mode, &TraceOptions::default()).unwrap();
    let p = dir.join(name);
    t.write(&p).unwrap();
    p
}

#[test]
fn trace_names_every_module_in_order_and_leaves_the_decode_unchanged() {
    let Some(path) = common::golden("movq_first_tct4_attn16") else { return };
    let ck = open(&path);
    let dec = ck.load::<f32>().unwrap();
    let z = latent::<f32>(&path);
    let crop = Crop { frames: Some(0..2), rows: Some(1..4), cols: None };
    let t = trace(&ck, &dec, &z, &DecodeMode::Whole, &TraceOptions { modules: vec![], crop }).unwrap();
    let names: Vec<&str> = t.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, module_names(&ck, &dec));
    // Upstream naming: levels from up.3 down to up.0, attention at the 16x16 level.
    for n in ["conv_in", "mid.block_1.norm1", "up.3.block.0", "up.2.attn.0", "up.1.upsample", "conv_out"] {
        assert!(names.contains(&n), "{n} not traced: {names:?}");
    }
    assert!(
        names.iter().position(|n| *n == "up.3.block.0") < names.iter().position(|n| *n == "up.0.block.0")
    );
    let out = t.get("conv_out").unwrap();
    assert_eq!(out.tensor.shape(), movq::Shape::new(1, 3, 2, 3, 64));
    assert_eq!(out.tensor, t.output.crop(&movq::tensor::Region { d: 0..2, h: 1..4, w: 0..64 }).unwrap());
    assert_eq!(t.output, dec.decode(&z, &DecodeMode::Whole).unwrap(), "tracing changed the decode");

    let only = TraceOptions { modules: vec!["up.?.block.0.conv2".into()], ..Default::default() };
    let t = trace(&ck, &dec, &z, &DecodeMode::Whole, &only).unwrap();
    assert_eq!(t.entries.len(), 4);
    let none = TraceOptions { modules: vec!["decoder.up_blocks.*".into()], ..Default::default() };
    let e = trace(&ck, &dec, &z, &DecodeMode::Whole, &none).unwrap_err();
    assert!(matches!(e, Error::NoSuchModule { .. }), "{e}");
    assert!(e.to_string().contains("decoder.up_blocks.*"), "{e}");
    let past =
        TraceOptions { crop: Crop { frames: Some(40..41), ..Default::default() }, ..Default::default() };
    let e = trace(&ck, &dec, &z, &DecodeMode::Whole, &past).unwrap_err();
    assert!(matches!(e, Error::EmptyCrop { .. }), "{e}");
    assert!(e.to_string().contains("crop (frames 40:41) keeps nothing of"), "{e}");
    assert!(e.to_string().contains("frames 40:41 miss its frames 0:"), "{e}");
}

#[test]
fn trace_cut_to_a_crop_needs_the_same_decode() {
    let Some(path) = common::golden("diffusers_decoder_whole_t3") else { return };
    let (ck, z) = (open(&path), latent::<f64>(&path));
    let dec = ck.load::<f64>().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let full = trace_file(&ck, &z, &DecodeMode::Whole, dir.path(), "full.safetensors");
    // One latent column fewer: every module's width differs, but rows 0:2 and columns 0:4 of
    // each keep the same shape, so only the recorded full shapes tell the decodes apart.
    let s = z.shape();
    let narrow = z.crop(&movq::tensor::Region { d: 0..s.d, h: 0..s.h, w: 0..s.w - 1 }).unwrap();
    let crop = Crop { rows: Some(0..2), cols: Some(0..4), ..Default::default() };
    let small = dir.path().join("small.safetensors");
    trace(&ck, &dec, &narrow, &DecodeMode::Whole, &TraceOptions { modules: vec![], crop: crop.clone() })
        .unwrap()
        .write(&small)
        .unwrap();
    let e = compare_traces(&TraceFile::open(&small).unwrap(), &TraceFile::open(&full).unwrap()).unwrap_err();
    assert!(e.to_string().contains("not the same decode"), "{e}");
    // The same decode cropped is compared: bitwise equal to the full trace's region.
    let same = dir.path().join("same.safetensors");
    trace(&ck, &dec, &z, &DecodeMode::Whole, &TraceOptions { modules: vec![], crop })
        .unwrap()
        .write(&same)
        .unwrap();
    let c = compare_traces(&TraceFile::open(&same).unwrap(), &TraceFile::open(&full).unwrap()).unwrap();
    assert!(c.rows.iter().all(|r| r.dist.max_abs == 0.0 && r.dims[3] <= 2 && r.dims[4] <= 4), "{:?}", c.rows);
    assert_eq!(c.cut, Some((Cut::B, "rows 0:2, columns 0:4".to_string())));
}

#[test]
fn trace_chunked_names_each_frame_batch() {
    let Some(path) = common::golden("diffusers_vae_decode_t4") else { return };
    let ck = open(&path);
    let dec = ck.load::<f32>().unwrap();
    let z = latent::<f32>(&path);
    let opts = TraceOptions { modules: vec!["decoder.conv_*".into()], ..Default::default() };
    let t = trace(&ck, &dec, &z, &DecodeMode::Chunked, &opts).unwrap();
    let names: Vec<&str> = t.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "decoder.conv_in@chunk0",
            "decoder.conv_out@chunk0",
            "decoder.conv_in@chunk1",
            "decoder.conv_out@chunk1"
        ]
    );
    assert_eq!(t.output, dec.decode(&z, &DecodeMode::Chunked).unwrap(), "tracing changed the decode");
    // The two batches' outputs are the decode's frames, in order.
    let (a, b) = (
        &t.get("decoder.conv_out@chunk0").unwrap().tensor,
        &t.get("decoder.conv_out@chunk1").unwrap().tensor,
    );
    let s = t.output.shape();
    assert_eq!(a.shape().d + b.shape().d, s.d);
    assert_eq!(
        *b,
        t.output.crop(&movq::tensor::Region { d: a.shape().d..s.d, h: 0..s.h, w: 0..s.w }).unwrap()
    );
    // Each batch's entries have their own frames: a crop past them says so.
    let past = TraceOptions { crop: Crop { frames: Some(40..41), ..Default::default() }, ..opts.clone() };
    let e = trace(&ck, &dec, &z, &DecodeMode::Chunked, &past).unwrap_err();
    assert!(e.to_string().contains("each frame batch and tile as its own entry"), "{e}");
    // A whole-mode trace against this one: the entries' names differ, and the modes are named.
    let dir = tempfile::tempdir().unwrap();
    let (pw, pc) = (dir.path().join("whole.safetensors"), dir.path().join("chunked.safetensors"));
    trace(&ck, &dec, &z, &DecodeMode::Whole, &opts).unwrap().write(&pw).unwrap();
    t.write(&pc).unwrap();
    let e = compare_traces(&TraceFile::open(&pw).unwrap(), &TraceFile::open(&pc).unwrap()).unwrap_err();
    assert!(e.to_string().contains("A was traced in whole mode, B in chunked"), "{e}");
}

/// The largest difference's index is in the module's whole output whether the entries are
/// cropped, cut to a crop, or whole.
#[test]
fn trace_worst_index_is_in_the_whole_output() {
    let Some(path) = common::golden("movq_first_tct4_attn16") else { return };
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    perturbed(&path, &bad, "up.1.block.0.conv2.conv.weight", 1e-3);
    let z = latent::<f64>(&path);
    let (ck_bad, ck) = (open(&bad), open(&path));
    let full_bad = trace_file(&ck_bad, &z, &DecodeMode::Whole, dir.path(), "a.safetensors");
    let full = trace_file(&ck, &z, &DecodeMode::Whole, dir.path(), "b.safetensors");
    let whole =
        compare_traces(&TraceFile::open(&full_bad).unwrap(), &TraceFile::open(&full).unwrap()).unwrap();
    let r = whole.rows.iter().find(|r| r.name == "up.1.block.0.conv2").unwrap();
    let w = r.worst_index.clone();
    assert!(w[3] > 0 && w[4] > 0, "{w:?}: a crop starting at it must move it");
    // A crop holding just that element, of the perturbed decode, against the full reference.
    let crop = Crop { frames: Some(w[2]..w[2] + 1), rows: Some(w[3]..w[3] + 1), cols: Some(w[4]..w[4] + 1) };
    let opts = TraceOptions { modules: vec!["up.1.block.0.conv2".into()], crop };
    let cropped = dir.path().join("c.safetensors");
    trace(&ck_bad, &ck_bad.load::<f64>().unwrap(), &z, &DecodeMode::Whole, &opts)
        .unwrap()
        .write(&cropped)
        .unwrap();
    let cut = compare_traces(&TraceFile::open(&cropped).unwrap(), &TraceFile::open(&full).unwrap()).unwrap();
    assert_eq!(cut.rows[0].dims, [r.dims[0], r.dims[1], 1, 1, 1]);
    assert_eq!(cut.rows[0].worst_index, w, "cut to the crop: the index in the whole output");
    assert_eq!(cut.rows[0].dist.max_abs, r.dist.max_abs);
}

#[test]
fn trace_tiled_names_each_tile_and_batch() {
    let Some(path) = common::golden("diffusers_vae_decode_t4") else { return };
    let ck = open(&path);
    let dec = ck.load::<f32>().unwrap();
    let z = latent::<f32>(&path); // (1, 4, 4, 6, 6): 2 x 2 tiles of 4 x 4 latents, 2 batches each
    let tc = TileConfig { tile_latent: (4, 4), stride_latent: (3, 3), blend: (8, 8), keep: (24, 24) };
    let mode = DecodeMode::Tiled(tc);
    let opts = TraceOptions { modules: vec!["decoder.conv_out".into()], ..Default::default() };
    let t = trace(&ck, &dec, &z, &mode, &opts).unwrap();
    let names: Vec<&str> = t.entries.iter().map(|e| e.name.as_str()).collect();
    let mut expected = Vec::new();
    for tile in ["0_0", "0_1", "1_0", "1_1"] {
        for k in 0..2 {
            expected.push(format!("decoder.conv_out@tile{tile}@chunk{k}"));
        }
    }
    assert_eq!(names, expected);
    assert_eq!(t.output, dec.decode(&z, &mode).unwrap(), "tracing changed the decode");
}

#[test]
fn trace_perturbed_weight_is_the_first_divergence() {
    for (case, weight, module) in [
        ("movq_first_tct4_attn16", "up.1.block.0.conv2.conv.weight", "up.1.block.0.conv2"),
        ("movq_first_tct4_attn16", "up.2.attn.0.v.weight", "up.2.attn.0"),
        (
            "diffusers_decoder_whole_t3",
            "decoder.up_blocks.2.resnets.0.norm1.conv_y.conv.bias",
            "decoder.up_blocks.2.resnets.0.norm1",
        ),
    ] {
        let Some(path) = common::golden(case) else { return };
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.safetensors");
        perturbed(&path, &bad, weight, 1e-3);
        // f32: the decode is deterministic, so everything before the perturbed module is
        // bitwise the same.
        let z = latent::<f32>(&path);
        let a = trace_file(&open(&bad), &z, &DecodeMode::Whole, dir.path(), "a.safetensors");
        let b = trace_file(&open(&path), &z, &DecodeMode::Whole, dir.path(), "b.safetensors");
        let c = compare_traces(&TraceFile::open(&a).unwrap(), &TraceFile::open(&b).unwrap()).unwrap();
        let bounds = Bounds { max_abs: None, max_rel: Some(1e-10) };
        let first = c.first_over(&bounds).unwrap();
        assert_eq!(first.name, module, "{case}: perturbing {weight}");
        // Everything before it is bitwise the same; everything after the perturbed module diverges.
        let at = c.rows.iter().position(|r| r.name == module).unwrap();
        assert!(c.rows[..at].iter().all(|r| r.dist.max_abs == 0.0), "{case}");
        assert!(c.rows.last().unwrap().dist.rel_l2 > 1e-10, "{case}");
        assert!(c.only_in_b.is_empty());
    }
}

#[test]
fn trace_f32_error_grows_layer_by_layer() {
    let Some(path) = common::golden("diffusers_decoder_whole_t3") else { return };
    let ck = open(&path);
    let (t32, t64) = (
        trace(&ck, &ck.load::<f32>().unwrap(), &latent(&path), &DecodeMode::Whole, &TraceOptions::default())
            .unwrap(),
        trace(&ck, &ck.load::<f64>().unwrap(), &latent(&path), &DecodeMode::Whole, &TraceOptions::default())
            .unwrap(),
    );
    let rel: Vec<f64> = t32
        .entries
        .iter()
        .zip(&t64.entries)
        .map(|(a, b)| {
            assert_eq!(a.name, b.name);
            let a: Vec<f64> = a.tensor.data().iter().map(|&v| v as f64).collect();
            distance(&a, b.tensor.data()).rel_l2
        })
        .collect();
    // Every module carries float32 rounding, within 4x the golden case's final figure ...
    let meta = golden_meta(&path);
    let bound = 4.0 * meta["f32_rel_l2_err"].as_f64().unwrap();
    assert!(rel.iter().all(|&r| r > 0.0 && r <= bound), "{rel:?} (bound {bound:e})");
    // ... and it accumulates: the output's error is several times conv_in's, and the second
    // half of the network is worse than the first on average.
    assert!(rel[rel.len() - 1] > 3.0 * rel[0], "{rel:?}");
    let half = rel.len() / 2;
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    assert!(mean(&rel[half..]) > 1.5 * mean(&rel[..half]), "{rel:?}");
}

/// movq's traces of a golden case against the fixture written by PyTorch forward hooks on
/// diffusers' AutoencoderKLCogVideoX in float64 (scripts/fixtures/hook_trace.py), same crop.
fn check_against_hooks(case: &str, mode: DecodeMode, crop: Crop) {
    let Some(path) = common::golden(case) else { return };
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/trace/{case}.torch.safetensors"));
    let torch = TraceFile::open(&fixture).unwrap();
    let ck = open(&path);
    let opts = TraceOptions { modules: vec![], crop };
    let dir = tempfile::tempdir().unwrap();
    let meta = golden_meta(&path);
    let (tol_abs, tol_rel) = movq::verify::f32_tolerance(
        meta["f32_max_abs_err"].as_f64().unwrap(),
        meta["f32_rel_l2_err"].as_f64().unwrap(),
        meta["output_f64_absmax"].as_f64().unwrap(),
    );
    for (precision, bounds) in [
        ("f64", Bounds { max_abs: None, max_rel: Some(movq::verify::F64_REL_L2) }),
        ("f32", Bounds { max_abs: Some(tol_abs), max_rel: Some(tol_rel) }),
    ] {
        let p = dir.path().join(format!("{precision}.safetensors"));
        if precision == "f64" {
            let dec = ck.load::<f64>().unwrap();
            trace(&ck, &dec, &latent::<f64>(&path), &mode, &opts).unwrap().write(&p).unwrap();
        } else {
            let dec = ck.load::<f32>().unwrap();
            trace(&ck, &dec, &latent::<f32>(&path), &mode, &opts).unwrap().write(&p).unwrap();
        }
        let c = compare_traces(&TraceFile::open(&p).unwrap(), &torch).unwrap();
        assert!(c.only_in_b.is_empty(), "{case}: every hooked module compared");
        let names: Vec<&String> = c.rows.iter().map(|r| &r.name).collect();
        assert_eq!(names, torch.order.iter().collect::<Vec<_>>(), "{case}: hooks fire in movq's order");
        if let Some(r) = c.first_over(&bounds) {
            panic!("{case} {precision}: {} differs from PyTorch by {:?} (bounds {bounds:?})", r.name, r.dist);
        }
        assert_eq!(c.cut, None, "{case}: the same crop");
    }
    // An uncropped trace (a port's full outputs) against the cropped hook trace: cut to its
    // crop, in either order, and the same distances as the cropped trace's.
    let full = dir.path().join("full.safetensors");
    let dec = ck.load::<f64>().unwrap();
    trace(&ck, &dec, &latent::<f64>(&path), &mode, &TraceOptions::default()).unwrap().write(&full).unwrap();
    let cropped =
        compare_traces(&TraceFile::open(&dir.path().join("f64.safetensors")).unwrap(), &torch).unwrap();
    let words = opts.crop.words();
    let ab = compare_traces(&TraceFile::open(&full).unwrap(), &torch).unwrap();
    assert_eq!(ab.cut, Some((Cut::A, words.clone())), "{case}");
    let ba = compare_traces(&torch, &TraceFile::open(&full).unwrap()).unwrap();
    assert_eq!(ba.cut, Some((Cut::B, words)), "{case}");
    assert_eq!(ab.rows.len(), cropped.rows.len(), "{case}");
    for ((x, y), z) in ab.rows.iter().zip(&ba.rows).zip(&cropped.rows) {
        assert_eq!((&x.name, &x.dims, x.dist.max_abs), (&z.name, &z.dims, z.dist.max_abs), "{case}");
        assert_eq!((&y.dims, y.dist.max_abs), (&z.dims, z.dist.max_abs), "{case}");
    }
    // Two different crops cannot be lined up.
    let other = dir.path().join("other.safetensors");
    let crop = Crop { rows: Some(0..2), ..Default::default() };
    trace(&ck, &dec, &latent::<f64>(&path), &mode, &TraceOptions { modules: vec![], crop })
        .unwrap()
        .write(&other)
        .unwrap();
    let e = compare_traces(&TraceFile::open(&other).unwrap(), &torch).unwrap_err();
    assert!(e.to_string().contains("crops differ: A (rows 0:2), B (frames"), "{e}");
}

#[test]
fn trace_matches_pytorch_forward_hooks() {
    let crop = Crop { frames: Some(0..3), rows: Some(3..5), cols: Some(2..5) };
    check_against_hooks("diffusers_decoder_whole_t3", DecodeMode::Whole, crop);
}

#[test]
fn trace_chunked_matches_pytorch_forward_hooks() {
    let crop = Crop { frames: Some(0..2), rows: Some(3..5), cols: Some(2..4) };
    check_against_hooks("diffusers_vae_decode_t4", DecodeMode::Chunked, crop);
}

#[test]
fn compare_traces_names_missing_entries_and_shape_changes() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, entries: &[(&str, Vec<usize>)]| {
        let p = dir.path().join(name);
        let data: Vec<Vec<f64>> = entries.iter().map(|(_, d)| vec![0.5; d.iter().product()]).collect();
        let t: Vec<(&str, &[usize], &[f64])> =
            entries.iter().zip(&data).map(|((n, d), v)| (*n, d.as_slice(), v.as_slice())).collect();
        let order: Vec<&str> = entries.iter().map(|e| e.0).collect();
        let md =
            BTreeMap::from([("movq_trace".to_string(), serde_json::json!({"order": order}).to_string())]);
        movq::io::write_tensors(&p, &t, &md).unwrap();
        TraceFile::open(&p).unwrap()
    };
    let a = write("a.safetensors", &[("x", vec![1, 2, 1, 1, 2]), ("y", vec![1, 1, 1, 1, 1])]);
    let b = write("b.safetensors", &[("x", vec![1, 2, 1, 1, 2]), ("y", vec![1, 1, 1, 1, 1]), ("z", vec![2])]);
    let c = compare_traces(&a, &b).unwrap();
    assert_eq!((c.rows.len(), c.only_in_b.clone()), (2, vec!["z".to_string()]));
    assert!(c.first_over(&Bounds { max_abs: Some(0.0), max_rel: None }).is_none());
    let e = compare_traces(&b, &a).unwrap_err().to_string();
    assert!(e.contains("a.safetensors") && e.contains("`z`") && e.contains("missing from B"), "{e}");
    let s = write("s.safetensors", &[("x", vec![1, 2, 1, 2, 1]), ("y", vec![1, 1, 1, 1, 1])]);
    let e = compare_traces(&s, &a).unwrap_err().to_string();
    assert!(e.contains("`x`") && e.contains("[1, 2, 1, 2, 1]") && e.contains("[1, 2, 1, 1, 2]"), "{e}");
    // `order` naming a tensor the file lacks, or leaving one out, is refused on opening.
    let p = dir.path().join("bad.safetensors");
    let md = BTreeMap::from([("movq_trace".to_string(), r#"{"order": ["x", "w"]}"#.to_string())]);
    movq::io::write_tensors(&p, &[("x", &[1usize][..], &[1.0f64][..])], &md).unwrap();
    assert!(TraceFile::open(&p).unwrap_err().to_string().contains("`w`"));
}
