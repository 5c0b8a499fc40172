//! x86-64 code outside the generic [`super::simd`] kernels: the bf16 dot-product peak
//! microbenchmark (avx512_bf16), which has no counterpart on the other vector sets.

use std::arch::x86_64::*;

/// Independent `vdpbf16ps` chains (as many as the f32 FMA benchmark's).
pub const CHAINS: usize = 12;

/// Proof that the CPU runs AVX-512F and AVX512_BF16.
#[derive(Clone, Copy, Debug)]
pub struct Bf16(());

impl Bf16 {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")).then_some(Bf16(()))
    }
}

/// `iters` rounds of [`CHAINS`] independent `vdpbf16ps` chains; returns a value depending on all.
pub fn dpbf16_chains(_t: Bf16, iters: u64) -> f32 {
    // SAFETY: the token exists only if the CPU has AVX-512F and AVX512_BF16.
    unsafe { dpbf16_impl(iters) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dpbf16_impl(iters: u64) -> f32 {
    let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.999), _mm512_set1_ps(0.999));
    let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-7), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_dpbf16_ps(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for x in acc {
        s = _mm512_add_ps(s, x);
    }
    _mm512_reduce_add_ps(s)
}
