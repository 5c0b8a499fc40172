//! The decoder module tree, mirroring CogVideo's movq_dec_3d.py; struct fields are named like
//! the state-dict keys.

pub mod attention;
pub mod chunked;
pub mod config;
pub mod conv;
pub mod decoder;
pub mod diffusers;
pub mod flops;
pub mod memory;
pub mod resnet;
pub mod spatial_norm;
pub mod tiled;
pub mod upsample;

pub use chunked::{DecodeMode, Progress, Stage, chunk_schedule};
pub use config::{DecoderClass, DecoderConfig, FrameRule, PadMode};
pub use decoder::{Decoder, DecoderCache};
pub use tiled::TileConfig;
