//! [`DecoderPlan`]: the decoder's architecture as one value, derived once from a
//! [`DecoderConfig`] (spec section 7): per level its channels, blocks, attention, and how its
//! upsampler scales time and space; the first-frame rule; the options every norm and conv
//! shares. Loading, the forward pass, FLOP counting, the memory estimate, progress stages and
//! config inference read the plan; nothing else re-derives levels, channels or frame doubling.

use super::config::{Act, DecoderClass, DecoderConfig, FrameRule, NORM_EPS, PadMode};
use super::schedule::Stage;
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// What every SpatialNorm, resnet block and attention block of one decoder shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModuleOptions {
    /// Channels of the conditioning zq.
    pub zq_ch: usize,
    /// SpatialNorm3D's extra 3x3x3 conv on zq.
    pub add_conv: bool,
    /// Padding of the resnet blocks' causal convs (SpatialNorm's convs always pad "constant").
    pub pad_mode: PadMode,
    /// When zq's first frame (and an upsampler's) is handled apart.
    pub rule: FrameRule,
    pub norm_groups: usize,
    pub norm_eps: f64,
    /// The resnet blocks' nonlinearity (norm_out's is always SiLU).
    pub act: Act,
}

/// An upsampler: nearest 2x in space, in time too when `time` (spec 6), then a 3x3 conv when
/// `with_conv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpsamplePlan {
    pub with_conv: bool,
    pub time: bool,
}

/// One entry of upstream's `up`: `blocks` resnet blocks from `c_in` to `c_out` channels (the
/// first changes the channels), an attention block after each when `attention`, then the
/// upsampler (none at level 0).
#[derive(Clone, Debug, PartialEq)]
pub struct LevelPlan {
    pub c_in: usize,
    pub c_out: usize,
    pub blocks: usize,
    pub attention: bool,
    pub upsample: Option<UpsamplePlan>,
}

impl LevelPlan {
    /// Input channels of block `j`.
    pub fn block_in(&self, j: usize) -> usize {
        if j == 0 { self.c_in } else { self.c_out }
    }

    /// (frames, height, width) after this level's upsampler; `None` on overflow.
    /// The one place a level's time and space scaling is written.
    pub fn upsampled(&self, dims: Dims, rule: FrameRule) -> Option<Dims> {
        let Some(up) = self.upsample else { return Some(dims) };
        let t = if up.time { rule.upsampled_frames(dims.0)? } else { dims.0 };
        Some((t, dims.1.checked_mul(2)?, dims.2.checked_mul(2)?))
    }
}

/// The resolution level `i` of `levels` has for a decoder configured with `resolution`:
/// `(resolution // 2^(L-1)) * 2^(L-1-i)`. A level gets attention when it is in
/// `attn_resolutions` (upstream's placement rule). `None` for a shift past the word size.
pub fn level_resolution(resolution: usize, levels: usize, i: usize) -> Option<usize> {
    let base = resolution >> (levels - 1).min(63);
    base.checked_shl((levels - 1 - i) as u32)
}

/// (frames, height, width) of an activation.
pub type Dims = (usize, usize, usize);

/// The activation sizes a forward pass on one latent goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// At the input convs and the mid block (the latent's size).
    pub mid: Dims,
    /// Per level (index = level): (inside the level's blocks, after its upsampler).
    pub levels: Vec<(Dims, Dims)>,
    /// At norm_out and conv_out.
    pub out: Dims,
}

/// The decoder's architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderPlan {
    config: DecoderConfig,
    pub modules: ModuleOptions,
    pub z_channels: usize,
    /// NewDecoder3D's post_quant_conv (zq_ch -> z_channels) runs before conv_in.
    pub post_quant_conv: bool,
    /// Channels of conv_in's output and the mid block.
    pub mid_channels: usize,
    /// Index = level; `up[L-1]` runs first.
    pub levels: Vec<LevelPlan>,
    /// Channels into norm_out / conv_out (level 0's output).
    pub out_in_channels: usize,
    pub out_ch: usize,
    /// Stop before norm_out (upstream's give_pre_end).
    pub give_pre_end: bool,
}

