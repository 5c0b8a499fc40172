//! The bad-input catalogue, round 2 (issue 15): inputs changed or special, outputs that are
//! inputs, streams or other people's files, fatal signals, sizes checked before allocating.
//! Each test failed before its fix; every refusal is exit code 2 with a message naming the
//! file, and leaves no output and no temporary behind.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 1], "num_res_blocks": 0,
    "attn_resolutions": [], "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}"#;

/// A decoder whose chunked decode of (1, 4, 16, 24, 24) takes a few seconds on one thread.
const SLOW: &str = r#"{"ch": 64, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1,
    "attn_resolutions": [], "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}"#;

fn decode_cmd(w: &Path, z: &Path, out: &Path) -> Command {
    let mut c = common::movq();
    c.args(["decode", "--quiet", "--weights"]).arg(w).arg("--latent").arg(z).arg("--output").arg(out);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code 2 and every `expect` in stderr; returns stderr.
fn refused(o: &Output, expect: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    for e in expect {
        assert!(err.contains(e), "`{e}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Names of the hidden temporaries left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Starts a slow decode and returns once it has started decoding (the weights are mapped and
/// the temporary output exists).
fn start_slow_decode(w: &Path, z: &Path, out: &Path) -> (Child, BufReader<std::process::ChildStderr>) {
    let mut child = decode_cmd(w, z, out)
        .args(["--threads", "1", "--mode", "chunked"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("decoding z") {}
    assert!(line.contains("decoding z"), "{line}");
    (child, err)
}

fn finish(mut child: Child, mut err: BufReader<std::process::ChildStderr>) -> (Option<i32>, String) {
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    (child.wait().unwrap().code(), rest)
}

#[test]
fn weights_truncated_during_a_decode_are_a_named_error_not_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "slow", SLOW, "1,4,16,24,24");
    let out = dir.path().join("out.y4m");
    let (child, err) = start_slow_decode(&w, &z, &out);
    std::fs::OpenOptions::new().write(true).open(&w).unwrap().set_len(4000).unwrap();
    let (code, err) = finish(child, err);
    // Either the mapped read faults (SIGBUS) or the decode finished first and the length check
    // after it notices; both are exit 2 naming the weights.
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&*w.to_string_lossy()), "{err}");
    assert!(err.contains("changed"), "{err}");
    assert!(!out.exists());
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[test]
fn fatal_signals_remove_the_temporary_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "slow", SLOW, "1,4,16,24,24");
    let out = dir.path().join("out.y4m");
    for (sig, name) in [(libc::SIGUSR1, "SIGUSR1"), (libc::SIGQUIT, "SIGQUIT"), (libc::SIGALRM, "SIGALRM")] {
        let (child, err) = start_slow_decode(&w, &z, &out);
        // SAFETY: kill(2) on the child we spawned and have not waited for yet.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let (code, err) = finish(child, err);
        assert_eq!(code, Some(128 + sig), "{name}: {err}");
        assert!(err.contains(&format!("caught {name}; removed the unfinished output")), "{err}");
        assert!(!out.exists());
        assert!(leftovers(dir.path()).is_empty(), "{name}: {:?}", leftovers(dir.path()));
    }
    // SIGXFSZ (ulimit -f) is ignored, so the write fails and the ordinary error path runs.
    let script = format!(
        "ulimit -f 20; exec {} decode --quiet --weights '{}' --latent '{}' --output '{}'",
        common::movq_shell_prefix(),
        w.display(),
        z.display(),
        out.display()
    );
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    refused(&o, &["out.y4m", "File too large"]);
    assert!(!out.exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn random_weights_too_large_for_memory_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("big.json");
    std::fs::write(&cfg, TINY.replace("\"ch\": 32", "\"ch\": 16384")).unwrap();
    let out = dir.path().join("big.safetensors");
    let t0 = Instant::now();
    let o = common::movq()
        .args(["random-weights", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    refused(&o, &["random weights for ch 16384", "GiB of memory available"]);
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(!out.exists());
}

#[test]
fn random_weights_validate_the_latent_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.json");
    std::fs::write(&cfg, TINY).unwrap();
    let w = dir.path().join("w.safetensors");
    for (shape, out, expect) in [
        ("1,4,0,4,4", dir.path().join("z.npy"), "five non-zero sizes"),
        ("1,4,4,4", dir.path().join("z.npy"), "five non-zero sizes"),
        ("1,4,2,4,4", dir.path().join("no/dir/z.npy"), "is not a directory"),
        ("1,4,2,4,4", w.clone(), "is the weights output too"),
        ("1,4,2,4,4", cfg.clone(), "the output is the input"),
        ("1,4,2,4,4", dir.path().join("z.safetensors"), "z.safetensors: the output must be a .npy file"),
        ("1,5,2,4,4", dir.path().join("z.npy"), "has 5 channels, the decoder takes 4"),
    ] {
        let o = common::movq()
            .args(["random-weights", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(&w)
            .args(["--latent-shape", shape, "--latent-out"])
            .arg(&out)
            .output()
            .unwrap();
        refused(&o, &[expect]);
        assert!(!w.exists(), "{shape} {}", out.display());
    }
    let o = common::movq()
        .args(["random-weights", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&cfg)
        .output()
        .unwrap();
    refused(&o, &["tiny.json: the output is the input"]);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), TINY);
}

#[test]
fn thread_counts_of_zero_or_above_four_per_core_are_refused() {
    let o = common::movq().args(["--threads", "100000", "inspect", "nothing"]).output().unwrap();
    refused(&o, &["--threads 100000 is more than 4x"]);
    let o = common::movq().args(["inspect", "nothing"]).env("RAYON_NUM_THREADS", "100000").output().unwrap();
    refused(&o, &["RAYON_NUM_THREADS 100000 is more than 4x"]);
    let o = common::movq().args(["inspect", "nothing"]).env("RAYON_NUM_THREADS", "0").output().unwrap();
    refused(&o, &["RAYON_NUM_THREADS must be at least 1"]);
}

#[test]
fn a_shard_index_of_100000_entries_is_read_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let name = w.file_name().unwrap().to_string_lossy().into_owned();
    let index = dir.path().join("m.safetensors.index.json");
    let write_index = |file: &dyn Fn(usize) -> String| {
        let map: serde_json::Map<String, serde_json::Value> =
            (0..100_000).map(|i| (format!("t.{i}"), serde_json::Value::String(file(i)))).collect();
        std::fs::write(&index, serde_json::json!({ "weight_map": map }).to_string()).unwrap();
    };
    // 100,000 entries naming one shard, which holds none of them: read, and refused by name.
    write_index(&|_| name.clone());
    let t0 = Instant::now();
    let o = common::movq().arg("inspect").arg(&index).output().unwrap();
    refused(&o, &["weight_map entry `t.0` names", "which does not hold it"]);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    // 100,000 distinct shards (quadratic de-duplication took minutes): refused at once.
    write_index(&|i| format!("shard-{i:06}.safetensors"));
    let t0 = Instant::now();
    let o = common::movq().arg("inspect").arg(&index).output().unwrap();
    refused(&o, &["m.safetensors.index.json", "more than 4096 files"]);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[test]
fn y4m_streams_to_a_named_pipe_and_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let file = dir.path().join("file.y4m");
    assert!(decode_cmd(&w, &z, &file).output().unwrap().status.success());
    let expected = std::fs::read(&file).unwrap();

    let fifo = dir.path().join("p.y4m");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = decode_cmd(&w, &z, &fifo).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(reader.join().unwrap(), expected);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the pipe was replaced");
    assert!(leftovers(dir.path()).is_empty());

    let o = decode_cmd(&w, &z, Path::new("-")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, expected);
    // A device is written, never replaced (named through a link, so that a regression
    // replaces the link, not /dev/null); tensor formats cannot stream.
    let dev = dir.path().join("devnull.y4m");
    std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
    assert!(decode_cmd(&w, &z, &dev).output().unwrap().status.success());
    assert!(std::fs::symlink_metadata(&dev).unwrap().file_type().is_symlink());
    let link = dir.path().join("null.npy");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    refused(&decode_cmd(&w, &z, &link).output().unwrap(), &["null.npy", "Y4M stream"]);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}

#[test]
fn a_stream_cut_by_its_reader_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // 15 frames of 64 x 64: more than a pipe buffer holds.
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,8,32,32");
    let mut child =
        decode_cmd(&w, &z, Path::new("-")).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut head = [0u8; 10];
    child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    assert_eq!(&head[..9], b"YUV4MPEG2");
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    refused(&o, &["-: ", "Broken pipe"]);
}

#[test]
fn frame_directories_holding_anything_else_are_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(frames.join("frame_00099.png")).unwrap();
    std::fs::write(frames.join("frame_00099.png/precious.txt"), b"keep me").unwrap();
    std::fs::write(frames.join("frame_00000.png"), b"old").unwrap();
    refused(&decode_cmd(&w, &z, &frames).output().unwrap(), &["frames", "frame_00099.png", "refusing"]);
    assert_eq!(std::fs::read(frames.join("frame_00099.png/precious.txt")).unwrap(), b"keep me");
    assert_eq!(std::fs::read(frames.join("frame_00000.png")).unwrap(), b"old");
    // Only frames: replaced.
    std::fs::remove_dir_all(frames.join("frame_00099.png")).unwrap();
    assert!(decode_cmd(&w, &z, &frames).output().unwrap().status.success());
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 3);
    // A directory named like a tensor file is not a frame directory.
    let npy_dir = dir.path().join("x.npy");
    std::fs::create_dir(&npy_dir).unwrap();
    refused(&decode_cmd(&w, &z, &npy_dir).output().unwrap(), &["x.npy", "is a directory"]);
    assert!(npy_dir.is_dir() && std::fs::read_dir(&npy_dir).unwrap().count() == 0);
}

