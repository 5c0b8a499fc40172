//! The 16 gemms of Winograd F(2x2, 3x3) ([`super::winograd`]) on operands packed once, in the
//! layout the micro-kernel streams: for f32 on a vector ISA these replace the `gemm` crate,
//! which packs both operands on every call (each transformed frame is read by k_d output
//! frames, each weight panel by every strip and frame).
//!
//! Layouts (`mr` = two vectors of the ISA's lanes, [`NR`] = 6):
//! - tile panels of one transformed frame: (16, nb, ldc, mr), nb = ceil(tiles / mr), ldc =
//!   [`panel_ldc`]; value xi of tile t, channel ci at `((xi * nb + t / mr) * ldc + ci) * mr +
//!   t % mr`, tiles past the strip zero, channels past c_in never read;
//! - weight panels: (16, k_d, cb, c_in, NR), cb = ceil(c_out / NR); output channels past c_out
//!   zero;
//! - product m of one transformed position: (c_out, ld_m), ld_m = [`m_ld`], tiles contiguous.
//!
//! Every output is summed in one fixed order: a partial sum per time tap and block of [`KC`]
//! input channels (fused multiply-adds in channel order, the first onto zero), and the partial
//! sums added in tap, then block order. Blocked like this the rounding error grows with KC
//! plus the number of blocks rather than with k_d x c_in: one sequential sum over all taps
//! lifted the error of the golden `resnetblock3d_32to64` case from 0.98x PyTorch's to 1.40x.
//! So the vector kernel equals its plain twin [`panel_product`] bit for bit on every ISA
//! (tested), and the result does not depend on the thread count.

use super::simd::{Kernel, Simd};
use crate::tensor::Element;
use rayon::prelude::*;

/// Output channels per micro-tile (6 rows x 2 vectors = 12 accumulators).
pub const NR: usize = 6;
/// Input channels per block (one partial sum): a weight panel (KC x NR) stays in L1.
pub const KC: usize = 256;
/// Tiles per block: their panels (KC x MC_TILES) stay in L2 while every weight panel passes.
const MC_TILES: usize = 128;

/// A row stride of at least `n` elements whose byte stride is an odd multiple of 64: rows
/// then fall into different cache sets. With power-of-two strides (1024 tiles, 512 channels x
/// 48) the gemm's packing and micro-kernel hit the same L1 sets and 4K-alias, and ran several
/// times slower (measured: packing was 14 % of a decode before this).
pub fn padded_ld(n: usize) -> usize {
    16 * (n.div_ceil(16) | 1)
}

/// Elements of one frame's tile panels.
pub fn tiles_len(c_in: usize, n_t: usize, mr: usize) -> usize {
    16 * n_t.div_ceil(mr) * panel_ldc(c_in) * mr
}

/// Channel slots per tile block: a block is ldc x mr elements, and an odd ldc makes consecutive
/// blocks fall into different cache sets when c_in is a power of two (the input transform
/// writes one channel into every block in turn).
pub fn panel_ldc(c_in: usize) -> usize {
    c_in | 1
}

/// Elements of a layer's weight panels: (16, k_d, cb, c_in, NR).
pub fn weights_len(c_out: usize, c_in: usize, k_d: usize) -> usize {
    16 * k_d * c_out.div_ceil(NR) * c_in * NR
}

/// Row stride of a product: whole tile panels, odd multiple of 64 bytes ([`padded_ld`]).
pub fn m_ld(n_t: usize, mr: usize) -> usize {
    padded_ld(n_t.div_ceil(mr) * mr)
}

