//! Reference sets for ports (`movq golden`): for one checkpoint and a list of latents, the
//! float64 outputs (and optionally traces), a copy of every latent, and a manifest pinning every
//! file by SHA-256, so that a port's CI can check itself against a fixed set and detect any
//! change to it.
//!
//! Layout of a set directory:
//! - `manifest.json` ([`Manifest`]);
//! - `latents/NAME.npy|.safetensors`: the latents, copied;
//! - `NAME.safetensors`: tensor `sample`, the f64 decode (b, c, t, h, w);
//! - `NAME.trace.safetensors`: the f64 trace, if asked.
//!
//! A port passes a case under the golden tolerance rule ([`crate::verify::f32_tolerance`]),
//! with movq's own float32 decode in the role of "the original float32 implementation":
//! `rel_l2 <= 4 max(f32_rel_l2_err, 1e-7)`, `max_abs <= 4 max(f32_max_abs_err, 1e-7 max(1, absmax))`.

use super::sha256::{bytes_sha256, file_sha256};
use super::{TraceOptions, trace};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::io::WeightFile;
use crate::metrics::distance;
use crate::model::DecodeMode;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "movq-golden-set-v1";
pub const MANIFEST: &str = "manifest.json";

/// A file and its SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pinned {
    /// Relative to the set directory (weights: as given when the set was made).
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// One latent of a set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Case {
    pub name: String,
    pub latent: Pinned,
    pub output: Pinned,
    pub output_shape: Vec<usize>,
    pub output_f64_absmax: f64,
    /// movq's float32 decode against the float64 one.
    pub f32_max_abs_err: f64,
    pub f32_rel_l2_err: f64,
    pub trace: Option<Pinned>,
}

/// `manifest.json` of a reference set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub movq_version: String,
    pub precision: String,
    pub mode: String,
    pub weights: Vec<Pinned>,
    pub config: serde_json::Value,
    pub tolerance: String,
    pub cases: Vec<Case>,
    /// SHA-256 of this manifest serialised with this field empty ([`Manifest::content_sha256`]):
    /// the figures the check trusts (tolerances, shapes, absmax) are pinned like the files.
    #[serde(default)]
    pub manifest_sha256: String,
}

impl Manifest {
    /// The SHA-256 of the manifest's content: its JSON with `manifest_sha256` empty.
    pub fn content_sha256(&self) -> String {
        let bare = Manifest { manifest_sha256: String::new(), ..self.clone() };
        bytes_sha256(&serde_json::to_vec(&bare).expect("manifest serialises"))
    }
}

fn pin(dir: &Path, rel: &str) -> Result<Pinned> {
    let p = dir.join(rel);
    let bytes = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
    Ok(Pinned { path: rel.to_string(), sha256: file_sha256(&p)?, bytes })
}

fn mode_name(mode: &DecodeMode) -> &'static str {
    match mode {
        DecodeMode::Whole => "whole",
        DecodeMode::Chunked => "chunked",
        DecodeMode::Tiled(_) => "tiled",
    }
}

/// The case name of a latent file: its stem, refused if it could escape the set directory.
fn case_name(latent: &Path) -> Result<String> {
    let stem = latent.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if stem.is_empty() || stem.starts_with('.') || stem.contains(['/', '\\']) {
        return Err(Error::invalid_file(latent, "a latent's file name must give a plain case name"));
    }
    Ok(stem)
}

