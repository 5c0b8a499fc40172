//! 3D convolution with 3x3 spatial taps by Winograd F(4x4, 3x3) in the (h, w) plane; the time
//! taps are summed in the transformed domain. Twin: [`super::reference::conv3d`]. Same contract
//! and options as [`super::winograd::conv3d_winograd`] (F(2x2, 3x3)), which stays the default.
//!
//! Algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): every
//! 4x4 output tile is `A^T [ sum_{ci, dt} U(co, ci, dt) . V(ci, src(t, dt)) ] A` with the kernel
//! transform `U = G g G^T` and the input transform `V = B^T d B` of the 6x6 input tile `d`; the
//! sum over (ci, dt) for each of the 36 transformed positions is a gemm. 36 multiplies per 16
//! outputs and tap plane instead of 144 (4x fewer; F(2x2, 3x3): 2.25x).
//!
//! The matrices are the Toom-Cook ones of the interpolation points [`POINTS`] and infinity,
//! built in f64 ([`Matrices::new`]): A^T and B^T hold small dyadic numbers (exact in f32), G
//! holds fractions like 1/6 and is only used in f64: each `U` is rounded once.
//!
//! Blocking: output tile rows are cut into strips of about [`TILES_PER_STRIP`] tiles (bounded
//! scratch, fixed by the layer shape only). Per strip and output frame, the transformed input of
//! each source frame is computed once (kept while later frames still read it); then 36 tasks
//! (one per transformed position) each run the k_d gemms over all output channels, and tasks
//! over output channels apply the output transform into their own channel planes. Every task
//! and every element's rounding is independent of the thread count. The transforms run as
//! separable row and column passes over `(position, tile)` buffers with the tile index
//! contiguous, so each pass is a loop of `o = o + c * s` over tiles that the compiler
//! vectorises.
//!
//! Numerics: F(4x4, 3x3) amplifies rounding more than F(2x2, 3x3): every output is a signed
//! combination of all 36 products of its tile (weights up to 8 in A^T), not of the 9 taps it
//! needs, so the gemm's rounding of the products is amplified. That part dominates: doing the
//! input and output transforms in f64 lowered the golden error by only 7 %, so they run in T.
//! On the golden set the error is up to 3.6x PyTorch's f32 error (README, "Winograd F(4x4,
//! 3x3)"), which is why it is opt-in.

use super::Float;
use super::gemm::{Mat, Par, gemm};
use super::input_norm::InputNorm;
use super::params::{Conv3dParams, ConvCall};
use super::scratch;
use super::winograd::{Strip, WinogradOptions};
use rayon::prelude::*;
use std::ops::Deref;

/// Target number of 4x4 tiles per strip (one gemm's column count): 4096 outputs, as the
/// F(2x2, 3x3) kernel's strips had when this was chosen (1024 tiles; 2048 since 2026-12-07).
pub const TILES_PER_STRIP: usize = 256;
/// Upper bound of the transformed-input cache of one strip (k_d source frames).
pub const STRIP_CACHE_BYTES: usize = 64 << 20;
/// Output tile side.
const M: usize = 4;
/// Input tile side: M + 3 - 1.
const N: usize = 6;
/// Transformed positions per tile.
const NN: usize = N * N;
/// The finite interpolation points (the sixth is infinity). Barabasz et al. ("Error analysis
/// and improving the accuracy of Winograd convolution for deep neural networks", ACM TOMS 2020)
/// found (0, -1, 1, 1/2, -2) the most accurate for F(4, 3); on the golden set it gives 1.5x
/// less error than Lavin's (0, 1, -1, 2, -2) (max ratio 3.6 vs 5.4, median 2.3 vs 3.3).
/// All entries of A^T and B^T stay dyadic, so exact in f32.
pub const POINTS: [f64; N - 1] = [0.0, 1.0, -1.0, 0.5, -2.0];

/// The transform matrices of F(4, 3) for `points` and infinity.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrices {
    /// (M, N): row a, column j is points[j]^a; the infinity column is (0, .., 0, 1).
    pub at: [[f64; N]; M],
    /// (N, N): row j holds the coefficients (increasing powers) of prod_{k != j} (x - p_k),
    /// the infinity row those of prod_k (x - p_k).
    pub bt: [[f64; N]; N],
    /// (N, 3): row j is (1, p_j, p_j^2) / prod_{k != j} (p_j - p_k); the infinity row (0, 0, 1).
    pub g: [[f64; 3]; N],
}

