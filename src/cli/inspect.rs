//! `movq inspect`: what a checkpoint holds and the config movq will use for it, as JSON.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use movq::Checkpoint;
use movq::checkpoint::{ConfigSource, InferHints, Naming, OpenOptions};
use movq::model::PadMode;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
        }
    }
}

#[derive(Args)]
pub struct InspectArgs {
    /// Weights: a .safetensors file, a shard index, or a diffusers model folder.
    pub weights: PathBuf,
    /// Config JSON to use instead of the one found (or inferred).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Key prefix of the decoder tensors (default: detected).
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub hints: HintArgs,
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
        "scaling_factor": ck.scaling_factor,
        "loads": load.is_ok(),
        "load_error": load.err(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
