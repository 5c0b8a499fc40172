//! Golden-case verification: run a reference case of `../shared/golden` through the engine in
//! f32 and f64 and judge it with the golden README's tolerance rule.
//!
//! f32 passes when `rel_l2 <= 4 * max(torch_rel_l2, 1e-7)` and
//! `max_abs <= 4 * max(torch_max_abs, 1e-7 * max(1, |ref|_max))`, where the torch figures are
//! PyTorch's own float32 distance to the float64 reference; f64 passes when `rel_l2 < 1e-12`.

use crate::checkpoint::{Checkpoint, OpenOptions};
use crate::error::{Error, Result, escape};
use crate::io::{Loader, WeightFile};
use crate::kernels::Float;
use crate::metrics::{Distance, distance};
use crate::model::attention::AttnBlock2d;
use crate::model::config::{Act, NORM_EPS, NORM_GROUPS, PadMode};
use crate::model::config_keys::{Kind, check_keys};
use crate::model::conv::{CausalConv3d, ConvInput, Kernel3, TimeStep, causal_params_strided};
use crate::model::plan::{ModuleOptions, UpsamplePlan};
use crate::model::resnet::ResnetBlock3d;
use crate::model::schedule::FRAME_BATCH;
use crate::model::spatial_norm::SpatialNorm3d;
use crate::model::trace::Tap;
use crate::model::upsample::Upsample3d;
use crate::model::{DecodeMode, FrameRule};
use crate::tensor::{Shape, Tensor};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

/// The classes this build runs.
pub const SUPPORTED_CLASSES: &[&str] = &[
    "MOVQDecoder3D",
    "NewDecoder3D",
    "CausalConv3d",
    "SpatialNorm3D",
    "ResnetBlock3D",
    "AttnBlock2D",
    "Upsample3D",
    "AutoencoderKLCogVideoX",
];

/// The float64 rel-L2 bound.
pub const F64_REL_L2: f64 = 1e-12;

/// The golden tolerance rule's (max_abs, rel_l2) bounds for a float32 implementation, from the
/// original float32 run's distance to the float64 reference (`ref_max_abs`, `ref_rel_l2`) and
/// the reference output's largest magnitude: 4x the original's error, with floors of 1e-7
/// (relative) and 1e-7 * max(1, absmax) (absolute) for cases where float32 is exact.
pub fn f32_tolerance(ref_max_abs: f64, ref_rel_l2: f64, absmax: f64) -> (f64, f64) {
    (4.0 * ref_max_abs.max(1e-7 * absmax.max(1.0)), 4.0 * ref_rel_l2.max(1e-7))
}

/// One precision's result on one case.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub precision: &'static str,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub tol_max_abs: f64,
    pub tol_rel_l2: f64,
    pub seconds: f64,
    pub pass: bool,
    /// PSNR in dB of the output as 8-bit video (both quantised like the video writers) against
    /// the f64 reference; decoder classes only (module cases have no pixel range).
    pub psnr8: Option<f64>,
}

/// What happened to one golden file.
#[derive(Clone, Debug)]
pub enum CaseOutcome {
    Ran {
        name: String,
        class: String,
        /// PyTorch float32's own (max_abs, rel_l2) against the float64 reference.
        torch_f32: (f64, f64),
        runs: Vec<RunResult>,
    },
    Skipped {
        name: String,
        class: String,
        reason: String,
    },
}

struct Case {
    name: String,
    class: String,
    config: Value,
    meta: Value,
}

/// The `format` of the golden files movq reads (shared/golden/README.md).
const GOLDEN_FORMAT: &str = "movq-golden-v1";

