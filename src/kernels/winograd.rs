//! 3D convolution with 3x3 spatial taps by Winograd F(2x2, 3x3) in the (h, w) plane; the time
//! taps are summed in the transformed domain. Twin: [`super::reference::conv3d`].
//!
//! Algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): every
//! 2x2 output tile is `A^T [ sum_{ci, dt} U(co, ci, dt) . V(ci, src(t, dt)) ] A` with the
//! kernel transform `U = G g G^T` and the input transform `V = B^T d B` of the 4x4 input tile
//! `d`; the sum over (ci, dt) for each of the 16 transformed positions is a gemm. This takes
//! 16 multiplies per 4 outputs and tap plane instead of 36.
//!
//! Blocking: output tile rows are cut into strips of about [`TILES_PER_STRIP`] tiles (bounded
//! scratch, fixed by the layer shape only). Per strip and output frame, the transformed input of
//! each source frame is computed once (kept while later frames still read it); then 16 tasks
//! (one per transformed position) each run the k_d gemms over all output channels, and tasks
//! over output channels apply the output transform into their own channel planes. Kernel
//! transforms are computed in f64 and rounded once ([`super::winograd_weights`]).
//!
//! Repeated frames: neighbouring taps that read equal frames (the replicated first frame of a
//! causal conv; reflect padding with an even time dilation; frames that nearest upsampling in
//! time repeats, or a still clip, found by comparing them bitwise in `frame_repeats`) multiply
//! that frame once, by the taps' summed weights; an output frame whose taps read what the one
//! before read (a run of k_d + 1 equal frames) skips the gemms and reuses that product.
//!
//! Numerics: the transforms add terms before multiplying, so rounding differs from the direct
//! convolution; the golden cases bound the difference (see README).

use super::Float;
use super::bf16::round_to_bf16;
use super::bf16_panels::Bf16Dot;
use super::frame_repeats::{SeqFrames, run_starts};
use super::gemm::{Mat, Par, gemm};
use super::input_norm::{InputNorm, RowScratch};
use super::params::{Conv3dParams, ConvCall};
use super::scratch;
pub use super::winograd_panels::padded_ld;
use super::winograd_panels::{NR, PanelArgs, m_ld, pack_tile_channel, tile_groups, tiles_len, weights_len};
pub use super::winograd_tiles::zero_on_nearest_2x;
use super::winograd_tiles::{InputRowArgs, OutputRowArgs};
use super::winograd_weights::{merged_weights, tap_runs};
pub use super::winograd_weights::{
    transform_weights, transform_weights_bf16, transformed_len, transformed_len_bf16,
};
use rayon::prelude::*;
use std::ops::Range;

/// Input channels per task of the input transform into tile panels, at most.
const PACK_GROUP: usize = 16;
/// Target number of 2x2 tiles per strip (one gemm's column count).
pub const TILES_PER_STRIP: usize = 2048;
/// Upper bound of the transformed-input cache of one strip (k_d source frames).
pub const STRIP_CACHE_BYTES: usize = 64 << 20;