/// Makes the reference set of `ck` for `latents` in the new directory `out` (refused if it
/// exists): built in a hidden temporary directory beside it and renamed into place when
/// complete, removed on any error. `trace_opts` adds each latent's f64 trace. `log` gets one
/// line per case.
pub fn write_set(
    ck: &Checkpoint,
    latents: &[PathBuf],
    out: &Path,
    mode: &DecodeMode,
    trace_opts: Option<&TraceOptions>,
    log: &mut dyn FnMut(&str),
) -> Result<Manifest> {
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(Error::OutputNotWritable {
            path: out.into(),
            cause: std::io::Error::other("exists; a reference set is written to a new directory"),
        });
    }
    let mut names = std::collections::BTreeSet::new();
    for l in latents {
        if !names.insert(case_name(l)?) {
            return Err(Error::invalid_file(l, "two latents give the same case name"));
        }
    }
    let tmp = temporary_dir(out)?;
    std::fs::create_dir(&tmp).map_err(crate::io::not_writable(out))?;
    let result = fill_set(ck, latents, &tmp, mode, trace_opts, log)
        .and_then(|m| std::fs::rename(&tmp, out).map(|_| m).map_err(|e| Error::io(out, e)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The hidden directory beside `out` where [`write_set`] builds the set (to remove if
/// interrupted).
pub fn temporary_dir(out: &Path) -> Result<PathBuf> {
    crate::io::tmp_sibling(out)
}

fn fill_set(
    ck: &Checkpoint,
    latents: &[PathBuf],
    dir: &Path,
    mode: &DecodeMode,
    trace_opts: Option<&TraceOptions>,
    log: &mut dyn FnMut(&str),
) -> Result<Manifest> {
    let dec64 = ck.load::<f64>()?;
    let dec32 = ck.load::<f32>()?;
    std::fs::create_dir(dir.join("latents")).map_err(|e| Error::io(dir, e))?;
    let mut cases = Vec::new();
    for l in latents {
        let name = case_name(l)?;
        let ext = l.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        let latent_rel = format!("latents/{name}.{ext}");
        std::fs::copy(l, dir.join(&latent_rel)).map_err(|e| Error::io(l, e))?;
        let z64: Tensor<f64> = crate::io::read_latent(&dir.join(&latent_rel), None)?;
        crate::io::check_finite(l, &z64)?;
        let z32: Tensor<f32> = crate::io::read_latent(&dir.join(&latent_rel), None)?;
        let (y, trace_pin) = match trace_opts {
            Some(opts) => {
                let t = trace(ck, &dec64, &z64, mode, opts)?;
                let rel = format!("{name}.trace.safetensors");
                t.write(&dir.join(&rel))?;
                (t.output, Some(pin(dir, &rel)?))
            }
            None => (dec64.decode(&z64, mode)?, None),
        };
        let y32 = dec32.decode(&z32, mode)?;
        let r: Vec<f64> = y.data().to_vec();
        let f: Vec<f64> = y32.data().iter().map(|&v| v as f64).collect();
        let d = distance(&f, &r);
        let out_rel = format!("{name}.safetensors");
        crate::io::write_safetensors(&dir.join(&out_rel), "sample", &y, &BTreeMap::new())?;
        let absmax = r.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        log(&format!(
            "{name}: z {} -> {}; movq f32 vs f64: max_abs {:.3e}, rel_l2 {:.3e}",
            z64.shape(),
            y.shape(),
            d.max_abs,
            d.rel_l2
        ));
        cases.push(Case {
            name,
            latent: pin(dir, &latent_rel)?,
            output: pin(dir, &out_rel)?,
            output_shape: y.shape().dims().to_vec(),
            output_f64_absmax: absmax,
            f32_max_abs_err: d.max_abs,
            f32_rel_l2_err: d.rel_l2,
            trace: trace_pin,
        });
    }
    let weights = ck
        .paths()
        .iter()
        .map(|p| {
            let bytes = std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
            Ok(Pinned { path: p.display().to_string(), sha256: file_sha256(p)?, bytes })
        })
        .collect::<Result<_>>()?;
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        movq_version: env!("CARGO_PKG_VERSION").into(),
        precision: "f64".into(),
        mode: mode_name(mode).into(),
        weights,
        config: serde_json::to_value(ck.config()).unwrap_or_default(),
        tolerance: "rel_l2 <= 4 max(f32_rel_l2_err, 1e-7) and max_abs <= 4 max(f32_max_abs_err, 1e-7 max(1, output_f64_absmax)), against the f64 output; f32 errors are movq's own float32 decode".into(),
        cases,
        manifest_sha256: String::new(),
    };
    let m = Manifest { manifest_sha256: m.content_sha256(), ..m };
    let text = serde_json::to_string_pretty(&m).expect("manifest serialises");
    crate::io::atomic_write(&dir.join(MANIFEST), |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(m)
}

/// Reads the manifest of set `dir` and checks the SHA-256 of every file it pins in `dir`
/// ([`Error::Checksum`] for a changed file).
pub fn read_set(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = crate::io::paths::read_small_text(&path, "manifest", crate::io::paths::MAX_JSON_BYTES)?;
    let m: Manifest = crate::io::json::parse_strict(&text)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::invalid_file(&path, format!("not a manifest: {e}")))?;
    if m.format != MANIFEST_FORMAT {
        return Err(Error::invalid_file(
            &path,
            format!("format `{}`, expected `{MANIFEST_FORMAT}`", m.format),
        ));
    }
    if m.manifest_sha256.is_empty() {
        let reason =
            "no manifest_sha256 (a set made before movq pinned its manifest): remake it with `movq golden`";
        return Err(Error::invalid_file(&path, reason));
    }
    let got = m.content_sha256();
    if got != m.manifest_sha256 {
        let reason = format!(
            "edited after the set was made: its content has SHA-256 {got}, its manifest_sha256 is {}",
            m.manifest_sha256
        );
        return Err(Error::invalid_file(&path, reason));
    }
    for c in &m.cases {
        for p in [Some(&c.latent), Some(&c.output), c.trace.as_ref()].into_iter().flatten() {
            if p.path.contains("..") || Path::new(&p.path).is_absolute() {
                return Err(Error::invalid_file(&path, format!("`{}` is outside the set directory", p.path)));
            }
            verify_pin(&path, &dir.join(&p.path), &p.sha256)?;
        }
    }
    Ok(m)
}

fn verify_pin(manifest: &Path, file: &Path, expected: &str) -> Result<()> {
    let got = file_sha256(file)?;
    if got != expected {
        return Err(Error::Checksum {
            path: file.into(),
            manifest: manifest.into(),
            expected: expected.into(),
            got,
        });
    }
    Ok(())
}

/// Checks that `weights` (the checkpoint's files, in order) are the ones the set pins.
pub fn check_weights(dir: &Path, m: &Manifest, weights: &[PathBuf]) -> Result<()> {
    let manifest = dir.join(MANIFEST);
    if weights.len() != m.weights.len() {
        return Err(Error::invalid_file(
            &manifest,
            format!("pins {} weight files, the checkpoint has {}", m.weights.len(), weights.len()),
        ));
    }
    for (w, p) in weights.iter().zip(&m.weights) {
        verify_pin(&manifest, w, &p.sha256)?;
    }
    Ok(())
}

/// One case of a port's outputs judged against a set.
#[derive(Clone, Debug)]
pub struct CaseCheck {
    pub name: String,
    pub file: PathBuf,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub tol_max_abs: f64,
    pub tol_rel_l2: f64,
    pub pass: bool,
}

/// The port's output for case `name` in `other`: `NAME.npy`, or `NAME.safetensors` (tensor
/// `sample`, or its only tensor); both present is an error (which one the port meant is not
/// for movq to guess).
fn read_port_output(other: &Path, name: &str) -> Result<(PathBuf, Vec<usize>, Vec<f64>)> {
    let npy = other.join(format!("{name}.npy"));
    let st = other.join(format!("{name}.safetensors"));
    if npy.exists() && st.exists() {
        return Err(Error::invalid_file(
            other,
            format!("holds both {name}.npy and {name}.safetensors for case `{name}`; keep one"),
        ));
    }
    if npy.exists() {
        let (d, v) = crate::io::read_npy::<f64>(&npy)?;
        return Ok((npy, d, v));
    }
    let f = WeightFile::open(&st)?;
    let key = match f.info("sample") {
        Some(_) => "sample".to_string(),
        None => {
            let names: Vec<&str> = f.names().collect();
            match names.as_slice() {
                [one] => one.to_string(),
                _ => {
                    return Err(Error::invalid_file(
                        &st,
                        "holds no `sample` tensor and not exactly one tensor",
                    ));
                }
            }
        }
    };
    let (d, v) = f.read::<f64>(&key)?;
    Ok((st, d, v))
}

/// Judges the port's outputs in `other` (one per case, see [`read_port_output`]) against set
/// `dir` (read and checked by [`read_set`]) with the golden tolerance rule. A missing output or
/// another shape is an error naming the case, the file and the shapes.
pub fn check_outputs(dir: &Path, m: &Manifest, other: &Path) -> Result<Vec<CaseCheck>> {
    let mut out = Vec::new();
    for c in &m.cases {
        let reference = dir.join(&c.output.path);
        let (file, dims, y) = read_port_output(other, &c.name)?;
        if dims != c.output_shape {
            return Err(Error::TraceMismatch {
                a: file,
                b: reference,
                name: c.name.clone(),
                reason: format!("shapes differ: port {dims:?}, reference {:?}", c.output_shape),
            });
        }
        let (_, r) = WeightFile::open(&reference)?.read::<f64>("sample")?;
        let d = distance(&y, &r);
        let (tol_max_abs, tol_rel_l2) =
            crate::verify::f32_tolerance(c.f32_max_abs_err, c.f32_rel_l2_err, c.output_f64_absmax);
        // A NaN fails both comparisons' negation.
        let pass = d.max_abs <= tol_max_abs && d.rel_l2 <= tol_rel_l2;
        out.push(CaseCheck {
            name: c.name.clone(),
            file,
            max_abs: d.max_abs,
            rel_l2: d.rel_l2,
            tol_max_abs,
            tol_rel_l2,
            pass,
        });
    }
    Ok(out)
}
