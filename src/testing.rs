//! Problem generators shared by the property tests, the fuzz harness and the benches: raw
//! integers (from proptest, the fuzzer's bytes or a seed) mapped onto problems that are valid by
//! construction, so no test discards a case and every case counts.

use crate::kernels::params::{Conv3dParams, TimePad};

/// A property test's case count: `default`, unless PROPTEST_CASES is set (Miri runs set it
/// small; `ProptestConfig::with_cases` alone would ignore it).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A convolution and the (d, h, w) of an input it accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvProblem {
    pub p: Conv3dParams,
    pub dims: (usize, usize, usize),
}

/// Raw integers [`conv_problem`] reads.
pub const CONV_RAW: usize = 17;

/// The convolution `raw` describes (each entry taken modulo its range): channels 1..=`c_max`,
/// kernel 1..=3 per axis (3x3 spatial when raw[5] is odd, the Winograd case), time stride and
/// dilation 1..=2, paddings 0..=2, any time-pad kind, and an input large enough for the kernel
/// plus up to 4 frames and 6 rows and columns.
pub fn conv_problem(raw: [usize; CONV_RAW], c_max: usize) -> ConvProblem {
    let r = |i: usize, lo: usize, hi: usize| lo + raw[i] % (hi - lo + 1);
    let mut k = (r(2, 1, 3), r(3, 1, 3), r(4, 1, 3));
    if raw[5] % 2 == 1 {
        (k.1, k.2) = (3, 3);
    }
    problem_with_kernel(raw, c_max, k)
}

/// Like [`conv_problem`], with a kernel that is not a cube by construction and up to 5 taps per
/// axis: when raw[5] is odd, 3x3 spatial taps (the Winograd case) and k_d in {1, 2, 4, 5};
/// otherwise (k_d, k_h, k_w) in 1..=5 (even sizes included: the kernels take any size) with
/// k_w moved off 3x3 spatial taps and off the cube, so `has_3x3_taps` tells the two apart.
pub fn noncubic_conv_problem(raw: [usize; CONV_RAW], c_max: usize) -> ConvProblem {
    let r = |i: usize, lo: usize, hi: usize| lo + raw[i] % (hi - lo + 1);
    let k = if raw[5] % 2 == 1 {
        ([1, 2, 4, 5][raw[2] % 4], 3, 3)
    } else {
        let (t, h, mut w) = (r(2, 1, 5), r(3, 1, 5), r(4, 1, 5));
        if (h, w) == (3, 3) {
            w = [1, 5][raw[4] / 5 % 2];
        }
        // w + 1 (mod 5) differs from h, so this cannot make 3x3 taps.
        (t, h, if t == h && h == w { w % 5 + 1 } else { w })
    };
    problem_with_kernel(raw, c_max, k)
}

/// The problem of `raw` (all but the kernel sizes raw[2..=4]) with kernel `k` (k_d, k_h, k_w).
fn problem_with_kernel(raw: [usize; CONV_RAW], c_max: usize, k: (usize, usize, usize)) -> ConvProblem {
    let r = |i: usize, lo: usize, hi: usize| lo + raw[i] % (hi - lo + 1);
    let mut p = Conv3dParams::plain(r(0, 1, c_max.max(1)), r(1, 1, c_max.max(1)), k);
    p.stride_d = r(6, 1, 2);
    p.dilation_d = r(7, 1, 2);
    p.pad_d = (r(8, 0, 2), r(9, 0, 2));
    p.pad_h = (r(10, 0, 2), r(11, 0, 2));
    p.pad_w = (r(12, 0, 2), r(13, 0, 2));
    p.time_pad = [TimePad::Zeros, TimePad::ReplicateFirst, TimePad::Reflect][raw[14] % 3];
    // The smallest input the kernel fits on, then some more.
    let span_d = p.dilation_d * (p.k_d - 1) + 1;
    let least = |span: usize, pad: (usize, usize)| span.saturating_sub(pad.0 + pad.1).max(1);
    let dims = (
        least(span_d, p.pad_d) + raw[15] % 5,
        least(p.k_h, p.pad_h) + raw[16] % 7,
        least(p.k_w, p.pad_w) + (raw[16] / 7) % 7,
    );
    ConvProblem { p, dims }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_problems_are_valid() {
        let mut rng = crate::tensor::SplitMix64(1);
        for _ in 0..10_000 {
            let raw: [usize; CONV_RAW] = std::array::from_fn(|_| rng.next_u64() as usize);
            let c = conv_problem(raw, 4);
            assert!(c.p.out_dims(c.dims.0, c.dims.1, c.dims.2).is_some(), "{c:?}");
            let c = noncubic_conv_problem(raw, 4);
            assert!(c.p.out_dims(c.dims.0, c.dims.1, c.dims.2).is_some(), "{c:?}");
            let (p, winograd) = (&c.p, raw[5] % 2 == 1);
            assert!(!(p.k_d == p.k_h && p.k_h == p.k_w), "{c:?} is a cube");
            assert_eq!(p.has_3x3_taps(), winograd, "{c:?}");
            assert!([p.k_d, p.k_h, p.k_w].iter().all(|k| (1..=5).contains(k)), "{c:?}");
        }
    }
}
