"""A drop-in CPU decode for diffusers' CogVideoX VAE.

>>> import movq.diffusers
>>> movq.diffusers.patch_vae(pipe)          # or patch_vae(pipe.vae)
>>> video = pipe(prompt, ...).frames        # the transformer runs where it runs; the VAE on movq

After ``patch_vae``, ``vae.decode(z, return_dict=True)`` keeps diffusers' contract: ``z`` is the
already-unscaled latent (b, c, t, h, w) — the pipeline divides by ``scaling_factor`` before
calling it — and the result is ``DecoderOutput(sample=...)`` (or ``(sample,)``) as a torch
tensor on ``z``'s device in ``z``'s dtype. The decode follows the VAE's own switches: chunked
(``vae.decode``'s frame batches with carried conv caches), or tiled with the VAE's current tile
sizes and overlap factors after ``vae.enable_tiling(...)``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional

from . import Decoder, Tile
from .errors import UnsupportedError

_STATE = "_movq_patch"


def _vae_of(pipe_or_vae: Any) -> Any:
    vae = getattr(pipe_or_vae, "vae", pipe_or_vae)
    if type(vae).__name__ != "AutoencoderKLCogVideoX":
        raise UnsupportedError(
            f"patch_vae takes a CogVideoX pipeline or its AutoencoderKLCogVideoX, not a "
            f"{type(vae).__name__}"
        )
    return vae


def tile_geometry(vae: Any) -> Tile:
    """movq's tile geometry for the VAE's current tiling settings, with diffusers'
    ``tiled_decode`` arithmetic (int() truncations included)."""
    th, tw = int(vae.tile_latent_min_height), int(vae.tile_latent_min_width)
    fh, fw = float(vae.tile_overlap_factor_height), float(vae.tile_overlap_factor_width)
    sh, sw = int(vae.tile_sample_min_height), int(vae.tile_sample_min_width)
    blend = (int(sh * fh), int(sw * fw))
    return ((th, tw), (int(th * (1 - fh)), int(tw * (1 - fw))), blend, (sh - blend[0], sw - blend[1]))


def patch_vae(
    pipe_or_vae: Any,
    *,
    weights: Optional[str] = None,
    precision: str = "f32",
    threads: Optional[int] = None,
    max_memory: Optional[float] = None,
) -> Decoder:
    """Makes ``vae.decode`` run on movq. Returns the movq :class:`~movq.Decoder` it uses.

    Args:
        pipe_or_vae: a CogVideoX pipeline (its ``.vae`` is patched) or the VAE itself.
        weights: the checkpoint to decode with (e.g. the model folder the pipeline was loaded
            from). Default: the VAE's current weights, written once with ``save_pretrained`` to
            a temporary folder that lives as long as the patch (so later changes to the VAE's
            weights are not seen).
        precision, threads, max_memory: as for :class:`~movq.Decoder` and
            :meth:`~movq.Decoder.decode`.
    """
    vae = _vae_of(pipe_or_vae)
    unpatch_vae(vae)
    tmp = None
    if weights is None:
        tmp = tempfile.TemporaryDirectory(prefix="movq-vae-")
        vae.save_pretrained(tmp.name, safe_serialization=True)
        weights = tmp.name
    dec = Decoder(os.fspath(weights), precision=precision, threads=threads)
    from diffusers.models.autoencoders.vae import DecoderOutput

    def decode(z: Any, return_dict: bool = True) -> Any:
        tiled = bool(getattr(vae, "use_tiling", False))
        sample = dec.decode(
            z.detach().to("cpu"),
            mode="tiled" if tiled else "chunked",
            tile=tile_geometry(vae) if tiled else None,
            max_memory=max_memory,
        )
        sample = sample.to(device=z.device, dtype=z.dtype)
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    decode.__doc__ = "diffusers' AutoencoderKLCogVideoX.decode, run on movq (see movq.diffusers)."
    # An instance attribute shadows the class's method for this VAE only.
    vae.decode = decode
    setattr(vae, _STATE, (dec, tmp))
    return dec


def unpatch_vae(pipe_or_vae: Any) -> None:
    """Restores diffusers' own ``vae.decode`` (no-op if the VAE is not patched)."""
    vae = _vae_of(pipe_or_vae)
    state = vae.__dict__.pop(_STATE, None)
    if state is None:
        return
    vae.__dict__.pop("decode", None)
    tmp = state[1]
    if tmp is not None:
        tmp.cleanup()


def is_patched(pipe_or_vae: Any) -> bool:
    return _STATE in _vae_of(pipe_or_vae).__dict__


__all__ = ["patch_vae", "unpatch_vae", "is_patched", "tile_geometry"]
