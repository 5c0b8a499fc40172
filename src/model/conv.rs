//! Convolution modules: `CausalConv3d` (movq_enc_3d.py), plain `Conv3d` (nin_shortcut) and
//! `Conv2d` (attention projections, upsampler conv), all lowered to one 3D convolution.

use super::config::PadMode;
use crate::error::{Error, Result};
use crate::io::{Param, VarPath};
use crate::kernels::Float;
use crate::kernels::params::{Conv3dParams, TimePad};
pub use crate::ops::conv::ConvInput;
use crate::ops::conv::{ConvLayer, Transformed, causal_tail, conv3d, conv3d_into, conv3d_owned};
use crate::tensor::Tensor;
use std::sync::OnceLock;

/// A convolution's parameters and geometry. Weights are stored as loaded:
/// weight (c_out, c_in * k_d * k_h * k_w), bias (c_out,).
pub struct Conv3d<T> {
    weight: Param<T>, // (c_out, c_in, k_d, k_h, k_w)
    bias: Param<T>,   // (c_out,)
    params: Conv3dParams,
    op: &'static str,
    /// Winograd weight transforms kept across chunks ([`crate::kernels::params::weight_cache`]).
    transformed: OnceLock<Transformed<T>>,
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
        Ok(Conv3d { weight, bias, params, op, transformed: OnceLock::new() })
    }

    /// `nn.Conv3d(c_in, c_out, k)` without padding (the decoders' `nin_shortcut`, k = 1).
    pub fn load(vp: &VarPath, c_in: usize, c_out: usize, k: usize) -> Result<Self> {
        Self::load_with(vp, Conv3dParams::plain(c_in, c_out, (k, k, k)), &[c_out, c_in, k, k, k], "Conv3d")
    }

    fn layer(&self) -> ConvLayer<'_, T> {
        ConvLayer {
            op: self.op,
            weight: &self.weight,
            bias: &self.bias,
            params: &self.params,
            transformed: None,
            nearest_2x: false,
        }
    }

    /// x: (n, c_in, d, h, w) -> (n, c_out, d', h', w')
    pub fn forward(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let y = conv3d(&self.layer(), ConvInput::plain(x));
        self.release();
        y
    }

    /// [`Self::forward`] taking x by value: a pointwise conv with c_out <= c_in writes its
    /// output over x's memory ([`crate::ops::conv::conv3d_owned`]), bitwise the same result.
    /// x: (n, c_in, d, h, w) -> (n, c_out, d', h', w')
    pub fn forward_owned(&self, x: Tensor<T>) -> Result<Tensor<T>> {
        let y = conv3d_owned(&self.layer(), x);
        self.release();
        y
    }

    /// After a call: the mapped weight pages leave the process's resident set
    /// ([`crate::kernels::params::release_weights`]).
    fn release(&self) {
        if crate::kernels::params::release_weights() {
            self.weight.release();
        }
    }

    pub fn params(&self) -> &Conv3dParams {
        &self.params
    }

    /// Bytes of Winograd weight transforms the layer keeps ([`ConvCache::last_chunk`]).
    pub fn cached_bytes(&self) -> usize {
        self.transformed.get().map_or(0, Transformed::bytes)
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

    /// [`Self::forward`] written into frames `at ..` of `out` (n, c_out, frames, h, w), for one
    /// of several calls that share `transformed`, the Winograd weight transforms made by the
    /// first of them (e.g. frame by frame: once per forward, not per frame, and gone with the
    /// cell). `nearest_2x`: x is a nearest 2x upsampling in h and w (so a 3x3 conv skips the
    /// Winograd products it makes zero). x: (n, c_in, d, h, w)
    pub fn forward_into(
        &self,
        x: &Tensor<T>,
        transformed: &OnceLock<Transformed<T>>,
        out: &mut Tensor<T>,
        at: usize,
        nearest_2x: bool,
    ) -> Result<()> {
        let c = &self.0;
        // Only 3x3 with padding 1 reads the upsampled pairs in whole tiles.
        let nearest_2x =
            nearest_2x && c.params.has_3x3_taps() && c.params.pad_h.0 == 1 && c.params.pad_w.0 == 1;
        let layer = ConvLayer { transformed: Some(transformed), nearest_2x, ..c.layer() };
        let r = conv3d_into(&layer, x, out, at);
        c.release();
        r
    }

    pub fn c_out(&self) -> usize {
        self.0.params.c_out
    }
}

/// `CausalConv3d(chan_in, chan_out, kernel_size, pad_mode, stride, dilation)`.
/// Parameters live at `<name>.conv.weight` (c_out, c_in, k.t, k.h, k.w) / `.bias` (c_out,).
pub struct CausalConv3d<T> {
    conv: Conv3d<T>,
}

