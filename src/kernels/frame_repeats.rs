//! Runs of equal consecutive frames in a convolution's input, as the convolution reads it
//! (after its fused norm). Nearest upsampling in time repeats every frame, a causal conv's
//! cache can hold copies of the clip's first frame, and a still latent repeats its frames:
//! the time taps that read one run multiply it once, by their summed weights
//! ([`super::winograd_weights::tap_runs`]).
//!
//! Equality is bitwise and decided on what the convolution reads, so a chunked decode (the
//! prefix: an earlier chunk's normalised frames) finds the runs the whole clip finds.

use super::Float;
use super::input_norm::{InputNorm, RowScratch};
use rayon::prelude::*;

/// The sequence prefix ++ norm(x) of one sample.
#[derive(Clone, Copy)]
pub(crate) struct SeqFrames<'a, T> {
    /// (c, n_pre, h, w), already in the convolution's input domain.
    pub(crate) prefix: &'a [T],
    pub(crate) n_pre: usize,
    /// (c, d, h, w)
    pub(crate) x: &'a [T],
    pub(crate) d: usize,
    pub(crate) c: usize,
    pub(crate) hw: (usize, usize),
    pub(crate) norm: Option<&'a InputNorm<'a, T>>,
}

/// Per frame of the sequence: the first frame of the run of bitwise-equal consecutive frames it
/// belongs to.
pub(crate) fn run_starts<T: Float>(s: &SeqFrames<'_, T>) -> Vec<usize> {
    let mut starts: Vec<usize> = Vec::with_capacity(s.n_pre + s.d);
    for f in 0..s.n_pre + s.d {
        let start = match f > 0 && frames_equal(s, f - 1, f) {
            true => starts[f - 1],
            false => f,
        };
        starts.push(start);
    }
    starts
}

/// Row y of channel c of sequence frame f: (raw row, its x frame if norm(x) applies to it).
fn raw_row<'a, T>(s: &SeqFrames<'a, T>, f: usize, c: usize, y: usize) -> (&'a [T], Option<usize>) {
    let (h, w) = s.hw;
    match f < s.n_pre {
        true => (&s.prefix[((c * s.n_pre + f) * h + y) * w..][..w], None),
        false => {
            let g = f - s.n_pre;
            (&s.x[((c * s.d + g) * h + y) * w..][..w], s.norm.map(|_| g))
        }
    }
}

fn bits_equal<T: Float>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| p.to_f64().to_bits() == q.to_f64().to_bits())
}

