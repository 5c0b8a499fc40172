//! The element-wise f32 kernels, written once over [`Simd`]: the fused norm + modulation +
//! activation, f64 sums for group statistics, the softmax row of attention, and the 2x nearest
//! gather along a row. Twins: [`crate::kernels::reference`] and the plain loops they replace;
//! each loop's tail runs the same code on [`Lane1`].

use super::{Kernel, Lane1, Simd, exp};
use crate::kernels::Act;

/// `buf = act((buf * a + b) * scale + shift)` (see [`crate::kernels::reference::norm_apply`]);
/// SiLU and ReLU in vector form, GELU and Mish per element as the reference computes them.
pub struct NormApply<'a> {
    pub buf: &'a mut [f32],
    pub a: f32,
    pub b: f32,
    /// (scale, shift), each of `buf`'s length.
    pub modulation: Option<(&'a [f32], &'a [f32])>,
    pub act: Act,
}

impl Kernel for NormApply<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let NormApply { buf, a, b, modulation, act } = self;
        if let Some((scale, shift)) = modulation {
            assert!(scale.len() == buf.len() && shift.len() == buf.len());
        }
        let vector_act = match act {
            Act::Gelu | Act::Mish => Act::Identity,
            a => a,
        };
        let body = buf.len() / S::LANES * S::LANES;
        norm_span(s, &mut buf[..body], a, b, modulation, vector_act, 0);
        norm_span(Lane1, &mut buf[body..], a, b, modulation, vector_act, body);
        if vector_act != act {
            buf.iter_mut().for_each(|v| *v = act.apply(*v));
        }
    }
}

/// buf.len() is a multiple of S::LANES; modulation slices are indexed from `off`.
#[inline(always)]
fn norm_span<S: Simd>(
    s: S,
    buf: &mut [f32],
    a: f32,
    b: f32,
    modulation: Option<(&[f32], &[f32])>,
    act: Act,
    off: usize,
) {
    let (va, vb, zero, one) = (s.splat(a), s.splat(b), s.splat(0.0), s.splat(1.0));
    for (i, chunk) in buf.chunks_exact_mut(S::LANES).enumerate() {
        let mut y = s.fma(s.load(chunk), va, vb);
        if let Some((scale, shift)) = modulation {
            let j = off + i * S::LANES;
            y = s.fma(y, s.load(&scale[j..]), s.load(&shift[j..]));
        }
        y = match act {
            Act::Silu => s.div(y, s.add(one, exp(s, s.sub(zero, y)))),
            Act::Relu => s.max(zero, y),
            _ => y,
        };
        s.store(chunk, y);
    }
}

/// Sum of `x` (or of `(x - mean)^2` with `mean`) accumulated in f64.
pub struct SumF64<'a> {
    pub x: &'a [f32],
    pub mean: Option<f64>,
}

impl Kernel for SumF64<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        let step = 2 * S::LANES;
        let body = self.x.len() / step * step;
        let z = (s.zero_d(), s.zero_d());
        let (mut p, mut q) = (z, z);
        for c in self.x[..body].chunks_exact(step) {
            let (u, v) = (s.load(c), s.load(&c[S::LANES..]));
            match self.mean {
                None => {
                    p = s.add_widened(p, u);
                    q = s.add_widened(q, v);
                }
                Some(m) => {
                    p = s.add_sq_dev_widened(p, u, m);
                    q = s.add_sq_dev_widened(q, v, m);
                }
            }
        }
        let mut total = (s.reduce_d(p.0) + s.reduce_d(p.1)) + (s.reduce_d(q.0) + s.reduce_d(q.1));
        for &v in &self.x[body..] {
            let v = v as f64;
            total += match self.mean {
                None => v,
                Some(m) => (v - m) * (v - m),
            };
        }
        total
    }
}

/// `row *= scale`; returns the largest value of the scaled row (NaN ignored).
pub struct ScaleMax<'a> {
    pub row: &'a mut [f32],
    pub scale: f32,
}

impl Kernel for ScaleMax<'_> {
    type Output = f32;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f32 {
        let body = self.row.len() / S::LANES * S::LANES;
        let (head, tail) = self.row.split_at_mut(body);
        let vs = s.splat(self.scale);
        let mut m = s.splat(f32::NEG_INFINITY);
        for c in head.chunks_exact_mut(S::LANES) {
            let y = s.mul(s.load(c), vs);
            s.store(c, y);
            m = s.max(y, m);
        }
        let mut best = s.reduce_max(m);
        for v in tail {
            *v *= self.scale;
            best = best.max(*v);
        }
        best
    }
}

/// `row = exp(row - m)`; returns the sum of the new row in f64.
pub struct ExpSum<'a> {
    pub row: &'a mut [f32],
    pub m: f32,
}

impl Kernel for ExpSum<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f64 {
        let body = self.row.len() / S::LANES * S::LANES;
        let (head, tail) = self.row.split_at_mut(body);
        let vm = s.splat(self.m);
        let mut acc = (s.zero_d(), s.zero_d());
        for c in head.chunks_exact_mut(S::LANES) {
            let e = exp(s, s.sub(s.load(c), vm));
            s.store(c, e);
            acc = s.add_widened(acc, e);
        }
        let mut sum = s.reduce_d(acc.0) + s.reduce_d(acc.1);
        let l = Lane1;
        for v in tail {
            *v = exp(l, *v - self.m);
            sum += *v as f64;
        }
        sum
    }
}

/// out[2i] = out[2i + 1] = src[i]: one row of a 2x nearest upsampling along w.
/// out: (2 * src.len(),)
pub struct DoubleRow<'a> {
    pub out: &'a mut [f32],
    pub src: &'a [f32],
}

impl Kernel for DoubleRow<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        assert_eq!(self.out.len(), 2 * self.src.len());
        let body = self.src.len() / S::LANES * S::LANES;
        for (o, c) in self.out[..2 * body].chunks_exact_mut(2 * S::LANES).zip(self.src.chunks_exact(S::LANES))
        {
            let v = s.load(c);
            s.store_interleaved(o, v, v);
        }
        for (o, &v) in self.out[2 * body..].chunks_exact_mut(2).zip(&self.src[body..]) {
            o[0] = v;
            o[1] = v;
        }
    }
}
