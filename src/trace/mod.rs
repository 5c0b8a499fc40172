//! Per-module traces of a decode, for checking ports of these decoders layer by layer.
//!
//! [`trace`] decodes a latent and keeps the output of every module (or of the modules a glob
//! selects), named by the module path of the checkpoint's own naming: `decoder.up_blocks.1.
//! resnets.0` for a diffusers checkpoint, `up.2.block.0` (with the checkpoint's prefix, e.g.
//! `decoder.` for sat) for upstream names; these are the names PyTorch gives the same modules
//! (`named_modules()`, the state-dict prefixes), so a trace written by PyTorch forward hooks
//! lines up. A decode of several decoder calls names each call's entry
//! `NAME@chunkK` (frame batch K of a chunked decode) or `NAME@tileR_C@chunkK` (tiled).
//! [`Trace::write`] stores the entries as safetensors with the trace's description in the
//! metadata key [`META_KEY`]; [`TraceFile`] reads one back and [`compare_traces`] lines two
//! up module by module.
//!
//! ```no_run
//! use movq::Checkpoint;
//! use movq::checkpoint::OpenOptions;
//! use movq::model::DecodeMode;
//! use movq::trace::{TraceOptions, trace};
//! # fn main() -> movq::Result<()> {
//! let ck = Checkpoint::open("vae/".as_ref(), &OpenOptions::default())?;
//! let decoder = ck.load::<f64>()?;
//! let z = movq::io::read_latent::<f64>("z.npy".as_ref(), None)?;
//! let opts = TraceOptions { modules: vec!["decoder.up_blocks.*".into()], ..Default::default() };
//! let t = trace(&ck, &decoder, &z, &DecodeMode::Chunked, &opts)?;
//! for e in &t.entries {
//!     println!("{} {}", e.name, e.tensor.shape());
//! }
//! t.write("trace.safetensors".as_ref())?;
//! # Ok(()) }
//! ```

mod compare;
pub mod golden;
pub mod sha256;

pub use compare::{Bounds, Cut, ModuleDiff, TraceComparison, TraceFile, compare_traces};

use crate::checkpoint::diffusers::diffusers_key;
use crate::checkpoint::{Checkpoint, Naming};
use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::model::schedule::Call;
use crate::model::{DecodeMode, Decoder, Tracer};
use crate::tensor::{Region, Shape, Tensor};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// The safetensors metadata key holding a trace's description (JSON with at least `order`,
/// the entry names in execution order).
pub const META_KEY: &str = "movq_trace";
/// The `format` of the traces movq writes.
pub const FORMAT: &str = "movq-trace-v1";

/// Which frames, rows and columns of every traced tensor to keep. Each range indexes the
/// tensor's own axis and is clipped to it (`rows 0..16` keeps all of an 8-row tensor and the
/// first 16 rows of a 64-row one); `None` keeps the whole axis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Crop {
    pub frames: Option<Range<usize>>,
    pub rows: Option<Range<usize>>,
    pub cols: Option<Range<usize>>,
}

impl Crop {
    /// The part of a tensor of shape `s` kept, or `None` if the crop leaves nothing of it.
    pub fn region(&self, s: Shape) -> Option<Region> {
        let clip = |r: &Option<Range<usize>>, n: usize| match r {
            Some(r) => r.start.min(n)..r.end.min(n),
            None => 0..n,
        };
        let r = Region { d: clip(&self.frames, s.d), h: clip(&self.rows, s.h), w: clip(&self.cols, s.w) };
        (!r.d.is_empty() && !r.h.is_empty() && !r.w.is_empty()).then_some(r)
    }

