//! `movq._native`: the Python bindings of movq (see `movq/__init__.py` for the public API).
//! A `NativeDecoder` is an opened checkpoint with its loaded decoder and its own rayon pool;
//! `decode` returns a numpy array, `stream` an iterator of frame batches.

mod errors;
mod latent;
mod output;
mod run;

use errors::{named, to_py};
use latent::Layout;
use movq::checkpoint::{ConfigSource, InferHints, OpenOptions};
use movq::model::memory::{Footprint, available_bytes, check_budget, estimate_peak_bytes};
use movq::model::{DecodeMode, PadMode, TileConfig};
use movq::{Checkpoint, Decoder, Shape};
use pyo3::prelude::*;
use rayon::ThreadPool;
use run::{FrameStream, Precision, Progress};
use std::path::PathBuf;
use std::sync::Arc;

/// The tile geometry as Python passes it: (tile_latent, stride_latent, blend, keep), each
/// (rows, columns); see `movq::model::TileConfig`.
type TileTuple = ((usize, usize), (usize, usize), (usize, usize), (usize, usize));

enum Loaded {
    F32(Arc<Decoder<f32>>),
    F64(Arc<Decoder<f64>>),
}

/// An opened checkpoint, its decoder loaded in one precision, and the thread pool it decodes on.
#[pyclass(frozen, module = "movq._native")]
struct NativeDecoder {
    ck: Checkpoint,
    dec: Loaded,
    pool: Arc<ThreadPool>,
}

fn tile_config(t: TileTuple) -> TileConfig {
    TileConfig { tile_latent: t.0, stride_latent: t.1, blend: t.2, keep: t.3 }
}

fn tile_tuple(t: &TileConfig) -> TileTuple {
    (t.tile_latent, t.stride_latent, t.blend, t.keep)
}

/// Options shared by `decode` and `stream`.
struct Request {
    mode: DecodeMode,
    layout: Layout,
    bf16: bool,
    scale: Option<f64>,
    allow_nonfinite: bool,
    max_memory: Option<f64>,
}

