//! `Shape`: the five dimensions of an NCDHW tensor. `d` is time (frames) throughout movq.

use crate::error::{Error, Result};
use std::fmt;

/// (n, c, d, h, w): batch, channels, frames, height, width; row-major, `w` fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub n: usize,
    pub c: usize,
    pub d: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub const fn new(n: usize, c: usize, d: usize, h: usize, w: usize) -> Self {
        Shape { n, c, d, h, w }
    }

    /// Builds a shape from a rank-5 dimension list.
    pub fn from_dims(dims: &[usize]) -> Result<Self> {
        match dims {
            &[n, c, d, h, w] => Ok(Shape { n, c, d, h, w }),
            _ => Err(Error::ShapeMismatch {
                op: "tensor",
                expected: "rank 5 (n, c, d, h, w)".into(),
                got: format!("{dims:?} (rank {})", dims.len()),
            }),
        }
    }

    pub fn dims(&self) -> [usize; 5] {
        [self.n, self.c, self.d, self.h, self.w]
    }

    /// Number of elements, or an error if it overflows `usize`.
    pub fn numel(&self) -> Result<usize> {
        self.dims().iter().try_fold(1usize, |acc, &x| acc.checked_mul(x)).ok_or_else(|| Error::TooLarge {
            what: format!("tensor {self}"),
            reason: "element count overflows".into(),
        })
    }

    /// The (n, c, d, h, w) index of the `i`-th element in row-major order (`i` < numel).
    pub fn unravel(&self, i: usize) -> [usize; 5] {
        super::unravel(i, &self.dims()).try_into().expect("five dims give five indices")
    }

    /// Elements of one frame of one channel: h * w. Valid once `numel` succeeded.
    pub fn frame_len(&self) -> usize {
        self.h * self.w
    }

    /// Elements of one channel of one sample: d * h * w. Valid once `numel` succeeded.
    pub fn plane_len(&self) -> usize {
        self.d * self.h * self.w
    }

    /// Elements of one sample: c * d * h * w. Valid once `numel` succeeded.
    pub fn sample_len(&self) -> usize {
        self.c * self.plane_len()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {}, {}, {}, {})", self.n, self.c, self.d, self.h, self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_numel_overflow_is_error() {
        assert!(Shape::new(usize::MAX, 2, 1, 1, 1).numel().is_err());
        assert_eq!(Shape::new(2, 3, 4, 5, 6).numel().unwrap(), 720);
    }

    #[test]
    fn shape_from_dims_rejects_rank_4() {
        assert!(Shape::from_dims(&[1, 2, 3, 4]).is_err());
        assert_eq!(Shape::from_dims(&[1, 2, 3, 4, 5]).unwrap().to_string(), "(1, 2, 3, 4, 5)");
    }
}
