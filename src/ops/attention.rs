//! Per-frame single-head spatial attention on tensors.

use crate::error::Result;
use crate::kernels::Float;
use crate::kernels::attention::{AttentionParams, TILE_Q, attention_tile};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// softmax(q^T k * c^-0.5) applied to v, independently for every frame of every sample; the
/// tokens of a frame are its h*w positions in row-major order.
/// q, k, v: (n, c, d, h, w) -> (n, c, d, h, w)
pub fn frame_attention<T: Float>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> Result<Tensor<T>> {
    let s = q.shape();
    k.expect_shape("attention k", s)?;
    v.expect_shape("attention v", s)?;
    let (c, n_tok, plane) = (s.c, s.frame_len(), s.plane_len());
    let p = AttentionParams { c, n_tokens: n_tok, ch_stride: plane, scale: (c as f64).powf(-0.5) };
    // Token-major result (n, d, tokens, c), cut into disjoint (frame, query tile) pieces.
    let mut tok = Tensor::<T>::zeros(s)?.into_vec();
    let mut tasks = Vec::new();
    for (f, frame) in tok.chunks_mut(n_tok * c).enumerate() {
        for (t, tile) in frame.chunks_mut(TILE_Q * c).enumerate() {
            tasks.push((f, t * TILE_Q, tile));
        }
    }
    let sample = s.sample_len();
    tasks.into_par_iter().for_each(|(f, i0, tile)| {
        let (b, t) = (f / s.d, f % s.d);
        let base = b * sample + t * n_tok;
        let end = base + (c - 1) * plane + n_tok;
        attention_tile(tile, &q.data()[base..end], &k.data()[base..end], &v.data()[base..end], i0, &p);
    });
    // Back to (n, c, d, tokens).
    let mut out = Tensor::zeros(s)?;
    out.data_mut().par_chunks_mut(plane).enumerate().for_each(|(idx, dst)| {
        let (b, ch) = (idx / c, idx % c);
        for t in 0..s.d {
            let src = &tok[(b * s.d + t) * n_tok * c..][..n_tok * c];
            for (i, o) in dst[t * n_tok..(t + 1) * n_tok].iter_mut().enumerate() {
                *o = src[i * c + ch];
            }
        }
    });
    Ok(out)
}
