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
    assert!(text.contains("4 passed, 0 failed, 0 skipped"), "{text}");
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
