//! Property tests of the convolution: the fast tiled im2col + gemm path equals the direct
//! definition, causal convs ignore the future, and a 1x1x1 conv is a matrix product; the same
//! for non-cubic kernels (`noncubic_*`), through every kernel path and the public
//! `CausalConv3d`, on the detected ISA and (in a child process) the scalar one.

mod common;
use movq::Error;
use movq::io::Loader;
use movq::kernels::Float;
use movq::kernels::conv3d::conv3d_tiled;
use movq::kernels::input_norm::InputNorm;
use movq::kernels::params::{Conv3dParams, ConvAlgo, ConvCall, TimePad};
use movq::kernels::winograd::{WinogradOptions, conv3d_winograd};
use movq::kernels::{Act, reference};
use movq::model::PadMode;
use movq::model::conv::{
    CausalConv3d, ConvCache, ConvInput, Kernel3, TimeStep, causal_params, causal_params_strided,
};
use movq::ops::conv::concat_time;
use movq::tensor::{Shape, Tensor};
use movq::testing::{CONV_RAW, conv_problem as conv_problem_from, noncubic_conv_problem, proptest_cases};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

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
        let mut pre = values(p.c_in * n_pre * h * w, seed ^ 3);
        // With two or more prefix frames, for half the seeds the first copies the second (a
        // cache holding the replicated first frame): read as one run of equal frames, the
        // result stays the direct convolution's (merging itself: kernels::frame_repeats).
        if n_pre >= 2 && seed % 2 == 0 {
            for f in pre.chunks_exact_mut(n_pre * h * w) {
                let (a, b) = f.split_at_mut(h * w);
                a.copy_from_slice(&b[..h * w]);
            }
        }
        let coeffs: Vec<(f64, f64)> =
            values(2 * p.c_in, seed ^ 4).chunks(2).map(|c| (1.0 + c[0], c[1])).collect();
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let opts = WinogradOptions {
            input_norm: Some(InputNorm { coeffs: &coeffs, modulation: None, act }),
            accumulate: false,
            prefix: Some((&pre, n_pre)),
            transformed_weights: None,
            bf16_products: false,
            bf16_dot: None,
            out_frames: None,
            nearest_2x: false,
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

// Non-cubic kernels (issue 14 item 5). Every generator makes its case valid and non-cubic by
// construction; the names start with `noncubic_` so that `noncubic_properties_under_scalar_isa`
// can run them again with the scalar ISA.

/// Like `conv_problem`, with a non-cubic kernel of up to 5 taps per axis.
fn noncubic_problem(
    winograd: bool,
) -> impl Strategy<Value = (Conv3dParams, (usize, usize, usize), usize, u64)> {
    (any::<[usize; CONV_RAW]>(), 1usize..40, any::<u64>()).prop_map(move |(mut raw, cols, seed)| {
        raw[5] = (raw[5] & !1) | winograd as usize;
        let c = noncubic_conv_problem(raw, 4);
        (c.p, c.dims, cols, seed)
    })
}

/// reference::conv3d of (p, dims) in f64.
fn direct(p: &Conv3dParams, dims: (usize, usize, usize), x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let (d, h, ww) = p.out_dims(dims.0, dims.1, dims.2).expect("valid by construction");
    let mut out = vec![0.0; p.c_out * d * h * ww];
    reference::conv3d(&mut out, &ConvCall { x, dims, weight: w, bias: b, p });
    out
}

/// |a - r| <= tol(i) for every element.
fn assert_close(a: &[f64], r: &[f64], tol: impl Fn(usize) -> f64, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), r.len());
    for (i, (x, y)) in a.iter().zip(r).enumerate() {
        prop_assert!((x - y).abs() <= tol(i), "{}: element {}: {} vs {} (tol {:.3e})", what, i, x, y, tol(i));
    }
    Ok(())
}

