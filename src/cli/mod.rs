//! Subcommands of the `movq` binary.

pub mod decode;