#[test]
fn outputs_that_are_inputs_by_another_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let cfg = dir.path().join("tiny.json");
    let before = std::fs::read(&w).unwrap();
    let hard = dir.path().join("hard.safetensors");
    std::fs::hard_link(&w, &hard).unwrap();
    let soft = dir.path().join("soft.npy");
    std::os::unix::fs::symlink(&z, &soft).unwrap();
    for out in [&w, &hard, &z, &soft] {
        refused(&decode_cmd(&w, &z, out).output().unwrap(), &["the output is the input"]);
    }
    let o = decode_cmd(&w, &z, &dir.path().join("tiny.json.npy")).arg("--config").arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg_npy = dir.path().join("cfg.npy");
    std::fs::hard_link(&cfg, &cfg_npy).unwrap();
    let o = decode_cmd(&w, &z, &cfg_npy).arg("--config").arg(&cfg).output().unwrap();
    refused(&o, &["cfg.npy: the output is the input", "tiny.json"]);
    assert_eq!(std::fs::read(&w).unwrap(), before);
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn special_and_huge_inputs_are_refused_from_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let out = dir.path().join("out.npy");
    refused(
        &decode_cmd(&w, Path::new("/dev/zero"), &out).output().unwrap(),
        &["/dev/zero: is a character device"],
    );
    let o = decode_cmd(&w, &z, &out).args(["--config", "/dev/zero"]).output().unwrap();
    refused(&o, &["/dev/zero: is a character device"]);
    let o = decode_cmd(Path::new("/dev/zero"), &z, &out).output().unwrap();
    refused(&o, &["/dev/zero: is a character device"]);
    // A 5 GB sparse file that is not npy: refused from its first bytes.
    let sparse = dir.path().join("sparse.npy");
    std::fs::File::create(&sparse).unwrap().set_len(5 << 30).unwrap();
    let t0 = Instant::now();
    refused(&decode_cmd(&w, &sparse, &out).output().unwrap(), &["sparse.npy", "not an npy file"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // The memory budget is checked from the header, before the data (here NaN) is read.
    let mut v = vec![0.0f32; 128];
    v[3] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    movq::io::write_npy(&nan, &[1, 4, 2, 4, 4], &v).unwrap();
    let o = decode_cmd(&w, &nan, &out).args(["--max-memory", "0.0001"]).output().unwrap();
    refused(&o, &["memory budget"]);
    assert!(!out.exists());
}

#[test]
fn compare_bounds_must_be_finite() {
    let dir = tempfile::tempdir().unwrap();
    let z = dir.path().join("z.npy");
    movq::io::write_npy(&z, &[2], &[1.0f32, 2.0]).unwrap();
    for (flag, v) in [("--max-abs", "NaN"), ("--max-rel", "nan"), ("--max-abs", "-1"), ("--max-rel", "inf")] {
        let o = common::movq().arg("compare").arg(&z).arg(&z).arg(format!("{flag}={v}")).output().unwrap();
        refused(&o, &[flag, "finite"]);
        assert!(!String::from_utf8_lossy(&o.stdout).contains("PASS"));
    }
}

#[test]
fn a_model_folder_config_that_is_not_a_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let vae = dir.path().join("model/vae");
    std::fs::create_dir_all(vae.join("config.json")).unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    std::fs::rename(&w, vae.join("diffusion_pytorch_model.safetensors")).unwrap();
    let o = decode_cmd(&dir.path().join("model"), &z, &dir.path().join("o.npy")).output().unwrap();
    refused(&o, &["vae/config.json: is a directory"]);
}

