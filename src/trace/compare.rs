//! Reading trace files and comparing two of them module by module.

use super::{Crop, META_KEY};
use crate::error::{Error, Result};
use crate::io::WeightFile;
use crate::metrics::{Distance, distance};
use crate::tensor::{Shape, Tensor};
use serde_json::Value;
use std::ops::Range;
use std::path::Path;

/// An opened trace: a safetensors file whose metadata key [`META_KEY`] holds JSON with
/// `order`, the names of its entries in execution order (each a tensor of the file, each once).
/// movq's traces and PyTorch-hook traces (README) both have it.
#[derive(Debug)]
pub struct TraceFile {
    pub file: WeightFile,
    /// The description stored under [`META_KEY`].
    pub meta: Value,
    /// Entry names in execution order.
    pub order: Vec<String>,
}

impl TraceFile {
    /// True if `file` is a trace (has the [`META_KEY`] metadata).
    pub fn is_trace(file: &WeightFile) -> bool {
        file.metadata().contains_key(META_KEY)
    }

    /// Opens `path` and checks its `order` against its tensors.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file(WeightFile::open(path)?)
    }

    /// Checks an opened file as a trace.
    pub fn from_file(file: WeightFile) -> Result<Self> {
        let bad = |m: String| Error::invalid_file(file.path(), m);
        let text = file
            .metadata()
            .get(META_KEY)
            .ok_or_else(|| bad(format!("not a trace: no `{META_KEY}` key in the safetensors metadata")))?;
        let meta = crate::io::json::parse_strict(text)
            .map_err(|e| bad(format!("metadata `{META_KEY}` is not JSON: {e}")))?;
        let order: Vec<String> = meta
            .get("order")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("metadata `{META_KEY}` has no `order` list")))?
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("`order` holds a non-string".into())))
            .collect::<Result<_>>()?;
        let mut seen = std::collections::BTreeSet::new();
        for name in &order {
            if !seen.insert(name.as_str()) {
                return Err(bad(format!("`order` names entry `{name}` twice")));
            }
            if file.info(name).is_none() {
                return Err(bad(format!("`order` names entry `{name}`, which is not a tensor of the file")));
            }
        }
        if let Some(extra) = file.names().find(|n| !seen.contains(n)) {
            return Err(bad(format!("tensor `{extra}` is not in `order`")));
        }
        drop(seen);
        Ok(TraceFile { file, meta, order })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The stored shape of entry `name`.
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.file.info(name).map(|i| i.shape.as_slice())
    }
}

/// Bounds a module's difference must stay within; `None` bounds nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bounds {
    pub max_abs: Option<f64>,
    pub max_rel: Option<f64>,
}

impl Bounds {
    /// True if `d` exceeds a bound (a NaN difference always does).
    pub fn exceeded(&self, d: &Distance) -> bool {
        let over = |v: f64, b: Option<f64>| b.is_some_and(|b| v.is_nan() || v > b);
        over(d.max_abs, self.max_abs) || over(d.rel_l2, self.max_rel)
    }
}

/// One module's difference: A's entry against B's.
#[derive(Clone, Debug)]
pub struct ModuleDiff {
    pub name: String,
    pub dims: Vec<usize>,
    pub dist: Distance,
    /// Index of the largest difference in the module's whole output: in the compared tensor
    /// plus, for a cropped one, the crop's start on each axis it cuts (where every non-empty
    /// cropped entry begins), so a port can look it up in its own full tensor.
    pub worst_index: Vec<usize>,
}

/// Every entry of A against B's entry of the same name, in A's execution order.
#[derive(Clone, Debug)]
pub struct TraceComparison {
    pub rows: Vec<ModuleDiff>,
    /// B's entries A has not (B may trace more modules, e.g. a PyTorch hook on every module).
    pub only_in_b: Vec<String>,
    /// When one trace is cropped and the other is not: the side cut to the other's crop, and
    /// that crop in words ("frames 0:3, rows 3:5, columns 2:5").
    pub cut: Option<(Cut, String)>,
}

