//! Reading `.npy` arrays (format versions 1-3, little-endian f32/f64/f16, C order).

use crate::error::{Error, Result};
use crate::tensor::Element;
use half::f16;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers longer than this are rejected before parsing (numpy writes < 1 KiB).
const MAX_HEADER_BYTES: usize = 1 << 16;

/// A parsed npy header: the array's shape, element size and dtype, and where its data is.
struct NpyHeader {
    shape: Vec<usize>,
    elem: usize,
    data_start: usize,
    nbytes: usize,
}

/// The bytes of the header (magic, version, length field and dict) at the start of an npy
/// file of `file_len` bytes, read before any data. `prefix` must hold the first
/// `min(file_len, 12 + MAX_HEADER_BYTES)` bytes.
fn header_len_of(prefix: &[u8]) -> Option<usize> {
    match prefix.get(6)? {
        1 => Some(10 + u16::from_le_bytes([*prefix.get(8)?, *prefix.get(9)?]) as usize),
        2 | 3 => Some(12 + u32::from_le_bytes(prefix.get(8..12)?.try_into().ok()?) as usize),
        _ => None,
    }
}

/// Parses and validates the header in `prefix` (see [`header_len_of`]) against the file
/// length: shape, dtype, and that the file holds exactly the declared data bytes.
fn parse_header(path: &Path, prefix: &[u8], file_len: u64) -> Result<NpyHeader> {
    let invalid = |reason: String| Error::InvalidHeader { path: path.into(), format: "npy", reason };
    if prefix.len() < 10 || &prefix[..6] != MAGIC {
        return Err(invalid("not an npy file (missing \\x93NUMPY magic)".into()));
    }
    let (header_len, header_start) = match prefix[6] {
        1 => (u16::from_le_bytes([prefix[8], prefix[9]]) as usize, 10),
        2 | 3 if prefix.len() >= 12 => {
            (u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize, 12)
        }
        v => return Err(invalid(format!("unsupported npy version {v}"))),
    };
    let data_start = header_start + header_len;
    if header_len > MAX_HEADER_BYTES || data_start as u64 > file_len || data_start > prefix.len() {
        return Err(Error::HeaderLength {
            path: path.into(),
            format: "npy",
            header_len: header_len as u64,
            file_len,
            limit: MAX_HEADER_BYTES as u64,
        });
    }
    let header = std::str::from_utf8(&prefix[header_start..data_start])
        .map_err(|_| invalid("header is not text".into()))?;
    let field =
        |key: &str| dict_value(header, key).ok_or_else(|| invalid(format!("no '{key}' in {header:?}")));
    let descr = field("descr")?.trim_matches(|c| c == '\'' || c == '"');
    if field("fortran_order")? != "False" {
        return Err(Error::Unsupported(format!(
            "{}: Fortran-ordered npy arrays; save with C order",
            path.display()
        )));
    }
    let shape = parse_shape(field("shape")?).map_err(invalid)?;
    let elem = match descr {
        "<f4" => 4,
        "<f8" => 8,
        "<f2" => 2,
        "|u1" => 1,
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.into(),
                name: "npy array".into(),
                dtype: format!("'{other}' (npy; supported: <f4, <f8, <f2, |u1)"),
            });
        }
    };
    let nbytes =
        shape.iter().try_fold(elem, |a: usize, &d| a.checked_mul(d)).ok_or_else(|| Error::TooLarge {
            what: format!("{}: npy array of shape {shape:?}", path.display()),
            reason: "its byte size overflows".into(),
        })?;
    let data_len = file_len - data_start as u64;
    if data_len < nbytes as u64 {
        return Err(Error::Truncated {
            path: path.into(),
            what: format!("an array of shape {shape:?} and dtype {descr}"),
            needed: data_start as u64 + nbytes as u64,
            got: file_len,
        });
    }
    if data_len > nbytes as u64 {
        return Err(Error::ByteSize {
            path: path.into(),
            name: "npy array".into(),
            shape,
            dtype: descr.to_string(),
            needed: nbytes as u64,
            got: data_len,
        });
    }
    Ok(NpyHeader { shape, elem, data_start, nbytes })
}

/// Appends the little-endian elements of `data` (whole elements of `elem` bytes) to `out`.
fn convert<T: Element>(elem: usize, data: &[u8], out: &mut Vec<T>) {
    match elem {
        4 => out
            .extend(data.chunks_exact(4).map(|b| T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))),
        8 => out.extend(
            data.chunks_exact(8).map(|b| T::from_f64(f64::from_le_bytes(b.try_into().expect("chunk of 8")))),
        ),
        2 => out.extend(data.chunks_exact(2).map(|b| T::from_f32(f16::from_le_bytes([b[0], b[1]]).to_f32()))),
        _ => out.extend(data.iter().map(|&b| T::from_f32(b as f32))),
    }
}

/// Opens a regular npy file and parses its header, reading only the header's bytes.
fn open_header(path: &Path) -> Result<(std::fs::File, NpyHeader)> {
    let (mut file, meta) = super::paths::open_regular(path, "npy array")?;
    let io = |e| Error::io(path, e);
    let mut prefix = Vec::new();
    (&mut file).take(12).read_to_end(&mut prefix).map_err(io)?;
    if let Some(total) = header_len_of(&prefix) {
        let want = total.min(12 + MAX_HEADER_BYTES).saturating_sub(prefix.len());
        (&mut file).take(want as u64).read_to_end(&mut prefix).map_err(io)?;
    }
    let header = parse_header(path, &prefix, meta.len())?;
    file.seek(SeekFrom::Start(header.data_start as u64)).map_err(io)?;
    Ok((file, header))
}

