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

/// Columns per block of [`pointwise_in_place`].
pub const POINTWISE_BLOCK_COLS: usize = 1 << 14;

/// A 1x1x1 convolution without padding (`c_out <= c_in`) over `buf`'s own memory: on entry
/// buf holds n samples x (c_in, len); on return its first n * c_out * len elements hold
/// out = bias + W · x, (n, c_out, len) (the rest is left over input). Column blocks of
/// [`POINTWISE_BLOCK_COLS`] go through a small buffer: a block's results are written only
/// after its gemm has read every input channel at those columns, and an output element
/// (row b * c_out + co of buf) lands on an input row of an earlier sample or on a column of
/// the block just read (co < c_out <= c_in), so no input is overwritten before it is read.
/// weight: (c_out, c_in); bias: (c_out,)
pub fn pointwise_in_place<T: Float>(
    buf: &mut [T],
    n: usize,
    c_in: usize,
    len: usize,
    weight: &[T],
    bias: &[T],
) {
    pointwise_in_place_blocked(buf, (n, c_in, len), weight, bias, POINTWISE_BLOCK_COLS);
}

/// [`pointwise_in_place`] with blocks of `cols` columns (tests use small ones).
pub fn pointwise_in_place_blocked<T: Float>(
    buf: &mut [T],
    (n, c_in, len): (usize, usize, usize),
    weight: &[T],
    bias: &[T],
    cols: usize,
) {
    let c_out = bias.len();
    assert!(c_out <= c_in, "in-place pointwise conv needs c_out <= c_in");
    assert_eq!(weight.len(), c_out * c_in);
    assert_eq!(buf.len(), n * c_in * len);
    if len == 0 || c_out == 0 {
        return;
    }
    let cols = cols.clamp(1, len);
    let mut block = vec![T::ZERO; c_out * cols];
    let lhs = Mat { data: weight, rs: c_in, cs: 1 };
    for b in 0..n {
        for p0 in (0..len).step_by(cols) {
            let nc = cols.min(len - p0);
            let block = &mut block[..c_out * nc];
            for (row, &v) in block.chunks_exact_mut(nc).zip(bias) {
                row.fill(v);
            }
            let rhs = Mat { data: &buf[b * c_in * len + p0..], rs: len, cs: 1 };
            gemm(c_out, nc, c_in, block, nc, 1, true, lhs, rhs, Par::Rayon);
            // Split over the threads: one thread copying 128 x 16k values left the other idle
            // (0.3 % of a CogVideoX decode, perf).
            let rows = &mut buf[b * c_out * len..][..c_out * len];
            rows.par_chunks_mut(len).zip(block.par_chunks(nc)).for_each(|(dst, row)| {
                dst[p0..][..nc].copy_from_slice(row);
            });
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(64)))]

        /// The in-place pointwise conv equals the plain reference conv of every sample (to
        /// float rounding) and leaves nothing of the input in the output, for any block width.
        #[test]
        fn pointwise_in_place_matches_reference(n in 1usize..4, c_in in 1usize..12, c_out_raw in 0usize..12,
                                                len in 1usize..70, cols in 1usize..80, seed in any::<u64>()) {
            let c_out = 1 + c_out_raw % c_in;
            let vals = |k: usize, salt: u64| -> Vec<f64> {
                (0..k).map(|i| {
                    let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_add(salt);
                    ((h >> 11) % 2001) as f64 / 1000.0 - 1.0
                }).collect()
            };
            let (x, w, b) = (vals(n * c_in * len, 1), vals(c_out * c_in, 2), vals(c_out, 3));
            let mut buf = x.clone();
            pointwise_in_place_blocked(&mut buf, (n, c_in, len), &w, &b, cols);
            let p = Conv3dParams::plain(c_in, c_out, (1, 1, 1));
            for s in 0..n {
                let mut want = vec![0.0; c_out * len];
                let call = ConvCall { x: &x[s * c_in * len..][..c_in * len], dims: (1, 1, len), weight: &w, bias: &b, p: &p };
                reference::conv3d(&mut want, &call);
                let got = &buf[s * c_out * len..][..c_out * len];
                for (g, r) in got.iter().zip(&want) {
                    prop_assert!((g - r).abs() <= 1e-12 * (1.0 + r.abs()), "{g} vs {r}");
                }
            }
        }
    }

    /// At the block width decodes use, the result is bitwise the single-gemm pointwise conv of
    /// [`conv3d`] (one 3-frame 64x96 sample and a batch of two, 256 -> 128 channels).
    #[test]
    fn pointwise_in_place_is_bitwise_conv3d() {
        let (c_in, c_out, len) = (256, 128, 3 * 64 * 96);
        let vals = |k: usize, salt: u32| -> Vec<f32> {
            (0..k)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ salt) as f32 / u32::MAX as f32 - 0.5)
                .collect()
        };
        let (w, b) = (vals(c_out * c_in, 7), vals(c_out, 9));
        let p = Conv3dParams::plain(c_in, c_out, (1, 1, 1));
        for n in [1, 2] {
            let x = vals(n * c_in * len, 5);
            let mut buf = x.clone();
            pointwise_in_place(&mut buf, n, c_in, len, &w, &b);
            for s in 0..n {
                let mut want = vec![0.0f32; c_out * len];
                let call = ConvCall {
                    x: &x[s * c_in * len..][..c_in * len],
                    dims: (3, 64, 96),
                    weight: &w,
                    bias: &b,
                    p: &p,
                };
                conv3d(&mut want, &call);
                assert!(buf[s * c_out * len..][..c_out * len] == want[..], "sample {s} of {n}");
            }
        }
    }
}
