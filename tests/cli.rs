//! The `movq` binary: decode, verify, random-weights, and exit codes on bad input.

mod common;

use movq::io::WeightFile;
use safetensors::tensor::TensorView;
use std::path::Path;
use std::process::Command;

fn movq() -> Command {
    common::movq()
}

/// Copies the weight tensors (not `input.*` / `output*`) of a golden file, with its config as
/// the `config` metadata, into `dst`; returns the golden file.
fn split_golden(name: &str, dst: &Path) -> Option<WeightFile> {
    let src = common::golden(name)?;
    let bytes = std::fs::read(&src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("input.") && !n.starts_with("output"))
        .collect();
    let file = WeightFile::open(&src).unwrap();
    let opts = movq::checkpoint::OpenOptions { ignore: &["input.", "output"], ..Default::default() };
    let cfg = movq::Checkpoint::open(&src, &opts).unwrap().config().clone();
    let meta = [("config".to_string(), serde_json::to_string(&cfg).unwrap())].into_iter().collect();
    safetensors::serialize_to_file(views, Some(meta), dst).unwrap();
    Some(file)
}

fn read_sample(path: &Path) -> (Vec<usize>, Vec<f64>) {
    WeightFile::open(path).unwrap().read::<f64>("sample").unwrap()
}

#[test]
fn cli_decode_golden_decoder_matches_reference_in_f32_and_f64() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let Some(golden) = split_golden("movq_first_tct4_attn16", &weights) else { return };
    let (_, reference) = golden.read::<f64>("output.f64").unwrap();
    for (prec, bound) in [("f32", 4.0 * 9.630089667485017e-7), ("f64", 1e-12)] {
        let out = dir.path().join(format!("out_{prec}.safetensors"));
        let st = movq()
            .args(["decode", "--weights"])
            .arg(&weights)
            .arg("--latent")
            .arg(golden.path())
            .args(["--latent-key", "input.z", "--precision", prec, "--threads", "2", "--output"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let (shape, y) = read_sample(&out);
        assert_eq!(shape, vec![1, 3, 9, 64, 64]);
        let rel = movq::metrics::distance(&y, &reference).rel_l2;
        assert!(rel <= bound, "{prec}: rel_l2 {rel:e} > {bound:e}");
    }
}

#[test]
fn cli_decode_reads_npy_latent_and_explicit_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0, "attn_resolutions": [8],
            "resolution": 16, "z_channels": 4}"#,
    )
    .unwrap();
    let w = dir.path().join("w.safetensors");
    let z = dir.path().join("z.npy");
    let st = movq()
        .args(["random-weights", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&w)
        .args(["--latent-shape", "1,4,3,4,5", "--latent-out"])
        .arg(&z)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let out = dir.path().join("o.safetensors");
    let st = movq()
        .args(["decode", "--weights"])
        .arg(&w)
        .arg("--config")
        .arg(&cfg)
        .arg("--latent")
        .arg(&z)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (shape, y) = read_sample(&out);
    assert_eq!(shape, vec![1, 3, 5, 8, 10]);
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn cli_bad_input_exits_2_with_named_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let Some(golden) = split_golden("movq_first_tct4_attn16", &weights) else { return };
    // A latent with the wrong channel count (input.x of another case would do; use output.f32).
    let out = dir.path().join("o.safetensors");
    let st = movq()
        .args(["decode", "--weights"])
        .arg(&weights)
        .arg("--latent")
        .arg(golden.path())
        .args(["--latent-key", "output.f32", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("has 3 channels, the decoder takes 8") && err.contains("(1, 3, 9, 64, 64)"),
        "{err}"
    );
    assert!(!out.exists());
    // A missing weights file.
    let st = movq()
        .args(["decode", "--weights", "/nonexistent.safetensors", "--latent", "z.npy", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("/nonexistent.safetensors"));
    // Usage error.
    assert_eq!(movq().arg("decode").output().unwrap().status.code(), Some(2));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("tmp"))
    );
}

