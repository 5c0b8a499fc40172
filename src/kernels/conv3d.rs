//! 3D convolution of one sample as tiled im2col + gemm.
//!
//! Algorithm: the output positions (d_out * h_out * w_out, flattened) are cut into column tiles
//! so that one im2col tile (c_in*k_d*k_h*k_w rows x tile columns) stays under
//! [`IM2COL_TILE_BYTES`], whatever the input size. For each tile: fill it (in parallel over
//! rows, [`super::vol2col`]), then `out[:, tile] = bias + W · tile` with one gemm (parallel
//! inside gemm). The two phases are separate, so each has one level of parallelism. A 1x1x1
//! convolution without padding skips im2col: the input itself is the right-hand matrix.
//!
//! Padding covers every CausalConv3d mode: H/W zeros (possibly asymmetric, for the upstream
//! "constant" pad-order quirk) and a time prefix that holds zeros, copies of frame 0, or
//! reflected frames (see [`TimePad`]); a time suffix always holds zeros.
//! Determinism: the tile width depends only on the layer shape, never on the thread count, and
//! gemm's per-element accumulation order does not depend on its thread count.

use super::gemm::{Mat, Par, gemm};
use super::vol2col::vol2col;
use crate::kernels::Float;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// Upper bound of the im2col scratch of one convolution call.
pub const IM2COL_TILE_BYTES: usize = 16 << 20;

/// What the `pad_d.0` frames in front of the input hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimePad {
    /// Zero frames.
    Zeros,
    /// Copies of frame 0 (CausalConv3d "first").
    ReplicateFirst,
    /// Frames `pad, pad-1, .., 1`, the missing ones (input too short) as zeros (CausalConv3d "reflect").
    Reflect,
}

/// Geometry of a 3D convolution; spatial stride and dilation are 1 (as in every upstream conv).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv3dParams {
    pub c_in: usize,
    pub c_out: usize,
    pub k_d: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_d: usize,
    pub dilation_d: usize,
    /// Frames (before, after) the input.
    pub pad_d: (usize, usize),
    pub pad_h: (usize, usize),
    pub pad_w: (usize, usize),
    pub time_pad: TimePad,
}

impl Conv3dParams {
    /// A convolution without padding and with unit strides.
    pub fn plain(c_in: usize, c_out: usize, k: (usize, usize, usize)) -> Self {
        Conv3dParams {
            c_in,
            c_out,
            k_d: k.0,
            k_h: k.1,
            k_w: k.2,
            stride_d: 1,
            dilation_d: 1,
            pad_d: (0, 0),
            pad_h: (0, 0),
            pad_w: (0, 0),
            time_pad: TimePad::Zeros,
        }
    }

    /// Rows of the im2col matrix: c_in * k_d * k_h * k_w.
    pub fn k_len(&self) -> usize {
        self.c_in * self.k_d * self.k_h * self.k_w
    }

    /// Output (d, h, w) for an input of (d, h, w); `None` if the kernel does not fit the padded
    /// input or a parameter is zero.
    pub fn out_dims(&self, d: usize, h: usize, w: usize) -> Option<(usize, usize, usize)> {
        if self.k_d == 0 || self.k_h == 0 || self.k_w == 0 || self.stride_d == 0 || self.dilation_d == 0 {
            return None;
        }
        let dp = d.checked_add(self.pad_d.0)?.checked_add(self.pad_d.1)?;
        let span_d = self.dilation_d.checked_mul(self.k_d - 1)?.checked_add(1)?;
        let d_out = dp.checked_sub(span_d)? / self.stride_d + 1;
        let h_out = (h.checked_add(self.pad_h.0)?.checked_add(self.pad_h.1)?).checked_sub(self.k_h - 1)?;
        let w_out = (w.checked_add(self.pad_w.0)?.checked_add(self.pad_w.1)?).checked_sub(self.k_w - 1)?;
        if d == 0 || h_out == 0 || w_out == 0 {
            return None;
        }
        Some((d_out, h_out, w_out))
    }

    /// The input frame that time tap `dt` of output frame `t` reads, or `None` for a zero frame.
    pub fn src_frame(&self, t: usize, dt: usize, d: usize) -> Option<usize> {
        let q = t * self.stride_d + dt * self.dilation_d;
        let lo = self.pad_d.0;
        if q >= lo {
            let s = q - lo;
            return (s < d).then_some(s);
        }
        match self.time_pad {
            TimePad::Zeros => None,
            TimePad::ReplicateFirst => Some(0),
            TimePad::Reflect => {
                let s = lo - q;
                (s < d).then_some(s)
            }
        }
    }

