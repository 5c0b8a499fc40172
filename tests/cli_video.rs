//! `movq decode` video outputs (PNG frames, APNG, Y4M) read back and checked against the
//! decoded tensor, per-sample outputs, and interrupted or failing runs leaving no output.

mod common;

use movq::io::{WeightFile, read_npy};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn movq() -> Command {
    common::movq()
}

const CONFIG: &str = r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 0,
    "attn_resolutions": [], "resolution": 32, "z_channels": 4, "temporal_compress_times": 2}"#;

/// Random weights and a latent of `shape` in `dir`.
fn model(dir: &Path, shape: &str) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("c.json"), CONFIG).unwrap();
    let (w, z) = (dir.join("w.safetensors"), dir.join("z.npy"));
    let st = movq()
        .args(["random-weights", "--seed", "5", "--config"])
        .arg(dir.join("c.json"))
        .arg("--output")
        .arg(&w)
        .args(["--latent-shape", shape, "--latent-out"])
        .arg(&z)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    (w, z)
}

fn decode(w: &Path, z: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
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

/// The pipelines' mapping, computed here independently: numpy float32 `(x / 2 + 0.5)`,
/// clip, `* 255`, round half to even.
fn to8(x: f32) -> u8 {
    let v = (x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0;
    let r = v.round();
    (if (v - v.trunc()) == 0.5 && r % 2.0 != 0.0 { r - 1.0 } else { r }) as u8
}

/// The f32 output (n, 3, t, h, w) as 8-bit RGB frames [n][t] of (h, w, 3).
fn expected_rgb(y: &[f32], d: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let (n, t, h, w) = (d[0], d[2], d[3], d[4]);
    (0..n)
        .map(|b| {
            (0..t)
                .map(|f| {
                    (0..h * w)
                        .flat_map(|p| (0..3).map(move |c| (b, c, p)))
                        .map(|(b, c, p)| to8(y[((b * 3 + c) * t + f) * h * w + p]))
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_output_format_reads_back_as_the_decoded_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (w, z) = model(d, "2,4,3,5,6");
    for out in ["y.npy", "y.safetensors"] {
        let st = decode(&w, &z, &d.join(out), &[]);
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    }
    let (dims, y) = read_npy::<f32>(&d.join("y.npy")).unwrap();
    assert_eq!(dims, [2, 3, 5, 10, 12]);
    // The tensor outputs hold the library's decode of z, bit for bit.
    let opts = movq::checkpoint::OpenOptions { config: Some(&d.join("c.json")), ..Default::default() };
    let dec = movq::Checkpoint::open(&w, &opts).unwrap().load::<f32>().unwrap();
    let zt: movq::Tensor<f32> = movq::io::read_latent(&z, None).unwrap();
    assert_eq!(dec.decode(&zt, &movq::model::DecodeMode::Whole).unwrap().data(), &y[..]);
    let (sd, sy) = WeightFile::open(d.join("y.safetensors")).unwrap().read::<f32>("sample").unwrap();
    assert_eq!((sd, sy), (dims.clone(), y.clone()));
    let rgb = expected_rgb(&y, &dims);

    // APNG, one per sample, every frame lossless.
    let st = decode(&w, &z, &d.join("y.apng"), &[]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(!d.join("y.apng").exists(), "batch 2 writes y_b0.apng, y_b1.apng");
    for (b, rgb_b) in rgb.iter().enumerate() {
        let (pw, ph, n, frames) = common::png_frames(&d.join(format!("y_b{b}.apng")));
        assert_eq!((pw, ph, n), (12, 10, Some(5)));
        assert_eq!(&frames, rgb_b);
    }
    // `.png` needs --apng.
    let st = decode(&w, &z, &d.join("a.png"), &[]);
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("--apng"));
    let st = decode(&w, &z, &d.join("a.png"), &["--apng"]);
    assert!(st.status.success());
    assert_eq!(common::png_frames(&d.join("a_b1.png")).3, rgb[1]);

    // A directory of PNG frames per sample.
    let st = decode(&w, &z, &d.join("frames/"), &[]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    for (b, rgb_b) in rgb.iter().enumerate() {
        let dir = d.join(format!("frames_b{b}"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(names, (0..5).map(|i| format!("frame_{i:05}.png")).collect::<Vec<_>>());
        for (i, name) in names.iter().enumerate() {
            let (pw, ph, n, frames) = common::png_frames(&dir.join(name));
            assert_eq!((pw, ph, n), (12, 10, None));
            assert_eq!(frames[0], rgb_b[i]);
        }
    }
    // Decoding again over the frame directories replaces them.
    assert!(decode(&w, &z, &d.join("frames"), &[]).status.success());

    // Y4M, 4:4:4 and 4:2:0, with the frame rate flag.
    for (chroma, fps) in [("444", "8"), ("420", "24")] {
        let out = d.join(format!("v{chroma}.y4m"));
        let st = decode(&w, &z, &out, &["--chroma", chroma, "--fps", fps]);
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        for (b, rgb_b) in rgb.iter().enumerate() {
            let bytes = std::fs::read(d.join(format!("v{chroma}_b{b}.y4m"))).unwrap();
            let nl = bytes.iter().position(|&c| c == b'\n').unwrap();
            let header = std::str::from_utf8(&bytes[..nl]).unwrap();
            let tag = if chroma == "444" { "C444" } else { "C420jpeg" };
            assert_eq!(header, format!("YUV4MPEG2 W12 H10 F{fps}:1 Ip A1:1 {tag} XCOLORRANGE=LIMITED"));
            let (luma, cplane) = (120, if chroma == "444" { 120 } else { 30 });
            let frame_len = 6 + luma + 2 * cplane;
            assert_eq!(bytes.len() - nl - 1, 5 * frame_len, "5 frames");
            for (f, fr) in bytes[nl + 1..].chunks(frame_len).enumerate() {
                assert_eq!(&fr[..6], b"FRAME\n");
                // BT.601 limited-range luma of each pixel.
                for p in 0..luma {
                    let px = &rgb_b[f][3 * p..3 * p + 3];
                    let yv = 16.0
                        + (65.481 * px[0] as f64 + 128.553 * px[1] as f64 + 24.966 * px[2] as f64) / 255.0;
                    assert_eq!(fr[6 + p], yv.round() as u8, "sample {b} frame {f} pixel {p}");
                }
            }
        }
    }
}

#[test]
fn unknown_output_extension_is_refused_before_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path(), "1,4,2,3,3");
    let st = decode(&w, &z, &tmp.path().join("y.mp4"), &[]);
    assert_eq!(st.status.code(), Some(2));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains(".mp4") && err.contains(".y4m"), "{err}");
}

/// Entries of `dir` other than the inputs.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["c.json", "w.safetensors", "z.npy"].contains(&n.as_str()))
        .collect();
    v.sort();
    v
}

#[test]
fn write_failure_mid_decode_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path(), "1,4,6,16,16");
    // A 16 KiB file-size limit (SIGXFSZ ignored, so writes fail with EFBIG): the Y4M header and
    // the first frames fit, later ones do not (6 latent frames -> 9 frames of 3 KiB each).
    let out = tmp.path().join("y.y4m");
    let script = format!(
        "trap '' XFSZ; ulimit -f 16; exec {} decode --quiet --mode chunked --chroma 444 --weights '{}' --latent '{}' --output '{}'",
        common::movq_shell_prefix(),
        w.display(),
        z.display(),
        out.display()
    );
    let st = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(st.status.code(), Some(2), "{}", String::from_utf8_lossy(&st.stderr));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("y.y4m"), "{err}");
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    // The same decode without the limit succeeds, so the failure came mid-run.
    let st = decode(&w, &z, &out, &["--mode", "chunked", "--chroma", "444"]);
    assert!(st.status.success());
    let header = "YUV4MPEG2 W32 H32 F8:1 Ip A1:1 C444 XCOLORRANGE=LIMITED\n".len();
    assert_eq!(std::fs::metadata(&out).unwrap().len() as usize, header + 9 * (6 + 3 * 1024));
}

/// Starts a decode long enough to interrupt, waits until its temporary output exists.
fn start_long_decode(dir: &Path, out: &Path) -> std::process::Child {
    let (w, z) = model(dir, "1,4,24,48,48");
    let child = movq()
        .args(["--threads", "1", "decode", "--quiet", "--mode", "chunked", "--weights"])
        .arg(&w)
        .arg("--latent")
        .arg(&z)
        .arg("--output")
        .arg(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !leftovers(dir).iter().any(|n| n.contains(".tmp-")) {
        assert!(t0.elapsed().as_secs() < 60, "no temporary output appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
fn sigterm_mid_decode_removes_the_partial_output() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("y.y4m");
    let mut child = start_long_decode(tmp.path(), &out);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "the decode finished before it could be interrupted");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let st = child.wait_with_output().unwrap();
    assert_eq!((st.status.code(), st.status.signal()), (Some(130), None));
    assert!(String::from_utf8_lossy(&st.stderr).contains("interrupted"));
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[test]
fn sigkill_mid_decode_leaves_nothing_under_the_output_name() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("y.npy");
    let mut child = start_long_decode(tmp.path(), &out);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "the decode finished before it could be killed");
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9));
    assert!(!out.exists());
    // Only the hidden temporary can remain; nothing looks like a finished output.
    for name in leftovers(tmp.path()) {
        assert!(name.starts_with(".y.npy.tmp-"), "{name}");
    }
}

#[test]
fn progress_is_plain_lines_off_a_terminal_and_silent_with_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path(), "1,4,6,6,6");
    let run = |quiet: bool| {
        let mut c = movq();
        c.args(["decode", "--mode", "chunked", "--weights"]).arg(&w).arg("--latent").arg(&z).arg("--output");
        c.arg(tmp.path().join("y.npy"));
        if quiet {
            c.arg("--quiet");
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let loud = run(false);
    // stderr is a pipe here: one line per decoder call (3 frame batches), no bar escapes.
    let calls: Vec<&str> = loud.lines().filter(|l| l.contains("% ] call") || l.contains("%] call")).collect();
    assert_eq!(calls.len(), 3, "{loud}");
    assert!(calls[2].contains("[100.0%] call 3/3 out done"), "{loud}");
    assert!(!loud.contains('\x1b'), "no terminal escapes off a terminal");
    let quiet = run(true);
    assert!(!quiet.contains("call 1/3") && !quiet.contains("writing frames"), "{quiet}");
}

#[test]
fn nonfinite_latent_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path(), "1,4,2,3,3");
    let (dims, mut data) = read_npy::<f32>(&z).unwrap();
    // (b, c, t, h, w) = (0, 2, 1, 0, 2) and one more.
    data[((2 * 2 + 1) * 3) * 3 + 2] = f32::NAN;
    data[70] = f32::INFINITY;
    let bad = tmp.path().join("bad.npy");
    movq::io::write_npy(&bad, &dims, &data).unwrap();
    let out = tmp.path().join("y.npy");
    let st = decode(&w, &bad, &out, &[]);
    assert_eq!(st.status.code(), Some(2));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("bad.npy") && err.contains("2 NaN or infinite") && err.contains("(0, 2, 1, 0, 2)"),
        "{err}"
    );
    assert!(!out.exists());
    // Allowed in, the NaN reaches the output, which is refused in turn unless allowed too.
    let st = decode(&w, &bad, &out, &["--allow-nonfinite"]);
    assert_eq!(st.status.code(), Some(2), "{}", String::from_utf8_lossy(&st.stderr));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("the latent itself holds 2 non-finite") && err.contains("--allow-nonfinite-output"));
    assert!(!out.exists());
    // bench takes neither flag: the same error comes without advice it cannot follow.
    let st = movq()
        .args(["bench", "--repeat", "1", "--weights"])
        .arg(&w)
        .arg("--latent")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(err.contains("the latent itself holds 2 non-finite") && !err.contains("--allow"), "{err}");
    let st = decode(&w, &bad, &out, &["--allow-nonfinite", "--allow-nonfinite-output"]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(String::from_utf8_lossy(&st.stderr).contains("warning"));
    assert!(out.exists());
}

