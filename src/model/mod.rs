//! The decoder module tree, mirroring CogVideo's movq_dec_3d.py; struct fields are named like
//! the state-dict keys.

pub mod attention;
pub mod config;
pub mod conv;
pub mod decoder;
pub mod diffusers;
pub mod flops;
pub mod resnet;
pub mod spatial_norm;
pub mod upsample;

pub use config::{DecoderClass, DecoderConfig, PadMode};
pub use decoder::Decoder;