/// Options of [`conv3d_winograd`].
#[derive(Default)]
pub struct WinogradOptions<'a, T> {
    /// Normalise the input on the fly (a fused SpatialNorm + SiLU).
    pub input_norm: Option<InputNorm<'a, T>>,
    /// Add to `out` (which holds a residual) instead of overwriting it.
    pub accumulate: bool,
    /// Frames (c_in, n, h, w) in front of x, already in the convolution's input domain (not
    /// normalised): the convolution reads the sequence prefix ++ norm(x), and the time padding
    /// of `p` applies to that whole sequence. A causal conv's carried cache.
    pub prefix: Option<(&'a [T], usize)>,
    /// The weights already transformed by [`transform_weights`] (a layer's cache); without
    /// them each call transforms into a reused scratch buffer. With `bf16_products` they must
    /// already be rounded to bf16.
    pub transformed_weights: Option<&'a [T]>,
    /// Round the gemm operands (transformed inputs, and weights transformed here) to bf16
    /// ([`super::bf16`]): bf16 products summed in T.
    pub bf16_products: bool,
    /// Multiply in a bf16 dot-product kernel ([`super::bf16_panels`]; f32 only): operands
    /// rounded to bf16 in channel-pair panels, `transformed_weights` (if given) from
    /// [`transform_weights_bf16`]. Overrides `bf16_products`.
    pub bf16_dot: Option<Bf16Dot>,
    /// `Some((frames, at))`: out holds (c_out, frames, h_out, w_out) and the call writes its
    /// output frames at `at ..` (e.g. one frame of a larger tensor, with no copy afterwards).
    pub out_frames: Option<(usize, usize)>,
    /// x is a nearest 2x upsampling in h and w (every aligned 2x2 block of a frame holds one
    /// value; h and w even), convolved with padding 1: see [`zero_on_nearest_2x`].
    pub nearest_2x: bool,
}

/// Geometry of one strip of tile rows (also of [`super::winograd4`]'s 4x4 tiles).
#[derive(Clone, Copy)]
pub(crate) struct Strip {
    /// First tile row.
    pub(crate) i0: usize,
    /// Tile rows in the strip.
    pub(crate) rows: usize,
    /// Tiles per tile row.
    pub(crate) tw: usize,
}

impl Strip {
    pub(crate) fn tiles(&self) -> usize {
        self.rows * self.tw
    }
}

/// What [`transform_input`] reads: a frame of the source and its normalisation.
#[derive(Clone, Copy)]
struct InputFrame<'a, T> {
    /// (c_in, d_src, h, w)
    src: &'a [T],
    d_src: usize,
    /// The frame of `src`.
    f: usize,
    hw: (usize, usize),
    norm: Option<&'a InputNorm<'a, T>>,
}

/// The layout [`transform_input`] writes.
#[derive(Clone, Copy)]
enum Dest {
    /// (c_in, 16, tiles), channel stride `padded_ld(16 * tiles)` (the `gemm` crate's operand).
    Rows,
    /// Tile panels of width mr ([`super::winograd_panels`]).
    Panels(usize),
    /// bf16 channel-pair tile panels of width mr ([`super::bf16_panels`]).
    Bf16Pairs(usize),
}

/// v = B^T d B for every tile of strip `s` in one frame of every input channel, normalised on
/// the fly if `fr.norm` is given; v's length: `c_in * padded_ld(16 * tiles)` ([`Dest::Rows`])
/// or [`tiles_len`] ([`Dest::Panels`]).
fn transform_input<T: Float>(v: &mut [T], fr: InputFrame<'_, T>, p: &Conv3dParams, s: Strip, dest: Dest) {
    let n_t = s.tiles();
    let (pw, n_rows) = (2 * s.tw + 2, 2 * s.rows + 2);
    let init = || (vec![T::ZERO; n_rows * pw], RowScratch::default(), Vec::new());
    if v.is_empty() {
        return; // nothing to write (no chunk size)
    }
    match dest {
        Dest::Rows => v.par_chunks_mut(padded_ld(16 * n_t)).enumerate().for_each_init(
            init,
            |(pad, scr, _), (ci, vc)| {
                transform_channel(&mut vc[..16 * n_t], pad, scr, ci, fr, p, s);
            },
        ),
        // One task per channel group writes the group's panels through a per-thread buffer;
        // groups small enough for a few tasks per thread (the values do not depend on them).
        Dest::Panels(mr) => {
            let group = p.c_in.div_ceil(4 * rayon::current_num_threads()).clamp(1, PACK_GROUP);
            let groups = tile_groups(v, p.c_in, n_t, mr, group);
            groups.into_par_iter().enumerate().for_each_init(init, |(pad, scr, local), (g, mut pieces)| {
                local.resize(16 * n_t, T::ZERO);
                for k in 0..group.min(p.c_in - g * group) {
                    transform_channel(local, pad, scr, g * group + k, fr, p, s);
                    pack_tile_channel(&mut pieces, k, local, n_t, mr);
                }
            })
        }
        Dest::Bf16Pairs(mr) => {
            let pairs = p.c_in.div_ceil(2);
            let group = pairs.div_ceil(4 * rayon::current_num_threads()).clamp(1, PACK_GROUP / 2);
            let groups = tile_groups(v, pairs, n_t, mr, group);
            groups.into_par_iter().enumerate().for_each_init(init, |(pad, scr, local), (g, mut pieces)| {
                local.resize(32 * n_t, T::ZERO);
                let (lo, hi) = local.split_at_mut(16 * n_t);
                for k in 0..group.min(pairs - g * group) {
                    let ci = 2 * (g * group + k);
                    transform_channel(lo, pad, scr, ci, fr, p, s);
                    let hi = (ci + 1 < p.c_in).then(|| {
                        transform_channel(hi, pad, scr, ci + 1, fr, p, s);
                        &*hi
                    });
                    T::bf16_pack_pair(&mut pieces, k, lo, hi, n_t, mr);
                }
            })
        }
    }
}

