//! `SpatialNorm3D` (CogVideo sat/sgm/modules/autoencoding/vqvae/movq_dec_3d.py @ 7a1af715):
//! GroupNorm(f) * conv_y(zq) + conv_b(zq), zq nearest-resized to f (spec section 3).

use super::config::{FrameRule, PadMode};
use super::conv::{CausalConv3d, ConvInput};
use super::plan::ModuleOptions;
use crate::error::{Error, Result};
use crate::io::{Param, VarPath};
use crate::kernels::{Act, Float};
use crate::ops::norm::{GroupNormParams, Modulation, NormPlan};
use crate::ops::resample::{IndexMaps, resize};
use crate::tensor::Tensor;

/// `nn.GroupNorm(groups, c, eps, affine=True)` (32 groups, eps 1e-6 in these decoders).
pub struct GroupNorm<T> {
    weight: Param<T>, // (c,)
    bias: Param<T>,   // (c,)
}

impl<T: Float> GroupNorm<T> {
    pub fn load(vp: &VarPath, c: usize, groups: usize) -> Result<Self> {
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(Error::GroupCount { place: vp.path().to_string(), channels: c, groups });
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
    norm: GroupNormParams,
    rule: FrameRule, // when zq's first frame is resized apart
}

impl<T: Float> SpatialNorm3d<T> {
    /// `Normalize3D(f_channels, zq_ch, add_conv)` with the decoder's norm options.
    pub fn load(vp: &VarPath, f_channels: usize, m: &ModuleOptions) -> Result<Self> {
        let zq = m.zq_ch;
        let conv = if m.add_conv {
            Some(CausalConv3d::load(&vp.pp("conv"), zq, zq, 3, PadMode::Constant)?)
        } else {
            None
        };
        Ok(SpatialNorm3d {
            norm_layer: GroupNorm::load(&vp.pp("norm_layer"), f_channels, m.norm_groups)?,
            conv,
            conv_y: CausalConv3d::load(&vp.pp("conv_y"), zq, f_channels, 1, PadMode::Constant)?,
            conv_b: CausalConv3d::load(&vp.pp("conv_b"), zq, f_channels, 1, PadMode::Constant)?,
            norm: GroupNormParams { groups: m.norm_groups, eps: m.norm_eps },
            rule: m.rule,
        })
    }

    /// The normalisation of f conditioned on zq (statistics and modulation), followed by `act`;
    /// apply it in place or fused into the next convolution.
    /// f: (n, c_f, d, h, w); zq: (n, c_zq, d_z, h_z, w_z)
    pub fn plan(&self, f: &Tensor<T>, zq: &Tensor<T>, act: Act) -> Result<NormPlan<T>> {
        let (fs, zs) = (f.shape(), zq.shape());
        if fs.n != zs.n {
            return Err(Error::ShapeMismatch {
                op: "SpatialNorm3D zq",
                expected: format!("batch {}", fs.n),
                got: zs.to_string(),
            });
        }
        let maps = IndexMaps::spatial_norm((fs.d, fs.h, fs.w), (zs.d, zs.h, zs.w), self.rule)?;
        let plain = |conv: &CausalConv3d<T>, x: &Tensor<T>| conv.forward(ConvInput::plain(x), None);
        let modulation = match &self.conv {
            Some(conv) => {
                let zr = plain(conv, &resize(zq, &maps)?)?;
                Modulation::Full { scale: plain(&self.conv_y, &zr)?, shift: plain(&self.conv_b, &zr)? }
            }
            // 1x1x1 convs commute with nearest resizing: evaluate at zq's resolution.
            None => {
                Modulation::Gather { scale: plain(&self.conv_y, zq)?, shift: plain(&self.conv_b, zq)?, maps }
            }
        };
        NormPlan::new(f, (&self.norm_layer.weight, &self.norm_layer.bias), self.norm, modulation, act)
    }

    /// norm(f, zq), in place. f: (n, c_f, d, h, w); zq: (n, c_zq, d_z, h_z, w_z)
    pub fn forward(&self, mut f: Tensor<T>, zq: &Tensor<T>) -> Result<Tensor<T>> {
        self.plan(&f, zq, Act::Identity)?.apply_inplace(&mut f)?;
        Ok(f)
    }
}
