//! bf16 dot products for the Winograd panel product (`--precision bf16`): the transformed
//! inputs and weights rounded to bf16 (nearest, ties to even), multiplied in pairs of input
//! channels by the CPU's bf16 dot-product instruction with f32 accumulation. Kernels: ARM
//! `BFDOT` (FEAT_BF16, NEON) and its plain twin [`panel_product_bfdot`], which computes what
//! the instruction computes, bit for bit.
//!
//! Layouts: those of [`super::winograd_panels`] with a *channel pair* in every f32 slot: the
//! even channel's bf16 bits in the low half, the odd one's in the high half (in memory: the
//! 2 x bf16 element pair one `BFDOT` lane reads). A frame's tile panels are
//! `tiles_len(pairs, n_t, MR)` slots, a layer's weight panels `weights_len(c_out, pairs, k_d)`,
//! pairs = ceil(c_in / 2); a missing odd channel is zero.
//!
//! Sum order: per output, time tap and block of `KC` input channels (`KC / 2` pairs), one
//! f32 accumulator starting at zero takes every pair in channel order through `BFDOT`'s
//! arithmetic ([`bfdot`]); the block sums are added (f32, nearest) in tap, then block order,
//! as in the f32 kernel.

use super::bf16::round_bf16;
use super::winograd_panels::{KC, NR, PanelArgs, panel_ldc};
use rayon::prelude::*;

/// Tiles per micro-tile row of the bf16 kernels (two vectors of 4 f32 lanes), on every ISA.
pub const MR: usize = 8;
#[cfg(target_arch = "aarch64")]
const _: () = assert!(MR == super::bf16_neon::MR);
/// Channel pairs per block (one partial sum): the f32 kernel's [`KC`] channels.
const KC_PAIRS: usize = KC / 2;
/// Tile blocks per pass over the weight panels (as the f32 kernel's 128 tiles).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const MC_BLOCKS: usize = 128 / MR;

/// The bf16 nearest to x (ties to even), as its 16 bits.
pub fn bf16_bits(x: f32) -> u16 {
    (round_bf16(x).to_bits() >> 16) as u16
}

/// One slot: the channel pair (lo, hi) as bf16, lo in the low half.
pub fn pair(lo: f32, hi: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(lo)) | (u32::from(bf16_bits(hi)) << 16))
}

/// Writes channel pair k of a channel-pair group (`tile_groups` over pairs) from the
/// transforms of its two channels, each (16, n_t); `hi` is `None` past the last channel.
/// Tiles past n_t are zero.
pub fn pack_tile_pair(pieces: &mut [&mut [f32]], k: usize, lo: &[f32], hi: Option<&[f32]>, n_t: usize) {
    let nb = n_t.div_ceil(MR);
    assert!(pieces.len() == 16 * nb && lo.len() >= 16 * n_t && hi.is_none_or(|h| h.len() >= 16 * n_t));
    for (i, piece) in pieces.iter_mut().enumerate() {
        let (xi, t0) = (i / nb, (i % nb) * MR);
        let w = MR.min(n_t - t0);
        let d = &mut piece[k * MR..][..MR];
        let l = &lo[xi * n_t + t0..][..w];
        match hi {
            Some(h) => {
                for ((d, &a), &b) in d.iter_mut().zip(l).zip(&h[xi * n_t + t0..][..w]) {
                    *d = pair(a, b);
                }
            }
            None => {
                for (d, &a) in d.iter_mut().zip(l) {
                    *d = pair(a, 0.0);
                }
            }
        }
        d[w..].fill(0.0);
    }
}

