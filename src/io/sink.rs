//! Where decoded frames go, chosen from the output path as `movq decode --output` documents it:
//! `.npy` / `.safetensors` (the tensor), `.y4m`, `.apng` (or `.png` when asked), a directory of
//! PNG frames, or a stream (standard output, a FIFO, a device) taking Y4M. Shared by the CLI
//! and the Python package so both accept exactly the same outputs.

use super::frame_writer::{Container, FrameWriter};
use super::video::{Chroma, VideoFormat, VideoOptions, VideoWriter};
use crate::error::{Error, Result};
use crate::tensor::{Element, Shape, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How video outputs are written.
#[derive(Clone, Copy, Debug)]
pub struct SinkOptions {
    /// A `.png` name means an animated PNG (otherwise it is refused as ambiguous).
    pub apng: bool,
    pub fps: u32,
    pub chroma: Chroma,
}

/// An output being written: the tensor container, or a video / frame writer.
pub enum OutputSink {
    Tensor(FrameWriter),
    Video(VideoWriter),
}

impl OutputSink {
    /// Chooses the container from `path` and creates it (writing to temporaries, renamed into
    /// place by [`Self::finish`]); `meta` goes into tensor outputs' headers.
    pub fn create<T: Element>(
        path: &Path,
        shape: Shape,
        opts: &SinkOptions,
        meta: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let refuse = |reason: String| Err(Error::OutputKind { path: path.to_path_buf(), reason });
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        let file_ext = matches!(ext.as_deref(), Some("npy" | "safetensors" | "y4m" | "apng" | "png"));
        let slash = path.as_os_str().to_string_lossy().ends_with('/');
        let video = |format| {
            let o = VideoOptions { format, fps: opts.fps, chroma: opts.chroma };
            VideoWriter::create(path, shape, o).map(OutputSink::Video)
        };
        if super::output::is_stream(path) && !slash {
            if !matches!(ext.as_deref(), None | Some("y4m")) {
                return refuse(
                    "standard output, a named pipe or a device is written as a Y4M stream; name it .y4m or write a file"
                        .into(),
                );
            }
            return video(VideoFormat::Y4m);
        }
        if file_ext && !slash && path.is_dir() {
            return refuse(format!(
                "cannot write the output: is a directory, but the name asks for a .{} file",
                ext.as_deref().unwrap_or_default()
            ));
        }
        let tensor = |c| FrameWriter::create::<T>(path, c, shape, meta).map(OutputSink::Tensor);
        match ext.as_deref() {
            _ if slash || path.is_dir() => video(VideoFormat::PngDir),
            Some("npy") => tensor(Container::Npy),
            Some("safetensors") => tensor(Container::Safetensors),
            Some("y4m") => video(VideoFormat::Y4m),
            Some("apng") => video(VideoFormat::Apng),
            Some("png") if opts.apng => video(VideoFormat::Apng),
            Some("png") => refuse(
                "a .png output is an animated PNG only when asked for (or name it .apng); for one PNG per frame give a directory"
                    .into(),
            ),
            None => video(VideoFormat::PngDir),
            Some(e) => refuse(format!(
                "unknown output type .{e}; use .npy, .safetensors, .y4m, .apng, or a directory for PNG frames"
            )),
        }
    }

    /// frames: (n, c, k, h, w), output frames `first..first + k`
    pub fn write<T: Element>(&mut self, first: usize, frames: &Tensor<T>) -> Result<()> {
        match self {
            OutputSink::Tensor(w) => w.write(first, frames),
            OutputSink::Video(w) => w.write(first, frames),
        }
    }

    /// The temporaries being written.
    pub fn tmp_paths(&self) -> Vec<PathBuf> {
        match self {
            OutputSink::Tensor(w) => vec![w.tmp_path().to_path_buf()],
            OutputSink::Video(w) => w.tmp_paths(),
        }
    }

    /// The video format being written; `None` for a tensor.
    pub fn video_format(&self) -> Option<VideoFormat> {
        match self {
            OutputSink::Tensor(_) => None,
            OutputSink::Video(w) => Some(w.format()),
        }
    }

    /// The files (or directories) the output consists of.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            OutputSink::Tensor(w) => vec![w.path().to_path_buf()],
            OutputSink::Video(w) => w.paths(),
        }
    }

    /// Renames the temporaries into place.
    pub fn finish(self) -> Result<()> {
        match self {
            OutputSink::Tensor(w) => w.finish(),
            OutputSink::Video(w) => w.finish(),
        }
    }
}