impl Matrices {
    /// The Toom-Cook matrices of `points` (pairwise distinct).
    pub fn new(points: [f64; N - 1]) -> Self {
        let mut m = Matrices { at: [[0.0; N]; M], bt: [[0.0; N]; N], g: [[0.0; 3]; N] };
        for (j, &p) in points.iter().enumerate() {
            for a in 0..M {
                m.at[a][j] = p.powi(a as i32);
            }
            let others: Vec<f64> =
                points.iter().enumerate().filter(|&(k, _)| k != j).map(|(_, &q)| q).collect();
            m.bt[j] = poly_from_roots(&others);
            let norm: f64 = others.iter().map(|&q| p - q).product();
            m.g[j] = [1.0 / norm, p / norm, p * p / norm];
        }
        m.at[M - 1][N - 1] = 1.0;
        m.bt[N - 1] = poly_from_roots(&points);
        m.g[N - 1] = [0.0, 0.0, 1.0];
        m
    }
}

/// Coefficients (increasing powers, N of them) of prod_k (x - roots[k]); at most N - 1 roots.
fn poly_from_roots(roots: &[f64]) -> [f64; N] {
    let mut c = [0.0; N];
    c[0] = 1.0;
    for &r in roots {
        for k in (0..N).rev() {
            c[k] = if k > 0 { c[k - 1] } else { 0.0 } - r * c[k];
        }
    }
    c
}

/// u: (c_out, 36, k_d, c_in) from weight (c_out, c_in, k_d, 3, 3): `U = G g G^T` in f64,
/// rounded once. Each pass runs over the input channels (contiguous in u), so it vectorises;
/// per-call cost c_out * c_in * k_d * 162 multiply-adds.
fn transform_weights<T: Float>(u: &mut [T], weight: &[T], p: &Conv3dParams, g: &[[f64; 3]; N]) {
    let (c_in, k_d) = (p.c_in, p.k_d);
    let init = || (vec![0.0f64; 9 * c_in], vec![0.0f64; N * 3 * c_in]);
    u.par_chunks_mut(NN * k_d * c_in).enumerate().for_each_init(init, |(w9, gw), (co, uo)| {
        for dt in 0..k_d {
            // w9: (9, c_in), the taps of (co, dt).
            for ci in 0..c_in {
                let w = &weight[((co * c_in + ci) * k_d + dt) * 9..][..9];
                for (k, &e) in w.iter().enumerate() {
                    w9[k * c_in + ci] = e.to_f64();
                }
            }
            // gw: (N, 3, c_in) = G w.
            for (r, gr) in g.iter().enumerate() {
                for c in 0..3 {
                    let dst = &mut gw[(r * 3 + c) * c_in..][..c_in];
                    dst.fill(0.0);
                    for (k, &coef) in gr.iter().enumerate() {
                        let src = &w9[(k * 3 + c) * c_in..][..c_in];
                        dst.iter_mut().zip(src).for_each(|(o, &s)| *o += coef * s);
                    }
                }
            }
            // U[(r, c)] = sum_k gw[(r, k)] G[c][k].
            for r in 0..N {
                let (g0, g1, g2) = (
                    &gw[r * 3 * c_in..][..c_in],
                    &gw[(r * 3 + 1) * c_in..][..c_in],
                    &gw[(r * 3 + 2) * c_in..][..c_in],
                );
                for (c, gc) in g.iter().enumerate() {
                    let dst = &mut uo[((r * N + c) * k_d + dt) * c_in..][..c_in];
                    for (((o, &a), &b), &e) in dst.iter_mut().zip(g0).zip(g1).zip(g2) {
                        *o = T::from_f64(gc[0] * a + gc[1] * b + gc[2] * e);
                    }
                }
            }
        }
    });
}

