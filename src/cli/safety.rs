//! Checks the CLI makes before any work: a sane thread count, outputs that are not inputs,
//! finite comparison bounds.

use anyhow::{Result, bail};
use movq::io::paths::{file_id, refuse_overwriting_inputs};
use movq::io::{Loader, output, sample_path};
use movq::model::DecoderPlan;
use movq::{Decoder, DecoderConfig};
use std::path::{Path, PathBuf};

/// Thread counts above this many times the available cores are refused: a decode is
/// compute-bound, and 1000 threads on 2 cores made a 0.06 s decode take 10.6 s.
pub const THREADS_PER_CORE_CAP: usize = 4;

/// The worker-thread count to configure: `--threads`, else `RAYON_NUM_THREADS` (which rayon
/// would honour by itself), else `None` (rayon's default, one per core). Zero, unparsable, or
/// above [`THREADS_PER_CORE_CAP`] x the available cores is an error.
pub fn thread_count(arg: Option<usize>) -> Result<Option<usize>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cap = THREADS_PER_CORE_CAP * cores;
    let (n, from) = match (arg, std::env::var("RAYON_NUM_THREADS")) {
        (Some(n), _) => (n, "--threads"),
        // rayon itself reads 0 as "the default"; refused like --threads 0 (README, limits).
        (None, Ok(v)) => match v.trim().parse::<usize>() {
            Ok(n) => (n, "RAYON_NUM_THREADS"),
            Err(_) => bail!("RAYON_NUM_THREADS={v:?} is not a thread count"),
        },
        (None, Err(_)) => return Ok(None),
    };
    if n == 0 {
        bail!("{from} must be at least 1");
    }
    if n > cap {
        bail!(
            "{from} {n} is more than {THREADS_PER_CORE_CAP}x the {cores} available cores (at most {cap}); \
             more threads than cores only slow a decode down"
        );
    }
    Ok(Some(n))
}

/// Refuses unknown values of `MOVQ_ISA` and `MOVQ_CONV` ([`movq::kernels::check_env`]) before
/// any work, also for commands that do not decode.
pub fn check_env() -> Result<()> {
    Ok(movq::kernels::check_env()?)
}

/// Refuses outputs (the `n` per-sample paths of `output`) that are one of `inputs` by file
/// identity, or a frame directory holding one of them.
pub fn check_outputs(output: &Path, n: usize, inputs: &[PathBuf]) -> Result<()> {
    if output.as_os_str() == output::STDOUT {
        return Ok(());
    }
    for i in 0..n {
        let out = sample_path(output, i, n);
        refuse_overwriting_inputs(&out, inputs)?;
        if out.is_dir()
            && let Ok(frames) = output::frame_files(&out)
        {
            for f in frames {
                refuse_overwriting_inputs(&f, inputs)?;
            }
        }
    }
    Ok(())
}

/// True if `a` and `b` name the same file: the same existing file, or the same new name.
pub fn same_destination(a: &Path, b: &Path) -> bool {
    if let (Some(x), Some(y)) = (file_id(a), file_id(b)) {
        return x == y;
    }
    let abs = |p: &Path| -> Option<PathBuf> {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    a == b || abs(a).is_some_and(|x| abs(b) == Some(x))
}

/// Refuses an output whose directory does not exist or that would replace a directory or a
/// special file, before anything is written.
fn check_writable_target(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("{}: cannot write the output: {} is not a directory", path.display(), dir.display());
    }
    output::check_file_target(path)?;
    Ok(())
}

/// Refuses an output path not named `*.{ext}`: the file will hold that format whatever its
/// name, and movq reads files by their extension.
pub fn check_extension(path: &Path, ext: &str) -> Result<()> {
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
        bail!("{}: the output must be a .{ext} file", path.display());
    }
    Ok(())
}

/// Refuses an output file that is one of `inputs`, cannot be written
/// ([`check_writable_target`]) or is not named `*.{ext}`, before anything is computed.
pub fn check_output_file(path: &Path, inputs: &[PathBuf], ext: &str) -> Result<()> {
    refuse_overwriting_inputs(path, inputs)?;
    check_writable_target(path)?;
    check_extension(path, ext)
}

