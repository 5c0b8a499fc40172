//! Convolution on tensors.

use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::kernels::bf16::round_to_bf16;
use crate::kernels::bf16_panels::Bf16Dot;
use crate::kernels::conv3d::{conv3d_tiled, pointwise_in_place, tile_cols};
use crate::kernels::params::{Conv3dParams, ConvAlgo, ConvCall};
use crate::kernels::scratch;
use crate::kernels::winograd::{
    WinogradOptions, conv3d_winograd, transform_weights, transform_weights_bf16, transformed_len,
    transformed_len_bf16,
};
use crate::kernels::winograd4::conv3d_winograd4;
use crate::ops::add_inplace;
use crate::ops::norm::NormPlan;
use crate::tensor::{Shape, Tensor};
use std::sync::OnceLock;

/// The output shape of `p` on input `x`, or a shape error naming `op`.
pub fn conv_out_shape(op: &'static str, x: Shape, p: &Conv3dParams) -> Result<Shape> {
    if x.c != p.c_in {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("(n, {}, d, h, w)", p.c_in),
            got: x.to_string(),
        });
    }
    let (d, h, w) = p.out_dims(x.d, x.h, x.w).ok_or_else(|| Error::ShapeMismatch {
        op,
        expected: format!("an input large enough for a {}x{}x{} kernel", p.k_d, p.k_h, p.k_w),
        got: x.to_string(),
    })?;
    let out = Shape::new(x.n, p.c_out, d, h, w);
    out.numel()?;
    Ok(out)
}

/// A convolution layer as the kernels take it: weights, bias and geometry, and the module
/// name used in shape errors.
pub struct ConvLayer<'a, T> {
    pub op: &'static str,
    pub weight: &'a [T], // (c_out, c_in, k_d, k_h, k_w)
    pub bias: &'a [T],   // (c_out,)
    pub params: &'a Conv3dParams,
    /// Where the layer keeps its Winograd weight transforms across calls (filled on first
    /// use); `None` transforms per call into reused scratch.
    pub transformed: Option<&'a OnceLock<Transformed<T>>>,
    /// The input is a nearest 2x upsampling in h and w ([`WinogradOptions::nearest_2x`]).
    pub nearest_2x: bool,
}

/// A layer's F(2x2, 3x3) weight transforms, in the layout of the kernel that made them.
pub struct Transformed<T> {
    /// bf16 channel-pair panels ([`transform_weights_bf16`], `--precision bf16`), else
    /// [`transform_weights`]' f32 layout.
    pub bf16_pairs: bool,
    pub u: Vec<T>,
}

impl<T: Float> Transformed<T> {
    fn new(weight: &[T], p: &Conv3dParams, bf16_pairs: bool) -> Self {
        let mut u = vec![T::ZERO; if bf16_pairs { transformed_len_bf16(p) } else { transformed_len::<T>(p) }];
        match bf16_pairs {
            true => transform_weights_bf16(&mut u, weight, p),
            false => transform_weights(&mut u, weight, p),
        }
        Transformed { bf16_pairs, u }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.u.as_slice())
    }
}

/// What one convolution call reads: the input, and what is fused around it.
pub struct ConvInput<'a, T> {
    /// x: (n, c_in, d, h, w)
    pub x: &'a Tensor<T>,
    /// A normalisation planned on x, applied on the fly as the convolution reads its input.
    pub norm: Option<&'a NormPlan<T>>,
    /// Accumulated into (the output's shape), so no separate output buffer is made.
    pub residual: Option<Tensor<T>>,
    /// Frames (n, c_in, d_p, h, w) in front of x, already in the convolution's input domain (a
    /// causal conv's carried cache); the time padding of the params applies to the joined clip.
    pub prefix: Option<&'a Tensor<T>>,
}

impl<'a, T> ConvInput<'a, T> {
    /// x alone: no norm, residual or prefix.
    pub fn plain(x: &'a Tensor<T>) -> Self {
        ConvInput { x, norm: None, residual: None, prefix: None }
    }
}