/// A frame's tile panels ([`tiles_len`]) cut into channel groups of at most `group`: per group,
/// its 16 x nb pieces (position xi, tile block tb at `xi * nb + tb`), each (gs, mr). The groups
/// are disjoint, so one task per group can write its channels' transforms while they are in
/// cache (packing afterwards from a transform buffer of up to 4 MiB of channels cost 7 % of a
/// decode).
pub fn tile_groups<T>(v: &mut [T], c_in: usize, n_t: usize, mr: usize, group: usize) -> Vec<Vec<&mut [T]>> {
    assert!(group > 0 && v.len() == tiles_len(c_in, n_t, mr));
    // Sized up front: growing them by pushes was 0.4 % of a CogVideoX decode, on the main
    // thread while the pool waited (perf).
    let pieces = 16 * n_t.div_ceil(mr);
    let mut groups: Vec<Vec<&mut [T]>> =
        (0..c_in.div_ceil(group)).map(|_| Vec::with_capacity(pieces)).collect();
    if v.is_empty() {
        return groups;
    }
    for block in v.chunks_exact_mut(panel_ldc(c_in) * mr) {
        let mut rest = block;
        for (g, pieces) in groups.iter_mut().enumerate() {
            let (piece, tail) = rest.split_at_mut(group.min(c_in - g * group) * mr);
            pieces.push(piece);
            rest = tail;
        }
    }
    groups
}

/// Writes channel k of a group ([`tile_groups`]'s pieces) from v: (16, n_t), the channel's
/// transforms. Tiles past n_t are written as zero.
pub fn pack_tile_channel<T: Element>(pieces: &mut [&mut [T]], k: usize, v: &[T], n_t: usize, mr: usize) {
    let nb = n_t.div_ceil(mr);
    assert!(pieces.len() == 16 * nb && v.len() >= 16 * n_t);
    for (i, piece) in pieces.iter_mut().enumerate() {
        let (xi, t0) = (i / nb, (i % nb) * mr);
        let w = mr.min(n_t - t0);
        let (d, next) = piece[k * mr..].split_at_mut(mr);
        copy_short(&mut d[..w], &v[xi * n_t + t0..][..w]);
        d[w..].fill(T::ZERO);
        // The next channel's slot, ahead of its stores: each channel writes one slot in every
        // piece, hundreds of interleaved streams that no hardware prefetcher follows, so its
        // stores waited for their lines to come from memory (copy_short: 4.3 -> 1.5 % of the
        // seed decode, perf).
        prefetch(next, std::mem::size_of_val(d));
    }
}

/// Asks for the cache lines holding the first `bytes` bytes of `s` (at most its length): a
/// hint, on x86-64 only (aarch64 could not be measured here: qemu only).
#[inline(always)]
pub(crate) fn prefetch<T>(s: &[T], bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = s.as_ptr().cast::<i8>();
        for off in (0..bytes.min(std::mem::size_of_val(s))).step_by(64) {
            // SAFETY: a prefetch never faults, and the address is inside `s`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, bytes);
}

/// d = s (equal lengths) by blocks of 8 moved as values: copy_from_slice, and a plain loop
/// (which the compiler turns into the same call), cost a call to memmove per 64 bytes, 3.5 %
/// of the seed decode (perf).
#[inline(always)]
fn copy_short<T: Copy>(d: &mut [T], s: &[T]) {
    let (mut dc, mut sc) = (d.chunks_exact_mut(8), s.chunks_exact(8));
    for (d8, s8) in (&mut dc).zip(&mut sc) {
        let a: [T; 8] = s8.try_into().expect("chunks of 8");
        let d8: &mut [T; 8] = d8.try_into().expect("chunks of 8");
        *d8 = a;
    }
    for (d, &x) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        *d = x;
    }
}

/// dst: weight panels ([`weights_len`]) from u: (c_out, 16, k_d, c_in), row stride `ld_u`
/// ([`super::winograd::transform_weights`]'s layout).
pub fn pack_weights<T: Element>(
    dst: &mut [T],
    u: &[T],
    (c_out, c_in, k_d): (usize, usize, usize),
    ld_u: usize,
) {
    let cb = c_out.div_ceil(NR);
    assert!(dst.len() == weights_len(c_out, c_in, k_d) && c_out * ld_u <= u.len());
    if dst.is_empty() {
        return;
    }
    dst.par_chunks_mut(cb * c_in * NR).enumerate().for_each(|(xd, d)| {
        for (j, dj) in d.chunks_exact_mut(c_in * NR).enumerate() {
            for (ci, dc) in dj.chunks_exact_mut(NR).enumerate() {
                for (r, x) in dc.iter_mut().enumerate() {
                    let co = j * NR + r;
                    *x = if co < c_out { u[co * ld_u + xd * c_in + ci] } else { T::ZERO };
                }
            }
        }
    });
}

