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

use super::Float;
use super::gemm::{Mat, Par, gemm};
use super::params::{Conv3dParams, ConvAlgo, ConvCall};
use super::vol2col::vol2col;
use super::winograd::{WinogradOptions, conv3d_winograd};
use super::winograd4::conv3d_winograd4;
use rayon::prelude::*;

/// Upper bound of the im2col scratch of one convolution call.
pub const IM2COL_TILE_BYTES: usize = 16 << 20;

/// Columns of one im2col tile of `p` for element size `elem` bytes, of `total` output positions.
pub fn tile_cols(p: &Conv3dParams, elem: usize, total: usize) -> usize {
    (IM2COL_TILE_BYTES / (p.k_len() * elem).max(1)).clamp(1, total.max(1))
}

/// out = bias + conv(x) for one sample, by the algorithm [`ConvAlgo::for_params`] picks.
/// out: (c_out, d_out, h_out, w_out).
pub fn conv3d<T: Float>(out: &mut [T], c: &ConvCall<'_, T>) {
    let p = c.p;
    match ConvAlgo::for_params(p) {
        ConvAlgo::Winograd => return conv3d_winograd(out, c, &WinogradOptions::default()),
        ConvAlgo::Winograd4 => return conv3d_winograd4(out, c, &WinogradOptions::default()),
        ConvAlgo::Im2col => {}
    }
    let (d, h, w) = c.dims;
    let (d_out, h_out, w_out) = p.out_dims(d, h, w).expect("caller validated the conv geometry");
    let cols = tile_cols(p, std::mem::size_of::<T>(), d_out * h_out * w_out);
    conv3d_tiled(out, c, cols)
}

/// [`conv3d`] with an explicit im2col tile width of `cols` output positions (tests use small
/// tiles to exercise the tiling).
pub fn conv3d_tiled<T: Float>(out: &mut [T], c: &ConvCall<'_, T>, cols: usize) {
    let ConvCall { x, dims, weight, bias, p } = *c;
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
