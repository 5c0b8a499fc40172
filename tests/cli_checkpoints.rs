//! The CLI on the checkpoint forms of issue 14 (fixtures in tests/fixtures/checkpoints): the
//! SAT release's `3d-vae.pt` decodes with no flags to the SAT loop's frames; `movq inspect`
//! names the class, why, the mode, the sample size and the tile geometry; `movq convert`
//! writes the safetensors twin bit for bit.

mod common;

use common::movq;
use movq::io::{WeightFile, read_npy, write_npy};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints").join(rel)
}

fn reference(case: &str, name: &str) -> (Vec<usize>, Vec<f64>) {
    WeightFile::open(fixture(case).join("reference.safetensors")).unwrap().read::<f64>(name).unwrap()
}

/// The reference latent `name` of `case` as an f32 .npy file in `dir`.
fn latent_npy(dir: &Path, case: &str, name: &str) -> PathBuf {
    let (dims, z) = reference(case, name);
    let z: Vec<f32> = z.iter().map(|&v| v as f32).collect();
    let path = dir.join("z.npy");
    write_npy(&path, &dims, &z).unwrap();
    path
}

#[test]
fn sat_pt_decodes_to_the_sat_loop_frames_without_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let zp = latent_npy(tmp.path(), "sat_cogvideox", "z.sat_t13");
    let out = tmp.path().join("out.npy");
    let st = movq()
        .args(["decode", "--weights"])
        .arg(fixture("sat_cogvideox/3d-vae.pt"))
        .arg("--latent")
        .arg(&zp)
        .arg("--no-scale")
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (shape, y) = read_npy::<f64>(&out).unwrap();
    let (rshape, r) = reference("sat_cogvideox", "f64.sat_t13");
    assert_eq!(shape, rshape);
    assert_eq!(shape[2], 49, "the SAT loop's 49 frames for 13 latents");
    let d = movq::metrics::distance(&y, &r);
    assert!(d.rel_l2 < 4e-6, "f32 decode vs the f64 SAT loop: rel_l2 {:.3e}", d.rel_l2);
}

#[test]
fn sat_checkpoint_needs_to_be_told_how_the_latent_is_scaled() {
    // The SAT scale_factor lives in the yaml, not in 3d-vae.pt: no silent unscaled decode.
    let tmp = tempfile::tempdir().unwrap();
    let zp = latent_npy(tmp.path(), "sat_cogvideox", "z.sat_t5");
    let out = tmp.path().join("out.npy");
    let st = movq()
        .args(["decode", "--weights"])
        .arg(fixture("sat_cogvideox/3d-vae.pt"))
        .arg("--latent")
        .arg(&zp)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("scale_factor in the SAT yaml") && err.contains("--no-scale"), "{err}");
    assert!(!out.exists());
}

fn inspect(args: &[&str], weights: &Path) -> Value {
    let out = movq().arg("inspect").arg(weights).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn inspect_names_class_reason_mode_and_tiles() {
    let v = inspect(&[], &fixture("sat_cogvideox/3d-vae.pt"));
    assert_eq!(v["class"], "ContextParallelDecoder3D");
    assert!(v["class_reason"].as_str().unwrap().contains("KL VAE"), "{}", v["class_reason"]);
    assert_eq!(v["mode"], "chunked");
    assert_eq!(v["format"], "sat");
    let v = inspect(&[], &fixture("movq_sat_names/movq.safetensors"));
    assert_eq!(v["class"], "MOVQDecoder3D");
    assert!(v["class_reason"].as_str().unwrap().contains("attention"), "{}", v["class_reason"]);
    assert_eq!(v["mode"], "whole");
    let v = inspect(&[], &fixture("diffusers_groups2"));
    assert_eq!(v["class"], "CogVideoXDecoder3D");
    assert_eq!(v["sample_size"], serde_json::json!([480, 720]));
    // diffusers' defaults for 480 x 720 and 8x upsampling (spec 11.3).
    assert_eq!(v["tile_geometry"]["tile_latent"], serde_json::json!([30, 45]));
    assert_eq!(v["tile_geometry"]["blend"], serde_json::json!([40, 72]));
    let args = [
        "--mode",
        "tiled",
        "--tile-sample-min-height",
        "32",
        "--tile-sample-min-width",
        "48",
        "--tile-overlap-factor-height",
        "0.25",
        "--tile-overlap-factor-width",
        "0.5",
    ];
    let v = inspect(&args, &fixture("diffusers_groups2"));
    assert_eq!(v["mode"], "tiled");
    // The grid diffusers printed for these values (reference.safetensors, run tiled_t3).
    assert_eq!(v["tile_geometry"]["tile_latent"], serde_json::json!([4, 6]));
    assert_eq!(v["tile_geometry"]["stride_latent"], serde_json::json!([3, 3]));
    assert_eq!(v["tile_geometry"]["blend"], serde_json::json!([8, 24]));
    assert_eq!(v["tile_geometry"]["keep"], serde_json::json!([24, 24]));
}

#[test]
fn tile_options_without_tiled_mode_are_refused() {
    let out = movq()
        .arg("inspect")
        .arg(fixture("diffusers_groups2"))
        .args(["--tile-sample-min-height", "32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "inspect reports it as the mode");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["mode"].as_str().unwrap().contains("--mode tiled"), "{}", v["mode"]);
}

#[test]
fn convert_pt_writes_the_safetensors_twin_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("vae.safetensors");
    let st = movq().arg("convert").arg(fixture("sat_cogvideox/3d-vae.pt")).arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (a, b) = (
        WeightFile::open(&out).unwrap(),
        WeightFile::open(fixture("sat_cogvideox/3d-vae.safetensors")).unwrap(),
    );
    let names: Vec<&str> = a.names().collect();
    assert_eq!(names, b.names().collect::<Vec<_>>());
    for n in names {
        assert_eq!(a.info(n).unwrap().dtype, b.info(n).unwrap().dtype, "{n}");
        let (sa, da) = a.read::<f64>(n).unwrap();
        let (sb, db) = b.read::<f64>(n).unwrap();
        assert_eq!(sa, sb, "{n}");
        assert!(da.iter().zip(&db).all(|(x, y)| x.to_bits() == y.to_bits()), "{n}");
    }
    // --only keeps the decoder; refusing to overwrite the input and non-safetensors outputs.
    let dec = tmp.path().join("dec.safetensors");
    let st = movq()
        .arg("convert")
        .arg(fixture("sat_cogvideox/3d-vae.pt"))
        .arg(&dec)
        .args(["--only", "decoder."])
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(WeightFile::open(&dec).unwrap().names().all(|n| n.starts_with("decoder.")));
    // Without the encoder the tensors fit MOVQDecoder3D too: the class told from the whole file
    // travels in the metadata.
    let v = inspect(&[], &dec);
    assert_eq!(v["class"], "ContextParallelDecoder3D");
    assert!(v["class_reason"].as_str().unwrap().contains("movq_class"), "{}", v["class_reason"]);
    let st = movq().arg("convert").arg(&out).arg(&out).output().unwrap();
    assert_eq!(st.status.code(), Some(2), "{}", String::from_utf8_lossy(&st.stderr));
    let st = movq().arg("convert").arg(&out).arg(tmp.path().join("x.pt")).output().unwrap();
    assert_eq!(st.status.code(), Some(2));
}
