//! Decoding a clip in every mode (spec section 11): `Whole` is one decoder call; `Chunked` is
//! diffusers `vae.decode(z)` (latent frames in batches, every causal conv continuing from the
//! previous batch's cache, GroupNorm statistics and zq per batch, frames handed out as each
//! batch finishes); `Tiled` is diffusers `enable_tiling()` (overlapping latent tiles, each
//! decoded chunked with its own caches, then blended and joined). The calls come from
//! [`calls`]; this module runs them, reports progress and assembles the output.

use super::config::DecoderClass;
use super::decoder::{Decoder, DecoderCache};
use super::schedule::{Call, DecodeMode, Progress, Stage, calls};
use super::trace::Tracer;
use crate::error::{Error, Result};
use crate::kernels::Float;
use crate::ops::blend::blend_tiles;
use crate::tensor::{Region, Shape, Tensor};

impl<T: Float> Decoder<T> {
    /// The output shape of decoding z with `mode`, after checking z. z: (b, c, t, h, w)
    pub fn decoded_shape(&self, z: Shape, mode: &DecodeMode) -> Result<Shape> {
        let plan = self.plan();
        if plan.config().class == DecoderClass::ContextParallelDecoder3d {
            check_sat_frames(z.d, mode)?;
        }
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
    ///
    /// Output frames are checked as they are produced: NaN or infinity fails the decode with
    /// [`Error::NonFinite`] (the count over the whole output, the first index, a likely cause),
    /// and no frame from the first bad batch on reaches `sink`, unless
    /// [`Decoder::allow_nonfinite`] was set.
    pub fn decode_stream(
        &self,
        z: &Tensor<T>,
        mode: &DecodeMode,
        progress: &mut dyn FnMut(&Progress) -> Result<()>,
        sink: impl FnMut(usize, Tensor<T>) -> Result<()>,
    ) -> Result<()> {
        self.decode_stream_traced(z, mode, progress, sink, None)
    }

    /// [`Self::decode_stream`], showing every decoder call's module outputs to `tracer`
    /// ([`Tracer::begin_call`] before each call); the frames are bitwise the same as without.
    pub fn decode_stream_traced<'a>(
        &self,
        z: &Tensor<T>,
        mode: &DecodeMode,
        progress: &'a mut dyn FnMut(&Progress) -> Result<()>,
        mut sink: impl FnMut(usize, Tensor<T>) -> Result<()>,
        tracer: Option<&'a mut dyn Tracer<T>>,
    ) -> Result<()> {
        crate::kernels::check_env()?;
        if !self.check_finite {
            return self.stream(z, mode, progress, &mut sink, tracer);
        }
        let mut bad: Option<(u64, [usize; 5])> = None;
        self.stream(
            z,
            mode,
            progress,
            &mut |first, frames: Tensor<T>| {
                let fs = frames.shape();
                let mut count = 0u64;
                let mut first_bad = None;
                for (i, v) in frames.data().iter().enumerate() {
                    if !v.is_finite() {
                        count += 1;
                        first_bad.get_or_insert(i);
                    }
                }
                if let Some(i) = first_bad {
                    let [b, c, t, h, w] = fs.unravel(i);
                    let entry = bad.get_or_insert((0, [b, c, first + t, h, w]));
                    entry.0 += count;
                }
                if bad.is_none() { sink(first, frames) } else { Ok(()) }
            },
            tracer,
        )?;
        match bad {
            None => Ok(()),
            Some((count, first)) => Err(Error::NonFinite { count, first, cause: nonfinite_cause(z) }),
        }
    }

