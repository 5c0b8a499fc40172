//! `Upsample3D` (movq_enc_3d.py @ 7a1af715, spec section 6): nearest 2x in h and w, and in time
//! for every frame but the first when `compress_time`; then an optional 3x3 Conv2d per frame.

use super::config::FrameRule;
use super::conv::Conv2d;
use super::plan::UpsamplePlan;
use crate::error::Result;
use crate::io::VarPath;
use crate::kernels::Float;
use crate::ops::resample::{IndexMaps, resize};
use crate::tensor::Tensor;

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
        // The conv works per frame, so time-duplicated frames have identical outputs:
        // convolve every source frame once, then repeat frames (exact).
        let spatial = IndexMaps { t: (0..s.d).collect(), h: maps.h.clone(), w: maps.w.clone() };
        let y = conv.forward(&resize(x, &spatial)?)?;
        if maps.t == spatial.t {
            return Ok(y);
        }
        let time = IndexMaps { t: maps.t, h: (0..maps.h.len()).collect(), w: (0..maps.w.len()).collect() };
        resize(&y, &time)
    }
}
