//! bf16 dot products for the Winograd panel product (`--precision bf16`): the transformed
//! inputs and weights rounded to bf16 (nearest, ties to even), multiplied in pairs of input
//! channels by the CPU's bf16 dot-product instruction with f32 accumulation. Kernels: ARM
//! `BFDOT` (FEAT_BF16, NEON) and x86 `vdpbf16ps` (AVX512_BF16), each with a plain twin
//! ([`panel_product_bfdot`], [`panel_product_dpbf16`]) that computes what its instruction
//! computes, bit for bit. The two instructions round differently ([`bfdot`], [`dpbf16`]), so
//! the bf16 mode's output depends on the instruction set (never on the thread count).
//!
//! Layouts: those of [`super::winograd_panels`] with a *channel pair* in every f32 slot: the
//! even channel's bf16 bits in the low half, the odd one's in the high half (in memory: the
//! 2 x bf16 element pair one instruction lane reads). A frame's tile panels are
//! `tiles_len(pairs, n_t, mr)` slots (mr: [`Bf16Dot::mr`], the kernel's micro-tile width), a
//! layer's weight panels `weights_len(c_out, pairs, k_d)` (the same for every kernel),
//! pairs = ceil(c_in / 2); a missing odd channel is zero.
//!
//! Sum order: per output, time tap and block of `KC` input channels (`KC / 2` pairs), one
//! f32 accumulator starting at zero takes every pair in channel order through the
//! instruction's arithmetic; the block sums are added (f32, nearest) in tap, then block order,
//! as in the f32 kernel.

use super::bf16::round_bf16;
use super::simd::{Kernel, Simd};
use super::winograd_panels::{KC, NR, PanelArgs, panel_ldc, prefetch};
use rayon::prelude::*;

/// Tiles per micro-tile of the `BFDOT` kernel and its twin (two vectors of 4 f32 lanes).
pub const MR_BFDOT: usize = 8;
#[cfg(target_arch = "aarch64")]
const _: () = assert!(MR_BFDOT == super::bf16_neon::MR);
/// Tiles per micro-tile of the `vdpbf16ps` kernel and its twin (two vectors of 16 f32 lanes).
pub const MR_DPBF16: usize = 32;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(MR_DPBF16 == super::x86_64::MR);
/// Channel pairs per block (one partial sum): the f32 kernel's [`KC`] channels.
const KC_PAIRS: usize = KC / 2;
/// Tiles per pass over the weight panels (as the f32 kernel's).
#[cfg_attr(not(any(target_arch = "aarch64", target_arch = "x86_64")), allow(dead_code))]
const MC_TILES: usize = 128;

/// The bf16 nearest to x (ties to even), as its 16 bits.
pub fn bf16_bits(x: f32) -> u16 {
    (round_bf16(x).to_bits() >> 16) as u16
}

/// One slot: the channel pair (lo, hi) as bf16, lo in the low half.
pub fn pair(lo: f32, hi: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(lo)) | (u32::from(bf16_bits(hi)) << 16))
}

/// Writes channel pair k of a channel-pair group (`tile_groups` over pairs, micro-tile width
/// mr) from the transforms of its two channels, each (16, n_t); `hi` is `None` past the last
/// channel. Tiles past n_t are zero.
pub fn pack_tile_pair(
    pieces: &mut [&mut [f32]],
    k: usize,
    lo: &[f32],
    hi: Option<&[f32]>,
    n_t: usize,
    mr: usize,
) {
    pack_pairs(pieces, k, lo, hi, (n_t, mr), pair);
}

