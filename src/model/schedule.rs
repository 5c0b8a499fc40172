//! The vocabulary of decoding a clip (spec section 11): the decode modes, the tile geometry,
//! the frame batches, the stages of one decoder call, progress, and the list of decoder calls a
//! decode makes. A leaf: it knows shapes, not decoders; the driver (`decode.rs`), the FLOP
//! count and the memory estimate all read it.

use crate::error::{Error, Result};
use crate::tensor::Shape;
use std::ops::Range;

/// Latent frames per batch (diffusers `num_latent_frames_batch_size`; fixed upstream).
pub const FRAME_BATCH: usize = 2;

/// How a latent clip is decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeMode {
    /// One decoder call on the whole clip (upstream `decoder(z)`; MOVQ semantics).
    Whole,
    /// Batches of latent frames with carried conv caches (diffusers `vae.decode(z)`).
    Chunked,
    /// Overlapping spatial tiles, each decoded chunked, blended (diffusers `enable_tiling()`).
    Tiled(TileConfig),
}

/// As the CLI's progress line names it: `Whole`, `Chunked`, or `Tiled: ` and the geometry.
impl std::fmt::Display for DecodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeMode::Whole => f.write_str("Whole"),
            DecodeMode::Chunked => f.write_str("Chunked"),
            DecodeMode::Tiled(c) => write!(f, "Tiled: {c}"),
        }
    }
}

/// The geometry in words, for messages (the progress line, geometry errors).
impl std::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ((th, tw), (sh, sw)) = (self.tile_latent, self.stride_latent);
        let ((bh, bw), (kh, kw)) = (self.blend, self.keep);
        write!(
            f,
            "latent tiles {th} x {tw}, strides {sh} x {sw}, {bh} x {bw} output pixels blended, {kh} x {kw} kept per tile"
        )
    }
}

/// The latent frame ranges of the batches of a clip of `t` frames:
/// batch i covers [2i + (0 if i = 0 else t % 2), 2(i + 1) + t % 2), clipped to t.
pub fn chunk_schedule(t: usize) -> Vec<Range<usize>> {
    let (n, r) = ((t / FRAME_BATCH).max(1), t % FRAME_BATCH);
    (0..n)
        .map(|i| {
            let start = FRAME_BATCH * i + if i == 0 { 0 } else { r };
            start..(FRAME_BATCH * (i + 1) + r).min(t)
        })
        .collect()
}

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

/// diffusers' `enable_tiling(tile_sample_min_height, tile_sample_min_width,
/// tile_overlap_factor_height, tile_overlap_factor_width)`, as (height, width) pairs; `None`
/// keeps diffusers' default (half the sample size; overlaps 1/6 and 1/5).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tiling {
    pub sample_min: (Option<usize>, Option<usize>),
    pub overlap: (Option<f64>, Option<f64>),
}

impl TileConfig {
    /// diffusers' defaults for a model whose `sample_height` x `sample_width` is `sample` and
    /// whose decoder upsamples space by `scale`: tiles of half the sample size, overlap factors
    /// 1/6 (height) and 1/5 (width), with Python's int() truncations. For CogVideoX (480 x 720,
    /// scale 8): latent tiles 30 x 45, strides 25 x 36, blends 40 x 72 px, kept 200 x 288 px.
    pub fn diffusers(sample: (usize, usize), scale: usize) -> Result<Self> {
        Self::from_tiling(sample, &Tiling::default(), scale)
    }

