//! Nearest resizing on tensors: the SpatialNorm3D zq resize and the Upsample3D doubling.

use crate::error::{Error, Result};
use crate::kernels::resample::{gather, nearest_map};
use crate::tensor::{Shape, Tensor};

/// When the first frame of a clip is handled apart (SpatialNorm's zq resize, Upsample3D's time
/// doubling); spec 12, item 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRule {
    /// MOVQDecoder3D: whenever the clip has more than one frame (T -> 2T - 1).
    Movq,
    /// diffusers: only for an odd number of frames above one; even T doubles whole (T -> 2T).
    Diffusers,
}

impl FrameRule {
    /// True if a clip of `t` frames gets the first-frame split.
    pub fn splits_first(self, t: usize) -> bool {
        match self {
            FrameRule::Movq => t > 1,
            FrameRule::Diffusers => t > 1 && t % 2 == 1,
        }
    }

    /// Frames after a time-doubling Upsample3D of `t` frames: 2t - 1 with the first-frame
    /// split, 2t without, 1 for a single frame; `None` on overflow.
    pub fn upsampled_frames(self, t: usize) -> Option<usize> {
        match t {
            0 | 1 => Some(t),
            t if self.splits_first(t) => t.checked_mul(2)?.checked_sub(1),
            t => t.checked_mul(2),
        }
    }
}

/// Per-axis source-index maps of a nearest resize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexMaps {
    pub t: Vec<usize>,
    pub h: Vec<usize>,
    pub w: Vec<usize>,
}

impl IndexMaps {
    /// The maps of SpatialNorm3D's resize of zq (d_z, h_z, w_z) to f's (d, h, w). With the
    /// first-frame split (MOVQ: zq has more than one frame; diffusers: f has an odd number of
    /// frames above one), frame 0 maps to frame 0 and frames 1.. are resized onto 1..;
    /// otherwise the whole tensor is resized (spec sections 3 and 10.2).
    pub fn spatial_norm(
        f: (usize, usize, usize),
        zq: (usize, usize, usize),
        rule: FrameRule,
    ) -> Result<Self> {
        let (d, h, w) = f;
        let (dz, hz, wz) = zq;
        if dz == 0 || hz == 0 || wz == 0 {
            return Err(Error::ShapeMismatch {
                op: "SpatialNorm3D",
                expected: "a non-empty zq".into(),
                got: format!("zq (d, h, w) = {zq:?}"),
            });
        }
        let split = match rule {
            FrameRule::Movq => dz > 1,
            FrameRule::Diffusers => rule.splits_first(d),
        };
        let t = if split {
            if d < 2 || dz < 2 {
                return Err(Error::ShapeMismatch {
                    op: "SpatialNorm3D",
                    expected: "f and zq with at least 2 frames each for the first-frame split \
                               (upstream resizes to or from 0 frames)"
                        .into(),
                    got: format!("f with {d} frame(s), zq with {dz}"),
                });
            }
            std::iter::once(0).chain(nearest_map(dz - 1, d - 1).into_iter().map(|s| s + 1)).collect()
        } else {
            nearest_map(dz, d)
        };
        Ok(IndexMaps { t, h: nearest_map(hz, h), w: nearest_map(wz, w) })
    }

    /// The maps of Upsample3D: 2x in h and w; with `compress_time` and more than one frame,
    /// either frame 0 stays single and every later frame is doubled (d -> 2d - 1, the
    /// first-frame split of `rule`) or every frame is doubled (d -> 2d).
    pub fn upsample(d: usize, h: usize, w: usize, compress_time: bool, rule: FrameRule) -> Self {
        let t = if compress_time && rule.splits_first(d) {
            std::iter::once(0).chain((0..2 * (d - 1)).map(|i| 1 + (i >> 1))).collect()
        } else if compress_time && d > 1 {
            (0..2 * d).map(|i| i >> 1).collect()
        } else {
            (0..d).collect()
        };
        IndexMaps { t, h: (0..2 * h).map(|i| i >> 1).collect(), w: (0..2 * w).map(|i| i >> 1).collect() }
    }