/// The loop of [`pack_tile_pair`] with the slot made by `slot(lo, hi)`.
#[inline(always)]
fn pack_pairs(
    pieces: &mut [&mut [f32]],
    k: usize,
    lo: &[f32],
    hi: Option<&[f32]>,
    (n_t, mr): (usize, usize),
    slot: impl Fn(f32, f32) -> f32,
) {
    let nb = n_t.div_ceil(mr);
    assert!(pieces.len() == 16 * nb && lo.len() >= 16 * n_t && hi.is_none_or(|h| h.len() >= 16 * n_t));
    for (i, piece) in pieces.iter_mut().enumerate() {
        let (xi, t0) = (i / nb, (i % nb) * mr);
        let w = mr.min(n_t - t0);
        let (d, next) = piece[k * mr..].split_at_mut(mr);
        let l = &lo[xi * n_t + t0..][..w];
        match hi {
            Some(h) => {
                for ((d, &a), &b) in d.iter_mut().zip(l).zip(&h[xi * n_t + t0..][..w]) {
                    *d = slot(a, b);
                }
            }
            None => {
                for (d, &a) in d.iter_mut().zip(l) {
                    *d = slot(a, 0.0);
                }
            }
        }
        d[w..].fill(0.0);
        prefetch(next, std::mem::size_of_val(d)); // as in `winograd_panels::pack_tile_channel`
    }
}

/// [`pack_tile_pair`] compiled for the ISA's vector registers: the rounding without a branch
/// ([`pair_bits`]), so the compiler vectorises the loop (the scalar loop was 5.6 % of a bf16
/// seed decode on Zen 4, perf). Equal to the twin bit for bit (tested on every ISA).
pub struct PackTilePair<'a, 'b> {
    pub pieces: &'a mut [&'b mut [f32]],
    pub k: usize,
    pub lo: &'a [f32],
    pub hi: Option<&'a [f32]>,
    pub n_t: usize,
    pub mr: usize,
}

impl Kernel for PackTilePair<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, _: S) {
        let PackTilePair { pieces, k, lo, hi, n_t, mr } = self;
        pack_pairs(pieces, k, lo, hi, (n_t, mr), |a, b| f32::from_bits(pair_bits(a.to_bits(), b.to_bits())));
    }
}

/// [`pair`] on bit patterns, NaN chosen by a select instead of a branch.
#[inline(always)]
pub(crate) fn pair_bits(lo: u32, hi: u32) -> u32 {
    let bits = |b: u32| {
        let nearest = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
        let quiet = (b | 0x0040_0000) >> 16;
        if b & 0x7FFF_FFFF > 0x7F80_0000 { quiet } else { nearest }
    };
    bits(lo) | (bits(hi) << 16)
}

/// dst: bf16 weight panels (16, k_d, cb, pairs, NR) from u: (c_out, 16, k_d, c_in), row
/// stride `ld_u` ([`super::winograd`]'s transformed weight rows). The twin of the bf16 output
/// of [`super::winograd_weight_blocks::BlockTransforms`], which vector ISAs use.
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

/// One `vdpbf16ps` lane (Intel SDM, as Bochs 3.0 emulates it): acc + a.hi b.hi, then + a.lo
/// b.lo, each a fused multiply-add rounded to nearest (ties to even); subnormal operands are
/// zero and subnormal results flush to zero (MXCSR is not read). NaN results are some NaN
/// (the payload is not modelled). a, b: channel-pair slots.
pub fn dpbf16(acc: f32, a: f32, b: f32) -> f32 {
    let (a, b) = (a.to_bits(), b.to_bits());
    let half = |x: u32| flush(f32::from_bits(x));
    let hi = flush(half(a & 0xFFFF_0000).mul_add(half(b & 0xFFFF_0000), flush(acc)));
    flush(half(a << 16).mul_add(half(b << 16), hi))
}

/// The plain twin of the `BFDOT` panel product: m = sum over time taps of (weights) . (tiles)
/// on channel-pair panels (`p.c_in` counts pairs, `p.mr` must be [`MR_BFDOT`]), in the
/// documented order.
pub fn panel_product_bfdot(p: PanelArgs<'_, f32>) {
    check(&p, MR_BFDOT);
    panel_product_twin(p, bfdot)
}

/// The plain twin of the `vdpbf16ps` panel product (`p.mr` must be [`MR_DPBF16`]).
pub fn panel_product_dpbf16(p: PanelArgs<'_, f32>) {
    check(&p, MR_DPBF16);
    panel_product_twin(p, dpbf16)
}

