//! What an output path may be, decided before anything is written:
//! - a stream (`-` for standard output, an existing named pipe, or a character device such as
//!   `/dev/null`): written directly, front to back, never replaced by a regular file;
//! - a new name, or an existing regular file: built under a hidden temporary and renamed over it
//!   (a symbolic link is resolved first: the file it names is replaced, never the link);
//! - a directory of PNG frames: only regular files named `frame_NNNNN.png` (digits) in it are
//!   movq's; anything else in it makes movq refuse, so nothing movq did not write is deleted;
//! - anything else (a block device, a socket, a directory where a file is named): refused.

use super::paths::kind_of;
use crate::error::{Error, Result};
use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// The name that means standard output.
pub const STDOUT: &str = "-";

/// True if `path` is written as a stream: `-`, or an existing FIFO or character device.
pub fn is_stream(path: &Path) -> bool {
    if path.as_os_str() == STDOUT {
        return true;
    }
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
}

/// Opens a stream output (see [`is_stream`]) for writing, without creating or truncating
/// anything. A FIFO blocks here until a reader opens it. Standard output that is a terminal is
/// refused (binary video would garble it).
pub fn open_stream(path: &Path) -> Result<File> {
    let cant = |cause| Error::OutputNotWritable { path: path.into(), cause };
    if path.as_os_str() == STDOUT {
        let out = std::io::stdout();
        if out.is_terminal() {
            return Err(cant(std::io::Error::other(
                "standard output is a terminal; redirect it to a file or pipe it into a player",
            )));
        }
        let fd = std::os::fd::AsFd::as_fd(&out).try_clone_to_owned().map_err(cant)?;
        return Ok(File::from(fd));
    }
    std::fs::OpenOptions::new().write(true).open(path).map_err(cant)
}

/// The path a file output is built at: `path`, or for a symbolic link the file it resolves to,
/// so that the link itself is never replaced (and a link into `/dev` or `/proc`, such as
/// `/dev/stdout` redirected to a file, never gets a temporary renamed over it). A link that
/// does not resolve is refused.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => path.canonicalize().map_err(|e| Error::OutputNotWritable {
            path: path.into(),
            cause: std::io::Error::other(format!("is a symbolic link that does not resolve ({e})")),
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Refuses an existing `path` that an output of a single file would have to replace but must
/// not: a directory, a block device, a socket (streams are handled by [`is_stream`] first).
pub fn check_file_target(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(Error::OutputNotWritable {
            path: path.into(),
            cause: std::io::Error::other(format!("is a {}; refusing to replace it", kind_of(&m))),
        }),
        _ => Ok(()),
    }
}

/// True for `frame_NNNNN.png` (five or more digits), the names movq gives PNG frames.
pub fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|r| r.strip_suffix(".png"))
        .is_some_and(|d| d.len() >= 5 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The files of an existing PNG-frame directory `dir` that movq may replace, or an error if it
/// holds anything else (another name, a subdirectory, a symbolic link, a special file).
pub fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |e| Error::io(dir, e);
    let refuse = |what: String| Error::OutputNotWritable {
        path: dir.into(),
        cause: std::io::Error::other(format!(
            "the directory holds {what}; only regular files named frame_NNNNN.png are replaced, refusing"
        )),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let shown = crate::error::escape(&name.to_string_lossy()).into_owned();
        // file_type does not follow symbolic links.
        let kind = entry.file_type().map_err(io)?;
        if !is_frame_name(&name.to_string_lossy()) {
            return Err(refuse(format!("`{shown}`")));
        }
        if !kind.is_file() {
            let what = if kind.is_dir() { "a directory" } else { "a non-regular file" };
            return Err(refuse(format!("{what} named `{shown}`")));
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Replaces the frame directory `dir` (checked by [`frame_files`] when the decode started):
/// removes its frame files one by one, then the directory itself only if it is empty, so
/// anything that appeared meanwhile survives (and the error names it).
pub fn remove_frame_dir(dir: &Path) -> Result<()> {
    for f in frame_files(dir)? {
        std::fs::remove_file(&f).map_err(|e| Error::io(&f, e))?;
    }
    std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_names_are_digits_only() {
        assert!(is_frame_name("frame_00099.png"));
        assert!(is_frame_name("frame_123456.png"));
        for bad in
            ["frame_.png", "frame_0009.png", "frame_0009x.png", "frame_00099.png.bak", "xframe_00001.png"]
        {
            assert!(!is_frame_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_directory_named_like_a_frame_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("frames");
        std::fs::create_dir_all(out.join("frame_00099.png")).unwrap();
        std::fs::write(out.join("frame_00099.png/precious.txt"), b"keep").unwrap();
        std::fs::write(out.join("frame_00000.png"), b"old").unwrap();
        assert!(frame_files(&out).is_err());
        assert!(remove_frame_dir(&out).is_err());
        assert!(out.join("frame_00099.png/precious.txt").exists());
        assert!(out.join("frame_00000.png").exists());
    }
}
