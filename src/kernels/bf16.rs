//! bf16 products emulated in f32 (`--precision bf16-emulated`): the convolutions' gemm operands
//! (Winograd-transformed inputs and weights, im2col columns and weights) are rounded to bf16,
//! then multiplied and summed in f32. A bf16 x bf16 product has at most 16 significant bits,
//! so f32 holds it exactly, and this is the arithmetic of a bf16 dot-product unit with f32
//! accumulation (x86 `vdpbf16ps`, ARM `BFDOT`) up to the order of the sums and the units'
//! flushing of subnormals. Not a speed mode: the rounding is an extra pass over the operands.

use super::Float;
use rayon::prelude::*;

/// The name of the compute precision of a decode in `T` (`T::NAME`), `"bf16-emulated"` when
/// [`super::params::bf16_products`] is on, `"bf16"` with [`super::params::bf16_native`] too.
pub fn precision_name<T: Float>() -> &'static str {
    match (super::params::bf16_products(), super::params::bf16_native()) {
        (true, true) => "bf16",
        (true, false) => "bf16-emulated",
        (false, _) => T::NAME,
    }
}

/// `x` rounded to the nearest bf16 (8 significand bits, f32's exponent range; ties to even),
/// as an f32. NaN stays NaN (quiet), infinities stay; finite values past bf16's largest
/// round to infinity, as the conversion instructions do.
pub fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    if x.is_nan() {
        return f32::from_bits((b | 0x0040_0000) & 0xFFFF_0000);
    }
    f32::from_bits(b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000)
}

/// Rounds every element of `buf` to bf16 ([`round_bf16`]; f64 elements go through f32 first).
pub fn round_to_bf16<T: Float>(buf: &mut [T]) {
    buf.par_chunks_mut(1 << 16).for_each(|c| {
        for v in c {
            *v = T::from_f64(round_bf16(v.to_f64() as f32) as f64);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain definition: the f32 values with 8 significand bits nearest to x, ties to the
    /// one whose last kept bit is 0, found by exact f64 arithmetic.
    fn nearest_bf16(x: f32) -> f32 {
        let b = x.to_bits() & 0xFFFF_0000;
        let lo = f32::from_bits(b);
        let hi_bits = b + 0x1_0000;
        let hi = f32::from_bits(hi_bits);
        let (dl, dh) = ((x as f64 - lo as f64).abs(), (hi as f64 - x as f64).abs());
        if hi.is_nan() {
            return lo; // at the largest exponent, the "next" value is NaN's pattern: keep lo
        }
        if dl < dh || (dl == dh && (b >> 16) & 1 == 0) { lo } else { hi }
    }

    #[test]
    fn named_values() {
        assert_eq!(round_bf16(1.0), 1.0);
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
        // A NaN whose payload sits only in the dropped bits must not become infinity.
        assert!(round_bf16(f32::from_bits(0x7F80_0001)).is_nan());
        assert_eq!(round_bf16(3.140625), 3.140625); // exactly representable
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(2000)))]
        #[test]
        fn matches_the_nearest_bf16(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite() && x.abs() < 3.3e38);
            prop_assert_eq!(round_bf16(x).to_bits(), nearest_bf16(x).to_bits(), "x = {:e}", x);
        }

        #[test]
        fn slices_round_every_element(xs in proptest::collection::vec(-1e6f32..1e6, 0..300)) {
            let mut a = xs.clone();
            round_to_bf16(&mut a);
            let mut d: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
            round_to_bf16(&mut d);
            for ((x, a), d) in xs.iter().zip(&a).zip(&d) {
                prop_assert_eq!(*a, round_bf16(*x));
                prop_assert_eq!(*d, round_bf16(*x) as f64);
            }
        }
    }
}
