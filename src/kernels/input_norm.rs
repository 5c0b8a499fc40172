//! A SpatialNorm (+ SiLU) applied to a convolution's input rows as the convolution reads them,
//! so the normalised tensor is never stored. Read by the Winograd kernel and by the ops that
//! fill causal-conv caches.

use super::{Act, Float};

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

impl<T: Float> InputNorm<'_, T> {
    /// dst = norm(src) for rows `y0 ..` of frame `f` of channel `c`; dst, src: (rows, w).
    pub fn rows(&self, dst: &mut [T], src: &[T], c: usize, f: usize, y0: usize, w: usize) {
        if w == 0 {
            return;
        }
        let mut scratch = (Vec::new(), Vec::new());
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
        scratch: &mut (Vec<T>, Vec<T>),
    ) {
        dst.copy_from_slice(src);
        let (a, b) = self.coeffs[c];
        let Some(m) = &self.modulation else {
            T::norm_apply(dst, a, b, None, self.act);
            return;
        };
        let w = dst.len();
        let (md, mh, mw) = m.dims;
        let (sc, sh) = scratch;
        sc.resize(w, T::ZERO);
        sh.resize(w, T::ZERO);
        let off = ((c * md + m.tmap[f]) * mh + m.hmap[y]) * mw;
        let (s_row, h_row) = (&m.scale[off..off + mw], &m.shift[off..off + mw]);
        for ((o1, o2), &xs) in sc.iter_mut().zip(sh.iter_mut()).zip(&m.wmap[..w]) {
            *o1 = s_row[xs];
            *o2 = h_row[xs];
        }
        T::norm_apply(dst, a, b, Some((&sc[..w], &sh[..w])), self.act);
    }
}