/// Whether sequence frames a and b read the same values, every channel and row (parallel over
/// channels; stops at the first difference, usually in the first row).
fn frames_equal<T: Float>(s: &SeqFrames<'_, T>, a: usize, b: usize) -> bool {
    let (h, w) = s.hw;
    let init = || (vec![T::ZERO; w], vec![T::ZERO; w], RowScratch::default());
    (0..s.c)
        .into_par_iter()
        .map_init(init, |(na, nb, scr), c| {
            (0..h).all(|y| {
                let ((ra, ga), (rb, gb)) = (raw_row(s, a, c, y), raw_row(s, b, c, y));
                let norm = s.norm.filter(|_| ga.is_some() || gb.is_some());
                let Some(nm) = norm else { return bits_equal(ra, rb) };
                // Equal raw rows under the same modulation row normalise alike.
                let same_mod =
                    |g: usize, k: usize| nm.modulation.as_ref().is_none_or(|m| m.tmap[g] == m.tmap[k]);
                if let (Some(g), Some(k)) = (ga, gb)
                    && same_mod(g, k)
                    && bits_equal(ra, rb)
                {
                    return true;
                }
                let ra = match ga {
                    Some(g) => {
                        nm.row(na, ra, c, g, y, scr);
                        &na[..]
                    }
                    None => ra,
                };
                let rb = match gb {
                    Some(g) => {
                        nm.row(nb, rb, c, g, y, scr);
                        &nb[..]
                    }
                    None => rb,
                };
                bits_equal(ra, rb)
            })
        })
        .all(|e| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::input_norm::RowModulation;
    use crate::kernels::params::{Conv3dParams, ConvCall, TimePad};
    use crate::kernels::winograd::{WinogradOptions, conv3d_winograd};
    use crate::kernels::{Act, reference};

    const C: usize = 3;
    const HW: (usize, usize) = (4, 5);

    fn frame(k: u64) -> Vec<f32> {
        (0..HW.0 * HW.1).map(|i| ((i as u64 * 2654435761 + k * 97) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// (c, frames, h, w) from per-frame contents: channel 0 holds them as they are (signed
    /// zeros too), channel c > 0 shifted by c.
    fn clip(frames: &[Vec<f32>]) -> Vec<f32> {
        let shift = |c: usize, v: f32| if c == 0 { v } else { v + c as f32 };
        (0..C).flat_map(|c| frames.iter().flat_map(move |f| f.iter().map(move |&v| shift(c, v)))).collect()
    }

    fn starts(prefix: &[Vec<f32>], x: &[Vec<f32>], norm: Option<&InputNorm<'_, f32>>) -> Vec<usize> {
        let (p, xs) = (clip(prefix), clip(x));
        run_starts(&SeqFrames { prefix: &p, n_pre: prefix.len(), x: &xs, d: x.len(), c: C, hw: HW, norm })
    }

    #[test]
    fn equal_consecutive_frames_form_runs() {
        let (a, b, c) = (frame(1), frame(2), frame(3));
        let x = [b.clone(), c.clone(), c.clone(), c.clone(), a.clone()];
        assert_eq!(starts(&[a.clone(), a.clone(), b.clone()], &x, None), [0, 0, 2, 2, 4, 4, 4, 7]);
        // Equal frames that are not neighbours are not a run.
        assert_eq!(starts(&[], &[a.clone(), b.clone(), a.clone()], None), [0, 1, 2]);
        // Frames that differ in one value, of the last channel's last row only; or in the sign
        // of one zero.
        let mut xs = clip(&[a.clone(), a.clone()]);
        *xs.last_mut().unwrap() += 1.0;
        let s = SeqFrames { prefix: &[], n_pre: 0, x: &xs, d: 2, c: C, hw: HW, norm: None };
        assert_eq!(run_starts(&s), [0, 1]);
        let (mut z, mut nz) = (a.clone(), a.clone());
        (z[0], nz[0]) = (0.0, -0.0);
        assert_eq!(starts(&[], &[z, nz], None), [0, 1]);
    }

    /// Equality is of the normalised frames: raw-equal frames under different modulation
    /// frames differ, a prefix frame equals the normalised frame of x it was cached from, and
    /// frames that normalise to the same values form a run.
    #[test]
    fn runs_are_found_after_the_fused_norm() {
        let (a, b) = (frame(1), frame(2));
        let (md, mh, mw) = (2, 2, 3);
        let scale: Vec<f32> = (0..C * md * mh * mw).map(|i| 0.5 + i as f32 / 7.0).collect();
        let shift: Vec<f32> = (0..C * md * mh * mw).map(|i| i as f32 / 11.0 - 1.0).collect();
        let (hmap, wmap) = ([0, 0, 1, 1], [0, 0, 1, 2, 2]);
        let coeffs = [(1.5, 0.25), (0.75, -0.5), (1.0, 0.0)];
        let modulation = RowModulation {
            scale: &scale,
            shift: &shift,
            dims: (md, mh, mw),
            tmap: &[0, 0, 1, 1],
            hmap: &hmap,
            wmap: &wmap,
        };
        let nm = InputNorm { coeffs: &coeffs, modulation: Some(modulation), act: Act::Silu };
        let x = [a.clone(), a.clone(), a.clone(), b.clone()];
        assert_eq!(starts(&[], &x, Some(&nm)), [0, 0, 2, 3]);
        // The cache of a chunk ending in frame 0 of x: norm(x frame 0) in front of x.
        let xs = clip(&x);
        let mut pre = vec![0.0; C * HW.0 * HW.1];
        for (c, dst) in pre.chunks_exact_mut(HW.0 * HW.1).enumerate() {
            nm.rows(dst, &xs[c * x.len() * HW.0 * HW.1..][..HW.0 * HW.1], c, 0, 0, HW.1);
        }
        let s = SeqFrames { prefix: &pre, n_pre: 1, x: &xs, d: 4, c: C, hw: HW, norm: Some(&nm) };
        assert_eq!(run_starts(&s), [0, 0, 0, 3, 4]);
        // A zero scale: every frame normalises to act(b) whatever its values.
        let flat = [(0.0, 0.25), (0.0, -0.5), (0.0, 0.0)];
        let nm = InputNorm { coeffs: &flat, modulation: None, act: Act::Silu };
        assert_eq!(starts(&[], &[a, b], Some(&nm)), [0, 0]);
    }

    fn val(i: usize, k: u64) -> f64 {
        ((i as u64 * 2654435761 + k) % 1000) as f64 / 500.0 - 1.0
    }

    fn cast<T: Float>(v: &[f64]) -> Vec<T> {
        v.iter().map(|&a| T::from_f64(a)).collect()
    }

    /// A causal "first" 3x3x3 conv (time padding: two copies of frame 0).
    fn causal_first(c_in: usize, c_out: usize) -> Conv3dParams {
        let mut p = Conv3dParams::plain(c_in, c_out, (3, 3, 3));
        (p.pad_d, p.pad_h, p.pad_w, p.time_pad) = ((2, 0), (1, 1), (1, 1), TimePad::ReplicateFirst);
        p
    }

    /// x: (c, src.len(), h, w) whose frame k holds pattern src[k] (< 8): equal src, equal frames.
    fn clip_of(src: &[usize], c: usize, (h, w): (usize, usize)) -> Vec<f64> {
        (0..c)
            .flat_map(|ci| {
                src.iter().flat_map(move |&f| (0..h * w).map(move |i| val((ci * 8 + f) * h * w + i, 1)))
            })
            .collect()
    }

    /// Frames repeated by nearest upsampling in time (a, b, b, c, c): an output frame whose
    /// time taps 1 and 2 read one run multiplies it by their summed weights, s + (-s) = 0
    /// exactly, so it equals (bitwise) the convolution with those taps zero, which the unmerged
    /// sums' rounding does not; every frame also against the direct convolution in f64.
    fn upsampled_frame_taps_merge<T: Float>(tol: f64) {
        let (c_in, c_out, (h, w)) = (9, 7, (9, 11));
        let p = causal_first(c_in, c_out);
        let src = [0, 1, 1, 2, 2];
        let dims = (src.len(), h, w);
        let x = clip_of(&src, c_in, (h, w));
        let b: Vec<f64> = (0..c_out).map(|i| val(i, 3)).collect();
        // (co, ci, dt, 3, 3); s: multiples of 2^-12, exact in f32.
        let weights = |zero: bool| -> Vec<f64> {
            (0..c_out * c_in * 27)
                .map(|i| match i / 9 % 3 {
                    0 => val(i, 7) / 10.0,
                    _ if zero => 0.0,
                    dt => [1.0, -1.0][dt - 1] * (val(i % 9 + i / 27 * 9, 5) * 256.0).round() / 4096.0,
                })
                .collect()
        };
        let (d_o, h_o, w_o) = p.out_dims(dims.0, h, w).unwrap();
        let (xf, bf) = (cast::<T>(&x), cast::<T>(&b));
        let run = |wt: &[f64]| {
            let wf = cast(wt);
            let mut y = vec![T::from_f64(f64::NAN); c_out * d_o * h_o * w_o];
            conv3d_winograd(
                &mut y,
                &ConvCall { x: &xf, dims, weight: &wf, bias: &bf, p: &p },
                &Default::default(),
            );
            y
        };
        let (got, zeroed) = (run(&weights(false)), run(&weights(true)));
        let mut want = vec![0.0; got.len()];
        reference::conv3d(&mut want, &ConvCall { x: &x, dims, weight: &weights(false), bias: &b, p: &p });
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            assert!((g.to_f64() - r).abs() <= tol * (1.0 + r.abs()), "at {i}: {} vs {r}", g.to_f64());
        }
        let plane = h_o * w_o;
        for co in 0..c_out {
            for t in [2, 4] {
                let f = (co * d_o + t) * plane..(co * d_o + t + 1) * plane;
                assert!(
                    got[f.clone()]
                        .iter()
                        .zip(&zeroed[f])
                        .all(|(a, z)| a.to_f64().to_bits() == z.to_f64().to_bits()),
                    "channel {co} frame {t}: the repeated frame's taps were not merged"
                );
            }
        }
    }

    #[test]
    fn upsampled_frame_taps_merge_f32() {
        upsampled_frame_taps_merge::<f32>(1e-4);
    }

    #[test]
    fn upsampled_frame_taps_merge_f64() {
        upsampled_frame_taps_merge::<f64>(1e-12);
    }

    /// Causal "first" padding (the first frame replicated twice): the taps on one source frame
    /// multiply it once, by their summed weights. Every frame against the direct conv in f64;
    /// and with time taps (a, -3a, 2a), which sum to exactly zero, the first output frame is
    /// exactly the bias (separate products per tap would leave their rounding residues).
    fn replicated_first_frame_taps_merge<T: Float>(tol: f64) {
        let (c_in, c_out, dims) = (9, 7, (4, 9, 11));
        let p = causal_first(c_in, c_out);
        let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
        let x: Vec<f64> = (0..c_in * dims.0 * dims.1 * dims.2).map(|i| val(i, 1)).collect();
        let b: Vec<f64> = (0..c_out).map(|i| val(i, 3)).collect();
        let random: Vec<f64> = (0..c_out * c_in * 27).map(|i| val(i, 7) / 10.0).collect();
        // a: multiples of 2^-12, so -3a and 2a are exact in f32 and the taps' sum exactly zero.
        let cancelling: Vec<f64> = (0..c_out * c_in * 27)
            .map(|i| [1.0, -3.0, 2.0][i / 9 % 3] * (val(i % 9 + i / 27 * 9, 7) * 256.0).round() / 4096.0)
            .collect();
        for (k, wt) in [random, cancelling].into_iter().enumerate() {
            let mut want = vec![0.0; c_out * d * h * w];
            reference::conv3d(&mut want, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p });
            let (xf, wf, bf) = (cast::<T>(&x), cast::<T>(&wt), cast::<T>(&b));
            let mut got = vec![T::from_f64(f64::NAN); want.len()];
            let call = ConvCall { x: &xf, dims, weight: &wf, bias: &bf, p: &p };
            conv3d_winograd(&mut got, &call, &Default::default());
            for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
                assert!((g.to_f64() - r).abs() <= tol * (1.0 + r.abs()), "at {i}: {} vs {r}", g.to_f64());
            }
            for co in (0..c_out).filter(|_| k == 1) {
                let frame0 = &got[co * d * h * w..][..h * w];
                assert!(
                    frame0.iter().all(|&v| v == bf[co]),
                    "channel {co}: the first frame's taps were not merged"
                );
            }
        }
    }

    #[test]
    fn replicated_first_frame_taps_merge_f32() {
        replicated_first_frame_taps_merge::<f32>(1e-4);
    }

    #[test]
    fn replicated_first_frame_taps_merge_f64() {
        replicated_first_frame_taps_merge::<f64>(1e-12);
    }

    /// Output frames whose taps read the same runs (frames a, b, b, b, b: frames 3 and 4 read
    /// b three times; a still clip: every frame reads a) share one product; added to different
    /// residuals, over two strips of tiles (a strip's product is not the next strip's), written
    /// at a frame offset, every frame still equals the direct convolution.
    #[test]
    fn repeated_products_are_reused_per_frame_and_strip() {
        for src in [[0, 1, 1, 1, 1], [0; 5]] {
            // f32: tile panels (gemm rows under MOVQ_ISA=scalar); f64: gemm rows.
            repeated_products_are_reused::<f32>(&src, 1e-4);
            repeated_products_are_reused::<f64>(&src, 1e-12);
        }
    }

    fn repeated_products_are_reused<T: Float>(src: &[usize], tol: f64) {
        let (c_in, c_out, (h, w)) = (3, 4, (130, 67));
        let p = causal_first(c_in, c_out);
        let dims = (src.len(), h, w);
        let x = clip_of(src, c_in, (h, w));
        let wt: Vec<f64> = (0..c_out * c_in * 27).map(|i| val(i, 7) / 10.0).collect();
        let b: Vec<f64> = (0..c_out).map(|i| val(i, 3)).collect();
        let (d_o, h_o, w_o) = p.out_dims(dims.0, h, w).unwrap();
        assert!(h_o.div_ceil(2) * w_o.div_ceil(2) > crate::kernels::winograd::TILES_PER_STRIP, "two strips");
        // (c_out, 1 + d_o, h_o, w_o): a residual in every frame, the conv written at frame 1.
        let frames = 1 + d_o;
        let residual: Vec<f64> = (0..c_out * frames * h_o * w_o).map(|i| val(i, 9)).collect();
        let (xf, wf, bf) = (cast::<T>(&x), cast::<T>(&wt), cast::<T>(&b));
        let mut got = cast::<T>(&residual);
        let opts = WinogradOptions { accumulate: true, out_frames: Some((frames, 1)), ..Default::default() };
        conv3d_winograd(&mut got, &ConvCall { x: &xf, dims, weight: &wf, bias: &bf, p: &p }, &opts);
        let mut conv = vec![0.0; c_out * d_o * h_o * w_o];
        reference::conv3d(&mut conv, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p });
        let plane = h_o * w_o;
        for co in 0..c_out {
            for f in 0..frames {
                let at = (co * frames + f) * plane;
                for i in 0..plane {
                    let want =
                        residual[at + i] + if f == 0 { 0.0 } else { conv[(co * d_o + f - 1) * plane + i] };
                    let g = got[at + i].to_f64();
                    assert!(
                        (g - want).abs() <= tol * (1.0 + want.abs()),
                        "{src:?}: channel {co} frame {f} at {i}"
                    );
                }
            }
        }
    }

    /// Equal frames across a chunk boundary (x frames a, b, c, c, c, d under modulation frames
    /// 0, 1, 2, 2, 2, 3, cut after the first c): the second chunk reads the normalised last two
    /// frames of the first as its prefix, finds the run through it, and so writes, bitwise,
    /// the frames of the whole clip's convolution.
    #[test]
    fn runs_across_a_chunk_boundary_merge_as_in_the_whole_clip() {
        let (c_in, c_out, (h, w), cut) = (5, 4, (6, 7), 3);
        let src = [0, 1, 2, 2, 2, 3];
        let d = src.len();
        let p = causal_first(c_in, c_out);
        let x: Vec<f32> = cast(&clip_of(&src, c_in, (h, w)));
        let wt: Vec<f32> = (0..c_out * c_in * 27).map(|i| (val(i, 7) / 10.0) as f32).collect();
        let b: Vec<f32> = (0..c_out).map(|i| val(i, 3) as f32).collect();
        let (md, mh, mw) = (4, 2, 3);
        let scale: Vec<f32> = (0..c_in * md * mh * mw).map(|i| 1.0 + val(i, 5) as f32 / 2.0).collect();
        let shift: Vec<f32> = (0..c_in * md * mh * mw).map(|i| val(i, 6) as f32).collect();
        let coeffs: Vec<(f32, f32)> =
            (0..c_in).map(|c| (1.0 + val(c, 8) as f32 / 4.0, val(c, 9) as f32)).collect();
        let (hmap, wmap) = ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 2, 2]);
        let norm = |tmap: &'static [usize]| InputNorm {
            coeffs: &coeffs,
            modulation: Some(RowModulation {
                scale: &scale,
                shift: &shift,
                dims: (md, mh, mw),
                tmap,
                hmap: &hmap,
                wmap: &wmap,
            }),
            act: Act::Silu,
        };
        // Frames r of x: (c_in, r.len(), h, w).
        let frames = |r: std::ops::Range<usize>| -> Vec<f32> {
            (0..c_in).flat_map(|c| x[(c * d + r.start) * h * w..(c * d + r.end) * h * w].to_vec()).collect()
        };
        let conv = |x: &[f32], n: usize, p: &Conv3dParams, opts: &WinogradOptions<'_, f32>| {
            let mut y = vec![f32::NAN; c_out * n * h * w];
            conv3d_winograd(&mut y, &ConvCall { x, dims: (n, h, w), weight: &wt, bias: &b, p }, opts);
            y
        };
        static TMAP: [usize; 6] = [0, 1, 2, 2, 2, 3];
        let whole = conv(&x, d, &p, &WinogradOptions { input_norm: Some(norm(&TMAP)), ..Default::default() });
        let first = conv(
            &frames(0..cut),
            cut,
            &p,
            &WinogradOptions { input_norm: Some(norm(&TMAP)), ..Default::default() },
        );
        // The first chunk's cache: norm(x) of its last two frames.
        let nm = norm(&TMAP);
        let mut pre = vec![0.0f32; c_in * 2 * h * w];
        for c in 0..c_in {
            for (k, f) in (cut - 2..cut).enumerate() {
                let dst = &mut pre[(c * 2 + k) * h * w..][..h * w];
                nm.rows(dst, &x[(c * d + f) * h * w..][..h * w], c, f, 0, w);
            }
        }
        let joined = Conv3dParams { pad_d: (0, 0), ..p.clone() };
        let opts = WinogradOptions {
            input_norm: Some(norm(&TMAP[cut..])),
            prefix: Some((&pre, 2)),
            ..Default::default()
        };
        let second = conv(&frames(cut..d), d - cut, &joined, &opts);
        let plane = h * w;
        for co in 0..c_out {
            let (a, z) = (
                &first[co * cut * plane..][..cut * plane],
                &second[co * (d - cut) * plane..][..(d - cut) * plane],
            );
            let wh = &whole[co * d * plane..][..d * plane];
            assert!(a.iter().zip(wh).all(|(g, r)| g.to_bits() == r.to_bits()), "channel {co}, first chunk");
            assert!(
                z.iter().zip(&wh[cut * plane..]).all(|(g, r)| g.to_bits() == r.to_bits()),
                "channel {co}, second chunk"
            );
        }
    }
}