fn read_case(file: &WeightFile) -> Result<Case> {
    let bad = |m: &str| Error::invalid_file(file.path(), m.to_string());
    let meta =
        file.metadata().get("meta").ok_or_else(|| bad("no `meta` key in __metadata__: not a golden file"))?;
    let meta =
        crate::io::json::parse_strict(meta).map_err(|e| bad(&format!("metadata `meta` is not JSON: {e}")))?;
    match meta.get("format").and_then(Value::as_str) {
        Some(GOLDEN_FORMAT) => {}
        other => {
            let got = other.map_or("missing".to_string(), |f| format!("{f:?}"));
            return Err(bad(&format!("metadata format {got}; movq reads {GOLDEN_FORMAT:?}")));
        }
    }
    let class =
        meta.get("class").and_then(Value::as_str).ok_or_else(|| bad("metadata has no `class`"))?.to_string();
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
    let config = meta.get("config").cloned().unwrap_or(Value::Null);
    check_component_config(&class, &config).map_err(|e| bad(&e.to_string()))?;
    Ok(Case { name, class, config, meta })
}

fn input<T: Float>(file: &WeightFile, name: &str) -> Result<Tensor<T>> {
    let (dims, data) = file.read::<T>(name)?;
    Tensor::from_vec(Shape::from_dims(&dims)?, data)
}

fn cfg_usize(cfg: &Value, key: &str) -> Result<usize> {
    cfg.get(key)
        .and_then(|v| v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()))
        .map(|v| v as usize)
        .ok_or_else(|| Error::InvalidConfig(format!("golden config has no integer `{key}`")))
}

/// `kernel_size` as upstream's `cast_tuple` reads it: an int (a cube) or a (kt, kh, kw) list.
fn cfg_kernel(cfg: &Value) -> Result<Kernel3> {
    let bad = || Error::InvalidConfig("golden config `kernel_size` is not an integer or 3 integers".into());
    match cfg.get("kernel_size") {
        Some(Value::Array(a)) => {
            let k: Vec<usize> =
                a.iter().map(|v| v.as_u64().map(|v| v as usize).ok_or_else(bad)).collect::<Result<_>>()?;
            match k[..] {
                [t, h, w] => Ok(Kernel3 { t, h, w }),
                _ => Err(bad()),
            }
        }
        Some(v) => v.as_u64().map(|k| Kernel3::cube(k as usize)).ok_or_else(bad),
        None => Err(bad()),
    }
}

/// A key the config may omit; its type was checked by [`check_component_config`].
fn cfg_bool(cfg: &Value, key: &str, default: bool) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The config keys of each component class and their JSON types (the fixture script writes
/// the constructor's arguments). An unknown key is refused, not ignored: it would be an option
/// movq does not apply; values movq implements only one way are checked here.
fn check_component_config(class: &str, c: &Value) -> Result<()> {
    use Kind::*;
    let keys: &[(&str, Kind)] = match class {
        "CausalConv3d" => &[
            ("chan_in", UInt),
            ("chan_out", UInt),
            ("kernel_size", UIntOrUIntList),
            ("pad_mode", Str),
            ("stride", UInt),
            ("dilation", UInt),
        ],
        "SpatialNorm3D" => &[
            ("f_channels", UInt),
            ("zq_channels", UInt),
            ("add_conv", Bool),
            ("pad_mode", Str),
            ("num_groups", UInt),
            ("eps", Number),
            ("affine", Bool),
            ("freeze_norm_layer", Bool),
            ("norm_layer", Str),
        ],
        "ResnetBlock3D" => &[
            ("in_channels", UInt),
            ("out_channels", UIntOrNull),
            ("conv_shortcut", Bool),
            ("dropout", Number),
            ("temb_channels", UInt),
            ("zq_ch", UInt),
            ("add_conv", Bool),
            ("pad_mode", Str),
        ],
        "AttnBlock2D" => &[("in_channels", UInt), ("zq_ch", UInt), ("add_conv", Bool), ("norm", Str)],
        "Upsample3D" => &[("in_channels", UInt), ("with_conv", Bool), ("compress_time", Bool)],
        // The decoders' configs are checked by the checkpoint reader.
        _ => return Ok(()),
    };
    check_keys(c, keys, false, &format!("golden {class} config"))?;
    let unsupported = |what: String| Err(Error::Unsupported(format!("golden {class} config: {what}")));
    // The norm every module builds: GroupNorm(32, eps 1e-6, affine) (spec, SpatialNorm3D).
    if c.get("eps").and_then(Value::as_f64).is_some_and(|e| e != NORM_EPS) {
        return unsupported(format!("eps {} (movq's norms use {NORM_EPS})", c["eps"]));
    }
    if c.get("affine") == Some(&Value::Bool(false)) {
        return unsupported("affine false (movq's group norms are affine)".into());
    }
    if let Some(n) = c.get("norm_layer").and_then(Value::as_str).filter(|&n| n != "GroupNorm") {
        return unsupported(format!("norm_layer `{}` (movq implements GroupNorm)", escape(n)));
    }
    if let Some(n) = c.get("norm").and_then(Value::as_str).filter(|&n| n != ATTN_NORM) {
        return unsupported(format!("norm `{}` (movq implements `{ATTN_NORM}`)", escape(n)));
    }
    Ok(())
}

/// AttnBlock2D's norm as the fixture script describes it.
const ATTN_NORM: &str = "SpatialNorm3D(in_channels, zq_ch, add_conv, GroupNorm(32, eps=1e-6))";

fn cfg_pad(cfg: &Value) -> Result<PadMode> {
    match cfg.get("pad_mode") {
        None => Ok(PadMode::Constant),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| Error::InvalidConfig(format!("pad_mode: {e}")))
        }
    }
}

