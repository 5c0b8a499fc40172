//! `MOVQDecoder3D` and `NewDecoder3D` (CogVideo sat/sgm/modules/autoencoding/vqvae/
//! movq_dec_3d.py @ 7a1af715, spec section 7): conv_in, two mid resnet blocks, the up levels
//! from the lowest resolution (`up.{L-1}`) to the highest (`up.0`), norm_out, SiLU, conv_out.
//! The raw input z is the SpatialNorm conditioning zq of every norm. The architecture comes
//! from a [`DecoderPlan`]; the decode modes are in `decode.rs`.

use super::attention::AttnBlock2d;
use super::conv::{CausalConv3d, ConvCache, ConvInput};
use super::plan::DecoderPlan;
use super::resnet::{ResnetBlock3d, ResnetCache};
use super::schedule::Stage;
use super::spatial_norm::SpatialNorm3d;
use super::trace::{Tap, Tracer};
use super::upsample::Upsample3d;
use crate::error::Result;
use crate::io::VarPath;
use crate::kernels::{Act, Float};
use crate::tensor::Tensor;

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
    plan: DecoderPlan,
    post_quant_conv: Option<CausalConv3d<T>>, // NewDecoder3D with post_quant_conv only
    conv_in: CausalConv3d<T>,
    mid: Mid<T>,
    up: Vec<UpLevel<T>>, // index = level; up[L-1] runs first
    norm_out: SpatialNorm3d<T>,
    conv_out: CausalConv3d<T>,
    /// Whether a decode fails on NaN / infinite output (the default) or hands it out.
    pub(crate) check_finite: bool,
    /// This decoder's convolutions use bf16 products ([`Self::emulate_bf16_products`]).
    bf16_products: bool,
    /// ... in the CPU's bf16 dot-product kernels ([`Self::use_bf16_dot_products`]).
    bf16_native: bool,
}

impl<T: Float> Decoder<T> {
    /// Builds the module tree of `plan` with weights from `vp` (names as upstream).
    pub fn load(vp: &VarPath, plan: &DecoderPlan) -> Result<Self> {
        let m = &plan.modules;
        let pm = m.pad_mode;
        let post_quant_conv = if plan.post_quant_conv {
            Some(CausalConv3d::load(&vp.pp("post_quant_conv"), m.zq_ch, plan.z_channels, 3, pm)?)
        } else {
            None
        };
        let conv_in = CausalConv3d::load(&vp.pp("conv_in"), plan.z_channels, plan.mid_channels, 3, pm)?;
        let c = plan.mid_channels;
        let mid = Mid {
            block_1: ResnetBlock3d::load(&vp.pp("mid").pp("block_1"), c, c, m)?,
            block_2: ResnetBlock3d::load(&vp.pp("mid").pp("block_2"), c, c, m)?,
        };
        let mut up: Vec<Option<UpLevel<T>>> = (0..plan.levels.len()).map(|_| None).collect();
        // Loaded in execution order, as upstream builds them.
        for (i, lv) in plan.levels_in_order() {
            let vl = vp.pp("up").pp(i);
            let mut block = Vec::new();
            let mut attn = Vec::new();
            for j in 0..lv.blocks {
                block.push(ResnetBlock3d::load(&vl.pp("block").pp(j), lv.block_in(j), lv.c_out, m)?);
                if lv.attention {
                    attn.push(AttnBlock2d::load(&vl.pp("attn").pp(j), lv.c_out, m)?);
                }
            }
            let upsample = match lv.upsample {
                Some(u) => Some(Upsample3d::load(&vl.pp("upsample"), lv.c_out, u, m.rule)?),
                None => None,
            };
            up[i] = Some(UpLevel { block, attn, upsample });
        }
        let up = up.into_iter().map(|u| u.expect("every level built")).collect();
        let c0 = plan.out_in_channels;
        Ok(Decoder {
            plan: plan.clone(),
            post_quant_conv,
            conv_in,
            mid,
            up,
            norm_out: SpatialNorm3d::load(&vp.pp("norm_out"), c0, m)?,
            conv_out: CausalConv3d::load(&vp.pp("conv_out"), c0, plan.out_ch, 3, pm)?,
            check_finite: true,
            bf16_products: false,
            bf16_native: false,
        })
    }

    pub fn plan(&self) -> &DecoderPlan {
        &self.plan
    }

