//! GroupNorm with optional SpatialNorm modulation and SiLU, fused into one in-place pass.

use super::resample::IndexMaps;
use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::kernels::group_norm::{affine_coeffs, group_stats};
use crate::kernels::resample::gather_plane;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// GroupNorm geometry: `groups` groups, `eps` inside the square root.
#[derive(Clone, Copy, Debug)]
pub struct GroupNormParams {
    pub groups: usize,
    pub eps: f64,
}

/// The per-voxel scale and shift that follow the normalisation (SpatialNorm3D's
/// `norm(f) * conv_y(zq) + conv_b(zq)`).
pub enum Modulation<'a, T> {
    None,
    /// scale, shift: (n, c, d, h, w), the shape of x.
    Full {
        scale: &'a Tensor<T>,
        shift: &'a Tensor<T>,
    },
    /// scale, shift: (n, c, d', h', w') at another resolution, resized to x by `maps`
    /// (exact: the 1x1x1 convs that produce them commute with nearest resizing).
    Gather {
        scale: &'a Tensor<T>,
        shift: &'a Tensor<T>,
        maps: &'a IndexMaps,
    },
}

/// In place: x = silu?((group_norm(x) * gamma + beta) * scale + shift).
/// x: (n, c, d, h, w); gamma, beta: (c,); statistics per (sample, group) in f64.
pub fn group_norm_inplace<T: Float>(
    x: &mut Tensor<T>,
    gamma: &[T],
    beta: &[T],
    p: GroupNormParams,
    modulation: Modulation<'_, T>,
    silu: bool,
) -> Result<()> {
    let s = x.shape();
    if p.groups == 0 || s.c % p.groups != 0 || gamma.len() != s.c || beta.len() != s.c {
        return Err(Error::ShapeMismatch {
            op: "GroupNorm",
            expected: format!(
                "channels divisible by {} groups, matching affine of {}",
                p.groups,
                gamma.len()
            ),
            got: s.to_string(),
        });
    }
    match &modulation {
        Modulation::None => {}
        Modulation::Full { scale, shift } => {
            scale.expect_shape("SpatialNorm3D scale", s)?;
            shift.expect_shape("SpatialNorm3D shift", s)?;
        }
        Modulation::Gather { scale, shift, maps } => {
            let ss = scale.shape();
            shift.expect_shape("SpatialNorm3D shift", ss)?;
            let bad_map = |m: &[usize], n: usize| m.iter().any(|&i| i >= n);
            if ss.n != s.n
                || ss.c != s.c
                || maps.dims() != (s.d, s.h, s.w)
                || bad_map(&maps.t, ss.d)
                || bad_map(&maps.h, ss.h)
                || bad_map(&maps.w, ss.w)
            {
                return Err(Error::ShapeMismatch {
                    op: "SpatialNorm3D",
                    expected: format!("modulation resizable to {s}"),
                    got: ss.to_string(),
                });
            }
        }
    }
    let plane = s.plane_len();
    if plane == 0 {
        return Ok(());
    }
    let cpg = s.c / p.groups;
    let stats: Vec<(f64, f64)> = x.data().par_chunks(cpg * plane).map(group_stats).collect();
    let c = s.c;
    x.data_mut().par_chunks_mut(plane).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(sc_buf, sh_buf), (idx, buf)| {
            let (b, ch) = (idx / c, idx % c);
            let (mean, var) = stats[b * p.groups + ch / cpg];
            let (a, bb) = affine_coeffs(mean, var, p.eps, gamma[ch], beta[ch]);
            match &modulation {
                Modulation::None => T::norm_apply(buf, a, bb, None, silu),
                Modulation::Full { scale, shift } => {
                    let r = idx * plane..(idx + 1) * plane;
                    T::norm_apply(buf, a, bb, Some((&scale.data()[r.clone()], &shift.data()[r])), silu)
                }
                Modulation::Gather { scale, shift, maps } => {
                    let ss = scale.shape();
                    let src_plane = ss.plane_len();
                    let r = idx * src_plane..(idx + 1) * src_plane;
                    sc_buf.resize(plane, T::ZERO);
                    sh_buf.resize(plane, T::ZERO);
                    let dims = (ss.d, ss.h, ss.w);
                    gather_plane(sc_buf, &scale.data()[r.clone()], dims, &maps.t, &maps.h, &maps.w);
                    gather_plane(sh_buf, &shift.data()[r], dims, &maps.t, &maps.h, &maps.w);
                    T::norm_apply(buf, a, bb, Some((sc_buf, sh_buf)), silu)
                }
            }
        },
    );
    Ok(())
}
