//! A peak-memory estimate of a decode, computed from shapes alone before any work starts, so
//! that a decode that cannot fit is refused up front rather than killed hours in.
//!
//! Model: weights + the largest set of activations alive at once in one decoder call (per
//! resnet block x, h and the shortcut; per upsampler its input, the spatially doubled frames
//! and the time-doubled output) + fixed convolution scratch + the causal conv caches (chunked
//! and tiled modes) + the output held in memory. Calibrated against measured peak RSS (see
//! README); it errs high.

use super::chunked::{DecodeMode, chunk_schedule};
use super::config::DecoderConfig;
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// Fixed convolution scratch: Winograd strip caches and transformed weights, im2col tiles.
const CONV_SCRATCH_BYTES: u64 = 192 << 20;

/// Estimated bytes of one decoder call on a latent chunk z, and of the conv caches it leaves.
fn call_bytes(cfg: &DecoderConfig, z: Shape, elem: u128, chunked: bool) -> (u128, u128) {
    let n = z.n as u128;
    let (mut t, mut h, mut w) = (z.d as u128, z.h as u128, z.w as u128);
    let l = cfg.levels();
    let ch = cfg.ch as u128;
    let mut c = ch * cfg.ch_mult[l - 1] as u128;
    let unit = |t: u128, h: u128, w: u128| n * t * h * w * elem;
    // A k=3 causal conv over c_in channels at (h, w) keeps 2 frames.
    let cache = |c_in: u128, h: u128, w: u128| if chunked { 2 * c_in * unit(1, h, w) } else { 0 };
    let mut peak = (c + cfg.z_channels as u128) * unit(t, h, w);
    let mut caches = cache(cfg.z_channels as u128, h, w);
    let resblock = |c_in: u128, c_out: u128, t: u128, h: u128, w: u128| (c_in + 2 * c_out) * unit(t, h, w);
    for _ in 0..2 {
        peak = peak.max(resblock(c, c, t, h, w));
        caches += 2 * cache(c, h, w);
    }
    for i in (0..l).rev() {
        let c_out = ch * cfg.ch_mult[i] as u128;
        for _ in 0..=cfg.num_res_blocks {
            peak = peak.max(resblock(c, c_out, t, h, w));
            caches += cache(c, h, w) + cache(c_out, h, w);
            c = c_out;
        }
        if i != 0 {
            let t2 = if cfg.compress_time(i) {
                cfg.frame_rule().upsampled_frames(t as usize).unwrap_or(usize::MAX) as u128
            } else {
                t
            };
            peak = peak.max(c * (unit(t, h, w) + 2 * unit(t, 2 * h, 2 * w) + unit(t2, 2 * h, 2 * w)));
            t = t2;
            h *= 2;
            w *= 2;
        }
    }
    peak = peak.max((c + cfg.out_ch as u128) * unit(t, h, w));
    caches += cache(c, h, w);
    (peak, caches)
}

/// Estimated peak bytes of decoding z with `mode` in an element type of `elem` bytes, given
/// `weight_bytes` of loaded weights. `keep_output`: the whole output is held in memory (not
/// streamed to a file as it is produced).
pub fn estimate_peak_bytes(
    cfg: &DecoderConfig,
    z: Shape,
    mode: &DecodeMode,
    elem: usize,
    weight_bytes: u64,
    keep_output: bool,
) -> Result<u64> {
    let out = cfg.output_shape(z)?;
    let elem = elem as u128;
    let frame_out = z.n as u128 * cfg.out_ch as u128 * elem;
    let chunk_t = chunk_schedule(z.d).iter().map(|r| r.len()).max().unwrap_or(1);
    let per_call = |h: usize, w: usize, t: usize, chunked: bool| {
        let (act, caches) = call_bytes(cfg, Shape { d: t, h, w, ..z }, elem, chunked);
        act + caches
    };
    // Output frames of the largest batch.
    let batch_frames = cfg.output_frames(chunk_t).unwrap_or(out.d) as u128;
    let full_out = frame_out * (out.d as u128 + 8) * out.h as u128 * out.w as u128;
    let work = match mode {
        DecodeMode::Whole => per_call(z.h, z.w, z.d, false) + full_out,
        DecodeMode::Chunked => {
            let held = if keep_output {
                full_out
            } else {
                2 * frame_out * batch_frames * out.h as u128 * out.w as u128
            };
            per_call(z.h, z.w, chunk_t, true) + held
        }
        DecodeMode::Tiled(tc) if tc.splits(z.h, z.w) => {
            let (th, tw) = (tc.tile_latent.0.min(z.h), tc.tile_latent.1.min(z.w));
            // Decoded tiles (uncropped, all frames) are held until blending, plus the result.
            let px_per_latent = (out.h / z.h) as u128 * (out.w / z.w) as u128;
            let tiles: u128 = tc
                .tiles(z.h, z.w)
                .iter()
                .map(|(a, b)| frame_out * out.d as u128 * a.len() as u128 * b.len() as u128 * px_per_latent)
                .sum();
            per_call(th, tw, chunk_t, true) + tiles + 2 * full_out
        }
        DecodeMode::Tiled(_) => per_call(z.h, z.w, chunk_t, true) + full_out,
    };
    // u128 arithmetic: shapes that fit in usize times channels and element sizes cannot
    // overflow it; an estimate beyond u64 saturates (and is refused by any budget).
    let total = weight_bytes as u128 + CONV_SCRATCH_BYTES as u128 + work;
    Ok(total.min(u64::MAX as u128) as u64)
}

/// Refuses a decode whose `estimate` (from [`estimate_peak_bytes`]) exceeds `budget` bytes,
/// with a hint that fits `mode`.
pub fn check_budget(estimate: u64, budget: u64, mode: &DecodeMode) -> Result<()> {
    if estimate <= budget {
        return Ok(());
    }
    let hint = match mode {
        DecodeMode::Tiled(_) => "a smaller latent (fewer samples per file)",
        _ => "--mode tiled",
    };
    Err(Error::OverMemoryBudget { needed: estimate, budget, hint })
}

/// Bytes of memory available to a new allocation (Linux `MemAvailable`), if known.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
