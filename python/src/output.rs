//! Decoding straight into a file, as `movq decode --output` does: frames are written as they
//! are decoded, into a hidden temporary that is renamed into place only when complete (an
//! error, an interrupt or a killed process never leaves a partial file under the name).

use movq::io::{Chroma, Container, FrameWriter, VideoFormat, VideoOptions, VideoWriter};
use movq::kernels::Float;
use movq::{Shape, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where decoded frames go, chosen by the output's extension.
pub enum Sink {
    Tensor(FrameWriter),
    Video(VideoWriter),
}

impl Sink {
    /// `.npy` / `.safetensors`: the tensor in the decode precision; `.y4m` / `.apng`: 8-bit
    /// video with the pipelines' pixel mapping, one file per sample when the batch has several.
    pub fn create<T: Float>(
        path: &Path,
        shape: Shape,
        fps: u32,
        chroma: Chroma,
        meta: &BTreeMap<String, String>,
    ) -> movq::Result<Self> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        let video =
            |format| VideoWriter::create(path, shape, VideoOptions { format, fps, chroma }).map(Sink::Video);
        match ext.as_deref() {
            Some("npy") => FrameWriter::create::<T>(path, Container::Npy, shape, meta).map(Sink::Tensor),
            Some("safetensors") => {
                FrameWriter::create::<T>(path, Container::Safetensors, shape, meta).map(Sink::Tensor)
            }
            Some("y4m") => video(VideoFormat::Y4m),
            Some("apng") => video(VideoFormat::Apng),
            _ => Err(movq::Error::Unsupported(format!(
                "{}: output type; name it .npy, .safetensors, .y4m or .apng",
                path.display()
            ))),
        }
    }

    /// frames: (n, c, k, h, w), output frames `first..first + k`
    pub fn write<T: Float>(&mut self, first: usize, frames: &Tensor<T>) -> movq::Result<()> {
        match self {
            Sink::Tensor(w) => w.write(first, frames),
            Sink::Video(w) => w.write(first, frames),
        }
    }

    /// The files the output consists of (one per sample for video).
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Sink::Tensor(w) => vec![w.path().to_path_buf()],
            Sink::Video(w) => w.paths(),
        }
    }

    /// Renames the temporaries into place.
    pub fn finish(self) -> movq::Result<()> {
        match self {
            Sink::Tensor(w) => w.finish(),
            Sink::Video(w) => w.finish(),
        }
    }
}

pub fn chroma(s: &str) -> Option<Chroma> {
    match s {
        "420" => Some(Chroma::C420),
        "444" => Some(Chroma::C444),
        _ => None,
    }
}
