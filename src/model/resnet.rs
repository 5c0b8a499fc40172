//! `ResnetBlock3D` (movq_dec_3d.py @ 7a1af715, spec section 4): two SpatialNorm + activation (SiLU upstream) +
//! CausalConv3d stages and a residual, through a plain 1x1x1 `nin_shortcut` when channels change.

use super::conv::{CausalConv3d, Conv3d, ConvCache, ConvInput};
use super::plan::ModuleOptions;
use super::spatial_norm::SpatialNorm3d;
use super::trace::Tap;
use crate::error::Result;
use crate::io::VarPath;
use crate::kernels::{Act, Float};
use crate::tensor::Tensor;

pub struct ResnetBlock3d<T> {
    norm1: SpatialNorm3d<T>,
    conv1: CausalConv3d<T>,
    norm2: SpatialNorm3d<T>,
    conv2: CausalConv3d<T>,
    nin_shortcut: Option<Conv3d<T>>, // 1x1x1, present iff c_in != c_out
    /// The nonlinearity after each norm: SiLU upstream, diffusers' `act_fn`.
    act: Act,
}

impl<T: Float> ResnetBlock3d<T> {
    /// `ResnetBlock3D(in_channels=c_in, out_channels=c_out, zq_ch, add_conv, pad_mode)`.
    pub fn load(vp: &VarPath, c_in: usize, c_out: usize, m: &ModuleOptions) -> Result<Self> {
        Ok(ResnetBlock3d {
            norm1: SpatialNorm3d::load(&vp.pp("norm1"), c_in, m)?,
            conv1: CausalConv3d::load(&vp.pp("conv1"), c_in, c_out, 3, m.pad_mode)?,
            norm2: SpatialNorm3d::load(&vp.pp("norm2"), c_out, m)?,
            conv2: CausalConv3d::load(&vp.pp("conv2"), c_out, c_out, 3, m.pad_mode)?,
            nin_shortcut: if c_in != c_out {
                Some(Conv3d::load(&vp.pp("nin_shortcut"), c_in, c_out, 1)?)
            } else {
                None
            },
            act: m.act,
        })
    }

    /// Bytes of Winograd weight transforms its convs keep.
    pub fn cached_bytes(&self) -> usize {
        self.conv1.cached_bytes() + self.conv2.cached_bytes()
    }

    /// True if the block projects its input (`nin_shortcut`: c_in != c_out).
    pub fn has_shortcut(&self) -> bool {
        self.nin_shortcut.is_some()
    }

    /// x: (n, c_in, d, h, w); zq: (n, c_zq, d_z, h_z, w_z) -> (n, c_out, d, h, w)
    ///
    /// Each norm + activation is fused into the convolution that follows it, and conv2
    /// accumulates into the shortcut, which is written over x's memory when c_out <= c_in
    /// (without bf16 products), so then at most two of x, h and the shortcut are alive at once.
    /// With `cache`, x is one chunk of a clip and the causal convs continue from the previous
    /// chunk. `tap` sees norm1, conv1, norm2, conv2 (without the residual) and nin_shortcut
    /// (see `trace.rs`).
    pub fn forward(
        &self,
        x: Tensor<T>,
        zq: &Tensor<T>,
        mut cache: Option<&mut ResnetCache<T>>,
        mut tap: Tap<'_, T>,
    ) -> Result<Tensor<T>> {
        tap.record_with("norm1", || self.norm1.forward(x.clone(), zq))?;
        let plan1 = self.norm1.plan(&x, zq, self.act)?;
        let input = ConvInput { norm: Some(&plan1), ..ConvInput::plain(&x) };
        let h = self.conv1.forward(input, cache.as_deref_mut().map(|c| &mut c.conv1))?;
        drop(plan1);
        tap.record("conv1", &h)?;
        // Dropout (p = 0 / eval) is the identity.
        tap.record_with("norm2", || self.norm2.forward(h.clone(), zq))?;
        let plan2 = self.norm2.plan(&h, zq, self.act)?;
        tap.record_with("conv2", || {
            // conv2 alone, on a copy of its cache: the fused call below carries the real one.
            let mut c = cache.as_deref().map(|c| c.conv2.clone());
            let input = ConvInput { norm: Some(&plan2), ..ConvInput::plain(&h) };
            self.conv2.forward(input, c.as_mut())
        })?;
        let s = match &self.nin_shortcut {
            Some(conv) => {
                // Written over x's memory (x is not read again): x, h and the shortcut are
                // never alive at once.
                let s = conv.forward_owned(x)?;
                tap.record("nin_shortcut", &s)?;
                s
            }
            None => x,
        };
        let input = ConvInput { norm: Some(&plan2), residual: Some(s), ..ConvInput::plain(&h) };
        self.conv2.forward(input, cache.map(|c| &mut c.conv2))
    }
}

/// The conv caches of one resnet block (diffusers' `conv_cache["conv1"]`, `["conv2"]`).
#[derive(Clone)]
pub struct ResnetCache<T> {
    pub conv1: ConvCache<T>,
    pub conv2: ConvCache<T>,
}

impl<T> ResnetCache<T> {
    /// [`ConvCache::last_chunk`] for both convs.
    pub fn last_chunk(&mut self, last_of_clip: bool, last_call: bool) {
        self.conv1.last_chunk(last_of_clip, last_call);
        self.conv2.last_chunk(last_of_clip, last_call);
    }
}

impl<T> Default for ResnetCache<T> {
    fn default() -> Self {
        ResnetCache { conv1: ConvCache::default(), conv2: ConvCache::default() }
    }
}
