//! Writing a decoded video (n, c, t, h, w) frame batch by frame batch, as the decoder hands
//! them out, into a `.npy` or `.safetensors` file. The file is built under a temporary name
//! and renamed into place by [`FrameWriter::finish`]; dropped unfinished, it is removed, so a
//! failed decode never leaves a partial output.

use crate::error::{Error, Result};
use crate::tensor::{Element, Shape, Tensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Output container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Npy,
    /// One tensor named `sample`, with metadata.
    Safetensors,
}

pub struct FrameWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    shape: Shape,
    data_start: u64,
    elem: usize,
    frames_written: Vec<bool>,
}

impl FrameWriter {
    /// Creates the temporary file for a video of `shape` in element type `T`, with its header.
    pub fn create<T: Element>(
        path: &Path,
        container: Container,
        shape: Shape,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let elem = std::mem::size_of::<T>();
        let data_len = shape.numel()?.checked_mul(elem).ok_or_else(|| Error::TooLarge {
            what: format!("output {shape}"),
            reason: "byte size overflows".into(),
        })?;
        let header = match container {
            Container::Npy => super::npy::npy_header(&shape.dims(), elem),
            Container::Safetensors => {
                super::safetensors::safetensors_header(&[("sample", &shape.dims())], elem, metadata)
            }
        };
        if super::output::is_stream(path) {
            return Err(Error::OutputNotWritable {
                path: path.into(),
                cause: std::io::Error::other(
                    "a stream (standard output, a named pipe, a device) cannot take a tensor file, which is written out of order; write .y4m to stream",
                ),
            });
        }
        let path = &super::output::resolve(path)?;
        super::output::check_file_target(path)?;
        let tmp = super::tmp_sibling(path)?;
        let mut w = FrameWriter {
            path: path.to_path_buf(),
            tmp: tmp.clone(),
            file: None,
            shape,
            data_start: header.len() as u64,
            elem,
            frames_written: vec![false; shape.d],
        };
        let io = |e| Error::io(path, e);
        let mut file = super::create_tmp(path, &tmp)?;
        w.file = Some(file.try_clone().map_err(io)?);
        file.write_all(&header).map_err(io)?;
        file.set_len(header.len() as u64 + data_len as u64).map_err(io)?;
        Ok(w)
    }

    /// The output path, as it will be named once finished.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file being written.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Writes output frames `first .. first + frames.d`. frames: (n, c, k, h, w)
    pub fn write<T: Element>(&mut self, first: usize, frames: &Tensor<T>) -> Result<()> {
        let (s, fs) = (self.shape, frames.shape());
        if std::mem::size_of::<T>() != self.elem
            || (fs.n, fs.c, fs.h, fs.w) != (s.n, s.c, s.h, s.w)
            || first + fs.d > s.d
        {
            return Err(Error::ShapeMismatch {
                op: "output frames",
                expected: format!("frames of {s} from frame {first}"),
                got: fs.to_string(),
            });
        }
        let path = self.path.clone();
        let io = |e| Error::io(&path, e);
        let file = self.file.as_mut().expect("open until finish");
        let run = fs.d * s.frame_len(); // contiguous per (sample, channel)
        for (nc, src) in frames.data().chunks(run.max(1)).enumerate().take(s.n * s.c) {
            let off = ((nc * s.d + first) * s.frame_len() * self.elem) as u64;
            file.seek(SeekFrom::Start(self.data_start + off)).map_err(io)?;
            let mut bw = BufWriter::new(&mut *file);
            super::safetensors::write_le(&mut bw, src).map_err(io)?;
            bw.flush().map_err(io)?;
        }
        self.frames_written[first..first + fs.d].iter_mut().for_each(|f| *f = true);
        Ok(())
    }

    /// Syncs and renames the file into place; errors if a frame was never written.
    pub fn finish(mut self) -> Result<()> {
        if let Some(missing) = self.frames_written.iter().position(|w| !w) {
            return Err(Error::ShapeMismatch {
                op: "output frames",
                expected: format!("all {} frames written", self.shape.d),
                got: format!("frame {missing} missing"),
            });
        }
        let file = self.file.take().expect("open until finish");
        let io = |e| Error::io(&self.path, e);
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        Ok(())
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_out_of_order_round_trip_through_both_containers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Shape::new(2, 3, 5, 2, 3);
        let x = Tensor::from_vec(s, (0..s.numel().unwrap()).map(|i| i as f32).collect()).unwrap();
        for (name, c) in [("o.npy", Container::Npy), ("o.safetensors", Container::Safetensors)] {
            let path = dir.path().join(name);
            let mut w = FrameWriter::create::<f32>(&path, c, s, &BTreeMap::new()).unwrap();
            let part = |r: std::ops::Range<usize>| {
                x.crop(&crate::tensor::Region { d: r, h: 0..2, w: 0..3 }).unwrap()
            };
            w.write(3, &part(3..5)).unwrap();
            assert!(!path.exists(), "nothing at the final path before finish");
            w.write(0, &part(0..3)).unwrap();
            w.finish().unwrap();
            let y: Tensor<f32> = crate::io::read_latent(&path, None).unwrap();
            assert_eq!(y, x);
        }
        // An unfinished writer leaves nothing behind.
        let path = dir.path().join("gone.npy");
        let mut w = FrameWriter::create::<f32>(&path, Container::Npy, s, &BTreeMap::new()).unwrap();
        w.write(0, &x.crop(&crate::tensor::Region { d: 0..1, h: 0..2, w: 0..3 }).unwrap()).unwrap();
        assert!(w.finish().is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
