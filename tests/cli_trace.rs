//! `movq trace`, `movq compare` on traces and `movq golden` from the command line: exit codes,
//! the first divergence named, refused inputs.

mod common;

use movq::io::{WeightFile, write_npy};
use std::path::Path;
use std::process::Output;

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = common::movq();
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The golden case's latent as `dir/z.npy`.
fn latent(golden: &Path, dir: &Path) -> std::path::PathBuf {
    let (dims, z) = WeightFile::open(golden).unwrap().read::<f32>("input.z").unwrap();
    let p = dir.join("z.npy");
    write_npy(&p, &dims, &z).unwrap();
    p
}

#[test]
fn cli_trace_compare_names_the_first_divergence() {
    let Some(golden) = common::golden("movq_first_tct4_attn16") else { return };
    let dir = tempfile::tempdir().unwrap();
    let z = latent(&golden, dir.path());
    // The weights alone (a golden file also holds its input and outputs), and a copy with one
    // bias of conv1 in up.2 block 0 moved by 1e-4.
    let f = WeightFile::open(&golden).unwrap();
    let md: std::collections::BTreeMap<String, String> =
        f.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let (good, bad) = (dir.path().join("good.safetensors"), dir.path().join("bad.safetensors"));
    for (path, delta) in [(&good, 0.0), (&bad, 1e-4)] {
        let mut tensors = Vec::new();
        for n in f.names().filter(|n| !n.starts_with("input.") && !n.starts_with("output")) {
            let (d, mut v) = f.read::<f32>(n).unwrap();
            if n == "up.2.block.0.conv1.conv.bias" {
                v[3] += delta;
            }
            tensors.push((n.to_string(), d, v));
        }
        let entries: Vec<(&str, &[usize], &[f32])> =
            tensors.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v.as_slice())).collect();
        movq::io::write_tensors(path, &entries, &md).unwrap();
    }
    let (ta, tb) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    for (w, t) in [(&bad, &ta), (&good, &tb)] {
        let o = run(&[&"trace", &"--weights", w, &"--latent", &z, &"--crop-rows", &"0:4", &"--output", t]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = run(&[&"compare", &ta, &tb]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let last = out.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(last.contains(": up.2.block.0.conv1 ("), "{out}");
    // One line per module in execution order; those before the perturbed module are exact.
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("up.") || l.starts_with("mid.")).collect();
    assert!(lines[0].starts_with("mid.block_1.norm1"), "{out}");
    let at = lines.iter().position(|l| l.starts_with("up.2.block.0.conv1 ")).unwrap();
    assert!(lines[..at].iter().all(|l| l.contains(" 0.0000e0 ")), "{out}");
    // The same trace against itself passes.
    let o = run(&[&"compare", &tb, &tb, &"--max-rel", &"0"]);
    assert!(o.status.success() && text(&o).contains("PASS"), "{}", text(&o));
    // Traces of different crops hold different regions under the same names: refused.
    let tc = dir.path().join("c.safetensors");
    let o = run(&[&"trace", &"--weights", &good, &"--latent", &z, &"--crop-rows", &"1:5", &"--output", &tc]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[&"compare", &tc, &tb]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("crops differ"), "{}", text(&o));
    // An uncropped trace (a port's full outputs) is cut to the other's crop: same verdict.
    let tf = dir.path().join("full.safetensors");
    let o = run(&[&"trace", &"--weights", &bad, &"--latent", &z, &"--output", &tf]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[&"compare", &tf, &tb]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("A (uncropped) cut to B's crop: rows 0:4"), "{out}");
    assert!(out.lines().find(|l| l.starts_with("FAIL")).unwrap().contains(": up.2.block.0.conv1 ("), "{out}");
    // A trace against a plain tensor file is refused.
    let o = run(&[&"compare", &ta, &golden]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("is a trace but"), "{}", text(&o));
}

#[test]
fn cli_trace_refuses_bad_requests() {
    let Some(golden) = common::golden("diffusers_decoder_whole_t3") else { return };
    let dir = tempfile::tempdir().unwrap();
    let z = latent(&golden, dir.path());
    let out = dir.path().join("t.safetensors");
    let base = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"trace", &"--weights", &golden, &"--latent", &z, &"--mode", &"whole"];
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = base(&[&"--modules", &"up.*", &"--output", &out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("`up.*` matches no module") && text(&o).contains("decoder.conv_in"),
        "{}",
        text(&o)
    );
    let o = base(&[&"--crop-rows", &"5:5", &"--output", &out]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = base(&[&"--output", &z]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("refusing to overwrite an input"), "{}", text(&o));
    assert!(!out.exists());
    let o = base(&[&"--modules", &"decoder.norm_out", &"--output", &out]);
    assert!(o.status.success(), "{}", text(&o));
    let t = movq::trace::TraceFile::open(&out).unwrap();
    assert_eq!(t.order, ["decoder.norm_out"]);
    assert_eq!(t.meta["precision"], "f64");
    assert_eq!(t.meta["mode"], "whole");
    assert_eq!(t.meta["naming"], "diffusers");
}

#[test]
fn cli_golden_writes_checks_and_detects_tampering() {
    let Some(golden) = common::golden("diffusers_decoder_whole_t3") else { return };
    let dir = tempfile::tempdir().unwrap();
    let lat = dir.path().join("latents");
    std::fs::create_dir(&lat).unwrap();
    latent(&golden, &lat);
    let set = dir.path().join("set");
    let o =
        run(&[&"golden", &"--weights", &golden, &"--latents", &lat, &"--output", &set, &"--mode", &"whole"]);
    assert!(o.status.success(), "{}", text(&o));
    // PyTorch's float32 output as the port's: passes.
    let port = dir.path().join("port");
    std::fs::create_dir(&port).unwrap();
    let (dims, y) = WeightFile::open(&golden).unwrap().read::<f32>("output.f32").unwrap();
    write_npy(&port.join("z.npy"), &dims, &y).unwrap();
    let o = run(&[&"golden", &"--check", &set, &port, &"--weights", &golden]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    // An output off by 1e-3 somewhere: exit code 1.
    let mut bad = y.clone();
    bad[77] -= 1e-3;
    write_npy(&port.join("z.npy"), &dims, &bad).unwrap();
    let o = run(&[&"golden", &"--check", &set, &port]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAIL"));
    // Traces: a set made with --trace, and a port's f32 trace with one weight moved, beside its
    // (passing) output: the first divergent module is named.
    let tset = dir.path().join("tset");
    let sel: [&dyn AsRef<std::ffi::OsStr>; 6] =
        [&"--modules", &"decoder.up_blocks.3.*", &"--crop-rows", &"0:4", &"--mode", &"whole"];
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"golden", &"--weights", &golden, &"--latents", &lat, &"--output", &tset, &"--trace"];
    args.extend_from_slice(&sel);
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    write_npy(&port.join("z.npy"), &dims, &y).unwrap();
    let f = WeightFile::open(&golden).unwrap();
    let mut tensors = Vec::new();
    for n in f.names() {
        let (d, mut v) = f.read::<f32>(n).unwrap();
        if n == "decoder.up_blocks.3.resnets.1.conv1.conv.bias" {
            v[0] += 1e-3;
        }
        tensors.push((n.to_string(), d, v));
    }
    let entries: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, d, v)| (n.as_str(), d.as_slice(), v.as_slice())).collect();
    let md = f.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bad = dir.path().join("bad.safetensors");
    movq::io::write_tensors(&bad, &entries, &md).unwrap();
    let (pt, zl) = (port.join("z.trace.safetensors"), lat.join("z.npy"));
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"trace", &"--weights", &bad, &"--latent", &zl, &"--precision", &"f32", &"--output", &pt];
    args.extend_from_slice(&sel);
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[&"golden", &"--check", &tset, &port]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "z: trace: first module over --trace-max-rel 1e-5: decoder.up_blocks.3.resnets.1.conv1 ("
        ),
        "{}",
        text(&o)
    );
    // The port's trace at full size (no crop): cut to the set's crop, same first module.
    let o = run(&[
        &"trace",
        &"--weights",
        &bad,
        &"--latent",
        &zl,
        &"--precision",
        &"f32",
        &"--output",
        &pt,
        &"--modules",
        &"decoder.up_blocks.3.*",
        &"--mode",
        &"whole",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[&"golden", &"--check", &tset, &port]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "z: trace (the port's cut to the set's crop: rows 0:4): first module over --trace-max-rel 1e-5: \
             decoder.up_blocks.3.resnets.1.conv1 ("
        ),
        "{}",
        text(&o)
    );
    // A port trace that is not a trace at all: reported, the verdict still the outputs'.
    std::fs::write(&pt, b"garbage").unwrap();
    let o = run(&[&"golden", &"--check", &tset, &port]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("z: trace: not compared: ") && text(&o).contains("1 passed, 0 failed"),
        "{}",
        text(&o)
    );
    std::fs::remove_file(&pt).unwrap();

    // A reference output changed after the set was made: exit code 2, the file named.
    let reference = set.join("z.safetensors");
    let mut b = std::fs::read(&reference).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x10;
    std::fs::write(&reference, b).unwrap();
    let o = run(&[&"golden", &"--check", &set, &port]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("z.safetensors: SHA-256"), "{}", text(&o));
}
