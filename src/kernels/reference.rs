//! Scalar, obviously-correct kernels: the oracle for the fast kernels and the fallback on CPUs
//! without SIMD support. No `unsafe`, no cleverness.

use super::activation::Act;
use super::params::{AttentionParams, Conv3dParams, ConvCall};
use crate::tensor::Element;

/// Sum of `x` in f64, left to right.
pub fn sum_f64<T: Element>(x: &[T]) -> f64 {
    x.iter().map(|v| v.to_f64()).sum()
}

/// Sum of `(x - mean)^2` in f64, left to right.
pub fn sum_sq_dev_f64<T: Element>(x: &[T], mean: f64) -> f64 {
    x.iter().map(|v| (v.to_f64() - mean) * (v.to_f64() - mean)).sum()
}

/// In place: `y = x * a + b`; then `y = y * scale + shift` if `modulation` is given; then
/// `y = act(y)`. `buf`, `scale`, `shift`: same length.
pub fn norm_apply<T: Element>(buf: &mut [T], a: T, b: T, modulation: Option<(&[T], &[T])>, act: Act) {
    for (i, v) in buf.iter_mut().enumerate() {
        let mut y = v.mul_add(a, b);
        if let Some((scale, shift)) = modulation {
            y = y.mul_add(scale[i], shift[i]);
        }
        *v = act.apply(y);
    }
}

/// Direct 3D convolution of one sample, the definition written out.
/// out: (c_out, d_out, h_out, w_out); x: (c_in, d, h, w); weight: (c_out, c_in, k_d, k_h, k_w).
pub fn conv3d<T: Element>(out: &mut [T], c: &ConvCall<'_, T>) {
    let ConvCall { x, dims, weight, bias, p } = *c;
    let (d, h, w) = dims;
    let (d_out, h_out, w_out) = p.out_dims(d, h, w).expect("valid conv geometry");
    for co in 0..p.c_out {
        for t in 0..d_out {
            for y in 0..h_out {
                for xo in 0..w_out {
                    let mut acc = bias[co].to_f64();
                    for ci in 0..p.c_in {
                        for dt in 0..p.k_d {
                            let Some(s) = p.src_frame(t, dt, d) else {
                                continue;
                            };
                            for dh in 0..p.k_h {
                                let iy = (y + dh) as isize - p.pad_h.0 as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for dw in 0..p.k_w {
                                    let ix = (xo + dw) as isize - p.pad_w.0 as isize;
                                    if ix < 0 || ix >= w as isize {
                                        continue;
                                    }
                                    let wi = (((co * p.c_in + ci) * p.k_d + dt) * p.k_h + dh) * p.k_w + dw;
                                    let xi = ((ci * d + s) * h + iy as usize) * w + ix as usize;
                                    acc += weight[wi].to_f64() * x[xi].to_f64();
                                }
                            }
                        }
                    }
                    out[((co * d_out + t) * h_out + y) * w_out + xo] = T::from_f64(acc);
                }
            }
        }
    }
}

/// im2col of one sample for output columns `p0 .. p0 + tile.len() / rows`, element by element.
/// tile: (c_in * k_d * k_h * k_w, n_cols); x: (c_in, d, h, w).
pub fn vol2col<T: Element>(
    tile: &mut [T],
    x: &[T],
    p: &Conv3dParams,
    dims: (usize, usize, usize),
    p0: usize,
) {
    let (d, h, w) = dims;
    let (_, h_out, w_out) = p.out_dims(d, h, w).expect("valid conv geometry");
    let rows = p.c_in * p.k_d * p.k_h * p.k_w;
    let n_cols = tile.len() / rows;
    for r in 0..rows {
        let dw = r % p.k_w;
        let dh = (r / p.k_w) % p.k_h;
        let dt = (r / (p.k_w * p.k_h)) % p.k_d;
        let ci = r / (p.k_w * p.k_h * p.k_d);
        for j in 0..n_cols {
            let q = p0 + j;
            let (t, y, xo) = (q / (h_out * w_out), (q / w_out) % h_out, q % w_out);
            let iy = (y + dh) as isize - p.pad_h.0 as isize;
            let ix = (xo + dw) as isize - p.pad_w.0 as isize;
            tile[r * n_cols + j] = match p.src_frame(t, dt, d) {
                Some(s) if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize => {
                    x[((ci * d + s) * h + iy as usize) * w + ix as usize]
                }
                _ => T::ZERO,
            };
        }
    }
}

/// Single-head attention of one frame with a full softmax, in f64.
/// out: (n_tokens, c) token-major; q, k, v: element (ch, i) at `ch * p.ch_stride + i`.
pub fn attention<T: Element>(out: &mut [T], q: &[T], k: &[T], v: &[T], p: &AttentionParams) {
    let (c, n_tokens, ch_stride) = (p.c, p.n_tokens, p.ch_stride);
    let mut w = vec![0.0f64; n_tokens];
    for i in 0..n_tokens {
        for (j, wj) in w.iter_mut().enumerate() {
            let s: f64 =
                (0..c).map(|ch| q[ch * ch_stride + i].to_f64() * k[ch * ch_stride + j].to_f64()).sum();
            *wj = s * p.scale;
        }
        let m = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut l = 0.0;
        for wj in w.iter_mut() {
            *wj = (*wj - m).exp();
            l += *wj;
        }
        for ch in 0..c {
            let o: f64 = (0..n_tokens).map(|j| w[j] * v[ch * ch_stride + j].to_f64()).sum();
            out[i * c + ch] = T::from_f64(o / l);
        }
    }
}

/// `row *= scale`; the largest scaled value in f64 (NaN ignored; -inf for an empty row).
pub fn scale_max<T: Element>(row: &mut [T], scale: T) -> f64 {
    let mut best = f64::NEG_INFINITY;
    for x in row.iter_mut() {
        *x = *x * scale;
        best = best.max(x.to_f64());
    }
    best
}

/// `row = exp(row - m)`; the sum of the new row in f64, left to right.
pub fn exp_sum<T: Element>(row: &mut [T], m: T) -> f64 {
    let mut sum = 0.0f64;
    for x in row.iter_mut() {
        *x = (*x - m).exp();
        sum += x.to_f64();
    }
    sum
}

/// out[2i] = out[2i + 1] = src[i]. out: (2 * src.len(),)
pub fn double_row<T: Element>(out: &mut [T], src: &[T]) {
    assert_eq!(out.len(), 2 * src.len());
    for (o, &v) in out.chunks_exact_mut(2).zip(src) {
        o[0] = v;
        o[1] = v;
    }
}