/// The norm options of a component case: the decoders' defaults unless the config says.
fn module_options(c: &Value, zq_key: &str) -> Result<ModuleOptions> {
    if c.get("num_groups").and_then(Value::as_u64).is_some_and(|g| g != NORM_GROUPS as u64) {
        return Err(Error::Unsupported(format!("SpatialNorm3D with num_groups != {NORM_GROUPS}")));
    }
    Ok(ModuleOptions {
        zq_ch: cfg_usize(c, zq_key)?,
        add_conv: cfg_bool(c, "add_conv", false),
        pad_mode: cfg_pad(c)?,
        rule: FrameRule::Movq,
        norm_groups: NORM_GROUPS,
        norm_eps: NORM_EPS,
        act: Act::Silu,
    })
}

/// Runs the case's module in `T` and returns its output in f64.
fn run<T: Float>(path: &Path, file: &WeightFile, case: &Case) -> Result<Vec<f64>> {
    let ignore = |n: &str| n.starts_with("input.") || n.starts_with("output");
    let loader = Loader::new(file, "").with_ignore(ignore);
    let vp = loader.root();
    let c = &case.config;
    let out: Tensor<T> = match case.class.as_str() {
        "MOVQDecoder3D" | "NewDecoder3D" | "AutoencoderKLCogVideoX" => {
            let opts = OpenOptions { ignore: &["input.", "output"], ..Default::default() };
            let dec = Checkpoint::open(path, &opts)?.load::<T>()?;
            let mode = if case.class == "AutoencoderKLCogVideoX" {
                cogvideox_mode(case)?
            } else {
                DecodeMode::Whole
            };
            dec.decode(&input(file, "input.z")?, &mode)?
        }
        "CausalConv3d" => {
            let p = causal_params_strided(
                cfg_usize(c, "chan_in")?,
                cfg_usize(c, "chan_out")?,
                cfg_kernel(c)?,
                cfg_pad(c)?,
                TimeStep {
                    stride: cfg_usize(c, "stride").unwrap_or(1),
                    dilation: cfg_usize(c, "dilation").unwrap_or(1),
                },
            )?;
            let m = CausalConv3d::<T>::load_params(&vp, p)?;
            loader.finish()?;
            m.forward(ConvInput::plain(&input(file, "input.x")?), None)?
        }
        "SpatialNorm3D" => {
            let m = SpatialNorm3d::<T>::load(
                &vp,
                cfg_usize(c, "f_channels")?,
                &module_options(c, "zq_channels")?,
            )?;
            loader.finish()?;
            m.forward(input(file, "input.f")?, &input(file, "input.zq")?)?
        }
        "ResnetBlock3D" => {
            if cfg_bool(c, "conv_shortcut", false)
                || c.get("temb_channels").and_then(Value::as_u64).unwrap_or(0) != 0
            {
                return Err(Error::Unsupported(
                    "ResnetBlock3D with conv_shortcut or temb (never used by the decoders)".into(),
                ));
            }
            let c_in = cfg_usize(c, "in_channels")?;
            let c_out = cfg_usize(c, "out_channels").unwrap_or(c_in);
            let m = ResnetBlock3d::<T>::load(&vp, c_in, c_out, &module_options(c, "zq_ch")?)?;
            loader.finish()?;
            m.forward(input(file, "input.x")?, &input(file, "input.zq")?, None, Tap::none())?
        }
        "AttnBlock2D" => {
            let m = AttnBlock2d::<T>::load(&vp, cfg_usize(c, "in_channels")?, &module_options(c, "zq_ch")?)?;
            loader.finish()?;
            m.forward(input(file, "input.x")?, &input(file, "input.zq")?)?
        }
        "Upsample3D" => {
            let up = UpsamplePlan {
                with_conv: cfg_bool(c, "with_conv", true),
                time: cfg_bool(c, "compress_time", false),
            };
            let m = Upsample3d::<T>::load(&vp, cfg_usize(c, "in_channels")?, up, FrameRule::Movq)?;
            loader.finish()?;
            m.forward(&input(file, "input.x")?)?
        }
        other => return Err(Error::Unsupported(format!("golden class {other}"))),
    };
    let dims = file.info("output.f64").map(|i| i.shape.clone()).unwrap_or_default();
    if out.shape().dims().as_slice() != dims.as_slice() {
        return Err(Error::ShapeMismatch {
            op: "golden output",
            expected: format!("{dims:?}"),
            got: out.shape().to_string(),
        });
    }
    Ok(out.data().iter().map(|v| v.to_f64()).collect())
}