    /// Bytes of Winograd weight transforms the causal convs keep for later calls: filled by
    /// chunked and tiled decodes of more than one decoder call (`--no-weight-cache`:
    /// [`crate::kernels::params::set_weight_cache`]), held as long as the decoder.
    pub fn weight_cache_bytes(&self) -> usize {
        let blocks = self.mid.block_1.cached_bytes()
            + self.mid.block_2.cached_bytes()
            + self.up.iter().flat_map(|l| &l.block).map(|b| b.cached_bytes()).sum::<usize>();
        let pqc = self.post_quant_conv.as_ref().map_or(0, |c| c.cached_bytes());
        pqc + self.conv_in.cached_bytes() + blocks + self.conv_out.cached_bytes()
    }

    /// By default a decode whose output holds NaN or infinite values fails with
    /// [`crate::Error::NonFinite`] and hands out no frame from the first bad batch on; `true`
    /// hands such output out as it is.
    pub fn allow_nonfinite(&mut self, allow: bool) {
        self.check_finite = !allow;
    }

    /// `true`: this decoder's convolutions round their gemm operands to bf16 and sum in `T`
    /// (the arithmetic of `--precision bf16-emulated`, [`crate::kernels::bf16`]) whatever the
    /// process-wide [`crate::kernels::params::bf16_products`]; other decoders are unaffected,
    /// also while decoding at the same time on other threads.
    pub fn emulate_bf16_products(&mut self, on: bool) {
        self.bf16_products = on;
        self.bf16_native = false;
    }

    /// `true`: this decoder's convolutions run in the bf16 mode proper (`--precision bf16`):
    /// the Winograd convolutions in the CPU's bf16 dot-product kernels
    /// ([`crate::kernels::bf16_panels`]), the others with emulated bf16 products. An error
    /// (`Error::Unsupported`) for a decoder not in f32 or a CPU movq has no such kernel for;
    /// `false` turns both bf16 settings of this decoder off.
    pub fn use_bf16_dot_products(&mut self, on: bool) -> Result<()> {
        if on {
            crate::ops::conv::bf16_dot_available::<T>("Decoder::use_bf16_dot_products")?;
        }
        (self.bf16_products, self.bf16_native) = (on, on);
        Ok(())
    }