/// One transformed position's product: m = sum over time taps dt of (weights dt) . (tiles dt).
pub struct PanelArgs<'a, T> {
    /// (c_out, ld_m): overwritten (columns past the tiles get the zero tiles' products).
    pub m: &'a mut [T],
    pub ld_m: usize,
    pub c_out: usize,
    pub c_in: usize,
    pub n_t: usize,
    /// Per time tap: this position's tile panels (nb, [`panel_ldc`], mr), or `None` (zero padding).
    pub a: &'a [Option<&'a [T]>],
    /// This position's weight panels (k_d, cb, c_in, NR), k_d = `a.len()`.
    pub b: &'a [T],
    pub mr: usize,
}

impl<T> PanelArgs<'_, T> {
    fn check(&self) {
        let (nb, cb) = (self.n_t.div_ceil(self.mr), self.c_out.div_ceil(NR));
        assert!(self.mr > 0 && self.ld_m >= nb * self.mr && self.m.len() >= self.c_out * self.ld_m);
        assert!(self.b.len() >= self.a.len() * cb * self.c_in * NR);
        assert!(self.a.iter().flatten().all(|a| a.len() >= nb * panel_ldc(self.c_in) * self.mr));
    }
}

/// The plain twin of [`PanelProduct`]: each output's sum in the documented order.
pub fn panel_product<T: Element>(p: PanelArgs<'_, T>) {
    p.check();
    let PanelArgs { m, ld_m, c_out, c_in, n_t, a, b, mr } = p;
    let (nb, cb, ldc) = (n_t.div_ceil(mr), c_out.div_ceil(NR), panel_ldc(c_in));
    for co in 0..c_out {
        for t in 0..nb * mr {
            let mut sum = None;
            for (dt, ap) in a.iter().enumerate() {
                let Some(ap) = ap else { continue };
                for k0 in (0..c_in).step_by(KC) {
                    let mut acc = T::ZERO;
                    for ci in k0..(k0 + KC).min(c_in) {
                        let x = ap[((t / mr) * ldc + ci) * mr + t % mr];
                        let w = b[((dt * cb + co / NR) * c_in + ci) * NR + co % NR];
                        acc = x.mul_add(w, acc);
                    }
                    sum = Some(sum.map_or(acc, |s| s + acc));
                }
            }
            m[co * ld_m + t] = sum.unwrap_or(T::ZERO);
        }
    }
}

/// [`panel_product`] on f32 in vectors; `mr` must be `2 * S::LANES`.
pub struct PanelProduct<'a>(pub PanelArgs<'a, f32>);

impl Kernel for PanelProduct<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let p = self.0;
        p.check();
        assert_eq!(p.mr, 2 * S::LANES, "tile panels packed for another vector width");
        let mc_blocks = (MC_TILES / p.mr).max(1);
        for_each_micro_tile(p, KC, mc_blocks, |a, b, c, ld, rows, add| micro_tile(s, a, b, c, ld, rows, add));
    }
}