/// The decode mode of a diffusers case's `call`: `vae.decoder(z)` decodes the whole clip,
/// `vae.decode(z)` in frame batches (tiling is never enabled in the golden cases).
fn cogvideox_mode(case: &Case) -> Result<DecodeMode> {
    let call = case.meta.get("call").and_then(Value::as_str).unwrap_or("");
    if call.starts_with("vae.decoder(") {
        Ok(DecodeMode::Whole)
    } else if call.starts_with("vae.decode(") {
        let batch = case.meta.get("frame_batch_size").and_then(Value::as_u64).unwrap_or(FRAME_BATCH as u64);
        if batch != FRAME_BATCH as u64 {
            return Err(Error::Unsupported(format!(
                "frame_batch_size {batch} (diffusers fixes it at {FRAME_BATCH})"
            )));
        }
        Ok(DecodeMode::Chunked)
    } else {
        Err(Error::Unsupported(format!("AutoencoderKLCogVideoX call `{call}`")))
    }
}

/// Verifies one golden file in f32 and f64.
pub fn verify_file(path: &Path) -> Result<CaseOutcome> {
    verify_file_with(path, false)
}

/// [`verify_file`], plus with `bf16` a third run, "bf16e": f32 with bf16 products in the
/// convolutions ([`crate::kernels::bf16`]). It is measured, not judged (`pass` is true): the
/// golden rule bounds f32 error, which bf16 rounding exceeds by design. Sets and clears the
/// process-wide bf16 switch.
pub fn verify_file_with(path: &Path, bf16: bool) -> Result<CaseOutcome> {
    verify_file_rows(path, if bf16 { &["bf16e"] } else { &[] })
}

