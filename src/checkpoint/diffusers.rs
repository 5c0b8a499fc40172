//! The diffusers `AutoencoderKLCogVideoX` decoder as a MOVQDecoder3D (spec sections 10.2-10.5):
//! weight-name mapping (both directions from one rule table) and config conversion. For a whole-clip decode with odd T (or T = 1) the
//! diffusers decoder and MOVQDecoder3D (pad_mode "first", no attention, no add_conv) are the same
//! function (spec 10.5); even T and the chunked `vae.decode` follow other frame rules.

use crate::error::{Error, Result};
use crate::model::config::{Act, DecoderClass, DecoderConfig, NORM_GROUPS, PadMode};
use crate::model::config_keys::{Kind, check_keys};
use serde_json::Value;

/// One segment of a name pattern.
#[derive(Clone, Copy)]
enum Seg {
    Lit(&'static str),
    /// A level index: upstream's `i` on one side, diffusers' `L - 1 - i` on the other.
    Level,
    /// Any one segment, copied.
    Any,
}

use Seg::{Any, Level, Lit};

/// (upstream, diffusers) module-path patterns (spec 10.4), tried in order at every position.
const RULES: &[(&[Seg], &[Seg])] = &[
    (&[Lit("mid"), Lit("block_1")], &[Lit("mid_block"), Lit("resnets"), Lit("0")]),
    (&[Lit("mid"), Lit("block_2")], &[Lit("mid_block"), Lit("resnets"), Lit("1")]),
    (&[Lit("up"), Level, Lit("block")], &[Lit("up_blocks"), Level, Lit("resnets")]),
    (&[Lit("up"), Level, Lit("upsample")], &[Lit("up_blocks"), Level, Lit("upsamplers"), Lit("0")]),
    (&[Lit("up"), Level, Any], &[Lit("up_blocks"), Level, Any]),
    (&[Lit("nin_shortcut")], &[Lit("conv_shortcut")]),
];

/// Rewrites `name` from one naming to the other: `to_diffusers` picks the direction. Segments no
/// rule matches are kept.
fn rewrite(name: &str, levels: usize, to_diffusers: bool) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len() + 2);
    let mut i = 0;
    'outer: while i < parts.len() {
        for &(up, diff) in RULES {
            let (from, to) = if to_diffusers { (up, diff) } else { (diff, up) };
            let (mut level, mut any) = (None, None);
            let matched = from.len() <= parts.len() - i
                && from.iter().zip(&parts[i..]).all(|(seg, part)| match seg {
                    Lit(l) => l == part,
                    Level => {
                        level = part.parse::<usize>().ok().filter(|&k| k < levels);
                        level.is_some()
                    }
                    Any => {
                        any = Some(*part);
                        true
                    }
                });
            if !matched {
                continue;
            }
            for seg in to {
                out.push(match seg {
                    Lit(l) => l.to_string(),
                    Level => (levels - 1 - level.unwrap_or(0)).to_string(),
                    Any => any.unwrap_or_default().to_string(),
                });
            }
            i += from.len();
            continue 'outer;
        }
        out.push(parts[i].to_string());
        i += 1;
    }
    out.join(".")
}

/// The diffusers name (without the `decoder.` prefix) of module path `path` of a decoder with
/// `levels` up levels: `mid.block_{1,2}` -> `mid_block.resnets.{0,1}`, `up.{i}.block.{j}` ->
/// `up_blocks.{L-1-i}.resnets.{j}`, `up.{i}.upsample` -> `up_blocks.{L-1-i}.upsamplers.0`,
/// `nin_shortcut` -> `conv_shortcut` (spec 10.4).
pub fn diffusers_key(path: &str, levels: usize) -> String {
    rewrite(path, levels, true)
}

/// The upstream module path of diffusers name `name` (without the `decoder.` prefix) of a
/// decoder with `levels` up levels: the inverse of [`diffusers_key`].
pub fn upstream_key(name: &str, levels: usize) -> String {
    rewrite(name, levels, false)
}

