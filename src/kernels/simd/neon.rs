//! [`Simd`] on aarch64: NEON (Advanced SIMD), 4 lanes. NEON is part of the aarch64 baseline
//! (every aarch64-unknown-linux-gnu target has it), so the token is free to create.

use super::Simd;
use std::arch::aarch64::*;

/// NEON; always present on aarch64.
#[derive(Clone, Copy, Debug)]
pub struct Neon(());

impl Neon {
    pub fn new() -> Self {
        Neon(())
    }
}

impl Default for Neon {
    fn default() -> Self {
        Self::new()
    }
}

/// `unsafe { $e }` for an intrinsic call inside a token method.
macro_rules! token {
    ($e:expr) => {
        // SAFETY: NEON is in the aarch64 baseline; pointer arguments come from slices whose
        // length was checked by indexing just before.
        unsafe { $e }
    };
}

impl Simd for Neon {
    const LANES: usize = 4;
    type V = float32x4_t;
    type D = float64x2_t;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        token!(vdupq_n_f32(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> float32x4_t {
        let s = &s[..4];
        token!(vld1q_f32(s.as_ptr()))
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: float32x4_t) {
        let d = &mut d[..4];
        token!(vst1q_f32(d.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn load_deinterleaved(self, s: &[f32]) -> (float32x4_t, float32x4_t) {
        let s = &s[..8];
        let p = token!(vld2q_f32(s.as_ptr()));
        (p.0, p.1)
    }
    #[inline(always)]
    fn store_interleaved(self, d: &mut [f32], a: float32x4_t, b: float32x4_t) {
        let d = &mut d[..8];
        token!(vst2q_f32(d.as_mut_ptr(), float32x4x2_t(a, b)))
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        token!(vaddq_f32(a, b))
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        token!(vsubq_f32(a, b))
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        token!(vmulq_f32(a, b))
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        token!(vdivq_f32(a, b))
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(c, a, b) = c + a * b, fused.
        token!(vfmaq_f32(c, a, b))
    }
    #[inline(always)]
    fn fnma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        token!(vfmsq_f32(c, a, b))
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // FMAX returns NaN when either operand is NaN: within the contract.
        token!(vmaxq_f32(a, b))
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        token!(vminq_f32(a, b))
    }
    #[inline(always)]
    fn round(self, a: float32x4_t) -> float32x4_t {
        token!(vrndnq_f32(a))
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        token!(vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)))))
    }
    #[inline(always)]
    fn reduce_max(self, a: float32x4_t) -> f32 {
        // FMAXNMV ignores NaN lanes unless all are NaN.
        token!(vmaxnmvq_f32(a))
    }
    #[inline(always)]
    fn zero_d(self) -> float64x2_t {
        token!(vdupq_n_f64(0.0))
    }
    #[inline(always)]
    fn add_widened(self, acc: (float64x2_t, float64x2_t), v: float32x4_t) -> (float64x2_t, float64x2_t) {
        token!({
            let lo = vcvt_f64_f32(vget_low_f32(v));
            let hi = vcvt_high_f64_f32(v);
            (vaddq_f64(acc.0, lo), vaddq_f64(acc.1, hi))
        })
    }
    #[inline(always)]
    fn add_sq_dev_widened(
        self,
        acc: (float64x2_t, float64x2_t),
        v: float32x4_t,
        mean: f64,
    ) -> (float64x2_t, float64x2_t) {
        token!({
            let m = vdupq_n_f64(mean);
            let lo = vsubq_f64(vcvt_f64_f32(vget_low_f32(v)), m);
            let hi = vsubq_f64(vcvt_high_f64_f32(v), m);
            (vfmaq_f64(acc.0, lo, lo), vfmaq_f64(acc.1, hi, hi))
        })
    }
    #[inline(always)]
    fn reduce_d(self, a: float64x2_t) -> f64 {
        token!(vgetq_lane_f64::<0>(a) + vgetq_lane_f64::<1>(a))
    }
}