/// A CausalConv3d kernel size: upstream's `kernel_size`, an int (a cube, `From<usize>`) or a
/// `(kt, kh, kw)` tuple (`From<(usize, usize, usize)>`), as its `cast_tuple` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel3 {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl Kernel3 {
    /// A `k x k x k` kernel.
    pub const fn cube(k: usize) -> Self {
        Kernel3 { t: k, h: k, w: k }
    }
}

impl From<usize> for Kernel3 {
    fn from(k: usize) -> Self {
        Kernel3::cube(k)
    }
}

impl From<(usize, usize, usize)> for Kernel3 {
    fn from((t, h, w): (usize, usize, usize)) -> Self {
        Kernel3 { t, h, w }
    }
}

impl std::fmt::Display for Kernel3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}, {})", self.t, self.h, self.w)
    }
}

/// The geometry of upstream's CausalConv3d for kernel `k` with stride 1 and dilation 1,
/// reproducing the "constant" pad-order quirk (spec section 2).
pub fn causal_params(
    c_in: usize,
    c_out: usize,
    k: impl Into<Kernel3>,
    pad_mode: PadMode,
) -> Result<Conv3dParams> {
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

/// [`causal_params`] with upstream's temporal stride and dilation. With kernel (kt, kh, kw),
/// upstream derives `time_pad = dilation * (kt - 1) + (1 - stride)`, `height_pad = kh / 2`,
/// `width_pad = kw / 2`, and pads (movq_enc_3d.py `CausalConv3d.forward`, spec section 2):
///
/// | pad_mode | T (before, after) | H | W |
/// | --- | --- | --- | --- |
/// | first | time_pad copies of frame 0, 0 | (kh/2, kh/2) | (kw/2, kw/2) |
/// | reflect | frames time_pad..1 (zeros where T is too short), 0 | (kh/2, kh/2) | (kw/2, kw/2) |
/// | constant | zeros (kh/2, kh/2) | (kw/2, kw/2) | (time_pad, 0) |
///
/// "constant" is upstream's pad-order quirk, which changes the output shape whenever
/// kt - 1 != 2 * (kh / 2) or kh != kw: T' = T + 2 * (kh/2) - dilation * (kt - 1) (before
/// striding), H' = H + 2 * (kw/2) - kh + 1, W' = W + time_pad - kw + 1.
/// Errors: `InvalidConfig` for a zero size, an even kh or kw (upstream asserts both odd; kt may
/// be even), a zero stride or dilation; `Unsupported` where upstream raises or crops (mode
/// "first" with time_pad 0, a negative time_pad).
pub fn causal_params_strided(
    c_in: usize,
    c_out: usize,
    k: impl Into<Kernel3>,
    pad_mode: PadMode,
    time: TimeStep,
) -> Result<Conv3dParams> {
    let k = k.into();
    let TimeStep { stride, dilation } = time;
    if k.t == 0 || k.h == 0 || k.w == 0 {
        return Err(Error::InvalidConfig(format!("CausalConv3d kernel {k} has a zero size")));
    }
    if k.h % 2 == 0 || k.w % 2 == 0 {
        return Err(Error::InvalidConfig(format!(
            "CausalConv3d kernel {k}: height and width sizes must be odd (upstream asserts)"
        )));
    }
    if stride == 0 || dilation == 0 {
        return Err(Error::InvalidConfig("CausalConv3d stride and dilation must be positive".into()));
    }
    let time_pad = (dilation * (k.t - 1) + 1).checked_sub(stride).ok_or_else(|| {
        Error::Unsupported(format!(
            "CausalConv3d stride {stride} > dilation * (kt - 1) + 1 gives a negative time pad (upstream crops)"
        ))
    })?;
    let (hp, wp) = (k.h / 2, k.w / 2);
    let mut p = Conv3dParams::plain(c_in, c_out, (k.t, k.h, k.w));
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
            // F.pad gets (time_pad, 0, wp, wp, hp, hp) and reads pairs from the last axis:
            // W (time_pad, 0), H (wp, wp), T (hp, hp). Upstream's unused
            // `time_causal_padding` holds the intended order.
            p.pad_w = (time_pad, 0);
            p.pad_h = (wp, wp);
            p.pad_d = (hp, hp);
            p.time_pad = TimePad::Zeros;
        }
    }
    Ok(p)
}

impl<T: Float> CausalConv3d<T> {
    /// `CausalConv3d(c_in, c_out, k, pad_mode)`; `k` an int or (kt, kh, kw) ([`Kernel3`]).
    pub fn load(
        vp: &VarPath,
        c_in: usize,
        c_out: usize,
        k: impl Into<Kernel3>,
        pad_mode: PadMode,
    ) -> Result<Self> {
        Self::load_params(vp, causal_params(c_in, c_out, k, pad_mode)?)
    }

    /// Loads a CausalConv3d with explicit geometry (e.g. from [`causal_params_strided`]).
    pub fn load_params(vp: &VarPath, p: Conv3dParams) -> Result<Self> {
        let shape = [p.c_out, p.c_in, p.k_d, p.k_h, p.k_w];
        Ok(CausalConv3d { conv: Conv3d::load_with(&vp.pp("conv"), p, &shape, "CausalConv3d")? })
    }

