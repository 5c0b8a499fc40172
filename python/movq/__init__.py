"""movq for Python: CogVideoX / MoVQ video latents in, frames out, on the CPU.

>>> import movq
>>> dec = movq.Decoder("CogVideoX-2b/", precision="f32", threads=2)
>>> video = dec.decode(latents)            # numpy in -> numpy out, torch in -> torch out
>>> for first, frames in dec.stream(latents):   # frame batches as they are decoded
...     ...

Errors are raised as :class:`movq.MovqError` subclasses (see :mod:`movq.errors`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import Progress
from .errors import (
    CheckpointError,
    ConfigError,
    LatentError,
    MovqError,
    MovqIOError,
    NonFiniteOutputError,
    ResourceError,
    UnsupportedError,
)

__version__ = _native.__version__

Tile = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], Tuple[int, int]]
ProgressCallback = Callable[[Progress], Any]
PathLike = Union[str, "os.PathLike[str]"]

_NUMPY_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))


def _is_torch(z: Any) -> bool:
    # A tensor exists only if torch was imported: no import of torch for numpy users.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(z, torch.Tensor)


def _as_array(z: Any) -> Tuple[np.ndarray, bool, bool]:
    """(array, bf16_bits, was_torch): the latent as a numpy view of the same memory."""
    if _is_torch(z):
        import torch

        if z.device.type != "cpu":
            raise LatentError(
                f"the latent tensor is on {z.device}; move it to the CPU (z.cpu()) or use "
                "movq.diffusers.patch_vae, which does"
            )
        z = z.detach()
        if z.dtype == torch.bfloat16:
            # numpy has no bfloat16: hand over the bit patterns, converted in Rust.
            return z.view(torch.int16).numpy().view(np.uint16), True, True
        if z.dtype not in (torch.float32, torch.float64, torch.float16):
            raise LatentError(
                f"the latent tensor has dtype {z.dtype}; movq takes float32, float64, float16 "
                "or bfloat16"
            )
        return z.numpy(), False, True
    if isinstance(z, np.ndarray):
        if z.dtype not in _NUMPY_DTYPES:
            raise LatentError(
                f"the latent is a numpy array of dtype {z.dtype}; movq takes float32, float64, "
                "float16 (or bfloat16 torch tensors)"
            )
        return z, False, False
    raise LatentError(
        f"the latent is a {type(z).__module__}.{type(z).__name__}; pass a numpy array or a CPU "
        "torch tensor"
    )


def _torch_out(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a)


class Decoder:
    """A loaded decoder: MOVQDecoder3D, NewDecoder3D or the CogVideoX VAE decoder.

    Args:
        weights: a safetensors file (upstream, sat or diffusers names), a shard index
            (``*.safetensors.index.json``), a diffusers model folder (``vae/config.json`` +
            weights), or a ``torch.save`` checkpoint (``.pt``) — every form ``movq decode`` takes.
        config: a config JSON (upstream argument names or a diffusers ``config.json``). Default:
            the folder's ``config.json``, else the weights' metadata, else inferred from the
            tensor names and shapes.
        prefix: key prefix of the decoder tensors (default: detected).
        precision: ``"f32"`` (fast), ``"f64"`` (reference) or ``"bf16-emulated"`` (f32 with
            the convolutions' gemm operands rounded to bf16 and summed in f32: the error a bf16
            GPU port can expect; not faster) or ``"bf16"`` (the CPU's bf16 dot products with f32
            sums: ARM FEAT_BF16 or x86 avx512_bf16; ``movq.UnsupportedError`` elsewhere, never a silent
            fallback). The setting is this decoder's own.
        threads: worker threads of this decoder's own pool (default: the number of cores).
        resolution, pad_mode, temporal_compress_times: what an inferred config cannot read off
            the tensors (see ``movq inspect``).
        ignore: tensor-name prefixes that are not part of the decoder (besides ``encoder.`` and
            ``loss.``, and ``input.`` / ``output`` in a golden file, which has a ``meta`` key).
        decoder_class: ``"MOVQDecoder3D"`` or ``"ContextParallelDecoder3D"`` (the SAT CogVideoX
            VAE) for weights whose structure fits both and whose config does not say.
        allow_nonfinite_output: hand out NaN / infinite output instead of raising
            ``NonFiniteOutputError``.

    Raises:
        CheckpointError, ConfigError, MovqIOError: as ``movq decode`` would refuse the
        checkpoint, with the same message.
    """

    def __init__(
        self,
        weights: PathLike,
        *,
        config: Optional[PathLike] = None,
        prefix: Optional[str] = None,
        precision: str = "f32",
        threads: Optional[int] = None,
        resolution: Optional[int] = None,
        pad_mode: Optional[str] = None,
        temporal_compress_times: Optional[int] = None,
        ignore: Sequence[str] = (),
        decoder_class: Optional[str] = None,
        allow_nonfinite_output: bool = False,
    ) -> None:
        self._native = _native.NativeDecoder(
            os.fspath(weights),
            config=None if config is None else os.fspath(config),
            prefix=prefix,
            precision=precision,
            threads=threads,
            resolution=resolution,
            pad_mode=pad_mode,
            temporal_compress_times=temporal_compress_times,
            ignore=list(ignore),
            decoder_class=decoder_class,
            allow_nonfinite_output=allow_nonfinite_output,
        )
        self._config = json.loads(self._native.config_json())

    @property
    def config(self) -> dict:
        """The decoder config, with the upstream argument names (``ch``, ``ch_mult``, ...,
        ``class``)."""
        return dict(self._config)

    @property
    def precision(self) -> str:
        """``"f32"``, ``"f64"``, ``"bf16-emulated"`` or ``"bf16"``."""
        return self._native.precision

    @property
    def threads(self) -> int:
        return self._native.threads

    @property
    def scaling_factor(self) -> Optional[float]:
        """diffusers ``scaling_factor`` of a CogVideoX VAE (None for MoVQ checkpoints)."""
        return self._native.scaling_factor

    @property
    def sample_size(self) -> Optional[Tuple[int, int]]:
        """diffusers (sample_height, sample_width): sets the default tile geometry."""
        return self._native.sample_size

    @property
    def config_source(self) -> str:
        """``"file:<path>"``, ``"metadata"`` or ``"inferred"``."""
        return self._native.config_source

    @property
    def paths(self) -> list:
        """The weight files."""
        return [os.fspath(p) for p in self._native.paths]

    @property
    def space_scale(self) -> int:
        """Output pixels per latent pixel along height and width."""
        return self._native.space_scale

    @property
    def default_mode(self) -> str:
        """``"chunked"`` for CogVideoX (what ``vae.decode`` does), ``"whole"`` otherwise."""
        return self._native.default_mode

    def default_tile(self) -> Tile:
        """diffusers' ``enable_tiling()`` geometry for this model: (tile_latent, stride_latent,
        blend, keep), each (rows, columns); latent units for the first two, output pixels for
        the others."""
        return self._native.default_tile()

    def decoded_shape(
        self,
        shape: Sequence[int],
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
    ) -> Tuple[int, int, int, int, int]:
        """The output shape (b, c, t, h, w) of decoding a latent of ``shape``."""
        return self._native.decoded_shape(list(shape), mode=mode, tile=tile, layout=layout)

    def estimate_memory(
        self,
        shape: Sequence[int],
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
    ) -> int:
        """Estimated peak bytes of ``decode`` on a latent of ``shape`` (checked before every
        decode against the available memory, or ``max_memory``)."""
        return self._native.estimate_memory(list(shape), mode=mode, tile=tile, layout=layout)

    def _scale(self, latent_scaled: bool, scaling_factor: Optional[float]) -> Optional[float]:
        if not latent_scaled:
            if scaling_factor is not None:
                raise ConfigError("scaling_factor is used only with latent_scaled=True")
            return None
        f = scaling_factor if scaling_factor is not None else self.scaling_factor
        if f is None:
            raise ConfigError(
                "latent_scaled=True needs a scaling factor: the model config has none, pass "
                "scaling_factor="
            )
        return float(f)

    def decode(
        self,
        z: Any,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        latent_scaled: bool = False,
        scaling_factor: Optional[float] = None,
        allow_nonfinite: bool = False,
        max_memory: Optional[float] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> Any:
        """Decodes the latent ``z`` and returns the video (b, out_ch, t', h', w').

        Args:
            z: numpy array or CPU torch tensor of float32, float64, float16 (or a bfloat16
                tensor), any strides. Read in place (torch tensors through a shared-memory numpy
                view); converted to the decode precision in one pass.
            mode: ``"whole"`` (``vae.decoder(z)``, one call), ``"chunked"`` (``vae.decode(z)``:
                latent frames in batches of 2 with carried conv caches) or ``"tiled"``
                (``enable_tiling()``). Default: :attr:`default_mode`, or tiled if ``tile`` is
                given.
            tile: the tile geometry (see :meth:`default_tile`); default diffusers'.
            layout: ``"bcthw"`` (what the VAE takes) or ``"btchw"`` (the CogVideoX
                transformer's output).
            latent_scaled: z comes straight from the pipeline's sampler: divide it by
                ``scaling_factor`` (default the model's) first, as the pipeline does before
                ``vae.decode``. Default False: z is decoded as given, like ``vae.decode(z)``.
            allow_nonfinite: decode a latent holding NaN / Inf (refused by default with a
                :class:`LatentError`; with this, a ``RuntimeWarning`` is issued instead).
            max_memory: memory budget in GiB (default: the available memory); a decode whose
                estimated peak exceeds it raises :class:`ResourceError` before any work.
            progress: called as ``progress(p)`` with a :class:`Progress` after each finished
                stage, on the calling thread; an exception it raises stops the decode and
                propagates.

        Returns:
            A numpy array in the decode precision (float32 or float64), or a torch tensor
            sharing its memory if ``z`` was a torch tensor.

        The GIL is released while decoding. Ctrl-C stops the decode after its running stage
        and raises ``KeyboardInterrupt``.
        """
        a, bf16, was_torch = _as_array(z)
        out = self._native.decode(
            a,
            mode=mode,
            tile=tile,
            layout=layout,
            bf16=bf16,
            scale=self._scale(latent_scaled, scaling_factor),
            allow_nonfinite=allow_nonfinite,
            max_memory=max_memory,
            progress=progress,
        )
        return _torch_out(out) if was_torch else out

    def trace(
        self,
        z: Any,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        latent_scaled: bool = False,
        scaling_factor: Optional[float] = None,
        modules: Sequence[str] = (),
        crop_frames: Optional[Tuple[int, int]] = None,
        crop_rows: Optional[Tuple[int, int]] = None,
        crop_cols: Optional[Tuple[int, int]] = None,
        output: Optional[PathLike] = None,
    ) -> "dict[str, np.ndarray]":
        """Decodes ``z`` and returns the output of every module, as ``movq trace`` does: a dict
        from module name (the checkpoint's own naming, e.g. ``decoder.up_blocks.1.resnets.0``
        or ``up.2.block.0``; ``NAME@chunkK`` per frame batch in chunked mode) to a numpy array,
        in execution order.

        Args:
            z, mode, tile, layout, latent_scaled, scaling_factor: as :meth:`decode`.
            modules: globs (``*``, ``?``) selecting modules; all when empty. A glob matching no
                module raises :class:`ConfigError`.
            crop_frames, crop_rows, crop_cols: (start, end) ranges kept of every traced tensor
                (clipped to each tensor's own axis).
            output: also write the trace as a safetensors file that ``movq compare`` reads.

        The GIL is released while decoding (Ctrl-C takes effect when the trace is done).
        """
        a, bf16, _ = _as_array(z)
        return self._native.trace(
            a,
            mode=mode,
            tile=tile,
            layout=layout,
            bf16=bf16,
            scale=self._scale(latent_scaled, scaling_factor),
            modules=list(modules),
            crop_frames=crop_frames,
            crop_rows=crop_rows,
            crop_cols=crop_cols,
            output=None if output is None else os.fspath(output),
        )

    def stream(
        self,
        z: Any,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        latent_scaled: bool = False,
        scaling_factor: Optional[float] = None,
        allow_nonfinite: bool = False,
        max_memory: Optional[float] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> "FrameStream":
        """Like :meth:`decode`, but yields ``(first_frame, frames)`` as each batch is decoded
        (chunked: one per latent frame batch, e.g. 9 then 8, 8, ... frames; whole and tiled
        modes: one batch at the end). The decode runs on a background thread; at most one
        finished batch waits for the consumer, so memory does not grow with the clip length.
        ``frames`` is (b, out_ch, k, h', w'), numpy (torch if ``z`` was torch).

        Use it as a context manager (or call ``close()``) to stop an unfinished decode early.
        """
        a, bf16, was_torch = _as_array(z)
        native = self._native.stream(
            a,
            mode=mode,
            tile=tile,
            layout=layout,
            bf16=bf16,
            scale=self._scale(latent_scaled, scaling_factor),
            allow_nonfinite=allow_nonfinite,
            max_memory=max_memory,
            progress=progress,
        )
        return FrameStream(native, was_torch)

    def decode_to_file(
        self,
        z: Any,
        path: PathLike,
        *,
        mode: Optional[str] = None,
        tile: Optional[Tile] = None,
        layout: str = "bcthw",
        latent_scaled: bool = False,
        scaling_factor: Optional[float] = None,
        allow_nonfinite: bool = False,
        max_memory: Optional[float] = None,
        progress: Optional[ProgressCallback] = None,
        fps: int = 8,
        chroma: str = "420",
    ) -> list:
        """Decodes ``z`` into the file ``path``, as ``movq decode --output`` does: ``.npy`` or
        ``.safetensors`` (the tensor in the decode precision) or ``.y4m`` / ``.apng`` video
        (8-bit, ``x / 2 + 0.5`` clamped as the pipelines map it; one file per sample,
        ``name_b0.y4m``..., for a batch of several). Frames are written as they are decoded into
        a hidden temporary beside ``path`` that is renamed into place only when complete: an
        error, Ctrl-C or a killed process never leaves a partial file under the name. Returns
        the paths written. Other arguments as for :meth:`decode`."""
        a, bf16, _ = _as_array(z)
        paths = self._native.decode_to_file(
            a,
            os.fspath(path),
            mode=mode,
            tile=tile,
            layout=layout,
            bf16=bf16,
            scale=self._scale(latent_scaled, scaling_factor),
            allow_nonfinite=allow_nonfinite,
            max_memory=max_memory,
            progress=progress,
            fps=fps,
            chroma=chroma,
        )
        return [os.fspath(p) for p in paths]

    def __repr__(self) -> str:
        c = self._config
        return (
            f"movq.Decoder({c.get('class')}, ch={c.get('ch')}, ch_mult={c.get('ch_mult')}, "
            f"z_channels={c.get('z_channels')}, precision={self.precision!r}, "
            f"threads={self.threads})"
        )


class FrameStream:
    """Iterator of ``(first_frame, frames)`` batches from :meth:`Decoder.stream`."""

    def __init__(self, native: "_native.FrameStream", torch_out: bool) -> None:
        self._native = native
        self._torch = torch_out

    def __iter__(self) -> Iterator[Tuple[int, Any]]:
        return self

    def __next__(self) -> Tuple[int, Any]:
        first, frames = next(self._native)
        return first, (_torch_out(frames) if self._torch else frames)

    def close(self) -> None:
        """Stops the decode (after its running stage) and waits for its thread."""
        self._native.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(weights: PathLike, **kwargs: Any) -> Decoder:
    """``Decoder(weights, **kwargs)``."""
    return Decoder(weights, **kwargs)


__all__ = [
    "Decoder",
    "FrameStream",
    "Progress",
    "load",
    "MovqError",
    "CheckpointError",
    "ConfigError",
    "LatentError",
    "ResourceError",
    "MovqIOError",
    "UnsupportedError",
    "NonFiniteOutputError",
]
