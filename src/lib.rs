//! movq: a pure-Rust CPU inference engine for CogVideo's MoVQ 3D video decoders
//! (`MOVQDecoder3D`, `NewDecoder3D`) and the CogVideoX VAE decoder (whole, chunked and tiled
//! decoding as diffusers does it; see [`model::DecodeMode`] and [`Checkpoint`]).
//!
//! The stable surface is what this root re-exports: [`Decoder`], [`DecoderConfig`], [`Tensor`],
//! [`Shape`], [`Error`] and [`Result`]. The `ops`, `kernels` and `io` modules are public so that
//! benches, fuzz targets and tools can reach them, but they may change.
//!
//! Per-module traces of a decode (for checking ports layer by layer) and reference sets are in
//! [`trace`].
//!
//! ```no_run
//! use movq::Checkpoint;
//! use movq::checkpoint::OpenOptions;
//! use movq::model::DecodeMode;
//! # fn main() -> movq::Result<()> {
//! // A safetensors file, a shard index or a diffusers model folder; config found or inferred.
//! let ck = Checkpoint::open("weights.safetensors".as_ref(), &OpenOptions::default())?;
//! let decoder = ck.load::<f32>()?;
//! let z = movq::io::read_latent::<f32>("z.npy".as_ref(), None)?;
//! let frames = decoder.decode(&z, &DecodeMode::Whole)?; // (b, 3, t', h', w')
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod checkpoint;
pub mod error;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod tensor;
#[doc(hidden)]
pub mod testing;
pub mod trace;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use model::{Decoder, DecoderClass, DecoderConfig, PadMode};
pub use tensor::{Shape, Tensor};