/// f32 rounding bound of each output of the direct sum: `(k_len + 8) * 4 eps` times
/// `|b| + sum |w| |x|`, which bounds every partial sum of the convolution (and of Winograd's
/// transformed products, which add at most 4x more terms per output).
fn f32_tolerance(p: &Conv3dParams, dims: (usize, usize, usize), x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let abs = |v: &[f64]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
    let scale = direct(p, dims, &abs(x), &abs(w), &abs(b));
    let k = (p.k_len() + 8) as f64 * 4.0 * f32::EPSILON as f64;
    scale.iter().map(|s| k * s + f32::MIN_POSITIVE as f64).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&e| e as f32).collect()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&e| e as f64).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(64)))]

    /// im2col + gemm in f64, any non-cubic kernel (3x3 taps included), any tile width.
    #[test]
    fn noncubic_conv3d_tiled_matches_direct_definition(
        (p, dims, cols, seed) in prop_oneof![noncubic_problem(false), noncubic_problem(true)]
    ) {
        let x = values(p.c_in * dims.0 * dims.1 * dims.2, seed);
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let fast = run_fast(&p, dims, cols, &x, &wt, &b);
        assert_close(&fast, &direct(&p, dims, &x, &wt, &b), |_| 1e-12, "im2col")?;
    }

    /// Winograd in f64 on 3x3 spatial taps with any k_d, with a carried prefix and a fused
    /// norm: equals the direct convolution of prefix ++ norm(x).
    #[test]
    fn noncubic_conv3d_winograd_matches_direct_definition(
        (p, dims, _cols, seed) in noncubic_problem(true), n_pre in 0usize..3, silu in any::<bool>().prop_map(|s| if s { Act::Silu } else { Act::Identity })
    ) {
        let (d, h, w) = dims;
        let x = values(p.c_in * d * h * w, seed);
        let pre = values(p.c_in * n_pre * h * w, seed ^ 3);
        let coeffs: Vec<(f64, f64)> = values(2 * p.c_in, seed ^ 4).chunks(2).map(|c| (1.0 + c[0], c[1])).collect();
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let joined = (n_pre + d, h, w);
        let mut all = Vec::new();
        for ci in 0..p.c_in {
            all.extend_from_slice(&pre[ci * n_pre * h * w..(ci + 1) * n_pre * h * w]);
            let mut xn = x[ci * d * h * w..(ci + 1) * d * h * w].to_vec();
            reference::norm_apply(&mut xn, coeffs[ci].0, coeffs[ci].1, None, silu);
            all.extend_from_slice(&xn);
        }
        let slow = direct(&p, joined, &all, &wt, &b);
        let opts = WinogradOptions {
            input_norm: Some(InputNorm { coeffs: &coeffs, modulation: None, act: silu }),
            accumulate: false,
            prefix: Some((&pre, n_pre)),
            transformed_weights: None,
            bf16_products: false,
            bf16_dot: None,
            out_frames: None,
            nearest_2x: false,
        };
        let mut fast = vec![f64::NAN; slow.len()];
        conv3d_winograd(&mut fast, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p }, &opts);
        assert_close(&fast, &slow, |_| 1e-12, "winograd")?;
    }

    /// The f32 paths, whose element-wise kernels run on the process's ISA (`MOVQ_ISA`): the
    /// algorithm `ConvAlgo::for_params` picks, reading norm(x) through the ISA's `norm_apply`
    /// (fused into Winograd; applied first for im2col, as `ops::conv` does), against the scalar
    /// twin in f64.
    #[test]
    fn noncubic_f32_paths_match_scalar_twin(
        (p, dims, cols, seed) in prop_oneof![noncubic_problem(false), noncubic_problem(true)], silu in any::<bool>().prop_map(|s| if s { Act::Silu } else { Act::Identity })
    ) {
        let (d, h, w) = dims;
        let x = values(p.c_in * d * h * w, seed);
        let coeffs: Vec<(f64, f64)> = values(2 * p.c_in, seed ^ 4).chunks(2).map(|c| (1.0 + c[0], c[1])).collect();
        let wt = values(p.c_out * p.k_len(), seed ^ 1);
        let b = values(p.c_out, seed ^ 2);
        let plane = d * h * w;
        // The norm in f32 on the ISA, widened: the reference convolves the same input.
        let (x32, mut xn32) = (to_f32(&x), to_f32(&x));
        let coeffs32: Vec<(f32, f32)> = coeffs.iter().map(|&(a, c)| (a as f32, c as f32)).collect();
        for (ci, chunk) in xn32.chunks_mut(plane).enumerate() {
            f32::norm_apply(chunk, coeffs32[ci].0, coeffs32[ci].1, None, silu);
        }
        let xn = to_f64(&xn32);
        let slow = direct(&p, dims, &xn, &wt, &b);
        let tol = f32_tolerance(&p, dims, &xn, &wt, &b);
        let (wt32, b32) = (to_f32(&wt), to_f32(&b));
        let mut fast = vec![f32::NAN; slow.len()];
        if ConvAlgo::for_params_under(ConvAlgo::Winograd, &p) == ConvAlgo::Winograd {
            let opts = WinogradOptions {
                input_norm: Some(InputNorm { coeffs: &coeffs32, modulation: None, act: silu }),
                ..Default::default()
            };
            conv3d_winograd(&mut fast, &ConvCall { x: &x32, dims, weight: &wt32, bias: &b32, p: &p }, &opts);
            assert_close(&to_f64(&fast), &slow, |i| tol[i], "f32 winograd")?;
        }
        conv3d_tiled(&mut fast, &ConvCall { x: &xn32, dims, weight: &wt32, bias: &b32, p: &p }, cols);
        assert_close(&to_f64(&fast), &slow, |i| tol[i], "f32 im2col")?;
    }
}

