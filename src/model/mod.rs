//! The decoder module tree, mirroring CogVideo's movq_dec_3d.py; struct fields are named like
//! the state-dict keys.
//!
//! Layers, lowest first: `config` (the constructor arguments) and `schedule` (the vocabulary of
//! decode modes, tiles, frame batches and stages); `plan` (the architecture derived once from
//! a config); the modules (`conv`, `spatial_norm`, `resnet`, `attention`, `upsample`);
//! `decoder` (one decoder call); `decode` (every decode mode) and `memory` (the estimate).

pub mod attention;
pub mod config;
pub mod config_keys;
pub mod conv;
pub mod decode;
pub mod decoder;
pub mod memory;
pub mod plan;
pub mod resnet;
pub mod schedule;
pub mod spatial_norm;
pub mod trace;
pub mod upsample;

pub use config::{DecoderClass, DecoderConfig, FrameRule, PadMode};
pub use decoder::{Decoder, DecoderCache};
pub use plan::DecoderPlan;
pub use schedule::{DecodeMode, Progress, Stage, TileConfig, chunk_schedule};
pub use trace::{Tap, Tracer};