/// vc: (16, tiles) = B^T d B of every tile of strip `s` in frame `fr` of channel ci; pad: the
/// strip's (2 rows + 2) x (2 tw + 2) input window, scr: the norm's row scratch.
fn transform_channel<'a, T: Float>(
    vc: &mut [T],
    pad: &mut [T],
    scr: &mut RowScratch<'a, T>,
    ci: usize,
    fr: InputFrame<'a, T>,
    p: &Conv3dParams,
    s: Strip,
) {
    let ((h, w), n_t) = (fr.hw, s.tiles());
    // The strip's input rows, zero-padded to the tiles' reach: row r is input row
    // 2 * i0 - pad_top + r, column k is input column k - pad_left (w + pad_left <= pw because
    // w_out = w + pad_left + pad_right - 2 <= 2 * tw).
    let pw = 2 * s.tw + 2;
    let (y_base, pl) = ((2 * s.i0) as isize - p.pad_h.0 as isize, p.pad_w.0);
    debug_assert!(pl + w <= pw);
    let frame = &fr.src[(ci * fr.d_src + fr.f) * h * w..][..h * w];
    for (r, prow) in pad.chunks_exact_mut(pw).enumerate() {
        let y = y_base + r as isize;
        if y < 0 || y >= h as isize {
            prow.fill(T::ZERO);
            continue;
        }
        let y = y as usize;
        prow[..pl].fill(T::ZERO);
        prow[pl + w..].fill(T::ZERO);
        let (dst, raw) = (&mut prow[pl..pl + w], &frame[y * w..][..w]);
        match fr.norm {
            None => dst.copy_from_slice(raw),
            Some(nm) => nm.row(dst, raw, ci, fr.f, y, scr),
        }
    }
    for ti in 0..s.rows {
        let rows = std::array::from_fn(|k| &pad[(2 * ti + k) * pw..][..pw]);
        T::winograd_input_row(InputRowArgs { v: &mut vc[..16 * n_t], n_t, t0: ti * s.tw, rows, tw: s.tw });
    }
}