/// A CausalConv3d case valid by construction: (mode, kernel with odd kh and kw and not a
/// cube, time step, c_in, c_out, input (d, h, w), seed). "first" gets kt >= 2 and
/// stride <= dilation * (kt - 1) (upstream raises on a zero time pad); the others
/// stride <= dilation * (kt - 1) + 1 (a non-negative time pad).
type CausalCase = (PadMode, Kernel3, TimeStep, usize, usize, (usize, usize, usize), u64);

fn noncubic_causal_case() -> impl Strategy<Value = CausalCase> {
    (any::<[usize; 10]>(), any::<u64>()).prop_map(|(raw, seed)| {
        let mode = [PadMode::First, PadMode::Constant, PadMode::Reflect][raw[0] % 3];
        let odd = |r: usize| [1, 3, 5][r % 3];
        let (h, w) = (odd(raw[1]), odd(raw[2]));
        let mut t = 1 + raw[3] % 5;
        if mode == PadMode::First && t == 1 {
            t = 2;
        }
        if t == h && h == w {
            t += 1; // kt may be even: upstream asserts only kh and kw odd
        }
        let dilation = 1 + raw[4] % 2;
        let max_stride = dilation * (t - 1) + usize::from(mode != PadMode::First);
        let step = TimeStep { stride: 1 + raw[5] % max_stride.min(2), dilation };
        let p = causal_params_strided(1, 1, (t, h, w), mode, step).expect("valid by construction");
        let least = |span: usize, pad: (usize, usize)| span.saturating_sub(pad.0 + pad.1).max(1);
        let dims = (
            least(dilation * (t - 1) + 1, p.pad_d) + raw[6] % 4,
            least(h, p.pad_h) + raw[7] % 5,
            least(w, p.pad_w) + raw[8] % 5,
        );
        (mode, Kernel3 { t, h, w }, step, 1 + raw[9] % 3, 1 + raw[9] / 3 % 3, dims, seed)
    })
}