#[test]
fn cli_verify_reports_pass_for_movq_and_chunked_diffusers_cases() {
    let Some(dir) = common::golden_dir() else { return };
    let st = movq()
        .arg("verify")
        .arg(dir.join("causalconv3d_first.safetensors"))
        .arg(dir.join("diffusers_vae_decode_t4.safetensors"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{text}");
    assert!(text.contains("PASS") && !text.contains("SKIPPED"), "{text}");
    assert!(text.contains("4 passed, 0 failed, 0 skipped, 0 not golden cases"), "{text}");
}

#[test]
fn cli_verify_fails_on_a_wrong_reference() {
    // A golden file whose reference output was altered must FAIL with exit code 1.
    let Some(src) = common::golden("causalconv3d_first") else { return };
    let bytes = std::fs::read(&src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out64: Vec<u8> = st.tensor("output.f64").unwrap().data().to_vec();
    let v = f64::from_le_bytes(out64[..8].try_into().unwrap()) + 1e-3;
    out64[..8].copy_from_slice(&v.to_le_bytes());
    let info = st.tensor("output.f64").unwrap();
    let mut views: Vec<(String, TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != "output.f64").collect();
    views.push(("output.f64".into(), TensorView::new(info.dtype(), info.shape().to_vec(), &out64).unwrap()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    safetensors::serialize_to_file(views, meta.metadata().clone(), &bad).unwrap();
    let st = movq().arg("verify").arg(&bad).output().unwrap();
    assert_eq!(st.status.code(), Some(1), "{}", String::from_utf8_lossy(&st.stdout));
    assert!(String::from_utf8_lossy(&st.stdout).contains("FAIL"));
}

/// A golden file movq cannot judge (unknown class, unknown format, tolerance figures that would
/// pass anything) is not a pass: verify names it and exits with 2.
#[test]
fn cli_verify_refuses_cases_it_cannot_judge() {
    let Some(src) = common::golden("causalconv3d_first") else { return };
    let bytes = std::fs::read(&src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expect) in [
        ("class", serde_json::json!("Foo"), "SKIPPED: class Foo is not supported"),
        ("format", serde_json::json!("movq-golden-v9"), "metadata format \"movq-golden-v9\"; movq reads"),
        ("f32_rel_l2_err", serde_json::json!(-1.0), "f32_rel_l2_err = -1 is not a finite number >= 0"),
    ] {
        let mut m: serde_json::Value = serde_json::from_str(&meta["meta"]).unwrap();
        m[key] = value;
        let mut new_meta = meta.clone();
        new_meta.insert("meta".into(), m.to_string());
        let bad = dir.path().join(format!("{key}.safetensors"));
        safetensors::serialize_to_file(st.tensors(), Some(new_meta), &bad).unwrap();
        let o = movq().arg("verify").arg(&bad).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(2), "{key}: {text}");
        assert!(text.contains(expect), "{key}: {text}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("1 of 1 files could not be verified"), "{key}");
    }
}

/// A component case's config is read strictly: a key movq does not know (it would be an option
/// left unapplied), a value of the wrong type, or a norm movq implements only one way with
/// another value, makes the file one verify cannot judge (exit 2), naming file and key.
#[test]
fn cli_verify_refuses_component_configs_it_does_not_understand() {
    let dir = tempfile::tempdir().unwrap();
    for (case, key, value, expect) in [
        (
            "causalconv3d_first",
            "strides",
            serde_json::json!(2),
            "unknown key `strides` (did you mean `stride`?)",
        ),
        ("causalconv3d_first", "kernel_size", serde_json::json!("3"), "key `kernel_size`: expected"),
        ("causalconv3d_first", "dilation", serde_json::json!([1, 2]), "key `dilation`: expected"),
        ("spatialnorm3d_tf1_tz1", "eps", serde_json::json!(1e-5), "eps 0.00001 (movq's norms use"),
        ("spatialnorm3d_tf1_tz1", "norm_layer", serde_json::json!("BatchNorm"), "norm_layer `BatchNorm`"),
        ("attnblock2d", "norm", serde_json::json!("GroupNorm(8)"), "norm `GroupNorm(8)`"),
    ] {
        let Some(src) = common::golden(case) else { return };
        let bytes = std::fs::read(&src).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = meta.metadata().clone().unwrap();
        let mut m: serde_json::Value = serde_json::from_str(&meta["meta"]).unwrap();
        m["config"][key] = value;
        meta.insert("meta".into(), m.to_string());
        let bad = dir.path().join(format!("{case}_{key}.safetensors"));
        safetensors::serialize_to_file(st.tensors(), Some(meta), &bad).unwrap();
        let o = movq().arg("verify").arg(&bad).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(2), "{case} {key}: {text}");
        assert!(
            text.contains(expect) && text.contains(&format!("{case}_{key}.safetensors")),
            "{key}: {text}"
        );
    }
}

/// A golden file is its own checkpoint (README, decode: config from its `meta`): its `input.*`
/// and `output*` tensors are not taken for unexpected weights, and the decode matches its
/// float64 reference.
#[test]
fn cli_decodes_a_golden_file_as_its_own_checkpoint() {
    let Some(g) = common::golden("movq_single_frame_t1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.safetensors");
    let st = movq()
        .args(["--threads", "1", "decode", "--quiet", "--weights"])
        .arg(&g)
        .arg("--latent")
        .arg(&g)
        .args(["--latent-key", "input.z", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (_, y) = WeightFile::open(&out).unwrap().read::<f64>("sample").unwrap();
    let (_, r) = WeightFile::open(&g).unwrap().read::<f64>("output.f64").unwrap();
    assert!(movq::metrics::distance(&y, &r).rel_l2 < 1e-5);
}