/// out = bias + conv(x) for one sample, for `p` with 3x3 spatial taps ([`Conv3dParams::has_3x3_taps`]).
/// out: (c_out, d_out, h_out, w_out), or (c_out, frames, h_out, w_out) written at frame `at`
/// with `opts.out_frames = Some((frames, at))`; x: (c_in, d, h, w); weight: (c_out, c_in, k_d, 3, 3).
pub fn conv3d_winograd<T: Float>(out: &mut [T], c: &ConvCall<'_, T>, opts: &WinogradOptions<'_, T>) {
    let ConvCall { x, dims, weight, bias, p } = *c;
    assert!(p.has_3x3_taps());
    let (d, h, w) = dims;
    let (prefix, n_pre) = opts.prefix.unwrap_or((&[], 0));
    assert_eq!(prefix.len(), p.c_in * n_pre * h * w);
    // Frame indices below run over the whole sequence prefix ++ x.
    let d_all = n_pre + d;
    let (d_out, h_out, w_out) = p.out_dims(d_all, h, w).expect("caller validated the conv geometry");
    let (out_d, out_at) = opts.out_frames.unwrap_or((d_out, 0));
    assert!(out_at.checked_add(d_out).is_some_and(|e| e <= out_d), "output frames out of range");
    let plane_out = out_d * h_out * w_out;
    let (c_in, c_out, k_d) = (p.c_in, p.c_out, p.k_d);
    assert_eq!(out.len(), c_out * plane_out);
    assert_eq!(x.len(), c_in * d * h * w);
    assert_eq!(weight.len(), p.c_out * c_in * k_d * 9);
    if opts.nearest_2x {
        // The tiles' input rows start at 2i - 1 only with padding 1 at the top and left.
        assert!(h % 2 == 0 && w % 2 == 0 && p.pad_h.0 == 1 && p.pad_w.0 == 1, "not a nearest-2x input");
    }
    // Each frame read as the first of its run of equal frames: taps on one run merge.
    let seq = SeqFrames { prefix, n_pre, x, d, c: c_in, hw: (h, w), norm: opts.input_norm.as_ref() };
    let starts = if k_d > 1 { run_starts(&seq) } else { (0..d_all).collect() };
    let canonical = |f: usize| starts[f];
    let bf16_dot = opts.bf16_dot;
    assert!(bf16_dot.is_none() || T::NAME == "f32", "bf16 dot products on {}", T::NAME);
    // Channel slots of the tile and weight panels: channel pairs for the bf16 kernels.
    let (panels, slots) = match bf16_dot {
        Some(dot) => (Some(dot.mr()), c_in.div_ceil(2)),
        None => (T::winograd_panel_width(), c_in),
    };
    let mut own_u = None;
    let u: &[T] = match opts.transformed_weights {
        Some(u) => {
            let len = if bf16_dot.is_some() { transformed_len_bf16(p) } else { transformed_len::<T>(p) };
            assert_eq!(u.len(), len);
            u
        }
        None if bf16_dot.is_some() => {
            let mut u = scratch::take(transformed_len_bf16(p));
            transform_weights_bf16(&mut u, weight, p);
            own_u.insert(u)
        }
        None => {
            let mut u = scratch::take(transformed_len::<T>(p));
            transform_weights(&mut u, weight, p);
            if opts.bf16_products {
                round_to_bf16(&mut u);
            }
            own_u.insert(u)
        }
    };

    let (th, tw) = (h_out.div_ceil(2), w_out.div_ceil(2));
    let elem = std::mem::size_of::<T>();
    let cap = (STRIP_CACHE_BYTES / (elem * 16 * k_d.max(1) * c_in.max(1))).max(tw);
    let strip_rows = (TILES_PER_STRIP.min(cap) / tw).clamp(1, th);
    // Per strip of n_t tiles: the input transforms' channel stride ld_v; a cached frame's
    // length (tile panels, or (c_in, 16, tiles) with channel stride ld_v for the gemm crate);
    // the product's row stride ld_m. All grow with n_t, so buffers sized for the first (widest)
    // strip serve every strip: fresh memory costs page faults and zeroing (README, Performance).
    let sizes = |n_t: usize| {
        let ld_v = padded_ld(16 * n_t);
        match panels {
            Some(mr) => (ld_v, tiles_len(slots, n_t, mr), m_ld(n_t, mr)),
            None => (ld_v, c_in * ld_v, padded_ld(n_t)),
        }
    };
    let (_, frame_max, ld_m_max) = sizes(strip_rows.min(th) * tw);
    let mut mbuf_all = scratch::take::<T>(16 * c_out * ld_m_max);
    let mut spare: Vec<scratch::Scratch<T>> = Vec::new();
    // Weight panels for output frames whose taps read one run of equal frames several times:
    // it is multiplied once, by its taps' summed weights. Per run pattern: (runs, panels of
    // runs.len() taps).
    let mut merged: Vec<(Vec<Range<usize>>, scratch::Scratch<T>)> = Vec::new();
    // What the inverse transform reads for the positions a nearest-2x input makes zero.
    let zeros = if opts.nearest_2x { vec![T::ZERO; tw] } else { Vec::new() };
    for i0 in (0..th).step_by(strip_rows) {
        let s = Strip { i0, rows: strip_rows.min(th - i0), tw };
        let n_t = s.tiles();
        let (ld_v, frame_len, ld_m) = sizes(n_t);
        let mut cache: Vec<(usize, scratch::Scratch<T>)> = Vec::new();
        let mut prev_srcs = None;
        // (16, c_out, tiles) with row stride ld_m
        let mbuf = &mut mbuf_all[..16 * c_out * ld_m];
        for t in 0..d_out {
            let srcs: Vec<Option<usize>> =
                (0..k_d).map(|dt| p.src_frame(t, dt, d_all).map(canonical)).collect();
            // Taps reading the runs the frame before read: mbuf (written only here, per strip)
            // still holds this frame's product, and the inverse transform below only reads it.
            if prev_srcs.as_ref() != Some(&srcs) {
                let runs = tap_runs(&srcs);
                let mi = match runs.len() < k_d {
                    false => None,
                    true => Some(match merged.iter().position(|(r, _)| *r == runs) {
                        Some(i) => i,
                        None => {
                            let mu = merged_weights(
                                weight,
                                p,
                                &runs,
                                panels.is_some(),
                                bf16_dot.is_some(),
                                opts.bf16_products,
                            );
                            merged.push((runs.clone(), mu));
                            merged.len() - 1
                        }
                    }),
                };
                // Frames no longer read hand their buffers to the ones transformed next.
                let (keep, done): (Vec<_>, Vec<_>) =
                    cache.drain(..).partition(|(f, _)| srcs.contains(&Some(*f)));
                cache = keep;
                spare.extend(done.into_iter().map(|(_, v)| v));
                for &f in srcs.iter().flatten() {
                    if !cache.iter().any(|(g, _)| *g == f) {
                        let mut buf = spare.pop().unwrap_or_else(|| scratch::take(frame_max));
                        let v = &mut buf[..frame_len];
                        let fr = match f < n_pre {
                            true => InputFrame { src: prefix, d_src: n_pre, f, hw: (h, w), norm: None },
                            false => InputFrame {
                                src: x,
                                d_src: d,
                                f: f - n_pre,
                                hw: (h, w),
                                norm: opts.input_norm.as_ref(),
                            },
                        };
                        let dest = match (bf16_dot, panels) {
                            (Some(dot), _) => Dest::Bf16Pairs(dot.mr()),
                            (None, Some(mr)) => Dest::Panels(mr),
                            (None, None) => Dest::Rows,
                        };
                        transform_input(v, fr, p, s, dest);
                        if opts.bf16_products && bf16_dot.is_none() {
                            round_to_bf16(v);
                        }
                        cache.push((f, buf));
                    }
                }
                let frame = |sf: Option<usize>| {
                    sf.map(|f| &cache.iter().find(|(g, _)| *g == f).expect("cached").1[..frame_len])
                };
                // Per tap of the weights used: the tile panels it multiplies.
                let (taps, uw, k_u): (Vec<Option<&[T]>>, &[T], usize) = match mi {
                    Some(i) => {
                        (runs.iter().map(|r| frame(srcs[r.start])).collect(), &merged[i].1, runs.len())
                    }
                    None => (srcs.iter().map(|&sf| frame(sf)).collect(), u, k_d),
                };
                // 16 independent gemms (one per transformed position; those a nearest-2x input
                // makes zero are skipped, and the inverse transform reads zeros for them), each
                // over all output channels, or over halves of them for single-tap panels when
                // 9 positions would load the threads unevenly: the tasks and every element's
                // rounding are independent of the thread count.
                let halves = opts.nearest_2x && k_u == 1 && panels.is_some();
                let half = if halves { c_out.div_ceil(NR) / 2 * NR } else { c_out };
                let tasks: Vec<(usize, usize, &mut [T])> = mbuf
                    .chunks_mut(c_out * ld_m)
                    .enumerate()
                    .filter(|&(xi, _)| !(opts.nearest_2x && zero_on_nearest_2x(xi)))
                    .flat_map(|(xi, m)| {
                        let (lo, hi) = m.split_at_mut(half * ld_m);
                        [(xi, 0, lo), (xi, half, hi)]
                    })
                    .filter(|(_, _, m)| !m.is_empty())
                    .collect();
                tasks.into_par_iter().for_each(|(xi, co0, m)| {
                    if let Some(mr) = panels {
                        let xo = xi * tiles_len(slots, n_t, mr) / 16;
                        let a: Vec<Option<&[T]>> = taps.iter().map(|v| v.map(|v| &v[xo..])).collect();
                        // Output channels co0.. (a multiple of NR; single tap when co0 > 0).
                        let b = &uw[xi * weights_len(c_out, slots, k_u) / 16 + co0 * slots..];
                        let c_out = m.len() / ld_m;
                        let args = PanelArgs { m, ld_m, c_out, c_in: slots, n_t, a: &a, b, mr };
                        match bf16_dot {
                            Some(dot) => T::bf16_panel_product(dot, args),
                            None => T::winograd_panel_product(args),
                        }
                        return;
                    }
                    let mut first = true;
                    for (dt, v) in taps.iter().enumerate() {
                        let Some(v) = v else { continue };
                        let lhs = Mat {
                            data: &uw[(xi * k_u + dt) * c_in..],
                            rs: padded_ld(16 * k_u * c_in),
                            cs: 1,
                        };
                        let rhs = Mat { data: &v[xi * n_t..], rs: ld_v, cs: 1 };
                        gemm(c_out, n_t, c_in, m, ld_m, 1, !first, lhs, rhs, Par::Seq);
                        first = false;
                    }
                    if first {
                        m.fill(T::ZERO);
                    }
                });
            }
            prev_srcs = Some(srcs);
            out.par_chunks_mut(plane_out).zip(bias.par_iter()).enumerate().for_each(|(co, (dst, &b))| {
                inverse_transform(
                    dst,
                    (mbuf, ld_m, &zeros),
                    co,
                    c_out,
                    b,
                    s,
                    (out_at + t, h_out, w_out),
                    opts.accumulate,
                );
            });
        }
        spare.extend(cache.into_iter().map(|(_, v)| v));
    }
}