    /// The geometry of `vae.enable_tiling(...)` with `tiling`'s values, on a model of sample
    /// size `sample` whose decoder upsamples space by `scale` (diffusers 0.42
    /// `AutoencoderKLCogVideoX.tiled_decode`): latent tile = int(sample_min / scale), stride =
    /// int(latent tile * (1 - overlap)), blend = int(sample_min * overlap), kept = sample_min -
    /// blend. As diffusers' `x or default`, a 0 size or overlap means the default.
    pub fn from_tiling(sample: (usize, usize), tiling: &Tiling, scale: usize) -> Result<Self> {
        // Python's `x or default`: 0 (and 0.0) also mean the default.
        let sh = tiling.sample_min.0.filter(|&v| v != 0).unwrap_or(sample.0 / 2);
        let sw = tiling.sample_min.1.filter(|&v| v != 0).unwrap_or(sample.1 / 2);
        let fh = tiling.overlap.0.filter(|&f| f != 0.0).unwrap_or(1.0 / 6.0);
        let fw = tiling.overlap.1.filter(|&f| f != 0.0).unwrap_or(1.0 / 5.0);
        for (name, f) in [("tile_overlap_factor_height", fh), ("tile_overlap_factor_width", fw)] {
            if !(0.0..1.0).contains(&f) {
                return Err(Error::InvalidConfig(format!("{name} {f} is not in [0, 1)")));
            }
        }
        let (th, tw) = (sh / scale.max(1), sw / scale.max(1));
        let tc = TileConfig {
            tile_latent: (th, tw),
            stride_latent: ((th as f64 * (1.0 - fh)) as usize, (tw as f64 * (1.0 - fw)) as usize),
            blend: ((sh as f64 * fh) as usize, (sw as f64 * fw) as usize),
            keep: (0, 0),
        };
        let tc = TileConfig { keep: (sh.saturating_sub(tc.blend.0), sw.saturating_sub(tc.blend.1)), ..tc };
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

    /// The tile grid of an `h` x `w` latent: latent row ranges and column ranges.
    pub fn grid(&self, h: usize, w: usize) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
        (
            Self::spans(h, self.tile_latent.0, self.stride_latent.0).collect(),
            Self::spans(w, self.tile_latent.1, self.stride_latent.1).collect(),
        )
    }

    /// Output (height, width) of the tiled decode of an `h` x `w` latent by a decoder that
    /// upsamples space by `scale`.
    pub fn output_size(&self, h: usize, w: usize, scale: usize) -> (usize, usize) {
        if !self.splits(h, w) {
            return (h * scale, w * scale);
        }
        let (rows, cols) = self.grid(h, w);
        (
            rows.iter().map(|r| (r.len() * scale).min(self.keep.0)).sum(),
            cols.iter().map(|r| (r.len() * scale).min(self.keep.1)).sum(),
        )
    }

    /// Rejects geometries that would loop forever or drop pixels.
    pub fn validate(&self) -> Result<()> {
        let (th, tw) = self.tile_latent;
        let (sh, sw) = self.stride_latent;
        if th == 0 || tw == 0 || sh == 0 || sw == 0 || self.keep.0 == 0 || self.keep.1 == 0 {
            return Err(Error::InvalidConfig(format!("tile geometry with a zero size: {self}")));
        }
        Ok(())
    }
}

/// A stage of one decoder call, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// post_quant_conv, conv_in and the mid block.
    Mid,
    /// `up[i]`: its blocks, attention and upsample.
    Level(usize),
    /// norm_out and conv_out.
    Out,
}

/// Where a decode stands, after a stage finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The decoder call running (1-based) of `calls` (frame batches times tiles).
    pub call: usize,
    pub calls: usize,
    /// The stage of that call just finished.
    pub stage: Stage,
    /// FLOPs done so far and in total (the spec 13.1 count): the measure of work for an ETA,
    /// since stages differ by orders of magnitude in cost.
    pub flop_done: u128,
    pub flop_total: u128,
}

/// One decoder call of a decode: the latent region it reads, and whether it continues the
/// conv caches of the call before it (a later frame batch of the same clip or tile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub frames: Range<usize>,
    pub rows: Range<usize>,
    pub cols: Range<usize>,
    /// Carries conv caches across the clip's frame batches (chunked and tiled modes).
    pub cached: bool,
    /// First frame batch of a clip or tile: starts with empty caches.
    pub starts_clip: bool,
    /// (row, column) of the tile in the grid, for a tiled decode.
    pub tile: Option<(usize, usize)>,
}

impl Call {
    /// The latent shape this call reads from z.
    pub fn shape(&self, z: Shape) -> Shape {
        Shape { d: self.frames.len(), h: self.rows.len(), w: self.cols.len(), ..z }
    }
}

