//! movq's `Error` as Python exceptions. The classes live in `movq/errors.py` (so they can also
//! derive from `ValueError`, `OSError`, ...); each movq variant maps to one of them, with the
//! same message and the variant's name in `.variant`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The `movq.errors` class a variant is raised as.
fn class_of(e: &movq::Error) -> &'static str {
    use movq::Error as E;
    match e {
        E::InvalidFile { .. }
        | E::Truncated { .. }
        | E::HeaderLength { .. }
        | E::InvalidHeader { .. }
        | E::BadOffsets { .. }
        | E::ByteSize { .. }
        | E::Zip { .. }
        | E::Pickle { .. }
        | E::UnsupportedDtype { .. }
        | E::MissingWeight { .. }
        | E::UnexpectedWeight { .. }
        | E::WeightShape { .. }
        | E::SpecialFile { .. }
        | E::InputChanged { .. } => "CheckpointError",
        E::TraceMismatch { .. } | E::Checksum { .. } => "CheckpointError",
        E::InvalidEnv { .. } => "ConfigError",
        E::InvalidConfig(_)
        | E::GroupCount { .. }
        | E::UnknownClass(_)
        | E::NoSuchModule { .. }
        | E::EmptyCrop { .. } => "ConfigError",
        E::NonFinite { .. } => "NonFiniteOutputError",
        E::NonFiniteLatent { .. }
        | E::LatentRank { .. }
        | E::EmptyLatent { .. }
        | E::LatentChannels { .. }
        | E::ShapeMismatch { .. } => "LatentError",
        E::OverMemoryBudget { .. } | E::TooLarge { .. } => "ResourceError",
        E::Io { .. } | E::OutputNotWritable { .. } | E::OutputIsInput { .. } | E::OutputKind { .. } => {
            "MovqIOError"
        }
        E::Unsupported(_) => "UnsupportedError",
        E::Interrupted(_) => "MovqError",
        // A variant added to movq after this table: the base class, with the same message.
        #[allow(unreachable_patterns)]
        _ => "MovqError",
    }
}

/// The variant's name: the identifier its `Debug` form starts with.
fn variant_of(e: &movq::Error) -> String {
    format!("{e:?}").chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// Raises `e` as its `movq.errors` class, message = movq's `Display`.
pub fn to_py(py: Python<'_>, e: movq::Error) -> PyErr {
    let message = e.to_string();
    let raise = || -> PyResult<PyErr> {
        let cls = py.import("movq.errors")?.getattr(class_of(&e))?;
        let exc = cls.call1((message.clone(),))?;
        exc.setattr("variant", variant_of(&e))?;
        Ok(PyErr::from_value(exc))
    };
    // Only if `movq.errors` cannot be imported (a broken install): keep the message.
    raise().unwrap_or_else(|_| PyRuntimeError::new_err(message.clone()))
}

/// A `movq.errors` exception raised by the bindings themselves (bad dtype, layout, argument).
pub fn named(py: Python<'_>, class: &str, message: String) -> PyErr {
    let raise = || -> PyResult<PyErr> {
        let exc = py.import("movq.errors")?.getattr(class)?.call1((message.clone(),))?;
        Ok(PyErr::from_value(exc))
    };
    raise().unwrap_or_else(|_| PyRuntimeError::new_err(message.clone()))
}
