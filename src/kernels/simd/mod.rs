//! One source for the f32 vector kernels: generic code over [`Simd`], compiled once per
//! instruction set (AVX-512, AVX2 + FMA, NEON, and a one-lane [`Lane1`] for tails and other
//! CPUs) and chosen at run time by [`dispatch`].
//!
//! The implementors are zero-sized tokens that only a successful feature check creates, so the
//! safe methods may use the instructions. [`dispatch`] enters a `#[target_feature]` function for
//! the detected ISA and calls [`Kernel::run`] there; the generic code is `#[inline(always)]`, so
//! it is compiled with that ISA's features (the same scheme as `pulp`'s `WithSimd`; see README,
//! "SIMD layer", for why movq has its own trait).
//!
//! Contract shared by every implementation (the property tests hold each ISA to it):
//! add, sub, mul, div are IEEE single operations; `fma` is fused (one rounding);
//! `max(a, b)` / `min(a, b)` return `b` when either operand is NaN, or NaN (so a NaN in `b`
//! always passes); `round` is round-to-nearest-even; `exp` is [`exp`] below, the same
//! polynomial on every ISA.

pub mod kernels;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// A vector instruction set over f32 lanes (and f64 lanes half as many, for sums).
pub trait Simd: Copy + Send + Sync + 'static {
    /// f32 lanes per vector.
    const LANES: usize;
    type V: Copy;
    /// f64 accumulator vector (LANES / 2 lanes, at least 1).
    type D: Copy;

    fn splat(self, x: f32) -> Self::V;
    /// Loads `s[..LANES]`; panics if `s` is shorter.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores into `d[..LANES]`; panics if `d` is shorter.
    fn store(self, d: &mut [f32], v: Self::V);
    /// (s[0], s[2], .., s[2L-2]) and (s[1], s[3], .., s[2L-1]) from `s[..2 * LANES]`.
    fn load_deinterleaved(self, s: &[f32]) -> (Self::V, Self::V);
    /// d[2i] = a[i], d[2i+1] = b[i] into `d[..2 * LANES]`.
    fn store_interleaved(self, d: &mut [f32], a: Self::V, b: Self::V);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// a * b + c, one rounding.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// c - a * b, one rounding.
    fn fnma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    fn round(self, a: Self::V) -> Self::V;
    /// 2^n for lanes holding integers n in [-126, 127].
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Largest lane (NaN lanes ignored unless all are NaN).
    fn reduce_max(self, a: Self::V) -> f32;

    fn zero_d(self) -> Self::D;
    /// acc + (lanes of `v` as f64), pairing lanes so every lane is added once: returns the new
    /// accumulators (lo, hi) from (acc_lo, acc_hi).
    fn add_widened(self, acc: (Self::D, Self::D), v: Self::V) -> (Self::D, Self::D);
    /// acc + ((lanes of `v` as f64) - mean)^2.
    fn add_sq_dev_widened(self, acc: (Self::D, Self::D), v: Self::V, mean: f64) -> (Self::D, Self::D);
    /// Sum of the lanes, lane 0 first.
    fn reduce_d(self, a: Self::D) -> f64;
}

/// One lane of plain f32: the tails of the vector loops, and the kernels on CPUs without one of
/// the vector sets. Follows the [`Simd`] contract exactly (e.g. `fma` is `f32::mul_add`).
#[derive(Clone, Copy, Debug)]
pub struct Lane1;

