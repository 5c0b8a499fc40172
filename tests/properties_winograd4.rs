//! Property tests of the Winograd F(4x4, 3x3) convolution (`kernels::winograd4`, opt-in
//! `--conv winograd4`) against the scalar twin `reference::conv3d`: f64 and f32, any k_d,
//! paddings, time pads, odd sizes, a carried prefix, a fused input norm and accumulation; the
//! same on the scalar ISA (child process); bitwise identical output for any thread count; the
//! op-level dispatch and golden cases with `ConvAlgo::Winograd4`.
//!
//! Tolerance: forward error analysis of the algorithm as run. Each output is a sum of products
//! of input, weight and transform-matrix entries; along any product's path there are at most
//! `K + 28` roundings (K = c_in * k_d gemm terms; 1 weight to f32, 1 for U, 1 for the input
//! (norm), 2 x 5 in the input transform, 1 product, 2 x 6 in the output transform, the bias and
//! the residual add). So |fast - exact| <= gamma_(K+28) * B, where B is the same algorithm run
//! with every matrix, weight and input replaced by its absolute value ([`abs_bound`]); with
//! gamma_n <= n * eps (eps = 2u) this also covers the f64 reference's own error, since B bounds
//! the direct sum of |w| |x|. B is larger than that direct sum (every output reads all 36
//! products of its tile), which is the error growth of F(4x4, 3x3) and the tolerance's scale:
//! on these cases B is 190x the direct sum at the median (1200x at most, at borders), and the
//! errors seen stay below 2 % of the bound (at most 0.5 eps B, 46 eps times the direct sum).

use movq::kernels::input_norm::InputNorm;
use movq::kernels::params::{Conv3dParams, ConvAlgo, ConvCall, set_conv_algo};
use movq::kernels::winograd::WinogradOptions;
use movq::kernels::winograd4::{Matrices, POINTS, conv3d_winograd4};
use movq::kernels::{Act, Float, reference};
use movq::testing::{CONV_RAW, conv_problem, noncubic_conv_problem, proptest_cases};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod common;

type Dims = (usize, usize, usize);

fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = movq::tensor::SplitMix64(seed);
    (0..n).map(|_| rng.uniform() as f64).collect()
}

/// A 3x3-spatial-tap problem: `noncubic` draws k_d from {1, 2, 4, 5}, otherwise 1..=3.
fn problem(noncubic: bool) -> impl Strategy<Value = (Conv3dParams, Dims, u64)> {
    (any::<[usize; CONV_RAW]>(), any::<u64>()).prop_map(move |(mut raw, seed)| {
        raw[5] |= 1;
        let c = if noncubic { noncubic_conv_problem(raw, 4) } else { conv_problem(raw, 4) };
        (c.p, c.dims, seed)
    })
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![Just(Act::Identity), Just(Act::Silu), Just(Act::Relu), Just(Act::Gelu), Just(Act::Mish)]
}

/// The inputs of one case in f64: x (c_in, d, h, w), prefix (c_in, n_pre, h, w), norm
/// coefficients per channel, weight, bias, residual (out's shape).
struct Case {
    x: Vec<f64>,
    pre: Vec<f64>,
    coeffs: Vec<(f64, f64)>,
    wt: Vec<f64>,
    b: Vec<f64>,
    residual: Vec<f64>,
}

impl Case {
    /// Values rounded to f32, so the f32 and f64 runs read the same data.
    fn new(p: &Conv3dParams, (d, h, w): Dims, n_pre: usize, seed: u64) -> Self {
        let r = |n, s| values(n, s).iter().map(|&v| v as f32 as f64).collect::<Vec<_>>();
        let (d_o, h_o, w_o) = p.out_dims(n_pre + d, h, w).expect("valid by construction");
        Case {
            x: r(p.c_in * d * h * w, seed),
            pre: r(p.c_in * n_pre * h * w, seed ^ 3),
            coeffs: r(2 * p.c_in, seed ^ 4).chunks(2).map(|c| (1.0 + c[0], c[1])).collect(),
            wt: r(p.c_out * p.k_len(), seed ^ 1),
            b: r(p.c_out, seed ^ 2),
            residual: r(p.c_out * d_o * h_o * w_o, seed ^ 5),
        }
    }

