//! bf16 products emulated in f32 (`--precision bf16-emulated`, `movq::kernels::bf16`): the
//! convolutions round their gemm operands to bf16 and sum in f32; nothing else changes. The
//! switch is process-wide, so this binary holds every test that sets it (one at a time).

mod common;

use movq::io::Loader;
use movq::kernels::bf16::round_bf16;
use movq::kernels::params::{Conv3dParams, ConvCall, set_bf16_products};
use movq::kernels::reference;
use movq::model::{DecodeMode, DecoderConfig, DecoderPlan};
use movq::ops::conv::{ConvInput, ConvLayer, conv3d};
use movq::tensor::{Shape, Tensor};
use movq::verify::{CaseOutcome, verify_file_with};
use std::sync::{Mutex, OnceLock};

/// Serialises the tests of this binary: they flip the process-wide switch.
static SWITCH: Mutex<()> = Mutex::new(());

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// conv of one sample through the engine's op (`ops::conv::conv3d`), bf16 products on or off.
fn engine_conv(
    p: &Conv3dParams,
    dims: (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    b: &[f32],
    bf16: bool,
) -> Vec<f32> {
    let (d, h, wd) = dims;
    let x = Tensor::from_vec(Shape::new(1, p.c_in, d, h, wd), x.to_vec()).unwrap();
    let layer = ConvLayer { op: "test", weight: w, bias: b, params: p, transformed: None, nearest_2x: false };
    set_bf16_products(bf16);
    let y = conv3d(&layer, ConvInput::plain(&x));
    set_bf16_products(false);
    y.unwrap().into_vec()
}

/// The direct convolution in f64 of x and w as given.
fn direct(p: &Conv3dParams, dims: (usize, usize, usize), x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let (x, w, b) = (f(x), f(w), f(b));
    let (d_o, h_o, w_o) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
    let mut out = vec![0.0; p.c_out * d_o * h_o * w_o];
    reference::conv3d(&mut out, &ConvCall { x: &x, dims, weight: &w, bias: &b, p });
    out
}

fn rel_l2(a: &[f32], r: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(r).map(|(&a, &r)| (a as f64 - r).powi(2)).sum();
    (d / r.iter().map(|r| r * r).sum::<f64>()).sqrt()
}

/// im2col convs (taps other than 3x3): exactly the direct conv of the bf16-rounded input and
/// weights, up to f32 summation (bias unrounded: it is added, not multiplied).
#[test]
fn im2col_convs_multiply_the_rounded_operands() {
    let _g = SWITCH.lock().unwrap();
    for (k, dims) in [((1, 1, 1), (2, 5, 6)), ((2, 1, 3), (3, 4, 7)), ((3, 5, 5), (3, 6, 6))] {
        let p = Conv3dParams::plain(5, 4, k);
        let x = values(5 * dims.0 * dims.1 * dims.2, 1);
        let w = values(4 * p.k_len(), 2);
        let b = values(4, 3);
        let got = engine_conv(&p, dims, &x, &w, &b, true);
        let r = |v: &[f32]| v.iter().map(|&a| round_bf16(a)).collect::<Vec<_>>();
        let want = direct(&p, dims, &r(&x), &r(&w), &b);
        let bound: f64 = 1e-6 * p.k_len() as f64;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((*g as f64 - w).abs() <= bound, "k {k:?} [{i}]: {g} vs {w}");
        }
        // And not the f32 conv: the rounding happened.
        let plain = engine_conv(&p, dims, &x, &w, &b, false);
        assert_ne!(got, plain, "k {k:?}");
    }
}

