//! AVX2 + FMA versions of the f32 element-wise kernels; twins of those in [`super::reference`].
//!
//! The public functions are safe: they take an [`Avx2Fma`] token, which only
//! [`Avx2Fma::detect`] can create, so the `#[target_feature]` code runs only on CPUs that have
//! the features. Layout: plain slices, no alignment assumed (unaligned loads and stores).
//! exp: Cephes-style range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r,
//! scaled by 2^n through the exponent bits; relative error about 1 ulp on [-87.3, 88.7].

use super::Act;
use std::arch::x86_64::*;

/// Proof that the running CPU supports AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub struct Avx2Fma(());

impl Avx2Fma {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }
}

/// Sum of `x` in f64 (four f64x4 accumulators).
pub fn sum_f64(_tok: Avx2Fma, x: &[f32]) -> f64 {
    // SAFETY: the token proves AVX2 and FMA are available.
    unsafe { sum_impl(x, None) }
}

/// Sum of `(x - mean)^2` in f64.
pub fn sum_sq_dev_f64(_tok: Avx2Fma, x: &[f32], mean: f64) -> f64 {
    // SAFETY: the token proves AVX2 and FMA are available.
    unsafe { sum_impl(x, Some(mean)) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn sum_impl(x: &[f32], mean: Option<f64>) -> f64 {
    let mut acc = [_mm256_setzero_pd(); 4];
    let m = _mm256_set1_pd(mean.unwrap_or(0.0));
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        // SAFETY: `c` has exactly 16 f32, so both 8-lane loads are in bounds.
        let (a, b) = unsafe { (_mm256_loadu_ps(c.as_ptr()), _mm256_loadu_ps(c.as_ptr().add(8))) };
        let parts = [
            _mm256_cvtps_pd(_mm256_castps256_ps128(a)),
            _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
            _mm256_cvtps_pd(_mm256_castps256_ps128(b)),
            _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)),
        ];
        for (acc, v) in acc.iter_mut().zip(parts) {
            *acc = match mean {
                None => _mm256_add_pd(*acc, v),
                Some(_) => {
                    let d = _mm256_sub_pd(v, m);
                    _mm256_fmadd_pd(d, d, *acc)
                }
            };
        }
    }
    let total = _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
    let mut lanes = [0.0f64; 4];
    // SAFETY: `lanes` holds 4 f64, the width of one unaligned store.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), total) };
    let mut s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for &v in tail {
        let v = v as f64;
        s += match mean {
            None => v,
            Some(mu) => (v - mu) * (v - mu),
        };
    }
    s
}

/// e^x for 8 lanes; NaN in, NaN out.
#[target_feature(enable = "avx2,fma")]
fn exp_ps(x: __m256) -> __m256 {
    // Operand order keeps NaN: min/max return their second operand when either is NaN.
    let x = _mm256_max_ps(_mm256_set1_ps(-87.3), _mm256_min_ps(_mm256_set1_ps(88.7), x));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let e = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // 2^n built in the exponent field; n is in [-126, 128] after the clamp, and 2^128 is
    // avoided because e(r) <= sqrt(2) keeps the product finite only up to 88.7.
    let n_i = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32(n_i, 1);
    let n2 = _mm256_sub_epi32(n_i, n1);
    let pow =
        |k: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
    _mm256_mul_ps(_mm256_mul_ps(e, pow(n1)), pow(n2))
}

