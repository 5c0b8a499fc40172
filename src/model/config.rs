//! `DecoderConfig`: the constructor arguments of `MOVQDecoder3D` / `NewDecoder3D`, with the
//! upstream names and defaults (spec section 7.1), read from JSON.

use super::config_keys::{Kind, check_keys};
use crate::error::{Error, Result};
pub use crate::kernels::Act;
pub use crate::ops::resample::FrameRule;
use serde::{Deserialize, Serialize};

/// GroupNorm group count of every norm in upstream's decoders (diffusers: `norm_num_groups`).
pub const NORM_GROUPS: usize = 32;
/// Limits [`DecoderConfig::validate`] enforces.
pub const MAX_LEVELS: usize = 16;
pub const MAX_RES_BLOCKS: usize = 64;
pub const MAX_CHANNELS: usize = 1 << 16;
/// GroupNorm epsilon of every norm in these decoders.
pub const NORM_EPS: f64 = 1e-6;

/// Which upstream class the configuration builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderClass {
    #[default]
    #[serde(rename = "MOVQDecoder3D")]
    MovqDecoder3d,
    #[serde(rename = "NewDecoder3D")]
    NewDecoder3d,
    /// diffusers `CogVideoXDecoder3D` (the CogVideoX VAE decoder): MOVQDecoder3D's network with
    /// diffusers' first-frame rule (spec 10.2); weights use the diffusers names.
    #[serde(rename = "CogVideoXDecoder3D")]
    CogVideoXDecoder3d,
    /// The SAT CogVideoX VAE decoder (sat/vae_modules/cp_enc_dec.py, spec 9): MOVQDecoder3D's
    /// tree and names without attention, with the CogVideoX first-frame rule; decoded like the
    /// SAT release's `decode_first_stage` (frame batches with carried caches, spec 11.2).
    #[serde(rename = "ContextParallelDecoder3D")]
    ContextParallelDecoder3d,
}

impl DecoderClass {
    /// The class name as upstream spells it.
    pub fn name(self) -> &'static str {
        match self {
            DecoderClass::MovqDecoder3d => "MOVQDecoder3D",
            DecoderClass::NewDecoder3d => "NewDecoder3D",
            DecoderClass::CogVideoXDecoder3d => "CogVideoXDecoder3D",
            DecoderClass::ContextParallelDecoder3d => "ContextParallelDecoder3D",
        }
    }

    /// True for the CogVideoX VAE decoders (diffusers and SAT), which production decodes in
    /// frame batches.
    pub fn is_cogvideox(self) -> bool {
        matches!(self, DecoderClass::CogVideoXDecoder3d | DecoderClass::ContextParallelDecoder3d)
    }
}

/// CausalConv3d padding modes (spec section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    /// Replicate frame 0 in front (the decoders' default).
    First,
    /// Zeros, with upstream's pad-order quirk: W (2, 0), H (1, 1), T (1, 1) for k = 3.
    Constant,
    /// Frames 1.. reflected in front, zero-filled when the clip is too short.
    Reflect,
}

fn default_ch_mult() -> Vec<usize> {
    vec![1, 2, 4, 8]
}
fn default_true() -> bool {
    true
}
fn default_pad_mode() -> PadMode {
    PadMode::First
}
fn default_tct() -> usize {
    4
}
fn default_groups() -> usize {
    NORM_GROUPS
}