/// The blocking of the panel products (f32 here, bf16 channel pairs in
/// [`super::bf16_panels`]): per group of `mc_blocks` tile blocks, time tap, block of `kc`
/// channel slots and weight panel, `tile(a, b, c, ld_m, rows, add)` for every tile block of the
/// group, with a: (kc, mr) of the tile panel, b: (kc, NR) of the weight panel, c: the
/// micro-tile's first output (rows `rows` of stride ld_m), `add`: sum onto what c holds (every
/// block after an output's first). Without any product (no channels, every tap padding) m is
/// zeroed. `p` checked by the caller.
#[inline(always)]
pub fn for_each_micro_tile<T: Element>(
    p: PanelArgs<'_, T>,
    kc: usize,
    mc_blocks: usize,
    mut tile: impl FnMut(&[T], &[T], &mut [T], usize, usize, bool),
) {
    let PanelArgs { m, ld_m, c_out, c_in, n_t, a, b, mr } = p;
    let (nb, cb, ldc) = (n_t.div_ceil(mr), c_out.div_ceil(NR), panel_ldc(c_in));
    if c_in == 0 || a.iter().all(Option::is_none) {
        m[..c_out * ld_m].fill(T::ZERO);
        return;
    }
    for g0 in (0..nb).step_by(mc_blocks) {
        let mut first = true;
        for (dt, ap) in a.iter().enumerate() {
            let Some(ap) = ap else { continue };
            for k0 in (0..c_in).step_by(kc) {
                let kk = kc.min(c_in - k0);
                for j in 0..cb {
                    let bp = &b[((dt * cb + j) * c_in + k0) * NR..][..kk * NR];
                    let rows = NR.min(c_out - j * NR);
                    for tb in g0..(g0 + mc_blocks).min(nb) {
                        let ap = &ap[(tb * ldc + k0) * mr..][..kk * mr];
                        tile(ap, bp, &mut m[j * NR * ld_m + tb * mr..], ld_m, rows, !first);
                    }
                }
                first = false;
            }
        }
    }
}

/// c[r * ld + i] (+)= sum_k a[k * mr + i] * b[k * NR + r] for rows r < `rows`, i < mr = 2 lanes:
/// the sum from zero, then added to the stored one when `add`, else stored. A panel's rows past
/// c_out (its last, when NR does not divide c_out: 128 = 21 x 6 + 2) are not computed.
#[inline(always)]
fn micro_tile<S: Simd>(s: S, a: &[f32], b: &[f32], c: &mut [f32], ld: usize, rows: usize, add: bool) {
    match rows {
        NR => micro_rows::<S, NR>(s, a, b, c, ld, add),
        5 => micro_rows::<S, 5>(s, a, b, c, ld, add),
        4 => micro_rows::<S, 4>(s, a, b, c, ld, add),
        3 => micro_rows::<S, 3>(s, a, b, c, ld, add),
        2 => micro_rows::<S, 2>(s, a, b, c, ld, add),
        1 => micro_rows::<S, 1>(s, a, b, c, ld, add),
        _ => unreachable!("a weight panel of {rows} rows"),
    }
}