/// dst[r] = sum_k coef[r][k] * src[k] over rows of `n` elements (rows `src_row(k)` of `src`,
/// `dst_row(r)` of `dst`), zero coefficients skipped, terms added in order of k.
fn apply_rows<T: Float, const R: usize>(
    dst: &mut [T],
    dst_row: impl Fn(usize) -> usize,
    src: &[T],
    src_row: impl Fn(usize) -> usize,
    coef: &[[T; N]; R],
    n: usize,
) {
    for (r, cr) in coef.iter().enumerate() {
        let o = &mut dst[dst_row(r) * n..][..n];
        let mut first = true;
        for (k, &c) in cr.iter().enumerate() {
            if c == T::ZERO {
                continue;
            }
            let s = &src[src_row(k) * n..][..n];
            if first {
                o.iter_mut().zip(s).for_each(|(o, &s)| *o = c * s);
                first = false;
            } else {
                o.iter_mut().zip(s).for_each(|(o, &s)| *o += c * s);
            }
        }
        if first {
            o.fill(T::ZERO);
        }
    }
}

/// Options of [`conv3d_winograd4`]: the same as F(2x2, 3x3)'s.
pub type Winograd4Options<'a, T> = WinogradOptions<'a, T>;

/// v: (c_in, 36, tiles) = B^T d B for every tile of `strip` in frame `f` of `src`
/// (c_in, d_src, h, w), normalised on the fly by `norm` if given. bt: B^T in T.
#[allow(clippy::too_many_arguments)]
fn transform_input<T: Float>(
    v: &mut [T],
    src: &[T],
    (d_src, f): (usize, usize),
    (h, w): (usize, usize),
    p: &Conv3dParams,
    s: Strip,
    norm: Option<&InputNorm<'_, T>>,
    bt: &[[T; N]; N],
) {
    let n_t = s.tiles();
    // Input rows this strip reads, clipped to the frame.
    let y_lo = (M * s.i0).saturating_sub(p.pad_h.0).min(h);
    let y_hi = (M * (s.i0 + s.rows) + 2).saturating_sub(p.pad_h.0).min(h).max(y_lo);
    let init = || (Vec::new(), vec![T::ZERO; NN * n_t], vec![T::ZERO; NN * n_t]);
    v.par_chunks_mut(NN * n_t).enumerate().for_each_init(init, |(buf, d, tmp), (ci, vc)| {
        let raw = &src[(ci * d_src + f) * h * w..][..h * w];
        // With a fused norm, the rows are normalised once into `buf`; `frame` then stands for
        // the normalised frame (rows outside [y_lo, y_hi) are never read).
        let frame: &[T] = match norm {
            None => raw,
            Some(nm) => {
                if buf.len() != h * w {
                    buf.resize(h * w, T::ZERO);
                }
                nm.rows(&mut buf[y_lo * w..y_hi * w], &raw[y_lo * w..y_hi * w], ci, f, y_lo, w);
                buf
            }
        };
        // d: (36, tiles), position (k, l) of the 6x6 input tile, zero outside the frame.
        d.fill(T::ZERO);
        for ti in 0..s.rows {
            let y0 = (M * (s.i0 + ti)) as isize - p.pad_h.0 as isize;
            for k in 0..N {
                let yy = y0 + k as isize;
                if yy < 0 || yy >= h as isize {
                    continue;
                }
                let row = &frame[yy as usize * w..][..w];
                for l in 0..N {
                    let dst = &mut d[(k * N + l) * n_t + ti * s.tw..][..s.tw];
                    for (tj, e) in dst.iter_mut().enumerate() {
                        let xx = (M * tj + l) as isize - p.pad_w.0 as isize;
                        if xx >= 0 && xx < w as isize {
                            *e = row[xx as usize];
                        }
                    }
                }
            }
        }
        // tmp[(r, l)] = sum_k B^T[r][k] d[(k, l)]; then v[(r, c)] = sum_l B^T[c][l] tmp[(r, l)].
        for l in 0..N {
            apply_rows(tmp, |r| r * N + l, d, |k| k * N + l, bt, n_t);
        }
        for r in 0..N {
            apply_rows(vc, |c| r * N + c, tmp, |l| r * N + l, bt, n_t);
        }
    });
}

