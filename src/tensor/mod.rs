//! `Tensor<T>`: an owned, contiguous NCDHW tensor of `f32` or `f64`.
//!
//! The f64 instantiation is the high-precision reference mode: the same code runs with another
//! element type, so a f64 decode is the f32 decode's exact twin up to rounding.

pub mod heap;
pub mod huge_pages;
mod random;
mod region;
mod shape;

pub use random::SplitMix64;
pub use region::Region;
pub use shape::Shape;

use crate::error::{Error, Result};
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// The element types movq computes in: `f32` (default) and `f64` (reference mode).
pub trait Element:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + 'static
{
    /// "f32" or "f64".
    const NAME: &'static str;
    const ZERO: Self;
    const ONE: Self;
    fn from_f32(x: f32) -> Self;
    /// Rounds to nearest for `f32`.
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn erf(self) -> Self;
    fn tanh(self) -> Self;
    fn ln_1p(self) -> Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    /// `s` as `&[Self]` when `Self` is f32 (a weight used in place, without a copy).
    fn from_f32_slice(s: &[f32]) -> Option<&[Self]>;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
    fn ln_1p(self) -> Self {
        f32::ln_1p(self)
    }
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn from_f32_slice(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    fn max(self, other: Self) -> Self {
        f64::max(self, other)
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn from_f32_slice(_: &[f32]) -> Option<&[f64]> {
        None
    }
}

/// The multi-index of flat position `i` in `dims` (row-major).
pub fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate().rev() {
        idx[k] = i % d.max(1);
        i /= d.max(1);
    }
    idx
}

/// An empty vector with room for `len` elements, or [`Error::TooLarge`] naming `what`.
fn try_reserved<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        what: what.to_string(),
        reason: format!(
            "cannot allocate {len} elements ({} MiB)",
            len.saturating_mul(std::mem::size_of::<T>()) >> 20
        ),
    })?;
    Ok(v)
}

/// Allocates `len` copies of `value`, returning an error instead of aborting when the
/// allocation cannot be made.
pub fn try_filled<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_reserved(len, what)?;
    v.resize(len, value);
    Ok(v)
}

/// A zero-filled vector of `len` elements, or [`Error::TooLarge`] naming `what` if the memory
/// cannot be reserved ([`zeroed`]).
pub fn try_zeroed<T: Element>(len: usize, what: &str) -> Result<Vec<T>> {
    // Reserving first turns an impossible size into an error instead of an abort.
    drop(try_reserved::<T>(len, what)?);
    Ok(zeroed(len))
}

/// Blocks from this size on are cleared by the thread pool when [`zeroed`] is called from
/// outside it.
pub const PARALLEL_ZERO_BYTES: usize = 4 << 20;

/// A zero-filled vector of `len` elements. Called from outside the thread pool (the layers
/// between two parallel ops), a large block is cleared by every thread of the pool, which
/// also takes the page faults of fresh memory. Otherwise the zeros come from the allocator
/// (`calloc`: fresh blocks are zero pages, a block reused from the heap is cleared by
/// calloc): a fill pass in one thread, on fresh mappings, cost 9 % of a decode's CPU time
/// (seed config, perf), and calloc's clearing of reused blocks on the main thread, while the
/// pool waited, 2-3 % of a CogVideoX chunked decode (perf, 2026-12-07).
pub fn zeroed<T: Element>(len: usize) -> Vec<T> {
    use rayon::prelude::*;
    let parallel = len.saturating_mul(std::mem::size_of::<T>()) >= PARALLEL_ZERO_BYTES
        && rayon::current_thread_index().is_none()
        && rayon::current_num_threads() > 1;
    if !parallel {
        let v = vec![T::ZERO; len];
        huge_pages::advise(&v);
        return v;
    }
    // No huge-page advice here: advised before this first touch, the kernel cleared whole
    // 2 MiB pages, and clear_page went from 1.0 to 4.3 % of a CogVideoX chunked decode
    // (system time 1.8 -> 3.6 s; perf, 2026-12-07).
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(T::ZERO, len));
    v
}

/// An owned NCDHW tensor; `data.len() == shape.numel()` always holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Shape,
    data: Vec<T>, // (n, c, d, h, w)
}

impl<T: Element> Tensor<T> {
    /// A zero-filled tensor; errors if the size overflows or cannot be allocated.
    pub fn zeros(shape: Shape) -> Result<Self> {
        let len = shape.numel()?;
        Ok(Tensor { shape, data: try_zeroed(len, &format!("tensor {shape}"))? })
    }

    /// Wraps `data` (row-major NCDHW) as a tensor of `shape`.
    pub fn from_vec(shape: Shape, data: Vec<T>) -> Result<Self> {
        let len = shape.numel()?;
        if data.len() != len {
            return Err(Error::ShapeMismatch {
                op: "Tensor::from_vec",
                expected: format!("{len} elements for {shape}"),
                got: format!("{} elements", data.len()),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// Errors with `op` in the message unless the shape is `expected`.
    pub fn expect_shape(&self, op: &'static str, expected: Shape) -> Result<()> {
        if self.shape != expected {
            return Err(Error::ShapeMismatch {
                op,
                expected: expected.to_string(),
                got: self.shape.to_string(),
            });
        }
        Ok(())
    }
}

/// `numel(shape)` deterministic pseudo-random values, approximately N(0, 1) (sum of four
/// uniforms, rescaled), from `seed`. For benchmarks and tests.
pub fn random_normal(shape: &[usize], seed: u64) -> Result<Vec<f32>> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| Error::TooLarge {
        what: format!("random tensor {shape:?}"),
        reason: "size overflows".into(),
    })?;
    let mut rng = SplitMix64(seed);
    let mut v = try_filled(n, 0.0f32, "random tensor")?;
    // Var(U(-1, 1)) = 1/3, so the sum of four has variance 4/3.
    let norm = (3.0f32 / 4.0).sqrt();
    for x in v.iter_mut() {
        *x = (rng.uniform() + rng.uniform() + rng.uniform() + rng.uniform()) * norm;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks are cleared by the global pool (called from outside it) or by calloc
    /// (inside a pool), including blocks the allocator hands back after they were freed dirty.
    #[test]
    fn zeroed_blocks_are_zero_on_every_path() {
        let len = PARALLEL_ZERO_BYTES / 4 + 1000;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
        for inside in [false, true] {
            for _ in 0..3 {
                drop(vec![f32::NAN; len]);
                let v: Vec<f32> = match inside {
                    false => zeroed(len),
                    true => pool.install(|| zeroed(len)),
                };
                assert_eq!(v.len(), len);
                assert!(v.iter().all(|x| x.to_bits() == 0), "inside the pool: {inside}");
            }
        }
    }
}
