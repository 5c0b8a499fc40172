//! `movq inspect`: what a checkpoint holds and the config movq will use for it, as JSON.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use movq::Checkpoint;
use movq::checkpoint::{ConfigSource, InferHints, Naming, OpenOptions};
use movq::model::schedule::Tiling;
use movq::model::{DecodeMode, DecoderClass, PadMode, TileConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One decoder call on the whole clip (upstream `decoder(z)`).
    Whole,
    /// Latent frames in batches of 2 with carried conv caches (diffusers `vae.decode(z)`).
    Chunked,
    /// Chunked, in overlapping spatial tiles blended together (diffusers `enable_tiling()`).
    Tiled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PadModeArg {
    First,
    Constant,
    Reflect,
}

/// Config values the weights cannot tell, for checkpoints without a config.
#[derive(Args, Clone, Debug, Default)]
pub struct HintArgs {
    /// The `resolution` the decoder was built with (it only places attention). Used when the
    /// config is inferred from the tensors.
    #[arg(long)]
    pub resolution: Option<usize>,
    /// CausalConv3d pad mode, when the config is inferred (default first).
    #[arg(long, value_enum)]
    pub pad_mode: Option<PadModeArg>,
    /// temporal_compress_times, when the config is inferred (default 4).
    #[arg(long)]
    pub temporal_compress_times: Option<usize>,
    /// The decoder class, for weights in upstream / sat naming whose structure fits both
    /// MOVQDecoder3D and the SAT CogVideoX ContextParallelDecoder3D and whose config does not
    /// name it.
    #[arg(long = "class", value_enum)]
    pub class: Option<ClassArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClassArg {
    #[value(name = "MOVQDecoder3D")]
    Movq,
    #[value(name = "NewDecoder3D")]
    New,
    #[value(name = "ContextParallelDecoder3D")]
    ContextParallel,
}

/// diffusers' `enable_tiling(...)` parameters for `--mode tiled` (each defaults to diffusers'
/// value for the model: half the sample size, overlaps 1/6 and 1/5).
#[derive(Args, Clone, Debug, Default)]
pub struct TileArgs {
    /// Output rows of a tile (`tile_sample_min_height`).
    #[arg(long)]
    pub tile_sample_min_height: Option<usize>,
    /// Output columns of a tile (`tile_sample_min_width`).
    #[arg(long)]
    pub tile_sample_min_width: Option<usize>,
    /// Vertical overlap of neighbouring tiles, in [0, 1) (`tile_overlap_factor_height`).
    #[arg(long)]
    pub tile_overlap_factor_height: Option<f64>,
    /// Horizontal overlap of neighbouring tiles, in [0, 1) (`tile_overlap_factor_width`).
    #[arg(long)]
    pub tile_overlap_factor_width: Option<f64>,
}

impl TileArgs {
    pub fn tiling(&self) -> Tiling {
        Tiling {
            sample_min: (self.tile_sample_min_height, self.tile_sample_min_width),
            overlap: (self.tile_overlap_factor_height, self.tile_overlap_factor_width),
        }
    }

    fn any(&self) -> bool {
        self.tiling() != Tiling::default()
    }
}

/// The decode mode asked for: default chunked for the CogVideoX decoders (diffusers' and SAT's
/// production decode), whole otherwise; tiled with the geometry of `tile`.
pub fn mode_for(mode: Option<Mode>, ck: &Checkpoint, tile: &TileArgs) -> Result<DecodeMode> {
    let mode = mode.unwrap_or(if ck.config().class.is_cogvideox() { Mode::Chunked } else { Mode::Whole });
    if tile.any() && mode != Mode::Tiled {
        bail!("the --tile-* options set the geometry of --mode tiled; this decode runs {mode:?}");
    }
    Ok(match mode {
        Mode::Whole => DecodeMode::Whole,
        Mode::Chunked => DecodeMode::Chunked,
        Mode::Tiled => DecodeMode::Tiled(tile_config(ck, tile)?),
    })
}

/// The tile geometry `tile` gives for this checkpoint (diffusers' defaults from its sample size).
pub fn tile_config(ck: &Checkpoint, tile: &TileArgs) -> Result<TileConfig> {
    let scale = ck.plan.space_scale();
    let size = ck.sample_size.unwrap_or((480, 720));
    let source = match &ck.config_source {
        ConfigSource::File(p) => p.display().to_string(),
        _ => ck.paths().first().map(|p| p.display().to_string()).unwrap_or_default(),
    };
    TileConfig::from_tiling(size, &tile.tiling(), scale).with_context(|| {
        format!(
            "{source}: --mode tiled with sample_height {} x sample_width {} and a {scale}x spatial upsampling",
            size.0, size.1
        )
    })
}

impl HintArgs {
    pub fn hints(&self) -> InferHints {
        InferHints {
            resolution: self.resolution,
            pad_mode: self.pad_mode.map(|p| match p {
                PadModeArg::First => PadMode::First,
                PadModeArg::Constant => PadMode::Constant,
                PadModeArg::Reflect => PadMode::Reflect,
            }),
            temporal_compress_times: self.temporal_compress_times,
            class: self.class.map(|c| match c {
                ClassArg::Movq => DecoderClass::MovqDecoder3d,
                ClassArg::New => DecoderClass::NewDecoder3d,
                ClassArg::ContextParallel => DecoderClass::ContextParallelDecoder3d,
            }),
        }
    }
}

#[derive(Args)]
pub struct InspectArgs {
    /// Weights: a .safetensors file, a PyTorch checkpoint (.pt, .pth, .bin, .ckpt), a shard
    /// index, or a diffusers model folder.
    pub weights: PathBuf,
    /// Config JSON to use instead of the one found (or inferred).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Key prefix of the decoder tensors (default: detected).
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub hints: HintArgs,
    /// The decode mode to report (default: the one `movq decode` picks).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub tile: TileArgs,
}

/// Opens the checkpoint at `weights` as the decode, bench and inspect flags describe it.
pub fn open_checkpoint(
    weights: &Path,
    config: Option<&Path>,
    prefix: Option<&str>,
    hints: &HintArgs,
) -> Result<Checkpoint> {
    let opts = OpenOptions { config, prefix, hints: hints.hints(), ..Default::default() };
    Checkpoint::open(weights, &opts).with_context(|| format!("opening the checkpoint {}", weights.display()))
}

pub fn inspect(a: &InspectArgs) -> Result<()> {
    let ck = open_checkpoint(&a.weights, a.config.as_deref(), a.prefix.as_deref(), &a.hints)?;
    let (mut tensors, mut decoder_tensors, mut params) = (0usize, 0usize, 0u128);
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for f in &ck.files {
        for name in f.names() {
            tensors += 1;
            let Some(info) = f.info(name) else { continue };
            if ck.is_decoder_tensor(name) {
                decoder_tensors += 1;
                params += info.shape.iter().map(|&d| d as u128).product::<u128>();
                *dtypes.entry(format!("{:?}", info.dtype)).or_default() += 1;
            }
        }
    }
    let format = match (ck.naming, ck.prefix.as_str()) {
        (Naming::Diffusers, _) => "diffusers",
        (Naming::Upstream, "decoder.") => "sat",
        (Naming::Upstream, _) => "upstream",
    };
    let (source, assumed) = match &ck.config_source {
        ConfigSource::File(p) => (format!("file {}", p.display()), vec![]),
        ConfigSource::Metadata => ("safetensors metadata".to_string(), vec![]),
        ConfigSource::Inferred(a) => ("inferred from tensor names and shapes".to_string(), a.clone()),
    };
    let load = ck.load::<f32>().map(|_| ()).map_err(|e| e.to_string());
    let mode = mode_for(a.mode, &ck, &a.tile);
    let tile = tile_config(&ck, &a.tile).ok();
    let out = json!({
        "weights": a.weights.display().to_string(),
        "files": ck.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "format": format,
        "prefix": ck.prefix,
        "tensors": tensors,
        "decoder_tensors": decoder_tensors,
        "parameters": params as u64,
        "dtypes": dtypes,
        "config_source": source,
        "config": ck.config(),
        "not_inferred": assumed.iter().map(|a| json!({"field": a.field, "value": a.value, "reason": a.reason})).collect::<Vec<_>>(),
        "class": ck.config().class.name(),
        "class_reason": ck.class_reason,
        "mode": match &mode {
            Ok(DecodeMode::Whole) => json!("whole"),
            Ok(DecodeMode::Chunked) => json!("chunked"),
            Ok(DecodeMode::Tiled(_)) => json!("tiled"),
            Err(e) => json!(format!("error: {e:#}")),
        },
        "mode_reason": if a.mode.is_some() {
            "given (--mode)"
        } else if ck.config().class.is_cogvideox() {
            "the CogVideoX decoders' production decode: latent frames in batches of 2 with carried conv caches"
        } else {
            "one decoder call on the whole clip, as upstream's decoder(z)"
        },
        "sample_size": ck.sample_size,
        "tile_geometry": tile.map(|t| json!({
            "tile_latent": t.tile_latent, "stride_latent": t.stride_latent,
            "blend": t.blend, "keep": t.keep,
        })),
        "scaling_factor": ck.scaling_factor,
        "loads": load.is_ok(),
        "load_error": load.err(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
