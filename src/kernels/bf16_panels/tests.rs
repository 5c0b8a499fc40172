use super::*;
use crate::kernels::winograd_panels::{m_ld, padded_ld, tile_groups, tiles_len, weights_len};
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = seed | 1;
    (0..n)
        .map(|_| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            // Magnitudes over 2^-12 .. 2^4: sums of products of different sizes, so the
            // round-to-odd additions are often inexact.
            let m = ((r >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            m * f32::powi(2.0, (r % 17) as i32 - 12)
        })
        .collect()
}

/// Round to odd by another route: the exact sum in f64 (exponents at most 28 apart), then
/// truncated to f32 with the last bit set when inexact.
fn add_round_odd_f64(a: f32, b: f32) -> f32 {
    let s = a as f64 + b as f64;
    let mut t = s as f32;
    if (t as f64).abs() > s.abs() {
        t = f32::from_bits(t.to_bits() - 1);
    }
    if t as f64 != s { f32::from_bits(t.to_bits() | 1) } else { t }
}

#[test]
fn round_to_odd_named_values() {
    let tiny = f32::powi(2.0, -30);
    assert_eq!(add_round_odd(1.0, tiny).to_bits(), 0x3F80_0001);
    assert_eq!(add_round_odd(1.0, -tiny).to_bits(), 0x3F7F_FFFF);
    assert_eq!(add_round_odd(-1.0, -tiny).to_bits(), 0xBF80_0001);
    assert_eq!(add_round_odd(1.0, 1e-30).to_bits(), 0x3F80_0001);
    assert_eq!(add_round_odd(1.5, 0.25), 1.75);
    assert_eq!(add_round_odd(1.0, -1.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(add_round_odd(f32::MAX, f32::MAX), f32::INFINITY);
    // Nearest rounds 2^128 - 2^103 up to infinity; to odd it stays at the largest finite.
    assert_eq!(add_round_odd(f32::MAX, f32::powi(2.0, 103)), f32::MAX);
    assert_eq!(add_round_odd(-f32::MAX, -f32::powi(2.0, 103)), -f32::MAX);
    assert_eq!(add_round_odd(f32::INFINITY, 1.0), f32::INFINITY);
    assert_eq!(add_round_odd(f32::NAN, 1.0).to_bits(), DEFAULT_NAN);
    // Subnormal inputs are zero; results below the normal range flush.
    assert_eq!(add_round_odd(1e-40, 0.0).to_bits(), 0);
    assert_eq!(add_round_odd(f32::MIN_POSITIVE, -f32::MIN_POSITIVE / 2.0 * 1.5).to_bits(), 0x0080_0000);
    assert_eq!(add_round_odd(f32::MIN_POSITIVE * 1.5, -f32::MIN_POSITIVE).to_bits(), 0);
}

#[test]
fn bfdot_named_values() {
    // Exact: 1 * 2 + 3 * 0.5 onto 0.25.
    assert_eq!(bfdot(0.25, pair(1.0, 3.0), pair(2.0, 0.5)), 3.75);
    // The pair sum 1 + 2^-20 is exact in f32; the accumulation onto 2^8 rounds to odd.
    let x = bfdot(256.0, pair(1.0, f32::powi(2.0, -10)), pair(1.0, f32::powi(2.0, -10)));
    assert_eq!(x.to_bits(), 257.0f32.to_bits() | 1);
    // Inputs are rounded to bf16 (nearest even) when packed.
    assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(2000)))]
    #[test]
    fn round_to_odd_matches_the_exact_sum(a in -1e6f32..1e6, b in -1e6f32..1e6, e in -28i32..28) {
        let b = b * f32::powi(2.0, e);
        prop_assume!(a.abs() >= f32::MIN_POSITIVE && b.abs() >= f32::MIN_POSITIVE);
        prop_assert_eq!(add_round_odd(a, b).to_bits(), add_round_odd_f64(a, b).to_bits(), "{} + {}", a, b);
    }
}