#[pymethods]
impl NativeDecoder {
    /// Opens the checkpoint at `weights` (every form the CLI takes) and loads its decoder.
    #[new]
    #[pyo3(signature = (weights, *, config=None, prefix=None, precision="f32", threads=None,
        resolution=None, pad_mode=None, temporal_compress_times=None, ignore=Vec::new(),
        decoder_class=None, allow_nonfinite_output=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        weights: PathBuf,
        config: Option<PathBuf>,
        prefix: Option<String>,
        precision: &str,
        threads: Option<usize>,
        resolution: Option<usize>,
        pad_mode: Option<&str>,
        temporal_compress_times: Option<usize>,
        ignore: Vec<String>,
        decoder_class: Option<&str>,
        allow_nonfinite_output: bool,
    ) -> PyResult<Self> {
        let class = match decoder_class {
            None => None,
            Some(name) => Some(
                serde_json::from_value::<movq::DecoderClass>(serde_json::Value::String(name.into())).map_err(|_| {
                    named(
                        py,
                        "ConfigError",
                        format!(
                            "decoder_class {name:?}: use MOVQDecoder3D, NewDecoder3D, ContextParallelDecoder3D or CogVideoXDecoder3D"
                        ),
                    )
                })?,
            ),
        };
        let pad_mode = match pad_mode {
            None => None,
            Some("first") => Some(PadMode::First),
            Some("constant") => Some(PadMode::Constant),
            Some("reflect") => Some(PadMode::Reflect),
            Some(p) => {
                return Err(named(
                    py,
                    "ConfigError",
                    format!("pad_mode {p:?}: use first, constant or reflect"),
                ));
            }
        };
        if !matches!(precision, "f32" | "float32" | "f64" | "float64" | "bf16-emulated" | "bf16") {
            return Err(named(
                py,
                "ConfigError",
                format!("precision {precision:?}: use \"f32\", \"f64\", \"bf16-emulated\" or \"bf16\""),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = threads.unwrap_or(cores);
        if threads == 0 || threads > 4 * cores {
            return Err(named(
                py,
                "ConfigError",
                format!("threads={threads}: give 1 to {} (this machine has {cores} cores)", 4 * cores),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("movq-{i}"))
            .build()
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("thread pool: {e}")))?;
        let opened = py.detach(|| -> movq::Result<(Checkpoint, Loaded)> {
            let ignore: Vec<&str> = ignore.iter().map(String::as_str).collect();
            let opts = OpenOptions {
                config: config.as_deref(),
                prefix: prefix.as_deref(),
                hints: InferHints { resolution, pad_mode, temporal_compress_times, class },
                ignore: &ignore,
            };
            if precision == "bf16" {
                // Before any weights load: the CPU's bf16 dot products, or why not.
                movq::ops::conv::bf16_dot_available::<f32>("precision=\"bf16\"")?;
            }
            let ck = Checkpoint::open(&weights, &opts)?;
            let dec = match precision {
                "f64" | "float64" => {
                    let mut d = pool.install(|| ck.load::<f64>())?;
                    d.allow_nonfinite(allow_nonfinite_output);
                    Loaded::F64(Arc::new(d))
                }
                _ => {
                    let mut d = pool.install(|| ck.load::<f32>())?;
                    d.allow_nonfinite(allow_nonfinite_output);
                    // This decoder's own setting: other decoders of the process keep theirs.
                    d.emulate_bf16_products(precision == "bf16-emulated");
                    if precision == "bf16" {
                        // The CPU's bf16 dot products, or Error::Unsupported where movq has none.
                        d.use_bf16_dot_products(true)?;
                    }
                    Loaded::F32(Arc::new(d))
                }
            };
            Ok((ck, dec))
        });
        let (ck, dec) = opened.map_err(|e| to_py(py, e))?;
        Ok(NativeDecoder { ck, dec, pool: Arc::new(pool) })
    }

    /// The decoder config (upstream argument names) as JSON.
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(self.ck.config())
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
    }

    /// "f32", "f64", "bf16-emulated" or "bf16".
    #[getter]
    fn precision(&self) -> &'static str {
        match &self.dec {
            Loaded::F32(d) => d.precision_name(),
            Loaded::F64(d) => d.precision_name(),
        }
    }

    #[getter]
    fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// diffusers `scaling_factor` (None for MoVQ checkpoints).
    #[getter]
    fn scaling_factor(&self) -> Option<f64> {
        self.ck.scaling_factor
    }

    /// diffusers (sample_height, sample_width), which sets the default tile geometry.
    #[getter]
    fn sample_size(&self) -> Option<(usize, usize)> {
        self.ck.sample_size
    }

    /// Where the config came from: "file:<path>", "metadata" or "inferred".
    #[getter]
    fn config_source(&self) -> String {
        match &self.ck.config_source {
            ConfigSource::File(p) => format!("file:{}", p.display()),
            ConfigSource::Metadata => "metadata".into(),
            ConfigSource::Inferred(_) => "inferred".into(),
        }
    }

    #[getter]
    fn paths(&self) -> Vec<PathBuf> {
        self.ck.paths()
    }

    /// Output pixels per latent pixel along height and width.
    #[getter]
    fn space_scale(&self) -> usize {
        self.ck.plan.space_scale()
    }

    /// "whole" for MoVQ decoders, "chunked" for CogVideoX (as the CLI).
    #[getter]
    fn default_mode(&self) -> &'static str {
        if self.ck.config().class.is_cogvideox() { "chunked" } else { "whole" }
    }

    /// diffusers' tile geometry for this model's sample size (480 x 720 if it has none).
    fn default_tile(&self, py: Python<'_>) -> PyResult<TileTuple> {
        let tc = TileConfig::diffusers(self.ck.sample_size.unwrap_or((480, 720)), self.ck.plan.space_scale())
            .map_err(|e| to_py(py, e))?;
        Ok(tile_tuple(&tc))
    }

    /// The output shape (b, c, t, h, w) of decoding a latent of `shape` (in `layout`).
    #[pyo3(signature = (shape, *, mode=None, tile=None, layout="bcthw"))]
    fn decoded_shape(
        &self,
        py: Python<'_>,
        shape: Vec<usize>,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
    ) -> PyResult<(usize, usize, usize, usize, usize)> {
        let mode = self.mode(py, mode, tile)?;
        let zs = self.shape(py, &shape, Layout::parse(py, layout)?)?;
        let s = match &self.dec {
            Loaded::F32(d) => d.decoded_shape(zs, &mode),
            Loaded::F64(d) => d.decoded_shape(zs, &mode),
        }
        .map_err(|e| to_py(py, e))?;
        Ok((s.n, s.c, s.d, s.h, s.w))
    }

    /// Estimated peak bytes of decoding a latent of `shape` (whole output held in memory).
    #[pyo3(signature = (shape, *, mode=None, tile=None, layout="bcthw"))]
    fn estimate_memory(
        &self,
        py: Python<'_>,
        shape: Vec<usize>,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
    ) -> PyResult<u64> {
        let mode = self.mode(py, mode, tile)?;
        let zs = self.shape(py, &shape, Layout::parse(py, layout)?)?;
        self.estimate(zs, &mode, true).map_err(|e| to_py(py, e))
    }

    /// Decodes z (a numpy array) and returns the video (b, out_ch, t', h', w') as a numpy
    /// array in the decode precision. See `movq.Decoder.decode`.
    #[pyo3(signature = (z, *, mode=None, tile=None, layout="bcthw", bf16=false, scale=None,
        allow_nonfinite=false, max_memory=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        z: &Bound<'py, PyAny>,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
        bf16: bool,
        scale: Option<f64>,
        allow_nonfinite: bool,
        max_memory: Option<f64>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = self.request(py, mode, tile, layout, bf16, scale, allow_nonfinite, max_memory)?;
        match &self.dec {
            Loaded::F32(d) => self.decode_in(py, d, z, &req, progress),
            Loaded::F64(d) => self.decode_in(py, d, z, &req, progress),
        }
    }

    /// Decodes z and returns the output of every module `modules` selects (globs in the
    /// checkpoint's naming; all when empty), cropped to `crop_*` (start, end) ranges, as a dict
    /// name -> numpy array in execution order (`NAME@chunkK` per frame batch); also writes the
    /// trace file `output` as `movq trace` does. See `movq.Decoder.trace`.
    #[pyo3(signature = (z, *, mode=None, tile=None, layout="bcthw", bf16=false, scale=None, modules=Vec::new(),
        crop_frames=None, crop_rows=None, crop_cols=None, output=None))]
    #[allow(clippy::too_many_arguments)]
    fn trace<'py>(
        &self,
        py: Python<'py>,
        z: &Bound<'py, PyAny>,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
        bf16: bool,
        scale: Option<f64>,
        modules: Vec<String>,
        crop_frames: Option<(usize, usize)>,
        crop_rows: Option<(usize, usize)>,
        crop_cols: Option<(usize, usize)>,
        output: Option<PathBuf>,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let req = self.request(py, mode, tile, layout, bf16, scale, false, None)?;
        let range = |r: Option<(usize, usize)>| r.map(|(a, b)| a..b);
        let opts = movq::trace::TraceOptions {
            modules,
            crop: movq::trace::Crop {
                frames: range(crop_frames),
                rows: range(crop_rows),
                cols: range(crop_cols),
            },
        };
        match &self.dec {
            Loaded::F32(d) => self.trace_in(py, d, z, &req, &opts, output),
            Loaded::F64(d) => self.trace_in(py, d, z, &req, &opts, output),
        }
    }

    /// Starts decoding z on a background thread; returns an iterator of (first_frame, frames).
    #[pyo3(signature = (z, *, mode=None, tile=None, layout="bcthw", bf16=false, scale=None,
        allow_nonfinite=false, max_memory=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        z: &Bound<'_, PyAny>,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
        bf16: bool,
        scale: Option<f64>,
        allow_nonfinite: bool,
        max_memory: Option<f64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<FrameStream> {
        let req = self.request(py, mode, tile, layout, bf16, scale, allow_nonfinite, max_memory)?;
        match &self.dec {
            Loaded::F32(d) => self.stream_in(py, d, z, req, progress),
            Loaded::F64(d) => self.stream_in(py, d, z, req, progress),
        }
    }

    /// Decodes z into the file `path` (`.npy`, `.safetensors`, `.y4m`, `.apng`), writing frames
    /// as they are decoded into a temporary renamed into place when complete. Returns the
    /// files written (one per sample for a video of several samples).
    #[pyo3(signature = (z, path, *, mode=None, tile=None, layout="bcthw", bf16=false, scale=None,
        allow_nonfinite=false, max_memory=None, progress=None, fps=8, chroma="420"))]
    #[allow(clippy::too_many_arguments)]
    fn decode_to_file(
        &self,
        py: Python<'_>,
        z: &Bound<'_, PyAny>,
        path: PathBuf,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
        bf16: bool,
        scale: Option<f64>,
        allow_nonfinite: bool,
        max_memory: Option<f64>,
        progress: Option<&Bound<'_, PyAny>>,
        fps: u32,
        chroma: &str,
    ) -> PyResult<Vec<PathBuf>> {
        let req = self.request(py, mode, tile, layout, bf16, scale, allow_nonfinite, max_memory)?;
        let chroma = output::chroma(chroma)
            .ok_or_else(|| named(py, "ConfigError", format!("chroma {chroma:?}: use \"420\" or \"444\"")))?;
        match &self.dec {
            Loaded::F32(d) => self.to_file(py, d, z, &req, &path, (fps, chroma), progress),
            Loaded::F64(d) => self.to_file(py, d, z, &req, &path, (fps, chroma), progress),
        }
    }
}

