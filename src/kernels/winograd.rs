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
//! over output channels apply the output transform into their own channel planes. Kernel transforms are computed per call in f64 and rounded
//! once. Numerics: the transforms add terms before multiplying, so rounding differs from the
//! direct convolution; the golden cases bound the difference (see README).

use super::Float;
use super::gemm::{Mat, Par, gemm};
use super::input_norm::InputNorm;
use super::params::{Conv3dParams, ConvCall};
use rayon::prelude::*;

/// Target number of 2x2 tiles per strip (one gemm's column count).
pub const TILES_PER_STRIP: usize = 1024;
/// Upper bound of the transformed-input cache of one strip (k_d source frames).
pub const STRIP_CACHE_BYTES: usize = 64 << 20;

// The small 4x4 transforms index rows and columns explicitly, like the formulas they implement.
#[allow(clippy::needless_range_loop)]
/// u: (c_out, 16, k_d, c_in) from weight (c_out, c_in, k_d, 3, 3): `U = G g G^T`.
fn transform_weights<T: Float>(u: &mut [T], weight: &[T], p: &Conv3dParams) {
    let (c_in, k_d) = (p.c_in, p.k_d);
    u.par_chunks_mut(16 * k_d * c_in).enumerate().for_each(|(co, uo)| {
        for ci in 0..c_in {
            for dt in 0..k_d {
                let g = &weight[((co * c_in + ci) * k_d + dt) * 9..][..9];
                let g = |r: usize, c: usize| g[r * 3 + c].to_f64();
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
                        uo[((r * 4 + c) * k_d + dt) * c_in + ci] = T::from_f64(v);
                    }
                }
            }
        }
    });
}

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
}

/// Geometry of one strip of tile rows.
#[derive(Clone, Copy)]
struct Strip {
    /// First tile row.
    i0: usize,
    /// Tile rows in the strip.
    rows: usize,
    /// Tiles per tile row.
    tw: usize,
}

impl Strip {
    fn tiles(&self) -> usize {
        self.rows * self.tw
    }
}

#[allow(clippy::needless_range_loop)]
/// v: (c_in, 16, tiles) = B^T d B for every tile of `strip` in frame `f` of `src`
/// (c_in, d_src, h, w), normalised on the fly by `norm` if given.
#[allow(clippy::too_many_arguments)]
fn transform_input<T: Float>(
    v: &mut [T],
    src: &[T],
    d_src: usize,
    f: usize,
    (h, w): (usize, usize),
    p: &Conv3dParams,
    s: Strip,
    norm: Option<&InputNorm<'_, T>>,
) {
    let n_t = s.tiles();
    // Input rows this strip reads, clipped to the frame.
    let y_lo = (2 * s.i0).saturating_sub(p.pad_h.0).min(h);
    let y_hi = (2 * (s.i0 + s.rows) + 2).saturating_sub(p.pad_h.0).min(h).max(y_lo);
    v.par_chunks_mut(16 * n_t).enumerate().for_each_init(Vec::new, |buf, (ci, vc)| {
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
        for ti in 0..s.rows {
            let y0 = (2 * (s.i0 + ti)) as isize - p.pad_h.0 as isize;
            for tj in 0..s.tw {
                let x0 = (2 * tj) as isize - p.pad_w.0 as isize;
                let mut dd = [[T::ZERO; 4]; 4];
                for (r, row) in dd.iter_mut().enumerate() {
                    let yy = y0 + r as isize;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    let src = &frame[yy as usize * w..][..w];
                    for (c, e) in row.iter_mut().enumerate() {
                        let xx = x0 + c as isize;
                        if xx >= 0 && xx < w as isize {
                            *e = src[xx as usize];
                        }
                    }
                }
                // B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3).
                let mut bd = [[T::ZERO; 4]; 4];
                for c in 0..4 {
                    bd[0][c] = dd[0][c] - dd[2][c];
                    bd[1][c] = dd[1][c] + dd[2][c];
                    bd[2][c] = dd[2][c] - dd[1][c];
                    bd[3][c] = dd[1][c] - dd[3][c];
                }
                let t = ti * s.tw + tj;
                for (r, row) in bd.iter().enumerate() {
                    let vals = [row[0] - row[2], row[1] + row[2], row[2] - row[1], row[1] - row[3]];
                    for (c, val) in vals.into_iter().enumerate() {
                        vc[(r * 4 + c) * n_t + t] = val;
                    }
                }
            }
        }
    });
}

