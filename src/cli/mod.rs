//! Subcommands of the `movq` binary.

pub mod compare;
pub mod decode;
