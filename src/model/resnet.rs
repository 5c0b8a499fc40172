//! `ResnetBlock3D` (movq_dec_3d.py @ 7a1af715, spec section 4): two SpatialNorm + SiLU +
//! CausalConv3d stages and a residual, through a plain 1x1x1 `nin_shortcut` when channels change.

use super::config::{FrameRule, PadMode};
use super::conv::{CausalConv3d, Conv3d, ConvCache};
use super::spatial_norm::SpatialNorm3d;
use crate::error::Result;
use crate::io::VarPath;
use crate::kernels::Float;
use crate::tensor::Tensor;

pub struct ResnetBlock3d<T> {
    norm1: SpatialNorm3d<T>,
    conv1: CausalConv3d<T>,
    norm2: SpatialNorm3d<T>,
    conv2: CausalConv3d<T>,
    nin_shortcut: Option<Conv3d<T>>, // 1x1x1, present iff c_in != c_out
}

impl<T: Float> ResnetBlock3d<T> {
    pub fn load(
        vp: &VarPath,
        c_in: usize,
        c_out: usize,
        zq_ch: usize,
        add_conv: bool,
        pad_mode: PadMode,
        rule: FrameRule,
    ) -> Result<Self> {
        Ok(ResnetBlock3d {
            norm1: SpatialNorm3d::load(&vp.pp("norm1"), c_in, zq_ch, add_conv, rule)?,
            conv1: CausalConv3d::load(&vp.pp("conv1"), c_in, c_out, 3, pad_mode)?,
            norm2: SpatialNorm3d::load(&vp.pp("norm2"), c_out, zq_ch, add_conv, rule)?,
            conv2: CausalConv3d::load(&vp.pp("conv2"), c_out, c_out, 3, pad_mode)?,
            nin_shortcut: if c_in != c_out {
                Some(Conv3d::load(&vp.pp("nin_shortcut"), c_in, c_out, 1)?)
            } else {
                None
            },
        })
    }

    /// x: (n, c_in, d, h, w); zq: (n, c_zq, d_z, h_z, w_z) -> (n, c_out, d, h, w)
    ///
    /// Each norm + SiLU is fused into the convolution that follows it, and conv2 accumulates
    /// into the shortcut, so at most x, h and the shortcut are alive at once.
    pub fn forward(&self, x: Tensor<T>, zq: &Tensor<T>) -> Result<Tensor<T>> {
        self.forward_chunk(x, zq, None)
    }

    /// [`Self::forward`] on one chunk of a clip, with the causal convs' caches carried in
    /// `cache` (None: a standalone call).
    pub fn forward_chunk(
        &self,
        x: Tensor<T>,
        zq: &Tensor<T>,
        mut cache: Option<&mut ResnetCache<T>>,
    ) -> Result<Tensor<T>> {
        let plan1 = self.norm1.plan(&x, zq, true)?;
        let h = match cache.as_deref_mut() {
            Some(c) => self.conv1.forward_cached(&x, Some(&plan1), None, &mut c.conv1)?,
            None => self.conv1.forward_fused(&x, Some(&plan1), None)?,
        };
        drop(plan1);
        // Dropout (p = 0 / eval) is the identity.
        let plan2 = self.norm2.plan(&h, zq, true)?;
        let s = match &self.nin_shortcut {
            Some(conv) => conv.forward(&x)?,
            None => x,
        };
        match cache {
            Some(c) => self.conv2.forward_cached(&h, Some(&plan2), Some(s), &mut c.conv2),
            None => self.conv2.forward_fused(&h, Some(&plan2), Some(s)),
        }
    }
}

/// The conv caches of one resnet block (diffusers' `conv_cache["conv1"]`, `["conv2"]`).
pub struct ResnetCache<T> {
    pub conv1: ConvCache<T>,
    pub conv2: ConvCache<T>,
}

impl<T> Default for ResnetCache<T> {
    fn default() -> Self {
        ResnetCache { conv1: ConvCache::default(), conv2: ConvCache::default() }
    }
}