/// y = conv(prefix ++ norm(x)) + bias (+ residual). The algorithm is [`ConvAlgo::for_params`]'s
/// choice: Winograd (F(2x2, 3x3) or F(4x4, 3x3)) reads norm(x) on the fly and accumulates into
/// the residual in place; im2col normalises a copy first (only when there is a norm or a prefix).
/// -> (n, c_out, d', h', w')
pub fn conv3d<T: Float>(layer: &ConvLayer<'_, T>, input: ConvInput<'_, T>) -> Result<Tensor<T>> {
    let ConvInput { x, norm, residual, prefix } = input;
    let (op, p) = (layer.op, layer.params);
    let s = x.shape();
    let n_pre = match prefix {
        Some(pre) => {
            let ps = pre.shape();
            if (ps.n, ps.c, ps.h, ps.w) != (s.n, s.c, s.h, s.w) {
                return Err(Error::ShapeMismatch {
                    op,
                    expected: format!("a time prefix (n, c, d, h, w) matching the input {s}"),
                    got: ps.to_string(),
                });
            }
            ps.d
        }
        None => 0,
    };
    let joined = Shape { d: s.d + n_pre, ..s };
    let out_shape = conv_out_shape(op, joined, p)?;
    if let Some(n) = norm {
        x.expect_shape("fused norm input", n.shape())?;
    }
    let algo = ConvAlgo::for_params(p);
    let bf16 = crate::kernels::params::bf16_products();
    let dot = bf16_dot::<T>(layer.op)?;
    if dot.is_some() && p.has_3x3_taps() && algo != ConvAlgo::Winograd {
        // Its kernels are F(2x2, 3x3)'s: another algorithm would round as bf16-emulated.
        return Err(Error::Unsupported(format!(
            "{op}: the bf16 mode runs 3x3 convolutions with Winograd F(2x2, 3x3) only, not {}",
            algo.name()
        )));
    }
    if bf16 && algo == ConvAlgo::Winograd4 {
        return Err(Error::Unsupported(format!(
            "{op}: bf16 products with the F(4x4, 3x3) Winograd kernel (F(2x2, 3x3) and im2col have them)"
        )));
    }
    if algo == ConvAlgo::Im2col {
        let normed;
        let mut xn = match norm {
            Some(n) => {
                let mut t = x.clone();
                n.apply_inplace(&mut t)?;
                normed = t;
                &normed
            }
            None => x,
        };
        let joined_input;
        if let Some(pre) = prefix {
            joined_input = concat_time(pre, xn)?;
            xn = &joined_input;
        }
        let y = if bf16 {
            // The im2col columns are copies of input values (and zero padding): rounding the
            // input rounds the columns.
            let mut xr = xn.clone();
            round_to_bf16(xr.data_mut());
            let mut wr = layer.weight.to_vec();
            round_to_bf16(&mut wr);
            im2col_conv(&ConvLayer { weight: &wr, ..*layer }, &xr, out_shape)
        } else {
            im2col_conv(layer, xn, out_shape)
        };
        return match residual {
            Some(mut r) => {
                add_inplace(&mut r, &y?)?;
                Ok(r)
            }
            None => y,
        };
    }
    let accumulate = residual.is_some();
    let mut out = match residual {
        Some(r) => {
            r.expect_shape("residual", out_shape)?;
            r
        }
        None => Tensor::zeros(out_shape)?,
    };
    let pre = prefix.map(|pre| (pre, n_pre));
    winograd_into(layer, (algo, dot), WinogradInput { x, norm, prefix: pre }, &mut out, accumulate, 0);
    Ok(out)
}

/// conv(x) + bias written into frames `at ..` of `out`, for a plain input (no norm, residual or
/// prefix): F(2x2, 3x3) Winograd writes there directly (no output tensor of its own, no copy);
/// other algorithms convolve, then copy.
/// x: (n, c_in, d, h, w); out: (n, c_out, frames, h', w') with at + d' <= frames.
pub fn conv3d_into<T: Float>(
    layer: &ConvLayer<'_, T>,
    x: &Tensor<T>,
    out: &mut Tensor<T>,
    at: usize,
) -> Result<()> {
    let p = layer.params;
    let ys = conv_out_shape(layer.op, x.shape(), p)?;
    let os = out.shape();
    if (os.n, os.c, os.h, os.w) != (ys.n, ys.c, ys.h, ys.w) || at.checked_add(ys.d).is_none_or(|e| e > os.d) {
        return Err(Error::ShapeMismatch {
            op: layer.op,
            expected: format!("an output with room for {ys} at frame {at}"),
            got: os.to_string(),
        });
    }
    let algo = ConvAlgo::for_params(p);
    if algo != ConvAlgo::Winograd {
        let y = conv3d(layer, ConvInput::plain(x))?;
        return out.paste(&y, (at, 0, 0));
    }
    let dot = bf16_dot::<T>(layer.op)?;
    winograd_into(layer, (algo, dot), WinogradInput { x, norm: None, prefix: None }, out, false, at);
    Ok(())
}

