//! The `movq` command line: decode latents, verify against golden references.
//!
//! Exit codes: 0 success; 1 a verification or comparison failed; 2 usage or input error.

mod cli;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use cli::decode::{DecodeArgs, Precision, peak_rss_mib};
use movq::io::{read_latent, write_safetensors};
use movq::verify::{CaseOutcome, golden_files, verify_file_rows};
use movq::{Checkpoint, Decoder, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "movq",
    version,
    about = "CPU inference for CogVideo's MoVQ 3D video decoders (MOVQDecoder3D, NewDecoder3D) and the CogVideoX VAE decoder",
    after_help = "Start with `movq demo`. Exit codes: 0 success; 1 a comparison or verification failed; \
                  2 usage or input error (one line on stderr with the cause); 130 interrupted."
)]
struct Cli {
    /// Worker threads (default: all cores; at most 4x the cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Convolution algorithm for 3x3 convs: winograd (F(2x2, 3x3), the default), im2col (the
    /// direct sum, rounding closest to PyTorch) or winograd4 (F(4x4, 3x3), fewer multiplies,
    /// larger rounding error). Also set by MOVQ_CONV.
    #[arg(long, global = true, value_enum)]
    conv: Option<ConvChoice>,
    /// Print the kernels in use (instruction set, convolution algorithm, threads) on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
    /// In chunked and tiled decodes of more than one decoder call (frame batch or tile),
    /// recompute each conv's Winograd weight transforms per call instead of keeping them for
    /// the later calls: less memory (16/9 of the 3x3 conv weights), about 1-2 % more time. A
    /// decode of one call keeps none either way.
    #[arg(long, global = true)]
    no_weight_cache: bool,
    /// Keep memory-mapped weights resident for the whole run. By default each conv layer
    /// drops its mapped weight pages from the process after use (the next use maps them again
    /// from the page cache), so the peak RSS holds about one layer's weights, not all.
    #[arg(long, global = true)]
    keep_weights_resident: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ConvChoice {
    Winograd,
    Im2col,
    Winograd4,
}

#[derive(Subcommand)]
enum Command {
    /// Decode the bundled demo latent with the bundled small decoder (nothing to download):
    /// writes an animated PNG and PNG frames, prints the PSNR against the bundled ground truth.
    Demo(cli::demo::DemoArgs),
    /// Decode a latent video z (b, c, t, h, w) into frames: a tensor (.npy, .safetensors), a video
    /// (.y4m, .apng) or a directory of PNG frames, written as they are decoded.
    Decode(DecodeArgs),
    /// Write a weights file of deterministic random weights for a config (for benchmarks and
    /// tests), and optionally a random latent.
    RandomWeights {
        /// Decoder config JSON.
        #[arg(long)]
        config: PathBuf,
        /// Output weights (.safetensors); the config is stored in its metadata.
        #[arg(long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Name the tensors as a diffusers CogVideoX VAE checkpoint (`decoder.mid_block...`).
        #[arg(long)]
        diffusers_names: bool,
        /// Also write a random latent of this shape, e.g. 1,256,4,16,16 (values ~ N(0, 1)).
        #[arg(long, value_delimiter = ',', requires = "latent_out")]
        latent_shape: Option<Vec<usize>>,
        /// Where to write the random latent (.npy).
        #[arg(long, requires = "latent_shape")]
        latent_out: Option<PathBuf>,
    },
    /// Time decodes of a latent (median of --repeat runs) and report GFLOP/s, peak RSS and the
    /// kernels used; or, with --peak, measure the machine's f32 FMA peak (and bf16
    /// dot-product peak where the CPU has one).
    Bench(BenchArgs),
    /// Print what a checkpoint holds (tensor and parameter counts, dtypes, naming) and the
    /// decoder config movq uses for it, as JSON: from --config, the model folder's config.json,
    /// the safetensors metadata, or else inferred from the tensor names and shapes, listing
    /// what the tensors cannot tell.
    Inspect(cli::inspect::InspectArgs),
    /// Compare tensor A with reference B (.npy or .safetensors): shapes, max-abs error and where,
    /// relative L2, PSNR, optionally per frame; exit code 1 if --max-rel / --max-abs is exceeded.
    Compare(cli::compare::CompareArgs),
    /// Rewrite a weight file (a PyTorch .pt / .pth / .bin / .ckpt checkpoint, read without
    /// executing anything) as safetensors, every tensor bit for bit in its stored dtype.
    Convert(cli::convert::ConvertArgs),
    /// Decode a latent and write the output of every module (or of the modules --modules
    /// selects), named by module path in the checkpoint's naming, as safetensors; compare two
    /// traces with `movq compare`.
    Trace(cli::trace::TraceArgs),
    /// Write a reference set for ports (f64 outputs, optionally traces, latents, a manifest of
    /// SHA-256s) from weights and a directory of latents; or with --check DIR OTHER_OUTPUTS,
    /// judge a port's outputs against a set with the golden tolerance rule (exit code 1 if one
    /// fails, 2 if a file of the set changed).
    Golden(cli::trace::GoldenArgs),
    /// Run golden reference files (or directories of them) in f32 and f64 and check them
    /// against the tolerance rule; exit code 1 if any case fails, else 2 if a file could not be
    /// verified (not a golden case, or a class movq does not run).
    Verify {
        /// Golden .safetensors files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also run each case with bf16 products in the convolutions (as `--precision
        /// bf16-emulated`) and report its error and 8-bit video PSNR (row "bf16e", not judged).
        #[arg(long)]
        bf16_emulated: bool,
        /// Also run each case in the bf16 mode (as `--precision bf16`: the CPU's bf16 dot
        /// products; ARM FEAT_BF16, x86 avx512_bf16) and report its error and PSNR (row
        /// "bf16", not judged).
        #[arg(long)]
        bf16: bool,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Measure the f32 FMA peak (widest vectors the CPU runs well) and, where the CPU has bf16 dot
    /// products, their peak, on 1 thread and on all threads, instead of decoding.
    #[arg(long, conflicts_with_all = ["weights", "config", "latent", "latent_key", "prefix", "mode", "repeat", "precision", "output", "tile_sample_min_height", "tile_sample_min_width", "tile_overlap_factor_height", "tile_overlap_factor_width"])]
    peak: bool,
    /// Weights in any form `movq decode` takes (file, shard index, model folder).
    #[arg(long, required_unless_present = "peak")]
    weights: Option<PathBuf>,
    /// Config JSON (default: found beside or inside the weights, as for decode).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, required_unless_present = "peak")]
    latent: Option<PathBuf>,
    #[arg(long)]
    latent_key: Option<String>,
    /// Key prefix of the decoder tensors (default: detected).
    #[arg(long)]
    prefix: Option<String>,
    /// Decoding mode (default: chunked for CogVideoX models, whole otherwise).
    #[arg(long, value_enum)]
    mode: Option<cli::decode::Mode>,
    #[command(flatten)]
    tile: cli::inspect::TileArgs,
    /// Number of timed decodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Also write the last decode's output (.safetensors, key `sample`).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// The kernels this process uses, as `movq bench` and `--verbose` report them.
/// `movq bench --peak`: per vector set, f32 FMA GFLOP/s on one thread and on every worker
/// thread at once; bf16 dot products where avx512_bf16 exists. `peak_gflops` / `peak_1t_gflops`
/// are the fastest f32 set's (what "% of peak" divides by).
fn peak_report() -> serde_json::Value {
    use movq::kernels::peak::{bf16_gflops, fma_gflops};
    let mut sets = serde_json::Map::new();
    let (mut best_1t, mut best_all, mut best_name) = (0.0f64, 0.0f64, "none");
    let all_sets = movq::kernels::simd::Vector::all_available();
    // Lane1 (plain f32) is measured only where no vector set exists.
    let vector_sets = all_sets.len() > 1;
    for v in all_sets {
        if vector_sets && matches!(v, movq::kernels::simd::Vector::Lane1) {
            continue;
        }
        let one = fma_gflops(v, 1.0);
        let all: f64 = rayon::broadcast(|_| fma_gflops(v, 1.0)).iter().sum();
        sets.insert(v.name().to_string(), serde_json::json!({"peak_1t_gflops": one, "peak_gflops": all}));
        if all > best_all {
            (best_1t, best_all, best_name) = (one, all, v.name());
        }
    }
    // With the self-check of movq's kernel for the instruction (the bf16 mode needs it).
    let kernels = movq::kernels::bf16_panels::hardware_kernels();
    let bf16 = bf16_gflops(1.0).map(|one| {
        let all: f64 = rayon::broadcast(|_| bf16_gflops(1.0).unwrap_or(0.0)).iter().sum();
        let checks: serde_json::Map<_, _> =
            kernels.iter().map(|(k, ok)| (k.name().to_string(), serde_json::json!(ok))).collect();
        serde_json::json!({"peak_1t_gflops": one, "peak_gflops": all, "kernel_self_check": checks})
    });
    serde_json::json!({
        "peak_1t_gflops": best_1t, "peak_gflops": best_all, "peak_isa": best_name,
        "threads": rayon::current_num_threads(), "f32_fma": sets, "bf16_dot": bf16,
    })
}

fn kernels_used() -> serde_json::Value {
    let conv = movq::kernels::params::conv_algo().name();
    // The bf16 dot-product kernel, in the bf16 mode only (the twin under MOVQ_ISA=scalar).
    let bf16 = movq::kernels::params::bf16_native()
        .then(|| movq::kernels::bf16_panels::Bf16Dot::detect().map(|d| d.name()))
        .flatten();
    serde_json::json!({"isa": movq::kernels::isa().name(), "conv": conv, "bf16_dot": bf16,
        "threads": rayon::current_num_threads(), "freed_memory": movq::tensor::heap::freed_memory().map(|f| f.name())})
}

fn bench<T: movq::kernels::Float>(a: &BenchArgs, ck: &Checkpoint, latent: &Path) -> Result<()> {
    if let Some(out) = &a.output {
        let mut inputs: Vec<PathBuf> = ck.paths();
        inputs.push(latent.to_path_buf());
        inputs.extend(a.config.clone());
        cli::safety::check_output_file(out, &inputs, "safetensors")?;
    }
    let decoder = ck.load::<T>().context("loading the decoder weights")?;
    let mode = cli::inspect::mode_for(a.mode, ck, &a.tile)?;
    let z: Tensor<T> = read_latent(latent, a.latent_key.as_deref())?;
    let flop = decoder.decode_flops(z.shape(), &mode)? as f64;
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..a.repeat.max(1) {
        let t0 = Instant::now();
        let y = decoder.decode(&z, &mode)?;
        runs.push(t0.elapsed().as_secs_f64());
        eprintln!("decode {} -> {}: {:.2} s", z.shape(), y.shape(), runs.last().unwrap());
        last = Some(y);
    }
    let y = last.expect("repeat >= 1");
    if let Some(out) = &a.output {
        write_safetensors(out, "sample", &y, &BTreeMap::new())?;
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "engine": "movq",
            "precision": movq::kernels::bf16::precision_name::<T>(),
            "threads": rayon::current_num_threads(),
            "kernels": kernels_used(),
            "mode": format!("{mode:?}"),
            "input_shape": z.shape().dims(),
            "output_shape": y.shape().dims(),
            "runs_s": runs,
            "median_s": median,
            "flop": flop,
            "gflops": flop / median / 1e9,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

fn verify(paths: &[PathBuf], rows: &[&'static str]) -> Result<bool> {
    if rows.contains(&"bf16") {
        movq::ops::conv::bf16_dot_available::<f32>("verify --bf16")?;
    }
    let mut files = Vec::new();
    for p in paths {
        files.extend(golden_files(p)?);
    }
    if files.is_empty() {
        bail!("no .safetensors files found in {paths:?}");
    }
    println!(
        "{:<36} {:<14} {:<5} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7}  result",
        "case", "class", "prec", "max_abs", "rel_l2", "torch_abs", "torch_rel", "ratio", "secs"
    );
    let (mut passed, mut failed, mut skipped, mut unreadable) = (0, 0, 0, 0);
    for f in &files {
        match verify_file_rows(f, rows) {
            Ok(CaseOutcome::Ran { name, class, torch_f32, runs }) => {
                for r in &runs {
                    // ratio: how far from the f64 reference relative to PyTorch's own f32 run.
                    let ratio =
                        if r.precision == "f32" { r.rel_l2 / torch_f32.1.max(1e-30) } else { f64::NAN };
                    println!(
                        "{:<36} {:<14} {:<5} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>7.2} {:>7.2}  {}",
                        movq::error::escape(&name),
                        class,
                        r.precision,
                        r.max_abs,
                        r.rel_l2,
                        torch_f32.0,
                        torch_f32.1,
                        ratio,
                        r.seconds,
                        match (r.precision, r.pass) {
                            ("bf16e" | "bf16", _) => match r.psnr8 {
                                Some(db) => format!("measured; 8-bit video PSNR {db:.2} dB"),
                                None => "measured".to_string(),
                            },
                            (_, true) => "PASS".to_string(),
                            (_, false) => "FAIL".to_string(),
                        }
                    );
                    if matches!(r.precision, "bf16e" | "bf16") {
                        continue;
                    }
                    if r.pass { passed += 1 } else { failed += 1 }
                }
            }
            Ok(CaseOutcome::Skipped { name, class, reason }) => {
                let (name, reason) = (movq::error::escape(&name), movq::error::escape(&reason));
                println!("{name:<36} {class:<14} SKIPPED: {reason}");
                skipped += 1;
            }
            Err(e) => {
                println!("{:<36} ERROR: {}", f.display(), movq::error::escape(&e.to_string()));
                unreadable += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped, {unreadable} not golden cases");
    // A case that did not run is not a pass: exit 2 (input error) unless one failed (exit 1).
    if failed == 0 && skipped + unreadable > 0 {
        bail!(
            "{} of {} files could not be verified (SKIPPED / ERROR above)",
            skipped + unreadable,
            files.len()
        );
    }
    Ok(failed == 0)
}

fn run(cli: Cli) -> Result<ExitCode> {
    cli::safety::check_env()?;
    movq::tensor::heap::keep_freed_memory()?;
    cli::signals::install();
    if let Some(n) = cli::safety::thread_count(cli.threads)? {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("configuring the thread pool")?;
    }
    if let Some(c) = cli.conv {
        use movq::kernels::params::{ConvAlgo, set_conv_algo};
        set_conv_algo(match c {
            ConvChoice::Winograd => ConvAlgo::Winograd,
            ConvChoice::Im2col => ConvAlgo::Im2col,
            ConvChoice::Winograd4 => ConvAlgo::Winograd4,
        });
    }
    if cli.no_weight_cache {
        movq::kernels::params::set_weight_cache(false);
    }
    if cli.keep_weights_resident {
        movq::kernels::params::set_release_weights(false);
    }
    if cli.verbose {
        // After the precision switches (set by `select` below) the bf16 kernel shows too.
        let precision = match &cli.command {
            Command::Decode(a) => Some(a.precision),
            Command::Bench(a) if !a.peak => Some(a.precision),
            _ => None,
        };
        if let Some(p) = precision {
            p.select()?;
        }
        eprintln!("movq {}: kernels {}", env!("CARGO_PKG_VERSION"), kernels_used());
    }
    match cli.command {
        Command::Decode(args) => {
            cli::decode::decode(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RandomWeights { config, output, seed, diffusers_names, latent_shape, latent_out } => {
            let cfg = movq::checkpoint::read_config(&config)?.config;
            let plan = movq::checkpoint::plan_from(&cfg, &config.display().to_string())?;
            // Everything is checked and made before anything is written.
            let latent = cli::safety::random_latent(
                &config,
                &output,
                latent_shape.as_deref(),
                latent_out.as_deref(),
                seed,
            )?;
            if let Some((shape, _)) = &latent {
                plan.output_shape(movq::tensor::Shape::from_dims(shape)?).context("--latent-shape")?;
            }
            cli::safety::check_random_weights_fit(&plan)?;
            let budget = movq::model::memory::available_bytes().unwrap_or(u64::MAX);
            let loader = movq::io::Loader::random_with_budget(seed, budget);
            Decoder::<f32>::load(&loader.root(), &plan)?;
            let mut made = loader.take_random();
            if diffusers_names {
                let levels = plan.levels.len();
                for (name, _, _) in made.iter_mut() {
                    *name = format!("decoder.{}", movq::checkpoint::diffusers::diffusers_key(name, levels));
                }
            }
            let entries: Vec<(&str, &[usize], &[f32])> =
                made.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
            let mut meta = BTreeMap::new();
            meta.insert("config".to_string(), serde_json::to_string(&cfg)?);
            movq::io::write_tensors(&output, &entries, &meta)?;
            let params: usize = made.iter().map(|(_, _, d)| d.len()).sum();
            let shown = movq::error::escape(&output.display().to_string()).into_owned();
            eprintln!("wrote {} tensors, {} parameters to {shown}", made.len(), params);
            if let (Some((shape, z)), Some(path)) = (latent, latent_out) {
                movq::io::write_npy(&path, &shape, &z)?;
                eprintln!("wrote latent {:?} to {}", shape, movq::error::escape(&path.display().to_string()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(a) if a.peak => {
            println!("{}", peak_report());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(a) => {
            let weights = a.weights.as_deref().expect("clap requires --weights");
            let latent = a.latent.as_deref().expect("clap requires --latent");
            let hints = cli::inspect::HintArgs::default();
            let ck =
                cli::inspect::open_checkpoint(weights, a.config.as_deref(), a.prefix.as_deref(), &hints)?;
            if a.precision.select()? {
                bench::<f64>(&a, &ck, latent)?
            } else {
                bench::<f32>(&a, &ck, latent)?
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            cli::demo::demo(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => {
            cli::inspect::inspect(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert(args) => cli::convert::convert(&args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => {
            Ok(if cli::compare::compare(&args)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Trace(args) => {
            cli::trace::trace_cmd(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Golden(args) => {
            Ok(if cli::trace::golden_cmd(&args)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Verify { paths, bf16_emulated, bf16 } => {
            let rows: Vec<&'static str> = [(bf16_emulated, "bf16e"), (bf16, "bf16")]
                .into_iter()
                .filter_map(|(on, r)| on.then_some(r))
                .collect();
            Ok(if verify(&paths, &rows)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand_name().unwrap_or_default().to_string();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = match hint(&e).filter(|h| takes_flags(&sub, h)) {
                Some(h) => format!("{e:#}; {h}"),
                None => format!("{e:#}"),
            };
            eprintln!("error: {}", movq::error::escape(&msg));
            ExitCode::from(2)
        }
    }
}

/// Whether subcommand `sub` (or the global options) takes every `--flag` that hint `h` names:
/// a hint is only shown where its advice can be followed (`bench` has no --allow-nonfinite).
fn takes_flags(sub: &str, h: &str) -> bool {
    let cmd = Cli::command();
    let Some(sc) = cmd.find_subcommand(sub) else { return false };
    let has = |flag: &str| sc.get_arguments().chain(cmd.get_arguments()).any(|a| a.get_long() == Some(flag));
    h.split(|c: char| c.is_whitespace() || ",()".contains(c)).filter_map(|w| w.strip_prefix("--")).all(has)
}

/// What the user can do about a library error with this command line's flags (the library's
/// messages state facts only).
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let m = e.chain().find_map(|c| c.downcast_ref::<movq::Error>())?;
    Some(match m {
        movq::Error::NonFiniteLatent { .. } => "pass --allow-nonfinite to decode anyway",
        movq::Error::OverMemoryBudget { .. } => {
            "try --mode tiled (CogVideoX) or a smaller latent, --max-memory to set the budget, or --force to try anyway"
        }
        movq::Error::InvalidConfig(s) if s.contains("no config beside or inside the weights") => {
            "pass --config (or --resolution, --pad-mode, --temporal-compress-times for what the tensors cannot tell)"
        }
        movq::Error::InvalidConfig(s) if s.contains("cannot be placed") => {
            "pass the checkpoint's --resolution"
        }
        movq::Error::InvalidConfig(s) if s.contains("no decoder config in the safetensors metadata") => {
            "pass --config"
        }
        movq::Error::Unsupported(s) if s.contains("chunked decoding needs") => "use --mode whole",
        movq::Error::Unsupported(s) if s.starts_with("verify --bf16:") && s.contains("bf16-emulated") => {
            "use --bf16-emulated for the bf16 rounding on this CPU"
        }
        movq::Error::Unsupported(s) if s.contains("the bf16 mode") && s.contains("bf16-emulated") => {
            "use --precision bf16-emulated for the bf16 rounding on this CPU"
        }
        movq::Error::Unsupported(s) if s.contains("the bf16 mode runs 3x3 convolutions") => {
            "use --conv winograd (the default) for the bf16 mode"
        }
        movq::Error::Unsupported(s) if s.contains("bf16 products with the F(4x4, 3x3)") => {
            "use --conv winograd or im2col with bf16 products"
        }
        movq::Error::OutputKind { reason, .. } if reason.contains("animated PNG only when asked") => {
            "add --apng for an animated PNG"
        }
        movq::Error::UnknownClass(_) => {
            "pass --class MOVQDecoder3D or --class ContextParallelDecoder3D, or a --config with \"class\""
        }
        movq::Error::NonFinite { .. } => "pass --allow-nonfinite-output to write the output anyway",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (argument ids named by `conflicts_with_all`,
    /// `required_unless_present` and the like exist), which release builds skip.
    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Hints are shown only where the subcommand takes the flags they name.
    #[test]
    fn hints_name_only_flags_the_command_takes() {
        assert!(takes_flags("decode", "pass --allow-nonfinite-output to write the output anyway"));
        assert!(!takes_flags("bench", "pass --allow-nonfinite-output to write the output anyway"));
        assert!(takes_flags(
            "decode",
            "try --mode tiled (CogVideoX) or a smaller latent, --max-memory to set the budget, or --force to try anyway"
        ));
    }
}