/// out = bias + conv(x) for one sample, for `p` with 3x3 spatial taps ([`Conv3dParams::has_3x3_taps`]).
/// out: (c_out, d_out, h_out, w_out); x: (c_in, d, h, w); weight: (c_out, c_in, k_d, 3, 3).
/// With `opts.prefix` (c_in, n_pre, h, w), d_out counts the joined clip prefix ++ x.
pub fn conv3d_winograd4<T: Float>(out: &mut [T], c: &ConvCall<'_, T>, opts: &Winograd4Options<'_, T>) {
    let ConvCall { x, dims, weight, bias, p } = *c;
    assert!(p.has_3x3_taps());
    assert!(opts.transformed_weights.is_none(), "F(2x2, 3x3) weight transforms passed to F(4x4, 3x3)");
    assert!(
        !opts.bf16_products && opts.bf16_dot.is_none(),
        "bf16 products are not implemented for F(4x4, 3x3)"
    );
    let (d, h, w) = dims;
    let (prefix, n_pre) = opts.prefix.unwrap_or((&[], 0));
    assert_eq!(prefix.len(), p.c_in * n_pre * h * w);
    // Frame indices below run over the whole sequence prefix ++ x.
    let d_all = n_pre + d;
    let (d_out, h_out, w_out) = p.out_dims(d_all, h, w).expect("caller validated the conv geometry");
    let whole = opts.out_frames.is_none_or(|f| f == (d_out, 0));
    assert!(whole, "F(4x4) writes whole outputs only");
    let plane_out = d_out * h_out * w_out;
    let (c_in, c_out, k_d) = (p.c_in, p.c_out, p.k_d);
    assert_eq!(out.len(), c_out * plane_out);
    assert_eq!(x.len(), c_in * d * h * w);
    assert_eq!(weight.len(), c_out * c_in * k_d * 9);
    assert_eq!(bias.len(), c_out);
    let mats = Matrices::new(POINTS);
    let bt = mats.bt.map(|r| r.map(T::from_f64));
    let at = mats.at.map(|r| r.map(T::from_f64));
    let kk = NN * k_d * c_in;
    let mut u = scratch::take(c_out * kk);
    transform_weights(&mut u, weight, p, &mats.g);

    let (th, tw) = (h_out.div_ceil(M), w_out.div_ceil(M));
    let elem = std::mem::size_of::<T>();
    let cap = (STRIP_CACHE_BYTES / (elem * NN * k_d.max(1) * c_in)).max(tw);
    let strip_rows = (TILES_PER_STRIP.min(cap) / tw).clamp(1, th);
    for i0 in (0..th).step_by(strip_rows) {
        let s = Strip { i0, rows: strip_rows.min(th - i0), tw };
        let n_t = s.tiles();
        let mut cache: Vec<(usize, scratch::Scratch<T>)> = Vec::new();
        let mut mbuf = scratch::take::<T>(NN * c_out * n_t); // (36, c_out, tiles)
        for t in 0..d_out {
            let srcs: Vec<Option<usize>> = (0..k_d).map(|dt| p.src_frame(t, dt, d_all)).collect();
            cache.retain(|(f, _)| srcs.contains(&Some(*f)));
            for &f in srcs.iter().flatten() {
                if !cache.iter().any(|(g, _)| *g == f) {
                    let mut v = scratch::take(c_in * NN * n_t);
                    if f < n_pre {
                        transform_input(&mut v, prefix, (n_pre, f), (h, w), p, s, None, &bt);
                    } else {
                        let norm = opts.input_norm.as_ref();
                        transform_input(&mut v, x, (d, f - n_pre), (h, w), p, s, norm, &bt);
                    }
                    cache.push((f, v));
                }
            }
            let frames: Vec<Option<&[T]>> = srcs
                .iter()
                .map(|sf| sf.map(|f| cache.iter().find(|(g, _)| *g == f).expect("cached").1.deref()))
                .collect();
            mbuf.par_chunks_mut(c_out * n_t).enumerate().for_each(|(xi, m)| {
                let mut first = true;
                for (dt, v) in frames.iter().enumerate() {
                    let Some(v) = v else { continue };
                    let lhs = Mat { data: &u[(xi * k_d + dt) * c_in..], rs: kk, cs: 1 };
                    let rhs = Mat { data: &v[xi * n_t..], rs: NN * n_t, cs: 1 };
                    gemm(c_out, n_t, c_in, m, n_t, 1, !first, lhs, rhs, Par::Seq);
                    first = false;
                }
                if first {
                    m.fill(T::ZERO);
                }
            });
            let init = || (vec![T::ZERO; M * N * n_t], vec![T::ZERO; M * M * n_t]);
            out.par_chunks_mut(plane_out).zip(bias.par_iter()).enumerate().for_each_init(
                init,
                |(tmp, o), (co, (dst, &b))| {
                    let frame = &mut dst[t * h_out * w_out..][..h_out * w_out];
                    let geo = (h_out, w_out, opts.accumulate);
                    inverse_transform(frame, &mbuf, (co, c_out), b, s, &at, (tmp, o), geo);
                },
            );
        }
    }
}

