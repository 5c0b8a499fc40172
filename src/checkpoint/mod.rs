//! Finding and loading a decoder checkpoint on disk:
//! - a safetensors file with upstream MOVQ names (optionally under a prefix), sat names under
//!   `decoder.` (the same tree, spec 10.4), or diffusers names under `decoder.`;
//! - a diffusers model folder (`vae/config.json` + `vae/diffusion_pytorch_model.safetensors`,
//!   or the folder `vae` itself), possibly sharded (`*.safetensors.index.json`);
//! - a shard index file.
//!
//! Encoder (`encoder.`) and loss (`loss.`) tensors are ignored; every decoder tensor must be used.

mod class;
pub mod diffusers;
mod infer;

pub use class::{ClassChoice, detect_upstream_class};
pub use infer::{Assumed, InferHints, Inferred, infer_config};

use crate::error::{Error, Result, escape};
use crate::io::json::parse_strict;
use crate::io::{Loader, WeightFile};
use crate::kernels::Float;
use crate::model::{Decoder, DecoderClass, DecoderConfig, DecoderPlan, PadMode};
use diffusers::{config_from_diffusers, diffusers_key};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the decoder's tensors are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// The upstream module tree (`mid.block_1`, `up.3.block.0`, `nin_shortcut`): MOVQ, sat.
    Upstream,
    /// diffusers (`mid_block.resnets.0`, `up_blocks.0.resnets.0`, `conv_shortcut`).
    Diffusers,
}

/// A located checkpoint: the opened weight files, how they are named, and the decoder's
/// config and plan. The one way in for weights: every command that loads a decoder opens one.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The weight files (several for a sharded checkpoint), opened and memory-mapped.
    pub files: Vec<Arc<WeightFile>>,
    pub naming: Naming,
    /// Prefix of every decoder tensor name (e.g. `decoder.`).
    pub prefix: String,
    /// The architecture of the configured decoder (its config: [`Self::config`]).
    pub plan: DecoderPlan,
    /// diffusers `scaling_factor`: pipeline latents are divided by it before decoding.
    pub scaling_factor: Option<f64>,
    /// diffusers `sample_height`, `sample_width` (for the tiling defaults).
    pub sample_size: Option<(usize, usize)>,
    pub config_source: ConfigSource,
    /// Why the decoder class ([`DecoderConfig::class`]) was chosen.
    pub class_reason: String,
    /// True when the tensors also fit another class and neither the config nor the caller
    /// named it (an unprefixed decoder state dict read as upstream MOVQDecoder3D's).
    pub class_assumed: bool,
    /// Name prefixes outside the decoder that strict loading leaves alone.
    ignore: Vec<String>,
}

/// Where a checkpoint's config came from.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigSource {
    /// A JSON file: given, or the model folder's config.json.
    File(PathBuf),
    /// The safetensors header's metadata.
    Metadata,
    /// Read off the tensor names and shapes, with the fields that had to be assumed.
    Inferred(Vec<Assumed>),
}

/// How to open a checkpoint; the defaults find everything.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions<'a> {
    /// A config JSON overriding the one beside or inside the weights.
    pub config: Option<&'a Path>,
    /// The decoder tensors' name prefix, instead of the detected one.
    pub prefix: Option<&'a str>,
    /// For a config inferred from the tensors: what the tensors cannot tell.
    pub hints: InferHints,
    /// Tensor-name prefixes that are not part of the decoder (besides `encoder.` and `loss.`),
    /// e.g. the `input.` and `output` tensors of a golden file.
    pub ignore: &'a [&'a str],
}

/// A config file's content: the decoder config, and the diffusers extras if it is a diffusers one.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub config: DecoderConfig,
    /// diffusers `scaling_factor`.
    pub scaling_factor: Option<f64>,
    /// diffusers (`sample_height`, `sample_width`).
    pub sample_size: Option<(usize, usize)>,
    /// Why the class is what the config says, when the config settles it (a diffusers config,
    /// an upstream config's `class`, or a key only one class takes); `None` leaves it to the
    /// tensors.
    pub class_reason: Option<String>,
}