impl TraceComparison {
    /// The first module, in execution order, over `bounds`.
    pub fn first_over(&self, bounds: &Bounds) -> Option<&ModuleDiff> {
        self.rows.iter().find(|r| bounds.exceeded(&r.dist))
    }
}

/// The crop a trace's metadata describes (`crop`: `frames`, `rows`, `cols`, each `[start,
/// end]` or null, as `movq trace` and scripts/fixtures/hook_trace.py write it); `None` when
/// absent or null on every axis (a range covering a whole axis still counts as a crop).
fn crop_of(t: &TraceFile) -> Result<Option<Crop>> {
    let Some(c) = t.meta.get("crop").filter(|c| !c.is_null()) else { return Ok(None) };
    let bad = |m: String| Error::invalid_file(t.path(), format!("metadata `{META_KEY}`: `crop` {m}"));
    let obj = c.as_object().ok_or_else(|| bad(format!("is {c}, not an object")))?;
    if let Some(k) = obj.keys().find(|k| !["frames", "rows", "cols"].contains(&k.as_str())) {
        return Err(bad(format!("has the unknown key `{k}` (known: frames, rows, cols)")));
    }
    let range = |k: &str| -> Result<Option<Range<usize>>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_array().map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>()).as_deref()
            {
                Some(&[Some(a), Some(b)]) if a < b => match (usize::try_from(a), usize::try_from(b)) {
                    (Ok(a), Ok(b)) => Ok(Some(a..b)),
                    _ => Err(bad(format!("`{k}` is {v}, past this machine's sizes"))),
                },
                _ => Err(bad(format!("`{k}` is {v}, not [start, end] with start < end"))),
            },
        }
    };
    let crop = Crop { frames: range("frames")?, rows: range("rows")?, cols: range("cols")? };
    Ok((crop != Crop::default()).then_some(crop))
}

/// Which trace is cut to the other's crop before comparing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    A,
    B,
}

