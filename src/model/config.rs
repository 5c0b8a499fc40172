//! `DecoderConfig`: the constructor arguments of `MOVQDecoder3D` / `NewDecoder3D`, with the
//! upstream names and defaults (spec section 7.1), read from JSON.

use crate::error::{Error, Result};
use crate::io::WeightFile;
use crate::tensor::Shape;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Channels per GroupNorm group count: every norm in these decoders has 32 groups.
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
}

/// When the first frame of a clip is handled apart (SpatialNorm's zq resize, Upsample3D's time
/// doubling); spec 12, item 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRule {
    /// MOVQDecoder3D: whenever the clip has more than one frame (T -> 2T - 1).
    Movq,
    /// diffusers: only for an odd number of frames above one; even T doubles whole (T -> 2T).
    Diffusers,
}

impl FrameRule {
    /// True if a clip of `t` frames gets the first-frame split.
    pub fn splits_first(self, t: usize) -> bool {
        match self {
            FrameRule::Movq => t > 1,
            FrameRule::Diffusers => t > 1 && t % 2 == 1,
        }
    }

    /// Frames after a time-doubling Upsample3D of `t` frames: 2t - 1 with the first-frame
    /// split, 2t without, 1 for a single frame; `None` on overflow.
    pub fn upsampled_frames(self, t: usize) -> Option<usize> {
        match t {
            0 | 1 => Some(t),
            t if self.splits_first(t) => t.checked_mul(2)?.checked_sub(1),
            t => t.checked_mul(2),
        }
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

/// Constructor arguments of the decoder, named as upstream. Unknown keys are ignored, as
/// upstream's `**ignorekwargs` does.
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
}

impl DecoderConfig {
    /// Parses a JSON object with the upstream argument names.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: DecoderConfig =
            serde_json::from_str(text).map_err(|e| Error::InvalidConfig(format!("config JSON: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::io::paths::read_small_text(path, "config", crate::io::paths::MAX_JSON_BYTES)?;
        Self::from_json(&text).map_err(|e| match e {
            Error::InvalidConfig(m) => Error::InvalidConfig(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Reads the config from a safetensors header: `__metadata__` key `meta` holding JSON with
    /// `config` (and optionally `class`), as the golden files do; or a `config` key holding the
    /// config JSON directly.
    pub fn from_metadata(file: &WeightFile) -> Result<Self> {
        let md = file.metadata();
        let bad = |m: String| Error::InvalidConfig(format!("{}: {m}", file.path().display()));
        if let Some(meta) = md.get("meta") {
            let v: serde_json::Value =
                serde_json::from_str(meta).map_err(|e| bad(format!("metadata `meta`: {e}")))?;
            let mut cfg =
                v.get("config").cloned().ok_or_else(|| bad("metadata `meta` has no `config`".into()))?;
            if let (Some(class), Some(obj)) = (v.get("class"), cfg.as_object_mut()) {
                obj.insert("class".into(), class.clone());
            }
            let cfg: DecoderConfig =
                serde_json::from_value(cfg).map_err(|e| bad(format!("metadata config: {e}")))?;
            cfg.validate().map_err(|e| bad(e.to_string()))?;
            return Ok(cfg);
        }
        if let Some(text) = md.get("config") {
            return Self::from_json(text).map_err(|e| bad(e.to_string()));
        }
        Err(bad("no decoder config in the safetensors metadata (pass --config)".into()))
    }

    /// Checks the configuration; rejects what upstream would crash on.
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
        for (i, &m) in self.ch_mult.iter().enumerate() {
            let c = self
                .ch
                .checked_mul(m)
                .ok_or_else(|| Error::InvalidConfig("ch * ch_mult overflows".into()))?;
            if c == 0 {
                return err(format!("ch_mult[{i}] is 0"));
            }
            if c > MAX_CHANNELS {
                return err(format!("ch * ch_mult[{i}] = {c} is above {MAX_CHANNELS} channels"));
            }
            if c % NORM_GROUPS != 0 {
                return Err(Error::GroupCount {
                    place: format!("level {i} (ch {} * ch_mult[{i}] {m})", self.ch),
                    channels: c,
                    groups: NORM_GROUPS,
                });
            }
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

    /// The first-frame rule of the configured class.
    pub fn frame_rule(&self) -> FrameRule {
        match self.class {
            DecoderClass::CogVideoXDecoder3d => FrameRule::Diffusers,
            _ => FrameRule::Movq,
        }
    }

    /// Output frames of one decoder call on `t` latent frames: every time-compressing level
    /// maps T to 2T - 1 with the first-frame split, else to 2T (T = 1 stays 1).
    pub fn output_frames(&self, t: usize) -> Option<usize> {
        let n_t = self.temporal_levels().min(self.levels() - 1);
        let rule = self.frame_rule();
        (0..n_t).try_fold(t, |t, _| rule.upsampled_frames(t))
    }

    /// Number of resolution levels, L = len(ch_mult).
    pub fn levels(&self) -> usize {
        self.ch_mult.len()
    }

    /// int(log2(temporal_compress_times)), truncated as upstream.
    pub fn temporal_levels(&self) -> usize {
        self.temporal_compress_times.ilog2() as usize
    }

    /// Whether level `i`'s upsampler doubles time: `i >= L - tcl`.
    pub fn compress_time(&self, i_level: usize) -> bool {
        i_level + self.temporal_levels() >= self.levels()
    }

    /// Whether level `i` gets attention blocks: its configured resolution
    /// `(resolution // 2^(L-1)) * 2^(L-1-i)` is in attn_resolutions.
    pub fn has_attention(&self, i_level: usize) -> bool {
        let l = self.levels();
        let base = self.resolution >> (l - 1).min(63);
        let res = base.checked_shl((l - 1 - i_level) as u32).unwrap_or(0);
        self.attn_resolutions.contains(&res)
    }

    /// Input shape check and output shape for a latent of `z` (spec 7.3), with checked sizes.
    pub fn output_shape(&self, z: Shape) -> Result<Shape> {
        if z.c != self.zq_ch() {
            return Err(Error::LatentChannels { shape: z.to_string(), expected: self.zq_ch(), got: z.c });
        }
        if z.n == 0 || z.d == 0 || z.h == 0 || z.w == 0 {
            return Err(Error::ShapeMismatch {
                op: "decoder input z",
                expected: "non-zero batch, frames, height and width".into(),
                got: z.to_string(),
            });
        }
        let up = self.levels() - 1;
        let too_large =
            || Error::TooLarge { what: format!("decoder output for z {z}"), reason: "size overflows".into() };
        let scale = 1usize.checked_shl(up as u32).filter(|&s| s != 0).ok_or_else(too_large)?;
        let d = self.output_frames(z.d).ok_or_else(too_large)?;
        let c = if self.give_pre_end { self.ch * self.ch_mult[0] } else { self.out_ch };
        let out = Shape::new(
            z.n,
            c,
            d,
            z.h.checked_mul(scale).ok_or_else(too_large)?,
            z.w.checked_mul(scale).ok_or_else(too_large)?,
        );
        out.numel()?;
        Ok(out)
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
    fn config_seed_defaults_and_derived_values() {
        let c = DecoderConfig::from_json(seed_json()).unwrap();
        assert_eq!(c.pad_mode, PadMode::First);
        assert_eq!(c.temporal_compress_times, 4);
        assert_eq!(c.zq_ch(), 256);
        assert_eq!((0..4).map(|i| c.compress_time(i)).collect::<Vec<_>>(), vec![false, false, true, true]);
        assert!((0..4).all(|i| !c.has_attention(i)), "seed has no attention (spec 7.4)");
        assert_eq!(c.output_shape(Shape::new(1, 256, 4, 16, 16)).unwrap(), Shape::new(1, 3, 13, 128, 128));
        assert_eq!(c.output_shape(Shape::new(1, 256, 5, 32, 32)).unwrap(), Shape::new(1, 3, 17, 256, 256));
        let c128 = DecoderConfig { resolution: 128, ..c };
        assert!(c128.has_attention(3) && !c128.has_attention(2));
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
        let c = DecoderConfig { ch: 100, ..base.clone() };
        assert!(matches!(c.validate(), Err(Error::GroupCount { channels: 100, .. })));
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

    #[test]
    fn config_temporal_levels_truncate_like_numpy_log2() {
        let base = DecoderConfig::from_json(seed_json()).unwrap();
        for (tct, tcl) in [(1, 0), (2, 1), (3, 1), (4, 2), (8, 3)] {
            assert_eq!(DecoderConfig { temporal_compress_times: tct, ..base.clone() }.temporal_levels(), tcl);
        }
    }
}