/// A decoder config read from JSON: diffusers `config.json` (has `block_out_channels`) or the
/// upstream argument names; plus the diffusers scaling factor and sample size if present.
fn config_from_value(v: &Value, path: &Path) -> Result<ModelConfig> {
    let with_path = |e: Error| match e {
        Error::InvalidConfig(m) => Error::InvalidConfig(format!("{}: {m}", path.display())),
        e => e,
    };
    if v.get("block_out_channels").is_some() {
        let cfg = config_from_diffusers(v).map_err(with_path)?;
        // The diffusers default of AutoencoderKLCogVideoX (the CogVideoX-2b value).
        let scaling = v.get("scaling_factor").and_then(Value::as_f64).unwrap_or(1.15258426);
        let num = |k: &str, d: usize| v.get(k).and_then(Value::as_u64).map_or(d, |x| x as usize);
        Ok(ModelConfig {
            config: cfg,
            scaling_factor: Some(scaling),
            sample_size: Some((num("sample_height", 480), num("sample_width", 720))),
            class_reason: Some("a diffusers config.json: AutoencoderKLCogVideoX's decoder".into()),
        })
    } else {
        let mut config = DecoderConfig::from_value(v).map_err(with_path)?;
        let class_reason = if v.get("class").is_some() {
            Some(format!("the config's `class` ({})", config.class.name()))
        } else if v.get("gather_norm").is_some() {
            // Only cp_enc_dec.py's classes take gather_norm (SAT CogVideoX yamls set it).
            config.class = DecoderClass::ContextParallelDecoder3d;
            config.validate().map_err(with_path)?;
            Some("the config has `gather_norm`, an argument only the SAT CogVideoX classes take".into())
        } else {
            None
        };
        Ok(ModelConfig { config, scaling_factor: None, sample_size: None, class_reason })
    }
}

/// Refuses a hint (resolution, pad mode, time compression, class) that the final config
/// contradicts: hints fill in what tensors cannot tell, so one that a config file, the
/// metadata or the class overrode would otherwise be silently ignored.
fn check_hints(config: &DecoderConfig, hints: &InferHints, origin: &str) -> Result<()> {
    let name = |m: &PadMode| {
        serde_json::to_value(m).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    };
    let mut clashes = Vec::new();
    if let Some(r) = hints.resolution.filter(|&r| r != config.resolution) {
        clashes.push(format!("resolution {r} (the config has {})", config.resolution));
    }
    if let Some(t) = hints.temporal_compress_times.filter(|&t| t != config.temporal_compress_times) {
        clashes
            .push(format!("temporal_compress_times {t} (the config has {})", config.temporal_compress_times));
    }
    if let Some(m) = hints.pad_mode.filter(|&m| m != config.pad_mode) {
        clashes.push(format!("pad_mode {} (the config has {})", name(&m), name(&config.pad_mode)));
    }
    if let Some(c) = hints.class.filter(|&c| c != config.class) {
        clashes.push(format!("class {} (the config has {})", c.name(), config.class.name()));
    }
    if clashes.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "{origin}: given {}: such options only fill in what a config inferred from the tensors cannot tell",
        clashes.join(", ")
    )))
}

/// The decoder plan of `config`; its errors name where the config came from (`origin`: a file,
/// or a weights file's metadata).
pub fn plan_from(config: &DecoderConfig, origin: &str) -> Result<DecoderPlan> {
    DecoderPlan::new(config).map_err(|e| match e {
        Error::GroupCount { place, channels, groups } => {
            Error::GroupCount { place: format!("{origin}: {place}"), channels, groups }
        }
        Error::InvalidConfig(m) => Error::InvalidConfig(format!("{origin}: {m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{origin}: {m}")),
        e => e,
    })
}

/// Reads a config JSON file: diffusers `config.json` or the upstream argument names.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    config_from_value(&read_json(path)?, path)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = crate::io::paths::read_small_text(path, "JSON file", crate::io::paths::MAX_JSON_BYTES)?;
    parse_strict(&text).map_err(|e| Error::invalid_file(path, format!("not valid JSON: {e}")))
}

/// Entries a shard index may list (a diffusers VAE has a few hundred tensors).
const MAX_INDEX_ENTRIES: usize = 1_000_000;
/// Shard files an index may name (each is opened and mapped).
const MAX_SHARDS: usize = 4096;