/// For `movq random-weights`: checks both outputs (not the config, not each other, in an
/// existing directory) and makes the random latent of `shape` (rank 5, no empty axis, fits in
/// the memory available), all before anything is written.
pub fn random_latent(
    config: &Path,
    weights_out: &Path,
    shape: Option<&[usize]>,
    latent_out: Option<&Path>,
    seed: u64,
) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    check_output_file(weights_out, &[config.into()], "safetensors")?;
    let (Some(shape), Some(latent_out)) = (shape, latent_out) else { return Ok(None) };
    refuse_overwriting_inputs(latent_out, &[config.into()])?;
    check_writable_target(latent_out)?;
    if same_destination(weights_out, latent_out) {
        bail!("--latent-out {} is the weights output too", latent_out.display());
    }
    check_extension(latent_out, "npy")?;
    if shape.len() != 5 || shape.contains(&0) {
        bail!("--latent-shape {shape:?}: a latent is five non-zero sizes (b, c, t, h, w)");
    }
    let bytes = shape.iter().try_fold(4u128, |a, &d| a.checked_mul(d as u128)).unwrap_or(u128::MAX);
    let avail = movq::model::memory::available_bytes().unwrap_or(u64::MAX);
    if bytes > avail as u128 {
        bail!(
            "--latent-shape {shape:?} needs {} MiB, more than the {} MiB of memory available",
            bytes >> 20,
            avail >> 20
        );
    }
    let z = movq::tensor::random_normal(shape, seed.wrapping_add(1))?;
    Ok(Some((shape.to_vec(), z)))
}

/// The number of parameters of the decoder `cfg` describes, without allocating them. The
/// count is a quadratic polynomial in `ch` (conv and attention weights are ch x ch, norms and
/// the convs from z and to RGB are linear in it), so the exact loads at ch = 32, 64, 96
/// (small) determine it by interpolation.
pub fn param_count(plan: &DecoderPlan) -> Result<u128> {
    let cfg = plan.config();
    let count = |ch: usize| -> Result<i128> {
        let small = DecoderPlan::new(&DecoderConfig { ch, ..cfg.clone() })?;
        let loader = Loader::random(0);
        Decoder::<f32>::load(&loader.root(), &small)?;
        Ok(loader.take_random().iter().map(|(_, s, _)| s.iter().product::<usize>() as i128).sum())
    };
    let (p1, p2, p3) = (count(32)?, count(64)?, count(96)?);
    let x = cfg.ch as i128;
    // Lagrange interpolation through (32, p1), (64, p2), (96, p3); the denominators are 2048.
    let twice = p1 * (x - 64) * (x - 96) - 2 * p2 * (x - 32) * (x - 96) + p3 * (x - 32) * (x - 64);
    Ok((twice / 2048).max(0) as u128)
}

/// Refuses random weights for `cfg` that would not fit in the memory available (each value
/// is held twice while the file is made: once generated, once in the decoder being built).
pub fn check_random_weights_fit(plan: &DecoderPlan) -> Result<()> {
    let cfg = plan.config();
    let params = param_count(plan)?;
    let bytes = params * 8;
    let avail = movq::model::memory::available_bytes().unwrap_or(u64::MAX) as u128;
    if bytes > avail {
        bail!(
            "random weights for ch {}: {params} parameters need about {:.1} GiB while being made, more than the {:.1} GiB of memory available",
            cfg.ch,
            bytes as f64 / (1u64 << 30) as f64,
            avail as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Refuses a comparison bound or data range that is NaN, infinite or negative (a NaN bound
/// would never be exceeded and turn the gate off).
pub fn check_bound(flag: &str, v: Option<f64>) -> Result<()> {
    if let Some(v) = v
        && !(v.is_finite() && v >= 0.0)
    {
        bail!("{flag} {v} is not a finite, non-negative number");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_must_be_finite_and_non_negative() {
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(check_bound("--max-abs", Some(bad)).is_err(), "{bad}");
        }
        assert!(check_bound("--max-abs", Some(0.0)).is_ok());
        assert!(check_bound("--max-abs", None).is_ok());
    }

    #[test]
    fn param_count_matches_the_loaded_decoder() {
        let cfg = DecoderConfig::from_json(
            r#"{"ch": 160, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1,
                "attn_resolutions": [8], "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}"#,
        )
        .unwrap();
        let plan = DecoderPlan::new(&cfg).unwrap();
        let loader = Loader::random(0);
        Decoder::<f32>::load(&loader.root(), &plan).unwrap();
        let direct: usize = loader.take_random().iter().map(|(_, s, _)| s.iter().product::<usize>()).sum();
        assert_eq!(param_count(&plan).unwrap(), direct as u128);
    }

    #[test]
    fn thread_counts_are_capped() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(thread_count(Some(0)).is_err());
        assert!(thread_count(Some(100_000)).is_err());
        assert_eq!(thread_count(Some(cores * THREADS_PER_CORE_CAP)).unwrap(), Some(cores * 4));
    }
}