/// [`micro_tile`] for R <= NR rows: the first R weights of every panel row.
#[inline(always)]
fn micro_rows<S: Simd, const R: usize>(s: S, a: &[f32], b: &[f32], c: &mut [f32], ld: usize, add: bool) {
    let l = S::LANES;
    let mut acc = [[s.splat(0.0); 2]; R];
    for (ak, bk) in a.chunks_exact(2 * l).zip(b.chunks_exact(NR)) {
        let (a0, a1) = (s.load(ak), s.load(&ak[l..]));
        for (ar, &w) in acc.iter_mut().zip(bk) {
            let w = s.splat(w);
            *ar = [s.fma(a0, w, ar[0]), s.fma(a1, w, ar[1])];
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        let (c0, c1) = c[r * ld..][..2 * l].split_at_mut(l);
        let (v0, v1) = match add {
            true => (s.add(s.load(c0), ar[0]), s.add(s.load(c1), ar[1])),
            false => (ar[0], ar[1]),
        };
        s.store(c0, v0);
        s.store(c1, v1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::Vector;
    use proptest::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut r = seed | 1;
        (0..n)
            .map(|_| {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                ((r >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The product on every ISA this CPU has equals the plain twin bit for bit, and the plain
    /// twin equals a direct sum over the unpacked operands in the same order.
    fn check(c_out: usize, c_in: usize, n_t: usize, taps: &[bool], seed: u64) -> Result<(), TestCaseError> {
        let k_d = taps.len();
        let ld_v = padded_ld(16 * n_t);
        let v: Vec<Vec<f32>> = (0..k_d).map(|dt| values(c_in * ld_v, seed + dt as u64)).collect();
        let ld_u = padded_ld(16 * k_d * c_in);
        let u = values(c_out * ld_u, seed ^ 0x5eed);
        let mut wp = vec![0.0; weights_len(c_out, c_in, k_d)];
        pack_weights(&mut wp, &u, (c_out, c_in, k_d), ld_u);
        for vec in Vector::all_available() {
            let mr = 2 * vec.lanes();
            let tiles: Vec<Vec<f32>> = v
                .iter()
                .map(|vd| {
                    let mut t = vec![f32::NAN; tiles_len(c_in, n_t, mr)];
                    // Groups of 5 channels (the last shorter), as the input transform packs them.
                    for (g, mut pieces) in tile_groups(&mut t, c_in, n_t, mr, 5).into_iter().enumerate() {
                        for k in 0..5.min(c_in - 5 * g) {
                            pack_tile_channel(&mut pieces, k, &vd[(5 * g + k) * ld_v..], n_t, mr);
                        }
                    }
                    t
                })
                .collect();
            let nb = n_t.div_ceil(mr);
            let ld_m = m_ld(n_t, mr);
            for xi in [0, 7, 15] {
                let a: Vec<Option<&[f32]>> = tiles
                    .iter()
                    .zip(taps)
                    .map(|(t, &on)| on.then(|| &t[xi * nb * panel_ldc(c_in) * mr..]))
                    .collect();
                let b = &wp[xi * k_d * c_out.div_ceil(NR) * c_in * NR..];
                let mut want = vec![f32::NAN; c_out * ld_m];
                panel_product(PanelArgs { m: &mut want, ld_m, c_out, c_in, n_t, a: &a, b, mr });
                let mut got = vec![f32::NAN; c_out * ld_m];
                vec.run(PanelProduct(PanelArgs { m: &mut got, ld_m, c_out, c_in, n_t, a: &a, b, mr }));
                for co in 0..c_out {
                    for t in 0..n_t {
                        let mut acc = None;
                        for dt in (0..k_d).filter(|&dt| taps[dt]) {
                            for k0 in (0..c_in).step_by(KC) {
                                let mut part = 0.0f32;
                                for ci in k0..(k0 + KC).min(c_in) {
                                    let w = u[co * ld_u + (xi * k_d + dt) * c_in + ci];
                                    part = v[dt][ci * ld_v + xi * n_t + t].mul_add(w, part);
                                }
                                acc = Some(acc.map_or(part, |a: f32| a + part));
                            }
                        }
                        let acc = acc.unwrap_or(0.0);
                        let (w, g) = (want[co * ld_m + t], got[co * ld_m + t]);
                        prop_assert_eq!(w.to_bits(), acc.to_bits(), "twin vs direct at co {} t {}", co, t);
                        prop_assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{} vs twin at co {} t {} xi {}",
                            vec.name(),
                            co,
                            t,
                            xi
                        );
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(24)))]
        #[test]
        fn panel_product_matches_twin_on_every_isa(
            c_out in 1usize..20, c_in in 1usize..40, n_t in 1usize..80,
            taps in proptest::collection::vec(any::<bool>(), 1..4), seed in any::<u64>(),
        ) {
            check(c_out, c_in, n_t, &taps, seed)?;
        }
    }

    /// No input channels: every output is zero, as in the twin.
    #[test]
    fn panel_product_without_channels_is_zero() {
        check(7, 0, 19, &[true, true, false], 3).unwrap();
    }

    /// Every count of rows a last weight panel can hold (c_out % NR = 1 .. NR - 1, and 0).
    #[test]
    fn panel_product_with_each_partial_panel() {
        for c_out in 1..=2 * NR {
            check(c_out, 9, 37, &[true, true], c_out as u64).unwrap();
        }
    }

    /// Blocks of KC channels and MC_TILES tiles, and a partial last row block.
    #[test]
    fn panel_product_across_blocks() {
        check(13, KC + 3, MC_TILES * 2 + 5, &[true, false, true], 7).unwrap();
    }
}
