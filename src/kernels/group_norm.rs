//! Group-norm statistics and the fused normalise + modulate + SiLU pass.
//!
//! Numerics (decided here, once): mean and variance of a group are two passes accumulated in
//! f64 (the reductions reach 1e8 elements); variance is biased, as PyTorch's GroupNorm; eps is
//! inside the square root. The per-channel affine folds into `y = x * a + b` with
//! `a = gamma * rstd` and `b = beta - mean * a`, computed in f64 and rounded once.

use super::Float;

/// Mean and biased variance of one group, both in f64. `x`: the group's elements.
pub fn group_stats<T: Float>(x: &[T]) -> (f64, f64) {
    if x.is_empty() {
        return (0.0, 0.0);
    }
    let n = x.len() as f64;
    let mean = T::sum_f64(x) / n;
    let var = T::sum_sq_dev_f64(x, mean) / n;
    (mean, var)
}

/// The per-channel coefficients (a, b) of `y = x * a + b` for a channel with affine
/// (gamma, beta) in a group with (mean, var).
pub fn affine_coeffs<T: Float>(mean: f64, var: f64, eps: f64, gamma: T, beta: T) -> (T, T) {
    let rstd = 1.0 / (var + eps).sqrt();
    let a = gamma.to_f64() * rstd;
    (T::from_f64(a), T::from_f64(beta.to_f64() - mean * a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Act, reference};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(64)))]
        #[test]
        fn group_stats_fast_matches_reference(x in proptest::collection::vec(-100.0f32..100.0, 0..300)) {
            let (m, v) = group_stats(&x);
            let n = x.len().max(1) as f64;
            let rm = reference::sum_f64(&x) / n;
            let rv = reference::sum_sq_dev_f64(&x, rm) / n;
            prop_assert!((m - rm).abs() <= 1e-12 * (1.0 + rm.abs()));
            prop_assert!((v - rv).abs() <= 1e-12 * (1.0 + rv.abs()));
        }

        #[test]
        fn norm_apply_fast_matches_reference(
            x in proptest::collection::vec(-20.0f32..20.0, 0..100),
            a in -3.0f32..3.0, b in -3.0f32..3.0, modulate in any::<bool>(), act in prop_oneof![Just(Act::Identity), Just(Act::Silu), Just(Act::Relu), Just(Act::Gelu), Just(Act::Mish)]
        ) {
            let scale: Vec<f32> = x.iter().map(|v| 1.0 + 0.1 * v.sin()).collect();
            let shift: Vec<f32> = x.iter().map(|v| 0.3 * v.cos()).collect();
            let m = modulate.then_some((scale.as_slice(), shift.as_slice()));
            let mut fast = x.clone();
            let mut slow = x.clone();
            <f32 as Float>::norm_apply(&mut fast, a, b, m, act);
            reference::norm_apply(&mut slow, a, b, m, act);
            for (f, s) in fast.iter().zip(&slow) {
                prop_assert!((f - s).abs() <= 2e-6 * (1.0 + s.abs()), "{} vs {}", f, s);
            }
        }
    }

    #[test]
    fn group_norm_unit_affine_gives_zero_mean_unit_var() {
        let x: Vec<f64> = (0..97).map(|i| (i as f64 * 0.37).sin() * 5.0 + 2.0).collect();
        let (mean, var) = group_stats(&x);
        let (a, b) = affine_coeffs(mean, var, 0.0, 1.0, 0.0);
        let y: Vec<f64> = x.iter().map(|v| v * a + b).collect();
        let (m2, v2) = group_stats(&y);
        assert!(m2.abs() < 1e-12 && (v2 - 1.0).abs() < 1e-12);
    }
}