    /// True for a 1x1x1 conv that reads input position p for output position p.
    fn is_pointwise(&self) -> bool {
        self.k_d == 1
            && self.k_h == 1
            && self.k_w == 1
            && self.stride_d == 1
            && self.pad_d == (0, 0)
            && self.pad_h == (0, 0)
            && self.pad_w == (0, 0)
    }

    /// Columns of one im2col tile for element size `elem` bytes.
    pub fn tile_cols(&self, elem: usize, total: usize) -> usize {
        (IM2COL_TILE_BYTES / (self.k_len() * elem).max(1)).clamp(1, total.max(1))
    }
}

/// out = bias + conv(x) for one sample.
/// out: (c_out, d_out, h_out, w_out); x: (c_in, d, h, w) with `dims = (d, h, w)`;
/// weight: (c_out, c_in, k_d, k_h, k_w); bias: (c_out,).
pub fn conv3d<T: Float>(
    out: &mut [T],
    x: &[T],
    weight: &[T],
    bias: &[T],
    p: &Conv3dParams,
    dims: (usize, usize, usize),
) {
    if conv_algo() == ConvAlgo::Winograd && super::winograd::supports(p) {
        let opts = super::winograd::WinogradOptions::default();
        return super::winograd::conv3d_winograd(out, x, weight, bias, p, dims, &opts);
    }
    let (d, h, w) = dims;
    let (d_out, h_out, w_out) = p.out_dims(d, h, w).expect("caller validated the conv geometry");
    let cols = p.tile_cols(std::mem::size_of::<T>(), d_out * h_out * w_out);
    conv3d_tiled(out, x, weight, bias, p, dims, cols)
}

/// How [`conv3d`] computes convolutions with 3x3 spatial taps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// Winograd F(2x2, 3x3) (2.25x fewer multiplies; the default).
    Winograd,
    /// im2col + gemm: the direct sum, closest to PyTorch's rounding.
    Im2col,
}

static CONV_ALGO: AtomicU8 = AtomicU8::new(0);

/// The process-wide convolution algorithm: [`set_conv_algo`], else `MOVQ_CONV=im2col` in the
/// environment, else Winograd.
pub fn conv_algo() -> ConvAlgo {
    match CONV_ALGO.load(Ordering::Relaxed) {
        1 => ConvAlgo::Winograd,
        2 => ConvAlgo::Im2col,
        _ => {
            let a = if std::env::var("MOVQ_CONV").is_ok_and(|v| v.eq_ignore_ascii_case("im2col")) {
                ConvAlgo::Im2col
            } else {
                ConvAlgo::Winograd
            };
            set_conv_algo(a);
            a
        }
    }
}

/// Selects the convolution algorithm for the whole process.
pub fn set_conv_algo(a: ConvAlgo) {
    CONV_ALGO.store(if a == ConvAlgo::Winograd { 1 } else { 2 }, Ordering::Relaxed);
}

/// [`conv3d`] with an explicit im2col tile width of `cols` output positions (tests use small
/// tiles to exercise the tiling).
pub fn conv3d_tiled<T: Float>(
    out: &mut [T],
    x: &[T],
    weight: &[T],
    bias: &[T],
    p: &Conv3dParams,
    dims: (usize, usize, usize),
    cols: usize,
) {
    let (d, h, w) = dims;
    let (d_out, h_out, w_out) = p.out_dims(d, h, w).expect("caller validated the conv geometry");
    let n_out = d_out * h_out * w_out;
    let k_len = p.k_len();
    assert_eq!(out.len(), p.c_out * n_out);
    assert_eq!(x.len(), p.c_in * d * h * w);
    assert_eq!(weight.len(), p.c_out * k_len);
    assert_eq!(bias.len(), p.c_out);

    out.par_chunks_mut(n_out).zip(bias.par_iter()).for_each(|(plane, &b)| plane.fill(b));
    let lhs = Mat { data: weight, rs: k_len, cs: 1 };
    if p.is_pointwise() {
        let rhs = Mat { data: x, rs: n_out, cs: 1 };
        gemm(p.c_out, n_out, k_len, out, n_out, 1, true, lhs, rhs, Par::Rayon);
        return;
    }
    let cols = cols.clamp(1, n_out);
    let mut tile = vec![T::ZERO; k_len * cols];
    let mut p0 = 0;
    while p0 < n_out {
        let nc = cols.min(n_out - p0);
        let tile = &mut tile[..k_len * nc];
        vol2col(tile, x, p, dims, p0);
        let rhs = Mat { data: tile, rs: nc, cs: 1 };
        gemm(p.c_out, nc, k_len, &mut out[p0..], n_out, 1, true, lhs, rhs, Par::Rayon);
        p0 += nc;
    }
}