    fn stream<'a>(
        &self,
        z: &Tensor<T>,
        mode: &DecodeMode,
        progress: &'a mut dyn FnMut(&Progress) -> Result<()>,
        sink: &mut dyn FnMut(usize, Tensor<T>) -> Result<()>,
        tracer: Option<&'a mut dyn Tracer<T>>,
    ) -> Result<()> {
        let s = z.shape();
        self.decoded_shape(s, mode)?;
        let calls = calls(mode, s);
        if calls.iter().any(|c| c.cached) {
            self.plan().check_chunkable()?;
        }
        let mut run = Runner::new(self, s, &calls, progress)?;
        run.tracer = tracer.map(|t| t as &mut dyn Tracer<T>);
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

/// The latent frame counts for which the SAT decode (`decoder(z)` with use_cp, or the
/// `decode_first_stage` loop, spec 11.2) is the computation movq runs for
/// ContextParallelDecoder3D (diffusers' rule and batches): T = 1 and odd T, up to 21 frames
/// when batched. SAT splits frame 0 of the first call whatever its parity (diffusers: odd
/// only) and, above 21 frames, cuts `min(10, T // 2)` batches where diffusers cuts `T // 2`.
fn check_sat_frames(t: usize, mode: &DecodeMode) -> Result<()> {
    let why = if t > 1 && t.is_multiple_of(2) {
        "an even number of latent frames: SAT splits the first frame of its first call, diffusers' rule (which movq runs) does not"
    } else if t > 21 && *mode != DecodeMode::Whole {
        "more than 21 latent frames: SAT cuts min(10, T // 2) frame batches, diffusers T // 2"
    } else {
        return Ok(());
    };
    Err(Error::Unsupported(format!(
        "ContextParallelDecoder3D (SAT CogVideoX) with T = {t}, {why}; not implemented"
    )))
}

/// The likely cause of non-finite output, judged from the latent alone (the weights are the
/// caller's to scan: [`crate::io::WeightFile`] names them).
fn nonfinite_cause<T: Float>(z: &Tensor<T>) -> String {
    let bad = z.data().iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return format!("the latent itself holds {bad} non-finite value(s)");
    }
    let max = z.data().iter().map(|v| v.to_f64().abs()).fold(0.0, f64::max);
    let range = if T::NAME == "f32" { "f32" } else { "f64" };
    if max > 1e6 {
        format!(
            "the latent's largest magnitude is {max:.3e}: activations overflow the {range} range (was the latent \
             scaled twice, or by a tiny scaling factor?)"
        )
    } else {
        format!(
            "the latent is finite (largest magnitude {max:.3e}), so a weight is NaN or infinite, or activations \
             overflowed the {range} range"
        )
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
    tracer: Option<&'a mut dyn Tracer<T>>,
    /// Index of the running call's frame batch within its clip.
    batch: usize,
    /// Per call: the last frame batch of its clip or tile (no conv cache carried out of it).
    ends_clip: Vec<bool>,
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
        let ends_clip = (0..calls.len()).map(|i| calls.get(i + 1).is_none_or(|n| n.starts_clip)).collect();
        Ok(Runner { dec, cache: dec.new_cache(), stage_flops, p, f, tracer: None, batch: 0, ends_clip })
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
            self.batch = 0;
        } else {
            self.batch += 1;
        }
        if let Some(t) = self.tracer.as_deref_mut() {
            t.begin_call(call, self.batch);
        }
        let stages = &self.stage_flops.iter().find(|(k, _)| *k == call.shape(s)).expect("planned call").1;
        self.cache.last_chunk(self.ends_clip[self.p.call], self.p.call + 1 == self.p.calls);
        self.p.call += 1;
        let (p, f) = (&mut self.p, &mut self.f);
        let cache = if call.cached { Some(&mut self.cache) } else { None };
        let mut on_stage = |stage| {
            let flop = stages.iter().find(|(s, _)| *s == stage).map_or(0, |(_, f)| *f);
            p.stage = stage;
            p.flop_done = (p.flop_done + flop).min(p.flop_total);
            f(p)
        };
        let tracer = self.tracer.as_mut().map(|t| &mut **t as &mut dyn Tracer<T>);
        self.dec.forward_traced(input, cache, &mut on_stage, tracer)
    }
}
