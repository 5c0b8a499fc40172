//! Reading `.npy` arrays (format versions 1-3, little-endian f32/f64/f16, C order).

use crate::error::{Error, Result};
use crate::tensor::Element;
use half::f16;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers longer than this are rejected before parsing (numpy writes < 1 KiB).
const MAX_HEADER_BYTES: usize = 1 << 16;

/// Reads an npy file into its shape and row-major data converted to `T`.
pub fn read_npy<T: Element>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes).map_err(|reason| Error::invalid_file(path, reason))
}

/// Parses npy bytes; the error is a human-readable reason.
pub fn parse_npy<T: Element>(bytes: &[u8]) -> std::result::Result<(Vec<usize>, Vec<T>), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not an npy file (missing \\x93NUMPY magic)".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported npy version {v}")),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(format!("npy header of {header_len} bytes is too large"));
    }
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .ok_or("npy header runs past the end of the file (truncated file?)")?;
    let header = std::str::from_utf8(header).map_err(|_| "npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("npy header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("npy header has no 'fortran_order'")?;
    if fortran != "False" {
        return Err("Fortran-ordered npy arrays are not supported; save with C order".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("npy header has no 'shape'")?;
    let shape = parse_shape(shape_text)?;
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("npy shape overflows")?;
    let elem = match descr {
        "<f4" => 4,
        "<f8" => 8,
        "<f2" => 2,
        "|u1" => 1,
        other => {
            return Err(format!("unsupported npy dtype '{other}' (supported: <f4, <f8, <f2, |u1)"));
        }
    };
    let nbytes = numel.checked_mul(elem).ok_or("npy size overflows")?;
    let data = &bytes[data_start..];
    if data.len() != nbytes {
        return Err(format!(
            "npy data has {} bytes, shape {shape:?} of {descr} needs {nbytes} (truncated file?)",
            data.len()
        ));
    }
    let out = match elem {
        4 => {
            data.chunks_exact(4).map(|b| T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect()
        }
        8 => data
            .chunks_exact(8)
            .map(|b| T::from_f64(f64::from_le_bytes(b.try_into().expect("chunk of 8"))))
            .collect(),
        2 => data.chunks_exact(2).map(|b| T::from_f32(f16::from_le_bytes([b[0], b[1]]).to_f32())).collect(),
        _ => data.iter().map(|&b| T::from_f32(b as f32)).collect(),
    };
    Ok((shape, out))
}

/// Writes `data` of `shape` as a C-order npy file (`<f4` or `<f8` by `T`), atomically.
pub fn write_npy<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let descr = if std::mem::size_of::<T>() == 8 { "<f8" } else { "<f4" };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad so the data starts on a 64-byte boundary; the header ends with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    crate::io::atomic_write(path, |w| {
        use std::io::Write;
        w.write_all(MAGIC)?;
        w.write_all(&[1, 0])?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        super::safetensors::write_le(w, data)
    })
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
        while (10 + h.len() + 1) % 64 != 0 {
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
        let (shape, v) = parse_npy::<f64>(&b).unwrap();
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
        let data = [0u8; 8];
        let b = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", &data);
        assert!(parse_npy::<f32>(&b).unwrap_err().contains("truncated"));
        let b = npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", &data);
        assert!(parse_npy::<f32>(&b).unwrap_err().contains("Fortran"));
        let b = npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", &data);
        assert!(parse_npy::<f32>(&b).unwrap_err().contains("dtype"));
        assert!(parse_npy::<f32>(b"\x93NUMPY\x01").is_err());
    }
}