/// Upstream's output (T, H, W) for a causal conv (spec section 2): "first" and "reflect" keep
/// H and W; "constant" pads T by kh/2 twice, H by kw/2 twice and W by time_pad in front.
fn upstream_out_dims(mode: PadMode, k: Kernel3, s: TimeStep, (d, h, w): (usize, usize, usize)) -> [usize; 3] {
    let time_pad = s.dilation * (k.t - 1) + 1 - s.stride;
    let span_t = s.dilation * (k.t - 1) + 1;
    match mode {
        PadMode::First | PadMode::Reflect => [(d + time_pad - span_t) / s.stride + 1, h, w],
        PadMode::Constant => {
            [(d + 2 * (k.h / 2) - span_t) / s.stride + 1, h + 2 * (k.w / 2) + 1 - k.h, w + time_pad + 1 - k.w]
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(64)))]

    /// The public module (`CausalConv3d::load` with a (kt, kh, kw) kernel, weights from a
    /// random loader) in f64 and f32 against the scalar twin, with upstream's output shape; in
    /// mode "first" at stride 1 also: a clip run in two chunks with the carried cache equals
    /// the whole clip.
    #[test]
    fn noncubic_causal_conv_matches_scalar_twin(
        (mode, k, step, c_in, c_out, dims, seed) in noncubic_causal_case(), split in any::<usize>()
    ) {
        let loader = Loader::random(seed);
        let vp = loader.root().pp("c");
        let (m64, m32) = if step == TimeStep::UNIT {
            (CausalConv3d::<f64>::load(&vp, c_in, c_out, k, mode), CausalConv3d::<f32>::load(&vp, c_in, c_out, k, mode))
        } else {
            let p = causal_params_strided(c_in, c_out, k, mode, step).unwrap();
            (CausalConv3d::<f64>::load_params(&vp, p.clone()), CausalConv3d::<f32>::load_params(&vp, p))
        };
        let (m64, m32) = (m64.unwrap(), m32.unwrap());
        let made = loader.take_random();
        let weight = to_f64(&made.iter().find(|t| t.0 == "c.conv.weight").expect("weight made").2);
        let bias = to_f64(&made.iter().find(|t| t.0 == "c.conv.bias").expect("bias made").2);
        prop_assert_eq!(&made[0].1, &vec![c_out, c_in, k.t, k.h, k.w]);
        let p = m64.params().clone();
        let x = to_f64(&to_f32(&values(c_in * dims.0 * dims.1 * dims.2, seed ^ 5)));
        let xt = Tensor::from_vec(Shape::new(1, c_in, dims.0, dims.1, dims.2), x.clone()).unwrap();
        let y64 = m64.forward(ConvInput::plain(&xt), None).unwrap();
        let s = y64.shape();
        prop_assert_eq!([s.d, s.h, s.w], upstream_out_dims(mode, k, step, dims));
        let slow = direct(&p, dims, &x, &weight, &bias);
        assert_close(y64.data(), &slow, |_| 1e-12, "f64 module")?;
        let x32 = Tensor::from_vec(xt.shape(), to_f32(&x)).unwrap();
        let y32 = m32.forward(ConvInput::plain(&x32), None).unwrap();
        let tol = f32_tolerance(&p, dims, &x, &weight, &bias);
        assert_close(&to_f64(y32.data()), &slow, |i| tol[i], "f32 module")?;

        if mode == PadMode::First && step.stride == 1 && dims.0 >= 2 {
            let cut = 1 + split % (dims.0 - 1);
            let plane = dims.1 * dims.2;
            let frames = |lo: usize, hi: usize| {
                let v: Vec<f64> = (0..c_in).flat_map(|c| x[(c * dims.0 + lo) * plane..(c * dims.0 + hi) * plane].to_vec()).collect();
                Tensor::from_vec(Shape::new(1, c_in, hi - lo, dims.1, dims.2), v).unwrap()
            };
            let mut cache = ConvCache::default();
            let a = m64.forward(ConvInput::plain(&frames(0, cut)), Some(&mut cache)).unwrap();
            let b = m64.forward(ConvInput::plain(&frames(cut, dims.0)), Some(&mut cache)).unwrap();
            let joined = concat_time(&a, &b).unwrap();
            assert_close(joined.data(), y64.data(), |_| 1e-12, "chunked")?;
        }
    }
}

