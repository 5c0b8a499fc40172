//! Tiled decoding as diffusers `AutoencoderKLCogVideoX.tiled_decode` does it after
//! `enable_tiling()` (spec 11.3): overlapping latent tiles, each decoded chunked with its own
//! conv caches, blended linearly into their upper and left neighbours (in place, row-major, so
//! later tiles blend with already-blended ones), cropped and joined.

use super::chunked::{DecodeMode, Ticker};
use super::decoder::Decoder;
use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::tensor::{Region, Shape, Tensor};
use std::ops::Range;

/// Tile geometry. Latent sizes for cutting z, output-pixel sizes for blending and cropping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Latent tile (height, width).
    pub tile_latent: (usize, usize),
    /// Latent distance between tile origins (height, width).
    pub stride_latent: (usize, usize),
    /// Output rows / columns blended with the neighbour above / to the left.
    pub blend: (usize, usize),
    /// Output rows / columns kept of each tile.
    pub keep: (usize, usize),
}

impl TileConfig {
    /// diffusers' defaults for a model whose `sample_height` x `sample_width` is `sample` and
    /// whose decoder upsamples space by `scale`: tiles of half the sample size, overlap factors
    /// 1/6 (height) and 1/5 (width), with Python's int() truncations. For CogVideoX (480 x 720,
    /// scale 8): latent tiles 30 x 45, strides 25 x 36, blends 40 x 72 px, kept 200 x 288 px.
    pub fn diffusers(sample: (usize, usize), scale: usize) -> Result<Self> {
        let (sh, sw) = (sample.0 / 2, sample.1 / 2);
        let (fh, fw) = (1.0f64 / 6.0, 1.0f64 / 5.0);
        let (th, tw) = (sh / scale.max(1), sw / scale.max(1));
        let tc = TileConfig {
            tile_latent: (th, tw),
            stride_latent: ((th as f64 * (1.0 - fh)) as usize, (tw as f64 * (1.0 - fw)) as usize),
            blend: ((sh as f64 * fh) as usize, (sw as f64 * fw) as usize),
            keep: (0, 0),
        };
        let tc = TileConfig { keep: (sh - tc.blend.0, sw - tc.blend.1), ..tc };
        tc.validate()?;
        Ok(tc)
    }

    /// True if a latent of `h` x `w` is cut into tiles (else decoded untiled, as upstream).
    pub fn splits(&self, h: usize, w: usize) -> bool {
        h > self.tile_latent.0 || w > self.tile_latent.1
    }

    /// Latent tile origins and extents along one axis of `n` latent pixels.
    fn spans(n: usize, tile: usize, stride: usize) -> impl Iterator<Item = Range<usize>> {
        (0..n).step_by(stride).map(move |i| i..(i + tile).min(n))
    }

    /// The latent (rows, columns) of every tile of an `h` x `w` latent, row-major.
    pub fn tiles(&self, h: usize, w: usize) -> Vec<(Range<usize>, Range<usize>)> {
        Self::spans(h, self.tile_latent.0, self.stride_latent.0)
            .flat_map(|rh| {
                Self::spans(w, self.tile_latent.1, self.stride_latent.1).map(move |rw| (rh.clone(), rw))
            })
            .collect()
    }

    /// Output (height, width) of the tiled decode of an `h` x `w` latent by a decoder that
    /// upsamples space by `scale`.
    pub fn output_size(&self, h: usize, w: usize, scale: usize) -> (usize, usize) {
        if !self.splits(h, w) {
            return (h * scale, w * scale);
        }
        let sum = |n: usize, tile: usize, stride: usize, keep: usize| {
            Self::spans(n, tile, stride).map(|r| (r.len() * scale).min(keep)).sum()
        };
        (
            sum(h, self.tile_latent.0, self.stride_latent.0, self.keep.0),
            sum(w, self.tile_latent.1, self.stride_latent.1, self.keep.1),
        )
    }

    /// Rejects geometries that would loop forever or drop pixels.
    pub fn validate(&self) -> Result<()> {
        let (th, tw) = self.tile_latent;
        let (sh, sw) = self.stride_latent;
        if th == 0 || tw == 0 || sh == 0 || sw == 0 || self.keep.0 == 0 || self.keep.1 == 0 {
            return Err(Error::InvalidConfig(format!(
                "tile geometry with a zero size: latent tiles {th} x {tw}, strides {sh} x {sw}, {} x {} output pixels kept per tile",
                self.keep.0, self.keep.1
            )));
        }
        Ok(())
    }
}

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

/// Blends a grid of decoded tiles (row-major, `tiles[i][j]`) in place and joins the cropped
/// tiles into one tensor. tiles[i][j]: (n, c, d, h_ij, w_ij)
pub fn blend_tiles<T: Float>(mut tiles: Vec<Vec<Tensor<T>>>, tc: &TileConfig) -> Result<Tensor<T>> {
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
                blend_v(&up[i - 1][j], &mut cur[0][j], tc.blend.0)?;
            }
            if j > 0 {
                let (left, cur) = tiles[i].split_at_mut(j);
                blend_h(&left[j - 1], &mut cur[0], tc.blend.1)?;
            }
        }
    }
    let kept = |s: Shape| (s.h.min(tc.keep.0), s.w.min(tc.keep.1));
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

impl<T: Float> Decoder<T> {
    /// The tiled decode of z: plain chunked decoding when z fits in one tile (as upstream).
    /// z: (b, c, t, h, w) -> (b, out_ch, t', H, W)
    pub fn decode_tiled(&self, z: &Tensor<T>, tc: &TileConfig) -> Result<Tensor<T>> {
        self.decode(z, &DecodeMode::Tiled(tc.clone()))
    }

    pub(crate) fn decode_tiled_with(
        &self,
        z: &Tensor<T>,
        tc: &TileConfig,
        tick: &mut Ticker<'_>,
    ) -> Result<Tensor<T>> {
        tc.validate()?;
        let s = z.shape();
        let chunked = |z: &Tensor<T>, tick: &mut Ticker<'_>| -> Result<Tensor<T>> {
            let mut out = Tensor::zeros(self.decoded_shape(z.shape(), &DecodeMode::Chunked)?)?;
            self.decode_chunked(z, tick, |first, frames| out.paste(&frames, (first, 0, 0)))?;
            Ok(out)
        };
        if !tc.splits(s.h, s.w) {
            return chunked(z, tick);
        }
        let mut tiles = Vec::new();
        for rh in TileConfig::spans(s.h, tc.tile_latent.0, tc.stride_latent.0) {
            let mut row = Vec::new();
            for rw in TileConfig::spans(s.w, tc.tile_latent.1, tc.stride_latent.1) {
                let r = Region { d: 0..s.d, h: rh.clone(), w: rw };
                row.push(chunked(&z.crop(&r)?, tick)?);
            }
            tiles.push(row);
        }
        blend_tiles(tiles, tc)
    }
}