/// The keys of diffusers' `AutoencoderKLCogVideoX` config (its `__init__` arguments) and their
/// JSON types. Keys starting with `_` (`_class_name`, `_diffusers_version`, `_name_or_path`,
/// `_use_default_values`) are diffusers' bookkeeping and also accepted.
pub const DIFFUSERS_KEYS: &[(&str, Kind)] = &[
    ("in_channels", Kind::UInt),
    ("out_channels", Kind::UInt),
    ("down_block_types", Kind::StrList),
    ("up_block_types", Kind::StrList),
    ("block_out_channels", Kind::UIntList),
    ("latent_channels", Kind::UInt),
    ("layers_per_block", Kind::UInt),
    ("act_fn", Kind::Str),
    ("norm_eps", Kind::Number),
    ("norm_num_groups", Kind::UInt),
    ("temporal_compression_ratio", Kind::Number),
    ("sample_height", Kind::UInt),
    ("sample_width", Kind::UInt),
    ("scaling_factor", Kind::Number),
    ("shift_factor", Kind::NumberOrNull),
    ("latents_mean", Kind::NumberListOrNull),
    ("latents_std", Kind::NumberListOrNull),
    ("force_upcast", Kind::Bool),
    ("use_quant_conv", Kind::Bool),
    ("use_post_quant_conv", Kind::Bool),
    ("invert_scale_latents", Kind::Bool),
];

/// The diffusers class movq decodes.
pub const DIFFUSERS_CLASS: &str = "AutoencoderKLCogVideoX";