    pub fn params(&self) -> &Conv3dParams {
        self.conv.params()
    }

    /// Bytes of Winograd weight transforms the layer keeps ([`ConvCache::last_chunk`]).
    pub fn cached_bytes(&self) -> usize {
        self.conv.cached_bytes()
    }

    /// conv(norm(x)) (+ residual), with the normalisation fused into the convolution's input
    /// (see [`ConvInput`]). With `cache` this is one chunk of a clip (diffusers' `conv_cache`):
    /// an empty cache pads with frame 0 as usual; a filled one supplies the frames in front of
    /// x instead, and afterwards holds the last time_pad (= pad_d.0) frames of this call's
    /// (normalised) input. Caches need pad_mode "first" with time stride 1 (the CogVideoX convs).
    /// x: (n, c_in, d, h, w) -> (n, c_out, d', h', w') as [`Conv3dParams::out_dims`] gives:
    /// (d, h, w) for "first" and "reflect" at stride 1; "constant" can change all three
    /// ([`causal_params_strided`]).
    pub fn forward(&self, input: ConvInput<'_, T>, cache: Option<&mut ConvCache<T>>) -> Result<Tensor<T>> {
        let c = &self.conv;
        let Some(cache) = cache else {
            let y = conv3d(&c.layer(), input);
            c.release();
            return y;
        };
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
        if matches!(cache.state, CacheState::Ended) {
            return Err(Error::Unsupported(format!(
                "{}: a chunk after the clip's last one (its cache was not carried: ConvCache::last_chunk)",
                c.op
            )));
        }
        let keep = p.pad_d.0;
        let prev = match std::mem::replace(&mut cache.state, CacheState::Empty) {
            CacheState::Carry(t) => Some(t),
            _ => None,
        };
        // Transforms already kept are used whatever the cache says; new ones are kept only if
        // a later call of the decode will use them.
        let kept = (crate::kernels::params::weight_cache()
            && (cache.keep_transforms || c.transformed.get().is_some()))
        .then_some(&c.transformed);
        let (x, norm) = (input.x, input.norm);
        let y = match &prev {
            None => conv3d(&ConvLayer { transformed: kept, ..c.layer() }, input)?,
            Some(pre) => {
                // The cache replaces the time padding: exactly pad_d.0 frames.
                let joined = Conv3dParams { pad_d: (0, 0), ..p.clone() };
                let layer = ConvLayer { params: &joined, transformed: kept, ..c.layer() };
                conv3d(&layer, ConvInput { prefix: Some(pre), ..input })?
            }
        };
        c.release();
        cache.state = if cache.carry {
            CacheState::Carry(causal_tail(x, norm, prev.as_ref(), keep)?)
        } else {
            CacheState::Ended
        };
        Ok(y)
    }
}

/// What a causal conv carries from one chunk of a clip to the next: the last time_pad frames
/// (pad_d.0 = dilation * (k_d - 1)) of its time-padded input, after any normalisation. Empty
/// before the first chunk. Also what the conv keeps for the rest of the decode: by default the
/// frames and the layer's Winograd weight transforms; a decode's last chunk of a clip keeps no
/// frames, and its last call no new transforms ([`ConvCache::last_chunk`]).
#[derive(Clone)]
pub struct ConvCache<T> {
    state: CacheState<T>,
    /// Carry this chunk's tail to a next chunk (false: the clip ends with this chunk).
    carry: bool,
    /// Keep the layer's Winograd weight transforms after this call (a later call uses them).
    keep_transforms: bool,
}

#[derive(Clone)]
enum CacheState<T> {
    /// Before the clip's first chunk.
    Empty,
    /// The frames in front of the next chunk.
    Carry(Tensor<T>),
    /// After a chunk declared the clip's last: a further chunk is an error.
    Ended,
}

impl<T> Default for ConvCache<T> {
    fn default() -> Self {
        ConvCache { state: CacheState::Empty, carry: true, keep_transforms: true }
    }
}

impl<T> ConvCache<T> {
    /// What the next call keeps: `last_of_clip` carries no frames out of it (the clip ends;
    /// a further chunk fails), `last_call` keeps no Winograd weight transforms that the layer
    /// does not hold already (no later call of the decode would use them). Both save memory:
    /// a single-batch clip then holds neither (the CogVideoX 1x16x3x30x45 decode: 1.2 GB of
    /// carried frames and 0.8 GB of transforms).
    pub fn last_chunk(&mut self, last_of_clip: bool, last_call: bool) {
        self.carry = !last_of_clip;
        self.keep_transforms = !last_call;
    }
}

impl<T: Float> ConvCache<T> {
    /// The carried frames, if any. (n, c, time_pad, h, w)
    pub fn frames(&self) -> Option<&Tensor<T>> {
        match &self.state {
            CacheState::Carry(t) => Some(t),
            _ => None,
        }
    }
}