/// The keys a config with upstream argument names may have, and their JSON types: the
/// [`DecoderConfig`] fields, plus keys of the SAT yamls that do not change the decoder
/// (`double_z` only concerns the encoder; `gather_norm` gathers GroupNorm statistics over
/// context-parallel ranks, the identity in one process).
pub const UPSTREAM_KEYS: &[(&str, Kind)] = &[
    ("class", Kind::Str),
    ("ch", Kind::UInt),
    ("out_ch", Kind::UInt),
    ("ch_mult", Kind::UIntList),
    ("num_res_blocks", Kind::UInt),
    ("attn_resolutions", Kind::UIntList),
    ("dropout", Kind::Number),
    ("resamp_with_conv", Kind::Bool),
    ("in_channels", Kind::UIntOrNull),
    ("resolution", Kind::UInt),
    ("z_channels", Kind::UInt),
    ("give_pre_end", Kind::Bool),
    ("zq_ch", Kind::UIntOrNull),
    ("add_conv", Kind::Bool),
    ("pad_mode", Kind::Str),
    ("temporal_compress_times", Kind::UInt),
    ("post_quant_conv", Kind::Bool),
    ("norm_num_groups", Kind::UInt),
    ("act_fn", Kind::Str),
    ("double_z", Kind::Bool),
    ("gather_norm", Kind::Bool),
];
/// Constructor arguments of the decoder, named as upstream. Unlike upstream's `**ignorekwargs`,
/// [`Self::from_json`] refuses unknown keys ([`UPSTREAM_KEYS`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Not an upstream argument: which class to build (default `MOVQDecoder3D`).
    #[serde(default)]
    pub class: DecoderClass,
    pub ch: usize,
    pub out_ch: usize,
    #[serde(default = "default_ch_mult")]
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability; the identity at inference.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_true")]
    pub resamp_with_conv: bool,
    /// Stored but unused upstream.
    #[serde(default)]
    pub in_channels: Option<usize>,
    /// Only decides where attention blocks are placed.
    pub resolution: usize,
    pub z_channels: usize,
    #[serde(default)]
    pub give_pre_end: bool,
    /// Channels of the conditioning zq; `None` means `z_channels`.
    #[serde(default)]
    pub zq_ch: Option<usize>,
    #[serde(default)]
    pub add_conv: bool,
    #[serde(default = "default_pad_mode")]
    pub pad_mode: PadMode,
    #[serde(default = "default_tct")]
    pub temporal_compress_times: usize,
    /// NewDecoder3D only (MOVQDecoder3D swallows and ignores it, as upstream).
    #[serde(default)]
    pub post_quant_conv: bool,
    /// Not an upstream argument (upstream: 32): diffusers' `norm_num_groups`, the group count
    /// of every GroupNorm.
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// Not an upstream argument (upstream: SiLU): diffusers' `act_fn`, the resnet blocks'
    /// nonlinearity.
    #[serde(default)]
    pub act_fn: Act,
}