/// Weight files, and the (tensor name, shard file) entries of the shard index that listed
/// them (none without an index).
type Shards = (Vec<PathBuf>, Vec<(String, PathBuf)>);

/// The shard files listed in a `*.safetensors.index.json` (`weight_map` values), in order,
/// and the map itself.
fn shards_of_index(index: &Path) -> Result<Shards> {
    let v = read_json(index)?;
    // What `save_pretrained` writes; another key is a typo or a format movq does not know.
    if let Some(k) =
        v.as_object().and_then(|o| o.keys().find(|k| !["metadata", "weight_map"].contains(&k.as_str())))
    {
        let reason = format!("unknown key `{}` (a shard index holds `metadata` and `weight_map`)", escape(k));
        return Err(Error::invalid_file(index, reason));
    }
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid_file(index, "shard index has no `weight_map` object"))?;
    if map.len() > MAX_INDEX_ENTRIES {
        return Err(Error::invalid_file(
            index,
            format!("shard index has {} entries, above the limit of {MAX_INDEX_ENTRIES}", map.len()),
        ));
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut entries = Vec::with_capacity(map.len());
    for (name, f) in map {
        let f = f.as_str().ok_or_else(|| {
            Error::invalid_file(index, format!("weight_map entry `{name}` is not a file name"))
        })?;
        if f.contains("..") || Path::new(f).is_absolute() {
            return Err(Error::invalid_file(index, format!("shard `{f}` is outside the index's folder")));
        }
        files.insert(dir.join(f));
        entries.push((name.clone(), dir.join(f)));
        if files.len() > MAX_SHARDS {
            return Err(Error::invalid_file(
                index,
                format!("shard index lists more than {MAX_SHARDS} files"),
            ));
        }
    }
    if files.is_empty() {
        return Err(Error::invalid_file(index, "shard index lists no files"));
    }
    Ok((files.into_iter().collect(), entries))
}

/// Shards that disagree with each other or with their index are refused, not resolved by a
/// lookup order: a tensor in two shards, or an index entry whose shard lacks the tensor.
fn check_shards(index: &Path, opened: &[Arc<WeightFile>], entries: &[(String, PathBuf)]) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for f in opened {
        for n in f.names() {
            if let Some(first) = seen.insert(n, f.path()) {
                let reason =
                    format!("tensor `{n}` is also in {}; each tensor belongs in one shard", first.display());
                return Err(Error::invalid_file(f.path(), reason));
            }
        }
    }
    for (name, file) in entries {
        if seen.get(name.as_str()).is_none_or(|p| *p != file.as_path()) {
            let reason =
                format!("weight_map entry `{name}` names {}, which does not hold it", file.display());
            return Err(Error::invalid_file(index, reason));
        }
    }
    // With an index, a shard's tensor it does not list is one the index's writer did not
    // mean to ship (a stale or foreign shard), not one to take silently.
    if !entries.is_empty() {
        let listed: BTreeSet<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        if let Some((n, f)) = seen.iter().filter(|(n, _)| !listed.contains(*n)).min() {
            let reason =
                format!("tensor `{}` of {} is not in the index's weight_map", escape(n), f.display());
            return Err(Error::invalid_file(index, reason));
        }
    }
    Ok(())
}

