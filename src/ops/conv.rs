//! Convolution on tensors.

use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::kernels::conv3d::{Conv3dParams, ConvAlgo, conv_algo, conv3d as conv3d_kernel};
use crate::kernels::winograd::{WinogradOptions, conv3d_winograd, supports as winograd_supports};
use crate::ops::add_inplace;
use crate::ops::norm::NormPlan;
use crate::tensor::{Shape, Tensor};

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

/// y = conv(x) + bias.
/// x: (n, c_in, d, h, w); weight: (c_out, c_in, k_d, k_h, k_w); bias: (c_out,) -> (n, c_out, d', h', w')
pub fn conv3d<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    weight: &[T],
    bias: &[T],
    p: &Conv3dParams,
) -> Result<Tensor<T>> {
    let s = x.shape();
    let out_shape = conv_out_shape(op, s, p)?;
    let mut out = Tensor::zeros(out_shape)?;
    let (in_len, out_len) = (s.sample_len(), out_shape.sample_len());
    for b in 0..s.n {
        let xb = &x.data()[b * in_len..(b + 1) * in_len];
        let ob = &mut out.data_mut()[b * out_len..(b + 1) * out_len];
        conv3d_kernel(ob, xb, weight, bias, p, (s.d, s.h, s.w));
    }
    Ok(out)
}

/// y = conv(norm(x)) + bias (+ residual): the normalisation `norm` (planned on x) is applied
/// on the fly while the convolution reads its input, and `residual` (the output's shape) is
/// accumulated into, so neither norm(x) nor a separate output buffer is materialised. Falls
/// back to normalise-then-convolve when the fused kernel does not apply.
pub fn conv3d_fused<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    weight: &[T],
    bias: &[T],
    p: &Conv3dParams,
    norm: Option<&NormPlan<T>>,
    residual: Option<Tensor<T>>,
) -> Result<Tensor<T>> {
    let s = x.shape();
    let out_shape = conv_out_shape(op, s, p)?;
    if let Some(n) = norm {
        x.expect_shape("fused norm input", n.shape())?;
    }
    if conv_algo() != ConvAlgo::Winograd || !winograd_supports(p) {
        let y = match norm {
            Some(n) => {
                let mut xn = x.clone();
                n.apply_inplace(&mut xn)?;
                conv3d(op, &xn, weight, bias, p)?
            }
            None => conv3d(op, x, weight, bias, p)?,
        };
        return match residual {
            Some(mut r) => {
                add_inplace(&mut r, &y)?;
                Ok(r)
            }
            None => Ok(y),
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
    let (in_len, out_len) = (s.sample_len(), out_shape.sample_len());
    for b in 0..s.n {
        let xb = &x.data()[b * in_len..(b + 1) * in_len];
        let ob = &mut out.data_mut()[b * out_len..(b + 1) * out_len];
        let opts = WinogradOptions { input_norm: norm.map(|n| n.input_norm(b)), accumulate };
        conv3d_winograd(ob, xb, weight, bias, p, (s.d, s.h, s.w), &opts);
    }
    Ok(out)
}