    /// prefix ++ norm(x) per channel, the norm computed in T on the process's ISA (as the
    /// kernel's fused norm does) and widened: (c_in, n_pre + d, h, w).
    fn joined<T: Float>(&self, (d, h, w): Dims, n_pre: usize, norm: Option<Act>) -> Vec<f64> {
        let (plane, pre_plane) = (d * h * w, n_pre * h * w);
        let mut all = Vec::new();
        for (ci, &(a, c)) in self.coeffs.iter().enumerate() {
            all.extend_from_slice(&self.pre[ci * pre_plane..(ci + 1) * pre_plane]);
            let mut xn: Vec<T> =
                self.x[ci * plane..(ci + 1) * plane].iter().map(|&v| T::from_f64(v)).collect();
            if let Some(act) = norm {
                T::norm_apply(&mut xn, T::from_f64(a), T::from_f64(c), None, act);
            }
            all.extend(xn.iter().map(|v| v.to_f64()));
        }
        all
    }

    /// conv3d_winograd4 in T with the given options, widened.
    fn fast<T: Float>(
        &self,
        p: &Conv3dParams,
        dims: Dims,
        n_pre: usize,
        norm: Option<Act>,
        acc: bool,
    ) -> Vec<f64> {
        let t = |v: &[f64]| v.iter().map(|&e| T::from_f64(e)).collect::<Vec<T>>();
        let (x, pre, wt, b) = (t(&self.x), t(&self.pre), t(&self.wt), t(&self.b));
        let coeffs: Vec<(T, T)> =
            self.coeffs.iter().map(|&(a, c)| (T::from_f64(a), T::from_f64(c))).collect();
        let opts = WinogradOptions {
            input_norm: norm.map(|act| InputNorm { coeffs: &coeffs, modulation: None, act }),
            accumulate: acc,
            prefix: Some((&pre, n_pre)),
            transformed_weights: None,
            bf16_products: false,
            bf16_dot: None,
            out_frames: None,
            nearest_2x: false,
        };
        let mut out = if acc { t(&self.residual) } else { vec![T::from_f64(f64::NAN); self.residual.len()] };
        conv3d_winograd4(&mut out, &ConvCall { x: &x, dims, weight: &wt, bias: &b, p }, &opts);
        out.iter().map(|v| v.to_f64()).collect()
    }
}

/// reference::conv3d of (p, dims) in f64.
fn direct(p: &Conv3dParams, dims: Dims, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let (d, h, ww) = p.out_dims(dims.0, dims.1, dims.2).expect("valid by construction");
    let mut out = vec![0.0; p.c_out * d * h * ww];
    reference::conv3d(&mut out, &ConvCall { x, dims, weight: w, bias: b, p });
    out
}

