//! `Upsample3D` (movq_enc_3d.py @ 7a1af715, spec section 6): nearest 2x in h and w, and in time
//! for every frame but the first when `compress_time`; then an optional 3x3 Conv2d per frame.

use super::config::FrameRule;
use super::conv::Conv2d;
use super::plan::UpsamplePlan;
use crate::error::Result;
use crate::io::VarPath;
use crate::kernels::Float;
use crate::ops::resample::{IndexMaps, resize};
use crate::tensor::{Shape, Tensor};

pub struct Upsample3d<T> {
    conv: Option<Conv2d<T>>, // 3x3, padding 1; present iff with_conv
    compress_time: bool,
    rule: FrameRule, // when the first frame is kept single
}

impl<T: Float> Upsample3d<T> {
    /// `Upsample3D(c, with_conv, compress_time)` as `up` plans it.
    pub fn load(vp: &VarPath, c: usize, up: UpsamplePlan, rule: FrameRule) -> Result<Self> {
        let conv = if up.with_conv { Some(Conv2d::load(&vp.pp("conv"), c, c, 3)?) } else { None };
        Ok(Upsample3d { conv, compress_time: up.time, rule })
    }

    /// x: (n, c, d, h, w) -> (n, c, d', 2h, 2w) with, if compress_time and d > 1, d' = 2d - 1
    /// (first-frame split) or 2d (diffusers rule, even d); else d' = d.
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let s = x.shape();
        let maps = IndexMaps::upsample(s.d, s.h, s.w, self.compress_time, self.rule);
        let Some(conv) = &self.conv else { return resize(x, &maps) };
        // The conv works per frame: convolve each source frame once, right after resizing it
        // (so only one resized frame is alive, not the whole 4x larger tensor), straight into
        // its place in the output, and copy the result to time-duplicated frames (exact).
        // Frame maps are non-decreasing.
        let (d, h, w) = maps.dims();
        let mut out = Tensor::zeros(Shape::new(s.n, conv.c_out(), d, h, w))?;
        let transformed = std::sync::OnceLock::new();
        for (j, &src) in maps.t.iter().enumerate() {
            if j > 0 && maps.t[j - 1] == src {
                out.copy_frame(j - 1, j)?;
                continue;
            }
            let frame = IndexMaps { t: vec![src], h: maps.h.clone(), w: maps.w.clone() };
            conv.forward_into(&resize(x, &frame)?, &transformed, &mut out, j, true)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Loader;
    use crate::tensor::random_normal;

    /// Frame by frame is the whole-tensor composition upstream runs (resize everything, conv,
    /// repeat frames), bit for bit: the conv works on each frame alone either way.
    #[test]
    fn frame_by_frame_equals_resize_then_conv() {
        let loader = Loader::random(5);
        for (time, rule, d) in
            [(true, FrameRule::Movq, 3), (true, FrameRule::Diffusers, 4), (false, FrameRule::Movq, 2)]
        {
            let up = Upsample3d::<f32>::load(
                &loader.root().pp("u"),
                6,
                UpsamplePlan { with_conv: true, time },
                rule,
            )
            .unwrap();
            let conv = Conv2d::<f32>::load(&loader.root().pp("u").pp("conv"), 6, 6, 3).unwrap();
            let s = Shape::new(2, 6, d, 5, 7);
            let x = Tensor::from_vec(s, random_normal(&s.dims(), 9).unwrap()).unwrap();
            let maps = IndexMaps::upsample(s.d, s.h, s.w, time, rule);
            let spatial = IndexMaps { t: (0..s.d).collect(), h: maps.h.clone(), w: maps.w.clone() };
            let y = conv.forward(&resize(&x, &spatial).unwrap()).unwrap();
            let time_maps = IndexMaps {
                t: maps.t.clone(),
                h: (0..maps.h.len()).collect(),
                w: (0..maps.w.len()).collect(),
            };
            let expected = resize(&y, &time_maps).unwrap();
            assert_eq!(up.forward(&x).unwrap(), expected, "time {time}, d {d}");
        }
    }
}
