//! `torch.save` checkpoints read without executing anything: the zip format of torch >= 1.6
//! (here) and the legacy format before it (`legacy.rs`).
//!
//! Layout (`torch/serialization.py` `_save`, `caffe2/serialize/inline_container.h`): a ZIP of
//! STORED entries under one folder `<archive>/`: `data.pkl` (the pickled object, tensors
//! replaced by persistent ids), `data/<key>` (one raw little-endian storage each, 64-byte
//! aligned), `byteorder`, `version` and bookkeeping files. The pickle is run by the restricted
//! machine in `pickle.rs`; here the state dict is found in it and each tensor becomes a byte
//! range of the file (a contiguous tensor, served in place) or of a side buffer of copies (a
//! tensor whose strides are not row-major, gathered once at open).

mod legacy;
mod pickle;
mod zip;

use super::safetensors_header::TensorInfo;
use crate::error::{Error, Result};
use pickle::{Object, Pickle, StorageType, TensorRef};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use zip::Entry;

/// Largest `data.pkl` accepted; a state dict with ten thousand tensors pickles to about 1 MB.
pub const MAX_PICKLE_BYTES: usize = 1 << 26;
/// Wrapper dicts (`{"state_dict": {"module": ...}}`) followed before giving up.
const MAX_WRAPPERS: usize = 8;
/// Keys under which checkpoints nest their state dict, tried in this order.
const WRAPPER_KEYS: [&str; 3] = ["state_dict", "module", "model"];

/// The opening bytes of the pre-1.6 format: a protocol-2 pickle of torch's magic number
/// 0x1950a86a20f9469cfc6c as a LONG1.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// The tensor index of a torch file. Byte ranges below the file length are in the file; those
/// at or above it are in `gathered`, shifted by the file length.
pub(crate) struct Index {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub gathered: Vec<u8>,
}

/// Indexes `buf` if it is a `torch.save` checkpoint: a ZIP (it starts with a local file
/// header, `PK\x03\x04`) or the legacy format (it starts with torch's magic-number pickle).
/// `None` for anything else.
pub(crate) fn parse_if_torch(path: &Path, buf: &[u8]) -> Option<Result<Index>> {
    if buf.starts_with(b"PK\x03\x04") {
        Some(parse(path, buf))
    } else if buf.starts_with(LEGACY_MAGIC) {
        Some(legacy::parse(path, buf))
    } else {
        None
    }
}

/// Indexes the tensors of the `torch.save` zip `buf`; `path` names it in errors.
fn parse(path: &Path, buf: &[u8]) -> Result<Index> {
    let archive = zip::parse(path, buf)?;
    let zip_err = |reason: String| Error::Zip { path: path.into(), reason };
    let mut pickles =
        archive.entries.keys().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1);
    let pkl_name = pickles.next().ok_or_else(|| {
        zip_err("no `<archive>/data.pkl` entry: a ZIP file, but not one written by torch.save".into())
    })?;
    if pickles.next().is_some() {
        return Err(zip_err("more than one `<archive>/data.pkl` entry".into()));
    }
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    if let Some(e) = archive.entries.get(&format!("{prefix}byteorder")) {
        let order = &buf[e.start..e.end];
        if order != b"little" {
            return Err(Error::Unsupported(format!(
                "{}: tensors stored in byte order {:?}; movq reads little-endian checkpoints",
                path.display(),
                String::from_utf8_lossy(order)
            )));
        }
    }
    let pkl = archive.entries[pkl_name];
    if pkl.end - pkl.start > MAX_PICKLE_BYTES {
        return Err(Error::Pickle {
            path: path.into(),
            reason: format!(
                "data.pkl is {} bytes, more than the {MAX_PICKLE_BYTES} accepted",
                pkl.end - pkl.start
            ),
        });
    }
    let p = pickle::run(path, "data.pkl", &buf[pkl.start..pkl.end])?;
    let data_dir = format!("{prefix}data/");
    let storages: HashMap<&str, Entry> =
        archive.entries.iter().filter_map(|(n, e)| Some((n.strip_prefix(&data_dir)?, *e))).collect();
    index(path, buf, &p, &storages)
}

