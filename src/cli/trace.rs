//! `movq trace` (a decode writing every module's output) and `movq golden` (reference sets for
//! ports, and judging a port's outputs against one).

use super::decode::{Mode, Precision};
use super::inspect::{HintArgs, open_checkpoint};
use super::inspect::{TileArgs, mode_for};
use anyhow::{Context, Result, bail};
use clap::Args;
use movq::checkpoint::Checkpoint;
use movq::io::paths::{Stamp, refuse_overwriting_inputs};
use movq::io::read_latent;
use movq::kernels::Float;
use movq::trace::golden::{Manifest, check_outputs, check_weights, read_set, write_set};
use movq::trace::{Bounds, Crop, Cut, TraceFile, TraceOptions, compare_traces, module_names, trace};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `A:B` (frames, rows or columns A to B - 1).
fn parse_range(s: &str) -> std::result::Result<Range<usize>, String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("`{s}` is not START:END"))?;
    let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("`{x}` in `{s}` is not a number"));
    let (a, b) = (num(a)?, num(b)?);
    if a >= b {
        return Err(format!("`{s}` is empty (START must be below END)"));
    }
    Ok(a..b)
}

/// Which modules to trace and which part of each output to keep.
#[derive(Args, Clone)]
pub struct SelectArgs {
    /// Trace only modules whose name (the checkpoint's naming, e.g. `decoder.up_blocks.1.*`)
    /// matches this glob (`*` any characters, `?` one); repeatable. Default: every module.
    #[arg(long = "modules", value_name = "GLOB")]
    pub modules: Vec<String>,
    /// Keep frames START:END of every traced output (clipped to each output's frames).
    #[arg(long, value_parser = parse_range, value_name = "START:END")]
    pub crop_frames: Option<Range<usize>>,
    /// Keep rows START:END of every traced output (clipped to each output's height).
    #[arg(long, value_parser = parse_range, value_name = "START:END")]
    pub crop_rows: Option<Range<usize>>,
    /// Keep columns START:END of every traced output (clipped to each output's width).
    #[arg(long, value_parser = parse_range, value_name = "START:END")]
    pub crop_cols: Option<Range<usize>>,
}

impl SelectArgs {
    fn options(&self) -> TraceOptions {
        TraceOptions {
            modules: self.modules.clone(),
            crop: Crop {
                frames: self.crop_frames.clone(),
                rows: self.crop_rows.clone(),
                cols: self.crop_cols.clone(),
            },
        }
    }
}

#[derive(Args)]
pub struct TraceArgs {
    /// Decoder weights in any form `movq decode` takes.
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub hints: HintArgs,
    /// Latent (b, c, t, h, w), decoded as given (already divided by any scaling factor).
    #[arg(long, required_unless_present = "list")]
    pub latent: Option<PathBuf>,
    #[arg(long)]
    pub latent_key: Option<String>,
    /// Decoding mode (default: chunked for CogVideoX models, whole otherwise).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub tile: TileArgs,
    /// Compute precision, also the trace's dtype.
    #[arg(long, value_enum, default_value = "f64")]
    pub precision: Precision,
    #[command(flatten)]
    pub select: SelectArgs,
    /// The trace (.safetensors): one tensor per traced module output, named by module path
    /// (`NAME@chunkK` per frame batch in chunked mode), in execution order in the metadata.
    #[arg(long, required_unless_present = "list")]
    pub output: Option<PathBuf>,
    /// Print the traceable module names in execution order and exit.
    #[arg(long, conflicts_with_all = [
        "latent", "latent_key", "mode", "output", "modules", "crop_frames", "crop_rows", "crop_cols",
        "tile_sample_min_height", "tile_sample_min_width", "tile_overlap_factor_height", "tile_overlap_factor_width",
    ])]
    pub list: bool,
}

