//! Every generic kernel on every vector set this CPU runs ([`Vector::all_available`], which
//! includes [`super::Lane1`]) against its plain twin. On x86-64 with AVX-512 that covers
//! AVX-512, AVX2 and Lane1; on aarch64 (scripts/test-aarch64.sh, under qemu) NEON and Lane1.

use super::kernels::{DoubleRow, ExpSum, NormApply, ScaleMax, SumF64};
use super::{Kernel, Simd, Vector, exp};
use crate::kernels::winograd_tiles::{self, InputRow, InputRowArgs, OutputRow, OutputRowArgs};
use crate::kernels::{Act, reference};
use proptest::prelude::*;

fn values(n: usize, seed: u64, mag: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f64 * 0.737 + seed as f64 * 0.0131).sin() * mag as f64) as f32).collect()
}

/// e^x of every lane of `xs` on the vector set of `s` (xs.len() a multiple of S::LANES).
struct ExpAll<'a>(&'a mut [f32]);

impl Kernel for ExpAll<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for c in self.0.chunks_exact_mut(S::LANES) {
            let y = exp(s, s.load(c));
            s.store(c, y);
        }
    }
}

fn ulps_apart(a: f32, b: f64) -> f64 {
    (a as f64 - b).abs() / (b.abs() * f32::EPSILON as f64).max(f32::MIN_POSITIVE as f64)
}

#[test]
fn exp_is_within_3_ulp_and_keeps_nan_on_every_isa() {
    for v in Vector::all_available() {
        let mut xs: Vec<f32> = (-980..=1000).map(|i| i as f32 * 0.0887).collect();
        xs.truncate(xs.len() / 16 * 16);
        let want: Vec<f64> = xs.iter().map(|&x| (x as f64).exp()).collect();
        v.run(ExpAll(&mut xs));
        for (i, (&e, &w)) in xs.iter().zip(&want).enumerate() {
            // Below -87.3 the input is clamped: e^-87.3 stands for smaller values.
            if w > 1.2e-38 {
                assert!(ulps_apart(e, w) <= 3.0, "{}: exp #{i} = {e}, want {w}", v.name());
            } else {
                assert!((0.0..1.2e-38).contains(&e), "{}: exp #{i} = {e}", v.name());
            }
        }
        let mut special = [f32::NAN, -200.0, 200.0, 0.0, -0.0, 88.0, -87.0, 1.0];
        let mut lanes = special.repeat(2);
        v.run(ExpAll(&mut lanes));
        special.copy_from_slice(&lanes[..8]);
        assert!(special[0].is_nan(), "{}", v.name());
        assert!(special[1] >= 0.0 && special[1] < 1e-37, "{}", v.name());
        assert!(special[2].is_finite() && special[2] > 1e38, "{}", v.name());
        assert_eq!(special[3], 1.0, "{}", v.name());
        assert_eq!(special[4], 1.0, "{}", v.name());
    }
}

