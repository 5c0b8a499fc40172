//! Tiled single-head attention with an online softmax (flash-attention style), for one tile of
//! query tokens of one frame; twin of [`super::reference::attention`].
//!
//! For each key tile: S = (Q_tile^T K_tile) * scale (the scale applied after the product, as
//! upstream's decoder attention does), then the running row maximum m, the running sum l and
//! the output accumulator are rescaled by exp(m_old - m_new) and updated with exp(S - m_new) V^T.
//! Memory is O(TILE_Q * TILE_K + TILE_Q * c) per task, never O(tokens^2).
//! Reference: Milakov & Gimelshein, "Online normalizer calculation for softmax", 2018.

use super::Float;
use super::gemm::{Mat, Par, gemm};
pub use super::params::AttentionParams;

/// Query tokens per task.
pub const TILE_Q: usize = 64;
/// Key tokens per online-softmax step.
pub const TILE_K: usize = 512;

/// out: (tq, c) token-major, the attention output of query tokens `i0 .. i0 + tq`;
/// q, k, v: the frame's (c, n_tokens) matrices with channel stride `p.ch_stride`.
pub fn attention_tile<T: Float>(out: &mut [T], q: &[T], k: &[T], v: &[T], i0: usize, p: &AttentionParams) {
    let c = p.c;
    let tq = out.len() / c;
    debug_assert_eq!(out.len(), tq * c);
    let scale = T::from_f64(p.scale);
    let mut s = vec![T::ZERO; tq * TILE_K.min(p.n_tokens)];
    let mut m = vec![f64::NEG_INFINITY; tq];
    let mut l = vec![0.0f64; tq];
    out.fill(T::ZERO);
    let mut j0 = 0;
    while j0 < p.n_tokens {
        let tk = TILE_K.min(p.n_tokens - j0);
        let s = &mut s[..tq * tk];
        let lhs = Mat { data: &q[i0..], rs: 1, cs: p.ch_stride };
        let rhs = Mat { data: &k[j0..], rs: p.ch_stride, cs: 1 };
        gemm(tq, tk, c, s, tk, 1, false, lhs, rhs, Par::Seq);
        for (i, row) in s.chunks_exact_mut(tk).enumerate() {
            let row_max = T::scale_max(row, scale);
            let m_new = m[i].max(row_max);
            let corr = if m[i] == f64::NEG_INFINITY { 0.0 } else { (m[i] - m_new).exp() };
            let sum = T::exp_sum(row, T::from_f64(m_new));
            l[i] = l[i] * corr + sum;
            m[i] = m_new;
            if corr != 1.0 {
                let corr = T::from_f64(corr);
                out[i * c..(i + 1) * c].iter_mut().for_each(|o| *o = *o * corr);
            }
        }
        let lhs = Mat { data: s, rs: tk, cs: 1 };
        let rhs = Mat { data: &v[j0..], rs: 1, cs: p.ch_stride };
        gemm(tq, c, tk, out, c, 1, true, lhs, rhs, Par::Seq);
        j0 += tk;
    }
    for (i, row) in out.chunks_exact_mut(c).enumerate() {
        let inv = T::from_f64(1.0 / l[i]);
        row.iter_mut().for_each(|o| *o = *o * inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use proptest::prelude::*;

    /// Past two key tiles (TILE_K = 512) natively; under Miri, which interprets every flop,
    /// past two query tiles only (the key-tile rescaling is then exercised natively alone).
    const MAX_TOKENS: usize = if cfg!(miri) { 140 } else { 1100 };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(32)))]
        #[test]
        fn attention_tile_matches_reference(c in 1usize..9, n_tokens in 1usize..MAX_TOKENS, seed in any::<u32>(), mag in 0.1f64..6.0) {
            let ch_stride = n_tokens + 3;
            let len = c * ch_stride;
            let make = |o: u32| -> Vec<f64> { (0..len).map(|i| (i as f64 * 0.7 + (seed ^ o) as f64 * 0.013).sin() * mag).collect() };
            let (q, k, v) = (make(1), make(2), make(3));
            let p = AttentionParams { c, n_tokens, ch_stride, scale: (c as f64).powf(-0.5) };
            let mut want = vec![0.0f64; n_tokens * c];
            reference::attention(&mut want, &q, &k, &v, &p);
            let mut i0 = 0;
            while i0 < n_tokens {
                let tq = TILE_Q.min(n_tokens - i0);
                let mut got = vec![0.0f64; tq * c];
                attention_tile(&mut got, &q, &k, &v, i0, &p);
                for (a, b) in got.iter().zip(&want[i0 * c..(i0 + tq) * c]) {
                    prop_assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{} vs {}", a, b);
                }
                i0 += tq;
            }
        }
    }

    #[test]
    fn attention_rows_are_convex_combinations_of_values() {
        // With v constant per channel, softmax weights summing to 1 return that constant.
        let (c, n) = (3, 700);
        let q: Vec<f32> = (0..c * n).map(|i| (i as f32 * 0.1).sin() * 4.0).collect();
        let k: Vec<f32> = (0..c * n).map(|i| (i as f32 * 0.3).cos() * 4.0).collect();
        let v: Vec<f32> = (0..c * n).map(|i| (i / n) as f32 + 0.5).collect();
        let p = AttentionParams { c, n_tokens: n, ch_stride: n, scale: 0.5 };
        let mut out = vec![0.0f32; TILE_Q * c];
        attention_tile(&mut out, &q, &k, &v, 0, &p);
        for row in out.chunks(c) {
            for (ch, &o) in row.iter().enumerate() {
                assert!((o - (ch as f32 + 0.5)).abs() < 1e-5);
            }
        }
    }
}