/// Winograd convs round the transformed operands: the error against the exact conv is of bf16
/// size (2^-9 relative per operand), far above f32's, and a layer's cached f32 transforms are
/// not used for bf16 products.
#[test]
fn winograd_convs_have_bf16_sized_error_and_bypass_the_f32_cache() {
    let _g = SWITCH.lock().unwrap();
    let mut p = Conv3dParams::plain(16, 8, (3, 3, 3));
    p.pad_h = (1, 1);
    p.pad_w = (1, 1);
    let dims = (4, 9, 10);
    let x = values(16 * 4 * 9 * 10, 5);
    let w = values(8 * p.k_len(), 6);
    let b = values(8, 7);
    let exact = direct(&p, dims, &x, &w, &b);
    let f32_err = rel_l2(&engine_conv(&p, dims, &x, &w, &b, false), &exact);
    let bf16 = engine_conv(&p, dims, &x, &w, &b, true);
    let bf16_err = rel_l2(&bf16, &exact);
    assert!(f32_err < 1e-6, "f32 {f32_err:e}");
    assert!((1e-4..2e-2).contains(&bf16_err), "bf16 {bf16_err:e} (f32 {f32_err:e})");

    let cell = OnceLock::new();
    let xt = Tensor::from_vec(Shape::new(1, 16, 4, 9, 10), x.clone()).unwrap();
    let layer = ConvLayer {
        op: "test",
        weight: &w,
        bias: &b,
        params: &p,
        transformed: Some(&cell),
        nearest_2x: false,
    };
    let f32_cached = conv3d(&layer, ConvInput::plain(&xt)).unwrap();
    assert!(cell.get().is_some(), "the f32 call fills the layer cache");
    set_bf16_products(true);
    let bf16_cached = conv3d(&layer, ConvInput::plain(&xt));
    set_bf16_products(false);
    assert_eq!(bf16_cached.unwrap().data(), &bf16[..], "bf16 products ignore the f32 transforms");
    assert_ne!(f32_cached.data(), &bf16[..]);
}

/// A small CogVideoX-style decoder with random weights (the same weights every call).
fn tiny_decoder() -> movq::Decoder<f32> {
    let cfg = DecoderConfig::from_json(
        r#"{"class": "CogVideoXDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1,
            "attn_resolutions": [], "resolution": 32, "z_channels": 4}"#,
    )
    .unwrap();
    movq::Decoder::load(&Loader::random(3).root(), &DecoderPlan::new(&cfg).unwrap()).unwrap()
}

/// z: (1, 4, 3, 6, 5)
fn tiny_latent() -> Tensor<f32> {
    let s = Shape::new(1, 4, 3, 6, 5);
    Tensor::from_vec(s, movq::tensor::random_normal(&s.dims(), 4).unwrap()).unwrap()
}

/// A whole decoder: finite, and off the f32 output by a bf16-sized amount.
#[test]
fn decoder_output_moves_by_a_bf16_sized_amount() {
    let _g = SWITCH.lock().unwrap();
    let (dec, z) = (tiny_decoder(), tiny_latent());
    let f32_out = dec.decode(&z, &DecodeMode::Whole).unwrap();
    set_bf16_products(true);
    let bf16_out = dec.decode(&z, &DecodeMode::Whole);
    set_bf16_products(false);
    let bf16_out = bf16_out.unwrap();
    let reference: Vec<f64> = f32_out.data().iter().map(|&v| v as f64).collect();
    let d = rel_l2(bf16_out.data(), &reference);
    assert!((1e-5..5e-2).contains(&d), "bf16 vs f32 rel-L2 {d:e}");
}