/// Options that only fill in what an inferred config cannot tell, given against a config that
/// says otherwise (here the weights' metadata), are refused, not ignored; the same value as the
/// config's is accepted.
#[test]
fn hints_contradicting_the_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path(), "1,4,2,3,3");
    let out = tmp.path().join("y.npy");
    for (flag, value, says) in [
        ("--pad-mode", "constant", "pad_mode constant (the config has first)"),
        ("--temporal-compress-times", "4", "temporal_compress_times 4 (the config has 2)"),
        (
            "--class",
            "ContextParallelDecoder3D",
            "class ContextParallelDecoder3D (the config has MOVQDecoder3D)",
        ),
    ] {
        let st = decode(&w, &z, &out, &[flag, value]);
        let err = String::from_utf8_lossy(&st.stderr);
        assert_eq!(st.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(says) && err.contains("w.safetensors"), "{flag}: {err}");
        assert!(!out.exists());
    }
    let st = decode(&w, &z, &out, &["--pad-mode", "first"]);
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

/// A safetensors latent with several tensors needs a latent key: the header's order is not
/// kept, so "the first" was the alphabetically first (a zero tensor `a` before the latent `b`).
#[test]
fn latent_file_with_several_tensors_needs_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, z) = model(tmp.path(), "1,4,2,3,3");
    let (dims, data) = read_npy::<f32>(&z).unwrap();
    let zeros = vec![0.0f32; data.len()];
    let two = tmp.path().join("two.safetensors");
    let entries: Vec<(&str, &[usize], &[f32])> = vec![("b", &dims, &data), ("a", &dims, &zeros)];
    movq::io::write_tensors(&two, &entries, &Default::default()).unwrap();
    let out = tmp.path().join("y.npy");
    let st = decode(&w, &two, &out, &[]);
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(2), "{err}");
    assert!(err.contains("holds several tensors (`a`, `b`)"), "{err}");
    assert!(decode(&w, &two, &out, &["--latent-key", "b"]).status.success());
}