/// The panel product in the documented order with `lane` as the instruction's arithmetic.
fn panel_product_twin(p: PanelArgs<'_, f32>, lane: fn(f32, f32, f32) -> f32) {
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
                        acc = lane(acc, x, w);
                    }
                    sum = Some(sum.map_or(acc, |s: f32| s + acc));
                }
            }
            m[co * ld_m + t] = sum.unwrap_or(0.0);
        }
    }
}

fn check(p: &PanelArgs<'_, f32>, mr: usize) {
    let (nb, cb) = (p.n_t.div_ceil(mr), p.c_out.div_ceil(NR));
    assert!(p.mr == mr && p.ld_m >= nb * mr && p.m.len() >= p.c_out * p.ld_m);
    assert!(p.b.len() >= p.a.len() * cb * p.c_in * NR);
    assert!(p.a.iter().flatten().all(|a| a.len() >= nb * panel_ldc(p.c_in) * mr));
}

/// The bf16 kernels this CPU has instructions for, each with the result of its
/// [`self_check`] (run once per process).
pub fn hardware_kernels() -> &'static [(Bf16Dot, bool)] {
    static KERNELS: std::sync::OnceLock<Vec<(Bf16Dot, bool)>> = std::sync::OnceLock::new();
    KERNELS.get_or_init(|| {
        #[allow(unused_mut)]
        let mut v = Vec::new();
        #[cfg(target_arch = "aarch64")]
        if let Some(t) = super::bf16_neon::BfdotToken::detect() {
            v.push(Bf16Dot::Neon(t));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = super::x86_64::Bf16::detect() {
            v.push(Bf16Dot::Avx512(t));
        }
        v.into_iter()
            .map(|k| (k, self_check(|p| k.panel_product(p), |p| k.twin().panel_product(p), k.mr())))
            .collect()
    })
}

/// Whether `kernel` computes what `twin` computes, bit for bit, on a fixed product: 7 output
/// channels, 130 pairs (two KC blocks), 37 tiles, taps (on, off, on), operands of magnitudes
/// 2^-12 .. 2^4. The kernels' arithmetic was checked under emulators only (qemu-aarch64,
/// Bochs's reading of the Intel SDM), so a CPU whose instruction rounds otherwise loses the
/// bf16 mode (a named error) instead of giving other numbers than the twin.
fn self_check(kernel: impl Fn(PanelArgs<'_, f32>), twin: impl Fn(PanelArgs<'_, f32>), mr: usize) -> bool {
    let (c_out, pairs, n_t): (usize, usize, usize) = (7, 130, 37);
    let mut r = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        let m = ((r >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        m * f32::powi(2.0, (r % 17) as i32 - 12)
    };
    let mut slots = |n: usize| -> Vec<f32> { (0..n).map(|_| pair(next(), next())).collect() };
    let ta = slots(n_t.div_ceil(mr) * panel_ldc(pairs) * mr);
    let tb = slots(ta.len());
    let b = slots(3 * c_out.div_ceil(NR) * pairs * NR);
    let a = [Some(&ta[..]), None, Some(&tb[..])];
    let ld_m = super::winograd_panels::m_ld(n_t, mr);
    let (mut got, mut want) = (vec![f32::NAN; c_out * ld_m], vec![f32::NAN; c_out * ld_m]);
    kernel(PanelArgs { m: &mut got, ld_m, c_out, c_in: pairs, n_t, a: &a, b: &b, mr });
    twin(PanelArgs { m: &mut want, ld_m, c_out, c_in: pairs, n_t, a: &a, b: &b, mr });
    got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits())
}

/// Which bf16 panel product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Dot {
    /// [`panel_product_bfdot`] (`MOVQ_ISA=scalar` on ARM with FEAT_BF16, and tests).
    BfdotTwin,
    /// [`panel_product_dpbf16`] (`MOVQ_ISA=scalar` on x86 with AVX512_BF16, and tests).
    Dpbf16Twin,
    /// NEON `BFDOT` (the CPU has FEAT_BF16: checked when this value is made).
    #[cfg(target_arch = "aarch64")]
    Neon(super::bf16_neon::BfdotToken),
    /// AVX-512 `vdpbf16ps` (the CPU has AVX-512F and AVX512_BF16: checked when made).
    #[cfg(target_arch = "x86_64")]
    Avx512(super::x86_64::Bf16),
}