    /// The precision a decode computes in: `T::NAME` ("f32", "f64"), "bf16-emulated" or "bf16"
    /// when this decoder, or (without a setting of its own) the process, has bf16 products on.
    pub fn precision_name(&self) -> &'static str {
        match (self.bf16_products, self.bf16_native) {
            (true, true) => "bf16",
            (true, false) => "bf16-emulated",
            _ => crate::kernels::bf16::precision_name::<T>(),
        }
    }

    /// True if this decoder's own setting ([`Self::emulate_bf16_products`]) is on.
    pub fn emulates_bf16_products(&self) -> bool {
        self.bf16_products
    }

    /// One decoder call (upstream `decoder(z)`), calling `on_stage` as each stage finishes; an
    /// error from `on_stage` (e.g. [`crate::Error::Interrupted`]) ends the call with that error.
    /// With `cache`, z is one chunk of a clip: it is its own zq, and the causal convs continue
    /// from the previous chunk (diffusers `decoder(z_chunk, conv_cache=...)`; spec 11.1).
    /// z: (b, zq_ch, t, h, w) -> (b, out_ch, t', h * 2^(L-1), w * 2^(L-1)) with t' from
    /// [`DecoderPlan::output_frames`] (or the pre-end features with `give_pre_end`).
    pub fn forward(
        &self,
        z: &Tensor<T>,
        cache: Option<&mut DecoderCache<T>>,
        on_stage: &mut dyn FnMut(Stage) -> Result<()>,
    ) -> Result<Tensor<T>> {
        self.forward_traced(z, cache, on_stage, None)
    }

    /// [`Self::forward`], showing every module's output to `tracer` (see `trace.rs`); the
    /// result is bitwise the same as without.
    pub fn forward_traced(
        &self,
        z: &Tensor<T>,
        cache: Option<&mut DecoderCache<T>>,
        on_stage: &mut dyn FnMut(Stage) -> Result<()>,
        tracer: Option<&mut dyn Tracer<T>>,
    ) -> Result<Tensor<T>> {
        use crate::kernels::params::{process_bf16_native, process_bf16_products, with_bf16};
        let (products, native) = match self.bf16_products {
            true => (true, self.bf16_native),
            false => (process_bf16_products(), process_bf16_native()),
        };
        with_bf16(products, native, || self.run(z, cache, on_stage, tracer))
    }

    fn run(
        &self,
        z: &Tensor<T>,
        mut cache: Option<&mut DecoderCache<T>>,
        on_stage: &mut dyn FnMut(Stage) -> Result<()>,
        tracer: Option<&mut dyn Tracer<T>>,
    ) -> Result<Tensor<T>> {
        let out_shape = self.plan.output_shape(z.shape())?;
        if cache.is_some() {
            self.plan.check_chunkable()?;
        }
        let mut tap = Tap::root(tracer);
        let zq = z;
        let mut h = match &self.post_quant_conv {
            Some(pqc) => {
                let z =
                    pqc.forward(ConvInput::plain(z), cache.as_deref_mut().map(|c| &mut c.post_quant_conv))?;
                tap.record("post_quant_conv", &z)?;
                self.conv_in.forward(ConvInput::plain(&z), cache.as_deref_mut().map(|c| &mut c.conv_in))?
            }
            None => {
                self.conv_in.forward(ConvInput::plain(z), cache.as_deref_mut().map(|c| &mut c.conv_in))?
            }
        };
        tap.record("conv_in", &h)?;
        for (k, (name, block)) in
            [("block_1", &self.mid.block_1), ("block_2", &self.mid.block_2)].into_iter().enumerate()
        {
            let mut mid = tap.pp("mid");
            h = block.forward(h, zq, cache.as_deref_mut().map(|c| &mut c.mid[k]), mid.pp(name))?;
            mid.record(name, &h)?;
        }
        on_stage(Stage::Mid)?;
        for (i_level, level) in self.up.iter().enumerate().rev() {
            let mut up_tap = tap.pp("up");
            let mut lv = up_tap.pp(i_level);
            for (j, block) in level.block.iter().enumerate() {
                let c = cache.as_deref_mut().map(|c| &mut c.up[i_level][j]);
                let mut blocks = lv.pp("block");
                h = block.forward(h, zq, c, blocks.pp(j))?;
                blocks.record(j, &h)?;
                if let Some(attn) = level.attn.get(j) {
                    h = attn.forward(h, zq)?;
                    lv.pp("attn").record(j, &h)?;
                }
            }
            if let Some(up) = &level.upsample {
                h = up.forward(&h)?;
                lv.record("upsample", &h)?;
            }
            on_stage(Stage::Level(i_level))?;
        }
        if !self.plan.give_pre_end {
            tap.record_with("norm_out", || self.norm_out.forward(h.clone(), zq))?;
            // conv_act after norm_out is SiLU whatever act_fn is (diffusers builds nn.SiLU()).
            let plan = self.norm_out.plan(&h, zq, Act::Silu)?;
            let input = ConvInput { norm: Some(&plan), ..ConvInput::plain(&h) };
            h = self.conv_out.forward(input, cache.map(|c| &mut c.conv_out))?;
            tap.record("conv_out", &h)?;
        }
        on_stage(Stage::Out)?;
        debug_assert_eq!(h.shape(), out_shape);
        Ok(h)
    }

    /// The paths (upstream naming) of the modules whose outputs a tracer sees, in execution
    /// order (see `trace.rs`).
    pub fn module_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.post_quant_conv.is_some() {
            out.push("post_quant_conv".to_string());
        }
        out.push("conv_in".to_string());
        let block = |out: &mut Vec<String>, path: String, b: &ResnetBlock3d<T>| {
            for child in ["norm1", "conv1", "norm2", "conv2"] {
                out.push(format!("{path}.{child}"));
            }
            if b.has_shortcut() {
                out.push(format!("{path}.nin_shortcut"));
            }
            out.push(path);
        };
        block(&mut out, "mid.block_1".into(), &self.mid.block_1);
        block(&mut out, "mid.block_2".into(), &self.mid.block_2);
        for (i, level) in self.up.iter().enumerate().rev() {
            for (j, b) in level.block.iter().enumerate() {
                block(&mut out, format!("up.{i}.block.{j}"), b);
                if level.attn.get(j).is_some() {
                    out.push(format!("up.{i}.attn.{j}"));
                }
            }
            if level.upsample.is_some() {
                out.push(format!("up.{i}.upsample"));
            }
        }
        if !self.plan.give_pre_end {
            out.extend(["norm_out".to_string(), "conv_out".to_string()]);
        }
        out
    }

    /// Empty caches for a clip's first chunk (see [`Self::forward`]).
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

impl<T> DecoderCache<T> {
    /// [`ConvCache::last_chunk`] for every conv: what the next call keeps for later ones.
    pub fn last_chunk(&mut self, last_of_clip: bool, last_call: bool) {
        self.post_quant_conv.last_chunk(last_of_clip, last_call);
        self.conv_in.last_chunk(last_of_clip, last_call);
        self.mid
            .iter_mut()
            .chain(self.up.iter_mut().flatten())
            .for_each(|c| c.last_chunk(last_of_clip, last_call));
        self.conv_out.last_chunk(last_of_clip, last_call);
    }
}
