"""Shared fixtures: the golden cases of ../shared/golden, small decoders and latents."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO.parent / "shared" / "golden"


def golden_dir() -> pathlib.Path:
    """The golden cases; skipped locally without them, an error under CI=true (as the Rust
    tests do)."""
    if not (GOLDEN / "README.md").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{GOLDEN} is missing; the golden reference data is required under CI")
        pytest.skip(f"{GOLDEN} not found")
    return GOLDEN


def read_golden(name: str):
    """(path, tensors, meta) of golden case `name`."""
    from safetensors import safe_open

    path = golden_dir() / f"{name}.safetensors"
    with safe_open(str(path), "np") as f:
        meta = json.loads(f.metadata()["meta"])
        tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith(("input.", "output"))}
    return path, tensors, meta


GOLDEN_IGNORE = ["input.", "output"]


@pytest.fixture(scope="session")
def movq_golden():
    """A whole-decoder golden case (batch 2, H != W, even T) opened as a movq checkpoint."""
    import movq

    path, tensors, meta = read_golden("movq_batch2_h4w6_t4")
    return movq.Decoder(path, ignore=GOLDEN_IGNORE, threads=2), tensors["input.z"], meta


def rng_latent(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def tiny_vae(seed: int = 0, latent_channels: int = 4, sample: int = 64):
    """A small random AutoencoderKLCogVideoX of a config movq takes (4 levels, 32 channels,
    GroupNorm 32, SiLU), its norms and biases perturbed so no affine step is an identity."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=32,
        temporal_compression_ratio=4,
        sample_height=sample,
        sample_width=sample,
    )
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return vae.eval()


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """(folder, vae): the tiny VAE saved with save_pretrained, as a diffusers model folder."""
    pytest.importorskip("diffusers")
    vae = tiny_vae()
    d = tmp_path_factory.mktemp("tiny_vae")
    vae.save_pretrained(str(d), safe_serialization=True)
    return d, vae
