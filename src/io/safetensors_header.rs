//! Validation of a safetensors header against the bytes that follow it. Written here rather
//! than taken from the `safetensors` crate so that every defect gets its own [`Error`] variant
//! naming the tensor, its shape and the byte counts involved.
//!
//! Format: 8-byte little-endian header length n, n bytes of JSON
//! `{"name": {"dtype", "shape", "data_offsets": [start, end]}, "__metadata__": {..}}`, then the
//! data section; offsets are relative to its start.

use crate::error::{Error, Result};
use safetensors::Dtype;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Name, dtype, shape and byte range (relative to the data section) of one stored tensor.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The `safetensors` crate's cap; headers of real checkpoints are a few hundred KB.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

pub(crate) struct Header {
    /// Byte offset of the data section in the file.
    pub data_start: usize,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: HashMap<String, String>,
}

/// Parses and validates the header of the safetensors file `buf`; `path` names it in errors.
/// On success every tensor's byte range lies inside `buf`, matches its shape and dtype, and no
/// two ranges overlap.
pub(crate) fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
    let file_len = buf.len() as u64;
    let Some(len_bytes) = buf.first_chunk::<8>() else {
        return Err(Error::Truncated {
            path: path.into(),
            what: "the header length field".into(),
            needed: 8,
            got: file_len,
        });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
        if let Some(kind) = other_format(buf) {
            let reason = format!("not a safetensors file: it starts like {kind}");
            return Err(Error::InvalidHeader { path: path.into(), format: "safetensors", reason });
        }
        return Err(Error::HeaderLength {
            path: path.into(),
            format: "safetensors",
            header_len,
            file_len,
            limit: MAX_HEADER_BYTES,
        });
    }
    let data_start = 8 + header_len as usize;
    let invalid = |reason: String| Error::InvalidHeader { path: path.into(), format: "safetensors", reason };
    let text = std::str::from_utf8(&buf[8..data_start]).map_err(|e| invalid(format!("not UTF-8 ({e})")))?;
    let UniqueObject(json) =
        serde_json::from_str(text.trim_end()).map_err(|e| invalid(format!("not a JSON object ({e})")))?;

    let data_len = file_len - data_start as u64;
    let mut tensors = BTreeMap::new();
    let mut metadata = HashMap::new();
    let mut total: u128 = 0;
    for (name, entry) in json {
        if name == "__metadata__" {
            let map = entry.as_object().ok_or_else(|| invalid("`__metadata__` is not an object".into()))?;
            for (k, v) in map {
                let v = v.as_str().ok_or_else(|| invalid(format!("`__metadata__.{k}` is not a string")))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let info =
            tensor_entry(path, &name, &entry).map_err(|r| invalid(format!("tensor `{name}`: {r}")))??;
        total += (info.end - info.start) as u128;
        tensors.insert(name, info);
    }
    let bad_offsets = |name: &str, info: &TensorInfo, reason: String| Error::BadOffsets {
        path: path.into(),
        name: name.to_string(),
        offsets: [info.start as u64, info.end as u64],
        reason,
    };
    // Overlaps first: two entries on the same bytes would otherwise add up to more than the
    // file holds and read as a truncated file.
    let mut by_start: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
    by_start.sort_by_key(|(_, t)| (t.start, t.end));
    for pair in by_start.windows(2) {
        let [(prev, p), (name, t)] = pair else { unreachable!("windows of 2") };
        if p.end > t.start {
            return Err(bad_offsets(name, t, format!("overlap tensor `{prev}` at [{}, {}]", p.start, p.end)));
        }
    }
    // Disjoint ranges whose sizes exceed the data section: the file was cut short.
    let max_end = by_start.iter().map(|(_, t)| t.end as u64).max().unwrap_or(0);
    if total > data_len as u128 {
        return Err(Error::Truncated {
            path: path.into(),
            what: format!("the data of its {} tensors", tensors.len()),
            needed: (data_start as u64).saturating_add(max_end),
            got: file_len,
        });
    }
    if let Some((name, t)) = by_start.iter().find(|(_, t)| t.end as u64 > data_len) {
        return Err(bad_offsets(name, t, format!("end outside the {data_len}-byte data section")));
    }
    Ok(Header { data_start, tensors, metadata })
}

/// What a file that failed the header-length check starts like, if it is a format movq users
/// commonly pass by mistake (a latent, a config, a PyTorch checkpoint under another name).
fn other_format(buf: &[u8]) -> Option<&'static str> {
    let text = buf.iter().find(|b| !b.is_ascii_whitespace());
    Some(match buf {
        [0x93, b'N', b'U', b'M', b'P', b'Y', ..] => "an .npy array",
        [0x80, 2..=5, ..] => {
            "a Python pickle (a legacy PyTorch checkpoint is read by its .pt / .pth / .bin / .ckpt name)"
        }
        [0x89, b'P', b'N', b'G', ..] => "a PNG image",
        _ if matches!(text, Some(b'{' | b'[')) => "JSON text",
        _ => return None,
    })
}

