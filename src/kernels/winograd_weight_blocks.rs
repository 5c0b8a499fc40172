//! The Winograd weight transforms ([`super::winograd_weights`]) of one block of weight panels
//! at a time, vectorised over (input, output channel) lanes. Twin: `transform_one` per
//! (output channel, input channel, run), rounded to T, packed by `pack_weights` (f32 panels)
//! or `pack_weights_bf16` (bf16 channel pairs).

use super::Float;
use super::bf16_panels::pair_bits;
use super::params::Conv3dParams;
use super::simd::{Kernel, Simd};
use super::winograd_panels::NR;
use std::ops::Range;

/// Input channels per block (an even number: bf16 channel pairs never straddle two blocks).
pub const CI_BLOCK: usize = 16;
const _: () = assert!(CI_BLOCK.is_multiple_of(2));

/// Lanes of one block (see [`block_values`]).
const BLOCK_LANES: usize = CI_BLOCK * NR;
/// Lanes of the even input channels of a block in the bf16 pair layout ([`block_values`]).
const HALF: usize = BLOCK_LANES / 2;

/// [`BlockTransforms`]' f64 values; lanes past a block's `n * NR` are never read.
pub struct BlockScratch {
    /// (9, lanes): a run's taps summed in tap order from the first.
    g: [[f64; BLOCK_LANES]; 9],
    /// (16, lanes): the transforms.
    u: [[f64; BLOCK_LANES]; 16],
}

impl Default for BlockScratch {
    fn default() -> Self {
        BlockScratch { g: [[0.0; BLOCK_LANES]; 9], u: [[0.0; BLOCK_LANES]; 16] }
    }
}

/// The transforms `transform_one` of output channels j * NR .. + NR (zero past c_out) and
/// input channels c0 .. c0 + n (c0 a multiple of [`CI_BLOCK`], n <= CI_BLOCK), every run of
/// `runs`, into the weight panels' pieces of block j: 16 * k pieces (position xd = rc * k +
/// dt, k = `runs.len()`) of (slots, NR), slots the input channels, or with `pairs` their
/// bf16 channel pairs (T is f32). The same f64 operations in the same order as
/// `transform_one`, one lane per (input, output channel), so the compiler vectorises them, and
/// each position's values are one contiguous run of its piece: scalar, one transform at a
/// time, the weight transforms were 9 % of a seed decode on Zen 4 and 15 % of a bf16 one
/// (perf). Equal to the twin bit for bit (tested on every ISA).
pub struct BlockTransforms<'a, 'b, T> {
    pub pieces: &'a mut [&'b mut [T]],
    pub scr: &'a mut BlockScratch,
    /// (c_out, c_in, k_d, 3, 3)
    pub weight: &'a [T],
    pub p: &'a Conv3dParams,
    pub runs: &'a [Range<usize>],
    pub j: usize,
    pub c0: usize,
    pub n: usize,
    pub pairs: bool,
}

impl<T: Float> Kernel for BlockTransforms<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, _: S) {
        let BlockTransforms { pieces, scr, weight, p, runs, j, c0, n, pairs } = self;
        let k = runs.len();
        assert!(n <= CI_BLOCK && c0.is_multiple_of(CI_BLOCK) && pieces.len() == 16 * k);
        assert!(!pairs || T::NAME == "f32", "bf16 pairs of {}", T::NAME);
        for (dt, run) in runs.iter().enumerate() {
            block_values(scr, weight, p, run, (j, c0, n), pairs);
            // Separate passes: stores into 16 slices of one buffer kept the compiler from
            // vectorising the arithmetic.
            let outs = pieces.iter_mut().skip(dt).step_by(k).zip(scr.u.iter());
            match pairs {
                false => {
                    for (piece, ur) in outs {
                        for (o, &v) in piece[c0 * NR..][..n * NR].iter_mut().zip(ur) {
                            *o = T::from_f64(v);
                        }
                    }
                }
                true => {
                    // Pair q: even channel 2q in the low half, odd 2q + 1 (or zero) in the
                    // high one, each rounded to f32 first, as the f32 panels hold them.
                    let q_n = n.div_ceil(2) * NR;
                    for (piece, ur) in outs {
                        let (lo, hi) = ur.split_at(HALF);
                        for ((o, &a), &b) in piece[c0 / 2 * NR..][..q_n].iter_mut().zip(lo).zip(hi) {
                            *o = T::from_f32_bits(pair_bits((a as f32).to_bits(), (b as f32).to_bits()));
                        }
                    }
                }
            }
        }
    }
}

