//! Non-finite output (issue 14): a decode whose output holds NaN or infinity fails with exit
//! code 2, the count, the first (b, c, t, h, w) and a likely cause, and writes nothing, unless
//! `--allow-nonfinite-output`; the library reports it as `Error::NonFinite`.

mod common;

use common::movq;
use movq::io::{WeightFile, read_npy, write_npy, write_tensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const CONFIG: &str = r#"{"class": "MOVQDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0,
    "attn_resolutions": [], "resolution": 32, "z_channels": 4, "temporal_compress_times": 2}"#;

fn model(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("c.json"), CONFIG).unwrap();
    let (w, z) = (dir.join("w.safetensors"), dir.join("z.npy"));
    let st = movq()
        .args(["random-weights", "--seed", "3", "--config"])
        .arg(dir.join("c.json"))
        .arg("--output")
        .arg(&w)
        .args(["--latent-shape", "1,4,3,3,3", "--latent-out"])
        .arg(&z)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    (w, z)
}

fn decode(w: &Path, z: &Path, out: &Path, extra: &[&str]) -> Output {
    movq()
        .args(["decode", "--quiet", "--weights"])
        .arg(w)
        .arg("--latent")
        .arg(z)
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn refused(st: &Output, out: &Path, needles: &[&str]) {
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
    assert!(!out.exists(), "no output on failure");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

#[test]
fn one_nan_weight_fails_naming_the_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path());
    let src = WeightFile::open(&w).unwrap();
    let target = "conv_out.conv.bias";
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = src
        .names()
        .map(|n| {
            let (dims, mut data) = src.read::<f32>(n).unwrap();
            if n == target {
                data[1] = f32::NAN;
            }
            (n.to_string(), dims, data)
        })
        .collect();
    let meta: BTreeMap<String, String> = src.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bad = tmp.path().join("bad.safetensors");
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    write_tensors(&bad, &refs, &meta).unwrap();
    let out = tmp.path().join("y.npy");
    // conv_out's bias of channel 1 reaches every pixel of channel 1: 5 x 6 x 6 values, the
    // first at (0, 1, 0, 0, 0).
    let st = decode(&bad, &z, &out, &[]);
    refused(
        &st,
        &out,
        &[
            "180 non-finite",
            "[0, 1, 0, 0, 0]",
            "weight `conv_out.conv.bias` holds 1 NaN",
            "--allow-nonfinite-output",
        ],
    );
    let st = decode(&bad, &z, &out, &["--allow-nonfinite-output"]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let (_, y) = read_npy::<f32>(&out).unwrap();
    assert_eq!(y.iter().filter(|v| v.is_nan()).count(), 180);
}

#[test]
fn huge_latent_value_fails_with_its_magnitude() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path());
    let (dims, mut data) = read_npy::<f32>(&z).unwrap();
    // One value of 3e38 stays finite through this small decoder (GroupNorm rescales it); a
    // latent frame of them overflows f32 in conv_in.
    data[..27].fill(3e38);
    let big = tmp.path().join("big.npy");
    write_npy(&big, &dims, &data).unwrap();
    let out = tmp.path().join("y.npy");
    let st = decode(&w, &big, &out, &[]);
    refused(
        &st,
        &out,
        &["non-finite value(s)", "largest magnitude is 3.000e38", "every decoder weight is finite"],
    );
}

#[test]
fn tiny_scaling_factor_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path());
    let out = tmp.path().join("y.npy");
    let st = decode(&w, &z, &out, &["--latent-scaled", "--scaling-factor", "1e-40"]);
    refused(&st, &out, &["non-finite value(s)"]);
}

#[test]
fn library_reports_nonfinite_output_unless_allowed() {
    use movq::checkpoint::{Checkpoint, OpenOptions};
    use movq::model::DecodeMode;
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path());
    let ck = Checkpoint::open(&w, &OpenOptions::default()).unwrap();
    let mut dec = ck.load::<f64>().unwrap();
    let z = movq::io::read_latent::<f64>(&z, None).unwrap();
    let mut big = z.clone();
    big.data_mut()[..27].fill(1e308);
    match dec.decode(&big, &DecodeMode::Whole) {
        Err(movq::Error::NonFinite { count, first, .. }) => {
            assert!(count > 0);
            assert_eq!(first[0], 0);
        }
        other => panic!("expected NonFinite, got {:?}", other.map(|t| t.shape())),
    }
    dec.allow_nonfinite(true);
    let y = dec.decode(&big, &DecodeMode::Whole).unwrap();
    assert!(y.data().iter().any(|v| !v.is_finite()));
    assert!(dec.decode(&z, &DecodeMode::Whole).unwrap().data().iter().all(|v| v.is_finite()));
}
