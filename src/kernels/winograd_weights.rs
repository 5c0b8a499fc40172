//! The weight transforms of Winograd F(2x2, 3x3) ([`super::winograd`]): `U = G g G^T` per
//! output channel, input channel and time tap, computed in f64 and rounded once, in the layout
//! the gemms read. Neighbouring taps that read one source frame (the replicated first frame
//! of a causal conv, or reflect padding with an even time dilation) can be merged: the frame is multiplied once, by their summed weights (fewer products;
//! in the golden cases the error ratios stayed or fell, README "Performance").

use super::Float;
use super::bf16::round_to_bf16;
use super::params::Conv3dParams;
use super::scratch;
use super::winograd_panels::{pack_weights, padded_ld, weights_len};
use rayon::prelude::*;
use std::ops::Range;

/// u = the transformed weights `U = G g G^T` of weight (c_out, c_in, k_d, 3, 3), in the layout
/// the gemms read: weight panels ([`super::winograd_panels`]) when `T` runs on them, else (c_out, 16,
/// k_d, c_in) with row stride `padded_ld(16 * k_d * c_in)`. u: ([`transformed_len`],)
pub fn transform_weights<T: Float>(u: &mut [T], weight: &[T], p: &Conv3dParams) {
    if T::winograd_panel_width().is_none() {
        return transform_weight_rows(u, weight, p, &single_taps(p.k_d));
    }
    transform_weight_panels(u, weight, p, &single_taps(p.k_d), false);
}

/// u = weight panels of `runs.len()` taps (merged as in [`transform_weight_rows`]): f32
/// panels, or bf16 channel-pair panels if `bf16_pairs`. u: ([`weights_len`] of the slots and
/// taps).
fn transform_weight_panels<T: Float>(
    u: &mut [T],
    weight: &[T],
    p: &Conv3dParams,
    runs: &[Range<usize>],
    bf16_pairs: bool,
) {
    let ld_u = padded_ld(16 * runs.len() * p.c_in);
    let mut rows = scratch::take(p.c_out * ld_u);
    transform_weight_rows(&mut rows, weight, p, runs);
    match bf16_pairs {
        true => T::bf16_pack_weights(u, &rows, (p.c_out, p.c_in, runs.len()), ld_u),
        false => pack_weights(u, &rows, (p.c_out, p.c_in, runs.len()), ld_u),
    }
}

/// u = the transformed weights as bf16 channel-pair weight panels ([`super::bf16_panels`]).
/// u: ([`transformed_len_bf16`],) ; f32 decodes only.
pub fn transform_weights_bf16<T: Float>(u: &mut [T], weight: &[T], p: &Conv3dParams) {
    transform_weight_panels(u, weight, p, &single_taps(p.k_d), true);
}

/// Elements of [`transform_weights_bf16`]'s output.
pub fn transformed_len_bf16(p: &Conv3dParams) -> usize {
    weights_len(p.c_out, p.c_in.div_ceil(2), p.k_d)
}