/// out = bias + conv(x) for one sample, for `p` with 3x3 spatial taps ([`Conv3dParams::has_3x3_taps`]).
/// out: (c_out, d_out, h_out, w_out); x: (c_in, d, h, w); weight: (c_out, c_in, k_d, 3, 3).
pub fn conv3d_winograd<T: Float>(out: &mut [T], c: &ConvCall<'_, T>, opts: &WinogradOptions<'_, T>) {
    let ConvCall { x, dims, weight, bias, p } = *c;
    assert!(p.has_3x3_taps());
    let (d, h, w) = dims;
    let (prefix, n_pre) = opts.prefix.unwrap_or((&[], 0));
    assert_eq!(prefix.len(), p.c_in * n_pre * h * w);
    // Frame indices below run over the whole sequence prefix ++ x.
    let d_all = n_pre + d;
    let (d_out, h_out, w_out) = p.out_dims(d_all, h, w).expect("caller validated the conv geometry");
    let plane_out = d_out * h_out * w_out;
    let (c_in, c_out, k_d) = (p.c_in, p.c_out, p.k_d);
    assert_eq!(out.len(), c_out * plane_out);
    assert_eq!(x.len(), c_in * d * h * w);
    assert_eq!(weight.len(), p.c_out * c_in * k_d * 9);
    let kk = 16 * k_d * c_in;
    let mut u = vec![T::ZERO; p.c_out * kk];
    transform_weights(&mut u, weight, p);

    let (th, tw) = (h_out.div_ceil(2), w_out.div_ceil(2));
    let elem = std::mem::size_of::<T>();
    let cap = (STRIP_CACHE_BYTES / (elem * 16 * k_d.max(1) * c_in)).max(tw);
    let strip_rows = (TILES_PER_STRIP.min(cap) / tw).clamp(1, th);
    for i0 in (0..th).step_by(strip_rows) {
        let s = Strip { i0, rows: strip_rows.min(th - i0), tw };
        let n_t = s.tiles();
        let mut cache: Vec<(usize, Vec<T>)> = Vec::new();
        let mut mbuf: Vec<T> = Vec::new(); // (16, c_out, tiles)
        for t in 0..d_out {
            let srcs: Vec<Option<usize>> = (0..k_d).map(|dt| p.src_frame(t, dt, d_all)).collect();
            cache.retain(|(f, _)| srcs.contains(&Some(*f)));
            for &f in srcs.iter().flatten() {
                if !cache.iter().any(|(g, _)| *g == f) {
                    let mut v = vec![T::ZERO; c_in * 16 * n_t];
                    if f < n_pre {
                        transform_input(&mut v, prefix, n_pre, f, (h, w), p, s, None);
                    } else {
                        let norm = opts.input_norm.as_ref();
                        transform_input(&mut v, x, d, f - n_pre, (h, w), p, s, norm);
                    }
                    cache.push((f, v));
                }
            }
            let frames: Vec<Option<&[T]>> = srcs
                .iter()
                .map(|sf| sf.map(|f| cache.iter().find(|(g, _)| *g == f).expect("cached").1.as_slice()))
                .collect();
            // 16 independent gemms (one per transformed position), each over all output
            // channels: the tasks and every element's rounding are independent of the thread count.
            mbuf.resize(16 * c_out * n_t, T::ZERO);
            mbuf.par_chunks_mut(c_out * n_t).enumerate().for_each(|(xi, m)| {
                let mut first = true;
                for (dt, v) in frames.iter().enumerate() {
                    let Some(v) = v else { continue };
                    let lhs = Mat { data: &u[(xi * k_d + dt) * c_in..], rs: kk, cs: 1 };
                    let rhs = Mat { data: &v[xi * n_t..], rs: 16 * n_t, cs: 1 };
                    gemm(c_out, n_t, c_in, m, n_t, 1, !first, lhs, rhs, Par::Seq);
                    first = false;
                }
                if first {
                    m.fill(T::ZERO);
                }
            });
            out.par_chunks_mut(plane_out).zip(bias.par_iter()).enumerate().for_each(|(co, (dst, &b))| {
                inverse_transform(dst, &mbuf, co, c_out, b, s, (t, h_out, w_out), opts.accumulate);
            });
        }
    }
}

#[allow(clippy::needless_range_loop)]
/// Writes A^T m A + bias of every tile of strip `s` into output frame `t` of channel `co`.
/// dst: (d_out, h_out, w_out) of channel co; m: (16, c_out, tiles).
#[allow(clippy::too_many_arguments)]
fn inverse_transform<T: Float>(
    dst: &mut [T],
    m: &[T],
    co: usize,
    c_out: usize,
    b: T,
    s: Strip,
    (t, h_out, w_out): (usize, usize, usize),
    accumulate: bool,
) {
    let n_t = s.tiles();
    let frame = &mut dst[t * h_out * w_out..][..h_out * w_out];
    let e = |xi: usize, k: usize| m[(xi * c_out + co) * n_t + k];
    for ti in 0..s.rows {
        for tj in 0..s.tw {
            let k = ti * s.tw + tj;
            // A^T m: rows (m0 + m1 + m2, m1 - m2 - m3), then the same on columns.
            let mut am = [[T::ZERO; 4]; 2];
            for c in 0..4 {
                am[0][c] = e(c, k) + e(4 + c, k) + e(8 + c, k);
                am[1][c] = e(4 + c, k) - e(8 + c, k) - e(12 + c, k);
            }
            for (a, row) in am.iter().enumerate() {
                let y = 2 * (s.i0 + ti) + a;
                if y >= h_out {
                    continue;
                }
                let x = 2 * tj;
                let vals = [row[0] + row[1] + row[2] + b, row[1] - row[2] - row[3] + b];
                for (k, val) in vals.into_iter().enumerate().take(w_out - x) {
                    let o = &mut frame[y * w_out + x + k];
                    *o = if accumulate { *o + val } else { val };
                }
            }
        }
    }
}
