//! Joining decoded tiles as diffusers `AutoencoderKLCogVideoX.tiled_decode` does (spec 11.3):
//! each tile blended linearly into its upper and left neighbours (in place, row-major, so later
//! tiles blend with already-blended ones), then cropped and joined.

use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::tensor::{Region, Shape, Tensor};

/// Blends the last rows of `above` into the first rows of `tile`, in place:
/// tile[y] = above[H_a - e + y] * (1 - y / e) + tile[y] * (y / e), e = min(H_a, H_t, extent).
/// above, tile: (n, c, d, h_*, w) with equal n, c, d, w.
pub fn blend_v<T: Float>(above: &Tensor<T>, tile: &mut Tensor<T>, extent: usize) -> Result<()> {
    let (a, b) = (above.shape(), tile.shape());
    if (a.n, a.c, a.d, a.w) != (b.n, b.c, b.d, b.w) {
        return Err(Error::ShapeMismatch {
            op: "tile blend (vertical)",
            expected: a.to_string(),
            got: b.to_string(),
        });
    }
    let e = extent.min(a.h).min(b.h);
    let w = b.w;
    for ncd in 0..b.n * b.c * b.d {
        for y in 0..e {
            let (wa, wb) = blend_weights::<T>(y, e);
            let src = &above.data()[(ncd * a.h + a.h - e + y) * w..][..w];
            let dst = &mut tile.data_mut()[(ncd * b.h + y) * w..][..w];
            for (o, &s) in dst.iter_mut().zip(src) {
                *o = s * wa + *o * wb;
            }
        }
    }
    Ok(())
}

/// [`blend_v`] along columns, with the neighbour to the left.
pub fn blend_h<T: Float>(left: &Tensor<T>, tile: &mut Tensor<T>, extent: usize) -> Result<()> {
    let (a, b) = (left.shape(), tile.shape());
    if (a.n, a.c, a.d, a.h) != (b.n, b.c, b.d, b.h) {
        return Err(Error::ShapeMismatch {
            op: "tile blend (horizontal)",
            expected: a.to_string(),
            got: b.to_string(),
        });
    }
    let e = extent.min(a.w).min(b.w);
    let weights: Vec<(T, T)> = (0..e).map(|x| blend_weights::<T>(x, e)).collect();
    for row in 0..b.n * b.c * b.d * b.h {
        let src = &left.data()[row * a.w + a.w - e..][..e];
        let dst = &mut tile.data_mut()[row * b.w..][..e];
        for ((o, &s), &(wa, wb)) in dst.iter_mut().zip(src).zip(&weights) {
            *o = s * wa + *o * wb;
        }
    }
    Ok(())
}

/// The two weights of position `i` of an `e`-wide blend, computed in f64 and rounded once
/// (upstream multiplies by the Python floats 1 - i/e and i/e).
fn blend_weights<T: Float>(i: usize, e: usize) -> (T, T) {
    let r = i as f64 / e as f64;
    (T::from_f64(1.0 - r), T::from_f64(r))
}

/// Blends a grid of decoded tiles (row-major, `tiles[i][j]`) in place over `blend` (rows,
/// columns) and joins the tiles cropped to `keep` (rows, columns) into one tensor. tiles[i][j]: (n, c, d, h_ij, w_ij)
pub fn blend_tiles<T: Float>(
    mut tiles: Vec<Vec<Tensor<T>>>,
    blend: (usize, usize),
    keep: (usize, usize),
) -> Result<Tensor<T>> {
    let rows = tiles.len();
    let cols = tiles.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 || tiles.iter().any(|r| r.len() != cols) {
        return Err(Error::ShapeMismatch {
            op: "tile grid",
            expected: "a full grid".into(),
            got: format!("{rows} rows"),
        });
    }
    for i in 0..rows {
        for j in 0..cols {
            if i > 0 {
                let (up, cur) = tiles.split_at_mut(i);
                blend_v(&up[i - 1][j], &mut cur[0][j], blend.0)?;
            }
            if j > 0 {
                let (left, cur) = tiles[i].split_at_mut(j);
                blend_h(&left[j - 1], &mut cur[0], blend.1)?;
            }
        }
    }
    let kept = |s: Shape| (s.h.min(keep.0), s.w.min(keep.1));
    let height: usize = tiles.iter().map(|r| kept(r[0].shape()).0).sum();
    let width: usize = tiles[0].iter().map(|t| kept(t.shape()).1).sum();
    let s0 = tiles[0][0].shape();
    let mut out = Tensor::zeros(Shape { h: height, w: width, ..s0 })?;
    let mut y0 = 0;
    for row in &tiles {
        let mut x0 = 0;
        let row_h = kept(row[0].shape()).0;
        for t in row {
            let (kh, kw) = kept(t.shape());
            if kh != row_h {
                return Err(Error::ShapeMismatch {
                    op: "tile grid",
                    expected: format!("{row_h} rows in every tile of a grid row"),
                    got: t.shape().to_string(),
                });
            }
            let s = t.shape();
            out.paste(&t.crop(&Region { d: 0..s.d, h: 0..kh, w: 0..kw })?, (0, y0, x0))?;
            x0 += kw;
        }
        y0 += row_h;
    }
    Ok(out)
}