/// dst: bf16 weight panels (16, k_d, cb, pairs, NR) from u: (c_out, 16, k_d, c_in), row
/// stride `ld_u` ([`super::winograd`]'s transformed weight rows).
pub fn pack_weights_bf16(dst: &mut [f32], u: &[f32], (c_out, c_in, k_d): (usize, usize, usize), ld_u: usize) {
    let (cb, pairs) = (c_out.div_ceil(NR), c_in.div_ceil(2));
    assert!(dst.len() == 16 * k_d * cb * pairs * NR && c_out * ld_u <= u.len() && 16 * k_d * c_in <= ld_u);
    if dst.is_empty() {
        return;
    }
    dst.par_chunks_mut(cb * pairs * NR).enumerate().for_each(|(xd, d)| {
        for (j, dj) in d.chunks_exact_mut(pairs * NR).enumerate() {
            for (q, dq) in dj.chunks_exact_mut(NR).enumerate() {
                for (r, x) in dq.iter_mut().enumerate() {
                    let co = j * NR + r;
                    let w =
                        |ci: usize| if co < c_out && ci < c_in { u[co * ld_u + xd * c_in + ci] } else { 0.0 };
                    *x = pair(w(2 * q), w(2 * q + 1));
                }
            }
        }
    });
}

/// x with subnormals flushed to zero (sign kept), as the bf16 instructions treat inputs and
/// results.
fn flush(x: f32) -> f32 {
    if x != 0.0 && x.abs() < f32::MIN_POSITIVE { f32::from_bits(x.to_bits() & 0x8000_0000) } else { x }
}

/// The quiet NaN every NaN result becomes (FPSCR default NaN).
const DEFAULT_NAN: u32 = 0x7FC0_0000;

/// a + b rounded to odd (FEAT_BF16's `BFAdd`): the sum truncated towards zero, its last bit
/// set when inexact; subnormal inputs and results flushed to zero, infinity only when the
/// exact sum reaches 2^128 (qemu's `float_round_to_odd_inf`), NaN the default NaN.
fn add_round_odd(a: f32, b: f32) -> f32 {
    let (a, b) = (flush(a), flush(b));
    let s = a + b;
    if s.is_nan() {
        return f32::from_bits(DEFAULT_NAN);
    }
    if s.is_infinite() {
        // Finite operands whose nearest sum overflowed: the exact sum (exact in f64 here) may
        // still be below 2^128, where rounding to odd stays at the largest finite value.
        let exact = a as f64 + b as f64;
        let finite = a.is_finite() && b.is_finite() && exact.abs() < f64::powi(2.0, 128);
        return if finite { f32::MAX.copysign(s) } else { s };
    }
    // Exact error of the nearest sum (Knuth's TwoSum; no overflow here).
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    if err == 0.0 || s == 0.0 {
        return flush(s);
    }
    // s was rounded away from zero when the error points back towards zero.
    let away = (err < 0.0) == (s > 0.0);
    let t = if away { s.to_bits() - 1 } else { s.to_bits() };
    // Tininess before rounding: an inexact sum below the normal range flushes to zero.
    if f32::from_bits(t).abs() < f32::MIN_POSITIVE {
        return f32::from_bits(s.to_bits() & 0x8000_0000);
    }
    f32::from_bits(t | 1)
}

/// The product of two bf16 values in f32 (exact unless it leaves f32's normal range).
fn mul_flushed(a: u16, b: u16) -> f32 {
    let p = flush(f32::from_bits(u32::from(a) << 16)) * flush(f32::from_bits(u32::from(b) << 16));
    if p.is_nan() { f32::from_bits(DEFAULT_NAN) } else { flush(p) }
}

/// One `BFDOT` lane (Arm ARM `BFDotAdd` without FEAT_EBF16): acc + (a.lo b.lo + a.hi b.hi),
/// both additions rounded to odd ([`add_round_odd`]). a, b: channel-pair slots.
pub fn bfdot(acc: f32, a: f32, b: f32) -> f32 {
    let (a, b) = (a.to_bits(), b.to_bits());
    let lo = mul_flushed(a as u16, b as u16);
    let hi = mul_flushed((a >> 16) as u16, (b >> 16) as u16);
    add_round_odd(acc, add_round_odd(lo, hi))
}

