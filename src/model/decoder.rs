//! `MOVQDecoder3D` and `NewDecoder3D` (CogVideo sat/sgm/modules/autoencoding/vqvae/
//! movq_dec_3d.py @ 7a1af715, spec section 7): conv_in, two mid resnet blocks, the up levels
//! from the lowest resolution (`up.{L-1}`) to the highest (`up.0`), norm_out, SiLU, conv_out.
//! The raw input z is the SpatialNorm conditioning zq of every norm.

use super::attention::AttnBlock2d;
use super::config::DecoderConfig;
use super::conv::CausalConv3d;
use super::resnet::ResnetBlock3d;
use super::spatial_norm::SpatialNorm3d;
use super::upsample::Upsample3d;
use crate::error::Result;
use crate::io::{Loader, VarPath, WeightFile};
use crate::kernels::Float;
use crate::tensor::Tensor;
use std::path::Path;

/// `mid`: two resnet blocks at the lowest resolution (no mid attention in the 3D decoder).
pub struct Mid<T> {
    block_1: ResnetBlock3d<T>,
    block_2: ResnetBlock3d<T>,
}

/// One entry of `up`: `num_res_blocks + 1` resnet blocks, as many attention blocks or none,
/// and an upsampler except at level 0.
pub struct UpLevel<T> {
    block: Vec<ResnetBlock3d<T>>,
    attn: Vec<AttnBlock2d<T>>,
    upsample: Option<Upsample3d<T>>,
}

/// A loaded decoder, computing in `T` (f32, or f64 for the reference mode).
pub struct Decoder<T> {
    config: DecoderConfig,
    post_quant_conv: Option<CausalConv3d<T>>, // NewDecoder3D with post_quant_conv only
    conv_in: CausalConv3d<T>,
    mid: Mid<T>,
    up: Vec<UpLevel<T>>, // index = level; up[L-1] runs first
    norm_out: SpatialNorm3d<T>,
    conv_out: CausalConv3d<T>,
}

impl<T: Float> Decoder<T> {
    /// Builds the module tree of `config` with weights from `vp` (names as upstream).
    pub fn load(vp: &VarPath, config: &DecoderConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let (zq, pm, l) = (c.zq_ch(), c.pad_mode, c.levels());
        let mut block_in = c.ch * c.ch_mult[l - 1];
        let post_quant_conv = if c.uses_post_quant_conv() {
            Some(CausalConv3d::load(&vp.pp("post_quant_conv"), zq, c.z_channels, 3, pm)?)
        } else {
            None
        };
        let conv_in = CausalConv3d::load(&vp.pp("conv_in"), c.z_channels, block_in, 3, pm)?;
        let mid = Mid {
            block_1: ResnetBlock3d::load(
                &vp.pp("mid").pp("block_1"),
                block_in,
                block_in,
                zq,
                c.add_conv,
                pm,
            )?,
            block_2: ResnetBlock3d::load(
                &vp.pp("mid").pp("block_2"),
                block_in,
                block_in,
                zq,
                c.add_conv,
                pm,
            )?,
        };
        let mut up: Vec<Option<UpLevel<T>>> = (0..l).map(|_| None).collect();
        for i_level in (0..l).rev() {
            let lv = vp.pp("up").pp(i_level);
            let block_out = c.ch * c.ch_mult[i_level];
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..=c.num_res_blocks {
                block.push(ResnetBlock3d::load(
                    &lv.pp("block").pp(j),
                    block_in,
                    block_out,
                    zq,
                    c.add_conv,
                    pm,
                )?);
                block_in = block_out;
                if c.has_attention(i_level) {
                    attn.push(AttnBlock2d::load(&lv.pp("attn").pp(j), block_in, zq, c.add_conv)?);
                }
            }
            let upsample = if i_level != 0 {
                Some(Upsample3d::load(
                    &lv.pp("upsample"),
                    block_in,
                    c.resamp_with_conv,
                    c.compress_time(i_level),
                )?)
            } else {
                None
            };
            up[i_level] = Some(UpLevel { block, attn, upsample });
        }
        let up = up.into_iter().map(|u| u.expect("every level built")).collect();
        let c0 = c.ch * c.ch_mult[0];
        Ok(Decoder {
            config: config.clone(),
            post_quant_conv,
            conv_in,
            mid,
            up,
            norm_out: SpatialNorm3d::load(&vp.pp("norm_out"), c0, zq, c.add_conv)?,
            conv_out: CausalConv3d::load(&vp.pp("conv_out"), c0, c.out_ch, 3, pm)?,
        })
    }

    /// Loads a decoder from a safetensors file, strictly: every tensor under `prefix` must be
    /// used. `prefix` is prepended to every name (e.g. `"decoder."`, or `""`).
    pub fn from_file(path: &Path, config: &DecoderConfig, prefix: &str) -> Result<Self> {
        let file = std::sync::Arc::new(WeightFile::open(path)?);
        let loader = Loader::shared(file, prefix);
        let dec = Self::load(&loader.root(), config)?;
        loader.finish()?;
        Ok(dec)
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes a latent video.
    /// z: (b, zq_ch, t, h, w) -> (b, out_ch, t', h * 2^(L-1), w * 2^(L-1)) with t' = 1 for t = 1,
    /// else (t - 1) * 2^min(tcl, L-1) + 1 (or the pre-end features with `give_pre_end`).
    pub fn forward(&self, z: &Tensor<T>) -> Result<Tensor<T>> {
        let out_shape = self.config.output_shape(z.shape())?;
        let zq = z;
        let mut h = match &self.post_quant_conv {
            Some(pqc) => self.conv_in.forward(&pqc.forward(z)?)?,
            None => self.conv_in.forward(z)?,
        };
        h = self.mid.block_1.forward(h, zq)?;
        h = self.mid.block_2.forward(h, zq)?;
        for level in self.up.iter().rev() {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward(h, zq)?;
                if let Some(attn) = level.attn.get(j) {
                    h = attn.forward(h, zq)?;
                }
            }
            if let Some(up) = &level.upsample {
                h = up.forward(&h)?;
            }
        }
        if !self.config.give_pre_end {
            let plan = self.norm_out.plan(&h, zq, true)?;
            h = self.conv_out.forward_fused(&h, Some(&plan), None)?;
        }
        debug_assert_eq!(h.shape(), out_shape);
        Ok(h)
    }
}
