//! `movq decode`: latent file -> decoded video file, streamed batch by batch.

use super::progress::DecodeProgress;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use movq::io::paths::Stamp;
use movq::io::{Chroma, OutputSink, SinkOptions, VideoFormat, read_latent};
use movq::kernels::Float;
use movq::model::memory::{Footprint, available_bytes, estimate_peak_bytes};
use movq::model::{DecodeMode, DecoderClass};
use movq::{Checkpoint, Shape, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    F64,
    /// f32 with the convolutions' operands rounded to bf16 (bf16 products, f32 sums): the
    /// error of a bf16 port, on any CPU, at f32 speed or a little slower.
    #[value(name = "bf16-emulated")]
    Bf16Emulated,
    /// bf16 products in the CPU's bf16 dot-product instructions with f32 sums (x86
    /// AVX512_BF16 `vdpbf16ps`, ARM BFDOT), where movq has a kernel for them; an error elsewhere.
    Bf16,
}

impl Precision {
    /// Whether the decode runs in f64; sets the process-wide bf16 switches (`bf16-emulated`,
    /// `bf16`). `bf16` where movq has no bf16 kernel for this CPU is an error.
    pub fn select(self) -> Result<bool> {
        use movq::kernels::params::{set_bf16_native, set_bf16_products};
        if self == Precision::Bf16 {
            movq::ops::conv::bf16_dot_available::<f32>("--precision bf16")?;
        }
        set_bf16_products(matches!(self, Precision::Bf16Emulated | Precision::Bf16));
        set_bf16_native(self == Precision::Bf16);
        Ok(self == Precision::F64)
    }
}

pub use super::inspect::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ChromaArg {
    /// 4:2:0 (2x2 averaged chroma): what players expect.
    #[value(name = "420")]
    C420,
    /// 4:4:4: full-resolution chroma.
    #[value(name = "444")]
    C444,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// (batch, channels, frames, height, width): what the VAE takes.
    Bcthw,
    /// (batch, frames, channels, height, width): what the CogVideoX transformer outputs.
    Btchw,
}