// The small 4x4 transforms index rows and columns explicitly, like the formulas they implement.
#[allow(clippy::needless_range_loop)]
/// u: (c_out, 16, k, c_in), row stride `padded_ld(16 * k * c_in)`, k = `runs.len()`, from
/// weight (c_out, c_in, k_d, 3, 3): `U = G g G^T` of g = the sum of the taps of each run (in
/// f64, like the transform, so each value is rounded once). Runs of one tap each give the
/// layer's transform; longer runs merge taps that read the same source frame.
fn transform_weight_rows<T: Float>(u: &mut [T], weight: &[T], p: &Conv3dParams, runs: &[Range<usize>]) {
    let (c_in, k_d, k) = (p.c_in, p.k_d, runs.len());
    assert!(runs.iter().all(|r| !r.is_empty() && r.end <= k_d));
    u.par_chunks_mut(padded_ld(16 * k * c_in)).enumerate().for_each(|(co, uo)| {
        for ci in 0..c_in {
            for (dt, run) in runs.iter().enumerate() {
                let g = |r: usize, c: usize| {
                    run.clone()
                        .map(|tap| weight[((co * c_in + ci) * k_d + tap) * 9 + r * 3 + c].to_f64())
                        .sum::<f64>()
                };
                // Gg: 4x3, rows (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2) of the columns.
                let mut gg = [[0.0f64; 3]; 4];
                for c in 0..3 {
                    let (a, b, d) = (g(0, c), g(1, c), g(2, c));
                    gg[0][c] = a;
                    gg[1][c] = 0.5 * (a + b + d);
                    gg[2][c] = 0.5 * (a - b + d);
                    gg[3][c] = d;
                }
                for (r, row) in gg.iter().enumerate() {
                    let (a, b, d) = (row[0], row[1], row[2]);
                    let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (c, v) in vals.into_iter().enumerate() {
                        uo[((r * 4 + c) * k + dt) * c_in + ci] = T::from_f64(v);
                    }
                }
            }
        }
    });
}

/// The transformed weights of the time taps merged into `runs` ([`tap_runs`]), in the layout
/// the gemms read: weight panels (bf16 channel-pair panels if `bf16_pairs`) if `panels`, else
/// rows (c_out, 16, runs.len(), c_in) of stride `padded_ld(16 * runs.len() * c_in)`; rounded
/// to bf16 for `bf16_products` (emulated bf16 products).
pub(crate) fn merged_weights<T: Float>(
    weight: &[T],
    p: &Conv3dParams,
    runs: &[Range<usize>],
    panels: bool,
    bf16_pairs: bool,
    bf16_products: bool,
) -> scratch::Scratch<T> {
    let k = runs.len();
    let mut u = match (panels, bf16_pairs) {
        (true, true) => scratch::take(weights_len(p.c_out, p.c_in.div_ceil(2), k)),
        (true, false) => scratch::take(weights_len(p.c_out, p.c_in, k)),
        (false, _) => scratch::take(p.c_out * padded_ld(16 * k * p.c_in)),
    };
    match panels {
        true => transform_weight_panels(&mut u, weight, p, runs, bf16_pairs),
        false => transform_weight_rows(&mut u, weight, p, runs),
    }
    if bf16_products && !bf16_pairs {
        round_to_bf16(&mut u);
    }
    u
}

/// The runs of consecutive time taps that read the same source frame (`srcs`: per tap, its
/// frame or `None` for zero padding; padding taps are never merged).
pub(crate) fn tap_runs(srcs: &[Option<usize>]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (dt, f) in srcs.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if f.is_some() && srcs[r.start] == *f => r.end = dt + 1,
            _ => runs.push(dt..dt + 1),
        }
    }
    runs
}

/// The identity runs: one per tap.
pub(crate) fn single_taps(k_d: usize) -> Vec<Range<usize>> {
    (0..k_d).map(|dt| dt..dt + 1).collect()
}

/// Elements of the transformed weights of `p` ([`transform_weights`]).
pub fn transformed_len<T: Float>(p: &Conv3dParams) -> usize {
    match T::winograd_panel_width() {
        Some(_) => weights_len(p.c_out, p.c_in, p.k_d),
        None => p.c_out * padded_ld(16 * p.k_d * p.c_in),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_on_one_source_frame_form_runs() {
        assert_eq!(tap_runs(&[Some(0), Some(0), Some(0)]), vec![0..3]);
        assert_eq!(tap_runs(&[Some(0), Some(0), Some(1)]), vec![0..2, 2..3]);
        assert_eq!(tap_runs(&[Some(0), Some(1), Some(1)]), vec![0..1, 1..3]);
        assert_eq!(tap_runs(&[None, None, Some(0)]), single_taps(3));
        assert_eq!(tap_runs(&[Some(2), Some(1), Some(2)]), single_taps(3));
        assert_eq!(tap_runs(&[]), single_taps(0));
    }
}
