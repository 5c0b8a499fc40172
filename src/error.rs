//! The one error type of the library. Every variant carries what a user needs to act on it:
//! the file, the tensor name and the shapes involved.

use std::path::PathBuf;

/// Errors returned by movq. The CLI maps every variant to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed. (`cause` is in the message, so it is not also a
    /// `source`, which would print it twice in a cause chain.)
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// A safetensors or npy file is malformed (bad header, truncated data, bad offsets).
    #[error("{}: invalid file: {reason}", path.display())]
    InvalidFile { path: PathBuf, reason: String },

    /// A weight the model needs is not in the file.
    #[error("{}: missing weight `{name}` (expected shape {expected:?})", path.display())]
    MissingWeight { path: PathBuf, name: String, expected: Vec<usize> },

    /// The file holds a weight the model does not use (strict loading).
    #[error("{}: unexpected weight `{name}` with shape {shape:?} (not part of the configured model)", path.display())]
    UnexpectedWeight { path: PathBuf, name: String, shape: Vec<usize> },

    /// A weight has another shape than the configured model needs.
    #[error("{}: weight `{name}` has shape {got:?}, the configured model needs {expected:?}", path.display())]
    WeightShape { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },

    /// A tensor is stored in a dtype movq does not read.
    #[error("{}: tensor `{name}` has unsupported dtype {dtype} (supported: F32, F16, BF16, F64)", path.display())]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },

    /// The latent holds NaN or infinite values (the decode would spread them over the output).
    #[error("{}: the latent has {count} NaN or infinite values (first at (b, c, t, h, w) = {first:?}); pass --allow-nonfinite to decode anyway", path.display())]
    NonFiniteLatent { path: PathBuf, count: usize, first: [usize; 5] },

    /// An operation got an input of the wrong shape.
    #[error("{op}: expected input shape {expected}, got {got}")]
    ShapeMismatch { op: &'static str, expected: String, got: String },

    /// The decoder configuration is invalid or one upstream would crash on.
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// A tensor or size would not fit in memory (checked before allocating).
    #[error("{what}: {reason}")]
    TooLarge { what: String, reason: String },

    /// A feature or case movq does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// `std::result::Result` with the movq [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), cause: source }
    }

    pub(crate) fn invalid_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidFile { path: path.into(), reason: reason.into() }
    }
}
