//! The one safe wrapper around `gemm::gemm`: strided row/column matrices over slices, with the
//! bounds that make the raw-pointer call sound checked here.

use crate::tensor::Element;
use gemm::Parallelism;

/// A strided read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// Whether one gemm call may use the rayon pool (the current pool's thread count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    Seq,
    Rayon,
}

fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `dst = (accumulate ? dst : 0) + lhs · rhs` with lhs (m, k), rhs (k, n), dst (m, n);
/// dst element (i, j) is `dst[i * dst_rs + j * dst_cs]`.
///
/// Panics if a view reaches past its slice or dst's strides make two elements overlap:
/// those would make the underlying call unsound.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    par: Par,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = T::ZERO;
                }
            }
        }
        return;
    }
    assert!(max_index(m, n, dst_rs, dst_cs) < dst.len(), "gemm: dst view out of bounds");
    assert!(max_index(m, k, lhs.rs, lhs.cs) < lhs.data.len(), "gemm: lhs view out of bounds");
    assert!(max_index(k, n, rhs.rs, rhs.cs) < rhs.data.len(), "gemm: rhs view out of bounds");
    // Distinct (i, j) must map to distinct dst elements: one stride spans the other's extent.
    assert!(m == 1 || n == 1 || dst_rs >= n * dst_cs || dst_cs >= m * dst_rs, "gemm: dst strides overlap");
    assert!(m == 1 || dst_rs > 0);
    assert!(n == 1 || dst_cs > 0);
    let parallelism = match par {
        Par::Seq => Parallelism::None,
        Par::Rayon => Parallelism::Rayon(rayon::current_num_threads()),
    };
    // SAFETY: every index the call touches is < the slice lengths (asserted above); dst is an
    // exclusive borrow and its elements are pairwise distinct, so gemm's parallel writes never
    // race; lhs and rhs are shared borrows that cannot alias the exclusive dst. T is f32 or f64
    // (Element is only implemented for those), which gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(48)))]
        #[test]
        fn gemm_matches_naive_product(m in 1usize..20, n in 1usize..40, k in 0usize..30, acc in any::<bool>(), seed in any::<u64>()) {
            let mut rng = seed;
            let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((rng >> 33) as f64 / (1u64 << 31) as f64) - 0.5 };
            let a: Vec<f64> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f64> = (0..k * n).map(|_| next()).collect();
            let init: Vec<f64> = (0..m * n).map(|_| next()).collect();
            let mut c = init.clone();
            gemm(m, n, k, &mut c, n, 1, acc, Mat { data: &a, rs: k, cs: 1 }, Mat { data: &b, rs: n, cs: 1 }, Par::Rayon);
            let r = naive(m, n, k, &a, &b);
            for i in 0..m * n {
                let want = r[i] + if acc { init[i] } else { 0.0 };
                prop_assert!((c[i] - want).abs() < 1e-12, "{} vs {}", c[i], want);
            }
        }
    }
}
