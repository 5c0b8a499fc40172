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
    let mut p = Conv3dParams::plain(
        r(0, 1, c_max.max(1)),
        r(1, 1, c_max.max(1)),
        (r(2, 1, 3), r(3, 1, 3), r(4, 1, 3)),
    );
    if raw[5] % 2 == 1 {
        (p.k_h, p.k_w) = (3, 3);
    }
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
        }
    }
}
