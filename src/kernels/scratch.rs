//! Scratch buffers for the convolution kernels: [`take`] hands out a buffer from a small
//! process-wide pool per element type, and dropping the [`Scratch`] returns it; the pool keeps
//! at most [`POOL_BYTES`] between uses (now 0: measured, idle buffers cost more peak RSS than
//! their reuse saves time).
//!
//! Contents are NOT cleared: every user overwrites what it reads. The pool keeps at most
//! [`POOL_BUFFERS`] buffers, so what it holds is bounded by the largest scratch set of one
//! convolution call (see `model::memory`, `CONV_SCRATCH_BYTES`).

use super::Float;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers the pool keeps per element type (a Winograd call uses at most 2 k_d + 1 at once:
/// k_d frames, the product, the weights and k_d - 2 merged tap sets of a replicated first frame).
pub const POOL_BUFFERS: usize = 8;

/// Bytes the pool keeps between uses, per element type. Idle buffers count towards the peak
/// RSS of whatever runs next (the activations of the large late layers), so larger ones are
/// freed; see README (Performance) for the measured trade-off.
/// Measured on the seed config (README, Performance): keeping 64 MiB raised peak RSS by 68 MiB
/// and changed the time by less than the run-to-run noise, so idle buffers are freed (the
/// Winograd kernel reuses its frame buffers within a call itself).
pub const POOL_BYTES: usize = 0;

/// Element types with a scratch pool.
pub trait Pooled: Sized + 'static {
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

impl Pooled for f32 {
    fn pool() -> &'static Mutex<Vec<Vec<f32>>> {
        static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
        &POOL
    }
}

impl Pooled for f64 {
    fn pool() -> &'static Mutex<Vec<Vec<f64>>> {
        static POOL: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
        &POOL
    }
}

/// A buffer of `len` elements with unspecified contents, back to the pool when dropped.
pub struct Scratch<T: Float> {
    buf: Vec<T>,
    /// Start of the handed-out part: its first element is 64-byte aligned, so vector loads of
    /// packed panels never straddle cache lines (malloc gives large buffers 16 bytes past a page).
    off: usize,
    len: usize,
}

/// Elements a buffer is longer than asked, to place an aligned start.
const ALIGN_SLACK: usize = 16;

/// A scratch buffer of `len` elements: the smallest pooled one that is large enough, else a
/// new one. Contents are unspecified (stale or zero).
pub fn take<T: Float>(len: usize) -> Scratch<T> {
    let want = len + ALIGN_SLACK;
    let pooled = {
        let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
        let fit = (0..pool.len()).filter(|&i| pool[i].len() >= want).min_by_key(|&i| pool[i].len());
        fit.map(|i| pool.swap_remove(i))
    };
    let buf = pooled.unwrap_or_else(|| {
        // Zeroed by calloc, or by the pool for a large block ([`crate::tensor::zeroed`]).
        crate::tensor::zeroed(want)
    });
    // Where this block starts decides the offset to its first 64-byte boundary.
    let off = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    Scratch { buf, off, len }
}

impl<T: Float> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
        pool.push(buf);
        let bytes =
            |p: &Vec<Vec<T>>| p.iter().map(|b| b.capacity() * std::mem::size_of::<T>()).sum::<usize>();
        while pool.len() > POOL_BUFFERS || bytes(&pool) > POOL_BYTES {
            let i = (0..pool.len()).max_by_key(|&i| pool[i].capacity()).expect("non-empty");
            pool.swap_remove(i);
        }
    }
}

impl<T: Float> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T: Float> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Frees every pooled buffer (after a decode, to give the memory back to the allocator).
pub fn release<T: Float>() {
    T::pool().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_asked_length_whatever_the_pool_holds() {
        for len in [1000, 500, 2000, 0, 3] {
            let mut a = take::<f64>(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0, "scratch start not 64-byte aligned");
            a.fill(1.0);
        }
    }
}