/// The plain twin of the `BFDOT` panel product: m = sum over time taps of (weights) . (tiles)
/// on channel-pair panels (`p.c_in` counts pairs, `p.mr` must be [`MR`]), in the documented
/// order.
pub fn panel_product_bfdot(p: PanelArgs<'_, f32>) {
    check(&p);
    let PanelArgs { m, ld_m, c_out, c_in: pairs, n_t, a, b, mr } = p;
    let (nb, cb, ldc) = (n_t.div_ceil(mr), c_out.div_ceil(NR), panel_ldc(pairs));
    for co in 0..c_out {
        for t in 0..nb * mr {
            let mut sum = None;
            for (dt, ap) in a.iter().enumerate() {
                let Some(ap) = ap else { continue };
                for q0 in (0..pairs).step_by(KC_PAIRS) {
                    let mut acc = 0.0f32;
                    for q in q0..(q0 + KC_PAIRS).min(pairs) {
                        let x = ap[((t / mr) * ldc + q) * mr + t % mr];
                        let w = b[((dt * cb + co / NR) * pairs + q) * NR + co % NR];
                        acc = bfdot(acc, x, w);
                    }
                    sum = Some(sum.map_or(acc, |s: f32| s + acc));
                }
            }
            m[co * ld_m + t] = sum.unwrap_or(0.0);
        }
    }
}

fn check(p: &PanelArgs<'_, f32>) {
    let (nb, cb) = (p.n_t.div_ceil(MR), p.c_out.div_ceil(NR));
    assert!(p.mr == MR && p.ld_m >= nb * MR && p.m.len() >= p.c_out * p.ld_m);
    assert!(p.b.len() >= p.a.len() * cb * p.c_in * NR);
    assert!(p.a.iter().flatten().all(|a| a.len() >= nb * panel_ldc(p.c_in) * MR));
}

/// Which bf16 panel product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Dot {
    /// [`panel_product_bfdot`] (`MOVQ_ISA=scalar` on a CPU with a bf16 kernel, and tests).
    Twin,
    /// NEON `BFDOT` (the CPU has FEAT_BF16: checked when this value is made).
    #[cfg(target_arch = "aarch64")]
    Neon(super::bf16_neon::BfdotToken),
}

impl Bf16Dot {
    /// The fast kernel of this CPU (the twin under `MOVQ_ISA=scalar`), or `None` where movq
    /// has no bf16 dot-product kernel (every x86 CPU for now: the `vdpbf16ps` kernel is not
    /// written; ARM without FEAT_BF16).
    pub fn detect() -> Option<Bf16Dot> {
        #[cfg(target_arch = "aarch64")]
        if let Some(t) = super::bf16_neon::BfdotToken::detect() {
            return Some(match super::isa() {
                super::Isa::Scalar => Bf16Dot::Twin,
                super::Isa::Vector(_) => Bf16Dot::Neon(t),
            });
        }
        None
    }

    /// The twin and every bf16 kernel this CPU runs (what the property tests compare).
    pub fn all_available() -> Vec<Bf16Dot> {
        #[allow(unused_mut)]
        let mut v = vec![Bf16Dot::Twin];
        #[cfg(target_arch = "aarch64")]
        if let Some(t) = super::bf16_neon::BfdotToken::detect() {
            v.push(Bf16Dot::Neon(t));
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Dot::Twin => "bfdot-twin",
            #[cfg(target_arch = "aarch64")]
            Bf16Dot::Neon(_) => "neon-bfdot",
        }
    }

    /// m = the panel product of channel-pair panels (see [`panel_product_bfdot`]).
    pub fn panel_product(self, p: PanelArgs<'_, f32>) {
        match self {
            Bf16Dot::Twin => panel_product_bfdot(p),
            #[cfg(target_arch = "aarch64")]
            Bf16Dot::Neon(t) => {
                check(&p);
                super::bf16_neon::panel_product(t, p, KC_PAIRS, MC_BLOCKS)
            }
        }
    }
}

#[cfg(test)]
mod tests;
