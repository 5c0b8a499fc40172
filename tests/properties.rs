//! Property tests of the convolution: the fast tiled im2col + gemm path equals the direct
//! definition, causal convs ignore the future, and a 1x1x1 conv is a matrix product.

use movq::kernels::conv3d::conv3d_tiled;
use movq::kernels::input_norm::InputNorm;
use movq::kernels::params::ConvCall;
use movq::kernels::params::{Conv3dParams, TimePad};
use movq::kernels::winograd::{WinogradOptions, conv3d_winograd};
use movq::kernels::{Act, reference};
use movq::model::PadMode;
use movq::model::conv::{TimeStep, causal_params, causal_params_strided};
use movq::testing::{CONV_RAW, conv_problem as conv_problem_from, proptest_cases};
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = movq::tensor::SplitMix64(seed);
    (0..n).map(|_| rng.uniform() as f64).collect()
}

/// (params, input dims, im2col tile columns, seed): a valid problem by construction.
/// `winograd`: 3x3 spatial taps.
fn conv_problem(winograd: bool) -> impl Strategy<Value = (Conv3dParams, (usize, usize, usize), usize, u64)> {
    (any::<[usize; CONV_RAW]>(), 1usize..40, any::<u64>()).prop_map(move |(mut raw, cols, seed)| {
        if winograd {
            raw[5] |= 1;
        }
        let c = conv_problem_from(raw, 4);
        (c.p, c.dims, cols, seed)
    })
}

fn run_fast(
    p: &Conv3dParams,
    dims: (usize, usize, usize),
    cols: usize,
    x: &[f64],
    w: &[f64],
    b: &[f64],
) -> Vec<f64> {
    let (d, h, ww) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
    let mut out = vec![f64::NAN; p.c_out * d * h * ww];
    conv3d_tiled(&mut out, &ConvCall { x, dims, weight: w, bias: b, p }, cols);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(64)))]

    #[test]
    fn conv3d_tiled_matches_direct_definition((p, dims, cols, seed) in conv_problem(false)) {
        let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).expect("valid by construction");
        let x = values(p.c_in * dims.0 * dims.1 * dims.2, seed);
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let fast = run_fast(&p, dims, cols, &x, &wt, &b);
        let mut slow = vec![0.0; p.c_out * d * h * w];
        reference::conv3d(&mut slow, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p });
        for (a, r) in fast.iter().zip(&slow) {
            prop_assert!((a - r).abs() <= 1e-12, "{} vs {}", a, r);
        }
    }

    /// Shrunk failure that led to the "reflect" horizon: mode = Reflect, c_in = 1, d = 2,
    /// h = 1, w = 1, t = 0 (output frame 0 reads frame 1 through the reflected prefix).
    #[test]
    fn conv3d_causal_output_ignores_future_frames(
        mode in prop_oneof![Just(PadMode::First), Just(PadMode::Reflect)],
        c_in in 1usize..4, d in 1usize..6, h in 1usize..5, w in 1usize..5, t in 0usize..6, seed in any::<u64>()
    ) {
        let t = t % d;
        let p = causal_params(c_in, 2, 3, mode).unwrap();
        // "first" is strictly causal. "reflect" pads with frames time_pad..1 (upstream), so the
        // first time_pad outputs also read frames up to time_pad = 2; beyond that it is causal.
        let horizon = if mode == PadMode::Reflect { t.max(p.pad_d.0) } else { t };
        let dims = (d, h, w);
        let x = values(c_in * d * h * w, seed);
        let wt = values(2 * p.k_len(), seed ^ 1);
        let b = values(2, seed ^ 2);
        // Replace every frame after the horizon.
        let mut x2 = x.clone();
        for ci in 0..c_in {
            for f in horizon + 1..d {
                for v in &mut x2[(ci * d + f) * h * w..(ci * d + f + 1) * h * w] {
                    *v = 100.0 - *v;
                }
            }
        }
        let y1 = run_fast(&p, dims, 7, &x, &wt, &b);
        let y2 = run_fast(&p, dims, 7, &x2, &wt, &b);
        for co in 0..2 {
            for f in 0..=t {
                let r = (co * d + f) * h * w..(co * d + f + 1) * h * w;
                prop_assert_eq!(&y1[r.clone()], &y2[r]);
            }
        }
    }

    #[test]
    fn conv3d_winograd_matches_direct_definition((p, dims, _cols, seed) in conv_problem(true)) {
        let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).expect("valid by construction");
        let x = values(p.c_in * dims.0 * dims.1 * dims.2, seed);
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let mut fast = vec![f64::NAN; p.c_out * d * h * w];
        conv3d_winograd(&mut fast, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p }, &Default::default());
        let mut slow = vec![0.0; p.c_out * d * h * w];
        reference::conv3d(&mut slow, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p });
        for (a, r) in fast.iter().zip(&slow) {
            prop_assert!((a - r).abs() <= 1e-12, "{} vs {}", a, r);
        }
    }

    /// A carried time prefix (chunked decoding) with a fused input norm on x only equals the
    /// direct convolution of prefix ++ norm(x).
    #[test]
    fn conv3d_winograd_prefix_and_norm_match_direct_on_joined_input(
        (p, dims, _cols, seed) in conv_problem(true), n_pre in 0usize..4,
        act in prop_oneof![Just(Act::Identity), Just(Act::Silu), Just(Act::Relu), Just(Act::Gelu), Just(Act::Mish)]
    ) {
        let (d, h, w) = dims;
        let joined = (n_pre + d, h, w);
        let (d_o, h_o, w_o) = p.out_dims(joined.0, h, w).expect("a longer clip stays valid");
        let x = values(p.c_in * d * h * w, seed);
        let pre = values(p.c_in * n_pre * h * w, seed ^ 3);
        let coeffs: Vec<(f64, f64)> =
            values(2 * p.c_in, seed ^ 4).chunks(2).map(|c| (1.0 + c[0], c[1])).collect();
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let opts = WinogradOptions {
            input_norm: Some(InputNorm { coeffs: &coeffs, modulation: None, act }),
            accumulate: false,
            prefix: Some((&pre, n_pre)),
        };
        let mut fast = vec![f64::NAN; p.c_out * d_o * h_o * w_o];
        conv3d_winograd(&mut fast, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p }, &opts);
        let plane = d * h * w;
        let mut all = Vec::with_capacity(p.c_in * (n_pre + d) * h * w);
        for ci in 0..p.c_in {
            all.extend_from_slice(&pre[ci * n_pre * h * w..(ci + 1) * n_pre * h * w]);
            let mut xn = x[ci * plane..(ci + 1) * plane].to_vec();
            reference::norm_apply(&mut xn, coeffs[ci].0, coeffs[ci].1, None, act);
            all.extend_from_slice(&xn);
        }
        let mut slow = vec![0.0; p.c_out * d_o * h_o * w_o];
        reference::conv3d(&mut slow, &ConvCall { x: &all, dims: joined, weight: &wt, bias: &b, p: &p });
        for (a, r) in fast.iter().zip(&slow) {
            prop_assert!((a - r).abs() <= 1e-12, "{} vs {}", a, r);
        }
    }

    #[test]
    fn conv3d_1x1x1_is_matrix_product(c_in in 1usize..9, c_out in 1usize..9, n in 1usize..200, seed in any::<u64>()) {
        let p = Conv3dParams::plain(c_in, c_out, (1, 1, 1));
        let dims = (1, 1, n);
        let x = values(c_in * n, seed);
        let wt = values(c_out * c_in, seed ^ 1);
        let b = vec![0.0; c_out];
        let y = run_fast(&p, dims, 1000, &x, &wt, &b);
        for o in 0..c_out {
            for j in 0..n {
                let want: f64 = (0..c_in).map(|i| wt[o * c_in + i] * x[i * n + j]).sum();
                prop_assert!((y[o * n + j] - want).abs() <= 1e-12);
            }
        }
    }
}

