//! Kernel benchmarks at the decoder's real layer shapes. Throughput is reported in elements/s
//! where one "element" is one FLOP (2 per multiply-add, spec section 13), so criterion's
//! "Gelem/s" reads as GFLOP/s; the norm pass counts bytes moved (GB/s).
//!
//! Run: `cargo bench --bench kernels` (add `-- conv3d` to filter). Compare with the machine's
//! FMA peak (perf-notes: 117 GFLOP/s per core, 231 on two).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use movq::kernels::conv3d::conv3d;
use movq::kernels::params::Conv3dParams;
use movq::kernels::params::ConvCall;
use movq::kernels::winograd4::conv3d_winograd4;
use movq::model::PadMode;
use movq::model::conv::causal_params;
use movq::ops::attention::frame_attention;
use movq::ops::norm::{GroupNormParams, Modulation, NormPlan};
use movq::tensor::{Shape, Tensor, random_normal};
use std::hint::black_box;

fn data(n: usize, seed: u64) -> Vec<f32> {
    random_normal(&[n], seed).unwrap()
}

/// One conv layer; `winograd4` runs F(4x4, 3x3) (opt-in) instead of the process's choice.
fn bench_conv(c: &mut Criterion, name: &str, p: &Conv3dParams, dims: (usize, usize, usize), winograd4: bool) {
    let (d, h, w) = p.out_dims(dims.0, dims.1, dims.2).unwrap();
    let x = data(p.c_in * dims.0 * dims.1 * dims.2, 1);
    let wt: Vec<f32> = data(p.c_out * p.k_len(), 2).iter().map(|v| v * 0.01).collect();
    let b = vec![0.0f32; p.c_out];
    let mut out = vec![0.0f32; p.c_out * d * h * w];
    let flops = 2 * p.c_out * p.k_len() * d * h * w;
    let mut g = c.benchmark_group("conv3d");
    g.sample_size(10).throughput(Throughput::Elements(flops as u64));
    g.bench_function(name, |bch| {
        bch.iter(|| {
            let call = ConvCall { x: &x, dims, weight: &wt, bias: &b, p };
            if winograd4 {
                conv3d_winograd4(black_box(&mut out), &call, &Default::default())
            } else {
                conv3d(black_box(&mut out), &call)
            }
        })
    });
    g.finish();
}

fn convs(c: &mut Criterion) {
    for (ch, hw) in [(512, 32), (256, 64), (128, 128)] {
        let p = causal_params(ch, ch, 3, PadMode::First).unwrap();
        bench_conv(c, &format!("c{ch}_d2_{hw}x{hw}_k3"), &p, (2, hw, hw), false);
        bench_conv(c, &format!("c{ch}_d2_{hw}x{hw}_k3_winograd4"), &p, (2, hw, hw), true);
    }
    // The upsampler's 3x3 Conv2d on an upsampled frame.
    let mut p = Conv3dParams::plain(512, 512, (1, 3, 3));
    p.pad_h = (1, 1);
    p.pad_w = (1, 1);
    bench_conv(c, "upsample_c512_64x64_k1x3x3", &p, (1, 64, 64), false);
    // SpatialNorm conv_y at latent resolution and the 1x1x1 shortcut.
    bench_conv(c, "c256_to_128_d13_64x64_k1", &Conv3dParams::plain(256, 128, (1, 1, 1)), (13, 64, 64), false);
}