fn act_strategy() -> impl Strategy<Value = Act> {
    prop_oneof![Just(Act::Identity), Just(Act::Silu), Just(Act::Relu), Just(Act::Gelu), Just(Act::Mish)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(64)))]

    /// The affine part and ReLU / GELU / Mish are exactly the reference's; SiLU differs only
    /// through exp (within 3 ulp), i.e. a few ulp of the result.
    #[test]
    fn norm_apply_matches_reference(n in 0usize..90, seed in any::<u64>(), a in -3.0f32..3.0, b in -2.0f32..2.0,
                                    modulated in any::<bool>(), act in act_strategy(), nan_at in proptest::option::of(0usize..90)) {
        let mut x = values(n, seed, 6.0);
        if let Some(i) = nan_at.filter(|&i| i < n) {
            x[i] = f32::NAN;
        }
        let (sc, sh) = (values(n, seed ^ 1, 1.5), values(n, seed ^ 2, 1.0));
        let m = modulated.then_some((&sc[..], &sh[..]));
        let mut want = x.clone();
        reference::norm_apply(&mut want, a, b, m, act);
        for v in Vector::all_available() {
            let mut got = x.clone();
            v.run(NormApply { buf: &mut got, a, b, modulation: m, act });
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if w.is_nan() {
                    prop_assert!(g.is_nan(), "{} #{i}: {g} vs NaN", v.name());
                } else if act == Act::Silu {
                    prop_assert!((g - w).abs() <= 6.0 * f32::EPSILON * w.abs() + 1e-37,
                        "{} #{i}: {g} vs {w}", v.name());
                } else {
                    // == rather than bits: NEON's FMAX(0, -0) is +0 where the reference keeps -0.
                    prop_assert!(g == w, "{} #{i}: {g} vs {w}", v.name());
                }
            }
        }
    }

    #[test]
    fn f64_sums_match_reference(n in 0usize..200, seed in any::<u64>(), mean in -1.0f64..1.0) {
        let x = values(n, seed, 100.0);
        let abs: f64 = x.iter().map(|v| v.abs() as f64).sum::<f64>() + 1.0;
        for v in Vector::all_available() {
            let s = v.run(SumF64 { x: &x, mean: None });
            prop_assert!((s - reference::sum_f64(&x)).abs() <= 1e-13 * abs, "{}", v.name());
            let q = v.run(SumF64 { x: &x, mean: Some(mean) });
            let want = reference::sum_sq_dev_f64(&x, mean);
            prop_assert!((q - want).abs() <= 1e-13 * (want + 1.0), "{}: {q} vs {want}", v.name());
        }
    }

    #[test]
    fn softmax_parts_match_reference(n in 1usize..150, seed in any::<u64>(), scale in 0.01f32..2.0) {
        let x = values(n, seed, 30.0);
        let mut want = x.clone();
        let want_max = reference::scale_max(&mut want, scale);
        let m = want_max as f32;
        let mut want_e = want.clone();
        let want_sum = reference::exp_sum(&mut want_e, m);
        for v in Vector::all_available() {
            let mut got = x.clone();
            let got_max = v.run(ScaleMax { row: &mut got, scale });
            prop_assert_eq!(&got, &want, "{}", v.name());
            prop_assert_eq!(got_max as f64, want_max, "{}", v.name());
            let got_sum = v.run(ExpSum { row: &mut got, m });
            for (g, w) in got.iter().zip(&want_e) {
                prop_assert!(ulps_apart(*g, *w as f64) <= 4.0 || (*w < 1.2e-38 && *g < 1.2e-38), "{}: {g} vs {w}", v.name());
            }
            prop_assert!((got_sum - want_sum).abs() <= 4.0 * f32::EPSILON as f64 * want_sum, "{}", v.name());
        }
    }

    #[test]
    fn double_row_matches_reference(n in 0usize..70, seed in any::<u64>()) {
        let src = values(n, seed, 3.0);
        let mut want = vec![0.0f32; 2 * n];
        reference::double_row(&mut want, &src);
        for v in Vector::all_available() {
            let mut got = vec![f32::NAN; 2 * n];
            v.run(DoubleRow { out: &mut got, src: &src });
            prop_assert_eq!(&got, &want, "{}", v.name());
        }
    }

    /// The transforms only add and subtract, in the twin's order: bit for bit equal.
    #[test]
    fn winograd_input_row_is_bitwise_the_twin(tw in 1usize..40, extra in 0usize..3, t0 in 0usize..5, seed in any::<u64>()) {
        let pw = 2 * tw + 2 + extra;
        let rows: Vec<Vec<f32>> = (0..4).map(|r| values(pw, seed ^ r, 5.0)).collect();
        let n_t = t0 + tw + extra;
        let rows_ref = || std::array::from_fn(|r| &rows[r][..]);
        let mut want = vec![0.5f32; 16 * n_t];
        winograd_tiles::input_row(InputRowArgs { v: &mut want, n_t, t0, rows: rows_ref(), tw });
        for v in Vector::all_available() {
            let mut got = vec![0.5f32; 16 * n_t];
            v.run(InputRow(InputRowArgs { v: &mut got, n_t, t0, rows: rows_ref(), tw }));
            prop_assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{}", v.name());
        }
    }

    #[test]
    fn winograd_output_row_is_bitwise_the_twin(tw in 1usize..40, odd in any::<bool>(), second in any::<bool>(),
                                               accumulate in any::<bool>(), bias in -1.0f32..1.0, seed in any::<u64>()) {
        let w_out = 2 * tw - usize::from(odd);
        let m: Vec<Vec<f32>> = (0..16).map(|xi| values(tw + 3, seed ^ xi, 4.0)).collect();
        let ms = || std::array::from_fn(|xi| &m[xi][..]);
        let base = (values(w_out, seed ^ 77, 2.0), values(w_out, seed ^ 78, 2.0));
        let (mut w0, mut w1) = base.clone();
        winograd_tiles::output_row(OutputRowArgs { out: (&mut w0, second.then_some(&mut w1[..])), m: ms(), tw, bias, accumulate });
        for v in Vector::all_available() {
            let (mut g0, mut g1) = base.clone();
            v.run(OutputRow(OutputRowArgs { out: (&mut g0, second.then_some(&mut g1[..])), m: ms(), tw, bias, accumulate }));
            prop_assert_eq!(g0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), w0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{}", v.name());
            prop_assert_eq!(g1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), w1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "{}", v.name());
        }
    }
}

#[test]
fn interleaving_loads_and_stores_are_inverse_on_every_isa() {
    struct RoundTrip<'a>(&'a [f32], &'a mut [f32], &'a mut [f32]);
    impl Kernel for RoundTrip<'_> {
        type Output = ();
        #[inline(always)]
        fn run<S: Simd>(self, s: S) {
            let (ev, od) = s.load_deinterleaved(self.0);
            s.store(self.1, ev);
            s.store(&mut self.1[S::LANES..], od);
            s.store_interleaved(self.2, ev, od);
        }
    }
    let src: Vec<f32> = (0..32).map(|i| i as f32).collect();
    for v in Vector::all_available() {
        let (mut split, mut back) = (vec![-1.0f32; 32], vec![-1.0f32; 32]);
        v.run(RoundTrip(&src, &mut split, &mut back));
        let lanes = split.iter().position(|&x| x == 1.0).expect("odd lanes follow even ones");
        let want: Vec<f32> =
            (0..lanes).map(|i| 2.0 * i as f32).chain((0..lanes).map(|i| 2.0 * i as f32 + 1.0)).collect();
        assert_eq!(&split[..2 * lanes], &want[..], "{}", v.name());
        assert_eq!(&back[..2 * lanes], &src[..2 * lanes], "{}", v.name());
    }
}
