//! Subcommands of the `movq` binary.

pub mod cleanup;
pub mod compare;
pub mod convert;
pub mod decode;
pub mod demo;
pub mod inspect;
pub mod progress;
pub mod safety;
pub mod signals;
pub mod trace;
