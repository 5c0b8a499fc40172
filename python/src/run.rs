//! Running a decode off the Python thread: the decode runs on a worker thread (inside the
//! decoder's rayon pool) with the GIL released, while the calling thread waits in short slices,
//! runs the progress callback there and checks for signals. Ctrl-C (or an exception from the
//! callback) sets a flag the decode reads after each stage, so it stops within one stage.

use crate::errors::to_py;
use crossbeam_channel::{Receiver, RecvTimeoutError, bounded, unbounded};
use movq::kernels::Float;
use movq::model::{DecodeMode, Progress as MovqProgress, Stage};
use movq::{Decoder, Tensor};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rayon::ThreadPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the calling thread waits before checking for signals again.
const POLL: Duration = Duration::from_millis(50);

/// Where a decode stands, handed to the progress callback after each finished stage.
#[pyclass(frozen, get_all, module = "movq._native")]
pub struct Progress {
    /// The decoder call running (1-based): frame batches times tiles.
    pub call: usize,
    pub calls: usize,
    /// The stage just finished: "mid", "level N" (levels run from the highest N down to 0), "out".
    pub stage: String,
    /// FLOPs done and in total (the plain network's count), the measure of work for an ETA.
    pub flop_done: u64,
    pub flop_total: u64,
}

#[pymethods]
impl Progress {
    /// flop_done / flop_total, in [0, 1].
    #[getter]
    fn fraction(&self) -> f64 {
        if self.flop_total == 0 { 1.0 } else { self.flop_done as f64 / self.flop_total as f64 }
    }

    fn __repr__(&self) -> String {
        format!(
            "Progress(call={}/{}, stage={:?}, {:.1}%)",
            self.call,
            self.calls,
            self.stage,
            100.0 * self.fraction()
        )
    }
}

impl From<&MovqProgress> for Progress {
    fn from(p: &MovqProgress) -> Self {
        let stage = match p.stage {
            Stage::Mid => "mid".to_string(),
            Stage::Level(i) => format!("level {i}"),
            Stage::Out => "out".to_string(),
        };
        let sat = |x: u128| x.min(u64::MAX as u128) as u64;
        Progress {
            call: p.call,
            calls: p.calls,
            stage,
            flop_done: sat(p.flop_done),
            flop_total: sat(p.flop_total),
        }
    }
}

fn interrupted(why: &str) -> movq::Error {
    movq::Error::Interrupted(why.to_string())
}

