//! A peak-memory estimate of a decode, computed from shapes alone before any work starts, so
//! that a decode that cannot fit is refused up front rather than killed hours in.
//!
//! Model: weights (+ their Winograd transforms when a decode makes more than one call, or the
//! ones the decoder holds already) + the largest set of activations alive at once in one
//! decoder call (per resnet block x and h, and the shortcut when it cannot be written over x;
//! per upsampler its input, one spatially doubled frame and its conv, and the output) + fixed
//! convolution scratch + the causal conv caches (clips of more than one frame batch) + the
//! output held in memory. Calibrated against measured peak RSS (see README); it errs high.

use super::plan::DecoderPlan;
use super::schedule::{DecodeMode, calls};
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// Fixed convolution scratch: Winograd strip caches and transformed weights, im2col tiles.
const CONV_SCRATCH_BYTES: u64 = 192 << 20;

/// Estimated bytes of one decoder call on a latent chunk z, and of the conv caches it carries
/// (`chunked`: its clip has more than one frame batch).
fn call_bytes(plan: &DecoderPlan, z: Shape, elem: u128, chunked: bool) -> Result<(u128, u128)> {
    let walk = plan.walk(z)?;
    let n = z.n as u128;
    let unit = |d: (usize, usize, usize)| n * d.0 as u128 * d.1 as u128 * d.2 as u128 * elem;
    let frame = |d: (usize, usize, usize)| unit((1, d.1, d.2));
    // A k=3 causal conv over c_in channels keeps 2 frames.
    let cache = |c_in: usize, d| if chunked { 2 * c_in as u128 * frame(d) } else { 0 };
    // x and h; a shortcut is written over x unless it has more channels than x
    // (`crate::ops::conv::conv3d_owned`, with or without bf16 products).
    let resblock = |c_in: usize, c_out: usize, d| {
        let shortcut = if c_out > c_in { c_out as u128 } else { 0 };
        (c_in as u128 + c_out as u128 + shortcut) * unit(d)
    };
    let c = plan.mid_channels;
    let mut peak = (c as u128 + plan.z_channels as u128) * unit(walk.mid);
    let mut caches = cache(plan.z_channels, walk.mid);
    for _ in 0..2 {
        peak = peak.max(resblock(c, c, walk.mid));
        caches += 2 * cache(c, walk.mid);
    }
    for (i, lv) in plan.levels_in_order() {
        let (at, after) = walk.levels[i];
        for j in 0..lv.blocks {
            peak = peak.max(resblock(lv.block_in(j), lv.c_out, at));
            caches += cache(lv.block_in(j), at) + cache(lv.c_out, at);
        }
        if lv.upsample.is_some() {
            let spatial = (at.0, after.1, after.2);
            peak = peak.max(lv.c_out as u128 * (unit(at) + 2 * frame(spatial) + unit(after)));
        }
    }
    let c0 = plan.out_in_channels;
    peak = peak.max((c0 as u128 + plan.out_ch as u128) * unit(walk.out));
    caches += cache(c0, walk.out);
    Ok((peak, caches))
}

/// What a decode holds besides its activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes per element of the compute type (4 for f32, 8 for f64).
    pub elem: usize,
    /// Bytes of the loaded weights.
    pub weight_bytes: u64,
    /// The whole output is held in memory (not streamed to a file as it is produced).
    pub keep_output: bool,
    /// Bytes of Winograd weight transforms the decoder holds already
    /// (`Decoder::weight_cache_bytes`).
    pub held_transform_bytes: u64,
}

