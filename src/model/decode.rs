//! Decoding a clip in every mode (spec section 11): `Whole` is one decoder call; `Chunked` is
//! diffusers `vae.decode(z)` (latent frames in batches, every causal conv continuing from the
//! previous batch's cache, GroupNorm statistics and zq per batch, frames handed out as each
//! batch finishes); `Tiled` is diffusers `enable_tiling()` (overlapping latent tiles, each
//! decoded chunked with its own caches, then blended and joined). The calls come from
//! [`calls`]; this module runs them, reports progress and assembles the output.

use super::decoder::{Decoder, DecoderCache};
use super::schedule::{Call, DecodeMode, Progress, Stage, calls};
use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::ops::blend::blend_tiles;
use crate::tensor::{Region, Shape, Tensor};

impl<T: Float> Decoder<T> {
    /// The output shape of decoding z with `mode`, after checking z. z: (b, c, t, h, w)
    pub fn decoded_shape(&self, z: Shape, mode: &DecodeMode) -> Result<Shape> {
        let plan = self.plan();
        let whole = plan.output_shape(z)?;
        let (h, w) = match mode {
            DecodeMode::Whole => return Ok(whole),
            DecodeMode::Tiled(tc) => {
                tc.validate()?;
                tc.output_size(z.h, z.w, plan.space_scale())
            }
            DecodeMode::Chunked => (whole.h, whole.w),
        };
        let too_large = || Error::TooLarge {
            what: format!("decoder output for z {z}"),
            reason: "frame count overflows".into(),
        };
        let d = calls(mode, z)
            .iter()
            .filter(|c| c.tile.is_none_or(|t| t == (0, 0)))
            .try_fold(0usize, |d, c| d.checked_add(plan.output_frames(c.frames.len())?))
            .ok_or_else(too_large)?;
        Ok(Shape { d, h, w, ..whole })
    }

    /// FLOPs (spec 13.1) of decoding z with `mode`: the sum over its decoder calls.
    pub fn decode_flops(&self, z: Shape, mode: &DecodeMode) -> Result<u128> {
        calls(mode, z).iter().map(|c| self.plan().flops(c.shape(z))).sum()
    }

    /// [`Self::decode_stream`] collected into one tensor.
    pub fn decode(&self, z: &Tensor<T>, mode: &DecodeMode) -> Result<Tensor<T>> {
        let shape = self.decoded_shape(z.shape(), mode)?;
        let mut out = Tensor::zeros(shape)?;
        self.decode_stream(z, mode, &mut |_| Ok(()), |first, frames| out.paste(&frames, (first, 0, 0)))?;
        Ok(out)
    }

