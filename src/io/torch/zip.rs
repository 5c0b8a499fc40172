//! The subset of ZIP that `torch.save` writes (PKWARE APPNOTE 6.3.x, sections 4.3 and 4.5):
//! STORED entries, found through the end-of-central-directory record (and its ZIP64 twin,
//! which PyTorch's miniz writer emits for large archives), each entry's data located through its
//! local header. Compression, encryption and multi-disk archives are refused by name.
//!
//! Every offset and size read from the file is checked against the file length before use, and
//! nothing is allocated from an unchecked count: the entry list grows one parsed entry at a time.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// More entries than any checkpoint has (one per storage plus four bookkeeping files).
pub(crate) const MAX_ENTRIES: usize = 1 << 20;
/// Longest entry name accepted; torch's are `<archive>/data/<n>`.
pub(crate) const MAX_NAME_BYTES: usize = 4096;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;

/// Byte range `[start, end)` of one STORED entry's data in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub start: usize,
    pub end: usize,
}

/// Entry names to data ranges.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    pub entries: HashMap<String, Entry>,
}

/// Bounds-checked little-endian reads from the file, each failure a [`Error::Zip`].
struct Reader<'a> {
    path: &'a Path,
    buf: &'a [u8],
}

impl Reader<'_> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Zip { path: self.path.into(), reason: reason.into() }
    }

    fn bytes(&self, at: u64, len: usize, what: &str) -> Result<&[u8]> {
        let end = at.checked_add(len as u64).filter(|&e| e <= self.buf.len() as u64);
        match end {
            Some(end) => Ok(&self.buf[at as usize..end as usize]),
            None => Err(self.err(format!(
                "{what} at byte {at} ({len} bytes) runs past the end of the {}-byte file",
                self.buf.len()
            ))),
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Where the central directory is and how many entries it declares.
struct Directory {
    offset: u64,
    size: u64,
    count: u64,
}

/// Reads the central directory of the ZIP file `buf`; `path` names it in errors.
pub(crate) fn parse(path: &Path, buf: &[u8]) -> Result<Archive> {
    let r = Reader { path, buf };
    let dir = directory(&r)?;
    if dir.count > MAX_ENTRIES as u64 {
        return Err(r.err(format!("{} entries, more than the {MAX_ENTRIES} accepted", dir.count)));
    }
    // Each entry takes at least CENTRAL_LEN bytes, so a count the directory cannot hold is a lie.
    if dir.count.saturating_mul(CENTRAL_LEN as u64) > dir.size {
        return Err(r.err(format!(
            "the central directory declares {} entries but is only {} bytes long",
            dir.count, dir.size
        )));
    }
    let cd = r.bytes(dir.offset, dir.size as usize, "the central directory")?;
    let mut entries = HashMap::new();
    let mut at = 0usize;
    for i in 0..dir.count {
        let (name, entry, next) = central_entry(&r, cd, at, dir.offset)
            .map_err(|reason| r.err(format!("central directory entry {i}: {reason}")))??;
        if entries.insert(name.clone(), entry).is_some() {
            return Err(r.err(format!("entry `{name}` appears twice")));
        }
        at = next;
    }
    Ok(Archive { entries })
}

fn directory(r: &Reader) -> Result<Directory> {
    let len = r.buf.len();
    if len < EOCD_LEN {
        return Err(Error::Truncated {
            path: r.path.into(),
            what: "a ZIP end-of-central-directory record".into(),
            needed: EOCD_LEN as u64,
            got: len as u64,
        });
    }
    // The record is the last thing in the file, followed only by a comment of at most 64 KiB.
    let lowest = len.saturating_sub(EOCD_LEN + u16::MAX as usize);
    let pos = (lowest..=len - EOCD_LEN)
        .rev()
        .find(|&p| u32_at(r.buf, p) == EOCD_SIG)
        .ok_or_else(|| r.err("no end-of-central-directory record (not a ZIP file, or truncated)"))?;
    let e = &r.buf[pos..pos + EOCD_LEN];
    let (disk, cd_disk) = (u16_at(e, 4), u16_at(e, 6));
    let (on_disk, count) = (u16_at(e, 8) as u64, u16_at(e, 10) as u64);
    let (size, offset) = (u32_at(e, 12) as u64, u32_at(e, 16) as u64);
    let zip64 = count == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff;
    if !zip64 {
        if disk != 0 || cd_disk != 0 || on_disk != count {
            return Err(r.err("multi-disk archives are not supported"));
        }
        return Ok(Directory { offset, size, count });
    }
    let loc_at = pos
        .checked_sub(ZIP64_LOCATOR_LEN)
        .ok_or_else(|| r.err("ZIP64 sizes but no room for the ZIP64 locator"))?;
    let loc = &r.buf[loc_at..pos];
    if u32_at(loc, 0) != ZIP64_LOCATOR_SIG {
        return Err(r.err("ZIP64 sizes but no ZIP64 end-of-central-directory locator"));
    }
    let rec_at = u64_at(loc, 8);
    let rec = r.bytes(rec_at, ZIP64_EOCD_LEN, "the ZIP64 end-of-central-directory record")?;
    if u32_at(rec, 0) != ZIP64_EOCD_SIG {
        return Err(r.err(format!("no ZIP64 end-of-central-directory record at byte {rec_at}")));
    }
    if u32_at(loc, 4) != 0 || u32_at(loc, 16) > 1 || u32_at(rec, 16) != 0 || u32_at(rec, 20) != 0 {
        return Err(r.err("multi-disk archives are not supported"));
    }
    let (on_disk, count) = (u64_at(rec, 24), u64_at(rec, 32));
    if on_disk != count {
        return Err(r.err("multi-disk archives are not supported"));
    }
    Ok(Directory { offset: u64_at(rec, 48), size: u64_at(rec, 40), count })
}

type Parsed = std::result::Result<Result<(String, Entry, usize)>, String>;

/// The central directory entry at `at` in `cd`: its name, data range and the next entry's
/// offset. Outer error: the directory itself is malformed (a reason); inner: the local header
/// it points to is.
fn central_entry(r: &Reader, cd: &[u8], at: usize, cd_offset: u64) -> Parsed {
    let fixed = cd.get(at..at + CENTRAL_LEN).ok_or("runs past the end of the central directory")?;
    if u32_at(fixed, 0) != CENTRAL_SIG {
        return Err("bad signature".into());
    }
    let (flags, method) = (u16_at(fixed, 8), u16_at(fixed, 10));
    let mut compressed = u32_at(fixed, 20) as u64;
    let mut size = u32_at(fixed, 24) as u64;
    let (name_len, extra_len, comment_len) =
        (u16_at(fixed, 28) as usize, u16_at(fixed, 30) as usize, u16_at(fixed, 32) as usize);
    let mut disk = u16_at(fixed, 34) as u32;
    let mut local = u32_at(fixed, 42) as u64;
    let name_at = at + CENTRAL_LEN;
    let next = name_at + name_len + extra_len + comment_len;
    if next > cd.len() {
        return Err("name, extra field or comment runs past the end of the central directory".into());
    }
    if name_len > MAX_NAME_BYTES {
        return Err(format!("name of {name_len} bytes, longer than the {MAX_NAME_BYTES} accepted"));
    }
    let name = std::str::from_utf8(&cd[name_at..name_at + name_len]).map_err(|_| "name is not UTF-8")?;
    let what = |reason: String| format!("`{name}`: {reason}");
    if flags & 1 != 0 {
        return Err(what("encrypted entries are not supported".into()));
    }
    if method != 0 {
        return Err(what(format!(
            "compressed (method {method}); torch.save writes stored entries, so re-save it with torch.save"
        )));
    }
    let extra = &cd[name_at + name_len..name_at + name_len + extra_len];
    zip64_extra(extra, &mut size, &mut compressed, &mut local, &mut disk).map_err(what)?;
    if disk != 0 {
        return Err(what("multi-disk archives are not supported".into()));
    }
    if compressed != size {
        return Err(what(format!("stored entry with compressed size {compressed} != size {size}")));
    }
    if local >= cd_offset {
        return Err(what(format!("local header offset {local} is not before the central directory")));
    }
    Ok(local_data(r, name, local, size).map(|entry| (name.to_string(), entry, next)))
}

/// Replaces the 32-bit fields saturated at 0xffffffff (0xffff for the disk) by their values in
/// the ZIP64 extended-information extra field, in the APPNOTE 4.5.3 order.
fn zip64_extra(
    mut extra: &[u8],
    size: &mut u64,
    compressed: &mut u64,
    local: &mut u64,
    disk: &mut u32,
) -> std::result::Result<(), String> {
    while extra.len() >= 4 {
        let (id, len) = (u16_at(extra, 0), u16_at(extra, 2) as usize);
        let body = extra.get(4..4 + len).ok_or("extra field runs past its declared length")?;
        if id == ZIP64_EXTRA_ID {
            let mut at = 0;
            let mut take = |field: &mut u64| -> std::result::Result<(), String> {
                let bytes = body.get(at..at + 8).ok_or("ZIP64 extra field too short")?;
                *field = u64_at(bytes, 0);
                at += 8;
                Ok(())
            };
            for field in [size, compressed, local] {
                if *field == 0xffff_ffff {
                    take(field)?;
                }
            }
            if *disk == 0xffff {
                let bytes = body.get(at..at + 4).ok_or("ZIP64 extra field too short")?;
                *disk = u32_at(bytes, 0);
            }
            return Ok(());
        }
        extra = &extra[4 + len..];
    }
    if [*size, *compressed, *local].contains(&0xffff_ffff) {
        return Err("ZIP64 sizes without a ZIP64 extra field".into());
    }
    Ok(())
}

/// The data range of the entry `name` whose local header is at `local`.
fn local_data(r: &Reader, name: &str, local: u64, size: u64) -> Result<Entry> {
    let err = |reason: String| r.err(format!("`{name}`: {reason}"));
    let h = r.bytes(local, LOCAL_LEN, "a local file header").map_err(|e| err(e.to_string()))?;
    if u32_at(h, 0) != LOCAL_SIG {
        return Err(err(format!("no local file header at byte {local}")));
    }
    let (name_len, extra_len) = (u16_at(h, 26) as u64, u16_at(h, 28) as u64);
    let local_name = r.bytes(local + LOCAL_LEN as u64, name_len as usize, "a local file name")?;
    if local_name != name.as_bytes() {
        return Err(err("the local header names another entry".into()));
    }
    // `local` is below the central directory's offset (< file length) and the lengths are u16,
    // so the sum cannot overflow.
    let start = local + LOCAL_LEN as u64 + name_len + extra_len;
    let end =
        start.checked_add(size).filter(|&e| e <= r.buf.len() as u64).ok_or_else(|| Error::Truncated {
            path: r.path.into(),
            what: format!("the data of ZIP entry `{name}`"),
            needed: start.saturating_add(size),
            got: r.buf.len() as u64,
        })?;
    Ok(Entry { start: start as usize, end: end as usize })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ZIP of STORED entries, optionally in ZIP64 form (sizes and offsets in extra fields).
    pub(crate) fn build(entries: &[(&str, &[u8])], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in entries {
            let offset = out.len() as u32;
            out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            let (size, off) = if zip64 { (0xffff_ffff, 0xffff_ffff) } else { (data.len() as u32, offset) };
            central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            central.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&size.to_le_bytes());
            central.extend_from_slice(&size.to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(if zip64 { 28u16 } else { 0 }).to_le_bytes());
            central.extend_from_slice(&[0; 10]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            if zip64 {
                central.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                central.extend_from_slice(&24u16.to_le_bytes());
                central.extend_from_slice(&(data.len() as u64).to_le_bytes());
                central.extend_from_slice(&(data.len() as u64).to_le_bytes());
                central.extend_from_slice(&(offset as u64).to_le_bytes());
            }
        }
        let cd_offset = out.len() as u64;
        out.extend_from_slice(&central);
        let n = entries.len() as u64;
        if zip64 {
            let rec_at = out.len() as u64;
            out.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            for v in [n, n, central.len() as u64, cd_offset] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&rec_at.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let (n16, size32, off32) = if zip64 {
            (0xffff, 0xffff_ffff, 0xffff_ffff)
        } else {
            (n as u16, central.len() as u32, cd_offset as u32)
        };
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&off32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    fn reason(buf: &[u8]) -> String {
        match parse(Path::new("t.pt"), buf) {
            Err(Error::Zip { reason, .. }) => reason,
            other => panic!("expected a Zip error, got {other:?}"),
        }
    }

    #[test]
    fn zip_entries_are_located_plain_and_zip64() {
        for zip64 in [false, true] {
            let buf = build(&[("a/data.pkl", b"xyz"), ("a/data/0", b"0123")], zip64);
            let z = parse(Path::new("t.pt"), &buf).unwrap();
            let e = z.entries["a/data/0"];
            assert_eq!(&buf[e.start..e.end], b"0123");
            let e = z.entries["a/data.pkl"];
            assert_eq!(&buf[e.start..e.end], b"xyz");
        }
    }

    #[test]
    fn zip_refuses_compressed_encrypted_and_duplicate_entries() {
        let buf = build(&[("a", b"1")], false);
        let cd = buf.len() - EOCD_LEN - CENTRAL_LEN - 1;
        let mut c = buf.clone();
        c[cd + 10] = 8;
        assert!(reason(&c).contains("compressed (method 8)"), "{}", reason(&c));
        let mut c = buf.clone();
        c[cd + 8] = 1;
        assert!(reason(&c).contains("encrypted"));
        assert!(reason(&build(&[("a", b"1"), ("a", b"2")], false)).contains("appears twice"));
    }

    #[test]
    fn zip_bad_offsets_and_counts_are_named() {
        let buf = build(&[("a", b"1234")], false);
        let eocd = buf.len() - EOCD_LEN;
        // Central directory offset past the file end.
        let mut c = buf.clone();
        c[eocd + 16..eocd + 20].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        assert!(reason(&c).contains("runs past the end"), "{}", reason(&c));
        // An entry count the directory cannot hold.
        let mut c = buf.clone();
        c[eocd + 8..eocd + 12].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
        assert!(reason(&c).contains("declares 65534 entries"), "{}", reason(&c));
        // Local header offset pointing at the central directory itself.
        let mut c = buf.clone();
        let cd = eocd - CENTRAL_LEN - 1;
        c[cd + 42..cd + 46].copy_from_slice(&(cd as u32).to_le_bytes());
        assert!(reason(&c).contains("not before the central directory"), "{}", reason(&c));
        // Entry data running past the end.
        let mut c = buf.clone();
        c[cd + 20..cd + 28].copy_from_slice(&[0xff, 0, 0, 0, 0xff, 0, 0, 0]);
        assert!(matches!(parse(Path::new("t.pt"), &c), Err(Error::Truncated { .. })));
        // No end record at all, and a file shorter than one.
        assert!(reason(&buf[..eocd]).contains("no end-of-central-directory"));
        assert!(matches!(parse(Path::new("t.pt"), b"PK\x03\x04"), Err(Error::Truncated { .. })));
    }

    #[test]
    fn zip64_lies_are_named() {
        let buf = build(&[("a", b"1234")], true);
        // Locator pointing past the end.
        let loc = buf.len() - EOCD_LEN - ZIP64_LOCATOR_LEN;
        let mut c = buf.clone();
        c[loc + 8..loc + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(reason(&c).contains("runs past the end"), "{}", reason(&c));
        // Huge ZIP64 entry count.
        let rec = loc - ZIP64_EOCD_LEN;
        let mut c = buf.clone();
        c[rec + 24..rec + 40].copy_from_slice(&[0xff; 16]);
        assert!(reason(&c).contains("more than the"), "{}", reason(&c));
    }
}