#[derive(Args)]
pub struct DecodeArgs {
    /// Decoder weights: a .safetensors file (upstream, sat or diffusers names), a PyTorch
    /// checkpoint (.pt, .pth, .bin, .ckpt, e.g. the SAT release's 3d-vae.pt), a shard index
    /// (*.safetensors.index.json), or a diffusers model folder (with vae/config.json).
    #[arg(long)]
    pub weights: PathBuf,
    /// Config JSON: upstream argument names, or a diffusers config.json. Default: the model
    /// folder's config.json, else the config stored in the weights file's metadata, else
    /// inferred from the tensor names and shapes (see `movq inspect`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Latent: a .npy file, or a .safetensors file (its only tensor, or --latent-key).
    #[arg(long)]
    pub latent: PathBuf,
    /// Tensor name inside a safetensors latent file.
    #[arg(long)]
    pub latent_key: Option<String>,
    /// Axis order of the latent.
    #[arg(long, value_enum, default_value = "bcthw")]
    pub layout: Layout,
    /// The latent is as the CogVideoX pipeline samples it: divide it by the model's
    /// scaling_factor before decoding (what the pipeline does before `vae.decode`).
    #[arg(long, conflicts_with = "no_scale")]
    pub latent_scaled: bool,
    /// The latent is already divided by scaling_factor (or the model has none): decode as is.
    #[arg(long)]
    pub no_scale: bool,
    /// Override the model's scaling_factor (only with --latent-scaled).
    #[arg(long, requires = "latent_scaled")]
    pub scaling_factor: Option<f64>,
    #[command(flatten)]
    pub hints: super::inspect::HintArgs,
    /// Key prefix of the decoder tensors. Default: detected (`decoder.` for diffusers and sat files).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Decoding mode. Default: chunked for CogVideoX models, whole otherwise.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Output, by its name: `.npy` or `.safetensors` (tensor `sample`, the whole (b, c, t, h, w)
    /// in the decode precision); `.y4m` video; `.apng` (or `.png` with --apng) animated PNG; a
    /// directory (no extension, or ending in /) of frame_00000.png... Video outputs map x to
    /// 8 bits as the pipelines do (x / 2 + 0.5, clamped) and write one output per sample when
    /// the batch has more than one (name_b0.y4m, name_b1.y4m...). Frames are written as they
    /// are decoded; the output appears under its name only when complete. `-` (standard
    /// output), an existing named pipe or a character device is written directly as a Y4M
    /// stream (one sample); on an error midway the stream is cut short and movq exits with 2.
    #[arg(long)]
    pub output: PathBuf,
    /// Write a `.png` output as an animated PNG.
    #[arg(long)]
    pub apng: bool,
    /// Frame rate of Y4M and APNG outputs [default: 8].
    #[arg(long)]
    pub fps: Option<u32>,
    /// Chroma subsampling of Y4M outputs [default: 420].
    #[arg(long, value_enum)]
    pub chroma: Option<ChromaArg>,
    /// Compute precision: f32 (fast), f64 (reference), bf16-emulated (f32 with bf16
    /// products in the convolutions), or bf16 (the CPU's bf16 dot products: ARM FEAT_BF16, x86 avx512_bf16).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Memory budget in GiB (default: the memory the system reports available). A decode whose
    /// estimated peak exceeds it is refused before it starts.
    #[arg(long)]
    pub max_memory: Option<f64>,
    /// Decode even when the memory estimate exceeds the budget.
    #[arg(long)]
    pub force: bool,
    /// Decode a latent that holds NaN or infinite values (refused by default).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Write the output even if it holds NaN or infinite values (by default such a decode
    /// fails with exit code 2 and writes nothing).
    #[arg(long)]
    pub allow_nonfinite_output: bool,
    #[command(flatten)]
    pub tile: super::inspect::TileArgs,
    /// No progress lines on stderr (errors are still reported).
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Reads the latent in `layout` and returns it as (b, c, t, h, w).
fn latent<T: Float>(a: &DecodeArgs) -> Result<Tensor<T>> {
    // Every read_latent error names the file.
    let z: Tensor<T> = read_latent(&a.latent, a.latent_key.as_deref())?;
    if a.layout == Layout::Bcthw {
        return Ok(z);
    }
    // (b, t, c, h, w) read as (n, c, d, h, w): swap the second and third axes.
    let s = z.shape();
    let (b, t, c) = (s.n, s.c, s.d);
    let fl = s.frame_len();
    let mut out = Tensor::zeros(Shape::new(b, c, t, s.h, s.w))?;
    let src = z.data();
    for (idx, dst) in out.data_mut().chunks_mut(fl.max(1)).enumerate().take(b * c * t) {
        let (bi, ci, ti) = (idx / (c * t), (idx / t) % c, idx % t);
        dst.copy_from_slice(&src[((bi * t + ti) * c + ci) * fl..][..fl]);
    }
    Ok(out)
}

/// The estimated peak bytes of decoding a latent of shape `zs`, refused with
/// [`movq::Error::OverMemoryBudget`] over the budget (unless --force).
fn check_memory<T: Float>(a: &DecodeArgs, ck: &Checkpoint, mode: &DecodeMode, zs: Shape) -> Result<u64> {
    let weight_bytes = ck.weight_bytes() * (std::mem::size_of::<T>() as u64 / 4).max(1);
    let footprint = Footprint {
        elem: std::mem::size_of::<T>(),
        weight_bytes,
        keep_output: false,
        held_transform_bytes: 0,
    };
    let mut estimate = estimate_peak_bytes(&ck.plan, zs, mode, &footprint)
        .with_context(|| format!("decoding latent {}", a.latent.display()))?;
    if movq::tensor::heap::freed_memory() == Some(movq::tensor::heap::FreedMemory::Kept) {
        estimate = movq::tensor::heap::peak_while_kept(estimate);
    }
    let budget = match (a.max_memory, available_bytes()) {
        (Some(m), avail) if m.is_finite() && m > 0.0 => {
            Some(((m * (1u64 << 30) as f64) as u64).min(avail.unwrap_or(u64::MAX)))
        }
        (Some(m), _) => bail!("--max-memory {m} is not a positive number of GiB"),
        (None, avail) => avail,
    };
    if let Some(budget) = budget
        && !a.force
    {
        movq::model::memory::check_budget(estimate, budget)?;
    }
    Ok(estimate)
}

/// The inputs an output must not be: the weight files, the latent, the config file.
fn input_files(a: &DecodeArgs, ck: &Checkpoint) -> Vec<PathBuf> {
    let mut inputs = ck.paths();
    inputs.push(a.latent.clone());
    inputs.extend(a.config.clone());
    if let movq::checkpoint::ConfigSource::File(p) = &ck.config_source {
        inputs.push(p.clone());
    }
    inputs
}

fn run<T: Float>(a: &DecodeArgs, ck: &Checkpoint, mode: &DecodeMode) -> Result<()> {
    let t0 = Instant::now();
    let inputs = input_files(a, ck);
    // The inputs read through a memory map, named if one is truncated under it (SIGBUS).
    let mut mapped = ck.paths();
    if !a.latent.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        mapped.push(a.latent.clone());
    }
    super::signals::install();
    super::signals::track(&[], 0, &mapped);
    let stamps: Vec<Stamp> = ck.paths().iter().map(|p| Stamp::of(p)).collect::<movq::Result<_>>()?;
    // Sizes come from the latent's header: the memory budget and the outputs are checked
    // before its data is read.
    let (_, dims) = movq::io::latent_dims(&a.latent, a.latent_key.as_deref())?;
    let header_shape = match (dims.as_slice(), a.layout) {
        _ if dims.len() != 5 || dims.contains(&0) => None,
        (&[b, c, t, h, w], Layout::Bcthw) | (&[b, t, c, h, w], Layout::Btchw) => {
            Some(Shape::from_dims(&[b, c, t, h, w])?)
        }
        _ => None,
    };
    let mut estimate = None;
    if let Some(zs) = header_shape {
        super::safety::check_outputs(&a.output, zs.n, &inputs)?;
        estimate = Some(check_memory::<T>(a, ck, mode, zs)?);
    }
    let mut z: Tensor<T> = latent(a)?;
    if let Err(e) = movq::io::check_finite(&a.latent, &z) {
        if !a.allow_nonfinite {
            return Err(e.into());
        }
        eprintln!("warning: {e}; decoding anyway (--allow-nonfinite)");
    }
    let scale = match (a.latent_scaled, a.no_scale) {
        (true, _) => Some(a.scaling_factor.or(ck.scaling_factor).context(
            "--latent-scaled needs a scaling factor: the model config has none, pass --scaling-factor",
        )?),
        (false, true) => None,
        (false, false) => {
            if ck.scaling_factor.is_some() {
                bail!(
                    "say how the latent is scaled: --latent-scaled if it comes straight from the CogVideoX \
                     pipeline's sampler (movq divides it by scaling_factor {}), or --no-scale if it was \
                     already divided",
                    ck.scaling_factor.unwrap_or(1.0)
                );
            }
            if ck.config().class == DecoderClass::ContextParallelDecoder3d {
                bail!(
                    "say how the latent is scaled: a SAT CogVideoX checkpoint keeps its scale_factor in the \
                     SAT yaml, not in the weights (2b: 1.15258426; 5b, 5b-I2V, 1.5: 0.7); pass --latent-scaled \
                     --scaling-factor F for latents straight from the sampler, or --no-scale"
                );
            }
            None
        }
    };
    if let Some(f) = scale {
        if !(f.is_finite() && f != 0.0) {
            bail!("scaling factor {f} is not a finite non-zero number");
        }
        let inv = T::from_f64(1.0 / f);
        z.data_mut().iter_mut().for_each(|v| *v = *v * inv);
        let bad = z.data().iter().filter(|v| !v.is_finite()).count();
        if bad > 0 && !a.allow_nonfinite {
            bail!(
                "dividing the latent by the scaling factor {f} gives {bad} non-finite value(s) ({} overflows); \
                 nothing was decoded",
                T::NAME
            );
        }
    }
    let mut decoder =
        ck.load::<T>().with_context(|| format!("loading decoder weights from {}", a.weights.display()))?;
    decoder.allow_nonfinite(a.allow_nonfinite_output);
    let out_shape = decoder
        .decoded_shape(z.shape(), mode)
        .with_context(|| format!("decoding latent {}", a.latent.display()))?;
    let estimate = match estimate {
        Some(e) => e,
        None => check_memory::<T>(a, ck, mode, z.shape())?,
    };
    super::safety::check_outputs(&a.output, z.shape().n, &inputs)?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut meta = BTreeMap::new();
    meta.insert("producer".to_string(), format!("movq {}", env!("CARGO_PKG_VERSION")));
    meta.insert("precision".to_string(), movq::kernels::bf16::precision_name::<T>().to_string());
    meta.insert("config".to_string(), serde_json::to_string(ck.config())?);
    meta.insert("mode".to_string(), format!("{mode:?}"));
    super::cleanup::install();
    let chroma = if a.chroma == Some(ChromaArg::C444) { Chroma::C444 } else { Chroma::C420 };
    let opts = SinkOptions { apng: a.apng, fps: a.fps.unwrap_or(8), chroma };
    let mut writer = OutputSink::create::<T>(&a.output, out_shape, &opts, &meta)?;
    // A flag the output's format does not use would be silently ignored.
    let format = writer.video_format();
    let unused = match format {
        None if a.fps.is_some() || a.chroma.is_some() => Some("--fps and --chroma are for video outputs"),
        Some(VideoFormat::PngDir) if a.fps.is_some() => Some("--fps is for .y4m and .apng outputs"),
        Some(VideoFormat::Apng | VideoFormat::PngDir) if a.chroma.is_some() => {
            Some("--chroma is for .y4m outputs")
        }
        _ if a.apng && !a.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) => {
            Some("--apng is for outputs named .png")
        }
        _ => None,
    };
    if let Some(why) = unused {
        bail!(
            "{}: {why}; this output is {}",
            a.output.display(),
            format.map_or("a tensor", |f| f.describe())
        );
    }
    super::cleanup::track(writer.tmp_paths());
    super::signals::track(&writer.tmp_paths(), out_shape.d, &mapped);
    let t_load = t0.elapsed().as_secs_f64();
    eprintln!(
        "decoding z {} -> {} in {} ({mode}; estimated peak {:.2} GiB)",
        z.shape(),
        out_shape,
        movq::kernels::bf16::precision_name::<T>(),
        gib(estimate)
    );
    let t1 = Instant::now();
    let progress = DecodeProgress::new(a.quiet);
    let result = decoder.decode_stream(
        &z,
        mode,
        &mut |p| {
            progress.update(p);
            Ok(())
        },
        |first, frames| {
            progress.println(&format!(
                "  writing frames {}..{} of {}",
                first,
                first + frames.shape().d,
                out_shape.d
            ));
            writer.write(first, &frames)
        },
    );
    progress.finish();
    if let Err(e) = result {
        if matches!(e, movq::Error::NonFinite { .. }) {
            return Err(anyhow::Error::new(e).context(format!(
                "decoding {} ({})",
                a.latent.display(),
                nonfinite_weights(ck)
            )));
        }
        return Err(e.into());
    }
    // A weights file rewritten in place during the decode may have fed it mixed data.
    for s in &stamps {
        s.check_unchanged()?;
    }
    let written = writer.paths();
    let finished = writer.finish();
    super::cleanup::track(Vec::new());
    super::signals::track(&[], 0, &mapped);
    finished?;
    let paths: Vec<String> =
        written.iter().map(|p| movq::error::escape(&p.display().to_string()).into_owned()).collect();
    eprintln!(
        "wrote sample {} to {} (load {:.2} s, decode {:.2} s, threads {}, peak RSS {:.0} MiB)",
        out_shape,
        paths.join(", "),
        t_load,
        t1.elapsed().as_secs_f64(),
        rayon::current_num_threads(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}

pub fn decode(a: &DecodeArgs) -> Result<()> {
    let ck = super::inspect::open_checkpoint(&a.weights, a.config.as_deref(), a.prefix.as_deref(), &a.hints)?;
    if ck.class_assumed {
        eprintln!("note: {}", ck.class_reason);
    }
    let mode = super::inspect::mode_for(a.mode, &ck, &a.tile)?;
    if a.precision.select()? { run::<f64>(a, &ck, &mode) } else { run::<f32>(a, &ck, &mode) }
}

/// What the decoder tensors say about non-finite output: the first NaN / infinite weight, or
/// that all are finite.
fn nonfinite_weights(ck: &Checkpoint) -> String {
    for f in &ck.files {
        for name in f.names().filter(|n| ck.is_decoder_tensor(n)) {
            let bad = match f.view::<f32>(name) {
                Some(v) => v.iter().filter(|x| !x.is_finite()).count(),
                None => f.read::<f64>(name).map_or(0, |(_, v)| v.iter().filter(|x| !x.is_finite()).count()),
            };
            if bad > 0 {
                return format!(
                    "{}: weight `{name}` holds {bad} NaN or infinite value(s)",
                    f.path().display()
                );
            }
        }
    }
    "every decoder weight is finite".to_string()
}
