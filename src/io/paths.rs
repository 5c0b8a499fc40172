//! What kind of file a path is, and reading inputs without trusting them: regular files only
//! (a FIFO or `/dev/zero` never ends), sizes checked before reading, file identity (device,
//! inode) rather than names to tell whether an output would overwrite an input, and the
//! length and mtime of an input remembered to tell whether it changed while in use.

use crate::error::{Error, Result};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The largest JSON file (config, shard index) movq reads: a shard index of 100,000 tensor
/// names is about 8 MB, a config a few KB.
pub const MAX_JSON_BYTES: u64 = 32 << 20;

/// A short name for a non-regular file type, as used in messages.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "named pipe"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "regular file"
    }
}

/// Opens `path` for reading if it is a regular file (symbolic links followed), else
/// [`Error::SpecialFile`]. `what` names the role in the message ("weights", "latent", ...).
pub fn open_regular(path: &Path, what: &'static str) -> Result<(File, Metadata)> {
    // The type is checked on the opened handle, so a swap between check and open cannot
    // smuggle in a FIFO; opening a FIFO for reading would block, so it is refused first.
    let pre = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !pre.is_file() {
        return Err(Error::SpecialFile { path: path.into(), kind: kind_of(&pre), what });
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::SpecialFile { path: path.into(), kind: kind_of(&meta), what });
    }
    Ok((file, meta))
}

/// The whole of a small regular file (a config or shard index), refused above `limit` bytes
/// before anything is read.
pub fn read_small_file(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>> {
    let (file, meta) = open_regular(path, what)?;
    if meta.len() > limit {
        return Err(Error::TooLarge {
            what: format!("{}: {what}", path.display()),
            reason: format!("{} bytes, above the {limit}-byte limit for this kind of file", meta.len()),
        });
    }
    let mut bytes = Vec::new();
    // `take` bounds the read even if the file grows after the size check.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::InputChanged { path: path.into(), what: "it grew while being read".into() });
    }
    Ok(bytes)
}

/// [`read_small_file`] as UTF-8 text.
pub fn read_small_text(path: &Path, what: &'static str, limit: u64) -> Result<String> {
    String::from_utf8(read_small_file(path, what, limit)?)
        .map_err(|_| Error::invalid_file(path, format!("the {what} is not UTF-8 text")))
}

/// (device, inode) of what `path` names, following symbolic links; `None` if it does not exist.
pub fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Refuses an output that is one of the `inputs` (same device and inode: the same file under
/// another name, a hard link or a symbolic link count too), [`Error::OutputIsInput`].
pub fn refuse_overwriting_inputs(output: &Path, inputs: &[PathBuf]) -> Result<()> {
    let Some(out) = file_id(output) else { return Ok(()) };
    for input in inputs {
        if file_id(input) == Some(out) {
            return Err(Error::OutputIsInput { output: output.into(), input: input.clone() });
        }
    }
    Ok(())
}

/// Length and modification time of an input, to tell afterwards whether it changed in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    path: PathBuf,
    len: u64,
    mtime: Option<SystemTime>,
    id: (u64, u64),
}

impl Stamp {
    /// The current stamp of `path`.
    pub fn of(path: &Path) -> Result<Stamp> {
        let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        Ok(Stamp { path: path.into(), len: m.len(), mtime: m.modified().ok(), id: (m.dev(), m.ino()) })
    }

    /// [`Error::InputChanged`] if the file is now another length, another mtime, or another
    /// file (replaced by a rename).
    pub fn check_unchanged(&self) -> Result<()> {
        let now = Stamp::of(&self.path)
            .map_err(|_| Error::InputChanged { path: self.path.clone(), what: "it was removed".into() })?;
        let what = if now.len != self.len {
            format!("its length went from {} to {} bytes", self.len, now.len)
        } else if now.id != self.id {
            "it was replaced by another file".into()
        } else if now.mtime != self.mtime {
            "it was modified".into()
        } else {
            return Ok(());
        };
        Err(Error::InputChanged { path: self.path.clone(), what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_and_sizes_capped() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_small_file(Path::new("/dev/zero"), "config", 10).unwrap_err();
        assert!(e.to_string().contains("/dev/zero: is a character device"), "{e}");
        let e = read_small_file(dir.path(), "config", 10).unwrap_err();
        assert!(matches!(e, Error::SpecialFile { kind: "directory", .. }), "{e}");
        let f = dir.path().join("big.json");
        std::fs::write(&f, [b' '; 11]).unwrap();
        assert!(matches!(read_small_file(&f, "config", 10), Err(Error::TooLarge { .. })));
        assert_eq!(read_small_file(&f, "config", 11).unwrap().len(), 11);
    }

    #[test]
    fn hard_and_symbolic_links_are_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let (hard, soft) = (dir.path().join("hard"), dir.path().join("soft"));
        std::fs::hard_link(&a, &hard).unwrap();
        std::os::unix::fs::symlink(&a, &soft).unwrap();
        for out in [&a, &hard, &soft] {
            assert!(matches!(
                refuse_overwriting_inputs(out, std::slice::from_ref(&a)),
                Err(Error::OutputIsInput { .. })
            ));
        }
        assert!(refuse_overwriting_inputs(&dir.path().join("new"), std::slice::from_ref(&a)).is_ok());
        let stamp = Stamp::of(&a).unwrap();
        assert!(stamp.check_unchanged().is_ok());
        std::fs::write(&a, b"xy").unwrap();
        assert!(matches!(stamp.check_unchanged(), Err(Error::InputChanged { .. })));
    }
}