fn run_trace<T: Float>(a: &TraceArgs, ck: &Checkpoint) -> Result<()> {
    let dec = ck.load::<T>().context("loading the decoder weights")?;
    if a.list {
        for n in module_names(ck, &dec) {
            println!("{n}");
        }
        return Ok(());
    }
    let (latent, output) = (a.latent.as_ref().expect("clap"), a.output.as_ref().expect("clap"));
    let mut inputs = ck.paths();
    inputs.push(latent.clone());
    inputs.extend(a.config.clone());
    refuse_overwriting_inputs(output, &inputs)?;
    super::safety::check_extension(output, "safetensors")?;
    let mut mapped = ck.paths();
    mapped.push(latent.clone());
    super::signals::install();
    super::signals::track(&[], 0, &mapped);
    let stamps: Vec<Stamp> = ck.paths().iter().map(|p| Stamp::of(p)).collect::<movq::Result<_>>()?;
    let z: movq::Tensor<T> = read_latent(latent, a.latent_key.as_deref())?;
    movq::io::check_finite(latent, &z)?;
    let mode = mode_for(a.mode, ck, &a.tile)?;
    let t = trace(ck, &dec, &z, &mode, &a.select.options())?;
    for s in &stamps {
        s.check_unchanged()?;
    }
    let mut extra = BTreeMap::new();
    extra.insert("weights".to_string(), serde_json::json!(ck.paths()));
    extra.insert("latent".to_string(), serde_json::json!(latent));
    t.write_with(output, &extra)?;
    let bytes: usize = t.entries.iter().map(|e| std::mem::size_of_val(e.tensor.data())).sum();
    eprintln!(
        "traced {} module outputs ({:.1} MiB, {}) of decoding z {} -> {}; wrote {}",
        t.entries.len(),
        bytes as f64 / (1u64 << 20) as f64,
        T::NAME,
        z.shape(),
        t.output.shape(),
        movq::error::escape(&output.display().to_string())
    );
    Ok(())
}

pub fn trace_cmd(a: &TraceArgs) -> Result<()> {
    let ck = open_checkpoint(&a.weights, a.config.as_deref(), a.prefix.as_deref(), &a.hints)?;
    if a.precision.select()? { run_trace::<f64>(a, &ck) } else { run_trace::<f32>(a, &ck) }
}

#[derive(Args)]
pub struct GoldenArgs {
    /// Check a port's outputs instead: DIR is a reference set, OTHER_OUTPUTS a directory
    /// holding NAME.npy or NAME.safetensors (tensor `sample`) for every case NAME of the set.
    /// Every file of the set is checked against its SHA-256 first (and the weights, if given).
    #[arg(long, num_args = 2, value_names = ["DIR", "OTHER_OUTPUTS"], conflicts_with_all = [
        "config", "prefix", "resolution", "pad_mode", "temporal_compress_times", "class", "latents", "output",
        "mode", "trace", "modules", "crop_frames", "crop_rows", "crop_cols",
        "tile_sample_min_height", "tile_sample_min_width", "tile_overlap_factor_height", "tile_overlap_factor_width",
    ])]
    pub check: Option<Vec<PathBuf>>,
    /// Decoder weights in any form `movq decode` takes.
    #[arg(long, required_unless_present = "check")]
    pub weights: Option<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub hints: HintArgs,
    /// Directory of latents (.npy or .safetensors, each (b, c, t, h, w), decoded as given);
    /// each file's stem names its case.
    #[arg(long, required_unless_present = "check")]
    pub latents: Option<PathBuf>,
    /// The new directory of the reference set (refused if it exists).
    #[arg(long, required_unless_present = "check")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub tile: TileArgs,
    /// Also write each case's f64 trace (NAME.trace.safetensors).
    #[arg(long)]
    pub trace: bool,
    #[command(flatten)]
    pub select: SelectArgs,
    /// With --check: for every case where the set and the port both have a trace
    /// (NAME.trace.safetensors), name the first module whose rel-L2 exceeds this (a diagnosis;
    /// the verdict is the outputs').
    #[arg(long, default_value_t = super::compare::TRACE_DEFAULT_MAX_REL)]
    pub trace_max_rel: f64,
}

