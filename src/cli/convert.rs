//! `movq convert IN OUT.safetensors`: a PyTorch checkpoint (or any weight file movq reads)
//! rewritten as safetensors once, tensors bit for bit in their stored dtypes, so that later
//! runs map it instead of parsing a pickle.

use anyhow::{Context, Result, bail};
use clap::Args;
use movq::io::{WeightFile, convert_to_safetensors};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct ConvertArgs {
    /// The checkpoint file: `.pt`, `.pth`, `.bin`, `.ckpt` (torch.save zip or legacy format) or
    /// `.safetensors`. `{"state_dict": ...}` / `{"module": ...}` wrappers and `module.`
    /// prefixes are unwrapped as when decoding.
    pub input: PathBuf,
    /// The safetensors file to write (written whole or not at all; never one of the inputs).
    pub output: PathBuf,
    /// Keep only the tensors whose names start with this prefix (e.g. `decoder.`); repeatable.
    #[arg(long = "only")]
    pub only: Vec<String>,
}

pub fn convert(a: &ConvertArgs) -> Result<()> {
    super::safety::check_extension(&a.output, "safetensors")?;
    movq::io::paths::refuse_overwriting_inputs(&a.output, std::slice::from_ref(&a.input))?;
    let src = WeightFile::open(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let keep = |n: &str| a.only.is_empty() || a.only.iter().any(|p| n.starts_with(p.as_str()));
    let kept = src.names().filter(|n| keep(n)).count();
    if kept == 0 {
        bail!("{}: no tensor name starts with {:?}", a.input.display(), a.only);
    }
    let mut meta: BTreeMap<String, String> =
        src.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("producer".into(), format!("movq {} convert", env!("CARGO_PKG_VERSION")));
    // The class told from the whole file, kept for a decoder cut out of it with --only.
    let shapes = src.names().filter_map(|n| Some((n.to_string(), src.info(n)?.shape.clone()))).collect();
    let sat_names = src.names().any(|n| n.starts_with("decoder.mid.") || n.starts_with("decoder.up."));
    if let Some(c) = movq::checkpoint::detect_upstream_class(&shapes, "decoder.").filter(|_| sat_names) {
        meta.insert(movq::checkpoint::CLASS_METADATA_KEY.into(), c.class.name().into());
    }
    let n = convert_to_safetensors(&src, &a.output, keep, &meta)
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("wrote {n} tensors of {} to {}", a.input.display(), a.output.display());
    Ok(())
}
