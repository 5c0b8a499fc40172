//! Kernels: slices in, slices out. The only home of `unsafe` besides the mmap in `io/`.
//!
//! Every fast kernel has a plain twin in [`reference`] with the same contract, and a proptest
//! comparing the two. The instruction set is detected once ([`isa`]); `MOVQ_ISA=scalar` forces
//! the reference kernels (used by CI to test the fallback path).

pub mod activation;
pub mod attention;
pub mod conv3d;
pub mod gemm;
pub mod group_norm;
pub mod input_norm;
pub mod params;
pub mod reference;
pub mod resample;
pub mod vol2col;
pub mod winograd;
pub mod winograd4;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use crate::tensor::Element;
pub use activation::Act;
use std::sync::OnceLock;

/// The instruction set the f32 element-wise kernels use, chosen once per process.
/// (Matrix products always go through the `gemm` crate, which dispatches on its own.)
#[derive(Clone, Copy, Debug)]
pub enum Isa {
    /// Plain Rust: the reference kernels.
    Scalar,
    /// AVX2 + FMA; the token proves the CPU has them.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(x86_64::Avx2Fma),
}

impl Isa {
    /// Detects the best supported ISA, unless `MOVQ_ISA=scalar` is set.
    pub fn detect() -> Isa {
        if std::env::var("MOVQ_ISA").is_ok_and(|v| v.eq_ignore_ascii_case("scalar")) {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(tok) = x86_64::Avx2Fma::detect() {
            return Isa::Avx2Fma(tok);
        }
        Isa::Scalar
    }

    pub fn name(&self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(_) => "avx2+fma",
        }
    }
}

/// The process-wide ISA choice.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

/// Element types with kernels: `f32` uses the SIMD kernels of [`isa`], `f64` the reference ones
/// (the f64 mode is the precision reference, not the fast path).
pub trait Float: Element {
    /// Sum of `x` accumulated in f64.
    fn sum_f64(x: &[Self]) -> f64;
    /// Sum of `(x - mean)^2` accumulated in f64.
    fn sum_sq_dev_f64(x: &[Self], mean: f64) -> f64;
    /// See [`reference::norm_apply`].
    fn norm_apply(buf: &mut [Self], a: Self, b: Self, modulation: Option<(&[Self], &[Self])>, act: Act);
}

impl Float for f64 {
    fn sum_f64(x: &[f64]) -> f64 {
        reference::sum_f64(x)
    }
    fn sum_sq_dev_f64(x: &[f64], mean: f64) -> f64 {
        reference::sum_sq_dev_f64(x, mean)
    }
    fn norm_apply(buf: &mut [f64], a: f64, b: f64, modulation: Option<(&[f64], &[f64])>, act: Act) {
        reference::norm_apply(buf, a, b, modulation, act)
    }
}

impl Float for f32 {
    fn sum_f64(x: &[f32]) -> f64 {
        match isa() {
            Isa::Scalar => reference::sum_f64(x),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(tok) => x86_64::sum_f64(tok, x),
        }
    }
    fn sum_sq_dev_f64(x: &[f32], mean: f64) -> f64 {
        match isa() {
            Isa::Scalar => reference::sum_sq_dev_f64(x, mean),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(tok) => x86_64::sum_sq_dev_f64(tok, x, mean),
        }
    }
    fn norm_apply(buf: &mut [f32], a: f32, b: f32, modulation: Option<(&[f32], &[f32])>, act: Act) {
        match isa() {
            Isa::Scalar => reference::norm_apply(buf, a, b, modulation, act),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma(tok) => x86_64::norm_apply(tok, buf, a, b, modulation, act),
        }
    }
}

/// FLOP per round of the FMA microbenchmark: 12 chains x 8 lanes x 2.
pub const FMA_ROUND_FLOP: u64 = 192;

/// Measures this thread's f32 FMA throughput in GFLOP/s over about `seconds` (AVX2+FMA chains;
/// on Zen 4 and most AVX-512 parts without a second 512-bit FMA unit this is the peak).
/// Returns `None` when the CPU has no FMA path here.
pub fn fma_peak_gflops(seconds: f64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(tok) = x86_64::Avx2Fma::detect() {
        let mut iters = 1u64 << 20;
        loop {
            let t0 = std::time::Instant::now();
            std::hint::black_box(x86_64::fma_chains(tok, std::hint::black_box(iters)));
            let dt = t0.elapsed().as_secs_f64();
            if dt >= seconds {
                return Some((iters * FMA_ROUND_FLOP) as f64 / dt / 1e9);
            }
            iters *= 2;
        }
    }
    let _ = seconds;
    None
}
