//! Fast im2col for one column tile of a 3D convolution; twin of [`super::reference::vol2col`].
//!
//! Row r = ((ci * k_d + dt) * k_h + dh) * k_w + dw of the tile holds, for every output position
//! of the tile, the input value that weight tap (ci, dt, dh, dw) multiplies. Each row is built by
//! whole output-row runs: one bounds decision per run, then a slice copy for the valid columns
//! and zero fill for the padding. Rows are independent and filled in parallel.

use super::params::Conv3dParams;
use crate::tensor::Element;
use rayon::prelude::*;

/// tile: (k_len, n_cols) for output columns `p0 .. p0 + n_cols`; x: (c_in, d, h, w).
pub fn vol2col<T: Element>(
    tile: &mut [T],
    x: &[T],
    p: &Conv3dParams,
    dims: (usize, usize, usize),
    p0: usize,
) {
    let (d, h, w) = dims;
    let (_, h_out, w_out) = p.out_dims(d, h, w).expect("caller validated the conv geometry");
    let k_len = p.k_len();
    let n_cols = tile.len() / k_len;
    debug_assert_eq!(tile.len(), k_len * n_cols);
    tile.par_chunks_mut(n_cols).enumerate().for_each(|(r, row)| {
        let dw = r % p.k_w;
        let dh = (r / p.k_w) % p.k_h;
        let dt = (r / (p.k_w * p.k_h)) % p.k_d;
        let ci = r / (p.k_w * p.k_h * p.k_d);
        let x_c = &x[ci * d * h * w..(ci + 1) * d * h * w];
        let mut j = 0;
        while j < n_cols {
            let q = p0 + j;
            let (t, y, x0) = (q / (h_out * w_out), (q / w_out) % h_out, q % w_out);
            let run = (w_out - x0).min(n_cols - j);
            let dst = &mut row[j..j + run];
            let iy = (y + dh) as isize - p.pad_h.0 as isize;
            match p.src_frame(t, dt, d) {
                Some(s) if iy >= 0 && (iy as usize) < h => {
                    let src = &x_c[(s * h + iy as usize) * w..][..w];
                    // Output column xo reads input column xo + dw - pad_w.0; the valid
                    // columns of the run form one range [start, end).
                    let shift = dw as isize - p.pad_w.0 as isize;
                    let start = (-(x0 as isize + shift)).clamp(0, run as isize) as usize;
                    let end = (w as isize - shift - x0 as isize).clamp(start as isize, run as isize) as usize;
                    dst[..start].fill(T::ZERO);
                    dst[end..].fill(T::ZERO);
                    if end > start {
                        let ix0 = ((x0 + start) as isize + shift) as usize;
                        dst[start..end].copy_from_slice(&src[ix0..ix0 + (end - start)]);
                    }
                }
                _ => dst.fill(T::ZERO),
            }
            j += run;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::testing::{CONV_RAW, ConvProblem, conv_problem, noncubic_conv_problem};
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    fn params(
        make: fn([usize; CONV_RAW], usize) -> ConvProblem,
    ) -> impl Strategy<Value = (Conv3dParams, (usize, usize, usize))> {
        any::<[usize; CONV_RAW]>().prop_map(move |raw| {
            let c = make(raw, 3);
            (c.p, c.dims)
        })
    }

    /// The fast tile of columns `split % n_out ..` (at most `split` of them) equals the reference.
    fn check(p: &Conv3dParams, dims: (usize, usize, usize), split: usize) -> Result<(), TestCaseError> {
        let (d_out, h_out, w_out) = p.out_dims(dims.0, dims.1, dims.2).expect("valid by construction");
        let x: Vec<f32> = (0..p.c_in * dims.0 * dims.1 * dims.2).map(|i| i as f32 + 1.0).collect();
        let n_out = d_out * h_out * w_out;
        let p0 = split % n_out;
        let n_cols = (n_out - p0).min(split);
        let mut fast = vec![f32::NAN; p.k_len() * n_cols];
        let mut slow = vec![f32::NAN; p.k_len() * n_cols];
        vol2col(&mut fast, &x, p, dims, p0);
        reference::vol2col(&mut slow, &x, p, dims, p0);
        prop_assert_eq!(fast, slow);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(64)))]
        #[test]
        fn vol2col_matches_reference((p, dims) in params(conv_problem), split in 1usize..50) {
            check(&p, dims, split)?;
        }

        #[test]
        fn vol2col_noncubic_matches_reference((p, dims) in params(noncubic_conv_problem), split in 1usize..50) {
            check(&p, dims, split)?;
        }
    }
}