#[test]
fn control_characters_in_tensor_names_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let f = movq::io::WeightFile::open(&w).unwrap();
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = f
        .names()
        .map(|n| (n.to_string(), f.read::<f32>(n).unwrap().0, f.read::<f32>(n).unwrap().1))
        .collect();
    t.push(("evil\u{1b}[2J\r\nname".into(), vec![1], vec![0.0]));
    let entries: Vec<(&str, &[usize], &[f32])> =
        t.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    let meta = f.metadata().clone().into_iter().collect();
    let evil = dir.path().join("evil.safetensors");
    movq::io::write_tensors(&evil, &entries, &meta).unwrap();
    let err = refused(
        &decode_cmd(&evil, &z, &dir.path().join("o.npy")).output().unwrap(),
        &["unexpected weight `evil\\u{1b}[2J\\r\\nname`"],
    );
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
    // The user's own output name too, in the success line.
    let o = decode_cmd(&w, &z, &dir.path().join("red\u{1b}[31m\n.npy")).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("red\\u{1b}[31m\\n.npy") && !stderr(&o).contains('\u{1b}'),
        "{:?}",
        stderr(&o)
    );
}

#[test]
fn a_tiled_geometry_error_names_the_config_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let vae = dir.path().join("model/vae");
    std::fs::create_dir_all(&vae).unwrap();
    let config = r#"{"_class_name": "AutoencoderKLCogVideoX", "block_out_channels": [32, 32, 64],
        "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32, "norm_eps": 1e-06,
        "temporal_compression_ratio": 4, "out_channels": 3, "in_channels": 3, "sample_height": 8,
        "sample_width": 48, "scaling_factor": 0.7}"#;
    std::fs::write(vae.join("config.json"), config).unwrap();
    let z = dir.path().join("z.npy");
    let st = common::movq()
        .args(["random-weights", "--diffusers-names", "--config"])
        .arg(vae.join("config.json"))
        .arg("--output")
        .arg(vae.join("diffusion_pytorch_model.safetensors"))
        .args(["--latent-shape", "1,4,5,6,7", "--latent-out"])
        .arg(&z)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", stderr(&st));
    let o = decode_cmd(&dir.path().join("model"), &z, &dir.path().join("o.npy"))
        .args(["--mode", "tiled", "--no-scale"])
        .output()
        .unwrap();
    let err = refused(&o, &["vae/config.json", "sample_height 8", "latent tiles 1 x"]);
    assert!(!err.contains("TileConfig"), "{err}");
}

