//! `movq compare A B`: how far tensor A (e.g. a GPU backend's output) is from the reference B
//! (e.g. movq's f64 output). Both in float64; exit code 1 when a bound is exceeded. Two traces
//! (`movq trace`, or PyTorch forward hooks) are compared module by module.

use anyhow::{Context, Result, bail};
use clap::Args;
use movq::io::{WeightFile, read_npy};
use movq::metrics::{distance, psnr};
use movq::trace::{Bounds, Cut, TraceFile};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CompareArgs {
    /// The tensor to check (.npy or .safetensors).
    pub a: PathBuf,
    /// The reference tensor (.npy or .safetensors).
    pub b: PathBuf,
    /// Tensor name in A if it is a safetensors file (default: `sample` if present, else the first).
    #[arg(long)]
    pub key_a: Option<String>,
    /// Tensor name in B if it is a safetensors file (default: `sample` if present, else the first).
    #[arg(long)]
    pub key_b: Option<String>,
    /// Fail (exit code 1) if the relative L2 error ||A - B|| / ||B|| exceeds this.
    #[arg(long)]
    pub max_rel: Option<f64>,
    /// Fail (exit code 1) if the largest |A - B| exceeds this.
    #[arg(long)]
    pub max_abs: Option<f64>,
    /// Data range for PSNR (default: max(B) - min(B)).
    #[arg(long)]
    pub data_range: Option<f64>,
    /// Also print one line per frame (axis 2 of a rank-5 (b, c, t, h, w) tensor).
    #[arg(long)]
    pub per_frame: bool,
}

/// The per-module bound of a trace comparison when neither --max-rel nor --max-abs is given.
pub const TRACE_DEFAULT_MAX_REL: f64 = 1e-5;

/// Two traces, module by module: one line per entry of A in A's execution order, then the
/// first module over the bounds. Returns false if one is.
fn compare_traces(args: &CompareArgs, a: TraceFile, b: TraceFile) -> Result<bool> {
    if args.per_frame || args.key_a.is_some() || args.key_b.is_some() || args.data_range.is_some() {
        bail!("--per-frame, --key-a, --key-b and --data-range are for tensors, not traces");
    }
    let bounds = match (args.max_abs, args.max_rel) {
        (None, None) => Bounds { max_abs: None, max_rel: Some(TRACE_DEFAULT_MAX_REL) },
        (max_abs, max_rel) => Bounds { max_abs, max_rel },
    };
    let c = movq::trace::compare_traces(&a, &b)?;
    println!(
        "A {} ({} entries), B {} ({} entries)",
        a.path().display(),
        a.order.len(),
        b.path().display(),
        b.order.len()
    );
    match &c.cut {
        Some((Cut::B, crop)) => println!("B (uncropped) cut to A's crop: {}", movq::error::escape(crop)),
        Some((Cut::A, crop)) => println!("A (uncropped) cut to B's crop: {}", movq::error::escape(crop)),
        None => {}
    }
    let width = c.rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    println!("{:<width$} {:>22} {:>12} {:>12}  worst index", "module", "shape", "max_abs", "rel_l2");
    for r in &c.rows {
        let over = if bounds.exceeded(&r.dist) { "  over" } else { "" };
        println!(
            "{:<width$} {:>22} {:>12.4e} {:>12.4e}  {:?}{over}",
            movq::error::escape(&r.name),
            format!("{:?}", r.dims),
            r.dist.max_abs,
            r.dist.rel_l2,
            r.worst_index
        );
    }
    if !c.only_in_b.is_empty() {
        let shown: Vec<&str> = c.only_in_b.iter().take(4).map(String::as_str).collect();
        println!(
            "not compared: {} entries of B that A has not ({}{})",
            c.only_in_b.len(),
            movq::error::escape(&shown.join(", ")),
            if c.only_in_b.len() > 4 { ", ..." } else { "" }
        );
    }
    let shown = |b: Option<f64>, flag: &str| b.map(|v| format!("{flag} {v:e}")).unwrap_or_default();
    let text = [shown(bounds.max_rel, "--max-rel"), shown(bounds.max_abs, "--max-abs")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    match c.first_over(&bounds) {
        Some(r) => {
            println!(
                "FAIL: first module over the bounds ({text}): {} (max_abs {:.4e}, rel_l2 {:.4e})",
                movq::error::escape(&r.name),
                r.dist.max_abs,
                r.dist.rel_l2
            );
            Ok(false)
        }
        None => {
            println!("PASS: every module within the bounds ({text})");
            Ok(true)
        }
    }
}

/// Both files opened as traces if both are; an error if only one is.
fn as_traces(args: &CompareArgs) -> Result<Option<(TraceFile, TraceFile)>> {
    let is_st = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_st(&args.a) || !is_st(&args.b) {
        return Ok(None);
    }
    let (fa, fb) = (WeightFile::open(&args.a)?, WeightFile::open(&args.b)?);
    match (TraceFile::is_trace(&fa), TraceFile::is_trace(&fb)) {
        (true, true) => Ok(Some((TraceFile::from_file(fa)?, TraceFile::from_file(fb)?))),
        (false, false) => Ok(None),
        (ta, _) => {
            let (t, n) = if ta { (&args.a, &args.b) } else { (&args.b, &args.a) };
            bail!("{} is a trace but {} is not; compare two traces or two tensors", t.display(), n.display())
        }
    }
}

/// Refuses, from its header's dims alone, a tensor whose f64 copy would not fit in the memory
/// available (with the other operand, hence half of it).
fn check_fits(path: &Path, dims: &[usize]) -> Result<()> {
    let bytes = dims.iter().try_fold(8u128, |a, &d| a.checked_mul(d as u128)).unwrap_or(u128::MAX);
    let avail = movq::model::memory::available_bytes().unwrap_or(u64::MAX) as u128;
    if bytes > avail / 2 {
        bail!(
            "{}: a tensor of shape {dims:?} needs {} MiB as f64, more than half the {} MiB of memory available",
            path.display(),
            bytes >> 20,
            avail >> 20
        );
    }
    Ok(())
}

/// (dims, values) of a .npy file or a safetensors tensor, as f64; sizes checked from the header
/// before the data is read.
fn read_any(path: &Path, key: Option<&str>) -> Result<(Vec<usize>, Vec<f64>)> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        check_fits(path, &movq::io::npy_shape(path)?)?;
        return Ok(read_npy::<f64>(path)?);
    }
    let file = WeightFile::open(path)?;
    let name = match key {
        Some(k) => k.to_string(),
        None if file.info("sample").is_some() => "sample".to_string(),
        // The only tensor: with several, which one is meant is not for movq to guess.
        None => match file.names().take(2).collect::<Vec<_>>().as_slice() {
            [one] => one.to_string(),
            [] => bail!("{} holds no tensor", path.display()),
            _ => bail!(
                "{} holds several tensors and no `sample`; name one with --key-a / --key-b",
                path.display()
            ),
        },
    };
    if let Some(info) = file.info(&name) {
        check_fits(path, &info.shape)?;
    }
    Ok(file.read::<f64>(&name)?)
}