/// The Winograd panel product alone (one transformed position, one thread): c_out x c_in x k_d
/// multiply-adds per tile, so its GFLOP/s read directly against the FMA peak.
fn panels(c: &mut Criterion) {
    use movq::kernels::simd::Vector;
    use movq::kernels::winograd_panels::{NR, PanelArgs, PanelProduct, m_ld, panel_ldc};
    let v = Vector::detect(None);
    let mr = 2 * v.lanes();
    let mut g = c.benchmark_group("panels");
    g.sample_size(10);
    // CogVideoX-2b's 512-channel level (60x90 frames: 1350 tiles), the seed's 256 x 64x64
    // and its 128 x 128x128 (a whole frame of tiles).
    for (ch, n_t) in [(512usize, 1350usize), (256, 1024), (128, 4096)] {
        let (nb, k_d) = (n_t.div_ceil(mr), 3);
        let a_len = nb * panel_ldc(ch) * mr;
        let a: Vec<Vec<f32>> = (0..k_d).map(|i| data(a_len, 20 + i as u64)).collect();
        let b = data(k_d * ch.div_ceil(NR) * ch * NR, 30);
        let ld_m = m_ld(n_t, mr);
        let mut m = vec![0.0f32; ch * ld_m];
        g.throughput(Throughput::Elements((2 * ch * ch * k_d * nb * mr) as u64));
        g.bench_function(format!("c{ch}_tiles{n_t}_k3_{}", v.name()), |bch| {
            bch.iter(|| {
                let taps: Vec<Option<&[f32]>> = a.iter().map(|x| Some(&x[..])).collect();
                let args =
                    PanelArgs { m: black_box(&mut m), ld_m, c_out: ch, c_in: ch, n_t, a: &taps, b: &b, mr };
                v.run(PanelProduct(args))
            })
        });
    }
    // The bf16 dot-product kernel where the CPU has one: channel pairs, so c_in / 2 slots;
    // still 2 FLOP per multiply-add of the c_in channels, read against `bench --peak`'s bf16.
    if let Some(dot) = movq::kernels::bf16_panels::Bf16Dot::detect() {
        let mr = dot.mr();
        for (ch, n_t) in [(512usize, 1350usize), (256, 1024)] {
            let (nb, k_d, pairs) = (n_t.div_ceil(mr), 3, ch / 2);
            let a_len = nb * panel_ldc(pairs) * mr;
            let pair = |n: usize, seed: u64| -> Vec<f32> {
                data(2 * n, seed)
                    .chunks_exact(2)
                    .map(|q| movq::kernels::bf16_panels::pair(q[0], q[1]))
                    .collect()
            };
            let a: Vec<Vec<f32>> = (0..k_d).map(|i| pair(a_len, 20 + i as u64)).collect();
            let b = pair(k_d * ch.div_ceil(NR) * pairs * NR, 30);
            let ld_m = m_ld(n_t, mr);
            let mut m = vec![0.0f32; ch * ld_m];
            g.throughput(Throughput::Elements((2 * ch * ch * k_d * nb * mr) as u64));
            g.bench_function(format!("c{ch}_tiles{n_t}_k3_{}", dot.name()), |bch| {
                bch.iter(|| {
                    let taps: Vec<Option<&[f32]>> = a.iter().map(|x| Some(&x[..])).collect();
                    let args = PanelArgs {
                        m: black_box(&mut m),
                        ld_m,
                        c_out: ch,
                        c_in: pairs,
                        n_t,
                        a: &taps,
                        b: &b,
                        mr,
                    };
                    dot.panel_product(args)
                })
            });
        }
    }
    g.finish();
}

/// The Winograd weight transform of one 3x3x3 conv (done once per layer and decode call):
/// throughput in weights (c_out x c_in x 27) per second.
fn weight_transform(c: &mut Criterion) {
    use movq::kernels::winograd_weights::{transform_weights, transformed_len};
    let mut g = c.benchmark_group("weight_transform");
    g.sample_size(10);
    for ch in [256usize, 512] {
        let p = causal_params(ch, ch, 3, PadMode::First).unwrap();
        let wt = data(p.c_out * p.k_len(), 2);
        let mut u = vec![0.0f32; transformed_len::<f32>(&p)];
        g.throughput(Throughput::Elements(wt.len() as u64));
        g.bench_function(format!("c{ch}_k3"), |b| b.iter(|| transform_weights(black_box(&mut u), &wt, &p)));
    }
    g.finish();
}

fn norm(c: &mut Criterion) {
    let s = Shape::new(1, 256, 13, 64, 64);
    let n = s.numel().unwrap();
    let mut x = Tensor::from_vec(s, data(n, 3)).unwrap();
    let scale = Tensor::from_vec(s, data(n, 4)).unwrap();
    let shift = Tensor::from_vec(s, data(n, 5)).unwrap();
    let (gamma, beta) = (vec![1.0f32; 256], vec![0.0f32; 256]);
    let p = GroupNormParams { groups: 32, eps: 1e-6 };
    let mut g = c.benchmark_group("spatial_norm");
    g.sample_size(10).throughput(Throughput::Bytes((n * 4) as u64));
    g.bench_function("stats_c256_d13_64x64", |b| {
        b.iter(|| NormPlan::new(&x, (&gamma, &beta), p, Modulation::None, movq::kernels::Act::Silu).unwrap())
    });
    let plan =
        NormPlan::new(&x, (&gamma, &beta), p, Modulation::Full { scale, shift }, movq::kernels::Act::Silu)
            .unwrap();
    // The fused pass reads x, scale and shift and writes x.
    g.throughput(Throughput::Bytes((4 * n * 4) as u64));
    g.bench_function("apply_c256_d13_64x64_silu", |b| b.iter(|| plan.apply_inplace(&mut x).unwrap()));
    g.finish();
}