    /// Each axis's name in words and its range.
    fn axes(&self) -> [(&'static str, &Option<Range<usize>>); 3] {
        [("frames", &self.frames), ("rows", &self.rows), ("columns", &self.cols)]
    }

    /// The ranges kept, in words ("frames 0:3, rows 3:5"; "whole tensors" for none).
    pub fn words(&self) -> String {
        let kept: Vec<String> = self
            .axes()
            .iter()
            .filter_map(|(axis, r)| r.as_ref().map(|r| format!("{axis} {}:{}", r.start, r.end)))
            .collect();
        if kept.is_empty() { "whole tensors".into() } else { kept.join(", ") }
    }

    /// Why the crop keeps nothing of shape `s` ([`Self::region`] is `None`): its ranges and,
    /// per axis they miss, the axis's extent (in words, not as JSON). `part`: the entry is one
    /// frame batch or tile of a chunked or tiled decode.
    pub fn empty_error(&self, module: &str, s: Shape, part: bool) -> Error {
        let empty: Vec<String> = self
            .axes()
            .into_iter()
            .zip([s.d, s.h, s.w])
            .filter_map(|((axis, r), n)| {
                let r = r.as_ref()?;
                (r.start.min(n) >= r.end.min(n))
                    .then(|| format!("{axis} {}:{} miss its {axis} 0:{n}", r.start, r.end))
            })
            .collect();
        // Every range is non-empty (checked where crops are made), so only an axis of size
        // zero that the crop leaves alone can leave nothing without a range to blame.
        let mut empty =
            if empty.is_empty() { "the tensor itself is empty".to_string() } else { empty.join(", ") };
        if part {
            // The crop is not a region of the output video here: say what it indexes.
            empty += " (chunked and tiled decodes trace each frame batch and tile as its own entry; \
                      the ranges index each entry's own frames, rows and columns)";
        }
        Error::EmptyCrop {
            crop: format!("the trace crop ({})", self.words()),
            module: module.to_string(),
            shape: s.to_string(),
            empty,
        }
    }

    fn to_json(&self) -> Value {
        let r = |r: &Option<Range<usize>>| r.as_ref().map(|r| json!([r.start, r.end]));
        json!({"frames": r(&self.frames), "rows": r(&self.rows), "cols": r(&self.cols)})
    }
}

/// What to trace.
#[derive(Clone, Debug, Default)]
pub struct TraceOptions {
    /// Module-name globs (`*` any run of characters, dots included; `?` one character) in the
    /// checkpoint's naming; a module is traced if any matches. Empty: every module. A glob
    /// that matches no module is an error ([`Error::NoSuchModule`]).
    pub modules: Vec<String>,
    pub crop: Crop,
}

/// True if `name` matches `glob` (`*`: any run of characters, `?`: one character).
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point (the last `*`): linear in practice.
    let (mut gi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == n[ni]) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ni;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// The name of module `path` (upstream naming) in `ck`'s naming, with its prefix.
pub fn module_name(ck: &Checkpoint, path: &str) -> String {
    match ck.naming {
        Naming::Upstream => format!("{}{path}", ck.prefix),
        Naming::Diffusers => format!("{}{}", ck.prefix, diffusers_key(path, ck.plan.levels.len())),
    }
}

/// The names of `dec`'s traceable modules in `ck`'s naming, in execution order.
pub fn module_names<T: Float>(ck: &Checkpoint, dec: &Decoder<T>) -> Vec<String> {
    dec.module_paths().iter().map(|p| module_name(ck, p)).collect()
}

/// One traced output.
#[derive(Clone, Debug)]
pub struct TraceEntry<T> {
    /// The entry's name: the module name, plus `@chunkK` / `@tileR_C@chunkK` for a decode of
    /// several calls.
    pub name: String,
    /// The module name (checkpoint naming).
    pub module: String,
    /// The module's whole output shape; `tensor` is its crop starting at `offset` (d, h, w).
    pub full_shape: Shape,
    pub offset: [usize; 3],
    pub tensor: Tensor<T>,
}

/// A decode's traced outputs in execution order, its description, and the decoded output.
#[derive(Clone, Debug)]
pub struct Trace<T> {
    pub entries: Vec<TraceEntry<T>>,
    /// The description stored under [`META_KEY`] (without `order`, added on writing).
    pub meta: Value,
    /// The decode's result, bitwise the same as an untraced decode's.
    pub output: Tensor<T>,
}

struct Recorder<'a> {
    ck: &'a Checkpoint,
    opts: &'a TraceOptions,
    /// upstream path -> checkpoint name, for the selected modules.
    selected: BTreeMap<String, String>,
    suffix: String,
}

