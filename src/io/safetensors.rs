//! Memory-mapped safetensors reading with an owned index (no self-referential borrow), and an
//! atomic safetensors writer.
//!
//! Header validation (size cap, JSON, offsets inside the data and not overlapping, byte sizes
//! matching shapes) is in `safetensors_header.rs`.

pub use super::safetensors_header::TensorInfo;
use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

/// The system's page size (`sysconf(_SC_PAGESIZE)`; 4096 if it cannot tell).
#[cfg(unix)]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as usize } else { 4096 }
    })
}

/// An opened safetensors file or `torch.save` checkpoint (see `io::torch`): the mapped bytes
/// plus an owned index of its tensors.
pub struct WeightFile {
    path: PathBuf,
    bytes: Backing,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
    /// Row-major copies of a torch file's non-contiguous tensors; their byte ranges start at the
    /// file's length (see `raw`). Empty for safetensors.
    gathered: Vec<u8>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

impl WeightFile {
    /// Maps `path` and parses its header: a `torch.save` checkpoint when it starts with
    /// `PK\x03\x04` (or the legacy format's magic number), else a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (file, meta) = super::paths::open_regular(path, "safetensors file")?;
        let len = meta.len();
        if len < 8 {
            // Too short to map usefully (an empty file cannot be mapped); the parser names the defect.
            let bytes = super::paths::read_small_file(path, "safetensors file", 8)?;
            return Self::parse(path.to_path_buf(), Backing::Owned(bytes));
        }
        // SAFETY: the map is read-only and private to this process, of a regular file (checked
        // by open_regular). Another process truncating or rewriting the file while it is mapped
        // is outside Rust's model: a read past the new end raises SIGBUS, which the `movq`
        // binary turns into a named error (src/cli/signals.rs); movq never writes to its inputs
        // (outputs are refused by file identity) and compares length and mtime after a decode.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path.to_path_buf(), Backing::Mmap(mmap))
    }

