//! A numpy array as movq's latent tensor: dtype conversion, axis order and scaling in one pass
//! over the array's own buffer (any strides; no intermediate copy).

use crate::errors::named;
use half::{bf16, f16};
use movq::kernels::Float;
use movq::{Shape, Tensor};
use numpy::ndarray::{ArrayViewD, IxDyn};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::path::Path;

/// What the messages call a latent that came from memory instead of a file.
pub const ARRAY: &str = "<array>";

/// Axis order of the latent array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// (batch, channels, frames, height, width): what the VAE takes.
    Bcthw,
    /// (batch, frames, channels, height, width): what the CogVideoX transformer outputs.
    Btchw,
}

impl Layout {
    pub fn parse(py: Python<'_>, s: &str) -> PyResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bcthw" => Ok(Layout::Bcthw),
            "btchw" => Ok(Layout::Btchw),
            _ => Err(named(
                py,
                "LatentError",
                format!("unknown latent layout {s:?}; use \"bcthw\" or \"btchw\""),
            )),
        }
    }

    /// The (b, c, t, h, w) dims of an array of `dims` in this layout (rank already checked).
    pub fn bcthw(self, dims: &[usize]) -> [usize; 5] {
        match self {
            Layout::Bcthw => [dims[0], dims[1], dims[2], dims[3], dims[4]],
            Layout::Btchw => [dims[0], dims[2], dims[1], dims[3], dims[4]],
        }
    }
}

/// z (b, c, t, h, w) in `T` from `view` in `layout`, each element converted by `f` and
/// multiplied by `mul` (1 / scaling factor) when given, as the CLI does after reading a file.
fn convert<E: Copy, T: Float>(
    view: ArrayViewD<'_, E>,
    layout: Layout,
    mul: Option<f64>,
    f: impl Fn(E) -> T,
) -> movq::Result<Tensor<T>> {
    let dims = view.shape().to_vec();
    let name = "array".to_string();
    if dims.len() != 5 {
        return Err(movq::Error::LatentRank { path: ARRAY.into(), name, shape: dims });
    }
    if dims.contains(&0) {
        return Err(movq::Error::EmptyLatent { path: ARRAY.into(), name, shape: dims });
    }
    let shape = Shape::from_dims(&layout.bcthw(&dims))?;
    let view = match layout {
        Layout::Bcthw => view,
        Layout::Btchw => view.permuted_axes(IxDyn(&[0, 2, 1, 3, 4])),
    };
    let mut data = Vec::new();
    data.try_reserve_exact(shape.numel()?).map_err(|_| movq::Error::TooLarge {
        what: format!("latent {shape}"),
        reason: "cannot allocate it".into(),
    })?;
    match view.as_slice() {
        // C-contiguous in the wanted order: a straight pass over the buffer.
        Some(s) => data.extend(s.iter().map(|&x| f(x))),
        None => data.extend(view.iter().map(|&x| f(x))),
    }
    if let Some(m) = mul {
        let m = T::from_f64(m);
        data.iter_mut().for_each(|v| *v = *v * m);
    }
    Tensor::from_vec(shape, data)
}

/// Reads `z`, a numpy array of float32, float64, float16, or uint16 holding bfloat16 bits (when
/// `bf16`), as the latent (b, c, t, h, w) in `T`, divided by `scale` when given.
pub fn latent<T: Float>(
    py: Python<'_>,
    z: &Bound<'_, PyAny>,
    layout: Layout,
    bf16_bits: bool,
    scale: Option<f64>,
) -> PyResult<Tensor<T>> {
    let mul = match scale {
        Some(f) if !(f.is_finite() && f != 0.0) => {
            return Err(named(
                py,
                "LatentError",
                format!("scaling factor {f} is not a finite non-zero number"),
            ));
        }
        Some(f) => Some(1.0 / f),
        None => None,
    };
    let err = |e| crate::errors::to_py(py, e);
    if bf16_bits {
        if let Ok(a) = z.cast::<PyArrayDyn<u16>>() {
            let r = a.try_readonly()?;
            return convert(r.as_array(), layout, mul, |x| T::from_f32(bf16::from_bits(x).to_f32()))
                .map_err(err);
        }
        return Err(named(py, "LatentError", "bfloat16 latents are passed as uint16 bit patterns".into()));
    }
    if let Ok(a) = z.cast::<PyArrayDyn<f32>>() {
        let r = a.try_readonly()?;
        return convert(r.as_array(), layout, mul, T::from_f32).map_err(err);
    }
    if let Ok(a) = z.cast::<PyArrayDyn<f64>>() {
        let r = a.try_readonly()?;
        return convert(r.as_array(), layout, mul, T::from_f64).map_err(err);
    }
    if let Ok(a) = z.cast::<PyArrayDyn<f16>>() {
        let r = a.try_readonly()?;
        return convert(r.as_array(), layout, mul, |x| T::from_f32(x.to_f32())).map_err(err);
    }
    let what = match z.cast::<PyUntypedArray>() {
        Ok(a) => format!("a numpy array of dtype {}", a.dtype()),
        Err(_) => format!("a {}", z.get_type().name()?),
    };
    Err(named(
        py,
        "LatentError",
        format!("the latent is {what}; movq takes float32, float64, float16 or bfloat16 arrays or tensors"),
    ))
}

/// Refuses NaN / Inf in z as the CLI does (`NonFiniteLatent`); with `allow`, warns instead.
pub fn check_finite<T: Float>(py: Python<'_>, z: &Tensor<T>, allow: bool) -> PyResult<()> {
    let Err(e) = movq::io::check_finite(Path::new(ARRAY), z) else { return Ok(()) };
    if !allow {
        return Err(crate::errors::to_py(py, e));
    }
    let msg = format!("{e}; decoding anyway (allow_nonfinite=True)");
    let warn = py.import("warnings")?.getattr("warn")?;
    warn.call1((msg, py.get_type::<pyo3::exceptions::PyRuntimeWarning>()))?;
    Ok(())
}
