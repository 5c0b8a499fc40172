//! `AttnBlock2D` (movq_dec_3d.py @ 7a1af715, spec section 5): SpatialNorm, then single-head
//! attention over the h*w positions of each frame, logits scaled by c^-0.5 after QK^T.

use super::conv::Conv2d;
use super::plan::ModuleOptions;
use super::spatial_norm::SpatialNorm3d;
use crate::error::Result;
use crate::io::VarPath;
use crate::kernels::Float;
use crate::ops::add_inplace;
use crate::ops::attention::frame_attention;
use crate::tensor::Tensor;

pub struct AttnBlock2d<T> {
    norm: SpatialNorm3d<T>,
    q: Conv2d<T>,        // 1x1
    k: Conv2d<T>,        // 1x1
    v: Conv2d<T>,        // 1x1
    proj_out: Conv2d<T>, // 1x1
}

impl<T: Float> AttnBlock2d<T> {
    pub fn load(vp: &VarPath, c: usize, m: &ModuleOptions) -> Result<Self> {
        Ok(AttnBlock2d {
            norm: SpatialNorm3d::load(&vp.pp("norm"), c, m)?,
            q: Conv2d::load(&vp.pp("q"), c, c, 1)?,
            k: Conv2d::load(&vp.pp("k"), c, c, 1)?,
            v: Conv2d::load(&vp.pp("v"), c, c, 1)?,
            proj_out: Conv2d::load(&vp.pp("proj_out"), c, c, 1)?,
        })
    }

    /// x: (n, c, d, h, w); zq: (n, c_zq, d_z, h_z, w_z) -> (n, c, d, h, w)
    pub fn forward(&self, x: Tensor<T>, zq: &Tensor<T>) -> Result<Tensor<T>> {
        let h = self.norm.forward(x.clone(), zq)?;
        let (q, k, v) = (self.q.forward(&h)?, self.k.forward(&h)?, self.v.forward(&h)?);
        drop(h);
        let a = frame_attention(&q, &k, &v)?;
        drop((q, k, v));
        let mut out = x;
        add_inplace(&mut out, &self.proj_out.forward(&a)?)?;
        Ok(out)
    }
}