    /// The output (d, h, w).
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.t.len(), self.h.len(), self.w.len())
    }
}

/// out[n, c, t, y, x] = x[n, c, maps.t[t], maps.h[y], maps.w[x]].
/// x: (n, c, d, h, w) -> (n, c, maps.t.len(), maps.h.len(), maps.w.len())
pub fn resize<T: crate::kernels::Float>(x: &Tensor<T>, maps: &IndexMaps) -> Result<Tensor<T>> {
    let s = x.shape();
    let (d, h, w) = maps.dims();
    let mut out = Tensor::zeros(Shape::new(s.n, s.c, d, h, w))?;
    gather(out.data_mut(), x.data(), (s.d, s.h, s.w), &maps.t, &maps.h, &maps.w);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spatial_norm_maps_first_frame_rule() {
        // f 5 frames, zq 3 frames: frame 0 alone, rest 2 latents onto 4 frames.
        let m = IndexMaps::spatial_norm((5, 8, 8), (3, 4, 4), FrameRule::Movq).unwrap();
        assert_eq!(m.t, vec![0, 1, 1, 2, 2]);
        assert_eq!(m.h, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        // Non-integer time ratio: 6 frames from 3 (rest 2 -> 5).
        assert_eq!(
            IndexMaps::spatial_norm((6, 8, 12), (3, 4, 6), FrameRule::Movq).unwrap().t,
            vec![0, 1, 1, 1, 2, 2]
        );
        // Single zq frame: everything reads frame 0.
        assert_eq!(IndexMaps::spatial_norm((3, 8, 8), (1, 2, 2), FrameRule::Movq).unwrap().t, vec![0, 0, 0]);
        assert!(IndexMaps::spatial_norm((1, 8, 8), (3, 4, 4), FrameRule::Movq).is_err());
    }

    #[test]
    fn diffusers_frame_rule_splits_only_odd_clips() {
        let d = FrameRule::Diffusers;
        // Even f: whole resize, 2 chunk latents onto 4 frames.
        assert_eq!(IndexMaps::spatial_norm((4, 2, 2), (2, 1, 1), d).unwrap().t, vec![0, 0, 1, 1]);
        assert_eq!(IndexMaps::spatial_norm((2, 2, 2), (2, 1, 1), d).unwrap().t, vec![0, 1]);
        // Odd f: first-frame split, as MOVQ.
        assert_eq!(IndexMaps::spatial_norm((5, 2, 2), (3, 1, 1), d).unwrap().t, vec![0, 1, 1, 2, 2]);
        // Odd f but one zq frame: upstream resizes an empty tensor.
        assert!(IndexMaps::spatial_norm((3, 2, 2), (1, 1, 1), d).is_err());
        assert_eq!(IndexMaps::upsample(2, 1, 1, true, d).t, vec![0, 0, 1, 1]);
        assert_eq!(IndexMaps::upsample(3, 1, 1, true, d).t, vec![0, 1, 1, 2, 2]);
        assert_eq!(IndexMaps::upsample(1, 1, 1, true, d).t, vec![0]);
        assert_eq!(IndexMaps::upsample(2, 1, 1, false, d).t, vec![0, 1]);
    }

    #[test]
    fn upsample_maps_compress_time() {
        assert_eq!(IndexMaps::upsample(3, 1, 1, true, FrameRule::Movq).t, vec![0, 1, 1, 2, 2]);
        assert_eq!(IndexMaps::upsample(1, 1, 1, true, FrameRule::Movq).t, vec![0]);
        assert_eq!(IndexMaps::upsample(3, 1, 1, false, FrameRule::Movq).t, vec![0, 1, 2]);
        assert_eq!(IndexMaps::upsample(1, 2, 3, false, FrameRule::Movq).w, vec![0, 0, 1, 1, 2, 2]);
    }
}