    /// Parses an in-memory safetensors or `torch.save` buffer (used by tests and fuzzing). `path`
    /// names it in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.into(), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Backing) -> Result<Self> {
        let buf: &[u8] = match &bytes {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        };
        if let Some(index) = super::torch::parse_if_torch(&path, buf) {
            let super::torch::Index { tensors, gathered } = index?;
            let metadata = HashMap::new();
            return Ok(WeightFile { path, bytes, data_start: 0, tensors, metadata, gathered });
        }
        let header = super::safetensors_header::parse(&path, buf)?;
        let super::safetensors_header::Header { data_start, tensors, metadata } = header;
        Ok(WeightFile { path, bytes, data_start, tensors, metadata, gathered: Vec::new() })
    }

    /// Bytes of the file (or buffer).
    pub fn byte_len(&self) -> usize {
        match &self.bytes {
            Backing::Mmap(m) => m.len(),
            Backing::Owned(v) => v.len(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The `__metadata__` string map of the header (empty if absent).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    fn raw(&self, info: &TensorInfo) -> &[u8] {
        let buf: &[u8] = match &self.bytes {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        };
        let (start, end) = (self.data_start + info.start, self.data_start + info.end);
        match start.checked_sub(buf.len()) {
            Some(at) if !self.gathered.is_empty() => &self.gathered[at..at + (end - start)],
            _ => &buf[start..end],
        }
    }

    /// Tensor `name` viewed in place as f32: `Some` when it is stored as F32 at a 4-byte aligned
    /// address on a little-endian machine (safetensors data usually is).
    pub fn f32_view(&self, name: &str) -> Option<&[f32]> {
        let info = self.info(name)?;
        if info.dtype != Dtype::F32 || cfg!(target_endian = "big") {
            return None;
        }
        let raw = self.raw(info);
        // SAFETY: every 4-byte pattern is a valid f32 and the bytes are little-endian (checked
        // above); `align_to` only puts correctly aligned whole elements in the middle slice, and
        // the view borrows `self`, which owns the mapping.
        let (pre, mid, post) = unsafe { raw.align_to::<f32>() };
        (pre.is_empty() && post.is_empty()).then_some(mid)
    }

    /// Drops this process's resident pages of tensor `name` (the whole pages inside its bytes;
    /// `madvise(MADV_DONTNEED)`): they stop counting in its RSS, and the next read maps them
    /// again from the page cache (or the file). A no-op for buffers that are not mapped, for
    /// tensors gathered into owned memory, for unknown names and off Unix.
    pub fn release(&self, name: &str) {
        #[cfg(unix)]
        if let (Backing::Mmap(m), Some(info)) = (&self.bytes, self.tensors.get(name)) {
            let (start, end) = (self.data_start + info.start, self.data_start + info.end);
            let page = page_size();
            // The mapping starts on a page boundary, so offsets into it align like addresses.
            let (a, b) = (start.next_multiple_of(page), end.min(m.len()) / page * page);
            if a < b {
                // SAFETY: the mapping is read-only and private (open()), so it holds no private
                // copies: MADV_DONTNEED only removes page-table entries, and a later access,
                // including through a `&[f32]` view still alive, maps the same file bytes again.
                // (A file changed by another process meanwhile is the case open() describes,
                // caught by the SIGBUS handler and the after-decode checks.) The range lies
                // inside the mapping. Failure only leaves the pages resident.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
            }
        }
    }

    /// Tensor `name` viewed in place as `T` (see [`Self::f32_view`]; f64 compute always copies).
    pub fn view<T: Element>(&self, name: &str) -> Option<&[T]> {
        T::from_f32_slice(self.f32_view(name)?)
    }

    /// Reads tensor `name` converted to `T`: returns its shape and row-major data.
    /// F32, F64, F16 and BF16 are read; other dtypes are an [`Error::UnsupportedDtype`].
    pub fn read<T: Element>(&self, name: &str) -> Result<(Vec<usize>, Vec<T>)> {
        let info = self.info(name).ok_or_else(|| Error::MissingWeight {
            path: self.path.clone(),
            name: name.to_string(),
            expected: vec![],
        })?;
        let raw = self.raw(info);
        let data: Vec<T> = match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| T::from_f64(f64::from_le_bytes(b.try_into().expect("chunk of 8"))))
                .collect(),
            Dtype::F16 => {
                raw.chunks_exact(2).map(|b| T::from_f32(f16::from_le_bytes([b[0], b[1]]).to_f32())).collect()
            }
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|b| T::from_f32(bf16::from_le_bytes([b[0], b[1]]).to_f32())).collect()
            }
            other => {
                return Err(Error::UnsupportedDtype {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        // The header parser checked numel * dtype size == byte length.
        debug_assert_eq!(data.len(), info.shape.iter().product::<usize>());
        // The copy is what callers use from now on; the mapped bytes need not stay resident.
        self.release(name);
        Ok((info.shape.clone(), data))
    }
}

/// Writes every tensor of `src` (a safetensors or `torch.save` file, tensors named as read:
/// wrappers unwrapped) whose name passes `keep` to a safetensors file at `path`, each in its
/// stored dtype and bytes, with `metadata`. Written atomically. Returns the tensor count.
pub fn convert_to_safetensors(
    src: &WeightFile,
    path: &Path,
    keep: impl Fn(&str) -> bool,
    metadata: &BTreeMap<String, String>,
) -> Result<usize> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("string map"));
    }
    let names: Vec<&str> = src.names().filter(|n| keep(n)).collect();
    let mut offset = 0usize;
    for name in &names {
        let info = src.info(name).expect("listed name");
        let end = offset + (info.end - info.start);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": info.dtype, "shape": info.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&header).expect("json of plain values");
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(' ');
    }
    crate::io::atomic_write(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        for name in &names {
            w.write_all(src.raw(src.info(name).expect("listed name")))?;
        }
        Ok(())
    })?;
    Ok(names.len())
}

/// Writes `tensor` as a safetensors file holding the single tensor `name`, in the tensor's
/// element type (F32 or F64), with `metadata` in the header. Written atomically.
pub fn write_safetensors<T: Element>(
    path: &Path,
    name: &str,
    tensor: &Tensor<T>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_tensors(path, &[(name, &tensor.shape().dims()[..], tensor.data())], metadata)
}

/// Writes several tensors `(name, shape, data)` in `T`'s dtype (F32 or F64) with `metadata`.
/// The file is written to a temporary name beside `path` and renamed into place, so a failed
/// run leaves no partial output.
pub fn write_tensors<T: Element>(
    path: &Path,
    tensors: &[(&str, &[usize], &[T])],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    for (_, shape, data) in tensors {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    }
    let entries: Vec<(&str, &[usize])> = tensors.iter().map(|(n, s, _)| (*n, *s)).collect();
    let header = safetensors_header(&entries, std::mem::size_of::<T>(), metadata);
    crate::io::atomic_write(path, |w| {
        w.write_all(&header)?;
        for (_, _, data) in tensors {
            write_le(w, data)?;
        }
        Ok(())
    })
}