/// Upstream's pads for non-cubic kernels, read off movq_enc_3d.py `CausalConv3d.forward`
/// (time_pad = kt - 1, height_pad = kh / 2, width_pad = kw / 2): "first" and "reflect" pad
/// W (kw/2, kw/2), H (kh/2, kh/2), T time_pad in front; "constant" passes
/// (time_pad, 0, width_pad, width_pad, height_pad, height_pad) to F.pad, which pads
/// W (time_pad, 0), H (kw/2, kw/2), T (kh/2, kh/2).
#[test]
fn noncubic_causal_pads_follow_upstream() {
    let pads = |k: (usize, usize, usize), mode| {
        let p = causal_params(2, 3, k, mode).unwrap();
        assert_eq!((p.k_d, p.k_h, p.k_w), k);
        (p.pad_d, p.pad_h, p.pad_w, p.time_pad)
    };
    use PadMode::{Constant, First, Reflect};
    use TimePad::{ReplicateFirst, Zeros};
    assert_eq!(pads((3, 1, 3), First), ((2, 0), (0, 0), (1, 1), ReplicateFirst));
    assert_eq!(pads((5, 3, 1), First), ((4, 0), (1, 1), (0, 0), ReplicateFirst));
    assert_eq!(pads((3, 5, 3), Reflect), ((2, 0), (2, 2), (1, 1), TimePad::Reflect));
    assert_eq!(pads((1, 3, 5), Reflect), ((0, 0), (1, 1), (2, 2), TimePad::Reflect));
    assert_eq!(pads((3, 1, 3), Constant), ((0, 0), (1, 1), (2, 0), Zeros));
    assert_eq!(pads((1, 3, 5), Constant), ((1, 1), (2, 2), (0, 0), Zeros));
    assert_eq!(pads((3, 5, 3), Constant), ((2, 2), (1, 1), (2, 0), Zeros));
    assert_eq!(pads((5, 3, 3), Constant), ((1, 1), (1, 1), (4, 0), Zeros));
    // Even kt is allowed (upstream asserts only kh and kw odd): time_pad 1.
    assert_eq!(pads((2, 3, 3), First), ((1, 0), (1, 1), (1, 1), ReplicateFirst));
    // An int is a cube, as upstream's cast_tuple makes it.
    assert_eq!(causal_params(2, 3, 5, Reflect).unwrap(), causal_params(2, 3, (5, 5, 5), Reflect).unwrap());
}

/// Kernel sizes upstream refuses are named errors: an even kh or kw (upstream asserts), a zero
/// size; "first" with kt = 1 raises upstream (empty concat).
#[test]
fn noncubic_causal_refusals_are_named_errors() {
    for k in [(3, 2, 3), (3, 3, 4), (1, 4, 1), (3, 0, 3), (0, 3, 3)] {
        for mode in [PadMode::First, PadMode::Constant, PadMode::Reflect] {
            let e = causal_params(2, 3, k, mode).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{k:?} {mode:?}: {e}");
        }
    }
    let e = causal_params(2, 3, (1, 3, 5), PadMode::First).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let loader = Loader::random(1);
    let e =
        CausalConv3d::<f32>::load(&loader.root(), 2, 3, (3, 2, 3), PadMode::First).err().expect("refused");
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
}

/// The `noncubic_` properties again with `MOVQ_ISA=scalar`: the ISA is chosen once per process,
/// so they run in a child process of this test binary.
#[test]
fn scalar_isa_rerun_of_noncubic_properties() {
    if std::env::var("MOVQ_ISA").is_ok() {
        // Already the scalar child (or a scalar run of the whole suite): the properties ran here.
        return;
    }
    let out = common::this_test_binary()
        .args(["noncubic_", "--test-threads=1"])
        .env("MOVQ_ISA", "scalar")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scalar rerun failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ran = stdout.lines().filter(|l| l.starts_with("test noncubic_") && l.ends_with("ok")).count();
    assert!(ran >= 6, "the scalar rerun ran {ran} noncubic_ tests:\n{stdout}");
}
