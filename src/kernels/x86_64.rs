//! x86-64 code outside the generic [`super::simd`] kernels, for AVX512_BF16 only: the
//! channel-pair panel product with `vdpbf16ps` ([`super::bf16_panels`]) and the bf16
//! dot-product peak microbenchmark.

use super::winograd_panels::{NR, PanelArgs, for_each_micro_tile};
use std::arch::x86_64::*;

/// Tiles per micro-tile: two vectors of 16 f32 lanes (`bf16_panels::MR_DPBF16`), so that
/// 2 x NR = 12 independent accumulators hide the instruction's latency.
pub const MR: usize = 32;

/// Independent `vdpbf16ps` chains (as many as the f32 FMA benchmark's).
pub const CHAINS: usize = 12;

/// Proof that the CPU runs AVX-512F and AVX512_BF16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bf16(());

impl Bf16 {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")).then_some(Bf16(()))
    }
}

/// m = the panel product (bf16_panels' order): `p` checked by the caller (mr = [`MR`]),
/// `p.c_in` pairs.
pub fn panel_product(t: Bf16, p: PanelArgs<'_, f32>, kc_pairs: usize, mc_blocks: usize) {
    assert_eq!(p.mr, MR, "vdpbf16ps panels are {MR} tiles wide");
    // SAFETY: the token exists only if the CPU has AVX-512F and AVX512_BF16.
    unsafe { panel_product_impl(t, p, kc_pairs, mc_blocks) }
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn panel_product_impl(_: Bf16, p: PanelArgs<'_, f32>, kc_pairs: usize, mc_blocks: usize) {
    // The closure inherits this function's target features, so it calls micro_tile safely.
    for_each_micro_tile(p, kc_pairs, mc_blocks, |a, b, c, ld, rows, add| micro_tile(a, b, c, ld, rows, add));
}

/// The 16 f32 lanes of x as 32 bf16 values (lane i: bf16 2i in its low half, 2i + 1 high).
#[target_feature(enable = "avx512f,avx512bf16")]
fn pairs(x: __m512) -> __m512bh {
    // SAFETY: both are 64-byte vectors of plain bits; every bit pattern is a valid value.
    unsafe { std::mem::transmute::<__m512, __m512bh>(x) }
}

/// c[r * ld + i] (+)= the vdpbf16ps sum over the pairs k of a[k * MR + i] . b[k * NR + r],
/// r < rows: the sum from zero, then added to the stored one when `add`, else stored. Rows
/// past c_out in a last weight panel are not computed.
#[target_feature(enable = "avx512f,avx512bf16")]
fn micro_tile(a: &[f32], b: &[f32], c: &mut [f32], ld: usize, rows: usize, add: bool) {
    match rows {
        NR => micro_rows::<NR>(a, b, c, ld, add),
        5 => micro_rows::<5>(a, b, c, ld, add),
        4 => micro_rows::<4>(a, b, c, ld, add),
        3 => micro_rows::<3>(a, b, c, ld, add),
        2 => micro_rows::<2>(a, b, c, ld, add),
        1 => micro_rows::<1>(a, b, c, ld, add),
        _ => unreachable!("a weight panel of {rows} rows"),
    }
}

/// [`micro_tile`] for R <= NR rows: the first R weight pairs of every panel row.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
fn micro_rows<const R: usize>(a: &[f32], b: &[f32], c: &mut [f32], ld: usize, add: bool) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let ak: &[f32; MR] = ak.try_into().unwrap();
        // SAFETY: ak holds MR = 32 values: two 16-lane loads.
        let (a0, a1) = unsafe { (_mm512_loadu_ps(ak.as_ptr()), _mm512_loadu_ps(ak.as_ptr().add(16))) };
        let (a0, a1) = (pairs(a0), pairs(a1));
        for (ar, &w) in acc.iter_mut().zip(bk) {
            let w = pairs(_mm512_set1_ps(w));
            *ar = [_mm512_dpbf16_ps(ar[0], a0, w), _mm512_dpbf16_ps(ar[1], a1, w)];
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        let cr: &mut [f32; MR] = (&mut c[r * ld..][..MR]).try_into().unwrap();
        let p = cr.as_mut_ptr();
        // SAFETY: cr holds 32 values: two 16-lane loads and stores.
        unsafe {
            let (v0, v1) = match add {
                true => (
                    _mm512_add_ps(_mm512_loadu_ps(p), ar[0]),
                    _mm512_add_ps(_mm512_loadu_ps(p.add(16)), ar[1]),
                ),
                false => (ar[0], ar[1]),
            };
            _mm512_storeu_ps(p, v0);
            _mm512_storeu_ps(p.add(16), v1);
        }
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