/// Compares trace `a` (e.g. a port's, or an f32 decode's) with the reference `b`: every entry
/// of A must be in B with the same shape ([`Error::TraceMismatch`] otherwise, naming both files,
/// the entry and the shapes). Differences are taken in f64. When exactly one of the traces is
/// cropped (`movq trace --crop-*`, or a hook trace's `crop`), the other's entries are cut to
/// that crop first (their stored shapes are the modules' full shapes), and
/// [`TraceComparison::cut`] says so; two different crops are an error.
pub fn compare_traces(a: &TraceFile, b: &TraceFile) -> Result<TraceComparison> {
    let mismatch = |name: &str, reason: String| Error::TraceMismatch {
        a: a.path().to_path_buf(),
        b: b.path().to_path_buf(),
        name: name.to_string(),
        reason,
    };
    // Entries cropped to different regions would be compared value by value as if aligned.
    let (ca, cb) = (crop_of(a)?, crop_of(b)?);
    // The one crop the compared entries have (for their indices in the whole outputs), and
    // the side cut to it when only the other trace was cropped.
    let (cut, crop) = match (ca, cb) {
        (None, None) => (None, None),
        (Some(ca), Some(cb)) if ca == cb => (None, Some(ca)),
        (Some(c), None) => (Some(Cut::B), Some(c)),
        (None, Some(c)) => (Some(Cut::A), Some(c)),
        (Some(ca), Some(cb)) => {
            return Err(mismatch(
                "(every entry)",
                format!("crops differ: A ({}), B ({})", ca.words(), cb.words()),
            ));
        }
    };
    let mut rows = Vec::with_capacity(a.order.len());
    for name in &a.order {
        let da = a.dims(name).expect("order checked on opening");
        let Some(db) = b.dims(name) else {
            let mode = |t: &TraceFile| t.meta.get("mode").and_then(Value::as_str).map(str::to_string);
            let hint = match (mode(a), mode(b)) {
                (Some(ma), Some(mb)) if ma != mb => format!(
                    " (A was traced in {ma} mode, B in {mb}: chunked and tiled modes name entries \
                     per frame batch and tile)"
                ),
                _ => String::new(),
            };
            return Err(mismatch(name, format!("in A with shape {da:?}, missing from B{hint}")));
        };
        let (dims, va, vb) = match (cut, &crop) {
            (Some(side), Some(crop)) => {
                let (whole, kept, cropped) = if side == Cut::B { (db, da, a) } else { (da, db, b) };
                let (uncut, kept_by) = if side == Cut::B { ("B", "A") } else { ("A", "B") };
                // Taken as full size only because its metadata names no crop: said wherever the
                // shapes then disagree (e.g. a hook trace sliced without writing `crop`).
                let why = format!("{uncut}'s metadata names no crop, so its entries are taken as full size");
                // Crops clip to each axis, so decodes of different sizes can keep equal shapes:
                // a movq trace records each entry's full shape, which must be the uncut one's.
                let key = format!("/entries/{}/shape", name.replace('~', "~0").replace('/', "~1"));
                let full = cropped.meta.pointer(&key).and_then(Value::as_array);
                if let Some(full) =
                    full.filter(|f| f.iter().map(Value::as_u64).ne(whole.iter().map(|&n| Some(n as u64))))
                {
                    let full = Value::from(full.clone());
                    let msg = format!("{kept_by} was cropped from shape {full}, {uncut} holds {whole:?}");
                    return Err(mismatch(name, format!("{msg}: not the same decode")));
                }
                let shape = Shape::from_dims(whole).map_err(|_| {
                    mismatch(
                        name,
                        format!("{uncut}'s shape {whole:?} is not (n, c, d, h, w), so it cannot be cut"),
                    )
                })?;
                let region = crop.region(shape).ok_or_else(|| {
                    let words = crop.words();
                    mismatch(name, format!("the crop ({words}) keeps nothing of {uncut}'s {whole:?} ({why})"))
                })?;
                let want = [shape.n, shape.c, region.d.len(), region.h.len(), region.w.len()];
                if kept != want {
                    let words = crop.words();
                    let msg = format!(
                        "{kept_by}'s shape {kept:?} is not the crop ({words}) of {uncut}'s {whole:?} ({why})"
                    );
                    return Err(mismatch(name, msg));
                }
                let read_cut = |t: &TraceFile| -> Result<Vec<f64>> {
                    let (_, v) = t.file.read::<f64>(name)?;
                    Ok(Tensor::from_vec(shape, v)?.crop(&region)?.into_vec())
                };
                let (va, vb) = match side {
                    Cut::B => (a.file.read::<f64>(name)?.1, read_cut(b)?),
                    Cut::A => (read_cut(a)?, b.file.read::<f64>(name)?.1),
                };
                (want.to_vec(), va, vb)
            }
            _ => {
                if da != db {
                    return Err(mismatch(name, format!("shapes differ: A {da:?}, B {db:?}")));
                }
                let (dims, va) = a.file.read::<f64>(name)?;
                (dims, va, b.file.read::<f64>(name)?.1)
            }
        };
        let dist = distance(&va, &vb);
        let mut worst_index = crate::tensor::unravel(dist.worst, &dims);
        if let (Some(c), [_, _, d, h, w]) = (&crop, &mut worst_index[..]) {
            let start = |r: &Option<Range<usize>>| r.as_ref().map_or(0, |r| r.start);
            (*d, *h, *w) = (*d + start(&c.frames), *h + start(&c.rows), *w + start(&c.cols));
        }
        rows.push(ModuleDiff { name: name.clone(), dims, dist, worst_index });
    }
    let only_in_b = b.order.iter().filter(|n| a.file.info(n).is_none()).cloned().collect();
    let cut = cut.zip(crop.as_ref()).map(|(side, c)| (side, c.words()));
    Ok(TraceComparison { rows, only_in_b, cut })
}