impl Simd for Lane1 {
    const LANES: usize = 1;
    type V = f32;
    type D = f64;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: f32) {
        d[0] = v;
    }
    #[inline(always)]
    fn load_deinterleaved(self, s: &[f32]) -> (f32, f32) {
        (s[0], s[1])
    }
    #[inline(always)]
    fn store_interleaved(self, d: &mut [f32], a: f32, b: f32) {
        d[0] = a;
        d[1] = b;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn fnma(self, a: f32, b: f32, c: f32) -> f32 {
        (-a).mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b { a } else { b }
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn reduce_max(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    fn zero_d(self) -> f64 {
        0.0
    }
    #[inline(always)]
    fn add_widened(self, acc: (f64, f64), v: f32) -> (f64, f64) {
        (acc.0 + v as f64, acc.1)
    }
    #[inline(always)]
    fn add_sq_dev_widened(self, acc: (f64, f64), v: f32, mean: f64) -> (f64, f64) {
        let d = v as f64 - mean;
        (acc.0 + d * d, acc.1)
    }
    #[inline(always)]
    fn reduce_d(self, a: f64) -> f64 {
        a
    }
}

/// e^x on every lane: x = n ln2 + r with |r| <= ln2/2 (Cephes' two-part ln2), a degree-6
/// polynomial for e^r, times 2^n built in two halves so n = 128 stays finite. Relative error
/// about 1 ulp on [-87.3, 88.7]; inputs are clamped to that range; NaN in, NaN out.
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    let x = s.max(s.splat(-87.3), s.min(s.splat(88.7), x));
    let n = s.round(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    let r = s.fnma(n, s.splat(0.693_359_4), x);
    let r = s.fnma(n, s.splat(-2.121_944_4e-4), r);
    let mut p = s.splat(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = s.fma(p, r, s.splat(c));
    }
    let e = s.fma(p, s.mul(r, r), s.add(r, s.splat(1.0)));
    // n in [-126, 128]: 2^n = 2^h * 2^(n - h) with h = round(n / 2); both in [-63, 64], so
    // e * 2^h is exact and only the last product rounds (to a subnormal, near -87).
    let half = s.round(s.mul(n, s.splat(0.5)));
    s.mul(s.mul(e, s.pow2i(half)), s.pow2i(s.sub(n, half)))
}

/// A computation written once over [`Simd`]; [`dispatch`] runs it with the detected ISA.
pub trait Kernel {
    type Output;
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// The vector ISAs [`dispatch`] can enter. `None` of them: the kernels run on [`Lane1`].
#[derive(Clone, Copy, Debug)]
pub enum Vector {
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512),
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2),
    #[cfg(target_arch = "aarch64")]
    Neon(neon::Neon),
    Lane1,
}

impl Vector {
    /// The widest vector set this CPU runs, `MOVQ_ISA` permitting (`avx2` caps it at AVX2).
    pub fn detect(cap: Option<&str>) -> Vector {
        #[cfg(target_arch = "x86_64")]
        {
            let allow_512 = !cap.is_some_and(|c| c.eq_ignore_ascii_case("avx2"));
            if allow_512 && let Some(t) = x86::Avx512::detect() {
                return Vector::Avx512(t);
            }
            if let Some(t) = x86::Avx2::detect() {
                return Vector::Avx2(t);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let _ = cap;
            return Vector::Neon(neon::Neon::new());
        }
        #[allow(unreachable_code)]
        {
            let _ = cap;
            Vector::Lane1
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Vector::Avx512(_) => "avx512",
            #[cfg(target_arch = "x86_64")]
            Vector::Avx2(_) => "avx2+fma",
            #[cfg(target_arch = "aarch64")]
            Vector::Neon(_) => "neon",
            Vector::Lane1 => "lane1",
        }
    }

    /// f32 lanes of one vector.
    pub fn lanes(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Vector::Avx512(_) => x86::Avx512::LANES,
            #[cfg(target_arch = "x86_64")]
            Vector::Avx2(_) => x86::Avx2::LANES,
            #[cfg(target_arch = "aarch64")]
            Vector::Neon(_) => neon::Neon::LANES,
            Vector::Lane1 => Lane1::LANES,
        }
    }

    /// Runs `k` on this ISA.
    #[inline]
    pub fn run<K: Kernel>(self, k: K) -> K::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            Vector::Avx512(t) => x86::run_avx512(t, k),
            #[cfg(target_arch = "x86_64")]
            Vector::Avx2(t) => x86::run_avx2(t, k),
            #[cfg(target_arch = "aarch64")]
            Vector::Neon(t) => k.run(t),
            Vector::Lane1 => k.run(Lane1),
        }
    }

    /// Every vector ISA this CPU runs, widest first, and [`Lane1`] (what property tests cover).
    #[allow(clippy::vec_init_then_push)] // the pushes depend on the target
    pub fn all_available() -> Vec<Vector> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(t) = x86::Avx512::detect() {
                v.push(Vector::Avx512(t));
            }
            if let Some(t) = x86::Avx2::detect() {
                v.push(Vector::Avx2(t));
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Vector::Neon(neon::Neon::new()));
        v.push(Vector::Lane1);
        v
    }
}

/// Runs `k` with the process-wide vector ISA ([`super::isa`]); the scalar ISA runs it on
/// [`Lane1`] (callers that have a reference twin call the twin instead).
#[inline]
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    match super::isa() {
        super::Isa::Vector(v) => v.run(k),
        super::Isa::Scalar => Lane1.run_kernel(k),
    }
}

impl Lane1 {
    #[inline(always)]
    fn run_kernel<K: Kernel>(self, k: K) -> K::Output {
        k.run(self)
    }
}