#[test]
fn a_stale_temporary_is_an_error_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.y4m");
    let tmp = dir.path().join(format!(".v.y4m.tmp-{}", std::process::id()));
    std::fs::write(&tmp, b"not movq's").unwrap();
    let opts =
        movq::io::VideoOptions { format: movq::io::VideoFormat::Y4m, fps: 8, chroma: movq::io::Chroma::C444 };
    let r = movq::io::VideoWriter::create(&out, movq::Shape::new(1, 3, 2, 4, 4), opts);
    assert!(matches!(r, Err(movq::Error::OutputNotWritable { .. })));
    drop(r);
    assert_eq!(std::fs::read(&tmp).unwrap(), b"not movq's");
    let r = movq::io::write_npy(&dir.path().join("v.npy"), &[1], &[0.0f32]);
    assert!(r.is_ok());
    let tmp = dir.path().join(format!(".w.npy.tmp-{}", std::process::id()));
    std::fs::write(&tmp, b"mine").unwrap();
    assert!(movq::io::write_npy(&dir.path().join("w.npy"), &[1], &[0.0f32]).is_err());
    assert_eq!(std::fs::read(&tmp).unwrap(), b"mine");
}

#[test]
fn duplicate_tensor_names_and_unknown_environment_values_are_refused() {
    let text = r#"{"a\u001b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a\u001b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(text.as_bytes());
    b.extend_from_slice(&[0; 4]);
    let e = movq::io::WeightFile::from_bytes("dup.safetensors", b).unwrap_err();
    assert!(matches!(e, movq::Error::InvalidHeader { .. }), "{e}");
    assert!(
        e.to_string().contains("tensor `a\\u{1b}` is listed twice") && !e.to_string().contains('\u{1b}'),
        "{e}"
    );
    for (var, v) in [("MOVQ_ISA", "avx9"), ("MOVQ_CONV", "fft")] {
        let o = common::movq().args(["inspect", "nothing"]).env(var, v).output().unwrap();
        refused(&o, &[var, v, "is not one of"]);
    }
}

