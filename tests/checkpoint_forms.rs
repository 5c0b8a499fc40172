//! The checkpoint forms people have, decoded against the original Python code
//! (tests/fixtures/checkpoints, made by scripts/fixtures/checkpoint_forms.py): diffusers model
//! folders (test config with 2 groups, relu with `.bin` weights, gelu with a non-default
//! norm_eps, mish, a tiled run with non-default tile geometry), the SAT CogVideoX VAE as
//! `3d-vae.pt` and as its safetensors twin (the SAT decode loop, T = 5 and 13), and a
//! MOVQDecoder3D in sat naming that must not be taken for CogVideoX. Every run in f64 (rel-L2
//! within 1e-12 of the float64 reference) and f32 (the golden tolerance rule).

use movq::checkpoint::{Checkpoint, OpenOptions};
use movq::io::WeightFile;
use movq::kernels::Float;
use movq::metrics::distance;
use movq::model::schedule::Tiling;
use movq::model::{DecodeMode, DecoderClass, TileConfig};
use movq::verify::{F64_REL_L2, f32_tolerance};
use movq::{Shape, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints").join(rel)
}

fn tensor<T: Float>(f: &WeightFile, name: &str) -> Tensor<T> {
    let (dims, data) = f.read::<T>(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    Tensor::from_vec(Shape::from_dims(&dims).unwrap(), data).unwrap()
}

fn mode_of(ck: &Checkpoint, run: &Value) -> DecodeMode {
    match run["mode"].as_str().unwrap() {
        "whole" => DecodeMode::Whole,
        "chunked" | "sat_loop" => DecodeMode::Chunked,
        "tiled" => {
            let t = &run["tiling"];
            let u = |k: &str| t[k].as_u64().map(|v| v as usize);
            let tiling = Tiling {
                sample_min: (u("tile_sample_min_height"), u("tile_sample_min_width")),
                overlap: (t["tile_overlap_factor_height"].as_f64(), t["tile_overlap_factor_width"].as_f64()),
            };
            let size = ck.sample_size.expect("a diffusers config has a sample size");
            DecodeMode::Tiled(TileConfig::from_tiling(size, &tiling, ck.plan.space_scale()).unwrap())
        }
        m => panic!("unknown mode {m}"),
    }
}

/// Decodes every run of `case` from the checkpoint at `weights` (relative to the case) and
/// checks f64 and f32; returns the class the checkpoint was opened as.
fn check_case(case: &str, weights: &str, expect_class: DecoderClass) {
    let refs = WeightFile::open(fixture(case).join("reference.safetensors")).unwrap();
    let meta: Value = serde_json::from_str(&refs.metadata()["meta"]).unwrap();
    let ck = Checkpoint::open(&fixture(case).join(weights), &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{case}/{weights}: {e}"));
    assert_eq!(ck.config().class, expect_class, "{case}: class ({})", ck.class_reason);
    let d64 = ck.load::<f64>().unwrap();
    let d32 = ck.load::<f32>().unwrap();
    let runs = meta["runs"].as_object().unwrap();
    assert!(!runs.is_empty());
    for (name, run) in runs {
        let mode = mode_of(&ck, run);
        let reference: Tensor<f64> = tensor(&refs, &format!("f64.{name}"));
        let torch32: Tensor<f64> = tensor(&refs, &format!("f32.{name}"));
        let y64 = d64.decode(&tensor::<f64>(&refs, &format!("z.{name}")), &mode).unwrap();
        let y32 = d32.decode(&tensor::<f32>(&refs, &format!("z.{name}")), &mode).unwrap();
        assert_eq!(y64.shape(), reference.shape(), "{case} {name}: shape");
        assert_eq!(y64.shape().d as u64, run["frames_out"].as_u64().unwrap(), "{case} {name}: frames");
        let e64 = distance(y64.data(), reference.data());
        assert!(e64.rel_l2 < F64_REL_L2, "{case} {name}: f64 rel_l2 {:.3e}", e64.rel_l2);
        let torch = distance(torch32.data(), reference.data());
        let absmax = reference.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let (tol_abs, tol_rel) = f32_tolerance(torch.max_abs, torch.rel_l2, absmax);
        let y32: Vec<f64> = y32.data().iter().map(|&v| v as f64).collect();
        let e32 = distance(&y32, reference.data());
        assert!(
            e32.max_abs <= tol_abs && e32.rel_l2 <= tol_rel,
            "{case} {name}: f32 max_abs {:.3e} (tol {tol_abs:.3e}), rel_l2 {:.3e} (tol {tol_rel:.3e})",
            e32.max_abs,
            e32.rel_l2
        );
    }
}

#[test]
fn diffusers_test_config_with_two_groups() {
    check_case("diffusers_groups2", "", DecoderClass::CogVideoXDecoder3d);
}

#[test]
fn diffusers_relu_from_a_bin_only_folder() {
    assert!(!fixture("diffusers_relu_bin/vae/diffusion_pytorch_model.safetensors").exists());
    check_case("diffusers_relu_bin", "vae", DecoderClass::CogVideoXDecoder3d);
}

#[test]
fn diffusers_gelu_with_norm_eps_the_decoder_ignores() {
    check_case("diffusers_gelu", "", DecoderClass::CogVideoXDecoder3d);
}

#[test]
fn diffusers_mish() {
    check_case("diffusers_mish", "", DecoderClass::CogVideoXDecoder3d);
}

#[test]
fn sat_cogvideox_pt_decodes_as_the_sat_loop() {
    check_case("sat_cogvideox", "3d-vae.pt", DecoderClass::ContextParallelDecoder3d);
}

#[test]
fn sat_cogvideox_safetensors_twin_decodes_as_the_sat_loop() {
    check_case("sat_cogvideox", "3d-vae.safetensors", DecoderClass::ContextParallelDecoder3d);
}

#[test]
fn movq_in_sat_naming_is_not_taken_for_cogvideox() {
    check_case("movq_sat_names", "movq.safetensors", DecoderClass::MovqDecoder3d);
}

#[test]
fn scaling_factor_of_the_diffusers_config_is_read() {
    let ck = Checkpoint::open(&fixture("diffusers_groups2"), &OpenOptions::default()).unwrap();
    assert_eq!(ck.scaling_factor, Some(0.7));
    assert_eq!(ck.config().norm_num_groups, 2);
}

#[test]
fn sat_decoder_only_file_is_an_unknown_class_unless_named() {
    // The SAT decoder's tensors alone fit MOVQDecoder3D too: refused, not defaulted.
    let src = WeightFile::open(fixture("sat_cogvideox/3d-vae.safetensors")).unwrap();
    let names: Vec<String> = src.names().filter(|n| n.starts_with("decoder.")).map(String::from).collect();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let (dims, data) = src.read::<f32>(n).unwrap();
            (n.clone(), dims, data)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decoder_only.safetensors");
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    movq::io::write_tensors(&path, &refs, &Default::default()).unwrap();
    let e = Checkpoint::open(&path, &OpenOptions::default()).unwrap_err();
    assert!(matches!(e, movq::Error::UnknownClass(_)), "{e}");
    let mut opts = OpenOptions::default();
    opts.hints.class = Some(DecoderClass::ContextParallelDecoder3d);
    let ck = Checkpoint::open(&path, &opts).unwrap();
    assert_eq!(ck.config().class, DecoderClass::ContextParallelDecoder3d);
}

#[test]
fn weights_file_in_a_diffusers_folder_reads_the_config_beside_it() {
    // Without vae/config.json the relu config would be inferred as SiLU with 32 groups.
    let ck = Checkpoint::open(
        &fixture("diffusers_relu_bin/vae/diffusion_pytorch_model.bin"),
        &OpenOptions::default(),
    )
    .unwrap();
    assert_eq!(ck.config().act_fn, movq::kernels::Act::Relu);
    assert_eq!(ck.config().norm_num_groups, 4);
    assert!(ck.scaling_factor.is_some());
}

/// The SAT decoder's tensors without the encoder (as `decoder.state_dict()` saves them, no
/// prefix) and a config, in a temporary directory.
fn unprefixed_sat_decoder(dir: &Path, config: &str) -> (PathBuf, PathBuf) {
    let src = WeightFile::open(fixture("sat_cogvideox/3d-vae.safetensors")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = src
        .names()
        .filter_map(|n| {
            let (dims, data) = src.read::<f32>(n).unwrap();
            Some((n.strip_prefix("decoder.")?.to_string(), dims, data))
        })
        .collect();
    let path = dir.join("decoder.safetensors");
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    movq::io::write_tensors(&path, &refs, &Default::default()).unwrap();
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config).unwrap();
    (path, cfg)
}

#[test]
fn sat_yaml_config_with_gather_norm_is_context_parallel_and_pads_first() {
    let refs = WeightFile::open(fixture("sat_cogvideox/reference.safetensors")).unwrap();
    let meta: Value = serde_json::from_str(&refs.metadata()["meta"]).unwrap();
    let mut dec = meta["config"]["decoder_config"].clone();
    assert!(dec.get("gather_norm").is_some(), "the SAT yaml's decoder params: {dec}");
    // pad_mode is not a ContextParallelDecoder3D argument; upstream would ignore it, so must movq.
    dec["pad_mode"] = "constant".into();
    let dir = tempfile::tempdir().unwrap();
    let (w, cfg) = unprefixed_sat_decoder(dir.path(), &dec.to_string());
    let ck = Checkpoint::open(&w, &OpenOptions { config: Some(&cfg), ..Default::default() }).unwrap();
    assert_eq!(ck.config().class, DecoderClass::ContextParallelDecoder3d, "{}", ck.class_reason);
    assert_eq!(ck.config().pad_mode, movq::PadMode::First);
    let y =
        ck.load::<f64>().unwrap().decode(&tensor::<f64>(&refs, "z.whole_t5"), &DecodeMode::Whole).unwrap();
    let e = distance(y.data(), tensor::<f64>(&refs, "f64.whole_t5").data());
    assert!(e.rel_l2 < F64_REL_L2, "rel_l2 {:.3e}", e.rel_l2);
    // Without gather_norm and without a class the unprefixed file is read as MOVQDecoder3D,
    // and says so.
    dec.as_object_mut().unwrap().remove("gather_norm");
    dec.as_object_mut().unwrap().remove("pad_mode");
    std::fs::write(&cfg, dec.to_string()).unwrap();
    let ck = Checkpoint::open(&w, &OpenOptions { config: Some(&cfg), ..Default::default() }).unwrap();
    assert_eq!(ck.config().class, DecoderClass::MovqDecoder3d);
    assert!(ck.class_assumed && ck.class_reason.contains("fit the SAT CogVideoX"), "{}", ck.class_reason);
}