/// Indexes the state dict in `p`, whose storages are the byte ranges `storages` of `buf` by key.
fn index(path: &Path, buf: &[u8], p: &Pickle, storages: &HashMap<&str, Entry>) -> Result<Index> {
    let dict = state_dict(path, p)?;
    // Many keys may name one tensor, and each index entry owns its shape.
    let dims: usize = dict.iter().map(|(_, t)| t.size.len().max(1)).sum();
    if dims > pickle::MAX_TENSOR_DIMS {
        return Err(Error::TooLarge {
            what: format!("{}: the state dict", path.display()),
            reason: format!(
                "{} tensors with {dims} dimensions in all, more than the {} accepted",
                dict.len(),
                pickle::MAX_TENSOR_DIMS
            ),
        });
    }
    let strip = {
        let mut names = dict.iter().map(|(k, _)| *k);
        let first = names.next();
        first.is_some_and(|f| f.starts_with("module.")) && names.all(|k| k.starts_with("module."))
    };
    let mut index = Index { tensors: BTreeMap::new(), gathered: Vec::new() };
    for (key, t) in dict {
        let name = if strip { &key["module.".len()..] } else { key };
        let info = tensor_info(path, name, buf, storages, p, t, &mut index.gathered)?;
        // Python keeps the last of a repeated key; a saved state dict never repeats one, so a
        // file that does was made by hand, and which value was meant is not for movq to guess.
        if index.tensors.insert(name.to_string(), info).is_some() {
            return Err(Error::invalid_file(
                path,
                format!("the state dict sets tensor `{}` twice", crate::error::escape(name)),
            ));
        }
    }
    Ok(index)
}

/// The (name, tensor) pairs of the state dict in `p`, after unwrapping, in pickle order.
/// Entries whose value is not a tensor (step counters, hyper-parameters) are skipped.
fn state_dict<'p>(path: &Path, p: &'p Pickle) -> Result<Vec<(&'p str, &'p TensorRef)>> {
    let mut cur = p.root;
    for _ in 0..MAX_WRAPPERS {
        let Object::Dict(items) = &p.objects[cur] else {
            return Err(Error::Pickle {
                path: path.into(),
                reason: format!("the saved object is {}, not a dict of tensors", kind(&p.objects[cur])),
            });
        };
        let tensors: Vec<(&str, &TensorRef)> = items
            .iter()
            .filter_map(|&(k, v)| match &p.objects[v] {
                Object::Tensor(t) => Some((p.str(k)?, t)),
                _ => None,
            })
            .collect();
        if !tensors.is_empty() {
            return Ok(tensors);
        }
        // A repeated key takes its last value, as in Python.
        let wrapped = WRAPPER_KEYS
            .iter()
            .find_map(|w| items.iter().rev().find(|&&(k, _)| p.str(k) == Some(w)).map(|&(_, v)| v));
        match wrapped {
            Some(v) if matches!(p.objects[v], Object::Dict(_)) => cur = v,
            _ if items.is_empty() => return Ok(Vec::new()),
            _ => {
                let keys: Vec<String> = items
                    .iter()
                    .filter_map(|&(k, _)| p.str(k))
                    .take(12)
                    .map(|k| k.chars().take(64).collect())
                    .collect();
                return Err(Error::InvalidFile {
                    path: path.into(),
                    reason: format!(
                        "no tensors in the saved dict (keys {keys:?}); movq looks for a state dict at the \
                         top level or under one of {WRAPPER_KEYS:?}"
                    ),
                });
            }
        }
    }
    Err(Error::Pickle { path: path.into(), reason: format!("more than {MAX_WRAPPERS} nested wrapper dicts") })
}

fn kind(o: &Object) -> &'static str {
    match o {
        Object::None => "None",
        Object::Bool(_) => "a bool",
        Object::Int(_) | Object::BigInt => "an int",
        Object::Float(_) => "a float",
        Object::Str(_) => "a string",
        Object::Bytes(_) => "bytes",
        Object::Tuple(_) => "a tuple",
        Object::List(_) => "a list",
        Object::Dict(_) => "a dict",
        Object::Global(_) => "a class or function",
        Object::Storage { .. } => "a storage",
        Object::Tensor(_) => "a single tensor",
    }
}

fn dtype(t: StorageType) -> Dtype {
    match t {
        StorageType::F32 => Dtype::F32,
        StorageType::F16 => Dtype::F16,
        StorageType::BF16 => Dtype::BF16,
        StorageType::F64 => Dtype::F64,
        StorageType::I64 => Dtype::I64,
        StorageType::I32 => Dtype::I32,
        StorageType::I16 => Dtype::I16,
        StorageType::I8 => Dtype::I8,
        StorageType::U8 => Dtype::U8,
        StorageType::Bool => Dtype::BOOL,
    }
}

