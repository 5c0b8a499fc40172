//! GroupNorm with optional SpatialNorm modulation and SiLU: statistics first ([`NormPlan`]),
//! then either one fused in-place pass or application on the fly inside a convolution.

use super::resample::IndexMaps;
use crate::error::{Error, Result};
use crate::kernels::group_norm::{affine_coeffs, group_stats};
use crate::kernels::input_norm::{InputNorm, RowModulation};
use crate::kernels::resample::gather_plane;
use crate::kernels::{Act, Float};
use crate::tensor::{Shape, Tensor};
use rayon::prelude::*;

/// GroupNorm geometry: `groups` groups, `eps` inside the square root.
#[derive(Clone, Copy, Debug)]
pub struct GroupNormParams {
    pub groups: usize,
    pub eps: f64,
}

/// The per-voxel scale and shift that follow the normalisation (SpatialNorm3D's
/// `norm(f) * conv_y(zq) + conv_b(zq)`).
pub enum Modulation<T> {
    None,
    /// scale, shift: (n, c, d, h, w), the shape of x.
    Full {
        scale: Tensor<T>,
        shift: Tensor<T>,
    },
    /// scale, shift: (n, c, d', h', w') at another resolution, resized to x by `maps`
    /// (exact: the 1x1x1 convs that produce them commute with nearest resizing).
    Gather {
        scale: Tensor<T>,
        shift: Tensor<T>,
        maps: IndexMaps,
    },
}

/// A normalisation ready to apply to one tensor shape: per (sample, channel) coefficients
/// `y = x * a + b` (from f64 group statistics), the modulation, and whether SiLU follows.
pub struct NormPlan<T> {
    shape: Shape,
    coeffs: Vec<(T, T)>, // (n, c)
    modulation: Modulation<T>,
    identity: IndexMaps, // maps of a full-resolution modulation
    act: Act,
}

impl<T: Float> NormPlan<T> {
    /// Computes the group statistics of x: (n, c, d, h, w); affine = (gamma, beta): (c,), (c,).
    pub fn new(
        x: &Tensor<T>,
        affine: (&[T], &[T]),
        p: GroupNormParams,
        modulation: Modulation<T>,
        act: Act,
    ) -> Result<Self> {
        let (gamma, beta) = affine;
        let s = x.shape();
        if p.groups == 0 || !s.c.is_multiple_of(p.groups) {
            return Err(Error::GroupCount {
                place: format!("GroupNorm of x {s}"),
                channels: s.c,
                groups: p.groups,
            });
        }
        if gamma.len() != s.c || beta.len() != s.c {
            return Err(Error::ShapeMismatch {
                op: "GroupNorm",
                expected: format!("affine parameters of {} channels", s.c),
                got: format!("{} and {}", gamma.len(), beta.len()),
            });
        }
        check_modulation(&modulation, s)?;
        let plane = s.plane_len();
        let cpg = s.c / p.groups;
        let stats: Vec<(f64, f64)> = if plane == 0 {
            vec![(0.0, 0.0); s.n * p.groups]
        } else {
            x.data().par_chunks(cpg * plane).map(group_stats).collect()
        };
        let coeffs = (0..s.n * s.c)
            .map(|idx| {
                let (b, ch) = (idx / s.c, idx % s.c);
                let (mean, var) = stats[b * p.groups + ch / cpg];
                affine_coeffs(mean, var, p.eps, gamma[ch], beta[ch])
            })
            .collect();
        let identity = IndexMaps { t: (0..s.d).collect(), h: (0..s.h).collect(), w: (0..s.w).collect() };
        Ok(NormPlan { shape: s, coeffs, modulation, identity, act })
    }

    /// The shape the plan was computed for.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// In place: x = act((x * a + b) * scale + shift). x must be the planned tensor's shape.
    pub fn apply_inplace(&self, x: &mut Tensor<T>) -> Result<()> {
        x.expect_shape("GroupNorm apply", self.shape)?;
        let plane = self.shape.plane_len();
        if plane == 0 {
            return Ok(());
        }
        let c = self.shape.c;
        x.data_mut().par_chunks_mut(plane).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(sc_buf, sh_buf), (idx, buf)| {
                let (a, b) = self.coeffs[idx];
                match self.sample_modulation(idx / c) {
                    None => T::norm_apply(buf, a, b, None, self.act),
                    Some(m) => {
                        let ch = idx % c;
                        let src_plane = m.dims.0 * m.dims.1 * m.dims.2;
                        sc_buf.resize(plane, T::ZERO);
                        sh_buf.resize(plane, T::ZERO);
                        let r = ch * src_plane..(ch + 1) * src_plane;
                        gather_plane(sc_buf, &m.scale[r.clone()], m.dims, m.tmap, m.hmap, m.wmap);
                        gather_plane(sh_buf, &m.shift[r], m.dims, m.tmap, m.hmap, m.wmap);
                        T::norm_apply(buf, a, b, Some((sc_buf, sh_buf)), self.act)
                    }
                }
            },
        );
        Ok(())
    }

    /// The modulation of sample `b` as kernel-level row sources.
    fn sample_modulation(&self, b: usize) -> Option<RowModulation<'_, T>> {
        let (scale, shift, maps) = match &self.modulation {
            Modulation::None => return None,
            Modulation::Full { scale, shift } => (scale, shift, &self.identity),
            Modulation::Gather { scale, shift, maps } => (scale, shift, maps),
        };
        let ss = scale.shape();
        let r = b * ss.sample_len()..(b + 1) * ss.sample_len();
        Some(RowModulation {
            scale: &scale.data()[r.clone()],
            shift: &shift.data()[r],
            dims: (ss.d, ss.h, ss.w),
            tmap: &maps.t,
            hmap: &maps.h,
            wmap: &maps.w,
        })
    }

    /// The plan for sample `b`, to be applied on the fly by a convolution kernel.
    pub fn input_norm(&self, b: usize) -> InputNorm<'_, T> {
        let c = self.shape.c;
        InputNorm {
            coeffs: &self.coeffs[b * c..(b + 1) * c],
            modulation: self.sample_modulation(b),
            act: self.act,
        }
    }
}

fn check_modulation<T: Float>(modulation: &Modulation<T>, s: Shape) -> Result<()> {
    match modulation {
        Modulation::None => Ok(()),
        Modulation::Full { scale, shift } => {
            scale.expect_shape("SpatialNorm3D scale", s)?;
            shift.expect_shape("SpatialNorm3D shift", s)
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
            Ok(())
        }
    }
}