impl NativeDecoder {
    fn mode(&self, py: Python<'_>, mode: Option<&str>, tile: Option<TileTuple>) -> PyResult<DecodeMode> {
        let m = match (mode, tile) {
            (None, Some(_)) => "tiled",
            (Some(m), _) => m,
            (None, None) => self.default_mode(),
        };
        match (m, tile) {
            ("whole", None) => Ok(DecodeMode::Whole),
            ("chunked", None) => Ok(DecodeMode::Chunked),
            ("tiled", Some(t)) => {
                let tc = tile_config(t);
                tc.validate().map_err(|e| to_py(py, e))?;
                Ok(DecodeMode::Tiled(tc))
            }
            ("tiled", None) => Ok(DecodeMode::Tiled(tile_config(self.default_tile(py)?))),
            ("whole" | "chunked", Some(_)) => Err(named(
                py,
                "ConfigError",
                format!("a tile geometry was given with mode {m:?}; use mode \"tiled\""),
            )),
            _ => Err(named(
                py,
                "ConfigError",
                format!("unknown decode mode {m:?}: use whole, chunked or tiled"),
            )),
        }
    }

    fn shape(&self, py: Python<'_>, dims: &[usize], layout: Layout) -> PyResult<Shape> {
        if dims.len() != 5 {
            return Err(to_py(
                py,
                movq::Error::LatentRank {
                    path: latent::ARRAY.into(),
                    name: "shape".into(),
                    shape: dims.to_vec(),
                },
            ));
        }
        Shape::from_dims(&layout.bcthw(dims)).map_err(|e| to_py(py, e))
    }

