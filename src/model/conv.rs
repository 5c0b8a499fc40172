//! Convolution modules: `CausalConv3d` (movq_enc_3d.py), plain `Conv3d` (nin_shortcut) and
//! `Conv2d` (attention projections, upsampler conv), all lowered to one 3D convolution.

use super::config::PadMode;
use crate::error::{Error, Result};
use crate::io::{Param, VarPath};
use crate::kernels::Float;
use crate::kernels::params::{Conv3dParams, TimePad};
pub use crate::ops::conv::ConvInput;
use crate::ops::conv::{ConvLayer, causal_tail, conv3d};
use crate::tensor::Tensor;

/// A convolution's parameters and geometry. Weights are stored as loaded:
/// weight (c_out, c_in * k_d * k_h * k_w), bias (c_out,).
pub struct Conv3d<T> {
    weight: Param<T>, // (c_out, c_in, k_d, k_h, k_w)
    bias: Param<T>,   // (c_out,)
    params: Conv3dParams,
    op: &'static str,
}

impl<T: Float> Conv3d<T> {
    /// Loads `weight`/`bias` under `vp`; `weight_shape` is the stored shape (4-D for Conv2d).
    fn load_with(
        vp: &VarPath,
        params: Conv3dParams,
        weight_shape: &[usize],
        op: &'static str,
    ) -> Result<Self> {
        let weight = vp.get("weight", weight_shape)?;
        let bias = vp.get("bias", &[params.c_out])?;
        Ok(Conv3d { weight, bias, params, op })
    }

    /// `nn.Conv3d(c_in, c_out, k)` without padding (the decoders' `nin_shortcut`, k = 1).
    pub fn load(vp: &VarPath, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        Self::load_with(vp, Conv3dParams::plain(c_in, c_out, (k, k, k)), &[c_out, c_in, k, k, k], "Conv3d")
    }

    fn layer(&self) -> ConvLayer<'_, T> {
        ConvLayer { op: self.op, weight: &self.weight, bias: &self.bias, params: &self.params }
    }

    /// x: (n, c_in, d, h, w) -> (n, c_out, d', h', w')
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        conv3d(&self.layer(), ConvInput::plain(x))
    }

    pub fn params(&self) -> &Conv3dParams {
        &self.params
    }
}

/// `nn.Conv2d(c, c, k, padding=k//2)` applied to every frame independently.
pub struct Conv2d<T>(Conv3d<T>);

impl<T: Float> Conv2d<T> {
    pub fn load(vp: &VarPath, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        let mut p = Conv3dParams::plain(c_in, c_out, (1, k, k));
        p.pad_h = (k / 2, k / 2);
        p.pad_w = (k / 2, k / 2);
        Ok(Conv2d(Conv3d::load_with(vp, p, &[c_out, c_in, k, k], "Conv2d")?))
    }

    /// x: (n, c_in, d, h, w) -> (n, c_out, d, h, w)
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.0.forward(x)
    }
}

/// `CausalConv3d(chan_in, chan_out, kernel_size, pad_mode)` with stride 1 and dilation 1.
/// Parameters live at `<name>.conv.weight` / `.bias`.
pub struct CausalConv3d<T> {
    conv: Conv3d<T>,
}

/// The padding upstream's CausalConv3d applies for kernel `k` (cubic), stride 1, dilation 1,
/// reproducing the "constant" pad-order quirk (spec section 2).
pub fn causal_params(c_in: usize, c_out: usize, k: usize, pad_mode: PadMode) -> Result<Conv3dParams> {
    causal_params_strided(c_in, c_out, k, pad_mode, TimeStep::UNIT)
}

/// CausalConv3d's temporal stride and dilation (upstream applies them to time only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeStep {
    pub stride: usize,
    pub dilation: usize,
}

impl TimeStep {
    /// Stride 1, dilation 1: every conv of the decoders.
    pub const UNIT: TimeStep = TimeStep { stride: 1, dilation: 1 };
}

