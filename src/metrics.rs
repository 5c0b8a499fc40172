//! Error figures of one tensor against a reference, in f64: what `movq verify`, `movq compare`
//! and the demo report.

/// How far `a` is from the reference `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distance {
    /// max |a - b|; NaN if any difference is NaN (a NaN counts as the worst error).
    pub max_abs: f64,
    /// Flat index of the largest difference (the first NaN, if any).
    pub worst: usize,
    /// ||a - b|| / ||b||: infinite when b is all zeros and a is not (0 when both are), so a
    /// relative bound never passes an output against an all-zero reference.
    pub rel_l2: f64,
    /// mean (a - b)^2.
    pub mse: f64,
}

/// The distance of `a` from the reference `b` (equal lengths).
pub fn distance(a: &[f64], b: &[f64]) -> Distance {
    debug_assert_eq!(a.len(), b.len());
    let (mut max_abs, mut worst, mut d2, mut r2) = (0.0f64, 0usize, 0.0f64, 0.0f64);
    for (i, (x, r)) in a.iter().zip(b).enumerate() {
        let d = x - r;
        if d.abs() > max_abs || (d.is_nan() && !max_abs.is_nan()) {
            max_abs = d.abs();
            worst = i;
        }
        d2 += d * d;
        r2 += r * r;
    }
    let rel_l2 = match (r2 > 0.0, d2 == 0.0) {
        (true, _) => d2.sqrt() / r2.sqrt(),
        (false, true) => 0.0,
        (false, false) if d2.is_nan() => f64::NAN,
        (false, false) => f64::INFINITY,
    };
    Distance { max_abs, worst, rel_l2, mse: d2 / a.len().max(1) as f64 }
}

/// Peak signal-to-noise ratio in dB of a mean squared error over a data range.
pub fn psnr(mse: f64, range: f64) -> f64 {
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (range * range / mse).log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_reports_the_worst_index_and_nan() {
        let d = distance(&[1.0, 2.5, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!((d.max_abs, d.worst), (0.5, 1));
        assert!((d.rel_l2 - 0.5 / 14f64.sqrt()).abs() < 1e-15);
        let n = distance(&[1.0, f64::NAN, 5.0], &[1.0, 2.0, 3.0]);
        assert!(n.max_abs.is_nan() && n.rel_l2.is_nan());
        assert_eq!(n.worst, 1);
        assert_eq!(psnr(0.0, 1.0), f64::INFINITY);
    }

    /// Against an all-zero reference any difference is infinitely far (relative), none is 0.
    #[test]
    fn rel_l2_against_zeros_is_infinite_unless_equal() {
        assert_eq!(distance(&[0.5, 0.5], &[0.0, 0.0]).rel_l2, f64::INFINITY);
        assert_eq!(distance(&[0.0, 0.0], &[0.0, 0.0]).rel_l2, 0.0);
    }
}