    fn estimate(&self, zs: Shape, mode: &DecodeMode, keep_output: bool) -> movq::Result<u64> {
        let (elem, held) = match &self.dec {
            Loaded::F32(d) => (4, d.weight_cache_bytes()),
            Loaded::F64(d) => (8, d.weight_cache_bytes()),
        };
        let weight_bytes = self.ck.weight_bytes() * (elem as u64 / 4);
        let held_transform_bytes = held as u64;
        let footprint = Footprint { elem, weight_bytes, keep_output, held_transform_bytes };
        estimate_peak_bytes(&self.ck.plan, zs, mode, &footprint)
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        py: Python<'_>,
        mode: Option<&str>,
        tile: Option<TileTuple>,
        layout: &str,
        bf16: bool,
        scale: Option<f64>,
        allow_nonfinite: bool,
        max_memory: Option<f64>,
    ) -> PyResult<Request> {
        if let Some(m) = max_memory
            && !(m.is_finite() && m > 0.0)
        {
            return Err(named(py, "ConfigError", format!("max_memory {m} is not a positive number of GiB")));
        }
        Ok(Request {
            mode: self.mode(py, mode, tile)?,
            layout: Layout::parse(py, layout)?,
            bf16,
            scale,
            allow_nonfinite,
            max_memory,
        })
    }