struct Collect<'a, T> {
    rec: Recorder<'a>,
    entries: Vec<TraceEntry<T>>,
}

impl<T: Float> Tracer<T> for Collect<'_, T> {
    fn begin_call(&mut self, call: &Call, batch: usize) {
        let tile = call.tile.map(|(r, c)| format!("@tile{r}_{c}")).unwrap_or_default();
        let chunk = if call.cached { format!("@chunk{batch}") } else { String::new() };
        self.rec.suffix = format!("{tile}{chunk}");
    }

    fn wants(&self, path: &str) -> bool {
        self.rec.selected.contains_key(path)
    }

    fn record(&mut self, path: &str, x: &Tensor<T>) -> Result<()> {
        let module = self.rec.selected.get(path).cloned().unwrap_or_else(|| module_name(self.rec.ck, path));
        let name = format!("{module}{}", self.rec.suffix);
        let s = x.shape();
        let region = self
            .rec
            .opts
            .crop
            .region(s)
            .ok_or_else(|| self.rec.opts.crop.empty_error(&name, s, !self.rec.suffix.is_empty()))?;
        if self.entries.iter().any(|e| e.name == name) {
            // A module runs once per decoder call; a repeat would be a tracing bug.
            return Err(Error::Unsupported(format!("module `{name}` traced twice in one call")));
        }
        let offset = [region.d.start, region.h.start, region.w.start];
        self.entries.push(TraceEntry { name, module, full_shape: s, offset, tensor: x.crop(&region)? });
        Ok(())
    }
}

/// The upstream paths of `dec`'s modules selected by `globs` (all if empty), mapped to their
/// names in `ck`'s naming. A glob matching nothing is [`Error::NoSuchModule`].
fn select<T: Float>(ck: &Checkpoint, dec: &Decoder<T>, globs: &[String]) -> Result<BTreeMap<String, String>> {
    let all: Vec<(String, String)> =
        dec.module_paths().into_iter().map(|p| (module_name(ck, &p), p)).map(|(n, p)| (p, n)).collect();
    for g in globs {
        if !all.iter().any(|(_, n)| glob_match(g, n)) {
            let mut known: Vec<&str> = all.iter().map(|(_, n)| n.as_str()).take(6).collect();
            known.push("...; `movq trace --list` prints them all");
            return Err(Error::NoSuchModule { pattern: g.clone(), known: known.join(", ") });
        }
    }
    Ok(all.into_iter().filter(|(_, n)| globs.is_empty() || globs.iter().any(|g| glob_match(g, n))).collect())
}