/// scr.u = the transforms of `run` for the block's lanes (see [`BlockTransforms`]): input
/// channel ci, output channel r at lane `ci * NR + r`, or with `pairs` the even channels in
/// the first [`HALF`] lanes and the odd ones in the rest (lane
/// `(ci % 2) * HALF + ci / 2 * NR + r`), so a pair's halves are the same lane of either half;
/// the odd lanes of a lone last channel are zero.
#[inline(always)]
fn block_values<T: Float>(
    scr: &mut BlockScratch,
    weight: &[T],
    p: &Conv3dParams,
    run: &Range<usize>,
    (j, c0, n): (usize, usize, usize),
    pairs: bool,
) {
    let BlockScratch { g, u } = scr;
    let lane = |ci: usize, r: usize| if pairs { (ci % 2) * HALF + ci / 2 * NR + r } else { ci * NR + r };
    for ci in 0..n {
        for r in 0..NR {
            let co = j * NR + r;
            let mut sum = [0.0f64; 9];
            if co < p.c_out {
                let at = ((co * p.c_in + c0 + ci) * p.k_d + run.start) * 9;
                let tap = |i: usize| -> &[T; 9] { weight[at + 9 * i..][..9].try_into().expect("9 taps") };
                sum = tap(0).map(|x| x.to_f64());
                for i in 1..run.len() {
                    for (s, x) in sum.iter_mut().zip(tap(i)) {
                        *s += x.to_f64();
                    }
                }
            }
            for (ge, s) in g.iter_mut().zip(sum) {
                ge[lane(ci, r)] = s;
            }
        }
    }
    if pairs && n % 2 == 1 {
        for ge in g.iter_mut() {
            ge[lane(n, 0)..][..NR].fill(0.0);
        }
    }
    // Every lane (those past the block's channels hold stale values, never read): one loop
    // length for both layouts.
    for l in 0..BLOCK_LANES {
        let col = |c: usize| (g[c][l], g[3 + c][l], g[6 + c][l]);
        let ((a0, b0, d0), (a1, b1, d1), (a2, b2, d2)) = (col(0), col(1), col(2));
        // Rows of Gg (as in transform_one), then each row times G^T.
        let rows = [
            (a0, a1, a2),
            (0.5 * (a0 + b0 + d0), 0.5 * (a1 + b1 + d1), 0.5 * (a2 + b2 + d2)),
            (0.5 * (a0 - b0 + d0), 0.5 * (a1 - b1 + d1), 0.5 * (a2 - b2 + d2)),
            (d0, d1, d2),
        ];
        for (row, &(x, y, z)) in rows.iter().enumerate() {
            let v = [x, 0.5 * (x + y + z), 0.5 * (x - y + z), z];
            for (col, v) in v.into_iter().enumerate() {
                u[row * 4 + col][l] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16_panels::pack_weights_bf16;
    use crate::kernels::simd::Vector;
    use crate::kernels::winograd_panels::{pack_weights, padded_ld, weights_len};
    use crate::kernels::winograd_weights::transform_one;
    use proptest::prelude::*;

    /// Every ISA's blocks, for one block of output channels (j) and every input block, against
    /// transform_one rounded and packed (f32 panels, or bf16 pairs), bit for bit.
    fn check(
        c_out: usize,
        c_in: usize,
        runs: &[Range<usize>],
        weight: &[f32],
        j: usize,
    ) -> Result<(), TestCaseError> {
        let (k, k_d) = (runs.len(), runs.last().map_or(0, |r| r.end));
        let p = Conv3dParams::plain(c_in, c_out, (k_d, 3, 3));
        let ld_u = padded_ld(16 * k * c_in);
        let mut rows = vec![0.0f32; c_out * ld_u];
        for co in 0..c_out {
            for (dt, run) in runs.iter().enumerate() {
                for ci in 0..c_in {
                    for (rc, v) in transform_one(weight, &p, co, ci, run).into_iter().enumerate() {
                        rows[co * ld_u + (rc * k + dt) * c_in + ci] = v as f32;
                    }
                }
            }
        }
        let cb = c_out.div_ceil(NR);
        for pairs in [false, true] {
            let slots = if pairs { c_in.div_ceil(2) } else { c_in };
            let mut want = vec![f32::NAN; weights_len(c_out, slots, k)];
            match pairs {
                false => pack_weights(&mut want, &rows, (c_out, c_in, k), ld_u),
                true => pack_weights_bf16(&mut want, &rows, (c_out, c_in, k), ld_u),
            }
            for vec in Vector::all_available() {
                let mut got = vec![f32::NAN; want.len()];
                let mut pieces: Vec<&mut [f32]> = got
                    .chunks_exact_mut(slots * NR)
                    .enumerate()
                    .filter(|(i, _)| i % cb == j)
                    .map(|(_, x)| x)
                    .collect();
                let mut scr = Box::<BlockScratch>::default();
                for c0 in (0..c_in).step_by(CI_BLOCK) {
                    let n = CI_BLOCK.min(c_in - c0);
                    let blk = BlockTransforms {
                        pieces: &mut pieces,
                        scr: &mut scr,
                        weight,
                        p: &p,
                        runs,
                        j,
                        c0,
                        n,
                        pairs,
                    };
                    vec.run(blk);
                }
                for (i, (g, w)) in got.chunks_exact(slots * NR).zip(want.chunks_exact(slots * NR)).enumerate()
                {
                    if i % cb != j {
                        continue;
                    }
                    for (s, (a, b)) in g.iter().zip(w).enumerate() {
                        prop_assert!(
                            same(a.to_bits(), b.to_bits(), pairs),
                            "{} pairs {} piece {} slot {}: {:#x} vs {:#x} (c_out {}, c_in {}, runs {:?})",
                            vec.name(),
                            pairs,
                            i,
                            s,
                            a.to_bits(),
                            b.to_bits(),
                            c_out,
                            c_in,
                            runs
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Equal bits, or NaN in both (per bf16 half for pairs): the payload of a NaN made from
    /// two NaN operands depends on which one the compiler puts first in an addition.
    fn same(a: u32, b: u32, pairs: bool) -> bool {
        let nan32 = |x: u32| x & 0x7FFF_FFFF > 0x7F80_0000;
        let nan16 = |x: u32| x & 0x7FFF > 0x7F80;
        match pairs {
            false => a == b || (nan32(a) && nan32(b)),
            true => [0, 16].iter().all(|&s| {
                let (x, y) = ((a >> s) & 0xFFFF, (b >> s) & 0xFFFF);
                x == y || (nan16(x) && nan16(y))
            }),
        }
    }

    /// (c_out, c_in, runs, weight, j): a layer, its tap runs, weights of every magnitude bf16
    /// rounding meets (ties, carries into the exponent, the largest finite f32, subnormals,
    /// signed zeros, infinities, NaN) and one block of output channels.
    #[allow(clippy::type_complexity)]
    fn case() -> impl Strategy<Value = (usize, usize, Vec<Range<usize>>, Vec<f32>, usize)> {
        let splits = vec![vec![0..1, 1..2, 2..3], vec![0..2, 2..3], vec![0..1, 1..3], vec![0..3], vec![0..1]];
        let value = prop_oneof![
            4 => -4.0f32..4.0,
            1 => any::<u32>().prop_map(f32::from_bits),
            1 => (any::<bool>(), 0u32..0x8000).prop_map(|(s, m)| f32::from_bits(0x3F80_8000 | m | (u32::from(s) << 31))),
            1 => prop::sample::select(vec![0.0, -0.0, f32::MAX, f32::MIN_POSITIVE / 3.0, f32::INFINITY, f32::NAN]),
        ];
        (1usize..14, 1usize..40, prop::sample::select(splits), any::<usize>()).prop_flat_map(
            move |(c_out, c_in, runs, j)| {
                let k_d = runs.last().expect("a run").end;
                let n = c_out * c_in * k_d * 9;
                (
                    Just(c_out),
                    Just(c_in),
                    Just(runs),
                    prop::collection::vec(value.clone(), n),
                    Just(j % c_out.div_ceil(NR)),
                )
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(32)))]
        #[test]
        fn block_transforms_match_the_twin_on_every_isa((c_out, c_in, runs, weight, j) in case()) {
            check(c_out, c_in, &runs, &weight, j)?;
        }
    }

    /// Two input blocks with a partial, odd last one (a lone channel in its last pair), and a
    /// partial last block of output channels.
    #[test]
    fn block_transforms_across_input_blocks() {
        let (c_out, c_in) = (2 * NR + 1, 2 * CI_BLOCK + 3);
        let weight: Vec<f32> =
            (0..c_out * c_in * 27).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0).collect();
        for j in 0..3 {
            check(c_out, c_in, &[0..1, 1..3], &weight, j).unwrap();
        }
    }
}
