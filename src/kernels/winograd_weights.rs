//! The weight transforms of Winograd F(2x2, 3x3) ([`super::winograd`]): `U = G g G^T` per
//! output channel, input channel and time tap, computed in f64 and rounded once, in the layout
//! the gemms read. Neighbouring taps that read one source frame (the replicated first frame
//! of a causal conv, or reflect padding with an even time dilation) can be merged: the frame is multiplied once, by their summed weights (fewer products;
//! in the golden cases the error ratios stayed or fell, README "Performance").

use super::Float;
use super::bf16::round_to_bf16;
use super::params::Conv3dParams;
use super::scratch;
use super::simd::dispatch;
use super::winograd_panels::{NR, padded_ld, weights_len};
use super::winograd_weight_blocks::{BlockScratch, BlockTransforms, CI_BLOCK};
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
    if !matches!(super::isa(), super::Isa::Scalar) {
        return transform_into_panels(u, weight, p, runs, bf16_pairs);
    }
    // The scalar ISA runs the twin (bf16 pairs only: f32 panels need a vector ISA).
    let ld_u = padded_ld(16 * runs.len() * p.c_in);
    let mut rows = scratch::take(p.c_out * ld_u);
    transform_weight_rows(&mut rows, weight, p, runs);
    let dims = (p.c_out, p.c_in, runs.len());
    match bf16_pairs {
        true => T::bf16_pack_weights(u, &rows, dims, ld_u),
        false => super::winograd_panels::pack_weights(u, &rows, dims, ld_u),
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

// The small transforms index rows and columns explicitly, like the formulas they implement.
#[allow(clippy::needless_range_loop)]
/// `U = G g G^T` (row-major 4x4) of g = weight (co, ci, taps of `run`, 3, 3) summed over the
/// run's taps (in tap order, from the first), all in f64 so each value of U is rounded once.
/// weight: (c_out, c_in, k_d, 3, 3).
#[inline(always)]
pub(crate) fn transform_one<T: Float>(
    weight: &[T],
    p: &Conv3dParams,
    co: usize,
    ci: usize,
    run: &Range<usize>,
) -> [f64; 16] {
    let w = &weight[(co * p.c_in + ci) * p.k_d * 9..][..p.k_d * 9];
    let mut g: [f64; 9] = std::array::from_fn(|e| w[run.start * 9 + e].to_f64());
    for tap in run.start + 1..run.end {
        for (ge, x) in g.iter_mut().zip(&w[tap * 9..][..9]) {
            *ge += x.to_f64();
        }
    }
    // Gg: 4x3, rows (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2) of the columns.
    let mut gg = [[0.0f64; 3]; 4];
    for c in 0..3 {
        let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
        gg[0][c] = a;
        gg[1][c] = 0.5 * (a + b + d);
        gg[2][c] = 0.5 * (a - b + d);
        gg[3][c] = d;
    }
    let mut u = [0.0f64; 16];
    for (ur, &[a, b, d]) in u.chunks_exact_mut(4).zip(&gg) {
        ur.copy_from_slice(&[a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]);
    }
    u
}

/// u: weight panels (16, k, cb, slots, NR) ([`weights_len`]), k = `runs.len()`, of the
/// transforms [`transform_one`] of each run, rounded to T (`pairs`: to f32, then to bf16
/// channel pairs in f32 slots, slots = ceil(c_in / 2), [`super::bf16_panels`]; T is f32);
/// output channels past c_out are zero. Written in place, in parallel over the blocks of NR
/// output channels, per block of [`CI_BLOCK`] input channels by [`BlockTransforms`]: no rows
/// buffer as large as the panels and no packing pass over it (`pack_weights` and
/// `pack_weights_bf16` on [`transform_weight_rows`], the twins in the tests).
pub(crate) fn transform_into_panels<T: Float>(
    u: &mut [T],
    weight: &[T],
    p: &Conv3dParams,
    runs: &[Range<usize>],
    pairs: bool,
) {
    let (k, cb) = (runs.len(), p.c_out.div_ceil(NR));
    let slots = if pairs { p.c_in.div_ceil(2) } else { p.c_in };
    assert!(
        u.len() == weights_len(p.c_out, slots, k) && runs.iter().all(|r| !r.is_empty() && r.end <= p.k_d)
    );
    assert!(!pairs || T::NAME == "f32", "bf16 pairs of {}", T::NAME);
    if u.is_empty() {
        return;
    }
    // Piece i of slots x NR values holds position xd = i / cb (= rc * k + dt) of block i % cb.
    let mut blocks: Vec<Vec<&mut [T]>> = (0..cb).map(|_| Vec::with_capacity(16 * k)).collect();
    for (i, piece) in u.chunks_exact_mut(slots * NR).enumerate() {
        blocks[i % cb].push(piece);
    }
    blocks.into_par_iter().enumerate().for_each_init(Box::<BlockScratch>::default, |scr, (j, mut pieces)| {
        for c0 in (0..p.c_in).step_by(CI_BLOCK) {
            let n = CI_BLOCK.min(p.c_in - c0);
            dispatch(BlockTransforms { pieces: &mut pieces, scr, weight, p, runs, j, c0, n, pairs });
        }
    });
}

/// u: (c_out, 16, k, c_in), row stride `padded_ld(16 * k * c_in)`, k = `runs.len()`, from
/// weight (c_out, c_in, k_d, 3, 3): [`transform_one`] of each run. Runs of one tap each give
/// the layer's transform; longer runs merge taps that read the same source frame.
fn transform_weight_rows<T: Float>(u: &mut [T], weight: &[T], p: &Conv3dParams, runs: &[Range<usize>]) {
    let (c_in, k) = (p.c_in, runs.len());
    assert!(runs.iter().all(|r| !r.is_empty() && r.end <= p.k_d));
    u.par_chunks_mut(padded_ld(16 * k * c_in)).enumerate().for_each(|(co, uo)| {
        for (dt, run) in runs.iter().enumerate() {
            for ci in 0..c_in {
                for (rc, v) in transform_one(weight, p, co, ci, run).into_iter().enumerate() {
                    uo[(rc * k + dt) * c_in + ci] = T::from_f64(v);
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

    /// The panels written in place equal the rows packed by `pack_weights`, bit for bit: a
    /// partial last block of output channels, merged and single taps, one input channel, input
    /// channels over several CI_BLOCKs with a partial last one.
    #[test]
    fn panels_written_in_place_equal_packed_rows() {
        use crate::kernels::winograd_panels::pack_weights;
        for (c_in, c_out, runs) in [
            (5, 13, vec![0..1, 1..2, 2..3]),
            (5, 13, vec![0..2, 2..3]),
            (1, 6, tap_runs(&[Some(0); 3])),
            (7, 2, vec![0..1, 1..3]),
            (2 * CI_BLOCK + 5, 8, vec![0..1, 1..3]),
        ] {
            let p = Conv3dParams::plain(c_in, c_out, (3, 3, 3));
            let weight: Vec<f32> =
                (0..c_out * c_in * 27).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0).collect();
            let (k, ld_u) = (runs.len(), padded_ld(16 * runs.len() * c_in));
            let mut rows = vec![f32::NAN; c_out * ld_u];
            transform_weight_rows(&mut rows, &weight, &p, &runs);
            let mut want = vec![f32::NAN; weights_len(c_out, c_in, k)];
            pack_weights(&mut want, &rows, (c_out, c_in, k), ld_u);
            let mut got = vec![f32::NAN; want.len()];
            transform_into_panels(&mut got, &weight, &p, &runs, false);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "c_in {c_in} c_out {c_out} runs {runs:?}");
        }
    }
}