/// Calls the progress callback (if any) and checks for signals; the first exception either
/// raises is kept in `raised` and stops the decode through `cancel`.
fn on_caller(
    py: Python<'_>,
    callback: Option<&Bound<'_, PyAny>>,
    progress: Option<&MovqProgress>,
    raised: &mut Option<PyErr>,
    cancel: &AtomicBool,
) {
    if raised.is_some() {
        return;
    }
    let r = match (callback, progress) {
        (Some(cb), Some(p)) => cb.call1((Progress::from(p),)).map(drop),
        _ => Ok(()),
    }
    .and_then(|()| py.check_signals());
    if let Err(e) = r {
        *raised = Some(e);
        cancel.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` (a decode given a progress hook) on a worker thread of `pool` with the GIL
/// released, while this thread runs `callback` on each progress and watches for Ctrl-C.
pub fn blocking<R: Send>(
    py: Python<'_>,
    pool: &ThreadPool,
    callback: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&mut dyn FnMut(&MovqProgress) -> movq::Result<()>) -> movq::Result<R> + Send,
) -> PyResult<R> {
    let cancel = AtomicBool::new(false);
    let (tx, rx) = unbounded::<MovqProgress>();
    std::thread::scope(|s| {
        let cancel_ref = &cancel;
        let worker = s.spawn(move || {
            pool.install(move || {
                work(&mut |p| {
                    if cancel_ref.load(Ordering::Relaxed) {
                        return Err(interrupted("stopped by the caller (Ctrl-C or an exception)"));
                    }
                    // The receiver outlives the worker.
                    let _ = tx.send(*p);
                    Ok(())
                })
            })
        });
        let mut raised = None;
        loop {
            match py.detach(|| rx.recv_timeout(POLL)) {
                Ok(p) => on_caller(py, callback, Some(&p), &mut raised, &cancel),
                Err(RecvTimeoutError::Timeout) => on_caller(py, None, None, &mut raised, &cancel),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let result = match py.detach(|| worker.join()) {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match raised {
            Some(e) => Err(e),
            None => result.map_err(|e| to_py(py, e)),
        }
    })
}

/// Decoded frames in the decode's precision.
pub enum Frames {
    F32(Tensor<f32>),
    F64(Tensor<f64>),
}

/// The element types a decode runs in, with their numpy twin.
pub trait Precision: Float + numpy::Element {
    fn frames(t: Tensor<Self>) -> Frames;
}

impl Precision for f32 {
    fn frames(t: Tensor<f32>) -> Frames {
        Frames::F32(t)
    }
}

impl Precision for f64 {
    fn frames(t: Tensor<f64>) -> Frames {
        Frames::F64(t)
    }
}

/// A tensor (n, c, d, h, w) as a numpy array that owns its buffer (no copy).
pub fn to_numpy<'py, T: Precision>(py: Python<'py>, t: Tensor<T>) -> PyResult<Bound<'py, PyAny>> {
    let dims = t.shape().dims();
    let a = numpy::ndarray::Array::from_shape_vec(numpy::ndarray::IxDyn(&dims), t.into_vec())
        .map_err(|e| PyRuntimeError::new_err(format!("output shape {dims:?}: {e}")))?;
    Ok(numpy::PyArray::from_owned_array(py, a).into_any())
}

impl Frames {
    fn into_numpy(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Frames::F32(t) => to_numpy(py, t),
            Frames::F64(t) => to_numpy(py, t),
        }
    }
}

enum Msg {
    Frames(usize, Frames),
    Done(movq::Result<()>),
}

/// An iterator over the frame batches of a decode, yielded as `(first_frame, frames)` as soon
/// as each is decoded (chunked: one per latent frame batch; whole and tiled: one at the end).
/// At most one finished batch waits for the consumer while the next is decoded, so memory stays
/// bounded whatever the clip length. Closing it (or dropping it, or Ctrl-C while waiting)
/// stops the decode after its running stage.
#[pyclass(module = "movq._native")]
pub struct FrameStream {
    frames: Receiver<Msg>,
    progress: Receiver<MovqProgress>,
    callback: Option<Py<PyAny>>,
    cancel: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
    done: bool,
}

impl FrameStream {
    /// Starts decoding z on a new thread inside `pool`.
    pub fn spawn<T: Precision>(
        dec: Arc<Decoder<T>>,
        pool: Arc<ThreadPool>,
        z: Tensor<T>,
        mode: DecodeMode,
        callback: Option<Py<PyAny>>,
    ) -> Self {
        let (ftx, frames) = bounded::<Msg>(1);
        let (ptx, progress) = unbounded::<MovqProgress>();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        let worker = std::thread::spawn(move || {
            let r = pool.install(|| {
                dec.decode_stream(
                    &z,
                    &mode,
                    &mut |p| {
                        if stop.load(Ordering::Relaxed) {
                            return Err(interrupted("the frame stream was closed"));
                        }
                        let _ = ptx.send(*p);
                        Ok(())
                    },
                    |first, y| {
                        ftx.send(Msg::Frames(first, T::frames(y)))
                            .map_err(|_| interrupted("the frame stream was closed"))
                    },
                )
            });
            // Nobody may be listening any more; then there is nothing to report.
            let _ = ftx.send(Msg::Done(r));
        });
        FrameStream { frames, progress, callback, cancel, worker: Some(worker), done: false }
    }

    /// Stops the decode and waits for its thread.
    fn stop(&mut self, py: Python<'_>) {
        self.cancel.store(true, Ordering::Relaxed);
        self.done = true;
        // Dropping the receiver makes a blocked `send` of the worker fail at once.
        self.frames = crossbeam_channel::never();
        if let Some(w) = self.worker.take() {
            let _ = py.detach(|| w.join());
        }
    }
}

#[pymethods]
impl FrameStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<(usize, Bound<'py, PyAny>)>> {
        if self.done {
            return Ok(None);
        }
        let mut raised = None;
        loop {
            let callback = self.callback.as_ref().map(|c| c.bind(py).clone());
            while let Ok(p) = self.progress.try_recv() {
                on_caller(py, callback.as_ref(), Some(&p), &mut raised, &self.cancel);
            }
            on_caller(py, None, None, &mut raised, &self.cancel);
            if let Some(e) = raised {
                self.stop(py);
                return Err(e);
            }
            let frames = &self.frames;
            match py.detach(|| frames.recv_timeout(POLL)) {
                Ok(Msg::Frames(first, y)) => {
                    // Progress up to this batch is reported before the batch is yielded.
                    while let Ok(p) = self.progress.try_recv() {
                        on_caller(py, callback.as_ref(), Some(&p), &mut raised, &self.cancel);
                    }
                    if let Some(e) = raised {
                        self.stop(py);
                        return Err(e);
                    }
                    return Ok(Some((first, y.into_numpy(py)?)));
                }
                Ok(Msg::Done(r)) => {
                    while let Ok(p) = self.progress.try_recv() {
                        on_caller(py, callback.as_ref(), Some(&p), &mut raised, &self.cancel);
                    }
                    self.stop(py);
                    if let Some(e) = raised {
                        return Err(e);
                    }
                    return r.map(|()| None).map_err(|e| to_py(py, e));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop(py);
                    return Err(PyRuntimeError::new_err("movq: the decode thread ended without a result"));
                }
            }
        }
    }

    /// Stops the decode (after its running stage) and waits for it; later iteration ends.
    fn close(&mut self, py: Python<'_>) {
        self.stop(py);
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.stop(py);
        false
    }
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        // The worker sees the flag after its running stage (or its send fails) and exits;
        // it is not joined here, so dropping never blocks.
        self.cancel.store(true, Ordering::Relaxed);
    }
}
