//! Reference sets (`movq::trace::golden`): a set made from a golden decoder judges outputs with
//! the golden tolerance rule, and every pinned file is verified by SHA-256.

mod common;

use movq::checkpoint::{Checkpoint, OpenOptions};
use movq::io::{WeightFile, write_npy};
use movq::model::DecodeMode;
use movq::trace::TraceOptions;
use movq::trace::golden::{MANIFEST, check_outputs, check_weights, read_set, write_set};
use movq::{Error, Tensor};
use std::path::{Path, PathBuf};

/// The golden case's weights (a copy without the input/output tensors is not needed: they
/// are ignored) and its latent as z.npy in `dir/latents`.
fn setup(case: &str, dir: &Path) -> Option<(Checkpoint, PathBuf, Vec<PathBuf>)> {
    let path = common::golden(case)?;
    let ck = Checkpoint::open(&path, &OpenOptions { ignore: &["input.", "output"], ..Default::default() })
        .unwrap();
    let (dims, z) = WeightFile::open(&path).unwrap().read::<f32>("input.z").unwrap();
    let latents = dir.join("latents");
    std::fs::create_dir(&latents).unwrap();
    let zp = latents.join("z.npy");
    write_npy(&zp, &dims, &z).unwrap();
    Some((ck, path, vec![zp]))
}

#[test]
fn golden_set_judges_ports_and_detects_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ck, weights, latents)) = setup("diffusers_decoder_whole_t3", dir.path()) else { return };
    let set = dir.path().join("set");
    let opts = TraceOptions { modules: vec!["decoder.up_blocks.3.*".into()], ..Default::default() };
    let m = write_set(&ck, &latents, &set, &DecodeMode::Whole, Some(&opts), &mut |_| {}).unwrap();
    assert_eq!((m.precision.as_str(), m.mode.as_str(), m.cases.len()), ("f64", "whole", 1));
    let case = &m.cases[0];
    assert_eq!(case.output_shape, vec![1, 3, 9, 64, 64]);
    assert!(case.f32_rel_l2_err > 0.0 && case.f32_rel_l2_err < 1e-5, "{case:?}");
    assert!(set.join("z.trace.safetensors").exists() && set.join("latents/z.npy").exists());
    assert_eq!(read_set(&set).unwrap(), m);
    check_weights(&set, &m, std::slice::from_ref(&weights)).unwrap();
    // The set's reference is the golden f64 output (PyTorch's) within the f64 bound.
    let y = WeightFile::open(set.join("z.safetensors")).unwrap().read::<f64>("sample").unwrap().1;
    let r = WeightFile::open(&weights).unwrap().read::<f64>("output.f64").unwrap().1;
    assert!(movq::metrics::distance(&y, &r).rel_l2 < movq::verify::F64_REL_L2);

    // Ports: PyTorch's float32 output passes; a small error in one frame fails.
    let port = dir.path().join("port");
    std::fs::create_dir(&port).unwrap();
    let (dims, torch32) = WeightFile::open(&weights).unwrap().read::<f32>("output.f32").unwrap();
    write_npy(&port.join("z.npy"), &dims, &torch32).unwrap();
    let r = check_outputs(&set, &m, &port).unwrap();
    assert!(r[0].pass, "{r:?}");
    // The same case as .npy and .safetensors: which one the port meant is not guessed.
    std::fs::write(port.join("z.safetensors"), b"").unwrap();
    let e = check_outputs(&set, &m, &port).unwrap_err().to_string();
    assert!(e.contains("both z.npy and z.safetensors"), "{e}");
    std::fs::remove_file(port.join("z.safetensors")).unwrap();
    let mut bad = torch32.clone();
    bad[1000] += 1e-3;
    write_npy(&port.join("z.npy"), &dims, &bad).unwrap();
    assert!(!check_outputs(&set, &m, &port).unwrap()[0].pass);
    // Another shape, or no output for a case, is an error naming the case and file.
    write_npy(&port.join("z.npy"), &[1, 3, 9, 64, 32], &torch32[..torch32.len() / 2]).unwrap();
    let e = check_outputs(&set, &m, &port).unwrap_err().to_string();
    assert!(e.contains("z.npy") && e.contains("[1, 3, 9, 64, 32]"), "{e}");
    std::fs::remove_file(port.join("z.npy")).unwrap();
    assert!(check_outputs(&set, &m, &port).is_err());

    // A changed latent copy, a changed manifest, other weights: Checksum errors.
    let lat = set.join("latents/z.npy");
    let orig = std::fs::read(&lat).unwrap();
    let mut changed = orig.clone();
    *changed.last_mut().unwrap() ^= 1;
    std::fs::write(&lat, &changed).unwrap();
    let e = read_set(&set).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }) && e.to_string().contains("z.npy"), "{e}");
    std::fs::write(&lat, &orig).unwrap();
    read_set(&set).unwrap();
    let text = std::fs::read_to_string(set.join(MANIFEST)).unwrap();
    // Any edit of the manifest itself (a pinned hash, a tolerance figure the check trusts) is
    // caught by its own manifest_sha256; a manifest without one is refused.
    let tol = format!("\"f32_max_abs_err\": {}", serde_json::to_string(&case.f32_max_abs_err).unwrap());
    assert!(text.contains(&tol), "{tol} not in the manifest");
    for edited in [
        text.replacen(&case.output.sha256, &"0".repeat(64), 1),
        text.replacen(&tol, "\"f32_max_abs_err\": 10.0", 1),
        text.replacen(&m.manifest_sha256, "", 1),
    ] {
        std::fs::write(set.join(MANIFEST), edited).unwrap();
        let e = read_set(&set).unwrap_err().to_string();
        assert!(e.contains("edited after the set was made") || e.contains("remake it"), "{e}");
    }
    std::fs::write(set.join(MANIFEST), &text).unwrap();
    let other = dir.path().join("other.safetensors");
    let mut w = std::fs::read(&weights).unwrap();
    *w.last_mut().unwrap() ^= 1;
    std::fs::write(&other, w).unwrap();
    assert!(matches!(check_weights(&set, &m, &[other]), Err(Error::Checksum { .. })));

    // An existing directory is never written into.
    let e = write_set(&ck, &latents, &set, &DecodeMode::Whole, None, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::OutputNotWritable { .. }), "{e}");
}

#[test]
fn golden_set_failed_decode_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ck, _, mut latents)) = setup("diffusers_decoder_whole_t3", dir.path()) else { return };
    // A second latent with the wrong channel count fails after the first case was written.
    let bad = dir.path().join("latents/zz.npy");
    let z = Tensor::<f32>::zeros(movq::Shape::new(1, 5, 1, 2, 2)).unwrap();
    write_npy(&bad, &z.shape().dims(), z.data()).unwrap();
    latents.push(bad);
    let set = dir.path().join("set");
    assert!(write_set(&ck, &latents, &set, &DecodeMode::Whole, None, &mut |_| {}).is_err());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("latents")], "a partial set was left behind");
}