/// For each case with a trace in both the set `dir` and the port's `other`: the first module
/// over `max_rel`, or that there is none.
fn diagnose_traces(dir: &Path, m: &Manifest, other: &Path, max_rel: f64) -> Result<()> {
    let bounds = Bounds { max_abs: None, max_rel: Some(max_rel) };
    for c in &m.cases {
        let port = other.join(format!("{}.trace.safetensors", c.name));
        let Some(pin) = c.trace.as_ref().filter(|_| port.exists()) else { continue };
        let name = movq::error::escape(&c.name);
        // The set's modules in its order (a port's trace may hold more); a trace that cannot
        // be lined up is reported, not an error: the verdict is the outputs'.
        let set = TraceFile::open(&dir.join(&pin.path))?;
        // The set's trace is pinned by its SHA-256 (an error there is the set's); the port's
        // may be anything, and a broken one must not change the verdict or hide the summary.
        let port = match TraceFile::open(&port) {
            Ok(port) => port,
            Err(e) => {
                println!("{name}: trace: not compared: {}", movq::error::escape(&e.to_string()));
                continue;
            }
        };
        let cmp = match compare_traces(&set, &port) {
            Ok(cmp) => cmp,
            Err(e) => {
                println!("{name}: trace: not compared: {}", movq::error::escape(&e.to_string()));
                continue;
            }
        };
        let cut = match &cmp.cut {
            Some((Cut::B, crop)) => {
                format!(" (the port's cut to the set's crop: {})", movq::error::escape(crop))
            }
            Some((Cut::A, crop)) => {
                format!(" (the set's cut to the port's crop: {})", movq::error::escape(crop))
            }
            None => String::new(),
        };
        match cmp.first_over(&bounds) {
            Some(r) => println!(
                "{name}: trace{cut}: first module over --trace-max-rel {max_rel:e}: {} (max_abs {:.4e}, rel_l2 {:.4e})",
                movq::error::escape(&r.name),
                r.dist.max_abs,
                r.dist.rel_l2
            ),
            None => {
                println!(
                    "{name}: trace{cut}: all {} modules within --trace-max-rel {max_rel:e}",
                    cmp.rows.len()
                )
            }
        }
    }
    Ok(())
}

fn latent_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the latent directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("npy") || e.eq_ignore_ascii_case("safetensors"))
        })
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("{}: no .npy or .safetensors latents in the directory", dir.display());
    }
    Ok(v)
}

/// Returns false if a case fails the tolerance rule.
pub fn golden_cmd(a: &GoldenArgs) -> Result<bool> {
    if let Some(paths) = &a.check {
        let (dir, other) = (&paths[0], &paths[1]);
        let m = read_set(dir)?;
        println!("{}: {} cases, files match their SHA-256", dir.display(), m.cases.len());
        if let Some(w) = &a.weights {
            let ck = open_checkpoint(w, a.config.as_deref(), a.prefix.as_deref(), &a.hints)?;
            check_weights(dir, &m, &ck.paths())?;
            println!("weights match their SHA-256");
        }
        let results = check_outputs(dir, &m, other)?;
        println!(
            "{:<24} {:>11} {:>11} {:>11} {:>11}  result",
            "case", "max_abs", "tol_abs", "rel_l2", "tol_rel"
        );
        for r in &results {
            println!(
                "{:<24} {:>11.3e} {:>11.3e} {:>11.3e} {:>11.3e}  {}",
                movq::error::escape(&r.name),
                r.max_abs,
                r.tol_max_abs,
                r.rel_l2,
                r.tol_rel_l2,
                if r.pass { "PASS" } else { "FAIL" }
            );
        }
        super::safety::check_bound("--trace-max-rel", Some(a.trace_max_rel))?;
        diagnose_traces(dir, &m, other, a.trace_max_rel)?;
        let failed = results.iter().filter(|r| !r.pass).count();
        println!("{} passed, {failed} failed", results.len() - failed);
        return Ok(failed == 0);
    }
    let weights = a.weights.as_ref().expect("clap");
    let (latents, output) = (a.latents.as_ref().expect("clap"), a.output.as_ref().expect("clap"));
    let ck = open_checkpoint(weights, a.config.as_deref(), a.prefix.as_deref(), &a.hints)?;
    let files = latent_files(latents)?;
    let mode = mode_for(a.mode, &ck, &a.tile)?;
    let opts = a.select.options();
    // Ctrl-C removes the set's hidden temporary directory (write_set removes it on errors).
    super::cleanup::install();
    super::cleanup::track(vec![movq::trace::golden::temporary_dir(output)?]);
    let m = write_set(&ck, &files, output, &mode, a.trace.then_some(&opts), &mut |l| eprintln!("{l}"));
    super::cleanup::track(Vec::new());
    let m = m?;
    println!("wrote the reference set {} ({} cases, manifest.json)", output.display(), m.cases.len());
    Ok(true)
}