fn attention(c: &mut Criterion) {
    let s = Shape::new(1, 512, 4, 16, 16);
    let n = s.numel().unwrap();
    let (q, k, v) = (
        Tensor::from_vec(s, data(n, 6)).unwrap(),
        Tensor::from_vec(s, data(n, 7)).unwrap(),
        Tensor::from_vec(s, data(n, 8)).unwrap(),
    );
    let flops = 4 * 4 * 256 * 256 * 512;
    let mut g = c.benchmark_group("attention");
    g.sample_size(10).throughput(Throughput::Elements(flops as u64));
    g.bench_function("c512_256tok_4frames", |b| b.iter(|| frame_attention(&q, &k, &v).unwrap()));
    g.finish();
}

/// The SIMD-layer choice (README, "SIMD layer"): one L2-resident affine + modulation + ReLU
/// pass written three ways: movq's own `kernels::simd` trait (run-time dispatch), `pulp`'s
/// `WithSimd` (run-time dispatch), and a plain loop with unfused multiply-adds (what a
/// compile-time layer such as `wide` gets in a portable x86-64 build: SSE2).
fn simd_layer(c: &mut Criterion) {
    use movq::kernels::simd::{Vector, kernels::NormApply};
    struct PulpNorm<'a> {
        buf: &'a mut [f32],
        scale: &'a [f32],
        shift: &'a [f32],
    }
    impl pulp::WithSimd for PulpNorm<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, s: S) {
            let (head, tail) = S::as_mut_simd_f32s(self.buf);
            let (sc, sc_t) = S::as_simd_f32s(self.scale);
            let (sh, sh_t) = S::as_simd_f32s(self.shift);
            let (a, b, zero) = (s.splat_f32s(1.5), s.splat_f32s(0.25), s.splat_f32s(0.0));
            for ((x, k), h) in head.iter_mut().zip(sc).zip(sh) {
                let y = s.mul_add_f32s(*x, a, b);
                *x = s.max_f32s(zero, s.mul_add_f32s(y, *k, *h));
            }
            for ((x, k), h) in tail.iter_mut().zip(sc_t).zip(sh_t) {
                *x = (x.mul_add(1.5, 0.25).mul_add(*k, *h)).max(0.0);
            }
        }
    }
    let n = 16 * 1024;
    let (mut buf, scale, shift) = (data(n, 9), data(n, 10), data(n, 11));
    let v = Vector::detect(None);
    let mut g = c.benchmark_group("simd_layer");
    g.throughput(Throughput::Bytes((4 * n * 4) as u64));
    g.bench_function(format!("movq_simd_{}", v.name()), |b| {
        b.iter(|| {
            let m = Some((&scale[..], &shift[..]));
            v.run(NormApply {
                buf: black_box(&mut buf),
                a: 1.5,
                b: 0.25,
                modulation: m,
                act: movq::kernels::Act::Relu,
            })
        })
    });
    let arch = pulp::Arch::new();
    g.bench_function("pulp", |b| {
        b.iter(|| arch.dispatch(PulpNorm { buf: black_box(&mut buf), scale: &scale, shift: &shift }))
    });
    // Unfused multiply-adds: without FMA in the build's baseline, `mul_add` would be a libm call.
    g.bench_function("plain_loop_sse2", |b| {
        b.iter(|| {
            for ((x, k), h) in black_box(&mut buf).iter_mut().zip(&scale).zip(&shift) {
                *x = ((*x * 1.5 + 0.25) * k + h).max(0.0);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, convs, panels, weight_transform, norm, attention, simd_layer);
criterion_main!(benches);