    /// Decodes z with `mode`, handing out frames as they are ready: `sink(first, frames)` gets
    /// output frames `first .. first + frames.d`, in order, each exactly once (chunked: per
    /// frame batch; whole and tiled: once). `progress` is called after every stage of every
    /// decoder call; an error it returns (e.g. [`Error::Interrupted`] when the user cancels)
    /// stops the decode there and is returned. z: (b, zq_ch, t, h, w); frames: (b, out_ch, k, H, W)
    pub fn decode_stream(
        &self,
        z: &Tensor<T>,
        mode: &DecodeMode,
        progress: &mut dyn FnMut(&Progress) -> Result<()>,
        mut sink: impl FnMut(usize, Tensor<T>) -> Result<()>,
    ) -> Result<()> {
        let s = z.shape();
        self.decoded_shape(s, mode)?;
        let calls = calls(mode, s);
        if calls.iter().any(|c| c.cached) {
            self.plan().check_chunkable()?;
        }
        let mut run = Runner::new(self, s, &calls, progress)?;
        let DecodeMode::Tiled(tc) = mode else {
            let mut first = 0;
            for call in &calls {
                let y = run.call(z, call)?;
                let k = y.shape().d;
                sink(first, y)?;
                first += k;
            }
            return Ok(());
        };
        if calls.iter().all(|c| c.tile.is_none()) {
            // A latent within one tile is decoded untiled, as upstream; frames come out at the end.
            let mut out = Tensor::zeros(self.decoded_shape(s, &DecodeMode::Chunked)?)?;
            let mut first = 0;
            for call in &calls {
                let y = run.call(z, call)?;
                out.paste(&y, (first, 0, 0))?;
                first += y.shape().d;
            }
            return sink(0, out);
        }
        let mut grid: Vec<Vec<Tensor<T>>> = Vec::new();
        let mut tile: Option<(Tensor<T>, usize)> = None;
        for (i, call) in calls.iter().enumerate() {
            let y = run.call(z, call)?;
            let (t, first) = match tile.take() {
                Some(t) if !call.starts_clip => t,
                _ => {
                    // The tile's whole clip: all frames of its rows and columns.
                    let clip = Shape { d: s.d, ..call.shape(s) };
                    let ts = self.decoded_shape(clip, &DecodeMode::Chunked)?;
                    (Tensor::zeros(ts)?, 0)
                }
            };
            let mut t = t;
            t.paste(&y, (first, 0, 0))?;
            let first = first + y.shape().d;
            if calls.get(i + 1).is_none_or(|next| next.starts_clip) {
                let (row, col) = call.tile.expect("tiled calls name their tile");
                if col == 0 {
                    grid.push(Vec::new());
                }
                debug_assert_eq!(grid.len(), row + 1);
                grid.last_mut().expect("row pushed").push(t);
            } else {
                tile = Some((t, first));
            }
        }
        sink(0, blend_tiles(grid, tc.blend, tc.keep)?)
    }
}

/// Runs the decoder calls of one decode in order, carrying the conv caches and reporting
/// progress stage by stage.
struct Runner<'a, T> {
    dec: &'a Decoder<T>,
    cache: DecoderCache<T>,
    /// FLOPs per stage of each distinct call shape (a decode has at most a few).
    stage_flops: Vec<(Shape, Vec<(Stage, u128)>)>,
    p: Progress,
    f: &'a mut dyn FnMut(&Progress) -> Result<()>,
}

impl<'a, T: Float> Runner<'a, T> {
    fn new(
        dec: &'a Decoder<T>,
        z: Shape,
        calls: &[Call],
        f: &'a mut dyn FnMut(&Progress) -> Result<()>,
    ) -> Result<Self> {
        let mut stage_flops: Vec<(Shape, Vec<(Stage, u128)>)> = Vec::new();
        let mut total = 0u128;
        for c in calls {
            let s = c.shape(z);
            if !stage_flops.iter().any(|(k, _)| *k == s) {
                stage_flops.push((s, dec.plan().stage_flops(s)?));
            }
            let stages = &stage_flops.iter().find(|(k, _)| *k == s).expect("just added").1;
            total += stages.iter().map(|(_, f)| f).sum::<u128>();
        }
        let p = Progress { call: 0, calls: calls.len(), stage: Stage::Mid, flop_done: 0, flop_total: total };
        Ok(Runner { dec, cache: dec.new_cache(), stage_flops, p, f })
    }

    /// One decoder call on the part of z that `call` reads.
    fn call(&mut self, z: &Tensor<T>, call: &Call) -> Result<Tensor<T>> {
        let s = z.shape();
        let region = Region { d: call.frames.clone(), h: call.rows.clone(), w: call.cols.clone() };
        let part;
        let input = if call.shape(s) == s {
            z
        } else {
            part = z.crop(&region)?;
            &part
        };
        if call.starts_clip {
            self.cache = self.dec.new_cache();
        }
        let stages = &self.stage_flops.iter().find(|(k, _)| *k == call.shape(s)).expect("planned call").1;
        self.p.call += 1;
        let (p, f) = (&mut self.p, &mut self.f);
        let cache = if call.cached { Some(&mut self.cache) } else { None };
        self.dec.forward(input, cache, &mut |stage| {
            let flop = stages.iter().find(|(s, _)| *s == stage).map_or(0, |(_, f)| *f);
            p.stage = stage;
            p.flop_done = (p.flop_done + flop).min(p.flop_total);
            f(p)
        })
    }
}