/// The bf16 dot-product kernel the F(2x2, 3x3) convolutions use: `None` unless the bf16 mode
/// (`--precision bf16`, [`crate::kernels::params::bf16_native`]) is on; an error where movq
/// has no such kernel for this CPU or the decode is not in f32.
pub fn bf16_dot<T: Float>(op: &'static str) -> Result<Option<Bf16Dot>> {
    if !(crate::kernels::params::bf16_native() && crate::kernels::params::bf16_products()) {
        return Ok(None);
    }
    bf16_dot_available::<T>(op).map(Some)
}

/// The bf16 dot-product kernel for decodes in `T` on this CPU under the process's convolution
/// algorithm, or the error saying why not.
pub fn bf16_dot_available<T: Float>(op: &'static str) -> Result<Bf16Dot> {
    if T::NAME != "f32" {
        return Err(Error::Unsupported(format!("{op}: the bf16 mode computes in f32, not {}", T::NAME)));
    }
    let algo = crate::kernels::params::conv_algo();
    if algo != ConvAlgo::Winograd {
        return Err(Error::Unsupported(format!(
            "{op}: the bf16 mode runs 3x3 convolutions with Winograd F(2x2, 3x3) only, not {}",
            algo.name()
        )));
    }
    Bf16Dot::detect().ok_or_else(|| Error::Unsupported(format!("{op}: {}", bf16_unavailable())))
}

/// Why the bf16 mode cannot run on this CPU.
pub fn bf16_unavailable() -> String {
    if let Some(&(k, _)) = crate::kernels::bf16_panels::hardware_kernels().iter().find(|(_, ok)| !ok) {
        let feature = if cfg!(target_arch = "x86_64") { "avx512_bf16" } else { "FEAT_BF16" };
        return format!(
            "this CPU has bf16 dot products ({feature}), but movq's {} kernel did not reproduce its \
             plain twin ({}) on the self-check, so the bf16 mode is off here (please report the CPU \
             model; the bf16-emulated mode gives the bf16 operand rounding with f32 sums, at f32 speed)",
            k.name(),
            k.twin().name()
        );
    }
    let why = if cfg!(target_arch = "aarch64") {
        "the bf16 mode needs an ARM CPU with bf16 dot products (FEAT_BF16, BFDOT); this one has none \
         (the bf16-emulated mode gives its operand rounding with f32 sums, at f32 speed)"
    } else if cfg!(target_arch = "x86_64") {
        "the bf16 mode needs an x86 CPU with AVX-512 bf16 dot products (avx512_bf16, vdpbf16ps: \
         Zen 4 and later, Cooper Lake, Sapphire Rapids and later); this one has none (the \
         bf16-emulated mode gives its operand rounding with f32 sums, at f32 speed)"
    } else {
        "the bf16 mode runs on ARM CPUs with FEAT_BF16 and x86 CPUs with avx512_bf16 only (the \
         bf16-emulated mode gives its operand rounding with f32 sums, at f32 speed)"
    };
    why.to_string()
}

/// What [`winograd_into`] reads (shapes validated by the caller).
struct WinogradInput<'a, T> {
    x: &'a Tensor<T>,
    norm: Option<&'a NormPlan<T>>,
    /// The time prefix and its frame count.
    prefix: Option<(&'a Tensor<T>, usize)>,
}