/// One tensor entry. Outer error: the entry is malformed (a reason for InvalidHeader); inner:
/// its dtype, offsets or byte size are wrong (a specific variant).
fn tensor_entry(path: &Path, name: &str, entry: &Value) -> std::result::Result<Result<TensorInfo>, String> {
    let obj = entry.as_object().ok_or("entry is not an object")?;
    let dtype_text = obj.get("dtype").and_then(Value::as_str).ok_or("no string `dtype`")?;
    let shape: Vec<usize> = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("no array `shape`")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or("`shape` holds something other than sizes")?;
    let offsets: Vec<u64> = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("no array `data_offsets`")?
        .iter()
        .map(Value::as_u64)
        .collect::<Option<_>>()
        .ok_or("`data_offsets` holds something other than byte offsets")?;
    let &[start, end] = offsets.as_slice() else {
        return Err(format!("`data_offsets` has {} entries, not 2", offsets.len()));
    };
    let Ok(dtype) = serde_json::from_value::<Dtype>(Value::String(dtype_text.to_string())) else {
        return Ok(Err(Error::UnsupportedDtype {
            path: path.into(),
            name: name.to_string(),
            dtype: dtype_text.to_string(),
        }));
    };
    if start > end {
        return Ok(Err(Error::BadOffsets {
            path: path.into(),
            name: name.to_string(),
            offsets: [start, end],
            reason: "are reversed (start after end)".into(),
        }));
    }
    // Overflow saturates: no file holds 2^128 bytes, so the comparison still fails.
    let bits = shape.iter().fold(dtype.bitsize() as u128, |a, &d| a.saturating_mul(d as u128));
    let needed = bits.div_ceil(8);
    if bits % 8 != 0 || needed != (end - start) as u128 {
        return Ok(Err(Error::ByteSize {
            path: path.into(),
            name: name.to_string(),
            shape,
            dtype: dtype_text.to_string(),
            needed: needed.min(u64::MAX as u128) as u64,
            got: end - start,
        }));
    }
    // Only fails on targets whose usize is narrower than 64 bits.
    let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
        return Err(format!("data_offsets [{start}, {end}] do not fit this machine's address space"));
    };
    Ok(Ok(TensorInfo { dtype, shape, start, end }))
}

/// A JSON object whose keys are unique. serde_json's map keeps the last of duplicate keys, so a
/// header naming a tensor twice would silently lose one entry; here it is an error.
struct UniqueObject(serde_json::Map<String, Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<UniqueObject, A::Error> {
                let mut map = serde_json::Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    if map.contains_key(&k) {
                        let k = crate::error::escape(&k).into_owned();
                        return Err(serde::de::Error::custom(format!("tensor `{k}` is listed twice")));
                    }
                    let v = a.next_value_seed(crate::io::json::value_at(&k))?;
                    map.insert(k, v);
                }
                Ok(UniqueObject(map))
            }
        }
        d.deserialize_map(Keys)
    }
}