    /// Reads z, checks it and the memory budget (as the CLI: available memory, or
    /// `max_memory` GiB if smaller), and returns it with the output shape.
    fn prepare<T: Precision>(
        &self,
        py: Python<'_>,
        dec: &Decoder<T>,
        z: &Bound<'_, PyAny>,
        req: &Request,
        keep_output: bool,
    ) -> PyResult<movq::Tensor<T>> {
        let z = latent::latent::<T>(py, z, req.layout, req.bf16, req.scale)?;
        latent::check_finite(py, &z, req.allow_nonfinite)?;
        dec.decoded_shape(z.shape(), &req.mode).map_err(|e| to_py(py, e))?;
        let estimate = self.estimate(z.shape(), &req.mode, keep_output).map_err(|e| to_py(py, e))?;
        let gib = |m: f64| (m * (1u64 << 30) as f64) as u64;
        let budget = match (req.max_memory, available_bytes()) {
            (Some(m), avail) => Some(gib(m).min(avail.unwrap_or(u64::MAX))),
            (None, avail) => avail,
        };
        if let Some(b) = budget {
            check_budget(estimate, b).map_err(|e| to_py(py, e))?;
        }
        Ok(z)
    }

    fn decode_in<'py, T: Precision>(
        &self,
        py: Python<'py>,
        dec: &Arc<Decoder<T>>,
        z: &Bound<'py, PyAny>,
        req: &Request,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let z = self.prepare(py, dec, z, req, true)?;
        let mode = &req.mode;
        let out = run::blocking(py, &self.pool, progress, |hook| {
            let shape = dec.decoded_shape(z.shape(), mode)?;
            let mut out = movq::Tensor::zeros(shape)?;
            dec.decode_stream(&z, mode, hook, |first, y| out.paste(&y, (first, 0, 0)))?;
            Ok(out)
        })?;
        run::to_numpy(py, out)
    }

    fn trace_in<'py, T: Precision>(
        &self,
        py: Python<'py>,
        dec: &Arc<Decoder<T>>,
        z: &Bound<'py, PyAny>,
        req: &Request,
        opts: &movq::trace::TraceOptions,
        output: Option<PathBuf>,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let z = self.prepare(py, dec, z, req, true)?;
        let (ck, mode) = (&self.ck, &req.mode);
        let t = run::blocking(py, &self.pool, None, |_| {
            let t = movq::trace::trace(ck, dec, &z, mode, opts)?;
            if let Some(p) = &output {
                t.write(p)?;
            }
            Ok(t.entries)
        })?;
        let d = pyo3::types::PyDict::new(py);
        for e in t {
            d.set_item(e.name, run::to_numpy(py, e.tensor)?)?;
        }
        Ok(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn to_file<T: Precision>(
        &self,
        py: Python<'_>,
        dec: &Arc<Decoder<T>>,
        z: &Bound<'_, PyAny>,
        req: &Request,
        path: &std::path::Path,
        video: (u32, movq::io::Chroma),
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<PathBuf>> {
        let z = self.prepare(py, dec, z, req, false)?;
        let mode = &req.mode;
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("producer".to_string(), format!("movq-python {}", env!("CARGO_PKG_VERSION")));
        meta.insert("precision".to_string(), dec.precision_name().to_string());
        meta.insert("mode".to_string(), format!("{mode:?}"));
        run::blocking(py, &self.pool, progress, |hook| {
            let shape = dec.decoded_shape(z.shape(), mode)?;
            let opts = movq::io::SinkOptions { apng: false, fps: video.0, chroma: video.1 };
            let mut sink = movq::io::OutputSink::create::<T>(path, shape, &opts, &meta)?;
            dec.decode_stream(&z, mode, hook, |first, y| sink.write(first, &y))?;
            let paths = sink.paths();
            sink.finish()?;
            Ok(paths)
        })
    }

    fn stream_in<T: Precision>(
        &self,
        py: Python<'_>,
        dec: &Arc<Decoder<T>>,
        z: &Bound<'_, PyAny>,
        req: Request,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<FrameStream> {
        let z = self.prepare(py, dec, z, &req, false)?;
        Ok(FrameStream::spawn(dec.clone(), self.pool.clone(), z, req.mode, progress))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeDecoder>()?;
    m.add_class::<FrameStream>()?;
    m.add_class::<Progress>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