/// [`verify_file`] plus measured (not judged) runs in the bf16 modes of `rows`: "bf16e"
/// (emulated bf16 products, `--precision bf16-emulated`) and "bf16" (the CPU's bf16 dot
/// products, `--precision bf16`; an error without them). Sets and clears the process-wide
/// bf16 switches.
pub fn verify_file_rows(path: &Path, rows: &[&'static str]) -> Result<CaseOutcome> {
    let file = WeightFile::open(path)?;
    let case = read_case(&file)?;
    if !SUPPORTED_CLASSES.contains(&case.class.as_str()) {
        let reason = format!("class {} is not supported", case.class);
        return Ok(CaseOutcome::Skipped { name: case.name, class: case.class, reason });
    }
    if case.class == "AutoencoderKLCogVideoX" {
        cogvideox_mode(&case)?;
    }
    let num = |k: &str| case.meta.get(k).and_then(Value::as_f64);
    let torch_abs =
        num("f32_max_abs_err").ok_or_else(|| Error::invalid_file(path, "metadata lacks f32_max_abs_err"))?;
    let torch_rel =
        num("f32_rel_l2_err").ok_or_else(|| Error::invalid_file(path, "metadata lacks f32_rel_l2_err"))?;
    let absmax = num("output_f64_absmax").unwrap_or(1.0);
    // Negative or non-finite figures would make the tolerance rule pass anything (or nothing).
    for (k, v) in
        [("f32_max_abs_err", torch_abs), ("f32_rel_l2_err", torch_rel), ("output_f64_absmax", absmax)]
    {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::invalid_file(path, format!("metadata {k} = {v} is not a finite number >= 0")));
        }
    }
    let (_, reference) = file.read::<f64>("output.f64")?;
    let video = matches!(case.class.as_str(), "MOVQDecoder3D" | "NewDecoder3D" | "AutoencoderKLCogVideoX");

    let mut runs = Vec::new();
    let precisions = ["f32", "f64"].into_iter().chain(rows.iter().copied());
    for precision in precisions {
        let t0 = Instant::now();
        let y = match precision {
            "f64" => run::<f64>(path, &file, &case),
            "f32" => run::<f32>(path, &file, &case),
            "bf16e" | "bf16" => {
                use crate::kernels::params::{
                    process_bf16_native, process_bf16_products, set_bf16_native, set_bf16_products,
                };
                // Process-wide (decoders read the process settings); restored also on panic.
                struct Restore(bool, bool);
                impl Drop for Restore {
                    fn drop(&mut self) {
                        set_bf16_products(self.0);
                        set_bf16_native(self.1);
                    }
                }
                let _restore = Restore(process_bf16_products(), process_bf16_native());
                set_bf16_products(true);
                set_bf16_native(precision == "bf16");
                run::<f32>(path, &file, &case)
            }
            other => return Err(Error::Unsupported(format!("verify: no precision {other:?}"))),
        }?;
        let seconds = t0.elapsed().as_secs_f64();
        let Distance { max_abs, rel_l2, .. } = distance(&y, &reference);
        let (tol_max_abs, tol_rel_l2) = match precision {
            "f32" => f32_tolerance(torch_abs, torch_rel, absmax),
            "f64" => (f64::INFINITY, F64_REL_L2),
            _ => (f64::INFINITY, f64::INFINITY),
        };
        let pass = match precision {
            "f32" => max_abs <= tol_max_abs && rel_l2 <= tol_rel_l2,
            "f64" => rel_l2 < tol_rel_l2,
            _ => true,
        };
        let psnr8 = video.then(|| video_psnr(&y, &reference));
        runs.push(RunResult { precision, max_abs, rel_l2, tol_max_abs, tol_rel_l2, seconds, pass, psnr8 });
    }
    Ok(CaseOutcome::Ran { name: case.name, class: case.class, torch_f32: (torch_abs, torch_rel), runs })
}

/// PSNR (dB, peak 255) of `y` against `reference` after both are quantised to 8-bit pixels
/// as the video writers do ([`crate::io::pixel_u8_f64`]); infinite when they agree.
pub fn video_psnr(y: &[f64], reference: &[f64]) -> f64 {
    use crate::io::pixel_u8_f64;
    let se: f64 = y
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (pixel_u8_f64(a) as f64 - pixel_u8_f64(b) as f64).powi(2))
        .sum();
    crate::metrics::psnr(se / y.len().max(1) as f64, 255.0)
}

/// The golden files of `path`: the file itself, or every `*.safetensors` in a directory
/// (sorted by name).
pub fn golden_files(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        v.sort();
        Ok(v)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory")))
    }
}