/// Decodes z with `mode` and traces the modules `opts` selects (see the module docs).
/// z: (b, zq_ch, t, h, w)
pub fn trace<T: Float>(
    ck: &Checkpoint,
    dec: &Decoder<T>,
    z: &Tensor<T>,
    mode: &DecodeMode,
    opts: &TraceOptions,
) -> Result<Trace<T>> {
    for (axis, r) in [("frames", &opts.crop.frames), ("rows", &opts.crop.rows), ("cols", &opts.crop.cols)] {
        if let Some(r) = r
            && r.start >= r.end
        {
            return Err(Error::InvalidConfig(format!("trace crop {axis} {}..{} is empty", r.start, r.end)));
        }
    }
    let selected = select(ck, dec, &opts.modules)?;
    let shape = dec.decoded_shape(z.shape(), mode)?;
    let mut output = Tensor::zeros(shape)?;
    let mut c = Collect { rec: Recorder { ck, opts, selected, suffix: String::new() }, entries: Vec::new() };
    let sink = |first, frames: Tensor<T>| output.paste(&frames, (first, 0, 0));
    dec.decode_stream_traced(z, mode, &mut |_| Ok(()), sink, Some(&mut c))?;
    let mode_name = match mode {
        DecodeMode::Whole => "whole",
        DecodeMode::Chunked => "chunked",
        DecodeMode::Tiled(_) => "tiled",
    };
    let entries: BTreeMap<&str, Value> = c
        .entries
        .iter()
        .map(|e| {
            (e.name.as_str(), json!({"module": e.module, "shape": e.full_shape.dims(), "offset": e.offset}))
        })
        .collect();
    let meta = json!({
        "format": FORMAT,
        "movq_version": env!("CARGO_PKG_VERSION"),
        "precision": T::NAME,
        "mode": mode_name,
        "naming": format!("{:?}", ck.naming).to_lowercase(),
        "prefix": ck.prefix,
        "modules": opts.modules,
        "crop": opts.crop.to_json(),
        "latent_shape": z.shape().dims(),
        "output_shape": shape.dims(),
        "kernels": {"isa": crate::kernels::isa().name(), "conv": format!("{:?}", crate::kernels::params::conv_algo()).to_lowercase()},
        "entries": entries,
    });
    Ok(Trace { entries: c.entries, meta, output })
}

impl<T: Float> Trace<T> {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&TraceEntry<T>> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The description as stored: [`Self::meta`] plus `order`, the entry names in execution
    /// order, and `extra` merged in.
    pub fn metadata(&self, extra: &BTreeMap<String, Value>) -> Value {
        let mut m = self.meta.clone();
        let obj = m.as_object_mut().expect("trace meta is an object");
        obj.insert("order".into(), json!(self.entries.iter().map(|e| &e.name).collect::<Vec<_>>()));
        obj.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    }

    /// Writes the entries (in `T`'s dtype) as a safetensors file, atomically; the
    /// description is under [`META_KEY`].
    pub fn write(&self, path: &Path) -> Result<()> {
        self.write_with(path, &BTreeMap::new())
    }

    /// [`Self::write`] with `extra` fields in the description (e.g. the weights and latent).
    pub fn write_with(&self, path: &Path, extra: &BTreeMap<String, Value>) -> Result<()> {
        let dims: Vec<[usize; 5]> = self.entries.iter().map(|e| e.tensor.shape().dims()).collect();
        let tensors: Vec<(&str, &[usize], &[T])> =
            self.entries.iter().zip(&dims).map(|(e, d)| (e.name.as_str(), &d[..], e.tensor.data())).collect();
        let mut md = BTreeMap::new();
        md.insert(META_KEY.to_string(), self.metadata(extra).to_string());
        crate::io::write_tensors(path, &tensors, &md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_runs_and_single_characters() {
        assert!(glob_match("decoder.up_blocks.*", "decoder.up_blocks.1.resnets.0.conv1"));
        assert!(glob_match("*conv?", "up.2.block.0.conv2"));
        assert!(glob_match("*", ""));
        assert!(glob_match("up.*.block.0", "up.3.block.0"));
        assert!(!glob_match("up.*.block.0", "up.3.block.0.conv1"));
        assert!(!glob_match("conv_in", "decoder.conv_in"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn crop_clips_to_each_tensor() {
        let c = Crop { frames: None, rows: Some(2..16), cols: Some(0..4) };
        let r = c.region(Shape::new(1, 8, 3, 8, 64)).unwrap();
        assert_eq!((r.d, r.h, r.w), (0..3, 2..8, 0..4));
        assert!(c.region(Shape::new(1, 8, 3, 2, 64)).is_none());
    }
}
