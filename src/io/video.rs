//! Watchable outputs: a directory of PNG frames, an animated PNG, a Y4M video; one per sample.
//!
//! Pixels are mapped as the CogVideoX pipelines do (diffusers `VideoProcessor.postprocess_video`
//! then `numpy_to_pil`): `(x / 2 + 0.5)` clamped to [0, 1], times 255, rounded half to even
//! (numpy's `round`), in the decode precision. Frames may arrive in any order; each output is
//! written front to back as soon as the next frame is there, under a temporary name, and moved
//! into place by [`VideoWriter::finish`]. Dropped unfinished, the temporaries are removed. A
//! stream output (standard output, a named pipe, a device; see `output.rs`) is written directly
//! and, on an error midway, is simply cut short.

use crate::error::{Error, Result};
use crate::tensor::{Element, Shape, Tensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Which watchable container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoFormat {
    /// A directory of `frame_00000.png`, `frame_00001.png`, ...
    PngDir,
    /// One animated PNG.
    Apng,
    /// YUV4MPEG2 (BT.601 limited range), what ffmpeg and most players read.
    Y4m,
}

/// Chroma subsampling of Y4M output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chroma {
    C444,
    /// 2x2 averaged chroma, centre-sited (`C420jpeg`).
    C420,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoOptions {
    pub format: VideoFormat,
    /// Frames per second (Y4M header, APNG frame delay).
    pub fps: u32,
    pub chroma: Chroma,
}

/// One 8-bit pixel from a decoder output value, in f32 arithmetic as the pipelines run.
pub fn pixel_u8_f32(x: f32) -> u8 {
    // NaN survives clamp and `as u8` maps it to 0.
    ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// One 8-bit pixel from a decoder output value, in f64 arithmetic.
pub fn pixel_u8_f64(x: f64) -> u8 {
    ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

fn pixel_u8<T: Element>(x: T) -> u8 {
    if std::mem::size_of::<T>() == 4 { pixel_u8_f32(x.to_f64() as f32) } else { pixel_u8_f64(x.to_f64()) }
}

/// Frame `t` of sample `n` as interleaved 8-bit RGB, (h, w, 3). frames: (n, 3, k, h, w)
pub fn rgb8<T: Element>(frames: &Tensor<T>, n: usize, t: usize) -> Vec<u8> {
    let s = frames.shape();
    let fl = s.frame_len();
    let mut out = vec![0u8; fl * 3];
    for c in 0..3 {
        let src = &frames.data()[((n * s.c + c) * s.d + t) * fl..][..fl];
        for (dst, &v) in out[c..].iter_mut().step_by(3).zip(src) {
            *dst = pixel_u8(v);
        }
    }
    out
}

/// The output path of sample `i` of `n`: `path` itself when `n == 1`, else `stem_b{i}.ext`
/// (`dir_b{i}` for a directory).
pub fn sample_path(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}_b{i}.{}", ext.to_string_lossy()),
        None => format!("{stem}_b{i}"),
    };
    path.with_file_name(name)
}

enum Sink {
    PngDir,
    /// The encoder owns one handle; the other syncs the file after the encoder finished.
    Apng(png::Writer<File>, File),
    Y4m(BufWriter<File>),
}

struct Output {
    path: PathBuf,
    /// The hidden temporary, once created (`None` for a stream, see [`super::output::is_stream`]).
    tmp: Option<PathBuf>,
    /// `None` before the temporary is set up and after it was moved into place.
    sink: Option<Sink>,
}

pub struct VideoWriter {
    opts: VideoOptions,
    shape: Shape,
    outputs: Vec<Output>,
    next: usize,
    /// Frames that arrived ahead of `next`, as RGB per sample.
    pending: BTreeMap<usize, Vec<Vec<u8>>>,
}

fn png_err(path: &Path, e: png::EncodingError) -> Error {
    Error::io(path, std::io::Error::other(e.to_string()))
}

impl VideoWriter {
    /// Prepares one output per sample of a video of `shape` (n, 3, t, h, w) at `path` (see
    /// [`sample_path`]). Fails before any decoding if an output cannot be created.
    pub fn create(path: &Path, shape: Shape, opts: VideoOptions) -> Result<Self> {
        let fits = |v: usize| u32::try_from(v).is_ok();
        if shape.c != 3 || shape.h == 0 || shape.w == 0 || !fits(shape.h) || !fits(shape.w) || !fits(shape.d)
        {
            return Err(Error::ShapeMismatch {
                op: "video output",
                expected: "3 (RGB) channels and non-empty frames; write .npy for other outputs".into(),
                got: shape.to_string(),
            });
        }
        if opts.fps == 0 || opts.fps > u16::MAX as u32 {
            return Err(Error::InvalidConfig(format!("frame rate {} is not in 1..=65535", opts.fps)));
        }
        let mut w = VideoWriter { opts, shape, outputs: Vec::new(), next: 0, pending: BTreeMap::new() };
        if super::output::is_stream(path) {
            if opts.format != VideoFormat::Y4m || shape.n != 1 {
                return Err(Error::OutputNotWritable {
                    path: path.into(),
                    cause: std::io::Error::other(format!(
                        "a stream (standard output, a named pipe, a device) takes one Y4M video; this is {} sample(s) as {:?}",
                        shape.n, opts.format
                    )),
                });
            }
            let f = BufWriter::new(super::output::open_stream(path)?);
            w.outputs.push(Output { path: path.into(), tmp: None, sink: None });
            w.outputs[0].sink = Some(Sink::Y4m(f));
            w.y4m_header(0)?;
            return Ok(w);
        }
        for i in 0..shape.n {
            let path = super::output::resolve(&sample_path(path, i, shape.n))?;
            let tmp = super::tmp_sibling(&path)?;
            let io = |e| Error::io(&path, e);
            let cant = super::not_writable(&path);
            if opts.format == VideoFormat::PngDir {
                if path.is_dir() {
                    super::output::frame_files(&path)?;
                } else if path.exists() {
                    return Err(cant(std::io::Error::other("exists and is not a directory")));
                }
            } else {
                super::output::check_file_target(&path)?;
            }
            w.outputs.push(Output { path: path.clone(), tmp: None, sink: None });
            let out = w.outputs.last_mut().expect("pushed above");
            let sink = match opts.format {
                VideoFormat::PngDir => {
                    std::fs::create_dir(&tmp).map_err(cant)?;
                    out.tmp = Some(tmp);
                    Sink::PngDir
                }
                VideoFormat::Apng => {
                    let file = super::create_tmp(&path, &tmp)?;
                    out.tmp = Some(tmp);
                    let sync = file.try_clone().map_err(io)?;
                    let mut enc = png::Encoder::new(file, shape.w as u32, shape.h as u32);
                    enc.set_color(png::ColorType::Rgb);
                    enc.set_depth(png::BitDepth::Eight);
                    enc.set_animated(shape.d as u32, 0).map_err(|e| png_err(&path, e))?;
                    enc.set_frame_delay(1, opts.fps as u16).map_err(|e| png_err(&path, e))?;
                    Sink::Apng(enc.write_header().map_err(|e| png_err(&path, e))?, sync)
                }
                VideoFormat::Y4m => {
                    let f = BufWriter::new(super::create_tmp(&path, &tmp)?);
                    out.tmp = Some(tmp);
                    Sink::Y4m(f)
                }
            };
            out.sink = Some(sink);
            if opts.format == VideoFormat::Y4m {
                w.y4m_header(i)?;
            }
        }
        Ok(w)
    }

    /// Writes the Y4M stream header of output `i`.
    fn y4m_header(&mut self, i: usize) -> Result<()> {
        let (s, opts, out) = (self.shape, self.opts, &mut self.outputs[i]);
        let Some(Sink::Y4m(f)) = out.sink.as_mut() else { return Ok(()) };
        let c = if opts.chroma == Chroma::C444 { "C444" } else { "C420jpeg" };
        writeln!(f, "YUV4MPEG2 W{} H{} F{}:1 Ip A1:1 {c} XCOLORRANGE=LIMITED", s.w, s.h, opts.fps)
            .map_err(|e| Error::io(&out.path, e))
    }

    /// The output of each sample, as it will be named once finished.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.outputs.iter().map(|o| o.path.clone()).collect()
    }

    /// The temporary files (or directories) being written (none for a stream).
    pub fn tmp_paths(&self) -> Vec<PathBuf> {
        self.outputs.iter().filter_map(|o| o.tmp.clone()).collect()
    }

    /// Takes output frames `first .. first + frames.d`. frames: (n, 3, k, h, w)
    pub fn write<T: Element>(&mut self, first: usize, frames: &Tensor<T>) -> Result<()> {
        let (s, fs) = (self.shape, frames.shape());
        if (fs.n, fs.c, fs.h, fs.w) != (s.n, s.c, s.h, s.w) || first + fs.d > s.d || first < self.next {
            return Err(Error::ShapeMismatch {
                op: "video frames",
                expected: format!("new frames of {s} from frame {}", self.next),
                got: format!("{fs} at frame {first}"),
            });
        }
        for k in 0..fs.d {
            let rgb = (0..s.n).map(|n| rgb8(frames, n, k)).collect();
            self.pending.insert(first + k, rgb);
        }
        while let Some(rgb) = self.pending.remove(&self.next) {
            for (out, rgb) in self.outputs.iter_mut().zip(&rgb) {
                write_frame(out, self.next, rgb, s, self.opts)?;
            }
            self.next += 1;
        }
        Ok(())
    }

    /// Completes every output and moves it into place; errors if a frame is missing.
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.shape.d {
            return Err(Error::ShapeMismatch {
                op: "video frames",
                expected: format!("all {} frames written", self.shape.d),
                got: format!("frame {} missing", self.next),
            });
        }
        for out in &mut self.outputs {
            let io = |e| Error::io(&out.path, e);
            match out.sink.take().expect("open until finish") {
                Sink::PngDir => {
                    if out.path.is_dir() {
                        super::output::remove_frame_dir(&out.path)?;
                    }
                }
                Sink::Apng(writer, sync) => {
                    writer.finish().map_err(|e| png_err(&out.path, e))?;
                    sync.sync_all().map_err(io)?;
                }
                Sink::Y4m(f) => {
                    let f = f.into_inner().map_err(|e| io(e.into_error()))?;
                    // A pipe or device cannot be synced (EINVAL); flushing was all it takes.
                    if out.tmp.is_some() {
                        f.sync_all().map_err(io)?;
                    }
                }
            }
            if let Some(tmp) = out.tmp.take()
                && let Err(e) = std::fs::rename(&tmp, &out.path)
            {
                out.tmp = Some(tmp);
                return Err(io(e));
            }
        }
        Ok(())
    }
}