/// B of the module comment: F(4x4, 3x3) of |x| (c_in, d, h, w) and |w| with |A^T|, |B^T|, |G|
/// in exact-enough f64, plus |b|. -> (c_out, d_out, h_out, w_out)
fn abs_bound(p: &Conv3dParams, (d, h, w): Dims, x: &[f64], wt: &[f64], b: &[f64]) -> Vec<f64> {
    let m = Matrices::new(POINTS);
    let (at, bt, g) =
        (m.at.map(|r| r.map(f64::abs)), m.bt.map(|r| r.map(f64::abs)), m.g.map(|r| r.map(f64::abs)));
    let (d_o, h_o, w_o) = p.out_dims(d, h, w).expect("valid by construction");
    let mut out = vec![0.0; p.c_out * d_o * h_o * w_o];
    let prod = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for co in 0..p.c_out {
        for t in 0..d_o {
            for ty in 0..h_o.div_ceil(4) {
                for tx in 0..w_o.div_ceil(4) {
                    let mut acc = [[0.0; 6]; 6];
                    for ci in 0..p.c_in {
                        for dt in 0..p.k_d {
                            let Some(s) = p.src_frame(t, dt, d) else { continue };
                            let tile = |k: usize, l: usize| {
                                let yy = (4 * ty + k) as isize - p.pad_h.0 as isize;
                                let xx = (4 * tx + l) as isize - p.pad_w.0 as isize;
                                if yy < 0 || yy >= h as isize || xx < 0 || xx >= w as isize {
                                    return 0.0;
                                }
                                x[((ci * d + s) * h + yy as usize) * w + xx as usize].abs()
                            };
                            let gw = &wt[((co * p.c_in + ci) * p.k_d + dt) * 9..][..9];
                            for r in 0..6 {
                                for c in 0..6 {
                                    let u: f64 = (0..3)
                                        .map(|i| {
                                            (0..3)
                                                .map(|j| g[r][i] * gw[i * 3 + j].abs() * g[c][j])
                                                .sum::<f64>()
                                        })
                                        .sum();
                                    let v: f64 = (0..6)
                                        .map(|k| {
                                            (0..6).map(|l| bt[r][k] * tile(k, l) * bt[c][l]).sum::<f64>()
                                        })
                                        .sum();
                                    acc[r][c] += u * v;
                                }
                            }
                        }
                    }
                    for a in 0..4 {
                        for bb in 0..4 {
                            let (y, xo) = (4 * ty + a, 4 * tx + bb);
                            if y < h_o && xo < w_o {
                                let v: f64 = (0..6).map(|r| at[a][r] * prod(&acc[r], &at[bb])).sum();
                                out[((co * d_o + t) * h_o + y) * w_o + xo] = v + b[co].abs();
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Checks `fast` (a run of `c` with these options in a type of machine epsilon `eps`) against
/// the direct convolution of the joined input `all`, within (K + 28) eps B (module comment).
#[allow(clippy::too_many_arguments)]
fn check(
    fast: &[f64],
    c: &Case,
    p: &Conv3dParams,
    joined: Dims,
    all: &[f64],
    acc: bool,
    eps: f64,
    what: &str,
) -> Result<(), TestCaseError> {
    let mut slow = direct(p, joined, all, &c.wt, &c.b);
    let mut bound = abs_bound(p, joined, all, &c.wt, &c.b);
    if acc {
        for ((s, bd), r) in slow.iter_mut().zip(bound.iter_mut()).zip(&c.residual) {
            *s += r;
            *bd += r.abs();
        }
    }
    let k = (p.c_in * p.k_d + 28) as f64 * eps;
    prop_assert_eq!(fast.len(), slow.len());
    for (i, ((f, s), bd)) in fast.iter().zip(&slow).zip(&bound).enumerate() {
        let tol = k * bd + f64::from(f32::MIN_POSITIVE);
        prop_assert!((f - s).abs() <= tol, "{}: element {}: {} vs {} (tol {:.3e})", what, i, f, s, tol);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(64)))]

    /// f64 and f32 (on the process's ISA) with k_d 1..=3, every padding and time pad, a
    /// carried prefix, an optional fused norm and accumulation.
    #[test]
    fn winograd4_matches_direct_definition(
        (p, dims, seed) in problem(false), n_pre in 0usize..3, norm in proptest::option::of(act()), acc in any::<bool>()
    ) {
        let c = Case::new(&p, dims, n_pre, seed);
        let joined = (n_pre + dims.0, dims.1, dims.2);
        let all = c.joined::<f64>(dims, n_pre, norm);
        check(&c.fast::<f64>(&p, dims, n_pre, norm, acc), &c, &p, joined, &all, acc, f64::EPSILON, "f64")?;
        let all = c.joined::<f32>(dims, n_pre, norm);
        let eps = f64::from(f32::EPSILON);
        check(&c.fast::<f32>(&p, dims, n_pre, norm, acc), &c, &p, joined, &all, acc, eps, "f32")?;
    }

    /// The same with k_d in {1, 2, 4, 5} (non-cubic kernels).
    #[test]
    fn winograd4_noncubic_matches_direct_definition(
        (p, dims, seed) in problem(true), n_pre in 0usize..3, silu in any::<bool>(), acc in any::<bool>()
    ) {
        let norm = silu.then_some(Act::Silu);
        let c = Case::new(&p, dims, n_pre, seed);
        let joined = (n_pre + dims.0, dims.1, dims.2);
        let all = c.joined::<f64>(dims, n_pre, norm);
        check(&c.fast::<f64>(&p, dims, n_pre, norm, acc), &c, &p, joined, &all, acc, f64::EPSILON, "f64")?;
        let all = c.joined::<f32>(dims, n_pre, norm);
        let eps = f64::from(f32::EPSILON);
        check(&c.fast::<f32>(&p, dims, n_pre, norm, acc), &c, &p, joined, &all, acc, eps, "f32")?;
    }
}

/// A layer with several strips of tiles (20 x 17 tiles > `TILES_PER_STRIP`), odd sizes and
/// asymmetric padding: equal to the direct definition, and bitwise the same in rayon pools of
/// 1, 2 and 4 threads.
#[test]
fn winograd4_multi_strip_matches_direct_and_is_thread_count_invariant() {
    let mut p = Conv3dParams::plain(3, 5, (3, 3, 3));
    (p.pad_d, p.pad_h, p.pad_w) = ((2, 0), (1, 1), (2, 0));
    p.time_pad = movq::kernels::params::TimePad::ReplicateFirst;
    let dims = (3, 79, 66);
    let (th, tw) = (79usize.div_ceil(4), 66usize.div_ceil(4));
    assert!(th * tw > movq::kernels::winograd4::TILES_PER_STRIP);
    let c = Case::new(&p, dims, 1, 7);
    let all = c.joined::<f64>(dims, 1, Some(Act::Silu));
    let joined = (4, 79, 66);
    check(
        &c.fast::<f64>(&p, dims, 1, Some(Act::Silu), true),
        &c,
        &p,
        joined,
        &all,
        true,
        f64::EPSILON,
        "f64",
    )
    .unwrap();
    let runs: Vec<Vec<f64>> = [1, 2, 4]
        .iter()
        .map(|&n| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            pool.install(|| c.fast::<f32>(&p, dims, 1, Some(Act::Silu), true))
        })
        .collect();
    let all = c.joined::<f32>(dims, 1, Some(Act::Silu));
    check(&runs[0], &c, &p, joined, &all, true, f64::from(f32::EPSILON), "f32").unwrap();
    for r in &runs[1..] {
        assert!(r.iter().zip(&runs[0]).all(|(a, b)| a.to_bits() == b.to_bits()), "thread counts differ");
    }
}

/// Golden cases with `ConvAlgo::Winograd4` for the whole process (only this test binary): f64
/// stays within the 1e-12 rule, f32 within 6x PyTorch's own f32 rel-L2 (measured at most 3.6x
/// on this set, README; the margin is for other ISAs' rounding). Covers the module and
/// the chunked (carried-cache) paths through `ops::conv`.
#[test]
fn winograd4_golden_cases_through_the_model() {
    set_conv_algo(ConvAlgo::Winograd4);
    let cases =
        ["causalconv3d_first", "resnetblock3d_32to64", "spatialnorm3d_addconv_tf6_tz3", "upsample3d_ct_t3"];
    for name in cases.into_iter().chain(["diffusers_vae_decode_t4"]) {
        let Some(path) = common::golden(name) else { return };
        let movq::verify::CaseOutcome::Ran { torch_f32, runs, .. } =
            movq::verify::verify_file(&path).unwrap()
        else {
            panic!("{name} was skipped");
        };
        for r in &runs {
            match r.precision {
                "f64" => assert!(r.pass, "{name} f64: {r:?}"),
                _ => assert!(r.rel_l2 <= 6.0 * torch_f32.1, "{name} f32: {r:?} vs torch {torch_f32:?}"),
            }
        }
    }
}

/// `--conv winograd4` and `MOVQ_CONV=winograd4` are accepted and reported in the kernels line.
#[test]
fn winograd4_cli_choice_is_reported() {
    for (args, env) in [(&["--conv", "winograd4"][..], None), (&[][..], Some("winograd4"))] {
        let mut cmd = common::movq();
        cmd.args(args).args(["--verbose", "inspect", "missing.safetensors"]);
        if let Some(v) = env {
            cmd.env("MOVQ_CONV", v);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(r#""conv":"winograd4""#), "{err}");
    }
}

/// The `winograd4_` properties again with `MOVQ_ISA=scalar`: the ISA is chosen once per
/// process, so they run in a child process of this test binary.
#[test]
fn scalar_isa_rerun_of_winograd4_properties() {
    if std::env::var("MOVQ_ISA").is_ok() {
        return;
    }
    let out = common::this_test_binary()
        .args(["winograd4_", "--test-threads=1", "--skip", "golden", "--skip", "cli"])
        .env("MOVQ_ISA", "scalar")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "scalar rerun failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ran = stdout.lines().filter(|l| l.starts_with("test winograd4_") && l.ends_with("ok")).count();
    assert!(ran >= 3, "the scalar rerun ran {ran} winograd4_ tests:\n{stdout}");
}
