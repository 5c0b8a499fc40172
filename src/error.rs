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

    /// A file is malformed in a way no more specific variant names (a model folder without
    /// weights, a shard index without a weight map, ...).
    #[error("{}: invalid file: {}", path.display(), escape(reason))]
    InvalidFile { path: PathBuf, reason: String },

    /// The file is shorter than its header says: the tensors need `needed` bytes, it has `got`.
    #[error("{}: truncated file: {what} needs {needed} bytes, the file has {got}", path.display())]
    Truncated { path: PathBuf, what: String, needed: u64, got: u64 },

    /// The header length field is larger than the file or than the cap on header sizes.
    #[error("{}: header length {header_len} is {}", path.display(),
        if header_len > limit { format!("larger than the {limit}-byte limit") }
        else { format!("larger than the file ({file_len} bytes); truncated, or not a {format} file") })]
    HeaderLength { path: PathBuf, format: &'static str, header_len: u64, file_len: u64, limit: u64 },

    /// The header is not valid (not UTF-8, not JSON, or entries of the wrong form).
    #[error("{}: invalid {format} header: {}", path.display(), escape(reason))]
    InvalidHeader { path: PathBuf, format: &'static str, reason: String },

    /// A tensor's data offsets are reversed, outside the data section, or overlap another's.
    #[error("{}: tensor `{}` has data offsets {offsets:?} that {}", path.display(), escape(name), escape(reason))]
    BadOffsets { path: PathBuf, name: String, offsets: [u64; 2], reason: String },

    /// A tensor's byte length does not match its shape and dtype.
    #[error("{}: tensor `{}` of shape {shape:?} and dtype {} needs {needed} bytes, the file gives it {got}",
        path.display(), escape(name), escape(dtype))]
    ByteSize { path: PathBuf, name: String, shape: Vec<usize>, dtype: String, needed: u64, got: u64 },

    /// A ZIP archive (a `torch.save` checkpoint) is malformed or uses a feature movq does not
    /// read (compression, encryption, several disks).
    #[error("{}: invalid ZIP archive: {reason}", path.display())]
    Zip { path: PathBuf, reason: String },

    /// The pickle of a `torch.save` checkpoint is malformed or holds something other than a
    /// state dict (a global other than the few a state dict needs, an unknown opcode).
    #[error("{}: invalid torch checkpoint: {reason}", path.display())]
    Pickle { path: PathBuf, reason: String },

    /// A weight the model needs is not in the file.
    #[error("{}: missing weight `{}` (expected shape {expected:?})", path.display(), escape(name))]
    MissingWeight { path: PathBuf, name: String, expected: Vec<usize> },

    /// The file holds a weight the model does not use (strict loading).
    #[error("{}: unexpected weight `{}` with shape {shape:?} (not part of the configured model)", path.display(), escape(name))]
    UnexpectedWeight { path: PathBuf, name: String, shape: Vec<usize> },

    /// A weight has another shape than the configured model needs.
    #[error("{}: weight `{}` has shape {got:?}, the configured model needs {expected:?}", path.display(), escape(name))]
    WeightShape { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },

    /// A tensor is stored in a dtype movq does not read.
    #[error("{}: tensor `{}` has unsupported dtype {} (supported: F32, F16, BF16, F64)", path.display(), escape(name), escape(dtype))]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },

    /// The latent holds NaN or infinite values (the decode would spread them over the output).
    #[error("{}: the latent has {count} NaN or infinite values (first at (b, c, t, h, w) = ({}, {}, {}, {}, {}))",
        path.display(), first[0], first[1], first[2], first[3], first[4])]
    NonFiniteLatent { path: PathBuf, count: usize, first: [usize; 5] },

    /// The latent is not rank 5 (b, c, t, h, w).
    #[error("{}: latent `{}` has shape {shape:?}; expected rank 5 (b, c, t, h, w)", path.display(), escape(name))]
    LatentRank { path: PathBuf, name: String, shape: Vec<usize> },

    /// The latent has a zero-size axis: there is nothing to decode.
    #[error("{}: latent `{}` has shape {shape:?} with an empty axis; nothing to decode", path.display(), escape(name))]
    EmptyLatent { path: PathBuf, name: String, shape: Vec<usize> },

    /// The latent's channel count is not the decoder's z channels.
    #[error("latent z {shape} has {got} channels, the decoder takes {expected} (z_channels)")]
    LatentChannels { shape: String, expected: usize, got: usize },

    /// A GroupNorm over `channels` channels cannot split them into `groups` groups.
    #[error("{place}: {channels} channels are not divisible by the {groups} GroupNorm groups")]
    GroupCount { place: String, channels: usize, groups: usize },

    /// The output cannot be created (missing directory, no permission, read-only file system).
    /// Checked before decoding starts.
    #[error("{}: cannot write the output: {cause}", path.display())]
    OutputNotWritable { path: PathBuf, cause: std::io::Error },

    /// The output path names no output movq writes (or one that clashes with what is there).
    #[error("{}: {}", path.display(), escape(reason))]
    OutputKind { path: PathBuf, reason: String },

    /// The decode's estimated peak memory exceeds the budget. Checked before any work starts.
    #[error("this decode needs about {:.2} GiB but the memory budget is {:.2} GiB",
        *needed as f64 / (1u64 << 30) as f64, *budget as f64 / (1u64 << 30) as f64)]
    OverMemoryBudget { needed: u64, budget: u64 },

    /// An operation got an input of the wrong shape.
    #[error("{op}: expected input shape {expected}, got {got}")]
    ShapeMismatch { op: &'static str, expected: String, got: String },

    /// The decoder configuration is invalid or one upstream would crash on.
    #[error("invalid config: {}", escape(.0))]
    InvalidConfig(String),

    /// A tensor or size would not fit in memory (checked before allocating).
    #[error("{}: {}", escape(what), escape(reason))]
    TooLarge { what: String, reason: String },

    /// An input is not a regular file (a directory, FIFO, device, socket) where movq needs one:
    /// a FIFO or `/dev/zero` would be read without end.
    #[error("{}: is a {kind}, not a regular file (the {what} must be a regular file)", path.display())]
    SpecialFile { path: PathBuf, kind: &'static str, what: &'static str },

    /// An input changed while movq used it (truncated or rewritten by another process during
    /// a decode that reads it memory-mapped); the output is not written.
    #[error("{}: the file changed while movq was reading it ({what}); nothing was written", path.display())]
    InputChanged { path: PathBuf, what: String },

    /// The output is one of the inputs (same device and inode, whatever the names).
    #[error("{}: the output is the input {} (the same file); refusing to overwrite an input", output.display(), input.display())]
    OutputIsInput { output: PathBuf, input: PathBuf },

    /// The checkpoint's decoder class cannot be told from its structure or config.
    #[error("unknown decoder class: {}", escape(.0))]
    UnknownClass(String),

    /// A decode produced NaN or infinite values (and the caller did not allow them).
    #[error(
        "the output has {count} non-finite value(s) (NaN or infinity), the first at (b, c, t, h, w) = {first:?}; {cause}"
    )]
    NonFinite { count: u64, first: [usize; 5], cause: String },

    /// A module pattern (`movq trace --modules`) matches no module of the decoder.
    #[error(
        "module pattern `{}` matches no module of this decoder (its modules: {})",
        escape(pattern),
        escape(known)
    )]
    NoSuchModule { pattern: String, known: String },

    /// A trace crop (`--crop-frames`, `--crop-rows`, `--crop-cols`) keeps nothing of a traced
    /// module's output: `crop` its ranges, `empty` which of them miss the tensor's axes.
    #[error("{} keeps nothing of `{}` (shape {shape}): {}", escape(crop), escape(module), escape(empty))]
    EmptyCrop { crop: String, module: String, shape: String, empty: String },

    /// Two traces (or a reference set and a port's outputs) cannot be compared entry by entry:
    /// an entry is missing from one, or the shapes differ.
    #[error("{} vs {}: entry `{}`: {}", a.display(), b.display(), escape(name), escape(reason))]
    TraceMismatch { a: PathBuf, b: PathBuf, name: String, reason: String },

    /// A file's SHA-256 is not the one a manifest pins (the file changed since the manifest
    /// was written, or the manifest was edited).
    #[error("{}: SHA-256 {got} differs from {expected} pinned by {}", path.display(), manifest.display())]
    Checksum { path: PathBuf, manifest: PathBuf, expected: String, got: String },

    /// The caller stopped the decode (its progress callback returned this error, e.g. on
    /// Ctrl-C); nothing after the stage that had finished was computed.
    #[error("interrupted: {}", escape(.0))]
    Interrupted(String),

    /// A movq environment variable (`MOVQ_ISA`, `MOVQ_CONV`) holds a value movq does not know;
    /// honouring it silently as the default would run something the caller did not ask for.
    #[error("{var}={} is not one of {allowed}", escape(&format!("{value:?}")))]
    InvalidEnv { var: &'static str, value: String, allowed: String },

    /// A feature or case movq does not implement.
    #[error("unsupported: {}", escape(.0))]
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

/// Environment variable `var` as one of `allowed` (ASCII case ignored; returned as listed),
/// `None` if unset or empty, and [`Error::InvalidEnv`] for any other value (also one that is
/// not Unicode), so a mistyped setting is never taken for the default.
pub fn env_choice(var: &'static str, allowed: &[&'static str]) -> Result<Option<&'static str>> {
    let value = match std::env::var(var) {
        Ok(v) if v.is_empty() => return Ok(None),
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
    };
    match allowed.iter().find(|a| value.eq_ignore_ascii_case(a)) {
        Some(a) => Ok(Some(*a)),
        None => Err(Error::InvalidEnv { var, value, allowed: format!("{allowed:?}") }),
    }
}

/// `text` with control characters (ESC, CR, LF, ...) written as Rust escapes (`\u{1b}`), so a
/// tensor name from a stranger's file cannot drive the terminal. Other characters are kept,
/// so escaping already-escaped text changes nothing.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}