/// See [`super::reference::norm_apply`].
pub fn norm_apply(
    _tok: Avx2Fma,
    buf: &mut [f32],
    a: f32,
    b: f32,
    modulation: Option<(&[f32], &[f32])>,
    act: Act,
) {
    if let Some((scale, shift)) = modulation {
        assert!(scale.len() == buf.len() && shift.len() == buf.len());
    }
    // GELU and Mish (diffusers configs only) have no vector form here: the affine part runs
    // vectorised, the activation per element exactly as the reference computes it.
    let vector_act = match act {
        Act::Gelu | Act::Mish => Act::Identity,
        a => a,
    };
    // SAFETY: the token proves AVX2 and FMA are available; lengths checked above.
    unsafe { norm_apply_impl(buf, a, b, modulation, vector_act) }
    if vector_act != act {
        buf.iter_mut().for_each(|v| *v = act.apply(*v));
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn norm_apply_impl(buf: &mut [f32], a: f32, b: f32, modulation: Option<(&[f32], &[f32])>, act: Act) {
    let (va, vb, one) = (_mm256_set1_ps(a), _mm256_set1_ps(b), _mm256_set1_ps(1.0));
    let zero = _mm256_setzero_ps();
    let n8 = buf.len() / 8 * 8;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n8 <= buf.len(), and scale/shift have buf's length (checked by the caller).
        unsafe {
            let mut y = _mm256_fmadd_ps(_mm256_loadu_ps(buf.as_ptr().add(i)), va, vb);
            if let Some((scale, shift)) = modulation {
                y = _mm256_fmadd_ps(
                    y,
                    _mm256_loadu_ps(scale.as_ptr().add(i)),
                    _mm256_loadu_ps(shift.as_ptr().add(i)),
                );
            }
            match act {
                Act::Silu => {
                    let e = exp_ps(_mm256_sub_ps(zero, y));
                    y = _mm256_div_ps(y, _mm256_add_ps(one, e));
                }
                // maxps returns its second operand when either is NaN: NaN passes, as in PyTorch.
                Act::Relu => y = _mm256_max_ps(zero, y),
                _ => {}
            }
            _mm256_storeu_ps(buf.as_mut_ptr().add(i), y);
        }
        i += 8;
    }
    let tail_mod = modulation.map(|(s, h)| (&s[n8..], &h[n8..]));
    super::reference::norm_apply(&mut buf[n8..], a, b, tail_mod, act);
}

/// Runs `iters` rounds of 12 independent 8-lane FMA chains (192 FLOP per round) and returns a
/// value that depends on all of them; a peak-FLOP/s microbenchmark.
pub fn fma_chains(_tok: Avx2Fma, iters: u64) -> f32 {
    // SAFETY: the token proves AVX2 and FMA are available.
    unsafe { fma_chains_impl(iters) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_impl(iters: u64) -> f32 {
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 f32, the width of one unaligned store.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_ps_matches_std_exp() {
        let Some(_tok) = Avx2Fma::detect() else {
            return;
        };
        let xs: Vec<f32> = (-980..=990).map(|i| i as f32 * 0.0887).collect();
        for c in xs.chunks_exact(8) {
            let mut out = [0.0f32; 8];
            // SAFETY: detect() succeeded; `c` and `out` hold 8 f32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp_ps(_mm256_loadu_ps(c.as_ptr()))) };
            for (x, e) in c.iter().zip(out) {
                // f64 reference: std's f32 exp is itself a few ulp off under Miri, which perturbs
                // float library results on purpose.
                let want = (*x as f64).exp();
                let err = (e as f64 - want).abs();
                assert!(err <= 3.0 * f32::EPSILON as f64 * want, "exp({x}) = {e}, want {want}");
            }
        }
    }

    #[test]
    fn exp_ps_propagates_nan_and_saturates() {
        let Some(_tok) = Avx2Fma::detect() else {
            return;
        };
        let xs = [f32::NAN, -200.0, 200.0, 0.0, -0.0, 88.0, -87.0, 1.0];
        let mut out = [0.0f32; 8];
        // SAFETY: detect() succeeded; arrays hold 8 f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp_ps(_mm256_loadu_ps(xs.as_ptr()))) };
        assert!(out[0].is_nan());
        assert!(out[1] < 1e-37 && out[1] >= 0.0);
        assert!(out[2].is_finite() && out[2] > 1e38);
        assert_eq!(out[3], 1.0);
    }
}