impl Bf16Dot {
    /// The fast kernel of this CPU, or `None` where movq has no bf16 dot-product kernel (x86
    /// without AVX512_BF16, ARM without FEAT_BF16). Its twin (the same numbers, slowly) under
    /// `MOVQ_ISA=scalar`, and on x86 under `MOVQ_ISA=avx2`, which rules out AVX-512 code.
    pub fn detect() -> Option<Bf16Dot> {
        let kernel = Self::kernels().into_iter().next()?;
        Some(match super::isa() {
            super::Isa::Scalar => kernel.twin(),
            #[cfg(target_arch = "x86_64")]
            super::Isa::Vector(v) if !matches!(v, super::simd::Vector::Avx512(_)) => kernel.twin(),
            super::Isa::Vector(_) => kernel,
        })
    }

    /// The bf16 kernels this CPU runs that passed their [`self_check`].
    fn kernels() -> Vec<Bf16Dot> {
        hardware_kernels().iter().filter(|(_, ok)| *ok).map(|&(k, _)| k).collect()
    }

    /// Both twins and every bf16 kernel this CPU has an instruction for, whatever its
    /// self-check said (what the property tests compare).
    pub fn all_available() -> Vec<Bf16Dot> {
        let mut v = vec![Bf16Dot::BfdotTwin, Bf16Dot::Dpbf16Twin];
        v.extend(hardware_kernels().iter().map(|&(k, _)| k));
        v
    }

    /// The plain twin computing what this kernel computes.
    pub fn twin(self) -> Bf16Dot {
        match self {
            Bf16Dot::BfdotTwin | Bf16Dot::Dpbf16Twin => self,
            #[cfg(target_arch = "aarch64")]
            Bf16Dot::Neon(_) => Bf16Dot::BfdotTwin,
            #[cfg(target_arch = "x86_64")]
            Bf16Dot::Avx512(_) => Bf16Dot::Dpbf16Twin,
        }
    }

    /// Tiles per micro-tile: the `mr` of the tile panels this kernel reads.
    pub fn mr(self) -> usize {
        match self.twin() {
            Bf16Dot::Dpbf16Twin => MR_DPBF16,
            _ => MR_BFDOT,
        }
    }

    /// One lane of the instruction's arithmetic (the twin's): acc + a . b over a channel pair.
    pub fn lane(self, acc: f32, a: f32, b: f32) -> f32 {
        match self.twin() {
            Bf16Dot::Dpbf16Twin => dpbf16(acc, a, b),
            _ => bfdot(acc, a, b),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Dot::BfdotTwin => "bfdot-twin",
            Bf16Dot::Dpbf16Twin => "vdpbf16ps-twin",
            #[cfg(target_arch = "aarch64")]
            Bf16Dot::Neon(_) => "neon-bfdot",
            #[cfg(target_arch = "x86_64")]
            Bf16Dot::Avx512(_) => "avx512-vdpbf16ps",
        }
    }

    /// m = the panel product of channel-pair panels (see [`panel_product_bfdot`]), `p.mr`
    /// this kernel's [`Bf16Dot::mr`].
    pub fn panel_product(self, p: PanelArgs<'_, f32>) {
        match self {
            Bf16Dot::BfdotTwin => panel_product_bfdot(p),
            Bf16Dot::Dpbf16Twin => panel_product_dpbf16(p),
            #[cfg(target_arch = "aarch64")]
            Bf16Dot::Neon(t) => {
                check(&p, MR_BFDOT);
                super::bf16_neon::panel_product(t, p, KC_PAIRS, MC_TILES / MR_BFDOT)
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Dot::Avx512(t) => {
                check(&p, MR_DPBF16);
                super::x86_64::panel_product(t, p, KC_PAIRS, MC_TILES / MR_DPBF16)
            }
        }
    }
}

#[cfg(test)]
mod tests;