/// The weight files and config.json of a model folder (or its `vae` subfolder).
fn folder_contents(dir: &Path) -> Result<(Shards, Option<PathBuf>)> {
    let dir = if dir.join("vae").is_dir() { dir.join("vae") } else { dir.to_path_buf() };
    let config = Some(dir.join("config.json")).filter(|p| p.exists() || p.is_symlink());
    if let Some(p) = &config {
        // A config.json that is a directory, FIFO or dangling link is an error, not skipped.
        crate::io::paths::open_regular(p, "config")?;
    }
    let main = dir.join("diffusion_pytorch_model.safetensors");
    if main.is_file() {
        return Ok(((vec![main], Vec::new()), config));
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let name_ends = |p: &Path, s: &str| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(s));
    // safetensors first, as diffusers' from_pretrained prefers them; then the PyTorch files
    // of `save_pretrained(safe_serialization=False)` (`diffusion_pytorch_model.bin`, sharded
    // with a `.bin.index.json`) and other torch.save files.
    for (index_suffix, suffixes) in [
        (".safetensors.index.json", &[".safetensors"][..]),
        (".bin.index.json", &[".bin", ".pt", ".pth", ".ckpt"][..]),
    ] {
        let indexes: Vec<&PathBuf> = entries.iter().filter(|p| name_ends(p, index_suffix)).collect();
        if let [index] = indexes.as_slice() {
            return Ok((shards_of_index(index)?, config));
        }
        let singles: Vec<PathBuf> =
            entries.iter().filter(|p| suffixes.iter().any(|s| name_ends(p, s))).cloned().collect();
        let preferred = dir.join("diffusion_pytorch_model.bin");
        match (indexes.len(), singles.len()) {
            (0, 0) => continue,
            (0, 1) => return Ok(((singles, Vec::new()), config)),
            (0, _) if singles.contains(&preferred) => return Ok(((vec![preferred], Vec::new()), config)),
            _ => {
                return Err(Error::invalid_file(
                    &dir,
                    "several candidate weight files in the model folder; pass the file or the shard index",
                ));
            }
        }
    }
    Err(Error::invalid_file(
        &dir,
        "no weights in the model folder (.safetensors, or PyTorch .bin / .pt / .pth / .ckpt)",
    ))
}

/// The `config.json` of the diffusers model folder that holds `file`, when `file` is one of
/// its weight files (`diffusion_pytorch_model*`, or a shard index): `save_pretrained` writes
/// the two side by side, and the weights alone cannot tell act_fn, norm_num_groups or the
/// scaling factor.
fn config_beside(file: &Path) -> Result<Option<PathBuf>> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !(name.starts_with("diffusion_pytorch_model") || name.ends_with(".index.json")) {
        return Ok(None);
    }
    let cfg = file.parent().unwrap_or(Path::new(".")).join("config.json");
    if !(cfg.exists() || cfg.is_symlink()) {
        return Ok(None);
    }
    crate::io::paths::open_regular(&cfg, "config")?;
    Ok(Some(cfg))
}