/// Every bf16 panel product this CPU runs equals its twin bit for bit, and each twin equals
/// a direct sum over the unpacked operands in the documented order.
fn check(c_out: usize, c_in: usize, n_t: usize, taps: &[bool], seed: u64) -> Result<(), TestCaseError> {
    for twin in [Bf16Dot::BfdotTwin, Bf16Dot::Dpbf16Twin] {
        check_twin(twin, c_out, c_in, n_t, taps, seed)?;
    }
    Ok(())
}

fn check_twin(
    twin: Bf16Dot,
    c_out: usize,
    c_in: usize,
    n_t: usize,
    taps: &[bool],
    seed: u64,
) -> Result<(), TestCaseError> {
    let (k_d, pairs, mr) = (taps.len(), c_in.div_ceil(2), twin.mr());
    let ld_v = padded_ld(16 * n_t);
    let v: Vec<Vec<f32>> = (0..k_d).map(|dt| values(c_in * ld_v, seed + dt as u64)).collect();
    let ld_u = padded_ld(16 * k_d * c_in);
    let u = values(c_out * ld_u, seed ^ 0x5eed);
    let mut wp = vec![f32::NAN; weights_len(c_out, pairs, k_d)];
    pack_weights_bf16(&mut wp, &u, (c_out, c_in, k_d), ld_u);
    let tiles: Vec<Vec<f32>> = v
        .iter()
        .map(|vd| {
            let mut t = vec![f32::NAN; tiles_len(pairs, n_t, mr)];
            // Groups of 3 pairs (the last shorter), as the input transform packs them.
            for (g, mut pieces) in tile_groups(&mut t, pairs, n_t, mr, 3).into_iter().enumerate() {
                for k in 0..3.min(pairs - 3 * g) {
                    let ci = 2 * (3 * g + k);
                    let hi = (ci + 1 < c_in).then(|| &vd[(ci + 1) * ld_v..]);
                    pack_tile_pair(&mut pieces, k, &vd[ci * ld_v..], hi, n_t, mr);
                }
            }
            t
        })
        .collect();
    let (nb, ld_m) = (n_t.div_ceil(mr), m_ld(n_t, mr));
    let bf = |x: f32| f32::from_bits(u32::from(bf16_bits(x)) << 16);
    // Two bf16 values (low 16 bits zero) as one channel-pair slot.
    let slot = |lo: f32, hi: f32| f32::from_bits((lo.to_bits() >> 16) | (hi.to_bits() & 0xFFFF_0000));
    for xi in [0, 9, 15] {
        let a: Vec<Option<&[f32]>> = tiles
            .iter()
            .zip(taps)
            .map(|(t, &on)| on.then(|| &t[xi * nb * panel_ldc(pairs) * mr..]))
            .collect();
        let b = &wp[xi * k_d * c_out.div_ceil(NR) * pairs * NR..];
        let mut want = vec![f32::NAN; c_out * ld_m];
        twin.panel_product(PanelArgs { m: &mut want, ld_m, c_out, c_in: pairs, n_t, a: &a, b, mr });
        for co in 0..c_out {
            for t in 0..n_t {
                let mut acc = None;
                for dt in (0..k_d).filter(|&dt| taps[dt]) {
                    for q0 in (0..pairs).step_by(KC_PAIRS) {
                        let mut part = 0.0f32;
                        for q in q0..(q0 + KC_PAIRS).min(pairs) {
                            let elem = |ci: usize| match ci < c_in {
                                true => (
                                    bf(v[dt][ci * ld_v + xi * n_t + t]),
                                    bf(u[co * ld_u + (xi * k_d + dt) * c_in + ci]),
                                ),
                                false => (0.0, 0.0),
                            };
                            let ((x0, w0), (x1, w1)) = (elem(2 * q), elem(2 * q + 1));
                            part = twin.lane(part, slot(x0, x1), slot(w0, w1));
                        }
                        acc = Some(acc.map_or(part, |s: f32| s + part));
                    }
                }
                let acc = acc.unwrap_or(0.0);
                prop_assert_eq!(
                    want[co * ld_m + t].to_bits(),
                    acc.to_bits(),
                    "{} vs direct at co {} t {}",
                    twin.name(),
                    co,
                    t
                );
            }
        }
        for dot in Bf16Dot::all_available().into_iter().filter(|d| d.twin() == twin && *d != twin) {
            let mut got = vec![f32::NAN; c_out * ld_m];
            dot.panel_product(PanelArgs { m: &mut got, ld_m, c_out, c_in: pairs, n_t, a: &a, b, mr });
            for co in 0..c_out {
                for t in 0..n_t {
                    let (g, w) = (got[co * ld_m + t], want[co * ld_m + t]);
                    prop_assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{} vs twin at co {} t {} xi {}",
                        dot.name(),
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
    fn bf16_panel_product_matches_twin(
        c_out in 1usize..20, c_in in 1usize..40, n_t in 1usize..40,
        taps in proptest::collection::vec(any::<bool>(), 1..4), seed in any::<u64>(),
    ) {
        check(c_out, c_in, n_t, &taps, seed)?;
    }
}

/// Blocks of KC channels (odd count: a zero high half) and MC tile blocks.
#[test]
fn bf16_panel_product_across_blocks() {
    check(13, KC + 3, MC_TILES * 2 + 5, &[true, false, true], 7).unwrap();
}

/// Every count of rows a last weight panel can hold (c_out % NR = 1 .. NR - 1, and 0).
#[test]
fn bf16_panel_product_with_each_partial_panel() {
    for c_out in 1..=2 * NR {
        check(c_out, 9, 37, &[true, true], c_out as u64).unwrap();
    }
}

#[test]
fn bf16_panel_product_without_taps_is_zero() {
    check(7, 5, 19, &[false, false], 3).unwrap();
}

/// One output of a 1-tap product over the given channel-pair slots (x, w), pair by pair, on
/// `dot`: the instruction's chain from zero.
fn chain(dot: Bf16Dot, pairs: &[(f32, f32)]) -> f32 {
    let (n, mr) = (pairs.len(), dot.mr());
    let ldc = panel_ldc(n);
    let mut a = vec![0.0f32; ldc * mr];
    let mut b = vec![0.0f32; n * NR];
    for (q, &(x, w)) in pairs.iter().enumerate() {
        a[q * mr] = x;
        b[q * NR] = w;
    }
    let ld_m = m_ld(1, mr);
    let mut m = vec![f32::NAN; ld_m];
    let taps = [Some(&a[..])];
    dot.panel_product(PanelArgs { m: &mut m, ld_m, c_out: 1, c_in: n, n_t: 1, a: &taps, b: &b, mr });
    m[0]
}

/// Slot of two bf16 values given as f32 (exactly representable).
fn raw(lo: f32, hi: f32) -> f32 {
    assert!((round_bf16(lo) == lo || lo.is_nan()) && (round_bf16(hi) == hi || hi.is_nan()));
    f32::from_bits((lo.to_bits() >> 16) | (hi.to_bits() & 0xFFFF_0000))
}

/// Edge cases of BFDOT's arithmetic, on the twin and (under qemu-aarch64) the instruction:
/// rounding to odd below an overflow, overflow, subnormal operands and results, NaN.
#[test]
fn bfdot_edge_values_match_the_instruction() {
    let p2 = |e: i32| f32::powi(2.0, e);
    let big = raw(f32::from_bits(0x7F7F_0000), 0.0); // (2 - 2^-7) 2^127
    let one = raw(1.0, 0.0);
    // Then 2^120 - 2^103 = 217 2^50 x 151 2^55 + 3 2^50 x 2^53: the exact sum 2^128 - 2^103
    // lies between f32::MAX and 2^128 (nearest: infinity; to odd: f32::MAX).
    let near = (raw(217.0 * p2(50), 3.0 * p2(50)), raw(151.0 * p2(55), p2(53)));
    let cases: Vec<(Vec<(f32, f32)>, u32)> = vec![
        (vec![(big, one), near], f32::MAX.to_bits()),
        (vec![(big, one), (big, one)], f32::INFINITY.to_bits()),
        // 2^-126 x 2^-1: a subnormal product flushes to +0.
        (vec![(raw(p2(-126), 0.0), raw(0.5, 0.0))], 0),
        // A subnormal operand (bf16 0x0040, 2^-127) is zero: 2^20 x it is 0, not 2^-107.
        (vec![(raw(p2(20), 0.0), f32::from_bits(0x0000_0040))], 0),
        // 1 + 2^-30 (from two products): inexact, rounds to odd.
        (vec![(raw(1.0, p2(-15)), raw(1.0, p2(-15)))], 0x3F80_0001),
        // inf x 0 is NaN: the default NaN.
        (vec![(raw(f32::INFINITY, 0.0), raw(0.0, 0.0))], DEFAULT_NAN),
    ];
    check_chains(Bf16Dot::BfdotTwin, &cases);
}

/// Each case's chain gives its bits on `twin` and on every kernel it is the twin of.
fn check_chains(twin: Bf16Dot, cases: &[(Vec<(f32, f32)>, u32)]) {
    for dot in Bf16Dot::all_available().into_iter().filter(|d| d.twin() == twin) {
        for (pairs, want) in cases {
            let got = chain(dot, pairs);
            assert_eq!(
                got.to_bits(),
                *want,
                "{}: {:?} gave {got:e} ({:#x})",
                dot.name(),
                pairs,
                got.to_bits()
            );
        }
    }
}

/// Edge cases of `vdpbf16ps`'s arithmetic (Intel SDM; Bochs 3.0 emulates it so), on the twin
/// and the instruction: the high products first, nearest-even fused additions, overflow,
/// subnormal operands and results. NaN results are checked as NaN only.
#[test]
fn dpbf16_edge_values_match_the_instruction() {
    let p2 = |e: i32| f32::powi(2.0, e);
    let big = raw(f32::from_bits(0x7F7F_0000), 0.0);
    let one = raw(1.0, 0.0);
    let cases: Vec<(Vec<(f32, f32)>, u32)> = vec![
        (vec![(big, one), (big, one)], f32::INFINITY.to_bits()),
        // 2^-126 x 2^-1: a subnormal result flushes to +0.
        (vec![(raw(p2(-126), 0.0), raw(0.5, 0.0))], 0),
        // A subnormal operand (bf16 0x0040, 2^-127) is zero.
        (vec![(raw(p2(20), 0.0), f32::from_bits(0x0000_0040))], 0),
        // 2^-30 + 1: nearest even, 1 (BFDOT: rounded to odd).
        (vec![(raw(1.0, p2(-15)), raw(1.0, p2(-15)))], 1.0f32.to_bits()),
        // Onto 1: the high product -1 first gives 0, then + 2^-24 exactly; the low one first
        // would round 1 + 2^-24 to 1 and give 0.
        (vec![(one, one), (raw(p2(-24), -1.0), raw(1.0, 1.0))], p2(-24).to_bits()),
    ];
    check_chains(Bf16Dot::Dpbf16Twin, &cases);
    for dot in Bf16Dot::all_available().into_iter().filter(|d| d.twin() == Bf16Dot::Dpbf16Twin) {
        let nan = chain(dot, &[(raw(f32::INFINITY, 0.0), raw(0.0, 0.0))]);
        assert!(nan.is_nan(), "{}: inf x 0 gave {nan:e}", dot.name());
    }
}

/// The self-check sees a difference in the last bit: the two instructions' arithmetic on the
/// same panels.
#[test]
fn self_check_tells_the_two_arithmetics_apart() {
    assert!(self_check(|p| panel_product_twin(p, bfdot), |p| panel_product_twin(p, bfdot), MR_BFDOT));
    assert!(!self_check(|p| panel_product_twin(p, bfdot), |p| panel_product_twin(p, dpbf16), MR_BFDOT));
    assert!(!self_check(|p| panel_product_twin(p, dpbf16), |p| panel_product_twin(p, bfdot), MR_DPBF16));
    // An instruction that took the even (low) pair first.
    fn low_first(acc: f32, a: f32, b: f32) -> f32 {
        let swap = |x: f32| f32::from_bits(x.to_bits().rotate_left(16));
        dpbf16(acc, swap(a), swap(b))
    }
    assert!(!self_check(|p| panel_product_twin(p, low_first), |p| panel_product_twin(p, dpbf16), MR_DPBF16));
}

/// Where the CPU has a bf16 dot-product instruction, movq's kernel for it reproduces its twin
/// (otherwise the bf16 mode is an error on this CPU, and this test says why).
#[test]
fn every_bf16_kernel_of_this_cpu_passes_its_self_check() {
    for &(k, ok) in hardware_kernels() {
        assert!(ok, "{} differs from {} on this CPU", k.name(), k.twin().name());
    }
}

/// Values whose bf16 rounding is an edge: ties either way, carries into the exponent, the
/// largest finite (rounds to infinity), subnormals, infinities, signalling and quiet NaNs.
fn pack_edge_values(n: usize, seed: u64) -> Vec<f32> {
    const EDGES: [u32; 14] = [
        0x3F80_8000,
        0x3F81_8000,
        0x3F80_7FFF,
        0x3FFF_FFFF,
        0x7F7F_FFFF,
        0xFF7F_FFFF,
        0x0000_8000,
        0x007F_FFFF,
        0x8000_0001,
        0x7F80_0000,
        0xFF80_0000,
        0x7F80_0001,
        0xFFC1_2345,
        0x8000_0000,
    ];
    let r = values(n, seed);
    r.iter()
        .enumerate()
        .map(|(i, &x)| if (x.to_bits() >> 3) % 3 == 0 { f32::from_bits(EDGES[i % EDGES.len()]) } else { x })
        .collect()
}

fn check_pack_pair(pairs: usize, n_t: usize, odd: bool, seed: u64) -> Result<(), TestCaseError> {
    use crate::kernels::simd::Vector;
    let c_in = 2 * pairs - usize::from(odd);
    let v = pack_edge_values(c_in * 16 * n_t, seed);
    let ch = |ci: usize| &v[ci * 16 * n_t..][..16 * n_t];
    for mr in [MR_BFDOT, MR_DPBF16] {
        let pack = |kernel: Option<Vector>| {
            let mut t = vec![f32::NAN; tiles_len(pairs, n_t, mr)];
            for (g, mut pieces) in tile_groups(&mut t, pairs, n_t, mr, 2).into_iter().enumerate() {
                for k in 0..2.min(pairs - 2 * g) {
                    let ci = 2 * (2 * g + k);
                    let (lo, hi) = (ch(ci), (ci + 1 < c_in).then(|| ch(ci + 1)));
                    match kernel {
                        None => pack_tile_pair(&mut pieces, k, lo, hi, n_t, mr),
                        Some(vec) => vec.run(PackTilePair { pieces: &mut pieces, k, lo, hi, n_t, mr }),
                    }
                }
            }
            t
        };
        let want = pack(None);
        for vec in Vector::all_available() {
            let got = pack(Some(vec));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert_eq!(g.to_bits(), w.to_bits(), "{} mr {} slot {}", vec.name(), mr, i);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(24)))]
    #[test]
    fn pack_tile_pair_kernel_matches_twin_on_every_isa(
        pairs in 1usize..6, n_t in 1usize..80, odd in any::<bool>(), seed in any::<u64>(),
    ) {
        check_pack_pair(pairs, n_t, odd, seed)?;
    }
}

/// The twin's rounding, checked against the kernel's on bit patterns around every
/// tie of the low half, in all four sign/NaN classes.
#[test]
fn pair_bits_equals_pair_near_ties() {
    for hi16 in [0x0000u32, 0x0001, 0x3F80, 0x3F81, 0x7F7F, 0x7F80, 0x7FC0, 0x8000, 0xFF7F, 0xFF80, 0xFFBF] {
        for lo16 in [0x0000u32, 0x0001, 0x7FFE, 0x7FFF, 0x8000, 0x8001, 0xFFFF] {
            let b = (hi16 << 16) | lo16;
            let want = pair(f32::from_bits(b), f32::from_bits(b ^ 0x8000_0000)).to_bits();
            assert_eq!(pair_bits(b, b ^ 0x8000_0000), want, "bits {b:#010x}");
        }
    }
}
