//! A SpatialNorm (+ SiLU) applied to a convolution's input rows as the convolution reads them,
//! so the normalised tensor is never stored. Read by the Winograd kernel and by the ops that
//! fill causal-conv caches.

use super::{Act, Float};
use std::marker::PhantomData;

/// A SpatialNorm fused into the convolution's input: every input element is read as
/// `act((x * a[c] + b[c]) * scale + shift)`, with scale/shift read through nearest index maps.
pub struct InputNorm<'a, T> {
    /// (a, b) per input channel.
    pub coeffs: &'a [(T, T)],
    pub modulation: Option<RowModulation<'a, T>>,
    pub act: Act,
}

/// scale, shift: (c, d', h', w'); input position (t, y, x) reads (tmap[t], hmap[y], wmap[x]).
pub struct RowModulation<'a, T> {
    pub scale: &'a [T],
    pub shift: &'a [T],
    pub dims: (usize, usize, usize),
    pub tmap: &'a [usize],
    pub hmap: &'a [usize],
    pub wmap: &'a [usize],
}

impl<'a, T: Float> InputNorm<'a, T> {
    /// dst = norm(src) for rows `y0 ..` of frame `f` of channel `c`; dst, src: (rows, w).
    pub fn rows(&self, dst: &mut [T], src: &[T], c: usize, f: usize, y0: usize, w: usize) {
        if w == 0 {
            return;
        }
        let mut scratch = RowScratch::default();
        for (r, (d, s)) in dst.chunks_exact_mut(w).zip(src.chunks_exact(w)).enumerate() {
            self.row(d, s, c, f, y0 + r, &mut scratch);
        }
    }

    /// dst = norm(src) for row `y` of frame `f` of channel `c`; `scratch` holds the gathered
    /// modulation row between calls (no allocation once it has grown).
    pub fn row(
        &self,
        dst: &mut [T],
        src: &[T],
        c: usize,
        f: usize,
        y: usize,
        scratch: &mut RowScratch<'a, T>,
    ) {
        dst.copy_from_slice(src);
        let (a, b) = self.coeffs[c];
        let Some(m) = &self.modulation else {
            T::norm_apply(dst, a, b, None, self.act);
            return;
        };
        let w = dst.len();
        let (md, mh, mw) = m.dims;
        let off = ((c * md + m.tmap[f]) * mh + m.hmap[y]) * mw;
        // Rows of one nearest-upsampled modulation row (2-8 in the decoders) and the strips'
        // overlapping rows gather the same values: 1.5-2 % of a CogVideoX decode (perf).
        let key = (m.scale.as_ptr() as usize, m.shift.as_ptr() as usize, off, w);
        let RowScratch { scale: sc, shift: sh, key: held, .. } = scratch;
        if *held != Some(key) {
            sc.resize(w, T::ZERO);
            sh.resize(w, T::ZERO);
            let (s_row, h_row) = (&m.scale[off..off + mw], &m.shift[off..off + mw]);
            for ((o1, o2), &xs) in sc.iter_mut().zip(sh.iter_mut()).zip(&m.wmap[..w]) {
                *o1 = s_row[xs];
                *o2 = h_row[xs];
            }
            *held = Some(key);
        }
        T::norm_apply(dst, a, b, Some((&sc[..w], &sh[..w])), self.act);
    }
}

/// The modulation row [`InputNorm::row`] gathered last, and where it came from: the scale and
/// shift tensors' addresses, the row's offset in them and its length. The scratch lives no
/// longer than the borrows `'a` of the norms it serves, so no address in a key can be freed
/// and reused for other values while the key can still match.
pub struct RowScratch<'a, T> {
    scale: Vec<T>,
    shift: Vec<T>,
    key: Option<(usize, usize, usize, usize)>,
    tensors: PhantomData<&'a [T]>,
}

impl<T> Default for RowScratch<'_, T> {
    fn default() -> Self {
        RowScratch { scale: Vec::new(), shift: Vec::new(), key: None, tensors: PhantomData }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::proptest_cases(32)))]
        /// Rows read in any order through one scratch (the gathered modulation row kept
        /// between calls) equal rows read each with a fresh one, bit for bit.
        #[test]
        fn a_kept_modulation_row_equals_a_fresh_gather(
            (c, d, h, w) in (1usize..4, 1usize..4, 1usize..9, 1usize..40),
            (md, mh, mw) in (1usize..3, 1usize..5, 1usize..9),
            reads in proptest::collection::vec((0usize..4, 0usize..4, 0usize..9), 1..60),
            seed in any::<u32>(),
        ) {
            let val = |i: usize, o: u32| (i as f32 * 0.37 + (seed ^ o) as f32 * 0.011).sin() * 2.0;
            let x: Vec<f32> = (0..c * d * h * w).map(|i| val(i, 1)).collect();
            let scale: Vec<f32> = (0..c * md * mh * mw).map(|i| val(i, 2)).collect();
            let shift: Vec<f32> = (0..c * md * mh * mw).map(|i| val(i, 3)).collect();
            let coeffs: Vec<(f32, f32)> = (0..c).map(|i| (val(i, 4), val(i, 5))).collect();
            // Nearest maps, as an upsampled modulation reads them.
            let tmap: Vec<usize> = (0..d).map(|t| t * md / d).collect();
            let hmap: Vec<usize> = (0..h).map(|y| y * mh / h).collect();
            let wmap: Vec<usize> = (0..w).map(|x| x * mw / w).collect();
            let modulation = RowModulation {
                scale: &scale, shift: &shift, dims: (md, mh, mw), tmap: &tmap, hmap: &hmap, wmap: &wmap,
            };
            let nm = InputNorm { coeffs: &coeffs, modulation: Some(modulation), act: Act::Silu };
            let mut kept = RowScratch::default();
            let (mut got, mut want) = (vec![0.0f32; w], vec![0.0f32; w]);
            for (ci, f, y) in reads {
                let (ci, f, y) = (ci % c, f % d, y % h);
                let src = &x[((ci * d + f) * h + y) * w..][..w];
                nm.row(&mut got, src, ci, f, y, &mut kept);
                nm.row(&mut want, src, ci, f, y, &mut RowScratch::default());
                prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "channel {} frame {} row {}", ci, f, y);
            }
        }
    }
}
