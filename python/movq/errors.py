"""movq's exceptions. Every error of the engine is raised as one of these classes, with the
engine's message (the file, tensor and shapes involved) and the name of the engine's error
variant in ``.variant`` (e.g. ``"NonFiniteLatent"``)."""

from __future__ import annotations


class MovqError(Exception):
    """Base class of every movq error."""

    variant: str = ""


class CheckpointError(MovqError):
    """The weights cannot be read or do not fit the model: a malformed or truncated file, an
    unsupported tensor dtype, a missing, unexpected or mis-shaped weight, an input that is not a
    regular file or changed while it was read."""


class ConfigError(MovqError, ValueError):
    """The decoder config is invalid (or one upstream would crash on)."""


class LatentError(MovqError, ValueError):
    """The latent cannot be decoded: NaN or infinite values, wrong rank or channel count, an
    empty axis, or (raised by the bindings) a dtype, layout or device movq does not take."""


class ResourceError(MovqError, MemoryError):
    """The decode would not fit in memory (estimated before any work), or a size overflows."""


class MovqIOError(MovqError, OSError):
    """Reading or writing a file failed, or an output is not writable or is one of the inputs."""


class NonFiniteOutputError(MovqError, FloatingPointError):
    """The decode's output holds NaN or infinity (the message gives the count, the first
    (b, c, t, h, w) and the likely cause); pass ``allow_nonfinite_output=True`` to ``Decoder`` to
    get such output anyway."""


class UnsupportedError(MovqError, NotImplementedError):
    """A feature or case movq does not implement."""


__all__ = [
    "MovqError",
    "CheckpointError",
    "ConfigError",
    "LatentError",
    "ResourceError",
    "MovqIOError",
    "UnsupportedError",
    "NonFiniteOutputError",
]
