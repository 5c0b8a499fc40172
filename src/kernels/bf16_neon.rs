//! The channel-pair panel product ([`super::bf16_panels`]) with ARM `BFDOT` (FEAT_BF16).
//! Rust's bf16 NEON intrinsics are unstable, so the instruction is written as inline assembly,
//! one `BFDOT` (by element) per asm block; everything else is NEON intrinsics.

use super::winograd_panels::{NR, PanelArgs, for_each_micro_tile};
use std::arch::aarch64::*;
use std::arch::asm;

/// Tiles per micro-tile: two vectors of 4 f32 lanes (`bf16_panels::MR_BFDOT`).
pub const MR: usize = 8;

/// Proof that the CPU has FEAT_BF16 (made only by [`BfdotToken::detect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdotToken(());

impl BfdotToken {
    pub fn detect() -> Option<BfdotToken> {
        std::arch::is_aarch64_feature_detected!("bf16").then_some(BfdotToken(()))
    }
}

/// `acc += a . b[lane]` for each f32 lane: `BFDOT acc.4s, a.8h, b.2h[lane]`.
macro_rules! bfdot_lane {
    ($acc:expr, $a:expr, $b:expr, $lane:literal) => {
        // SAFETY: the enclosing function is compiled with the bf16 feature and only reached
        // with a BfdotToken; the instruction touches registers only.
        unsafe {
            asm!(
                concat!("bfdot {c:v}.4s, {a:v}.8h, {b:v}.2h[", $lane, "]"),
                c = inout(vreg) $acc,
                a = in(vreg) $a,
                b = in(vreg) $b,
                options(pure, nomem, nostack, preserves_flags)
            )
        }
    };
}

/// m = the panel product (bf16_panels' order): `p` checked by the caller, `p.c_in` pairs.
pub fn panel_product(t: BfdotToken, p: PanelArgs<'_, f32>, kc_pairs: usize, mc_blocks: usize) {
    // SAFETY: the token shows FEAT_BF16 (and NEON, aarch64's baseline) is present.
    unsafe { panel_product_bf16(t, p, kc_pairs, mc_blocks) }
}

#[target_feature(enable = "neon,bf16")]
fn panel_product_bf16(_: BfdotToken, p: PanelArgs<'_, f32>, kc_pairs: usize, mc_blocks: usize) {
    // The closure inherits this function's target features, so it calls micro_tile safely.
    for_each_micro_tile(p, kc_pairs, mc_blocks, |a, b, c, ld, rows, add| micro_tile(a, b, c, ld, rows, add));
}

/// c[r * ld + i] (+)= the BFDOT sum over the pairs k of a[k * MR + i] . b[k * NR + r], r < rows.
#[target_feature(enable = "neon,bf16")]
fn micro_tile(a: &[f32], b: &[f32], c: &mut [f32], ld: usize, rows: usize, add: bool) {
    let mut acc = [[vdupq_n_f32(0.0); 2]; NR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let (ak, bk): (&[f32; MR], &[f32; NR]) = (ak.try_into().unwrap(), bk.try_into().unwrap());
        // SAFETY: the arrays hold MR = 8 and NR = 6 values: the loads read 4, 4, 4 and 2.
        let (a0, a1, b03, b45) = unsafe {
            (
                vld1q_f32(ak.as_ptr()),
                vld1q_f32(ak.as_ptr().add(4)),
                vld1q_f32(bk.as_ptr()),
                vld1_f32(bk.as_ptr().add(4)),
            )
        };
        bfdot_lane!(acc[0][0], a0, b03, "0");
        bfdot_lane!(acc[0][1], a1, b03, "0");
        bfdot_lane!(acc[1][0], a0, b03, "1");
        bfdot_lane!(acc[1][1], a1, b03, "1");
        bfdot_lane!(acc[2][0], a0, b03, "2");
        bfdot_lane!(acc[2][1], a1, b03, "2");
        bfdot_lane!(acc[3][0], a0, b03, "3");
        bfdot_lane!(acc[3][1], a1, b03, "3");
        bfdot_lane!(acc[4][0], a0, b45, "0");
        bfdot_lane!(acc[4][1], a1, b45, "0");
        bfdot_lane!(acc[5][0], a0, b45, "1");
        bfdot_lane!(acc[5][1], a1, b45, "1");
    }
    for (r, ar) in acc.iter().enumerate().take(rows) {
        let cr: &mut [f32; MR] = (&mut c[r * ld..][..MR]).try_into().unwrap();
        // SAFETY: cr holds 8 values: two 4-lane loads and stores.
        unsafe {
            let p = cr.as_mut_ptr();
            let (v0, v1) = match add {
                true => (vaddq_f32(vld1q_f32(p), ar[0]), vaddq_f32(vld1q_f32(p.add(4)), ar[1])),
                false => (ar[0], ar[1]),
            };
            vst1q_f32(p, v0);
            vst1q_f32(p.add(4), v1);
        }
    }
}

/// Independent `BFDOT` chains of [`bfdot_chains`] (as many as the f32 FMA benchmark's).
pub const CHAINS: usize = 12;

/// `iters` rounds of [`CHAINS`] independent `BFDOT` (vector) chains, the bf16 dot-product
/// peak of `movq bench --peak`: 8 products and 8 additions per instruction. Returns a value
/// depending on every chain.
pub fn bfdot_chains(t: BfdotToken, iters: u64) -> f32 {
    // SAFETY: the token shows FEAT_BF16 is present.
    unsafe { bfdot_chains_impl(t, iters) }
}

#[target_feature(enable = "neon,bf16")]
fn bfdot_chains_impl(_: BfdotToken, iters: u64) -> f32 {
    // bf16 pairs of about 0.999 and of about 1e-7: the sums stay finite and moving.
    let a = vreinterpretq_f32_u32(vdupq_n_u32(0x3F7F_3F7F));
    let b = vreinterpretq_f32_u32(vdupq_n_u32(0x33D6_33D6));
    let mut acc = [vdupq_n_f32(1.0); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            // SAFETY: FEAT_BF16 (this function's target feature); registers only.
            unsafe {
                asm!(
                    "bfdot {c:v}.4s, {a:v}.8h, {b:v}.8h",
                    c = inout(vreg) *x,
                    a = in(vreg) a,
                    b = in(vreg) b,
                    options(pure, nomem, nostack, preserves_flags)
                )
            }
        }
    }
    vaddvq_f32(acc.iter().fold(vdupq_n_f32(0.0), |s, &x| vaddq_f32(s, x)))
}
