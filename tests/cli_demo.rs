//! `movq demo`: the bundled decoder and latent decode to the clip the training script saw, with
//! the PSNR PyTorch measured for the same float16 weights (assets/demo/reference.json).

mod common;

use std::path::Path;

#[test]
fn demo_writes_the_clip_and_matches_pytorch_psnr() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let st = common::movq().args(["demo", "--out"]).arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let stdout = String::from_utf8_lossy(&st.stdout);
    let psnr: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PSNR against the bundled ground truth: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no PSNR line in {stdout}"));
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(assets.join("reference.json")).unwrap()).unwrap();
    let torch_psnr = reference["psnr_8bit_pytorch"].as_f64().unwrap();
    // Same float16 weights; float32 rounding differences may move a few pixels by one level.
    assert!((psnr - torch_psnr).abs() < 0.05, "movq {psnr} dB, PyTorch {torch_psnr} dB");

    let (gd, gt) = movq::io::read_npy::<f32>(&assets.join("frames.npy")).unwrap();
    let (t, h, w) = (gd[0], gd[1], gd[2]);
    let (pw, ph, n, decoded) = common::png_frames(&out.join("demo.apng"));
    assert_eq!((pw as usize, ph as usize, n), (w, h, Some(t as u32)));
    let (_, _, _, truth) = common::png_frames(&out.join("ground_truth.apng"));
    let gt8: Vec<u8> = gt.iter().map(|&v| v as u8).collect();
    assert_eq!(truth.concat(), gt8, "ground_truth.apng holds the bundled frames");
    // The printed PSNR is the one of the written frames.
    let mse = decoded.concat().iter().zip(&gt8).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>()
        / gt8.len() as f64;
    let written_psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
    assert!((written_psnr - psnr).abs() < 0.01, "{written_psnr} vs {psnr}");
    for (i, frame) in decoded.iter().enumerate() {
        let (_, _, _, f) = common::png_frames(&out.join(format!("frames/frame_{i:05}.png")));
        assert_eq!(&f[0], frame, "frame {i}");
    }
}

/// A run leaves all its outputs or none: an output it cannot write (here ground_truth.apng,
/// a directory of the user's) fails the run before demo.apng or frames/ appear, and a frame
/// rate of 0 fails before the output directory is made.
#[test]
fn demo_writes_all_outputs_or_none() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let st = common::movq().args(["demo", "--fps", "0", "--out"]).arg(&out).output().unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(!out.exists(), "no directory for a run that cannot write");

    std::fs::create_dir_all(out.join("ground_truth.apng")).unwrap();
    std::fs::write(out.join("ground_truth.apng/mine.txt"), "user data").unwrap();
    let st = common::movq().args(["demo", "--out"]).arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(err.contains("ground_truth.apng"), "{err}");
    let mut left: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, ["ground_truth.apng"], "nothing else written, no temporaries left");
    assert_eq!(std::fs::read_to_string(out.join("ground_truth.apng/mine.txt")).unwrap(), "user data");
}