/// Writes A^T m A + bias of every tile of strip `s` into `frame` (h_out, w_out) of channel
/// `co` (added to it if `accumulate`). m: (36, c_out, tiles); scratch tmp: (24, tiles),
/// o: (16, tiles).
#[allow(clippy::too_many_arguments)]
fn inverse_transform<T: Float>(
    frame: &mut [T],
    m: &[T],
    (co, c_out): (usize, usize),
    b: T,
    s: Strip,
    at: &[[T; N]; M],
    (tmp, o): (&mut [T], &mut [T]),
    (h_out, w_out, accumulate): (usize, usize, bool),
) {
    let n_t = s.tiles();
    // tmp[(a, c)] = sum_k A^T[a][k] m[(k, c)]; then o[(a, b)] = sum_c A^T[b][c] tmp[(a, c)].
    for c in 0..N {
        apply_rows(tmp, |a| a * N + c, m, |k| (k * N + c) * c_out + co, at, n_t);
    }
    for a in 0..M {
        apply_rows(o, |bb| a * M + bb, tmp, |c| a * N + c, at, n_t);
    }
    for ti in 0..s.rows {
        for a in 0..M {
            let y = M * (s.i0 + ti) + a;
            if y >= h_out {
                break;
            }
            let row = &mut frame[y * w_out..][..w_out];
            for bb in 0..M {
                let vals = &o[(a * M + bb) * n_t + ti * s.tw..][..s.tw];
                for (tj, &val) in vals.iter().enumerate() {
                    let x = M * tj + bb;
                    if x < w_out {
                        let val = val + b;
                        row[x] = if accumulate { row[x] + val } else { val };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lavin & Gray's F(4x4, 3x3) matrices (their section 4.2), which the Toom-Cook
    /// construction must reproduce for the points (0, 1, -1, 2, -2).
    #[test]
    fn winograd4_matrices_are_lavins() {
        let m = Matrices::new([0.0, 1.0, -1.0, 2.0, -2.0]);
        let bt = [
            [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
            [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
            [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
            [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
            [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
            [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
        ];
        let at = [
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
            [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
            [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
            [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
        ];
        let g = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        assert_eq!(m.bt, bt);
        assert_eq!(m.at, at);
        for (r, e) in m.g.iter().zip(&g) {
            for (a, b) in r.iter().zip(e) {
                assert!((a - b).abs() <= 1e-16, "{:?} vs {:?}", m.g, g);
            }
        }
    }

    /// 1D identity behind the 2D algorithm: A^T [(G g) . (B^T d)] = the 4 outputs of the valid
    /// correlation of d (6) with g (3), here for g = (1, 2, 3), d = (1, -1, 2, 0, 3, 5):
    /// y = (1-2+6, -1+4+0, 2+0+9, 0+6+15) = (5, 3, 11, 21).
    /// (For both point sets, and A^T, B^T exact in f32 for the chosen one.)
    #[test]
    fn winograd4_one_dimensional_identity() {
        for points in [POINTS, [0.0, 1.0, -1.0, 2.0, -2.0]] {
            let m = Matrices::new(points);
            let (g, d) = ([1.0, 2.0, 3.0], [1.0, -1.0, 2.0, 0.0, 3.0, 5.0]);
            let gg: Vec<f64> = m.g.iter().map(|r| (0..3).map(|k| r[k] * g[k]).sum()).collect();
            let bd: Vec<f64> = m.bt.iter().map(|r| (0..N).map(|k| r[k] * d[k]).sum()).collect();
            let y: Vec<f64> = m.at.iter().map(|r| (0..N).map(|j| r[j] * gg[j] * bd[j]).sum()).collect();
            for (a, b) in y.iter().zip([5.0, 3.0, 11.0, 21.0]) {
                assert!((a - b).abs() < 1e-12, "{points:?}: {y:?}");
            }
        }
        let m = Matrices::new(POINTS);
        for e in m.at.iter().flatten().chain(m.bt.iter().flatten()) {
            assert_eq!(*e as f32 as f64, *e, "{e} is not exact in f32");
        }
    }
}
