//! [`Simd`] on x86-64: AVX2 + FMA (8 lanes) and AVX-512F (16 lanes).
//!
//! No closures in these methods or in the generic kernels: a closure does not inherit the
//! dispatcher's `#[target_feature]`, so the intrinsics in it would be called out of line.
//! Every method is a thin `#[inline(always)]` wrapper of one intrinsic (or a few); the tokens
//! are created only by `detect()` after the run-time feature check, so calling the intrinsics
//! through them is sound. Loads and stores go through slices indexed first (bounds checked),
//! then an unaligned access of exactly the checked range.

use super::{Kernel, Simd};
use std::arch::x86_64::*;

/// Proof that the CPU runs AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2(()))
    }
}

/// Proof that the CPU runs AVX-512F (and AVX2 + FMA, which the tails and sums use).
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && Avx2::detect().is_some()).then_some(Avx512(()))
    }
}

/// Runs `k` compiled for AVX2 + FMA.
#[inline]
pub fn run_avx2<K: Kernel>(t: Avx2, k: K) -> K::Output {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn go<K: Kernel>(t: Avx2, k: K) -> K::Output {
        k.run(t)
    }
    // SAFETY: the token exists only if the CPU has AVX2 and FMA.
    unsafe { go(t, k) }
}

/// Runs `k` compiled for AVX-512F.
#[inline]
pub fn run_avx512<K: Kernel>(t: Avx512, k: K) -> K::Output {
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn go<K: Kernel>(t: Avx512, k: K) -> K::Output {
        k.run(t)
    }
    // SAFETY: the token exists only if the CPU has AVX-512F, AVX2 and FMA.
    unsafe { go(t, k) }
}

/// `unsafe { $e }` for an intrinsic call inside a token method.
macro_rules! token {
    ($e:expr) => {
        // SAFETY: the method's receiver is a token that `detect()` created only after checking
        // that the CPU has the instruction set; pointer arguments come from slices whose length
        // was checked by indexing just before.
        unsafe { $e }
    };
}

impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;
    type D = __m256d;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        token!(_mm256_set1_ps(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let s = &s[..8];
        token!(_mm256_loadu_ps(s.as_ptr()))
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: __m256) {
        let d = &mut d[..8];
        token!(_mm256_storeu_ps(d.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn load_deinterleaved(self, s: &[f32]) -> (__m256, __m256) {
        let s = &s[..16];
        token!({
            let a = _mm256_loadu_ps(s.as_ptr()); // 0..8
            let b = _mm256_loadu_ps(s.as_ptr().add(8)); // 8..16
            // Within 128-bit halves: (a0 a2 b0 b2 | a4 a6 b4 b6), then restore the order of
            // the 64-bit groups.
            let ev = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let od = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(ev))),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(od))),
            )
        })
    }
    #[inline(always)]
    fn store_interleaved(self, d: &mut [f32], a: __m256, b: __m256) {
        let d = &mut d[..16];
        token!({
            let lo = _mm256_unpacklo_ps(a, b); // a0 b0 a1 b1 | a4 b4 a5 b5
            let hi = _mm256_unpackhi_ps(a, b); // a2 b2 a3 b3 | a6 b6 a7 b7
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_permute2f128_ps::<0x20>(lo, hi));
            _mm256_storeu_ps(d.as_mut_ptr().add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
        })
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        token!(_mm256_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        token!(_mm256_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        token!(_mm256_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        token!(_mm256_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        token!(_mm256_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn fnma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        token!(_mm256_fnmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // maxps returns its second operand when either is NaN: the contract.
        token!(_mm256_max_ps(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        token!(_mm256_min_ps(a, b))
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        token!(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        token!(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127)
        ))))
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        let mut l = [0.0f32; 8];
        self.store(&mut l, a);
        l.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }
    #[inline(always)]
    fn zero_d(self) -> __m256d {
        token!(_mm256_setzero_pd())
    }
    #[inline(always)]
    fn add_widened(self, acc: (__m256d, __m256d), v: __m256) -> (__m256d, __m256d) {
        token!({
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
            (_mm256_add_pd(acc.0, lo), _mm256_add_pd(acc.1, hi))
        })
    }
    #[inline(always)]
    fn add_sq_dev_widened(self, acc: (__m256d, __m256d), v: __m256, mean: f64) -> (__m256d, __m256d) {
        token!({
            let m = _mm256_set1_pd(mean);
            let lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), m);
            let hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)), m);
            (_mm256_fmadd_pd(lo, lo, acc.0), _mm256_fmadd_pd(hi, hi, acc.1))
        })
    }
    #[inline(always)]
    fn reduce_d(self, a: __m256d) -> f64 {
        let mut l = [0.0f64; 4];
        token!(_mm256_storeu_pd(l.as_mut_ptr(), a));
        (l[0] + l[1]) + (l[2] + l[3])
    }
}

impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;
    type D = __m512d;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        token!(_mm512_set1_ps(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        let s = &s[..16];
        token!(_mm512_loadu_ps(s.as_ptr()))
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: __m512) {
        let d = &mut d[..16];
        token!(_mm512_storeu_ps(d.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn load_deinterleaved(self, s: &[f32]) -> (__m512, __m512) {
        let s = &s[..32];
        token!({
            let a = _mm512_loadu_ps(s.as_ptr());
            let b = _mm512_loadu_ps(s.as_ptr().add(16));
            // permutex2var: index i < 16 reads a[i], 16 + i reads b[i].
            let ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (_mm512_permutex2var_ps(a, ev, b), _mm512_permutex2var_ps(a, od, b))
        })
    }
    #[inline(always)]
    fn store_interleaved(self, d: &mut [f32], a: __m512, b: __m512) {
        let d = &mut d[..32];
        token!({
            let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            _mm512_storeu_ps(d.as_mut_ptr(), _mm512_permutex2var_ps(a, lo, b));
            _mm512_storeu_ps(d.as_mut_ptr().add(16), _mm512_permutex2var_ps(a, hi, b));
        })
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        token!(_mm512_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        token!(_mm512_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        token!(_mm512_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        token!(_mm512_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        token!(_mm512_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn fnma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        token!(_mm512_fnmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // vmaxps returns its second operand when either is NaN, as the 256-bit form.
        token!(_mm512_max_ps(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        token!(_mm512_min_ps(a, b))
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        // imm 0x08: round to nearest even, scale 0, exceptions suppressed.
        token!(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        token!(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127)
        ))))
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        let mut l = [0.0f32; 16];
        self.store(&mut l, a);
        l.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }
    #[inline(always)]
    fn zero_d(self) -> __m512d {
        token!(_mm512_setzero_pd())
    }
    #[inline(always)]
    fn add_widened(self, acc: (__m512d, __m512d), v: __m512) -> (__m512d, __m512d) {
        token!({
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
            (_mm512_add_pd(acc.0, lo), _mm512_add_pd(acc.1, hi))
        })
    }
    #[inline(always)]
    fn add_sq_dev_widened(self, acc: (__m512d, __m512d), v: __m512, mean: f64) -> (__m512d, __m512d) {
        token!({
            let m = _mm512_set1_pd(mean);
            let lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), m);
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
            let hi = _mm512_sub_pd(hi, m);
            (_mm512_fmadd_pd(lo, lo, acc.0), _mm512_fmadd_pd(hi, hi, acc.1))
        })
    }
    #[inline(always)]
    fn reduce_d(self, a: __m512d) -> f64 {
        let mut l = [0.0f64; 8];
        token!(_mm512_storeu_pd(l.as_mut_ptr(), a));
        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    }
}