/// The index entry of tensor `name`: its byte range in the file when its strides are row-major,
/// else in `gathered`, where its elements are copied in row-major order.
fn tensor_info(
    path: &Path,
    name: &str,
    buf: &[u8],
    storages: &HashMap<&str, Entry>,
    p: &Pickle,
    t: &TensorRef,
    gathered: &mut Vec<u8>,
) -> Result<TensorInfo> {
    let invalid = |reason: String| Error::InvalidFile {
        path: path.into(),
        reason: format!("tensor `{name}`: {reason}"),
    };
    let Object::Storage { dtype: st, key, numel: storage_numel } = &p.objects[t.storage] else {
        return Err(invalid("its storage is not a storage".into()));
    };
    let elem = st.size() as u128;
    let entry_name = format!("storage `{key}`");
    let entry =
        storages.get(key.as_str()).ok_or_else(|| invalid(format!("its {entry_name} is not in the file")))?;
    let entry_len = (entry.end - entry.start) as u128;
    let shape: Vec<usize> = t
        .size
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| invalid(format!("size {:?} does not fit in memory", t.size)))?;
    if *storage_numel as u128 * elem > entry_len {
        return Err(Error::ByteSize {
            path: path.into(),
            name: name.to_string(),
            shape: vec![*storage_numel as usize],
            dtype: format!("{:?} (its {entry_name})", dtype(*st)),
            needed: (*storage_numel as u128 * elem).min(u64::MAX as u128) as u64,
            got: entry_len as u64,
        });
    }
    let numel: u128 = t.size.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
    let info = |start: usize, end: usize| TensorInfo { dtype: dtype(*st), shape: shape.clone(), start, end };
    if numel == 0 {
        return Ok(info(entry.start, entry.start));
    }
    // Highest element index the view touches, plus one (saturating: 64 axes of u64 * u64 can
    // exceed u128, and any such view is refused anyway).
    let extent: u128 = t.size.iter().zip(&t.stride).fold(t.offset as u128 + 1, |a, (&n, &s)| {
        a.saturating_add((n as u128 - 1).saturating_mul(s as u128))
    });
    if extent > *storage_numel as u128 {
        return Err(Error::BadOffsets {
            path: path.into(),
            name: name.to_string(),
            offsets: [
                t.offset.saturating_mul(elem as u64),
                extent.saturating_mul(elem).min(u64::MAX as u128) as u64,
            ],
            reason: format!(
                "reach past its {entry_name} of {storage_numel} elements (offset {}, size {:?}, stride {:?})",
                t.offset, t.size, t.stride
            ),
        });
    }
    let bytes = numel.saturating_mul(elem);
    let mut row_major = 1u128;
    let mut contiguous = true;
    for (&n, &s) in t.size.iter().zip(&t.stride).rev() {
        contiguous &= n == 1 || s as u128 == row_major;
        row_major = row_major.saturating_mul(n as u128);
    }
    // The offsets are inside the storage, itself inside the file, so they fit in usize; so
    // does a contiguous view's size (its extent is offset + numel).
    let elem = elem as usize;
    if contiguous {
        let start = entry.start + t.offset as usize * elem;
        return Ok(info(start, start + bytes as usize));
    }
    // A broadcast view (stride 0) can describe far more elements than its storage holds.
    if gathered.len() as u128 + bytes > buf.len() as u128 {
        return Err(Error::TooLarge {
            what: format!("{}: tensor `{name}`", path.display()),
            reason: format!(
                "a non-contiguous view of {bytes} bytes, copies included more than the file's {} bytes; \
                 save it with .contiguous()",
                buf.len()
            ),
        });
    }
    let bytes = bytes as usize;
    let start = buf.len() + gathered.len();
    gather(gathered, &buf[entry.start..entry.end], elem, t);
    Ok(info(start, start + bytes))
}

/// Appends the elements of the strided view `t` of `storage` to `out` in row-major order.
/// The caller checked that every index the view touches is inside `storage`.
fn gather(out: &mut Vec<u8>, storage: &[u8], elem: usize, t: &TensorRef) {
    let rank = t.size.len();
    let numel: u64 = t.size.iter().product();
    let mut idx = vec![0u64; rank];
    let mut src = t.offset;
    out.reserve(numel as usize * elem);
    for _ in 0..numel {
        let at = src as usize * elem;
        out.extend_from_slice(&storage[at..at + elem]);
        // Odometer step: the last axis fastest; an axis that wraps rewinds its stride steps.
        // Wrapping: a size-1 axis may carry any stride, and the step past the last element may
        // leave u64; every index actually read is exact and checked by the caller.
        for d in (0..rank).rev() {
            idx[d] += 1;
            src = src.wrapping_add(t.stride[d]);
            if idx[d] < t.size[d] {
                break;
            }
            src = src.wrapping_sub(t.stride[d].wrapping_mul(t.size[d]));
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests;
