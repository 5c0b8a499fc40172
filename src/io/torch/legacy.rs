//! The legacy `torch.save` format (torch < 1.6, or `_use_new_zipfile_serialization=False`;
//! `torch/serialization.py` `_legacy_save`): five pickles in a row (torch's magic number, the
//! format version 1001, a dict of system facts, the saved object with storages as persistent
//! ids `('storage', class, key, location, numel, None)`, and the sorted list of storage keys),
//! then each storage in that order as a little-endian i64 element count and its raw bytes.

use super::pickle::{self, Object, Pickle};
use super::{Entry, Index};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The only legacy format version torch has written.
const PROTOCOL_VERSION: i64 = 1001;

/// Runs the pickle at `*at` in `buf` and moves `*at` past it.
fn next(path: &Path, buf: &[u8], at: &mut usize, what: &str) -> Result<Pickle> {
    let p = pickle::run(path, what, &buf[*at..])?;
    *at += p.len;
    Ok(p)
}

pub(super) fn parse(path: &Path, buf: &[u8]) -> Result<Index> {
    let err = |reason: String| Error::Pickle { path: path.into(), reason };
    let mut at = 0;
    next(path, buf, &mut at, "the magic number")?;
    let version = next(path, buf, &mut at, "the format version")?;
    if version.objects[version.root] != Object::Int(PROTOCOL_VERSION) {
        return Err(err(format!(
            "legacy format version {:?}, not {PROTOCOL_VERSION}",
            version.objects[version.root]
        )));
    }
    let sys = next(path, buf, &mut at, "the system info")?;
    if let Object::Dict(items) = &sys.objects[sys.root] {
        let little = items.iter().rev().find(|&&(k, _)| sys.str(k) == Some("little_endian"));
        if little.is_some_and(|&(_, v)| sys.objects[v] == Object::Bool(false)) {
            return Err(Error::Unsupported(format!(
                "{}: saved on a big-endian machine; movq reads little-endian checkpoints",
                path.display()
            )));
        }
    }
    let main = next(path, buf, &mut at, "the saved object")?;
    let keys = next(path, buf, &mut at, "the storage key list")?;
    let Object::List(list) = &keys.objects[keys.root] else {
        return Err(err("the storage key list is not a list".into()));
    };
    let elem_size: HashMap<&str, usize> = main
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Storage { dtype, key, .. } => Some((key.as_str(), dtype.size())),
            _ => None,
        })
        .collect();
    let mut storages = HashMap::new();
    for &k in list {
        let key = keys.str(k).ok_or_else(|| err("a storage key is not a string".into()))?;
        let size =
            *elem_size.get(key).ok_or_else(|| err(format!("storage `{key}` is listed but never used")))?;
        let truncated = |needed: u128| Error::Truncated {
            path: path.into(),
            what: format!("storage `{key}`"),
            needed: needed.min(u64::MAX as u128) as u64,
            got: buf.len() as u64,
        };
        let count = buf.get(at..at + 8).ok_or_else(|| truncated(at as u128 + 8))?;
        let mut le = [0u8; 8];
        le.copy_from_slice(count);
        let numel = u64::from_le_bytes(le);
        let end = (at + 8) as u128 + numel as u128 * size as u128;
        if end > buf.len() as u128 {
            return Err(truncated(end));
        }
        storages.insert(key, Entry { start: at + 8, end: end as usize });
        at = end as usize;
    }
    super::index(path, buf, &main, &storages)
}