/// Whether an npy file holds floats (<f4, <f8, <f2) rather than bytes (|u1), from its header.
pub fn npy_is_float(path: &Path) -> Result<bool> {
    Ok(open_header(path)?.1.elem > 1)
}

/// The shape an npy file declares, from its header alone (validated against the file length).
pub fn npy_shape(path: &Path) -> Result<Vec<usize>> {
    Ok(open_header(path)?.1.shape)
}

/// Reads an npy file into its shape and row-major data converted to `T`. The header is read
/// and checked first (a regular file, the magic, a dtype, exactly the declared data bytes);
/// then only the declared bytes are read, converted a block at a time.
pub fn read_npy<T: Element>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let (mut file, h) = open_header(path)?;
    let numel = h.nbytes / h.elem;
    let mut out = Vec::new();
    out.try_reserve_exact(numel).map_err(|_| Error::TooLarge {
        what: format!("{}: npy array of shape {:?}", path.display(), h.shape),
        reason: format!(
            "cannot allocate {} MiB for it",
            numel.saturating_mul(std::mem::size_of::<T>()) >> 20
        ),
    })?;
    let mut block = vec![0u8; (1 << 20) / 8 * 8];
    let mut left = h.nbytes;
    while left > 0 {
        let n = left.min(block.len());
        file.read_exact(&mut block[..n]).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::InputChanged { path: path.into(), what: "it got shorter while being read".into() }
            }
            _ => Error::io(path, e),
        })?;
        convert(h.elem, &block[..n], &mut out);
        left -= n;
    }
    Ok((h.shape, out))
}

/// Parses the npy file `bytes`; `path` names it in errors.
pub fn parse_npy<T: Element>(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<T>)> {
    let h = parse_header(path, bytes, bytes.len() as u64)?;
    let mut out = Vec::new();
    convert(h.elem, &bytes[h.data_start..], &mut out);
    Ok((h.shape, out))
}

/// Writes `data` of `shape` as a C-order npy file (`<f4` or `<f8` by `T`), atomically.
pub fn write_npy<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let header = npy_header(shape, std::mem::size_of::<T>());
    crate::io::atomic_write(path, |w| {
        use std::io::Write;
        w.write_all(&header)?;
        super::safetensors::write_le(w, data)
    })
}

/// The bytes before the data of a version 1.0 npy file of `shape` with `elem`-byte floats
/// (f4 or f8, little-endian, C order), padded so the data starts on a 64-byte boundary.
pub(crate) fn npy_header(shape: &[usize], elem: usize) -> Vec<u8> {
    let descr = if elem == 8 { "<f8" } else { "<f4" };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // The header ends with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// The raw text of `key`'s value in a Python dict literal (`{'key': value, ...}`).
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let pos = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[pos + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end =
        if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}']).unwrap_or(rest.len()) };
    Some(rest[..end].trim())
}

fn parse_shape(text: &str) -> std::result::Result<Vec<usize>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("npy shape '{text}' is not a tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("npy shape entry '{s}' is not a size")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn npy_reads_f32_c_order() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 3, 1), }", &data);
        let (shape, v) = parse_npy::<f64>(Path::new("x.npy"), &b).unwrap();
        assert_eq!(shape, vec![1, 2, 1, 3, 1]);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn npy_write_read_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("z.npy");
        let data: Vec<f64> = (0..24).map(|i| i as f64 * 0.5 - 3.0).collect();
        write_npy(&p, &[1, 2, 3, 4, 1], &data).unwrap();
        let (shape, back) = read_npy::<f64>(&p).unwrap();
        assert_eq!(shape, vec![1, 2, 3, 4, 1]);
        assert_eq!(back, data);
    }

    #[test]
    fn npy_rejects_truncated_and_fortran_and_int() {
        let p = Path::new("x.npy");
        let data = [0u8; 8];
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &data);
        let len = b.len() as u64;
        assert!(
            matches!(parse_npy::<f32>(p, &b), Err(Error::Truncated { needed, got, .. }) if (needed, got) == (len + 4, len))
        );
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &data);
        assert!(matches!(parse_npy::<f32>(p, &b), Err(Error::ByteSize { needed: 4, got: 8, .. })));
        let b = npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", &data);
        assert!(matches!(parse_npy::<f32>(p, &b), Err(Error::Unsupported(m)) if m.contains("Fortran")));
        let b = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", &data);
        assert!(matches!(parse_npy::<f32>(p, &b), Err(Error::UnsupportedDtype { .. })));
        assert!(matches!(parse_npy::<f32>(p, b"\x93NUMPY\x01"), Err(Error::InvalidHeader { .. })));
    }

    #[test]
    fn npy_rejects_header_past_the_end_and_absurd_shapes() {
        let p = Path::new("x.npy");
        let mut b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", &[0; 4]);
        let header_len = (b.len() - 10 - 4) as u64;
        b.truncate(40);
        let r = parse_npy::<f32>(p, &b);
        assert!(matches!(r, Err(Error::HeaderLength { header_len: h, file_len: 40, .. }) if h == header_len));
        let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 4611686018427387904, 8, 8), }";
        assert!(matches!(parse_npy::<f32>(p, &npy(huge, &[])), Err(Error::TooLarge { .. })));
        let bad = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -4), }";
        assert!(matches!(parse_npy::<f32>(p, &npy(bad, &[])), Err(Error::InvalidHeader { .. })));
    }
}