/// The decoder calls of decoding z with `mode`, in execution order: tiles row-major, each
/// tile's frame batches in order.
pub fn calls(mode: &DecodeMode, z: Shape) -> Vec<Call> {
    let clip = |rows: Range<usize>, cols: Range<usize>, tile| {
        chunk_schedule(z.d).into_iter().enumerate().map(move |(i, frames)| Call {
            frames,
            rows: rows.clone(),
            cols: cols.clone(),
            cached: true,
            starts_clip: i == 0,
            tile,
        })
    };
    match mode {
        DecodeMode::Whole => vec![Call {
            frames: 0..z.d,
            rows: 0..z.h,
            cols: 0..z.w,
            cached: false,
            starts_clip: true,
            tile: None,
        }],
        DecodeMode::Tiled(tc) if tc.splits(z.h, z.w) => {
            let (rows, cols) = tc.grid(z.h, z.w);
            let mut out = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                for (j, c) in cols.iter().enumerate() {
                    out.extend(clip(r.clone(), c.clone(), Some((i, j))));
                }
            }
            out
        }
        DecodeMode::Chunked | DecodeMode::Tiled(_) => clip(0..z.h, 0..z.w, None).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_print_in_words() {
        let c =
            TileConfig { tile_latent: (30, 45), stride_latent: (25, 36), blend: (40, 72), keep: (200, 288) };
        assert_eq!(
            DecodeMode::Tiled(c).to_string(),
            "Tiled: latent tiles 30 x 45, strides 25 x 36, 40 x 72 output pixels blended, 200 x 288 kept per tile"
        );
        assert_eq!(DecodeMode::Chunked.to_string(), "Chunked");
        assert_eq!(DecodeMode::Whole.to_string(), "Whole");
    }

    #[test]
    fn chunk_schedule_spec_11_1() {
        assert_eq!(chunk_schedule(13), vec![0..3, 3..5, 5..7, 7..9, 9..11, 11..13]);
        assert_eq!(chunk_schedule(12).len(), 6);
        assert_eq!(chunk_schedule(4), vec![0..2, 2..4]);
        assert_eq!(chunk_schedule(3), vec![0..3]);
        assert_eq!(chunk_schedule(2), vec![0..2]);
        assert_eq!(chunk_schedule(1), vec![0..1]);
        for t in 1..40 {
            let s = chunk_schedule(t);
            assert_eq!(s.first().unwrap().start, 0);
            assert_eq!(s.last().unwrap().end, t);
            assert!(s.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn zero_tiling_values_mean_the_default_as_in_diffusers() {
        let zero = Tiling { sample_min: (Some(0), Some(0)), overlap: (Some(0.0), Some(0.0)) };
        assert_eq!(
            TileConfig::from_tiling((480, 720), &zero, 8).unwrap(),
            TileConfig::diffusers((480, 720), 8).unwrap()
        );
        let bad = Tiling { overlap: (Some(1.0), None), ..Tiling::default() };
        assert!(TileConfig::from_tiling((480, 720), &bad, 8).is_err());
        let nan = Tiling { overlap: (None, Some(f64::NAN)), ..Tiling::default() };
        assert!(TileConfig::from_tiling((480, 720), &nan, 8).is_err());
    }

    #[test]
    fn calls_cover_tiles_then_batches() {
        let tc = TileConfig::diffusers((480, 720), 8).unwrap();
        assert_eq!(
            (tc.tile_latent, tc.stride_latent, tc.blend, tc.keep),
            ((30, 45), (25, 36), (40, 72), (200, 288))
        );
        let z = Shape::new(1, 16, 5, 60, 90);
        let c = calls(&DecodeMode::Tiled(tc.clone()), z);
        // 3 x 3 tiles (rows 0, 25, 50; columns 0, 36, 72), 2 frame batches each.
        assert_eq!(c.len(), 18);
        assert_eq!((c[0].tile, c[0].starts_clip, c[1].starts_clip), (Some((0, 0)), true, false));
        assert_eq!((c[17].rows.clone(), c[17].cols.clone()), (50..60, 72..90));
        assert_eq!(calls(&DecodeMode::Whole, z).len(), 1);
        assert_eq!(calls(&DecodeMode::Chunked, z).len(), 2);
        assert_eq!(tc.output_size(60, 90, 8), (200 + 200 + 80, 288 + 288 + 144));
    }
}
