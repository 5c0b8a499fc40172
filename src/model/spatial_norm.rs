//! `SpatialNorm3D` (CogVideo sat/sgm/modules/autoencoding/vqvae/movq_dec_3d.py @ 7a1af715):
//! GroupNorm(f) * conv_y(zq) + conv_b(zq), zq nearest-resized to f (spec section 3).

use super::config::{FrameRule, NORM_EPS, NORM_GROUPS, PadMode};
use super::conv::CausalConv3d;
use crate::error::{Error, Result};
use crate::io::{Param, VarPath};
use crate::kernels::Float;
use crate::ops::norm::{GroupNormParams, Modulation, NormPlan};
use crate::ops::resample::{IndexMaps, resize};
use crate::tensor::Tensor;

/// `nn.GroupNorm(32, c, eps=1e-6, affine=True)`.
pub struct GroupNorm<T> {
    weight: Param<T>, // (c,)
    bias: Param<T>,   // (c,)
}

impl<T: Float> GroupNorm<T> {
    pub fn load(vp: &VarPath, c: usize) -> Result<Self> {
        if c % NORM_GROUPS != 0 {
            return Err(Error::GroupCount { place: vp.path().to_string(), channels: c, groups: NORM_GROUPS });
        }
        Ok(GroupNorm { weight: vp.get("weight", &[c])?, bias: vp.get("bias", &[c])? })
    }
}

/// Normalize3D(f_channels, zq_ch, add_conv): SpatialNorm3D whose convs always use
/// pad_mode "constant" (upstream does not forward the decoder's pad_mode).
pub struct SpatialNorm3d<T> {
    norm_layer: GroupNorm<T>,
    conv: Option<CausalConv3d<T>>, // zq -> zq, 3x3x3, present iff add_conv
    conv_y: CausalConv3d<T>,       // zq -> f, 1x1x1
    conv_b: CausalConv3d<T>,       // zq -> f, 1x1x1
    rule: FrameRule,               // when zq's first frame is resized apart
}

impl<T: Float> SpatialNorm3d<T> {
    pub fn load(
        vp: &VarPath,
        f_channels: usize,
        zq_channels: usize,
        add_conv: bool,
        rule: FrameRule,
    ) -> Result<Self> {
        let conv = if add_conv {
            Some(CausalConv3d::load(&vp.pp("conv"), zq_channels, zq_channels, 3, PadMode::Constant)?)
        } else {
            None
        };
        Ok(SpatialNorm3d {
            norm_layer: GroupNorm::load(&vp.pp("norm_layer"), f_channels)?,
            conv,
            conv_y: CausalConv3d::load(&vp.pp("conv_y"), zq_channels, f_channels, 1, PadMode::Constant)?,
            conv_b: CausalConv3d::load(&vp.pp("conv_b"), zq_channels, f_channels, 1, PadMode::Constant)?,
            rule,
        })
    }

    /// The normalisation of f conditioned on zq (statistics and modulation), followed by SiLU
    /// if `silu`; apply it in place or fused into the next convolution.
    /// f: (n, c_f, d, h, w); zq: (n, c_zq, d_z, h_z, w_z)
    pub fn plan(&self, f: &Tensor<T>, zq: &Tensor<T>, silu: bool) -> Result<NormPlan<T>> {
        let (fs, zs) = (f.shape(), zq.shape());
        if fs.n != zs.n {
            return Err(Error::ShapeMismatch {
                op: "SpatialNorm3D zq",
                expected: format!("batch {}", fs.n),
                got: zs.to_string(),
            });
        }
        let maps = IndexMaps::spatial_norm((fs.d, fs.h, fs.w), (zs.d, zs.h, zs.w), self.rule)?;
        let p = GroupNormParams { groups: NORM_GROUPS, eps: NORM_EPS };
        let modulation = match &self.conv {
            Some(conv) => {
                let zr = conv.forward(&resize(zq, &maps)?)?;
                Modulation::Full { scale: self.conv_y.forward(&zr)?, shift: self.conv_b.forward(&zr)? }
            }
            // 1x1x1 convs commute with nearest resizing: evaluate at zq's resolution.
            None => {
                Modulation::Gather { scale: self.conv_y.forward(zq)?, shift: self.conv_b.forward(zq)?, maps }
            }
        };
        NormPlan::new(f, &self.norm_layer.weight, &self.norm_layer.bias, p, modulation, silu)
    }

    /// In place: f = norm(f, zq), followed by SiLU if `silu`.
    pub fn forward_inplace(&self, f: &mut Tensor<T>, zq: &Tensor<T>, silu: bool) -> Result<()> {
        self.plan(f, zq, silu)?.apply_inplace(f)
    }

    /// f: (n, c_f, d, h, w); zq: (n, c_zq, d_z, h_z, w_z) -> (n, c_f, d, h, w)
    pub fn forward(&self, f: &Tensor<T>, zq: &Tensor<T>) -> Result<Tensor<T>> {
        let mut out = f.clone();
        self.forward_inplace(&mut out, zq, false)?;
        Ok(out)
    }
}