impl VideoFormat {
    /// For messages: "a directory of PNG frames".
    pub fn describe(self) -> &'static str {
        match self {
            VideoFormat::PngDir => "a directory of PNG frames",
            VideoFormat::Apng => "an animated PNG",
            VideoFormat::Y4m => "a Y4M video",
        }
    }
}

impl VideoWriter {
    /// The format being written.
    pub fn format(&self) -> VideoFormat {
        self.opts.format
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        for out in &mut self.outputs {
            // After a successful finish the temporaries were renamed and these fail harmlessly.
            drop(out.sink.take());
            // Only temporaries this writer created (see create_tmp) are ever removed.
            let Some(tmp) = &out.tmp else { continue };
            if self.opts.format == VideoFormat::PngDir {
                let _ = std::fs::remove_dir_all(tmp);
            } else {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

fn write_frame(out: &mut Output, t: usize, rgb: &[u8], s: Shape, opts: VideoOptions) -> Result<()> {
    let io = |e| Error::io(&out.path, e);
    match out.sink.as_mut().expect("open until finish") {
        Sink::PngDir => {
            let path = out
                .tmp
                .as_ref()
                .expect("a frame directory has a temporary")
                .join(format!("frame_{t:05}.png"));
            let file = BufWriter::new(File::create(&path).map_err(io)?);
            let mut enc = png::Encoder::new(file, s.w as u32, s.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| png_err(&out.path, e))?;
            w.write_image_data(rgb).map_err(|e| png_err(&out.path, e))?;
            w.finish().map_err(|e| png_err(&out.path, e))?;
        }
        Sink::Apng(w, _) => w.write_image_data(rgb).map_err(|e| png_err(&out.path, e))?,
        Sink::Y4m(f) => {
            f.write_all(b"FRAME\n").map_err(io)?;
            for plane in yuv_planes(rgb, s.h, s.w, opts.chroma) {
                f.write_all(&plane).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// BT.601 limited-range Y, Cb, Cr of an 8-bit R'G'B' pixel, unrounded.
pub fn ycbcr(p: &[u8]) -> [f64; 3] {
    let (r, g, b) = (p[0] as f64 / 255.0, p[1] as f64 / 255.0, p[2] as f64 / 255.0);
    [
        16.0 + 65.481 * r + 128.553 * g + 24.966 * b,
        128.0 - 37.797 * r - 74.203 * g + 112.0 * b,
        128.0 + 112.0 * r - 93.786 * g - 18.214 * b,
    ]
}

/// Y, Cb, Cr planes of an (h, w, 3) RGB frame; chroma planes are ceil(h/2) x ceil(w/2) for
/// 4:2:0, each sample the mean of the (up to) 2x2 pixels it covers.
pub fn yuv_planes(rgb: &[u8], h: usize, w: usize, chroma: Chroma) -> [Vec<u8>; 3] {
    let q = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    let ycc: Vec<[f64; 3]> = rgb.chunks_exact(3).map(ycbcr).collect();
    let y = ycc.iter().map(|p| q(p[0])).collect();
    match chroma {
        Chroma::C444 => [y, ycc.iter().map(|p| q(p[1])).collect(), ycc.iter().map(|p| q(p[2])).collect()],
        Chroma::C420 => {
            let (ch, cw) = (h.div_ceil(2), w.div_ceil(2));
            let mut planes = [vec![0u8; ch * cw], vec![0u8; ch * cw]];
            for (k, plane) in planes.iter_mut().enumerate() {
                for i in 0..ch {
                    for j in 0..cw {
                        let (mut sum, mut cnt) = (0.0, 0.0);
                        for yy in 2 * i..(2 * i + 2).min(h) {
                            for xx in 2 * j..(2 * j + 2).min(w) {
                                sum += ycc[yy * w + xx][k + 1];
                                cnt += 1.0;
                            }
                        }
                        plane[i * cw + j] = q(sum / cnt);
                    }
                }
            }
            let [cb, cr] = planes;
            [y, cb, cr]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_mapping_matches_the_pipeline_rule() {
        assert_eq!(pixel_u8_f32(-1.0), 0);
        assert_eq!(pixel_u8_f32(1.0), 255);
        assert_eq!(pixel_u8_f32(-7.0), 0);
        assert_eq!(pixel_u8_f32(3.0), 255);
        assert_eq!(pixel_u8_f32(f32::NAN), 0);
        // 0 -> 0.5 * 255 = 127.5, numpy rounds half to even.
        assert_eq!(pixel_u8_f32(0.0), 128);
        assert_eq!(pixel_u8_f64(0.0), 128);
        // (2*k/255 - 1) maps back to k exactly.
        for k in 0..=255u8 {
            assert_eq!(pixel_u8_f64(2.0 * k as f64 / 255.0 - 1.0), k);
        }
    }

    #[test]
    fn sample_paths_get_a_batch_suffix() {
        assert_eq!(sample_path(Path::new("a/out.y4m"), 0, 1), Path::new("a/out.y4m"));
        assert_eq!(sample_path(Path::new("a/out.y4m"), 1, 2), Path::new("a/out_b1.y4m"));
        assert_eq!(sample_path(Path::new("frames"), 0, 3), Path::new("frames_b0"));
    }

    #[test]
    fn ycbcr_of_primaries_is_bt601_limited_range() {
        let q = |p: [u8; 3]| ycbcr(&p).map(|v| v.round() as i32);
        assert_eq!(q([0, 0, 0]), [16, 128, 128]);
        assert_eq!(q([255, 255, 255]), [235, 128, 128]);
        assert_eq!(q([255, 0, 0]), [81, 90, 240]);
    }

    #[test]
    fn chroma_420_averages_two_by_two_blocks_with_ragged_edges() {
        // 3x3 frame: the right column and bottom row form partial blocks.
        let rgb: Vec<u8> = (0..9).flat_map(|i| [(i * 20) as u8, 0, 0]).collect();
        let [y, cb, _] = yuv_planes(&rgb, 3, 3, Chroma::C420);
        assert_eq!((y.len(), cb.len()), (9, 4));
        let cb_of = |r: f64| 128.0 - 37.797 * r / 255.0;
        let mean = |rs: &[u32]| rs.iter().map(|&r| cb_of(r as f64 * 20.0)).sum::<f64>() / rs.len() as f64;
        assert_eq!(cb[0], mean(&[0, 1, 3, 4]).round() as u8);
        assert_eq!(cb[1], mean(&[2, 5]).round() as u8);
        assert_eq!(cb[3], mean(&[8]).round() as u8);
    }
}