impl Checkpoint {
    /// Locates and opens the checkpoint at `path` (file, shard index or model folder).
    /// Without a config file or metadata config, the config is inferred from the tensors
    /// ([`infer_config`]) using `opts.hints`.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let ((files, index_entries), folder_config) = if path.is_dir() {
            folder_contents(path)?
        } else if path.to_string_lossy().ends_with(".index.json") {
            (shards_of_index(path)?, config_beside(path)?)
        } else {
            ((vec![path.to_path_buf()], Vec::new()), config_beside(path)?)
        };
        let opened: Vec<Arc<WeightFile>> =
            files.iter().map(|p| WeightFile::open(p).map(Arc::new)).collect::<Result<_>>()?;
        check_shards(path, &opened, &index_entries)?;
        Self::from_files(path, opened, folder_config, opts)
    }

    /// A checkpoint held in memory (a safetensors buffer), named `name` in messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>, opts: &OpenOptions) -> Result<Self> {
        let file = Arc::new(WeightFile::from_bytes(name, bytes)?);
        Self::from_files(Path::new(name), vec![file], None, opts)
    }

    fn from_files(
        path: &Path,
        opened: Vec<Arc<WeightFile>>,
        folder_config: Option<PathBuf>,
        opts: &OpenOptions,
    ) -> Result<Self> {
        let has = |p: &str| opened.iter().any(|f| f.names().any(|n| n.starts_with(p)));
        let (naming, detected_prefix) = if has("decoder.mid_block.") || has("decoder.up_blocks.") {
            (Naming::Diffusers, "decoder.")
        } else if has("decoder.mid.") || has("decoder.conv_in.") {
            (Naming::Upstream, "decoder.")
        } else if has("mid_block.") {
            (Naming::Diffusers, "")
        } else {
            (Naming::Upstream, "")
        };
        let prefix = opts.prefix.unwrap_or(detected_prefix).to_string();
        let (mc, config_source) = match opts.config.or(folder_config.as_deref()) {
            Some(p) => (read_config(p)?, ConfigSource::File(p.to_path_buf())),
            None => match metadata_config(&opened[0])? {
                Some(mc) => (mc, ConfigSource::Metadata),
                None => {
                    let shapes: BTreeMap<String, Vec<usize>> = opened
                        .iter()
                        .flat_map(|f| f.names().filter_map(|n| Some((n, f.info(n)?.shape.clone()))))
                        .filter_map(|(n, s)| Some((n.strip_prefix(prefix.as_str())?.to_string(), s)))
                        .collect();
                    let inferred = infer_config(&shapes, naming, &opts.hints).map_err(|e| match e {
                        Error::InvalidConfig(m) => Error::InvalidConfig(format!(
                            "{}: no config beside or inside the weights, and {m}",
                            path.display()
                        )),
                        e => e,
                    })?;
                    let mc = ModelConfig {
                        config: inferred.config,
                        scaling_factor: None,
                        sample_size: None,
                        class_reason: None,
                    };
                    (mc, ConfigSource::Inferred(inferred.not_inferred))
                }
            },
        };
        let ModelConfig { mut config, scaling_factor, sample_size, class_reason } = mc;
        let (class_reason, class_assumed) =
            choose_class(&mut config, &opened, naming, &prefix, class_reason, opts)
                .map_err(|m| Error::UnknownClass(format!("{}: {m}", path.display())))?;
        if config.class == DecoderClass::ContextParallelDecoder3d {
            // ContextParallelCausalConv3d takes no pad_mode: it always repeats frame 0 (spec 9).
            config.pad_mode = PadMode::First;
        }
        let origin = match &config_source {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Metadata => format!("{} (config from its metadata)", path.display()),
            ConfigSource::Inferred(_) => format!("{} (config inferred from its tensors)", path.display()),
        };
        check_hints(&config, &opts.hints, &origin)?;
        let plan = plan_from(&config, &origin)?;
        let mut ignore: Vec<String> = opts.ignore.iter().map(|s| s.to_string()).collect();
        if prefix.is_empty() {
            // Whole-VAE files without a prefix still carry the encoder and loss terms.
            ignore.extend(["encoder.".to_string(), "loss.".to_string()]);
        }
        if opened.iter().any(|f| f.metadata().contains_key("meta")) {
            // A golden file (shared/golden/README.md): its inputs and outputs are never weights.
            ignore.extend(["input.".to_string(), "output".to_string()]);
        }
        Ok(Checkpoint {
            files: opened,
            naming,
            prefix,
            plan,
            scaling_factor,
            sample_size,
            config_source,
            class_reason,
            class_assumed,
            ignore,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        self.plan.config()
    }

    /// The paths of the weight files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path().to_path_buf()).collect()
    }

    /// Bytes of the weight files.
    pub fn weight_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.byte_len() as u64).sum()
    }

    /// True if tensor `name` belongs to the decoder (under the prefix, not ignored).
    pub fn is_decoder_tensor(&self, name: &str) -> bool {
        name.starts_with(&self.prefix) && !self.ignore.iter().any(|i| name.starts_with(i.as_str()))
    }

    /// Loads the decoder strictly: a decoder tensor that is missing, of the wrong shape, or
    /// left unused is an error naming the file and tensor. f32 weights stay memory-mapped.
    pub fn load<T: Float>(&self) -> Result<Decoder<T>> {
        let mut loader = Loader::shards(self.files.clone(), &self.prefix);
        if self.naming == Naming::Diffusers {
            let levels = self.plan.levels.len();
            loader = loader.with_rename(move |p| diffusers_key(p, levels));
        }
        let ignore = self.ignore.clone();
        loader = loader.with_ignore(move |n| ignore.iter().any(|i| n.starts_with(i.as_str())));
        let dec = Decoder::load(&loader.root(), &self.plan)?;
        loader.finish()?;
        Ok(dec)
    }
}

/// Safetensors metadata key naming the decoder class of a file whose tensors alone cannot tell
/// it (e.g. a decoder cut out of a whole VAE by `movq convert --only decoder.`).
pub const CLASS_METADATA_KEY: &str = "movq_class";