impl DecoderConfig {
    /// Parses a JSON object with the upstream argument names.
    pub fn from_json(text: &str) -> Result<Self> {
        let v = crate::io::json::parse_strict(text)
            .map_err(|e| Error::InvalidConfig(format!("config JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// [`Self::from_json`] on parsed JSON.
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        check_keys(v, UPSTREAM_KEYS, false, "config")?;
        // act_fn is matched as diffusers' get_activation does: case-insensitively.
        let mut v = v.clone();
        if let Some(a) = v.get_mut("act_fn") {
            let name = a.as_str().unwrap_or_default();
            let act = Act::from_diffusers(name).ok_or_else(|| {
                Error::Unsupported(format!(
                    "config: act_fn {name:?} (known: {})",
                    Act::DIFFUSERS_NAMES.join(", ")
                ))
            })?;
            *a = serde_json::Value::String(act.name().into());
        }
        let cfg = DecoderConfig::deserialize(&v).map_err(|e| Error::InvalidConfig(format!("config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the fields; rejects what upstream would crash on. The per-level checks (channel
    /// counts, GroupNorm groups) are [`super::plan::DecoderPlan::new`]'s.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::InvalidConfig(m));
        if self.ch_mult.is_empty() {
            return err("ch_mult is empty".into());
        }
        for (name, v) in [
            ("ch", self.ch),
            ("out_ch", self.out_ch),
            ("z_channels", self.z_channels),
            ("zq_ch", self.zq_ch()),
        ] {
            if v == 0 {
                return err(format!("{name} must be positive"));
            }
        }
        // Far above any real decoder (CogVideoX: 4 levels, 3 blocks, 512 channels); they keep
        // shape arithmetic and the per-block weight lists of a hostile config small.
        if self.ch_mult.len() > MAX_LEVELS {
            return err(format!(
                "{} levels (ch_mult entries); at most {MAX_LEVELS} are supported",
                self.ch_mult.len()
            ));
        }
        if self.num_res_blocks > MAX_RES_BLOCKS {
            return err(format!("num_res_blocks {} is above {MAX_RES_BLOCKS}", self.num_res_blocks));
        }
        for (name, v) in [
            ("ch", self.ch),
            ("out_ch", self.out_ch),
            ("z_channels", self.z_channels),
            ("zq_ch", self.zq_ch()),
        ] {
            if v > MAX_CHANNELS {
                return err(format!("{name} {v} is above {MAX_CHANNELS} channels"));
            }
        }
        if self.class == DecoderClass::ContextParallelDecoder3d && self.add_conv {
            // cp_enc_dec.py's SpatialNorm conv is a ContextParallelCausalConv3d that repeats
            // frame 0; MOVQ's pads "constant" with the pad-order quirk (spec 9, 12.2).
            return Err(Error::Unsupported(
                "ContextParallelDecoder3D with add_conv = true (its SpatialNorm conv pads time by repeating frame 0; \
                 not implemented)"
                    .into(),
            ));
        }
        if self.norm_num_groups == 0 {
            return err("norm_num_groups must be positive".into());
        }
        if self.act_fn == Act::Identity {
            return err("act_fn must be an activation".into());
        }
        if self.temporal_compress_times == 0 {
            return err("temporal_compress_times must be >= 1 (upstream takes its log2)".into());
        }
        if !self.temporal_compress_times.is_power_of_two() {
            let t = self.temporal_compress_times;
            return err(format!(
                "temporal_compress_times {t} is not a power of two (upstream truncates its log2, so it would act as {})",
                1usize << t.ilog2()
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout {} is not a probability in [0, 1)", self.dropout));
        }
        if self.zq_ch() != self.z_channels && !self.uses_post_quant_conv() {
            return err(format!(
                "zq_ch ({}) != z_channels ({}): z feeds both conv_in and every SpatialNorm, so upstream \
                 crashes unless NewDecoder3D with post_quant_conv=true",
                self.zq_ch(),
                self.z_channels
            ));
        }
        Ok(())
    }

    /// Channels of zq (and of the input z).
    pub fn zq_ch(&self) -> usize {
        self.zq_ch.unwrap_or(self.z_channels)
    }

    /// True if a post_quant_conv is built (NewDecoder3D only).
    pub fn uses_post_quant_conv(&self) -> bool {
        self.class == DecoderClass::NewDecoder3d && self.post_quant_conv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn seed_json() -> &'static str {
        r#"{"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [16],
            "in_channels": 3, "resolution": 256, "z_channels": 256, "double_z": false}"#
    }

    #[test]
    fn config_seed_defaults() {
        let c = DecoderConfig::from_json(seed_json()).unwrap();
        assert_eq!(c.pad_mode, PadMode::First);
        assert_eq!(c.temporal_compress_times, 4);
        assert_eq!(c.zq_ch(), 256);
    }

    #[test]
    fn config_rejects_what_upstream_crashes_on() {
        let base = DecoderConfig::from_json(seed_json()).unwrap();
        let bad = [
            DecoderConfig { zq_ch: Some(12), ..base.clone() },
            DecoderConfig { ch_mult: vec![], ..base.clone() },
            DecoderConfig { temporal_compress_times: 0, ..base.clone() },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))), "{c:?}");
        }
        let ok = DecoderConfig {
            class: DecoderClass::NewDecoder3d,
            post_quant_conv: true,
            zq_ch: Some(12),
            ..base
        };
        ok.validate().unwrap();
        assert!(DecoderConfig::from_json(r#"{"ch": 32}"#).is_err());
        assert!(
            DecoderConfig::from_json(&seed_json().replace("256,", "256, \"pad_mode\": \"zeros\",")).is_err()
        );
    }

    #[test]
    fn config_rejects_temporal_compress_times_not_a_power_of_two() {
        let json = seed_json().replace("\"double_z\"", "\"temporal_compress_times\": 3, \"double_z\"");
        let e = DecoderConfig::from_json(&json).unwrap_err();
        assert!(matches!(&e, Error::InvalidConfig(m) if m.contains("not a power of two")), "{e}");
    }
}