/// The "constant" mode reproduces upstream's pad-order quirk: W (2, 0), H (1, 1), T (1, 1).
#[test]
fn causal_constant_mode_pad_order_quirk() {
    let p = causal_params(1, 1, 3, PadMode::Constant).unwrap();
    assert_eq!((p.pad_w, p.pad_h, p.pad_d, p.time_pad), ((2, 0), (1, 1), (1, 1), TimePad::Zeros));
    let p = causal_params(1, 1, 3, PadMode::First).unwrap();
    assert_eq!((p.pad_w, p.pad_h, p.pad_d, p.time_pad), ((1, 1), (1, 1), (2, 0), TimePad::ReplicateFirst));
    // Output frame t of "first" reads max(t-2, 0), max(t-1, 0), t.
    assert_eq!((0..3).map(|dt| p.src_frame(0, dt, 4)).collect::<Vec<_>>(), vec![Some(0), Some(0), Some(0)]);
    assert_eq!((0..3).map(|dt| p.src_frame(3, dt, 4)).collect::<Vec<_>>(), vec![Some(1), Some(2), Some(3)]);
    // "reflect": prefix [x2, x1]; T=2 -> [0, x1]; T=1 -> [0, 0].
    let p = causal_params(1, 1, 3, PadMode::Reflect).unwrap();
    assert_eq!((0..2).map(|dt| p.src_frame(0, dt, 4)).collect::<Vec<_>>(), vec![Some(2), Some(1)]);
    assert_eq!((0..2).map(|dt| p.src_frame(0, dt, 2)).collect::<Vec<_>>(), vec![None, Some(1)]);
    assert_eq!((0..2).map(|dt| p.src_frame(0, dt, 1)).collect::<Vec<_>>(), vec![None, None]);
    // k=1 "first" raises upstream (empty concat).
    assert!(causal_params(1, 1, 1, PadMode::First).is_err());
    // time_pad = dilation * (k - 1) + (1 - stride): stride 2 -> 1, dilation 2 -> 4 (spec section 2).
    assert_eq!(
        causal_params_strided(1, 1, 3, PadMode::First, TimeStep { stride: 2, dilation: 1 }).unwrap().pad_d,
        (1, 0)
    );
    assert_eq!(
        causal_params_strided(1, 1, 3, PadMode::First, TimeStep { stride: 1, dilation: 2 }).unwrap().pad_d,
        (4, 0)
    );
    let p = causal_params_strided(1, 1, 3, PadMode::First, TimeStep { stride: 2, dilation: 1 }).unwrap();
    assert_eq!(p.out_dims(5, 4, 4), Some((2, 4, 4))); // (5 + 1 - 3) / 2 + 1
}

/// Regression (from the shrunk proptest case above): with "reflect", output frame 0 of a
/// 2-frame clip depends on frame 1, exactly as upstream's prefix [0, x1] makes it.
#[test]
fn conv3d_causal_regression_reflect_reads_prefix_frame() {
    let p = causal_params(1, 1, 3, PadMode::Reflect).unwrap();
    let w = vec![1.0f64; 27];
    let out = |x: &[f64]| run_fast(&p, (2, 1, 1), 4, x, &w, &[0.0]);
    assert_ne!(out(&[1.0, 2.0])[0], out(&[1.0, 5.0])[0]);
}