/// The Winograd convolution (`algo`: F(2x2) or F(4x4)) of every sample into `out` (n, c_out,
/// frames, h', w') at frame `at` (F(4x4): the whole output only), added to it when `accumulate`.
fn winograd_into<T: Float>(
    layer: &ConvLayer<'_, T>,
    (algo, dot): (ConvAlgo, Option<Bf16Dot>),
    input: WinogradInput<'_, T>,
    out: &mut Tensor<T>,
    accumulate: bool,
    at: usize,
) {
    let (p, bf16) = (layer.params, crate::kernels::params::bf16_products());
    let WinogradInput { x, norm, prefix } = input;
    let (s, n_pre) = (x.shape(), prefix.map_or(0, |(_, n)| n));
    let (in_len, out_len) = (s.sample_len(), out.shape().sample_len());
    let pre_len = s.c * n_pre * s.h * s.w;
    // F(2x2, 3x3) weights transformed once per call (all samples) or once per layer; the
    // opt-in F(4x4, 3x3) transforms its own per call.
    let pairs = dot.is_some();
    let mut own = None;
    let per_call = || {
        let mut u = scratch::take(if pairs { transformed_len_bf16(p) } else { transformed_len::<T>(p) });
        match pairs {
            true => transform_weights_bf16(&mut u, layer.weight, p),
            false => transform_weights(&mut u, layer.weight, p),
        }
        if bf16 && !pairs {
            round_to_bf16(&mut u);
        }
        u
    };
    let u: Option<&[T]> = match (algo, layer.transformed) {
        (ConvAlgo::Winograd4, _) => None,
        // The layer's cache, in the layout of the kernel of its first call (a later call in
        // the other layout transforms its own). Emulated bf16 rounds per call: the cache holds
        // the f32 transforms.
        (_, Some(cell)) if !bf16 || pairs => {
            let t = cell.get_or_init(|| Transformed::new(layer.weight, p, pairs));
            Some(if t.bf16_pairs == pairs { &t.u[..] } else { &**own.insert(per_call()) })
        }
        _ => Some(&**own.insert(per_call())),
    };
    let frames = out.shape().d;
    for b in 0..s.n {
        let xb = &x.data()[b * in_len..(b + 1) * in_len];
        let ob = &mut out.data_mut()[b * out_len..(b + 1) * out_len];
        let opts = WinogradOptions {
            input_norm: norm.map(|n| n.input_norm(b)),
            accumulate,
            prefix: prefix.map(|(pre, n_pre)| (&pre.data()[b * pre_len..(b + 1) * pre_len], n_pre)),
            transformed_weights: u,
            bf16_products: bf16,
            bf16_dot: dot,
            out_frames: Some((frames, at)),
            nearest_2x: layer.nearest_2x,
        };
        let call = ConvCall { x: xb, dims: (s.d, s.h, s.w), weight: layer.weight, bias: layer.bias, p };
        if algo == ConvAlgo::Winograd4 {
            conv3d_winograd4(ob, &call, &opts);
        } else {
            conv3d_winograd(ob, &call, &opts);
        }
    }
}

/// y = conv(x) + bias, reusing x's memory when the conv is pointwise (1x1x1, no padding, unit
/// strides) with c_out <= c_in ([`pointwise_in_place`]): a resnet block's shortcut then needs
/// no second tensor beside its input. Bitwise the result of [`conv3d`] (the same gemm per
/// column block, for the decoders' layer shapes; gemm's small-matrix path, m and n <= 64, may
/// order the sums of tiny layers differently). With bf16 products the input is rounded in
/// place (it is consumed) and the weights in a copy, the operands [`conv3d`] rounds in copies
/// of both (a second and third input-sized tensor). Other convs take [`conv3d`].
/// x: (n, c_in, d, h, w) -> (n, c_out, d', h', w')
pub fn conv3d_owned<T: Float>(layer: &ConvLayer<'_, T>, x: Tensor<T>) -> Result<Tensor<T>> {
    let p = layer.params;
    if !p.is_pointwise() || p.c_out > p.c_in || p.c_out == 0 {
        return conv3d(layer, ConvInput::plain(&x));
    }
    let s = x.shape();
    let out_shape = conv_out_shape(layer.op, s, p)?;
    let len = s.frame_len() * s.d;
    let mut buf = x.into_vec();
    let rounded;
    let mut weight = layer.weight;
    if crate::kernels::params::bf16_products() {
        round_to_bf16(&mut buf);
        let mut w = weight.to_vec();
        round_to_bf16(&mut w);
        rounded = w;
        weight = &rounded;
    }
    pointwise_in_place(&mut buf, s.n, s.c, len, weight, layer.bias);
    buf.truncate(s.n * p.c_out * len);
    buf.shrink_to_fit();
    Tensor::from_vec(out_shape, buf)
}