/// Estimated peak bytes of decoding z with `mode`.
pub fn estimate_peak_bytes(plan: &DecoderPlan, z: Shape, mode: &DecodeMode, f: &Footprint) -> Result<u64> {
    let Footprint { elem, weight_bytes, keep_output, held_transform_bytes } = *f;
    let out = plan.output_shape(z)?;
    let elem = elem as u128;
    let frame_out = z.n as u128 * plan.out_ch as u128 * elem;
    let calls = calls(mode, z);
    let batch_t = calls.iter().filter(|c| c.cached).map(|c| c.frames.len()).max().unwrap_or(z.d);
    let full_out = frame_out * (out.d as u128 + 8) * out.h as u128 * out.w as u128;
    // The largest call of the decode (tiles at the grid's edge are smaller).
    let mut work = 0u128;
    for (i, c) in calls.iter().enumerate() {
        let alone = c.starts_clip && calls.get(i + 1).is_none_or(|n| n.starts_clip);
        let (act, caches) = call_bytes(plan, c.shape(z), elem, c.cached && !alone)?;
        work = work.max(act + caches);
    }
    let held = match mode {
        DecodeMode::Whole => full_out,
        DecodeMode::Chunked if keep_output => full_out,
        DecodeMode::Chunked => {
            let batch_frames = plan.output_frames(batch_t).unwrap_or(out.d) as u128;
            2 * frame_out * batch_frames * out.h as u128 * out.w as u128
        }
        DecodeMode::Tiled(_) if calls.iter().any(|c| c.tile.is_some()) => {
            // Decoded tiles (uncropped, all frames) are held until blending, plus the result.
            let px_per_latent = (plan.space_scale() as u128).pow(2);
            let tiles: u128 = calls
                .iter()
                .filter(|c| c.starts_clip)
                .map(|c| {
                    frame_out * out.d as u128 * c.rows.len() as u128 * c.cols.len() as u128 * px_per_latent
                })
                .sum();
            tiles + 2 * full_out
        }
        DecodeMode::Tiled(_) => full_out,
    };
    // u128 arithmetic: shapes that fit in usize times channels and element sizes cannot
    // overflow it; an estimate beyond u64 saturates (and is refused by any budget).
    // Chunked and tiled decodes of more than one call keep every causal conv's Winograd
    // weight transforms: 16/9 of the 3x3 weights, bounded by 16/9 of all weights.
    let transforms = match mode {
        DecodeMode::Whole => 0,
        _ if calls.len() > 1 && crate::kernels::params::weight_cache() => weight_bytes as u128 * 16 / 9,
        _ => 0,
    }
    .max(held_transform_bytes as u128);
    let total = weight_bytes as u128 + transforms + CONV_SCRATCH_BYTES as u128 + work + held;
    Ok(total.min(u64::MAX as u128) as u64)
}

/// Refuses a decode whose `estimate` (from [`estimate_peak_bytes`]) exceeds `budget` bytes.
pub fn check_budget(estimate: u64, budget: u64) -> Result<()> {
    if estimate <= budget {
        return Ok(());
    }
    Err(Error::OverMemoryBudget { needed: estimate, budget })
}

/// Bytes of memory available to a new allocation (Linux `MemAvailable`), if known.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecoderConfig;

    /// Transforms a decoder holds already are counted.
    #[test]
    fn estimate_counts_held_transforms() {
        let cfg = DecoderConfig::from_json(
            r#"{"class": "CogVideoXDecoder3D", "ch": 32, "out_ch": 3, "ch_mult": [1, 2], "num_res_blocks": 1,
                "attn_resolutions": [], "resolution": 32, "z_channels": 4}"#,
        )
        .unwrap();
        let plan = DecoderPlan::new(&cfg).unwrap();
        let z = Shape::new(1, 4, 3, 6, 5);
        let f = Footprint { elem: 4, weight_bytes: 1 << 20, keep_output: false, held_transform_bytes: 0 };
        let est = |f: Footprint| estimate_peak_bytes(&plan, z, &DecodeMode::Chunked, &f).unwrap();
        let base = est(f);
        // One frame batch, one call: no transforms kept unless the decoder holds some.
        assert_eq!(est(Footprint { held_transform_bytes: 5 << 20, ..f }), base + (5 << 20));
    }
}