/// The bytes before the data of a safetensors file holding `tensors` (name, shape) of
/// `elem`-byte floats (F32 or F64) one after another, with `metadata`; padded to 8 bytes.
pub(crate) fn safetensors_header(
    tensors: &[(&str, &[usize])],
    elem: usize,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let dtype = if elem == 8 { "F64" } else { "F32" };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("string map"));
    }
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let end = offset + shape.iter().product::<usize>() * elem;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&header).expect("json of plain values");
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// Writes `data` as little-endian f32 or f64 (by `T`).
pub(crate) fn write_le<T: Element>(w: &mut impl Write, data: &[T]) -> std::io::Result<()> {
    let elem = std::mem::size_of::<T>();
    let mut bytes = Vec::with_capacity((1 << 14) * elem);
    for chunk in data.chunks(1 << 14) {
        bytes.clear();
        for &x in chunk {
            if elem == 8 {
                bytes.extend_from_slice(&x.to_f64().to_le_bytes());
            } else {
                bytes.extend_from_slice(&(x.to_f64() as f32).to_le_bytes());
            }
        }
        w.write_all(&bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors buffer: header padded so the data starts 8-aligned, then the raw data.
    fn file_bytes(entries: &[(&str, &str, &[usize], &[u8])]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut off = 0;
        for (name, dtype, shape, data) in entries {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + data.len()]}),
            );
            off += data.len();
        }
        let mut text = serde_json::to_string(&header).unwrap();
        while !(8 + text.len()).is_multiple_of(8) {
            text.push(' ');
        }
        let mut b = (text.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(text.as_bytes());
        for (_, _, _, data) in entries {
            b.extend_from_slice(data);
        }
        b
    }

    #[test]
    fn from_bytes_reads_every_dtype_and_views_aligned_f32() {
        let f32s: Vec<u8> = [1.5f32, -2.0, 3.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f64s: Vec<u8> = [0.125f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16s: Vec<u8> =
            [f16::from_f32(0.5), f16::from_f32(-4.0)].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf16s: Vec<u8> = [bf16::from_f32(2.0)].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b = file_bytes(&[
            ("a", "F32", &[3], &f32s),
            ("b", "F64", &[1], &f64s),
            ("c", "F16", &[2], &f16s),
            ("d", "BF16", &[1, 1], &bf16s),
        ]);
        let file = WeightFile::from_bytes("t.safetensors", b).unwrap();
        assert_eq!(file.read::<f32>("a").unwrap(), (vec![3], vec![1.5, -2.0, 3.25]));
        assert_eq!(file.read::<f64>("b").unwrap().1, vec![0.125]);
        assert_eq!(file.read::<f32>("c").unwrap().1, vec![0.5, -4.0]);
        assert_eq!(file.read::<f64>("d").unwrap(), (vec![1, 1], vec![2.0]));
        // The data starts at an 8-aligned offset; the system allocator aligns the Vec to 16, Miri
        // may place it anywhere, and then the view must be refused rather than misread.
        let view = file.f32_view("a");
        assert!(view.is_some() || cfg!(miri), "an aligned F32 tensor must be viewable");
        if let Some(v) = view {
            assert_eq!(v, &[1.5f32, -2.0, 3.25][..]);
        }
        assert_eq!(file.f32_view("b"), None);
    }

    #[test]
    fn f32_view_refuses_misaligned_data() {
        let f32s: Vec<u8> = [7.0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = WeightFile::from_bytes(
            "t.safetensors",
            file_bytes(&[("pad", "U8", &[2], &[0, 0]), ("a", "F32", &[1], &f32s)]),
        )
        .unwrap();
        if let Some(v) = file.f32_view("a") {
            assert!(cfg!(miri) && v == [7.0], "a misaligned F32 tensor must not be viewed");
        }
        assert_eq!(file.read::<f32>("a").unwrap().1, vec![7.0]);
    }

    // Miri cannot run this: file-backed mmap is a foreign call it does not emulate.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn open_maps_the_file() {
        let f32s: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, file_bytes(&[("w", "F32", &[2], &f32s)])).unwrap();
        let file = WeightFile::open(&p).unwrap();
        assert_eq!(file.f32_view("w"), Some(&[1.0f32, 2.0][..]));
    }
}
