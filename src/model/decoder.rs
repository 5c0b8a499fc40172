//! `MOVQDecoder3D` and `NewDecoder3D` (CogVideo sat/sgm/modules/autoencoding/vqvae/
//! movq_dec_3d.py @ 7a1af715, spec section 7): conv_in, two mid resnet blocks, the up levels
//! from the lowest resolution (`up.{L-1}`) to the highest (`up.0`), norm_out, SiLU, conv_out.
//! The raw input z is the SpatialNorm conditioning zq of every norm.

use super::attention::AttnBlock2d;
use super::chunked::Stage;
use super::config::DecoderConfig;
use super::conv::{CausalConv3d, ConvCache};
use super::resnet::{ResnetBlock3d, ResnetCache};
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
        let (zq, pm, l, rule) = (c.zq_ch(), c.pad_mode, c.levels(), c.frame_rule());
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
                rule,
            )?,
            block_2: ResnetBlock3d::load(
                &vp.pp("mid").pp("block_2"),
                block_in,
                block_in,
                zq,
                c.add_conv,
                pm,
                rule,
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
                    rule,
                )?);
                block_in = block_out;
                if c.has_attention(i_level) {
                    attn.push(AttnBlock2d::load(&lv.pp("attn").pp(j), block_in, zq, c.add_conv, rule)?);
                }
            }
            let upsample = if i_level != 0 {
                Some(Upsample3d::load(
                    &lv.pp("upsample"),
                    block_in,
                    c.resamp_with_conv,
                    c.compress_time(i_level),
                    rule,
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
            norm_out: SpatialNorm3d::load(&vp.pp("norm_out"), c0, zq, c.add_conv, rule)?,
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

    /// Decodes a latent video in one call (upstream `decoder(z)`).
    /// z: (b, zq_ch, t, h, w) -> (b, out_ch, t', h * 2^(L-1), w * 2^(L-1)) with t' from
    /// [`DecoderConfig::output_frames`] (or the pre-end features with `give_pre_end`).
    pub fn forward(&self, z: &Tensor<T>) -> Result<Tensor<T>> {
        self.forward_chunk(z, None)
    }

    /// Decodes one chunk of latent frames of a clip: the chunk is its own zq, and the causal
    /// convs continue from `cache` (diffusers `decoder(z_chunk, conv_cache=...)`; spec 11.1).
    /// With `cache` None this is [`Self::forward`].
    pub fn forward_chunk(&self, z: &Tensor<T>, cache: Option<&mut DecoderCache<T>>) -> Result<Tensor<T>> {
        self.forward_observed(z, cache, &mut |_| {})
    }

    /// [`Self::forward_chunk`], calling `on_stage` as each stage finishes.
    pub(crate) fn forward_observed(
        &self,
        z: &Tensor<T>,
        mut cache: Option<&mut DecoderCache<T>>,
        on_stage: &mut dyn FnMut(Stage),
    ) -> Result<Tensor<T>> {
        let out_shape = self.config.output_shape(z.shape())?;
        if cache.is_some() {
            self.check_chunkable()?;
        }
        let zq = z;
        let conv = |m: &CausalConv3d<T>, x: &Tensor<T>, c: Option<&mut ConvCache<T>>| match c {
            Some(c) => m.forward_cached(x, None, None, c),
            None => m.forward(x),
        };
        let mut h = match &self.post_quant_conv {
            Some(pqc) => {
                let z = conv(pqc, z, cache.as_deref_mut().map(|c| &mut c.post_quant_conv))?;
                conv(&self.conv_in, &z, cache.as_deref_mut().map(|c| &mut c.conv_in))?
            }
            None => conv(&self.conv_in, z, cache.as_deref_mut().map(|c| &mut c.conv_in))?,
        };
        h = self.mid.block_1.forward_chunk(h, zq, cache.as_deref_mut().map(|c| &mut c.mid[0]))?;
        h = self.mid.block_2.forward_chunk(h, zq, cache.as_deref_mut().map(|c| &mut c.mid[1]))?;
        on_stage(Stage::Mid);
        for (i_level, level) in self.up.iter().enumerate().rev() {
            for (j, block) in level.block.iter().enumerate() {
                h = block.forward_chunk(h, zq, cache.as_deref_mut().map(|c| &mut c.up[i_level][j]))?;
                if let Some(attn) = level.attn.get(j) {
                    h = attn.forward(h, zq)?;
                }
            }
            if let Some(up) = &level.upsample {
                h = up.forward(&h)?;
            }
            on_stage(Stage::Level(i_level));
        }
        if !self.config.give_pre_end {
            let plan = self.norm_out.plan(&h, zq, true)?;
            h = match cache {
                Some(c) => self.conv_out.forward_cached(&h, Some(&plan), None, &mut c.conv_out)?,
                None => self.conv_out.forward_fused(&h, Some(&plan), None)?,
            };
        }
        on_stage(Stage::Out);
        debug_assert_eq!(h.shape(), out_shape);
        Ok(h)
    }

    /// Chunked decoding needs every time-mixing op to be a causal "first" conv: rejects
    /// add_conv (its SpatialNorm conv pads time with zeros on both sides) and other pad modes.
    fn check_chunkable(&self) -> Result<()> {
        let c = &self.config;
        if c.add_conv || c.pad_mode != super::config::PadMode::First {
            return Err(crate::error::Error::Unsupported(format!(
                "chunked decoding needs pad_mode \"first\" and add_conv = false (config has pad_mode {:?}, \
                 add_conv {})",
                c.pad_mode, c.add_conv
            )));
        }
        Ok(())
    }

    /// An empty cache for [`Self::forward_chunk`] (before a clip's first chunk).
    pub fn new_cache(&self) -> DecoderCache<T> {
        DecoderCache {
            post_quant_conv: ConvCache::default(),
            conv_in: ConvCache::default(),
            mid: [ResnetCache::default(), ResnetCache::default()],
            up: self.up.iter().map(|l| l.block.iter().map(|_| ResnetCache::default()).collect()).collect(),
            conv_out: ConvCache::default(),
        }
    }
}

/// Every causal conv cache of a decoder, carried from one chunk of a clip to the next; mirrors
/// the module tree (diffusers keeps the same state as a nested string-keyed dict).
pub struct DecoderCache<T> {
    pub post_quant_conv: ConvCache<T>,
    pub conv_in: ConvCache<T>,
    /// mid.block_1, mid.block_2
    pub mid: [ResnetCache<T>; 2],
    /// up[level][block]
    pub up: Vec<Vec<ResnetCache<T>>>,
    pub conv_out: ConvCache<T>,
}

impl<T: Float> DecoderCache<T> {
    /// Bytes held by all caches.
    pub fn bytes(&self) -> usize {
        let r = |c: &ResnetCache<T>| c.conv1.bytes() + c.conv2.bytes();
        self.post_quant_conv.bytes()
            + self.conv_in.bytes()
            + self.mid.iter().map(r).sum::<usize>()
            + self.up.iter().flatten().map(r).sum::<usize>()
            + self.conv_out.bytes()
    }
}