/// Prints the comparison; returns false if a bound is exceeded.
pub fn compare(args: &CompareArgs) -> Result<bool> {
    super::safety::check_bound("--max-rel", args.max_rel)?;
    super::safety::check_bound("--max-abs", args.max_abs)?;
    if let Some(r) = args.data_range
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--data-range {r} is not a finite number > 0 (PSNR divides by it)");
    }
    if let Some((a, b)) = as_traces(args)? {
        return compare_traces(args, a, b);
    }
    let (da, a) =
        read_any(&args.a, args.key_a.as_deref()).with_context(|| format!("reading {}", args.a.display()))?;
    let (db, b) =
        read_any(&args.b, args.key_b.as_deref()).with_context(|| format!("reading {}", args.b.display()))?;
    if da != db {
        bail!("shapes differ: A ({}) {da:?} vs B ({}) {db:?}", args.a.display(), args.b.display());
    }
    if a.is_empty() {
        // Equal shapes with a zero extent: nothing differs, and no error figure is defined.
        println!("shape       {da:?}");
        println!("(no values: both tensors are empty)");
        return Ok(true);
    }
    let (lo, hi) = b.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let range = args.data_range.unwrap_or(if hi > lo { hi - lo } else { 1.0 });
    let f = distance(&a, &b);
    println!("shape       {da:?}");
    println!(
        "max_abs     {:.6e} at {:?} (A {:.9e}, B {:.9e})",
        f.max_abs,
        movq::tensor::unravel(f.worst, &da),
        a.get(f.worst).copied().unwrap_or(f64::NAN),
        b.get(f.worst).copied().unwrap_or(f64::NAN)
    );
    println!("rel_l2      {:.6e}", f.rel_l2);
    println!("psnr        {:.3} dB (data range {range})", psnr(f.mse, range));
    if args.per_frame {
        if da.len() != 5 {
            bail!("--per-frame needs a rank-5 (b, c, t, h, w) tensor, got {da:?}");
        }
        let (n, c, t, plane) = (da[0], da[1], da[2], da[3] * da[4]);
        println!("{:>6} {:>13} {:>13} {:>10}", "frame", "max_abs", "rel_l2", "psnr_db");
        for ti in 0..t {
            let (mut fa, mut fb) = (Vec::new(), Vec::new());
            for nc in 0..n * c {
                let r = (nc * t + ti) * plane..(nc * t + ti + 1) * plane;
                fa.extend_from_slice(&a[r.clone()]);
                fb.extend_from_slice(&b[r]);
            }
            let g = distance(&fa, &fb);
            println!("{ti:>6} {:>13.6e} {:>13.6e} {:>10.3}", g.max_abs, g.rel_l2, psnr(g.mse, range));
        }
    }
    let mut ok = true;
    if let Some(m) = args.max_rel
        && (f.rel_l2 > m || f.rel_l2.is_nan())
    {
        println!("FAIL: rel_l2 {:.6e} > --max-rel {m:e}", f.rel_l2);
        ok = false;
    }
    if let Some(m) = args.max_abs
        && (f.max_abs > m || f.max_abs.is_nan())
    {
        println!("FAIL: max_abs {:.6e} > --max-abs {m:e}", f.max_abs);
        ok = false;
    }
    if ok && (args.max_rel.is_some() || args.max_abs.is_some()) {
        println!("PASS");
    }
    Ok(ok)
}