/// A decoder's own bf16 setting is what the process-wide switch does, bit for bit, and stays
/// its own: an f32 decoder decoding at the same time on another thread is unaffected.
#[test]
fn a_decoders_own_bf16_setting_leaves_other_decoders_alone() {
    let _g = SWITCH.lock().unwrap();
    let z = tiny_latent();
    let plain = tiny_decoder();
    let f32_out = plain.decode(&z, &DecodeMode::Whole).unwrap();
    set_bf16_products(true);
    let switched = plain.decode(&z, &DecodeMode::Chunked);
    set_bf16_products(false);
    let switched = switched.unwrap();
    let mut own = tiny_decoder();
    own.emulate_bf16_products(true);
    assert_eq!((own.precision_name(), plain.precision_name()), ("bf16-emulated", "f32"));
    let (mine, theirs) = std::thread::scope(|sc| {
        let a = sc.spawn(|| own.decode(&z, &DecodeMode::Chunked).unwrap());
        let b =
            sc.spawn(|| (0..3).map(|_| plain.decode(&z, &DecodeMode::Whole).unwrap()).collect::<Vec<_>>());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(mine, switched, "own setting = process-wide switch");
    assert_ne!(mine, f32_out);
    for t in theirs {
        assert_eq!(t, f32_out, "the f32 decoder stays f32");
    }
    assert!(!movq::kernels::params::bf16_products(), "the setting does not leak to the thread");
    // Both decodes as jobs of one rayon pool: a worker blocked inside the bf16 decode's kernels
    // may run the f32 decode's job, which keeps its own setting.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for _ in 0..3 {
        let (mine, theirs) = pool.install(|| {
            rayon::join(
                || own.decode(&z, &DecodeMode::Chunked).unwrap(),
                || plain.decode(&z, &DecodeMode::Whole).unwrap(),
            )
        });
        assert_eq!(mine, switched);
        assert_eq!(theirs, f32_out);
    }
}

/// `verify_file_with(.., true)` adds a measured "bf16e" run with the 8-bit video PSNR of a
/// decoder case; f32 and f64 are judged as without it.
#[test]
fn verify_reports_a_bf16_run() {
    let _g = SWITCH.lock().unwrap();
    let Some(path) = common::golden("movq_single_frame_t1") else { return };
    let CaseOutcome::Ran { runs, .. } = verify_file_with(&path, true).unwrap() else { panic!("skipped") };
    let names: Vec<_> = runs.iter().map(|r| r.precision).collect();
    assert_eq!(names, ["f32", "f64", "bf16e"]);
    assert!(runs[0].pass && runs[1].pass);
    let (f32_run, bf16_run) = (&runs[0], &runs[2]);
    assert!(bf16_run.rel_l2 > 10.0 * f32_run.rel_l2, "{} vs {}", bf16_run.rel_l2, f32_run.rel_l2);
    let db = bf16_run.psnr8.expect("a decoder case has a video PSNR");
    assert!(db > 20.0, "PSNR {db}");
    assert!(!movq::kernels::params::bf16_products(), "the switch is cleared afterwards");
}

/// `--precision bf16` (the CPU's bf16 dot products): where movq has a kernel (ARM FEAT_BF16,
/// e.g. under qemu; x86 avx512_bf16, e.g. under Bochs), the Winograd conv differs from the
/// emulated bf16 products only by the sums' rounding; elsewhere the op and the CLI refuse it with a named error. f64 never runs it.
#[test]
fn bf16_mode_runs_where_it_can_and_is_a_named_error_elsewhere() {
    use movq::kernels::bf16_panels::Bf16Dot;
    use movq::kernels::params::set_bf16_native;
    let _g = SWITCH.lock().unwrap();
    let mut p = Conv3dParams::plain(9, 8, (3, 3, 3));
    (p.pad_h, p.pad_w) = ((1, 1), (1, 1));
    let dims = (3, 9, 10);
    let (x, w, b) = (values(9 * 3 * 9 * 10, 8), values(8 * p.k_len(), 9), values(8, 10));
    let emulated = engine_conv(&p, dims, &x, &w, &b, true);
    let layer =
        ConvLayer { op: "test", weight: &w, bias: &b, params: &p, transformed: None, nearest_2x: false };
    let xt = Tensor::from_vec(Shape::new(1, 9, 3, 9, 10), x.clone()).unwrap();
    let x64 = Tensor::from_vec(xt.shape(), x.iter().map(|&v| v as f64).collect()).unwrap();
    let (w64, b64): (Vec<f64>, Vec<f64>) =
        (w.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
    let layer64 = ConvLayer {
        op: "test64",
        weight: &w64,
        bias: &b64,
        params: &p,
        transformed: None,
        nearest_2x: false,
    };
    set_bf16_products(true);
    set_bf16_native(true);
    let native = conv3d(&layer, ConvInput::plain(&xt));
    let native64 = conv3d(&layer64, ConvInput::plain(&x64));
    set_bf16_products(false);
    set_bf16_native(false);
    // Another algorithm for the 3x3 convs would round as bf16-emulated: refused, not run.
    let before = movq::kernels::params::conv_algo();
    movq::kernels::params::set_conv_algo(movq::kernels::params::ConvAlgo::Im2col);
    set_bf16_products(true);
    set_bf16_native(true);
    let im2col = conv3d(&layer, ConvInput::plain(&xt));
    set_bf16_products(false);
    set_bf16_native(false);
    movq::kernels::params::set_conv_algo(before);
    let e = im2col.expect_err("the bf16 mode refuses im2col for 3x3 convs");
    assert!(e.to_string().contains("Winograd F(2x2, 3x3) only, not im2col"), "{e}");
    let e = native64.expect_err("f64 refuses the bf16 mode");
    assert!(matches!(e, movq::Error::Unsupported(_)) && e.to_string().contains("f64"), "{e}");
    let cli = common::movq().args(["verify", "--bf16", "no-such-dir"]).output().unwrap();
    // The error names the instruction set's bf16 feature.
    let feature = if cfg!(target_arch = "x86_64") { "avx512_bf16" } else { "FEAT_BF16" };
    match Bf16Dot::detect() {
        Some(dot) => {
            let y = native.unwrap();
            for (i, (&g, &r)) in y.data().iter().zip(&emulated).enumerate() {
                assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "{}: at {i}: {g} vs {r}", dot.name());
            }
            // The layer cache made by a bf16 call serves bf16 calls; an f32 call beside it
            // transforms its own (bitwise the uncached results).
            let cell = OnceLock::new();
            let cached = ConvLayer { transformed: Some(&cell), ..layer };
            set_bf16_products(true);
            set_bf16_native(true);
            let first = conv3d(&cached, ConvInput::plain(&xt)).unwrap();
            let again = conv3d(&cached, ConvInput::plain(&xt)).unwrap();
            set_bf16_products(false);
            set_bf16_native(false);
            assert!(cell.get().is_some_and(|t| t.bf16_pairs), "a bf16 call fills the cache with pairs");
            assert_eq!((first.data(), again.data()), (y.data(), y.data()));
            let f32_cached = conv3d(&cached, ConvInput::plain(&xt)).unwrap();
            let f32_plain = conv3d(&layer, ConvInput::plain(&xt)).unwrap();
            assert_eq!(f32_cached.data(), f32_plain.data());
            // The instruction's sums (rounded to odd, or fused in pairs) are not the gemm's:
            // the kernel path ran.
            assert!(y.data().iter().zip(&emulated).any(|(g, r)| g != r), "{}: emulated path", dot.name());
            // The CLI gets past the bf16 check to the missing directory.
            assert!(!String::from_utf8_lossy(&cli.stderr).contains(feature));
        }
        None => {
            let e = native.expect_err("no bf16 kernel here");
            assert!(matches!(e, movq::Error::Unsupported(_)) && e.to_string().contains(feature), "{e}");
            let err = String::from_utf8_lossy(&cli.stderr);
            assert_eq!(cli.status.code(), Some(2), "{err}");
            assert!(err.contains(feature) && err.contains("bf16-emulated"), "{err}");
        }
    }
}

/// The CLI's decode line names the precision the decode runs in (bf16 products are not an
/// f32 decode), and f32 still as f32.
#[test]
fn the_decode_line_names_the_precision() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = r#"{"ch": 32, "out_ch": 3, "ch_mult": [1, 1], "num_res_blocks": 0, "attn_resolutions": [],
        "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}"#;
    let (w, z) = common::random_model(dir.path(), "tiny", tiny, "1,4,2,4,4");
    for precision in ["bf16-emulated", "f32", "f64"] {
        let out = dir.path().join(format!("{precision}.npy"));
        let o = common::movq()
            .args(["decode", "--quiet", "--precision", precision, "--weights"])
            .arg(&w)
            .arg("--latent")
            .arg(&z)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{precision}: {err}");
        let line = err.lines().find(|l| l.starts_with("decoding z")).unwrap_or_default();
        assert!(line.contains(&format!(" in {precision} (")), "{precision}: {line}");
    }
}