/// The im2col convolution of x (n, c_in, d, h, w) into a new tensor of `out_shape`.
fn im2col_conv<T: Float>(layer: &ConvLayer<'_, T>, x: &Tensor<T>, out_shape: Shape) -> Result<Tensor<T>> {
    let s = x.shape();
    let mut out = Tensor::zeros(out_shape)?;
    let (in_len, out_len) = (s.sample_len(), out_shape.sample_len());
    let (d_out, h_out, w_out) = (out_shape.d, out_shape.h, out_shape.w);
    let cols = tile_cols(layer.params, std::mem::size_of::<T>(), d_out * h_out * w_out);
    for b in 0..s.n {
        let xb = &x.data()[b * in_len..(b + 1) * in_len];
        let ob = &mut out.data_mut()[b * out_len..(b + 1) * out_len];
        let call = ConvCall {
            x: xb,
            dims: (s.d, s.h, s.w),
            weight: layer.weight,
            bias: layer.bias,
            p: layer.params,
        };
        conv3d_tiled(ob, &call, cols);
    }
    Ok(out)
}

/// a ++ b along time. a: (n, c, d_a, h, w); b: (n, c, d_b, h, w) -> (n, c, d_a + d_b, h, w)
pub fn concat_time<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    let (sa, sb) = (a.shape(), b.shape());
    if (sa.n, sa.c, sa.h, sa.w) != (sb.n, sb.c, sb.h, sb.w) {
        return Err(Error::ShapeMismatch {
            op: "concat along time",
            expected: format!("(n, c, h, w) of {sa}"),
            got: sb.to_string(),
        });
    }
    let mut out = Tensor::zeros(Shape { d: sa.d + sb.d, ..sa })?;
    let (la, lb) = (sa.plane_len(), sb.plane_len());
    if la == 0 || lb == 0 {
        out.data_mut().copy_from_slice(if la == 0 { b.data() } else { a.data() });
        return Ok(out);
    }
    for ((o, pa), pb) in out.data_mut().chunks_mut(la + lb).zip(a.data().chunks(la)).zip(b.data().chunks(lb))
    {
        o[..la].copy_from_slice(pa);
        o[la..].copy_from_slice(pb);
    }
    Ok(out)
}

/// The last `keep` frames of the clip a causal "first" conv reads: `prefix` (or, without one,
/// `keep` copies of norm(x)'s frame 0) ++ norm(x). This is the cache the conv carries to the
/// next chunk (diffusers keeps the last k_d - 1 frames of its padded input).
/// x: (n, c, d, h, w); prefix: (n, c, d_p, h, w) -> (n, c, keep, h, w)
pub fn causal_tail<T: Float>(
    x: &Tensor<T>,
    norm: Option<&NormPlan<T>>,
    prefix: Option<&Tensor<T>>,
    keep: usize,
) -> Result<Tensor<T>> {
    let s = x.shape();
    if s.d == 0 {
        return Err(Error::ShapeMismatch {
            op: "causal conv cache",
            expected: "frames".into(),
            got: s.to_string(),
        });
    }
    if let Some(n) = norm {
        x.expect_shape("fused norm input", n.shape())?;
    }
    let n_pre = prefix.map_or(keep, |p| p.shape().d);
    let total = n_pre + s.d;
    let keep = keep.min(total);
    let mut out = Tensor::zeros(Shape { d: keep, ..s })?;
    let fl = s.frame_len();
    let out_plane = keep * fl;
    for (idx, o) in out.data_mut().chunks_mut(out_plane.max(1)).enumerate().take(s.n * s.c) {
        let (b, c) = (idx / s.c, idx % s.c);
        for (k, dst) in o.chunks_mut(fl.max(1)).enumerate() {
            let v = total - keep + k;
            match prefix {
                Some(pre) if v < n_pre => {
                    let off = ((b * s.c + c) * n_pre + v) * fl;
                    dst.copy_from_slice(&pre.data()[off..off + fl]);
                }
                _ => {
                    let f = v.saturating_sub(n_pre); // replicated frames read frame 0
                    let src = &x.data()[((b * s.c + c) * s.d + f) * fl..][..fl];
                    match norm {
                        Some(n) => n.input_norm(b).rows(dst, src, c, f, 0, s.w),
                        None => dst.copy_from_slice(src),
                    }
                }
            }
        }
    }
    Ok(out)
}