impl DecoderPlan {
    /// Validates `config` and derives the architecture.
    pub fn new(config: &DecoderConfig) -> Result<Self> {
        config.validate()?;
        let c = config;
        let l = c.ch_mult.len();
        let channels: Vec<usize> = c
            .ch_mult
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let ch =
                    c.ch.checked_mul(m)
                        .ok_or_else(|| Error::InvalidConfig("ch * ch_mult overflows".into()))?;
                if ch == 0 {
                    return Err(Error::InvalidConfig(format!("ch_mult[{i}] is 0")));
                }
                if ch > super::config::MAX_CHANNELS {
                    return Err(Error::InvalidConfig(format!(
                        "ch * ch_mult[{i}] = {ch} is above {} channels",
                        super::config::MAX_CHANNELS
                    )));
                }
                if ch % c.norm_num_groups != 0 {
                    return Err(Error::GroupCount {
                        place: format!("level {i} (ch {} * ch_mult[{i}] {m})", c.ch),
                        channels: ch,
                        groups: c.norm_num_groups,
                    });
                }
                Ok(ch)
            })
            .collect::<Result<_>>()?;
        let rule = match c.class {
            DecoderClass::CogVideoXDecoder3d | DecoderClass::ContextParallelDecoder3d => FrameRule::Diffusers,
            DecoderClass::MovqDecoder3d | DecoderClass::NewDecoder3d => FrameRule::Movq,
        };
        // int(log2(temporal_compress_times)), truncated as upstream; levels i >= L - tcl double time.
        let tcl = c.temporal_compress_times.ilog2() as usize;
        let attention =
            |i: usize| level_resolution(c.resolution, l, i).is_some_and(|r| c.attn_resolutions.contains(&r));
        let mut levels = Vec::with_capacity(l);
        for i in 0..l {
            let c_in = if i + 1 == l { channels[l - 1] } else { channels[i + 1] };
            levels.push(LevelPlan {
                c_in,
                c_out: channels[i],
                blocks: c.num_res_blocks + 1,
                attention: attention(i),
                upsample: (i != 0)
                    .then_some(UpsamplePlan { with_conv: c.resamp_with_conv, time: i + tcl >= l }),
            });
        }
        Ok(DecoderPlan {
            config: c.clone(),
            modules: ModuleOptions {
                zq_ch: c.zq_ch(),
                add_conv: c.add_conv,
                pad_mode: c.pad_mode,
                rule,
                norm_groups: c.norm_num_groups,
                norm_eps: NORM_EPS,
                act: c.act_fn,
            },
            z_channels: c.z_channels,
            post_quant_conv: c.uses_post_quant_conv(),
            mid_channels: channels[l - 1],
            levels,
            out_in_channels: channels[0],
            out_ch: c.out_ch,
            give_pre_end: c.give_pre_end,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The first-frame rule.
    pub fn rule(&self) -> FrameRule {
        self.modules.rule
    }

    /// Levels in execution order: `L-1` down to 0.
    pub fn levels_in_order(&self) -> impl Iterator<Item = (usize, &LevelPlan)> {
        self.levels.iter().enumerate().rev()
    }

    /// Output frames of one decoder call on `t` latent frames; `None` on overflow.
    pub fn output_frames(&self, t: usize) -> Option<usize> {
        let rule = self.rule();
        self.levels_in_order().try_fold((t, 1, 1), |d, (_, lv)| lv.upsampled(d, rule)).map(|d| d.0)
    }

    /// How much the decoder enlarges height and width.
    pub fn space_scale(&self) -> usize {
        self.levels.iter().filter(|l| l.upsample.is_some()).fold(1usize, |s, _| s.saturating_mul(2))
    }

    /// The activation sizes of a forward pass on z, after checking z (channels, no empty axis,
    /// an output size that fits).
    pub fn walk(&self, z: Shape) -> Result<Walk> {
        if z.c != self.modules.zq_ch {
            return Err(Error::LatentChannels {
                shape: z.to_string(),
                expected: self.modules.zq_ch,
                got: z.c,
            });
        }
        if z.n == 0 || z.d == 0 || z.h == 0 || z.w == 0 {
            return Err(Error::ShapeMismatch {
                op: "decoder input z",
                expected: "non-zero batch, frames, height and width".into(),
                got: z.to_string(),
            });
        }
        let too_large =
            || Error::TooLarge { what: format!("decoder output for z {z}"), reason: "size overflows".into() };
        let mid = (z.d, z.h, z.w);
        let mut levels = vec![(mid, mid); self.levels.len()];
        let mut d = mid;
        for (i, lv) in self.levels_in_order() {
            let after = lv.upsampled(d, self.rule()).ok_or_else(too_large)?;
            levels[i] = (d, after);
            d = after;
        }
        let c = if self.give_pre_end { self.out_in_channels } else { self.out_ch };
        Shape::new(z.n, c, d.0, d.1, d.2).numel().map_err(|_| too_large())?;
        Ok(Walk { mid, levels, out: d })
    }

    /// Output shape of one decoder call on z (spec 7.3). z: (b, zq_ch, t, h, w)
    pub fn output_shape(&self, z: Shape) -> Result<Shape> {
        let out = self.walk(z)?.out;
        let c = if self.give_pre_end { self.out_in_channels } else { self.out_ch };
        Ok(Shape::new(z.n, c, out.0, out.1, out.2))
    }

    /// FLOPs of each stage of one forward pass on z, in execution order, counted as spec 13.1
    /// does: 2 x MACs of every conv and attention matmul; SpatialNorm's conv_y/conv_b at f's
    /// resolution, as upstream runs them.
    pub fn stage_flops(&self, z: Shape) -> Result<Vec<(Stage, u128)>> {
        let walk = self.walk(z)?;
        let zq = self.modules.zq_ch as u128;
        let add_conv = self.modules.add_conv;
        let b = z.n as u128;
        let vox = |d: Dims| b * d.0 as u128 * d.1 as u128 * d.2 as u128;
        let conv3 = |cin: usize, cout: usize, v: u128| 27 * cin as u128 * cout as u128 * v;
        let norm = |c: usize, v: u128| 2 * zq * c as u128 * v + if add_conv { 27 * zq * zq * v } else { 0 };
        let resblock = |cin: usize, cout: usize, v: u128| {
            norm(cin, v)
                + conv3(cin, cout, v)
                + norm(cout, v)
                + conv3(cout, cout, v)
                + if cin != cout { cin as u128 * cout as u128 * v } else { 0 }
        };
        let v = vox(walk.mid);
        let mut macs = 0u128;
        if self.post_quant_conv {
            macs += conv3(self.modules.zq_ch, self.z_channels, v);
        }
        macs += conv3(self.z_channels, self.mid_channels, v);
        macs += 2 * resblock(self.mid_channels, self.mid_channels, v);
        let mut stages = vec![(Stage::Mid, 2 * macs)];
        for (i, lv) in self.levels_in_order() {
            let (at, after) = walk.levels[i];
            let v = vox(at);
            macs = 0;
            for j in 0..lv.blocks {
                macs += resblock(lv.block_in(j), lv.c_out, v);
                if lv.attention {
                    let (c, n) = (lv.c_out as u128, at.1 as u128 * at.2 as u128);
                    macs += norm(lv.c_out, v) + b * at.0 as u128 * (4 * c * c * n + 2 * c * n * n);
                }
            }
            if lv.upsample.is_some_and(|u| u.with_conv) {
                macs += 9 * lv.c_out as u128 * lv.c_out as u128 * vox(after);
            }
            stages.push((Stage::Level(i), 2 * macs));
        }
        macs = 0;
        if !self.give_pre_end {
            let v = vox(walk.out);
            macs += norm(self.out_in_channels, v) + conv3(self.out_in_channels, self.out_ch, v);
        }
        stages.push((Stage::Out, 2 * macs));
        Ok(stages)
    }

    /// FLOPs of one forward pass on z.
    pub fn flops(&self, z: Shape) -> Result<u128> {
        Ok(self.stage_flops(z)?.iter().map(|(_, f)| f).sum())
    }

    /// Chunked decoding needs every time-mixing op to be a causal "first" conv: refuses add_conv
    /// (its SpatialNorm conv pads time with zeros on both sides) and other pad modes.
    pub fn check_chunkable(&self) -> Result<()> {
        let m = &self.modules;
        if m.add_conv || m.pad_mode != PadMode::First {
            return Err(Error::Unsupported(format!(
                "chunked decoding needs pad_mode \"first\" and add_conv = false (config has pad_mode {:?}, \
                 add_conv {})",
                m.pad_mode, m.add_conv
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> DecoderConfig {
        DecoderConfig::from_json(
            r#"{"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                "in_channels": 3, "resolution": 256, "z_channels": 256}"#,
        )
        .unwrap()
    }

    #[test]
    fn plan_seed_levels() {
        let p = DecoderPlan::new(&seed()).unwrap();
        let time: Vec<bool> = p.levels.iter().map(|l| l.upsample.is_some_and(|u| u.time)).collect();
        assert_eq!(time, vec![false, false, true, true]);
        assert!(p.levels.iter().all(|l| !l.attention), "seed has no attention (spec 7.4)");
        assert_eq!(
            p.levels.iter().map(|l| (l.c_in, l.c_out)).collect::<Vec<_>>(),
            [(256, 128), (512, 256), (512, 512), (512, 512)]
        );
        assert_eq!(p.output_shape(Shape::new(1, 256, 4, 16, 16)).unwrap(), Shape::new(1, 3, 13, 128, 128));
        assert_eq!(p.output_shape(Shape::new(1, 256, 5, 32, 32)).unwrap(), Shape::new(1, 3, 17, 256, 256));
        assert_eq!(p.space_scale(), 8);
        let p128 = DecoderPlan::new(&DecoderConfig { resolution: 128, ..seed() }).unwrap();
        assert!(p128.levels[3].attention && !p128.levels[2].attention);
    }

    #[test]
    fn plan_time_levels_truncate_like_numpy_log2() {
        for (tct, doubling) in [(1, 0), (2, 1), (4, 2), (8, 3), (16, 3)] {
            let p = DecoderPlan::new(&DecoderConfig { temporal_compress_times: tct, ..seed() }).unwrap();
            assert_eq!(p.levels.iter().filter(|l| l.upsample.is_some_and(|u| u.time)).count(), doubling);
        }
    }

    #[test]
    fn plan_refuses_channels_not_divisible_by_the_groups() {
        let c = DecoderConfig { ch: 100, ..seed() };
        assert!(matches!(DecoderPlan::new(&c), Err(Error::GroupCount { channels: 100, .. })));
    }

    #[test]
    fn flops_match_spec_section_13() {
        // MAC totals measured with forward hooks on the upstream modules (spec 13.2).
        let s = DecoderPlan::new(&seed()).unwrap();
        assert_eq!(s.flops(Shape::new(1, 256, 4, 16, 16)).unwrap(), 2 * 2_158_416_101_376);
        assert_eq!(s.flops(Shape::new(1, 256, 5, 32, 32)).unwrap(), 2 * 11_242_756_374_528);
        // Variants: NewDecoder3D add_conv + post_quant_conv 10.916 TFLOP; resolution 128 4.326 TFLOP.
        let nd = DecoderConfig {
            class: DecoderClass::NewDecoder3d,
            add_conv: true,
            post_quant_conv: true,
            ..seed()
        };
        let f = DecoderPlan::new(&nd).unwrap().flops(Shape::new(1, 256, 4, 16, 16)).unwrap() as f64 / 1e12;
        assert!((f - 10.916).abs() < 0.0005, "{f}");
        let r128 = DecoderPlan::new(&DecoderConfig { resolution: 128, ..seed() }).unwrap();
        let f = r128.flops(Shape::new(1, 256, 4, 16, 16)).unwrap() as f64 / 1e12;
        assert!((f - 4.326).abs() < 0.0005, "{f}");
    }
}