/// The MOVQDecoder3D config equivalent to a diffusers `AutoencoderKLCogVideoX` config.json.
///
/// How each key reaches the decoder (diffusers 0.42 autoencoder_kl_cogvideox.py):
/// `norm_num_groups` sets every GroupNorm's groups; `act_fn` is the resnet blocks'
/// nonlinearity (`conv_act` after `norm_out` stays SiLU); `norm_eps` is passed to the resnets
/// but their norms are `CogVideoXSpatialNorm3D`s, which hard-code eps 1e-6, so the decoder
/// never reads it; keys that only concern the encoder, the pipeline's latent scaling or
/// memory (`down_block_types`, `use_quant_conv`, `shift_factor`, `latents_mean/std`,
/// `force_upcast`, `invert_scale_latents`) change nothing here.
pub fn config_from_diffusers(v: &Value) -> Result<DecoderConfig> {
    check_keys(v, DIFFUSERS_KEYS, true, "diffusers config")?;
    let bad = |m: String| Error::InvalidConfig(format!("diffusers config: {m}"));
    if let Some(class) = v.get("_class_name")
        && class.as_str() != Some(DIFFUSERS_CLASS)
    {
        return Err(Error::Unsupported(format!(
            "diffusers config: `_class_name` is {class}; movq decodes `{DIFFUSERS_CLASS}` only"
        )));
    }
    let num = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
    let boc: Vec<usize> = v
        .get("block_out_channels")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no block_out_channels".into()))?
        .iter()
        .filter_map(|x| x.as_u64().map(|x| x as usize))
        .collect();
    let ch = *boc.first().ok_or_else(|| bad("block_out_channels is empty".into()))?;
    if ch == 0 || boc.iter().any(|c| c % ch != 0) {
        return Err(bad(format!("block_out_channels {boc:?} are not multiples of the first")));
    }
    if let Some(types) = v.get("up_block_types").and_then(Value::as_array) {
        if types.len() != boc.len() {
            return Err(bad(format!("{} up_block_types for {} block_out_channels", types.len(), boc.len())));
        }
        if let Some(t) = types.iter().find(|t| t.as_str() != Some("CogVideoXUpBlock3D")) {
            return Err(Error::Unsupported(format!(
                "diffusers config: up block type {t}; movq decodes `CogVideoXUpBlock3D` only"
            )));
        }
    }
    let act_fn = match v.get("act_fn").and_then(Value::as_str) {
        None => Act::Silu,
        Some(name) => Act::from_diffusers(name).ok_or_else(|| {
            Error::Unsupported(format!(
                "diffusers config: act_fn {name:?} (diffusers' get_activation knows {})",
                Act::DIFFUSERS_NAMES.join(", ")
            ))
        })?,
    };
    if v.get("use_post_quant_conv").and_then(Value::as_bool).unwrap_or(false) {
        return Err(Error::Unsupported("diffusers config: use_post_quant_conv = true".into()));
    }
    // diffusers takes int(log2(ratio)) of a float; only a power of two means what it says.
    let tcr = v.get("temporal_compression_ratio").and_then(Value::as_f64).unwrap_or(4.0);
    if !(tcr >= 1.0 && tcr.fract() == 0.0 && tcr <= 1024.0 && (tcr as usize).is_power_of_two()) {
        return Err(bad(format!("temporal_compression_ratio {tcr} is not a power of two")));
    }
    let cfg = DecoderConfig {
        class: DecoderClass::CogVideoXDecoder3d,
        ch,
        out_ch: num("out_channels").unwrap_or(3),
        ch_mult: boc.iter().map(|c| c / ch).collect(),
        num_res_blocks: num("layers_per_block").unwrap_or(3),
        attn_resolutions: vec![],
        dropout: 0.0,
        resamp_with_conv: true,
        in_channels: num("in_channels"),
        resolution: num("sample_height").unwrap_or(480),
        z_channels: num("latent_channels").unwrap_or(16),
        give_pre_end: false,
        zq_ch: None,
        add_conv: false,
        pad_mode: PadMode::First,
        temporal_compress_times: tcr as usize,
        post_quant_conv: false,
        norm_num_groups: num("norm_num_groups").unwrap_or(NORM_GROUPS),
        act_fn,
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_key_mapping_spec_10_4() {
        assert_eq!(diffusers_key("conv_in.conv.weight", 4), "conv_in.conv.weight");
        assert_eq!(
            diffusers_key("mid.block_1.norm1.conv_y.conv.bias", 4),
            "mid_block.resnets.0.norm1.conv_y.conv.bias"
        );
        assert_eq!(
            diffusers_key("mid.block_2.conv2.conv.weight", 4),
            "mid_block.resnets.1.conv2.conv.weight"
        );
        assert_eq!(
            diffusers_key("up.3.block.0.conv1.conv.weight", 4),
            "up_blocks.0.resnets.0.conv1.conv.weight"
        );
        assert_eq!(
            diffusers_key("up.0.block.0.nin_shortcut.weight", 4),
            "up_blocks.3.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(diffusers_key("up.1.upsample.conv.bias", 4), "up_blocks.2.upsamplers.0.conv.bias");
        assert_eq!(diffusers_key("norm_out.norm_layer.weight", 4), "norm_out.norm_layer.weight");
    }

    #[test]
    fn upstream_key_inverts_diffusers_key() {
        for name in [
            "conv_in.conv.weight",
            "mid.block_1.norm1.conv_y.conv.bias",
            "mid.block_2.conv2.conv.weight",
            "up.3.block.0.conv1.conv.weight",
            "up.0.block.2.nin_shortcut.weight",
            "up.1.upsample.conv.bias",
            "norm_out.norm_layer.weight",
        ] {
            assert_eq!(upstream_key(&diffusers_key(name, 4), 4), name);
        }
    }

    #[test]
    fn diffusers_config_cogvideox_2b() {
        let v: Value = serde_json::from_str(
            r#"{"block_out_channels": [128, 256, 256, 512], "layers_per_block": 3, "latent_channels": 16,
                "norm_num_groups": 32, "norm_eps": 1e-06, "temporal_compression_ratio": 4, "out_channels": 3}"#,
        )
        .unwrap();
        let c = config_from_diffusers(&v).unwrap();
        assert_eq!((c.ch, c.ch_mult.clone(), c.num_res_blocks, c.z_channels), (128, vec![1, 2, 2, 4], 3, 16));
        assert!(crate::model::DecoderPlan::new(&c).unwrap().levels.iter().all(|l| !l.attention));
    }
}
