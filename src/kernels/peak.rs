//! Machine peak microbenchmarks for `movq bench --peak`: f32 FMA throughput on every vector set
//! the CPU runs (the generic [`FmaChains`] kernel, so AVX-512 is measured with zmm, AVX2 with
//! ymm, NEON with q registers), and bf16 dot products (`vdpbf16ps`) where avx512_bf16 exists.
//! The "% of peak" figures use the fastest f32 set.

use super::simd::{Kernel, Simd, Vector};

/// Independent accumulator chains per thread: enough to cover FMA latency x issue width on the
/// CPUs seen (4-cycle latency x 2 pipes needs 8; 12 leaves room).
pub const CHAINS: usize = 12;

/// `iters` rounds of [`CHAINS`] independent FMA chains (`CHAINS * LANES * 2` FLOP per round);
/// returns a value depending on all of them so the work is not optimised away.
pub struct FmaChains {
    pub iters: u64,
}

impl Kernel for FmaChains {
    type Output = f32;
    #[inline(always)]
    fn run<S: Simd>(self, s: S) -> f32 {
        let (a, b) = (s.splat(0.999_999), s.splat(1e-7));
        let mut acc = [s.splat(1.0); CHAINS];
        for _ in 0..self.iters {
            for x in acc.iter_mut() {
                *x = s.fma(*x, a, b);
            }
        }
        let mut sum = s.splat(0.0);
        for x in acc {
            sum = s.add(sum, x);
        }
        s.reduce_max(sum)
    }
}

/// GFLOP/s of `f(iters)` doing `flop_per_iter` each, doubling `iters` until one run lasts
/// `seconds`.
fn measure(seconds: f64, flop_per_iter: u64, f: impl Fn(u64) -> f32) -> f64 {
    let mut iters = 1u64 << 16;
    loop {
        let t0 = std::time::Instant::now();
        std::hint::black_box(f(std::hint::black_box(iters)));
        let dt = t0.elapsed().as_secs_f64();
        if dt >= seconds {
            return (iters * flop_per_iter) as f64 / dt / 1e9;
        }
        iters *= 2;
    }
}

/// This thread's f32 FMA GFLOP/s on vector set `v` over about `seconds`.
pub fn fma_gflops(v: Vector, seconds: f64) -> f64 {
    let lanes = match v {
        #[cfg(target_arch = "x86_64")]
        Vector::Avx512(_) => 16,
        #[cfg(target_arch = "x86_64")]
        Vector::Avx2(_) => 8,
        #[cfg(target_arch = "aarch64")]
        Vector::Neon(_) => 4,
        Vector::Lane1 => 1,
    };
    measure(seconds, (CHAINS * lanes * 2) as u64, |iters| v.run(FmaChains { iters }))
}

/// This thread's bf16 dot-product GFLOP/s (`vdpbf16ps` zmm: 32 products and 32 additions per
/// instruction; ARM `BFDOT` on q registers: 8 and 8), or `None` without avx512_bf16 / FEAT_BF16.
pub fn bf16_gflops(seconds: f64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = super::x86_64::Bf16::detect() {
        let flop = (super::x86_64::CHAINS * 64) as u64;
        return Some(measure(seconds, flop, |iters| super::x86_64::dpbf16_chains(t, iters)));
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(t) = super::bf16_neon::BfdotToken::detect() {
        let flop = (super::bf16_neon::CHAINS * 16) as u64;
        return Some(measure(seconds, flop, |iters| super::bf16_neon::bfdot_chains(t, iters)));
    }
    let _ = seconds;
    None
}