#[test]
fn symbolic_link_outputs_are_resolved_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (w, z) = common::random_model(dir.path(), "tiny", TINY, "1,4,2,4,4");
    let real = dir.path().join("real.npy");
    std::fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.npy");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = decode_cmd(&w, &z, &link).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(movq::io::npy_shape(&real).unwrap(), vec![1, 3, 3, 8, 8]);
    let dangling = dir.path().join("dangling.npy");
    std::os::unix::fs::symlink(dir.path().join("no/such/file"), &dangling).unwrap();
    refused(&decode_cmd(&w, &z, &dangling).output().unwrap(), &["dangling.npy", "does not resolve"]);
    // `/dev/stdout`-like: a link to the process's standard output, redirected to a file. The
    // file is written; the link (in /dev, the system's) is left alone.
    let fd1 = dir.path().join("fd1.y4m");
    std::os::unix::fs::symlink("/proc/self/fd/1", &fd1).unwrap();
    let target = dir.path().join("redirected.y4m");
    let o = decode_cmd(&w, &z, &fd1).stdout(std::fs::File::create(&target).unwrap()).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&fd1).unwrap().file_type().is_symlink());
    assert!(std::fs::read(&target).unwrap().starts_with(b"YUV4MPEG2"));
    assert!(leftovers(dir.path()).is_empty());
}
