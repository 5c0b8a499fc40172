//! Sub-boxes of a tensor along (d, h, w): cropping and pasting, for chunked and tiled decoding.

use super::{Element, Shape, Tensor};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::ops::Range;

/// A box of frames, rows and columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub d: Range<usize>,
    pub h: Range<usize>,
    pub w: Range<usize>,
}

impl Region {
    /// The whole (d, h, w) extent of `s`.
    pub fn all(s: Shape) -> Self {
        Region { d: 0..s.d, h: 0..s.h, w: 0..s.w }
    }

    fn fits(&self, s: Shape) -> bool {
        let ok = |r: &Range<usize>, n: usize| r.start <= r.end && r.end <= n;
        ok(&self.d, s.d) && ok(&self.h, s.h) && ok(&self.w, s.w)
    }
}

impl<T: Element> Tensor<T> {
    /// A copy of `r` of every (sample, channel). self: (n, c, d, h, w) -> (n, c, |r.d|, |r.h|, |r.w|)
    pub fn crop(&self, r: &Region) -> Result<Tensor<T>> {
        let s = self.shape();
        if !r.fits(s) {
            return Err(Error::ShapeMismatch {
                op: "crop",
                expected: format!("a box inside {s}"),
                got: format!("{r:?}"),
            });
        }
        let out_shape = Shape::new(s.n, s.c, r.d.len(), r.h.len(), r.w.len());
        let mut out = Tensor::zeros(out_shape)?;
        let cols = r.w.len();
        if out_shape.numel()? == 0 {
            return Ok(out);
        }
        let mut rows = out.data_mut().chunks_exact_mut(cols);
        for nc in 0..s.n * s.c {
            for t in r.d.clone() {
                for y in r.h.clone() {
                    let off = ((nc * s.d + t) * s.h + y) * s.w;
                    rows.next()
                        .expect("row count")
                        .copy_from_slice(&self.data()[off + r.w.start..off + r.w.end]);
                }
            }
        }
        Ok(out)
    }

    /// Copies `src` into self at frame, row, column offset `at`.
    /// self: (n, c, d, h, w); src: (n, c, d', h', w') with the box inside self.
    pub fn paste(&mut self, src: &Tensor<T>, at: (usize, usize, usize)) -> Result<()> {
        let (s, ss) = (self.shape(), src.shape());
        let r = Region { d: at.0..at.0 + ss.d, h: at.1..at.1 + ss.h, w: at.2..at.2 + ss.w };
        if (s.n, s.c) != (ss.n, ss.c) || !r.fits(s) {
            return Err(Error::ShapeMismatch {
                op: "paste",
                expected: format!("a tensor fitting into {s} at {at:?}"),
                got: ss.to_string(),
            });
        }
        if ss.numel()? == 0 {
            return Ok(());
        }
        // One task per (sample, channel) plane: the copy of a large paste (frames into a fresh
        // tensor) is dominated by first-touch page faults, which then run on every thread
        // instead of one.
        let (plane, src_plane) = (s.d * s.h * s.w, ss.d * ss.h * ss.w);
        self.data_mut().par_chunks_mut(plane).zip(src.data().par_chunks(src_plane)).for_each(
            |(dst, from)| {
                for (i, row) in from.chunks_exact(ss.w).enumerate() {
                    let off = ((at.0 + i / ss.h) * s.h + at.1 + i % ss.h) * s.w + at.2;
                    dst[off..off + ss.w].copy_from_slice(row);
                }
            },
        );
        Ok(())
    }

    /// Copies frame `from` of every (sample, channel) over frame `to`. self: (n, c, d, h, w)
    pub fn copy_frame(&mut self, from: usize, to: usize) -> Result<()> {
        let s = self.shape();
        if from >= s.d || to >= s.d {
            return Err(Error::ShapeMismatch {
                op: "copy_frame",
                expected: format!("frames {from} and {to} inside {s}"),
                got: s.to_string(),
            });
        }
        let (plane, frame) = (s.d * s.h * s.w, s.h * s.w);
        if plane == 0 || from == to {
            return Ok(());
        }
        self.data_mut()
            .par_chunks_mut(plane)
            .for_each(|p| p.copy_within(from * frame..(from + 1) * frame, to * frame));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_then_paste_round_trips() {
        let s = Shape::new(2, 3, 4, 5, 6);
        let data: Vec<f32> = (0..s.numel().unwrap()).map(|i| i as f32).collect();
        let x = Tensor::from_vec(s, data).unwrap();
        let r = Region { d: 1..3, h: 2..5, w: 1..4 };
        let c = x.crop(&r).unwrap();
        assert_eq!(c.shape(), Shape::new(2, 3, 2, 3, 3));
        // Element (1, 2, 0, 1, 2) of the crop is (1, 2, 1, 3, 3) of x.
        let idx = |s: Shape, n: usize, ch: usize, t: usize, y: usize, xx: usize| {
            (((n * s.c + ch) * s.d + t) * s.h + y) * s.w + xx
        };
        assert_eq!(c.data()[idx(c.shape(), 1, 2, 0, 1, 2)], x.data()[idx(s, 1, 2, 1, 3, 3)]);
        let mut y = Tensor::zeros(s).unwrap();
        y.paste(&c, (1, 2, 1)).unwrap();
        assert_eq!(y.crop(&r).unwrap(), c);
        assert!(y.paste(&c, (3, 2, 1)).is_err());
        assert!(x.crop(&Region { d: 0..5, ..r }).is_err());
        let mut z = x.clone();
        z.copy_frame(1, 3).unwrap();
        let f = |t: usize| Region { d: t..t + 1, ..Region::all(s) };
        assert_eq!(z.crop(&f(3)).unwrap(), x.crop(&f(1)).unwrap());
        assert_eq!(
            z.crop(&Region { d: 0..3, ..Region::all(s) }).unwrap(),
            x.crop(&Region { d: 0..3, ..Region::all(s) }).unwrap()
        );
        assert!(z.copy_frame(1, 4).is_err());
    }
}