/// [`causal_params`] with upstream's temporal stride and dilation:
/// `time_pad = dilation * (k - 1) + (1 - stride)`.
pub fn causal_params_strided(
    c_in: usize,
    c_out: usize,
    k: usize,
    pad_mode: PadMode,
    time: TimeStep,
) -> Result<Conv3dParams> {
    let TimeStep { stride, dilation } = time;
    if k % 2 == 0 {
        return Err(Error::InvalidConfig(format!("CausalConv3d kernel {k} must be odd (upstream asserts)")));
    }
    if stride == 0 || dilation == 0 {
        return Err(Error::InvalidConfig("CausalConv3d stride and dilation must be positive".into()));
    }
    let time_pad = (dilation * (k - 1) + 1).checked_sub(stride).ok_or_else(|| {
        Error::Unsupported(format!(
            "CausalConv3d stride {stride} > dilation * (k - 1) + 1 gives a negative time pad (upstream crops)"
        ))
    })?;
    let (hp, wp) = (k / 2, k / 2);
    let mut p = Conv3dParams::plain(c_in, c_out, (k, k, k));
    p.stride_d = stride;
    p.dilation_d = dilation;
    match pad_mode {
        PadMode::First => {
            if time_pad == 0 {
                // Upstream concatenates an empty list of frames and raises.
                return Err(Error::Unsupported(
                    "CausalConv3d pad_mode \"first\" with a zero time pad (upstream raises)".into(),
                ));
            }
            p.pad_d = (time_pad, 0);
            p.time_pad = TimePad::ReplicateFirst;
            p.pad_h = (hp, hp);
            p.pad_w = (wp, wp);
        }
        PadMode::Reflect => {
            p.pad_d = (time_pad, 0);
            p.time_pad = TimePad::Reflect;
            p.pad_h = (hp, hp);
            p.pad_w = (wp, wp);
        }
        PadMode::Constant => {
            // F.pad gets (time_pad, 0, wp, wp, hp, hp), read from the last axis: W (time_pad, 0),
            // H (wp, wp), T (hp, hp).
            p.pad_w = (time_pad, 0);
            p.pad_h = (wp, wp);
            p.pad_d = (hp, hp);
            p.time_pad = TimePad::Zeros;
        }
    }
    Ok(p)
}

impl<T: Float> CausalConv3d<T> {
    pub fn load(vp: &VarPath, c_in: usize, c_out: usize, k: usize, pad_mode: PadMode) -> Result<Self> {
        Self::load_params(vp, causal_params(c_in, c_out, k, pad_mode)?)
    }

    /// Loads a CausalConv3d with explicit geometry (e.g. from [`causal_params_strided`]).
    pub fn load_params(vp: &VarPath, p: Conv3dParams) -> Result<Self> {
        let (c_in, c_out, k) = (p.c_in, p.c_out, p.k_d);
        Ok(CausalConv3d {
            conv: Conv3d::load_with(&vp.pp("conv"), p, &[c_out, c_in, k, k, k], "CausalConv3d")?,
        })
    }

    pub fn params(&self) -> &Conv3dParams {
        self.conv.params()
    }

    /// conv(norm(x)) (+ residual), with the normalisation fused into the convolution's input
    /// (see [`ConvInput`]). With `cache` this is one chunk of a clip (diffusers' `conv_cache`):
    /// an empty cache pads with frame 0 as usual; a filled one supplies the frames in front of
    /// x instead, and afterwards holds the last k_d - 1 frames of this call's (normalised)
    /// input. Caches need pad_mode "first" with time stride 1 (the CogVideoX convs).
    /// x: (n, c_in, d, h, w) -> (n, c_out, d, h, w)
    pub fn forward(&self, input: ConvInput<'_, T>, cache: Option<&mut ConvCache<T>>) -> Result<Tensor<T>> {
        let c = &self.conv;
        let Some(cache) = cache else { return conv3d(&c.layer(), input) };
        let p = &c.params;
        if p.time_pad != TimePad::ReplicateFirst
            || p.stride_d != 1
            || p.pad_d.1 != 0
            || input.prefix.is_some()
        {
            return Err(Error::Unsupported(format!(
                "{}: chunked decoding needs causal convs with pad_mode \"first\" and time stride 1",
                c.op
            )));
        }
        let keep = p.pad_d.0;
        let prev = cache.0.take();
        let (x, norm) = (input.x, input.norm);
        let y = match &prev {
            None => conv3d(&c.layer(), input)?,
            Some(pre) => {
                // The cache replaces the time padding: exactly pad_d.0 frames.
                let joined = Conv3dParams { pad_d: (0, 0), ..p.clone() };
                let layer = ConvLayer { params: &joined, ..c.layer() };
                conv3d(&layer, ConvInput { prefix: Some(pre), ..input })?
            }
        };
        cache.0 = Some(causal_tail(x, norm, prev.as_ref(), keep)?);
        Ok(y)
    }
}

/// What a causal conv carries from one chunk of a clip to the next: the last k_d - 1 frames of
/// its time-padded input, after any normalisation. Empty before the first chunk.
#[derive(Clone)]
pub struct ConvCache<T>(Option<Tensor<T>>);

impl<T> Default for ConvCache<T> {
    fn default() -> Self {
        ConvCache(None)
    }
}

impl<T: Float> ConvCache<T> {
    /// The carried frames, if any. (n, c, k_d - 1, h, w)
    pub fn frames(&self) -> Option<&Tensor<T>> {
        self.0.as_ref()
    }
}
