//! Chunked decoding as diffusers `AutoencoderKLCogVideoX._decode` does it (spec 11.1): latent
//! frames in batches of 2 (3 in the first when T is odd), every causal conv continuing from the
//! previous batch's cache, GroupNorm statistics and zq per batch. Frames are handed out as
//! each batch finishes, so peak memory does not grow with the clip length.

use super::decoder::{Decoder, DecoderCache};
use super::flops::{decode_flops, decoder_stage_flops};
use super::tiled::TileConfig;
use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::tensor::{Region, Shape, Tensor};
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

impl<T: Float> Decoder<T> {
    /// The output shape of decoding z with `mode`. z: (b, c, t, h, w)
    pub fn decoded_shape(&self, z: Shape, mode: &DecodeMode) -> Result<Shape> {
        let whole = self.config().output_shape(z)?;
        match mode {
            DecodeMode::Whole => Ok(whole),
            DecodeMode::Chunked | DecodeMode::Tiled(_) => {
                let (h, w) = match mode {
                    DecodeMode::Tiled(tc) => tc.output_size(z.h, z.w, whole.h / z.h),
                    _ => (whole.h, whole.w),
                };
                let d = chunk_schedule(z.d)
                    .iter()
                    .try_fold(0usize, |d, r| d.checked_add(self.config().output_frames(r.len())?))
                    .ok_or_else(|| Error::TooLarge {
                        what: format!("decoder output for z {z}"),
                        reason: "frame count overflows".into(),
                    })?;
                Ok(Shape { d, h, w, ..whole })
            }
        }
    }

    /// Decodes z with `mode`, handing out frames as they are ready: `sink(first, frames)` gets
    /// output frames `first .. first + frames.d`, in order, each exactly once.
    /// z: (b, zq_ch, t, h, w); frames: (b, out_ch, k, H, W)
    pub fn decode_stream(
        &self,
        z: &Tensor<T>,
        mode: &DecodeMode,
        sink: impl FnMut(usize, Tensor<T>) -> Result<()>,
    ) -> Result<()> {
        self.decode_stream_with_progress(z, mode, &mut |_| {}, sink)
    }

    /// Number of decoder calls (frame batches times tiles) a decode of z with `mode` makes.
    pub fn decode_calls(&self, z: Shape, mode: &DecodeMode) -> usize {
        let batches = chunk_schedule(z.d).len();
        match mode {
            DecodeMode::Whole => 1,
            DecodeMode::Chunked => batches,
            DecodeMode::Tiled(tc) if tc.splits(z.h, z.w) => batches * tc.tiles(z.h, z.w).len(),
            DecodeMode::Tiled(_) => batches,
        }
    }

    /// [`Self::decode_stream`], calling `progress` after every stage (mid block, each level,
    /// output conv) of each of the [`Self::decode_calls`] decoder calls.
    pub fn decode_stream_with_progress(
        &self,
        z: &Tensor<T>,
        mode: &DecodeMode,
        progress: &mut dyn FnMut(&Progress),
        mut sink: impl FnMut(usize, Tensor<T>) -> Result<()>,
    ) -> Result<()> {
        let mut tick = Ticker {
            p: Progress {
                call: 0,
                calls: self.decode_calls(z.shape(), mode),
                stage: Stage::Mid,
                flop_done: 0,
                flop_total: decode_flops(self.config(), z.shape(), mode)?,
            },
            f: progress,
        };
        match mode {
            DecodeMode::Whole => {
                let y = tick.call(self, z, None)?;
                sink(0, y)
            }
            DecodeMode::Chunked => self.decode_chunked(z, &mut tick, sink),
            DecodeMode::Tiled(tc) => {
                let y = self.decode_tiled_with(z, tc, &mut tick)?;
                sink(0, y)
            }
        }
    }

    /// [`Self::decode_stream`] collected into one tensor.
    pub fn decode(&self, z: &Tensor<T>, mode: &DecodeMode) -> Result<Tensor<T>> {
        let shape = self.decoded_shape(z.shape(), mode)?;
        let mut out = Tensor::zeros(shape)?;
        self.decode_stream(z, mode, |first, frames| out.paste(&frames, (first, 0, 0)))?;
        Ok(out)
    }

    /// The chunked decode of z, batch by batch. z: (b, c, t, h, w)
    pub(crate) fn decode_chunked(
        &self,
        z: &Tensor<T>,
        tick: &mut Ticker<'_>,
        mut sink: impl FnMut(usize, Tensor<T>) -> Result<()>,
    ) -> Result<()> {
        let s = z.shape();
        self.config().output_shape(s)?;
        let mut cache = self.new_cache();
        let mut first = 0;
        for r in chunk_schedule(s.d) {
            let chunk = z.crop(&Region { d: r, ..Region::all(s) })?;
            let y = tick.call(self, &chunk, Some(&mut cache))?;
            drop(chunk);
            let k = y.shape().d;
            sink(first, y)?;
            first += k;
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

/// Runs decoder calls and reports their stages to a progress callback.
pub(crate) struct Ticker<'a> {
    p: Progress,
    f: &'a mut dyn FnMut(&Progress),
}

impl Ticker<'_> {
    /// One decoder call on z (b, c, t, h, w), reported stage by stage.
    pub(crate) fn call<T: Float>(
        &mut self,
        dec: &Decoder<T>,
        z: &Tensor<T>,
        cache: Option<&mut DecoderCache<T>>,
    ) -> Result<Tensor<T>> {
        let stages = decoder_stage_flops(dec.config(), z.shape())?;
        self.p.call += 1;
        dec.forward_observed(z, cache, &mut |stage| {
            let flop = stages.iter().find(|(s, _)| *s == stage).map_or(0, |(_, f)| *f);
            self.p.stage = stage;
            self.p.flop_done = (self.p.flop_done + flop).min(self.p.flop_total);
            (self.f)(&self.p);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
