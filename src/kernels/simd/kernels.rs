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
        // The activation and the modulation are chosen outside the loops (const parameters),
        // so each loop body is straight-line vector code.
        match (act, modulation) {
            (Act::Silu, None) => norm_all::<S, SILU>(s, buf, a, b, None),
            (Act::Silu, m) => norm_all::<S, SILU>(s, buf, a, b, m),
            (Act::Relu, None) => norm_all::<S, RELU>(s, buf, a, b, None),
            (Act::Relu, m) => norm_all::<S, RELU>(s, buf, a, b, m),
            (_, m) => {
                norm_all::<S, IDENTITY>(s, buf, a, b, m);
                if act != Act::Identity {
                    // GELU and Mish per element, as the reference computes them.
                    buf.iter_mut().for_each(|v| *v = act.apply(*v));
                }
            }
        }
    }
}

const IDENTITY: u8 = 0;
const SILU: u8 = 1;
const RELU: u8 = 2;

/// The whole buffer: vectors of S, then the tail on [`Lane1`].
#[inline(always)]
fn norm_all<S: Simd, const ACT: u8>(s: S, buf: &mut [f32], a: f32, b: f32, m: Option<(&[f32], &[f32])>) {
    let body = buf.len() / S::LANES * S::LANES;
    let (head, tail) = buf.split_at_mut(body);
    match m {
        None => {
            norm_span::<S, ACT>(s, head, a, b);
            norm_span::<Lane1, ACT>(Lane1, tail, a, b);
        }
        Some((scale, shift)) => {
            let ((sc, sc_t), (sh, sh_t)) = (scale.split_at(body), shift.split_at(body));
            norm_span_mod::<S, ACT>(s, head, a, b, sc, sh);
            norm_span_mod::<Lane1, ACT>(Lane1, tail, a, b, sc_t, sh_t);
        }
    }
}

#[inline(always)]
fn act_v<S: Simd, const ACT: u8>(s: S, y: S::V) -> S::V {
    match ACT {
        SILU => s.div(y, s.add(s.splat(1.0), exp(s, s.sub(s.splat(0.0), y)))),
        RELU => s.max(s.splat(0.0), y),
        _ => y,
    }
}

/// buf.len() is a multiple of S::LANES.
#[inline(always)]
fn norm_span<S: Simd, const ACT: u8>(s: S, buf: &mut [f32], a: f32, b: f32) {
    let (va, vb) = (s.splat(a), s.splat(b));
    for x in buf.chunks_exact_mut(S::LANES) {
        let y = s.fma(s.load(x), va, vb);
        s.store(x, act_v::<S, ACT>(s, y));
    }
}

/// buf, scale, shift: the same length, a multiple of S::LANES.
#[inline(always)]
fn norm_span_mod<S: Simd, const ACT: u8>(
    s: S,
    buf: &mut [f32],
    a: f32,
    b: f32,
    scale: &[f32],
    shift: &[f32],
) {
    let (va, vb) = (s.splat(a), s.splat(b));
    let lanes =
        buf.chunks_exact_mut(S::LANES).zip(scale.chunks_exact(S::LANES)).zip(shift.chunks_exact(S::LANES));
    for ((x, k), h) in lanes {
        let y = s.fma(s.load(x), va, vb);
        let y = s.fma(y, s.load(k), s.load(h));
        s.store(x, act_v::<S, ACT>(s, y));
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
