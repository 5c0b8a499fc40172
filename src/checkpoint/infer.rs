//! The decoder config read off a checkpoint's tensor names and shapes, for weights that carry
//! no config. Channels, block counts, z / zq channels, add_conv, post_quant_conv, resampling
//! convs and which levels have attention are all visible in the state dict; the resolution
//! (it only places attention), pad_mode and temporal_compress_times are not, and come from
//! hints or defaults that [`Inferred::not_inferred`] lists.

use super::Naming;
use super::diffusers::upstream_key;
use crate::error::{Error, Result};
use crate::model::config::{Act, NORM_GROUPS};
use crate::model::plan::level_resolution;
use crate::model::{DecoderClass, DecoderConfig, DecoderPlan, PadMode};
use std::collections::BTreeMap;

/// Values the weights cannot tell; `None` means the default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InferHints {
    pub resolution: Option<usize>,
    pub pad_mode: Option<PadMode>,
    pub temporal_compress_times: Option<usize>,
    /// The decoder class, for checkpoints whose structure fits several and whose config does
    /// not say (see [`super::class`]).
    pub class: Option<DecoderClass>,
}

/// A config field the weights do not determine, with the value used and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Assumed {
    pub field: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Inferred {
    pub config: DecoderConfig,
    pub not_inferred: Vec<Assumed>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Infers the config from the decoder's tensors: `shapes` maps names (decoder prefix removed,
/// named per `naming`) to shapes; other tensors may be present and are ignored.
pub fn infer_config(
    shapes: &BTreeMap<String, Vec<usize>>,
    naming: Naming,
    hints: &InferHints,
) -> Result<Inferred> {
    let bad = |m: String| Error::InvalidConfig(format!("cannot infer the config from the tensors: {m}"));
    let levels = match naming {
        Naming::Upstream => index_count(shapes.keys().map(String::as_str), "up."),
        Naming::Diffusers => index_count(shapes.keys().map(String::as_str), "up_blocks."),
    }
    .ok_or_else(|| bad("no `up.<i>` / `up_blocks.<i>` tensors, or their indices have gaps".into()))?;
    let names: BTreeMap<String, &Vec<usize>> = shapes
        .iter()
        .map(|(k, v)| (if naming == Naming::Diffusers { upstream_key(k, levels) } else { k.clone() }, v))
        .collect();
    let shape = |name: &str, rank: usize| -> Result<&Vec<usize>> {
        let s = names.get(name).ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
        if s.len() != rank {
            return Err(bad(format!("`{name}` has shape {s:?}, expected rank {rank}")));
        }
        Ok(s)
    };
    let has = |prefix: &str| names.keys().any(|k| k.starts_with(prefix));

    let z_channels = shape("conv_in.conv.weight", 5)?[1];
    let post_quant_conv = has("post_quant_conv.");
    let zq_ch = shape("mid.block_1.norm1.conv_y.conv.weight", 5)?[1];
    let add_conv = has("mid.block_1.norm1.conv.");
    let out_ch = shape("conv_out.conv.weight", 5)?[0];
    let mut channels = Vec::with_capacity(levels);
    let mut blocks = None;
    let mut attention = Vec::with_capacity(levels);
    let mut upsample_convs = Vec::new();
    for i in 0..levels {
        let n = index_count(names.keys().map(String::as_str), &format!("up.{i}.block."))
            .ok_or_else(|| bad(format!("level {i} has no blocks, or their indices have gaps")))?;
        if *blocks.get_or_insert(n) != n {
            return Err(bad(format!("level {i} has {n} blocks, other levels {}", blocks.unwrap_or(0))));
        }
        channels.push(shape(&format!("up.{i}.block.0.conv1.conv.weight"), 5)?[0]);
        attention.push(has(&format!("up.{i}.attn.")));
        if i > 0 {
            upsample_convs.push(has(&format!("up.{i}.upsample.conv.")));
        }
    }
    if upsample_convs.iter().any(|&c| c != upsample_convs[0]) {
        return Err(bad("some upsamplers have convs and some do not".into()));
    }
    let first = channels[0];
    let ch = if first > 0 && channels.iter().all(|c| c % first == 0) {
        first
    } else {
        channels.iter().copied().fold(0, gcd)
    };
    if ch == 0 {
        return Err(bad(format!("level channels {channels:?}")));
    }
    let class = match naming {
        Naming::Diffusers => DecoderClass::CogVideoXDecoder3d,
        Naming::Upstream if post_quant_conv => DecoderClass::NewDecoder3d,
        Naming::Upstream => DecoderClass::MovqDecoder3d,
    };

    let mut not_inferred = Vec::new();
    let mut assume = |field, value: String, reason: &str| {
        not_inferred.push(Assumed { field, value, reason: reason.to_string() })
    };
    let default_res = if naming == Naming::Diffusers { 480 } else { 256usize.max(1 << (levels - 1).min(32)) };
    let resolution = hints.resolution.unwrap_or(default_res);
    let attn_resolutions: Vec<usize> = (0..levels)
        .filter(|&i| attention[i])
        .filter_map(|i| level_resolution(resolution, levels, i))
        .collect();
    match hints.resolution {
        Some(r) => assume("resolution", r.to_string(), "given"),
        None => assume(
            "resolution",
            resolution.to_string(),
            "only places attention; attn_resolutions is set so this value reproduces the attention found",
        ),
    }
    let pad_mode = hints.pad_mode.unwrap_or(PadMode::First);
    assume(
        "pad_mode",
        format!("{pad_mode:?}").to_lowercase(),
        if hints.pad_mode.is_some() {
            "given"
        } else {
            "padding leaves no trace in the weights; the decoders' default"
        },
    );
    let tct = hints.temporal_compress_times.unwrap_or(4);
    assume(
        "temporal_compress_times",
        tct.to_string(),
        if hints.temporal_compress_times.is_some() {
            "given"
        } else {
            "time-doubling upsamplers have the same weights as spatial-only ones; the decoders' default"
        },
    );
    assume("give_pre_end", "false".into(), "a call-time choice; the weights are the same");
    assume(
        "norm_num_groups",
        NORM_GROUPS.to_string(),
        "GroupNorm groups leave no trace in the weights; upstream's value",
    );
    assume("act_fn", "silu".into(), "activations have no weights; upstream's nonlinearity");
    let config = DecoderConfig {
        class,
        ch,
        out_ch,
        ch_mult: channels.iter().map(|c| c / ch).collect(),
        num_res_blocks: blocks.unwrap_or(1) - 1,
        attn_resolutions,
        dropout: 0.0,
        resamp_with_conv: upsample_convs.first().copied().unwrap_or(true),
        in_channels: None,
        resolution,
        z_channels,
        give_pre_end: false,
        zq_ch: (zq_ch != z_channels).then_some(zq_ch),
        add_conv,
        pad_mode,
        temporal_compress_times: tct,
        post_quant_conv,
        norm_num_groups: NORM_GROUPS,
        act_fn: Act::Silu,
    };
    let plan = DecoderPlan::new(&config).map_err(|e| bad(e.to_string()))?;
    if let Some(i) = (0..levels).find(|&i| plan.levels[i].attention != attention[i]) {
        return Err(bad(format!(
            "with resolution {resolution} the attention found at levels {:?} cannot be placed (level {i} clashes)",
            (0..levels).filter(|&i| attention[i]).collect::<Vec<_>>()
        )));
    }
    Ok(Inferred { config, not_inferred })
}

/// `n` if the names under `prefix` continue with indices exactly 0..n (n >= 1), else None.
fn index_count<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Option<usize> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if let Some(rest) = name.strip_prefix(prefix) {
            seen.insert(rest.split('.').next()?.parse::<usize>().ok()?);
        }
    }
    let n = seen.len();
    (n > 0 && seen.last() == Some(&(n - 1))).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_count_needs_contiguous_indices() {
        let names = ["up.0.x", "up.1.y", "up.2.z", "mid.a"];
        assert_eq!(index_count(names.iter().copied(), "up."), Some(3));
        assert_eq!(index_count(["up.0.x", "up.2.z"].iter().copied(), "up."), None);
        assert_eq!(index_count(["mid.a"].iter().copied(), "up."), None);
        assert_eq!(index_count(["up.x.a"].iter().copied(), "up."), None);
    }
}
