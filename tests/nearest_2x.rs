//! The F(2x2, 3x3) convolution of a nearest-2x upsampled input skips the 7 transformed
//! positions that are exactly zero there (`WinogradOptions::nearest_2x`, used by Upsample3D's
//! conv): the output equals the full computation bit for bit, on every path the process can
//! take (f32 tile panels of this ISA, or the `gemm` crate under MOVQ_ISA=scalar and for f64;
//! emulated bf16 products; each bf16 dot-product kernel available here), and the direct
//! convolution in f64 within F(2x2, 3x3)'s usual rounding.

use movq::kernels::bf16_panels::Bf16Dot;
use movq::kernels::params::{Conv3dParams, ConvCall, TimePad};
use movq::kernels::winograd::{WinogradOptions, conv3d_winograd, zero_on_nearest_2x};
use movq::kernels::{Float, reference};

mod common;

fn val(i: usize, k: u64) -> f64 {
    ((i as u64).wrapping_mul(2654435761).wrapping_add(k) % 1000) as f64 / 500.0 - 1.0
}

/// (c, d, 2h, 2w) nearest upsampling of a pseudo-random (c, d, h, w) tensor.
fn upsampled<T: Float>(c: usize, d: usize, h: usize, w: usize) -> Vec<T> {
    let mut x = Vec::with_capacity(c * d * 4 * h * w);
    for cf in 0..c * d {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                x.push(T::from_f64(val((cf * h + y / 2) * w + xx / 2, 1)));
            }
        }
    }
    x
}

fn run<T: Float>(call: &ConvCall<'_, T>, out_len: usize, opts: WinogradOptions<'_, T>) -> Vec<T> {
    let mut out = vec![T::from_f64(f64::NAN); out_len];
    conv3d_winograd(&mut out, call, &opts);
    out
}

fn check<T: Float>(k_d: usize, bf16: bool) {
    // Several input-transform groups, two strips of tile rows, an odd channel count.
    let (c_in, c_out, (d, h, w)) = (21, 13, (3, 36, 61));
    let mut p = Conv3dParams::plain(c_in, c_out, (k_d, 3, 3));
    (p.pad_h, p.pad_w) = ((1, 1), (1, 1));
    if k_d == 3 {
        (p.pad_d, p.time_pad) = ((2, 0), TimePad::ReplicateFirst);
    }
    let x = upsampled::<T>(c_in, d, h, w);
    let dims = (d, 2 * h, 2 * w);
    let wt: Vec<T> = (0..c_out * c_in * k_d * 9).map(|i| T::from_f64(val(i, 7) / 10.0)).collect();
    let b: Vec<T> = (0..c_out).map(|i| T::from_f64(val(i, 3))).collect();
    let call = ConvCall { x: &x, dims, weight: &wt, bias: &b, p: &p };
    let (dd, hh, ww) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
    let n = c_out * dd * hh * ww;
    assert!(hh.div_ceil(2) * ww.div_ceil(2) > movq::kernels::winograd::TILES_PER_STRIP, "two strips");
    let mut dots: Vec<Option<Bf16Dot>> = vec![None];
    if bf16 && T::NAME == "f32" {
        dots.extend(Bf16Dot::all_available().into_iter().map(Some));
    }
    for dot in dots {
        let opts = |nearest_2x| WinogradOptions {
            bf16_products: bf16,
            bf16_dot: dot,
            nearest_2x,
            ..Default::default()
        };
        let full = run(&call, n, opts(false));
        let skip = run(&call, n, opts(true));
        let same = full.iter().zip(&skip).all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
        assert!(
            same,
            "{} k_d {k_d} bf16 {bf16} {:?}: skipping changed the output",
            T::NAME,
            dot.map(|d| d.name())
        );
    }
    if !bf16 {
        let xd: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
        let wd: Vec<f64> = wt.iter().map(|v| v.to_f64()).collect();
        let bd: Vec<f64> = b.iter().map(|v| v.to_f64()).collect();
        let mut want = vec![0.0; n];
        reference::conv3d(&mut want, &ConvCall { x: &xd, dims, weight: &wd, bias: &bd, p: &p });
        let got = run(&call, n, WinogradOptions { nearest_2x: true, ..Default::default() });
        let tol = if T::NAME == "f64" { 1e-12 } else { 1e-4 };
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            assert!((g.to_f64() - r).abs() <= tol * (1.0 + r.abs()), "at {i}: {} vs {r}", g.to_f64());
        }
    }
}

#[test]
fn skipped_positions_are_the_zero_row_and_column() {
    let skipped: Vec<usize> = (0..16).filter(|&xi| zero_on_nearest_2x(xi)).collect();
    assert_eq!(skipped, [2, 6, 8, 9, 10, 11, 14]);
}

#[test]
fn nearest_2x_f32_equals_the_full_product() {
    check::<f32>(1, false);
    check::<f32>(3, false);
}

#[test]
fn nearest_2x_f64_equals_the_full_product() {
    check::<f64>(1, false);
}

#[test]
fn nearest_2x_bf16_equals_the_full_product() {
    check::<f32>(1, true);
}

/// The same on the scalar ISA (`MOVQ_ISA=scalar`: the f32 products through the `gemm` crate).
#[test]
fn nearest_2x_on_the_scalar_isa() {
    if std::env::var("MOVQ_ISA").is_ok() {
        return; // already this run's ISA
    }
    let st = common::this_test_binary()
        .args(["--exact", "nearest_2x_f32_equals_the_full_product", "--test-threads", "1"])
        .env("MOVQ_ISA", "scalar")
        .status()
        .unwrap();
    assert!(st.success());
}
