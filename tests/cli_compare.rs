//! `movq compare`: figures against values computed here, bounds and exit codes.

mod common;

use movq::io::{write_npy, write_tensors};
use std::collections::BTreeMap;
use std::process::Command;

fn movq() -> Command {
    common::movq()
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {out}"))[name.len()..]
        .trim()
}

#[test]
fn cli_compare_reports_errors_psnr_and_worst_index() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [1usize, 2, 3, 2, 2];
    let b: Vec<f64> = (0..24).map(|i| (i as f64 * 0.37).sin()).collect();
    let mut a = b.clone();
    a[17] += 0.25; // (0, 1, 1, 0, 1)
    a[3] -= 0.1;
    let (pa, pb) = (dir.path().join("a.npy"), dir.path().join("b.safetensors"));
    write_npy(&pa, &dims, &a).unwrap();
    write_tensors(&pb, &[("sample", &dims[..], &b[..])], &BTreeMap::new()).unwrap();

    let d2: f64 = a.iter().zip(&b).map(|(x, r)| (x - r) * (x - r)).sum();
    let r2: f64 = b.iter().map(|r| r * r).sum();
    let rel = (d2 / r2).sqrt();
    let (lo, hi) = b.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let psnr = 10.0 * ((hi - lo).powi(2) / (d2 / 24.0)).log10();

    let st = movq().arg("compare").arg(&pa).arg(&pb).arg("--per-frame").output().unwrap();
    let out = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(st.status.success(), "{out}{}", String::from_utf8_lossy(&st.stderr));
    assert_eq!(field(&out, "shape"), "[1, 2, 3, 2, 2]");
    let max_abs = field(&out, "max_abs");
    assert!(max_abs.starts_with("2.5000") && max_abs.contains("at [0, 1, 1, 0, 1]"), "{max_abs}");
    let got_rel: f64 = field(&out, "rel_l2").parse().unwrap();
    assert!((got_rel - rel).abs() <= 1e-6 * rel, "{got_rel} vs {rel}");
    let got_psnr: f64 = field(&out, "psnr").split_whitespace().next().unwrap().parse().unwrap();
    assert!((got_psnr - psnr).abs() < 1e-3, "{got_psnr} vs {psnr}");
    // Per-frame: frame 2 has no error, frame 1 holds the 0.25.
    let frames: Vec<&str> =
        out.lines().skip_while(|l| !l.trim_start().starts_with("frame")).skip(1).collect();
    assert_eq!(frames.len(), 3);
    assert!(frames[1].split_whitespace().nth(1).unwrap().starts_with("2.5000"));
    assert_eq!(frames[2].split_whitespace().nth(1).unwrap(), "0.000000e0");

    // Bounds: exit code 1 when exceeded, 0 when met.
    let st = movq().arg("compare").arg(&pa).arg(&pb).args(["--max-rel", "1e-3"]).output().unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stdout).contains("FAIL: rel_l2"));
    let st = movq()
        .arg("compare")
        .arg(&pa)
        .arg(&pb)
        .args(["--max-abs", "0.3", "--max-rel", "1"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(0));
    // Shape mismatch is an input error (2).
    let pc = dir.path().join("c.npy");
    write_npy(&pc, &[24], &b).unwrap();
    let st = movq().arg("compare").arg(&pa).arg(&pc).output().unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("shapes differ"));
}