/// Writes A^T m A + bias of every tile of strip `s` into output frame `t` of channel `co`.
/// dst: (frames, h_out, w_out) of channel co; m: (16, c_out, tiles), row stride ld_m; with
/// `zeros` (tw zeros) the positions [`zero_on_nearest_2x`] marks read them instead of m.
#[allow(clippy::too_many_arguments)]
fn inverse_transform<T: Float>(
    dst: &mut [T],
    (m, ld_m, zeros): (&[T], usize, &[T]),
    co: usize,
    c_out: usize,
    bias: T,
    s: Strip,
    (t, h_out, w_out): (usize, usize, usize),
    accumulate: bool,
) {
    let frame = &mut dst[t * h_out * w_out..][..h_out * w_out];
    for ti in 0..s.rows {
        let y = 2 * (s.i0 + ti);
        let m = std::array::from_fn(|xi| match zeros.is_empty() || !zero_on_nearest_2x(xi) {
            true => &m[(xi * c_out + co) * ld_m + ti * s.tw..][..s.tw],
            false => &zeros[..s.tw],
        });
        let (r0, rest) = frame[y * w_out..].split_at_mut(w_out);
        let r1 = (y + 1 < h_out).then(|| &mut rest[..w_out]);
        T::winograd_output_row(OutputRowArgs { out: (r0, r1), m, tw: s.tw, bias, accumulate });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::params::TimePad;
    use crate::kernels::reference;

    fn val(i: usize, k: u64) -> f64 {
        ((i as u64 * 2654435761 + k) % 1000) as f64 / 500.0 - 1.0
    }

    fn to_f32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    /// f32 through the tile panels (on a vector ISA; the `gemm` crate under MOVQ_ISA=scalar),
    /// with several transform tasks (the last group short), two strips of tile rows and time
    /// taps, against the direct convolution in f64.
    #[test]
    fn f32_panels_across_channel_groups_match_the_direct_conv() {
        let (c_in, c_out, dims) = (2 * PACK_GROUP + 5, 7, (3, 130, 67));
        let mut p = Conv3dParams::plain(c_in, c_out, (3, 3, 3));
        (p.pad_d, p.pad_h, p.pad_w) = ((2, 0), (1, 1), (1, 1));
        let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
        assert!(h.div_ceil(2) * w.div_ceil(2) > TILES_PER_STRIP, "two strips");
        let x: Vec<f64> = (0..c_in * dims.0 * dims.1 * dims.2).map(|i| val(i, 1)).collect();
        let wt: Vec<f64> = (0..c_out * c_in * 27).map(|i| val(i, 7) / 10.0).collect();
        let b: Vec<f64> = (0..c_out).map(|i| val(i, 3)).collect();
        let mut want = vec![0.0; c_out * d * h * w];
        reference::conv3d(&mut want, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p });
        let (xf, wf, bf) = (to_f32(&x), to_f32(&wt), to_f32(&b));
        let mut got = vec![f32::NAN; want.len()];
        let call = ConvCall { x: &xf, dims, weight: &wf, bias: &bf, p: &p };
        conv3d_winograd(&mut got, &call, &Default::default());
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            assert!((g as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()), "at {i}: {g} vs {r}");
        }
    }

    /// The bf16 dot-product path (channel-pair panels: an odd channel count, several pack
    /// groups, two strips) against the emulated bf16 products of the f32 path: the same
    /// rounded operands, so only the sums' rounding differs; every kernel equals the twin.
    #[test]
    fn bf16_dot_matches_emulated_bf16_products() {
        // Replicated first frames: merged time taps in both layouts; a still clip: every
        // output frame reuses the first one's product.
        for (time_pad, still) in
            [(TimePad::Zeros, false), (TimePad::ReplicateFirst, false), (TimePad::ReplicateFirst, true)]
        {
            bf16_dot_matches_emulated(time_pad, still);
        }
    }

    fn bf16_dot_matches_emulated(time_pad: TimePad, still: bool) {
        let (c_in, c_out, dims) = (PACK_GROUP + 5, 7, (3, 130, 67));
        let mut p = Conv3dParams::plain(c_in, c_out, (3, 3, 3));
        (p.pad_d, p.pad_h, p.pad_w, p.time_pad) = ((2, 0), (1, 1), (1, 1), time_pad);
        let plane = dims.1 * dims.2;
        let x: Vec<f32> = (0..c_in * dims.0 * plane)
            .map(|i| if still { val(i / (dims.0 * plane) * plane + i % plane, 1) } else { val(i, 1) } as f32)
            .collect();
        let wt: Vec<f32> = (0..c_out * c_in * 27).map(|i| (val(i, 7) / 10.0) as f32).collect();
        let b: Vec<f32> = (0..c_out).map(|i| val(i, 3) as f32).collect();
        let call = ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p };
        let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
        let mut want = vec![f32::NAN; c_out * d * h * w];
        conv3d_winograd(&mut want, &call, &WinogradOptions { bf16_products: true, ..Default::default() });
        let mut twins: Vec<(Bf16Dot, Vec<f32>)> = Vec::new();
        // The twins come first.
        for dot in Bf16Dot::all_available() {
            let mut got = vec![f32::NAN; want.len()];
            conv3d_winograd(&mut got, &call, &WinogradOptions { bf16_dot: Some(dot), ..Default::default() });
            for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
                assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "{}: at {i}: {g} vs {r}", dot.name());
            }
            // The instructions' sums (rounded to odd, or fused pairs) are not the gemm's: some
            // outputs differ.
            assert!(got.iter().zip(&want).any(|(g, r)| g != r), "{}: the emulated path ran", dot.name());
            if dot == dot.twin() {
                twins.push((dot, got));
            } else {
                let twin = &twins.iter().find(|(t, _)| *t == dot.twin()).expect("twin first").1;
                assert!(
                    got.iter().zip(twin).all(|(g, t)| g.to_bits() == t.to_bits()),
                    "{} vs twin",
                    dot.name()
                );
            }
        }
    }

    /// Written at frame `at` of a larger output (`out_frames`), with a time prefix, with and
    /// without accumulating: those frames equal the call on an output of its own, bit for bit,
    /// and no other frame is touched.
    #[test]
    fn out_frames_write_only_their_frames() {
        let (c_in, c_out, dims, n_pre) = (5, 3, (2, 6, 7), 2);
        let mut p = Conv3dParams::plain(c_in, c_out, (3, 3, 3));
        (p.pad_h, p.pad_w) = ((1, 1), (1, 1));
        let x = to_f32(&(0..c_in * dims.0 * 42).map(|i| val(i, 5)).collect::<Vec<_>>());
        let pre = to_f32(&(0..c_in * n_pre * 42).map(|i| val(i, 6)).collect::<Vec<_>>());
        let wt = to_f32(&(0..c_out * c_in * 27).map(|i| val(i, 8)).collect::<Vec<_>>());
        let b = [0.5f32, -0.25, 1.0];
        let (d, h, w) = p.out_dims(n_pre + dims.0, dims.1, dims.2).unwrap();
        let (frames, at, plane) = (d + 3, 2, h * w);
        let call = ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p };
        for accumulate in [false, true] {
            let base: Vec<f32> = (0..c_out * d * plane).map(|i| val(i, 9) as f32).collect();
            let mut own = if accumulate { base.clone() } else { vec![f32::NAN; c_out * d * plane] };
            let opts = |out_frames| WinogradOptions {
                accumulate,
                prefix: Some((&pre[..], n_pre)),
                out_frames,
                ..Default::default()
            };
            conv3d_winograd(&mut own, &call, &opts(None));
            let mut big = vec![f32::NAN; c_out * frames * plane];
            if accumulate {
                for co in 0..c_out {
                    big[(co * frames + at) * plane..][..d * plane]
                        .copy_from_slice(&base[co * d * plane..][..d * plane]);
                }
            }
            conv3d_winograd(&mut big, &call, &opts(Some((frames, at))));
            for co in 0..c_out {
                for t in 0..frames {
                    let got = &big[(co * frames + t) * plane..][..plane];
                    if (at..at + d).contains(&t) {
                        let want = &own[(co * d + t - at) * plane..][..plane];
                        assert!(
                            got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "co {co} t {t}"
                        );
                    } else {
                        assert!(got.iter().all(|v| v.is_nan()), "frame {t} of channel {co} touched");
                    }
                }
            }
        }
    }
}
