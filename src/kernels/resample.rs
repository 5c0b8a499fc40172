//! Nearest-neighbour index rules and the gather that applies them.

use super::Float;
use rayon::prelude::*;

/// Source index of output index `d` for PyTorch's legacy `mode="nearest"` resize of an axis
/// from `n_in` to `n_out`: identity when equal, `d >> 1` for exact doubling, else
/// `min(floor(f32(d) * f32(n_in / n_out)), n_in - 1)` with the ratio in float32 (spec 1.2).
pub fn nearest_index(d: usize, n_in: usize, n_out: usize) -> usize {
    if n_out == n_in {
        d
    } else if n_out == 2 * n_in {
        d >> 1
    } else {
        let scale = n_in as f32 / n_out as f32;
        ((d as f32 * scale).floor() as usize).min(n_in - 1)
    }
}

/// The index map of a whole axis.
pub fn nearest_map(n_in: usize, n_out: usize) -> Vec<usize> {
    (0..n_out).map(|d| nearest_index(d, n_in, n_out)).collect()
}

/// out[c, t, y, x] = src[c, tmap[t], hmap[y], wmap[x]] for one sample.
/// out: (c, tmap.len(), hmap.len(), wmap.len()); src: (c, d, h, w) with `dims = (d, h, w)`.
pub fn gather<T: Float>(
    out: &mut [T],
    src: &[T],
    dims: (usize, usize, usize),
    tmap: &[usize],
    hmap: &[usize],
    wmap: &[usize],
) {
    let plane_out = tmap.len() * hmap.len() * wmap.len();
    let plane_in = dims.0 * dims.1 * dims.2;
    if plane_out == 0 {
        return;
    }
    out.par_chunks_mut(plane_out).zip(src.par_chunks(plane_in)).for_each(|(o, s)| {
        gather_plane(o, s, dims, tmap, hmap, wmap);
    });
}

/// One channel of [`gather`]: out (tmap.len(), hmap.len(), wmap.len()); src (d, h, w).
pub fn gather_plane<T: Float>(
    out: &mut [T],
    src: &[T],
    dims: (usize, usize, usize),
    tmap: &[usize],
    hmap: &[usize],
    wmap: &[usize],
) {
    let (_, h, w) = dims;
    let w_out = wmap.len();
    // The decoders' upsamplers double w exactly (wmap = x >> 1): a vector duplication.
    let doubling = w_out == 2 * w && wmap.iter().enumerate().all(|(x, &s)| s == x >> 1);
    let mut rows = out.chunks_exact_mut(w_out);
    for &ts in tmap {
        for &hs in hmap {
            let row = rows.next().expect("out has tmap*hmap rows");
            let s = &src[(ts * h + hs) * w..][..w];
            if doubling {
                T::double_row(row, s);
            } else {
                for (o, &ws) in row.iter_mut().zip(wmap) {
                    *o = s[ws];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_index_legacy_rule() {
        // 5 -> 8: legacy nearest gives 0,0,1,1,2,3,3,4 (nearest-exact would give 0,0,1,2,2,3,4,4).
        assert_eq!(nearest_map(5, 8), vec![0, 0, 1, 1, 2, 3, 3, 4]);
        // T 3 -> 12 over the whole clip.
        assert_eq!(nearest_map(3, 12), vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(nearest_map(4, 8), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(nearest_map(1, 3), vec![0, 0, 0]);
    }

    #[test]
    fn nearest_index_float32_corner_case() {
        // n_in=2, n_out=82: f32(41) * f32(2/82) rounds to just below 1, so PyTorch reads source
        // 0 where exact rational arithmetic would read 1 (spec 1.2). Only d=41 differs.
        let m = nearest_map(2, 82);
        let exact: Vec<usize> = (0..82).map(|d| d * 2 / 82).collect();
        assert_eq!(m[41], 0);
        assert_eq!(exact[41], 1);
        let differing: Vec<usize> = (0..82).filter(|&d| m[d] != exact[d]).collect();
        assert_eq!(differing, vec![41]);
    }
}