/// Settles `config.class` for the tensors in `files` and returns why; `Err` (a message) when
/// the structure fits several classes and neither the config nor the hints say which.
fn choose_class(
    config: &mut DecoderConfig,
    files: &[Arc<WeightFile>],
    naming: Naming,
    prefix: &str,
    config_reason: Option<String>,
    opts: &OpenOptions,
) -> std::result::Result<(String, bool), String> {
    if naming == Naming::Diffusers {
        return Ok((
            if config.class.is_cogvideox() {
                "diffusers tensor names (`decoder.up_blocks`, `mid_block`): AutoencoderKLCogVideoX's decoder"
                    .into()
            } else {
                format!("the config's `class` ({})", config.class.name())
            },
            false,
        ));
    }
    if let Some(reason) = config_reason {
        return Ok((reason, false));
    }
    if let Some(class) = opts.hints.class {
        config.class = class;
        return Ok((format!("given ({})", class.name()), false));
    }
    if let Some(name) = files[0].metadata().get(CLASS_METADATA_KEY) {
        let class: DecoderClass = serde_json::from_value(Value::String(name.clone())).map_err(|_| {
            format!("metadata `{CLASS_METADATA_KEY}` names no decoder class movq knows: {name:?}")
        })?;
        config.class = class;
        let reason = format!(
            "the file's metadata `{CLASS_METADATA_KEY}` ({}), recorded by `movq convert` from the whole checkpoint",
            class.name()
        );
        return Ok((reason, false));
    }
    let shapes: BTreeMap<String, Vec<usize>> = files
        .iter()
        .flat_map(|f| f.names().filter_map(|n| Some((n.to_string(), f.info(n)?.shape.clone()))))
        .collect();
    match detect_upstream_class(&shapes, prefix) {
        Some(ClassChoice { class, reason }) => {
            config.class = class;
            Ok((format!("{}: {reason}", class.name()), false))
        }
        None if !matches!(config.class, DecoderClass::MovqDecoder3d) => {
            Ok((format!("the config's fields ({})", config.class.name()), false))
        }
        // A module's own state dict, as upstream's MOVQDecoder3D saves it and the golden files
        // hold it; the SAT release keeps its decoder under `decoder.` inside a whole VAE.
        None if prefix.is_empty() => Ok((
            "MOVQDecoder3D: a decoder state dict without a prefix, read as upstream MOVQDecoder3D's own \
             names; the tensors fit the SAT CogVideoX ContextParallelDecoder3D too (name the class to decode \
             it as that)"
                .into(),
            true,
        )),
        None => Err("cannot tell the decoder class: the tensors fit both MOVQDecoder3D and the SAT CogVideoX \
             ContextParallelDecoder3D (no attention or post_quant_conv, and no encoder or quantizer to tell a \
             KL from a VQ model), and the config has no `class`; name the class (\"class\": \"MOVQDecoder3D\" \
             or \"ContextParallelDecoder3D\" in the config)"
            .to_string()),
    }
}

/// The config in a safetensors header's metadata: key `meta` holding JSON with `config` (and
/// optionally `class`), as the golden files have it; or key `config` holding the config JSON
/// (upstream names or a diffusers config). `None` if there is neither.
fn metadata_config(file: &WeightFile) -> Result<Option<ModelConfig>> {
    let md = file.metadata();
    let bad = |m: String| Error::InvalidConfig(format!("{}: {m}", file.path().display()));
    if let Some(meta) = md.get("meta") {
        let v = parse_strict(meta).map_err(|e| bad(format!("metadata `meta` is not JSON: {e}")))?;
        let mut cfg =
            v.get("config").cloned().ok_or_else(|| bad("metadata `meta` has no `config`".into()))?;
        let diffusers = cfg.get("block_out_channels").is_some();
        if let (Some(class), Some(obj), false) = (v.get("class"), cfg.as_object_mut(), diffusers) {
            obj.insert("class".into(), class.clone());
        }
        return config_from_value(&cfg, file.path()).map(Some);
    }
    match md.get("config") {
        Some(text) => {
            let v = parse_strict(text).map_err(|e| {
                Error::invalid_file(file.path(), format!("metadata `config` is not JSON: {e}"))
            })?;
            config_from_value(&v, file.path()).map(Some)
        }
        None => Ok(None),
    }
}
