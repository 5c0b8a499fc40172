"""Every checkpoint form the CLI takes, through movq.Decoder: a diffusers model folder, a
sharded folder, its shard index, a single safetensors file with a config, and a torch.save
checkpoint; all decode to the same video."""

from __future__ import annotations

import numpy as np
import pytest

import movq
from conftest import rng_latent

torch = pytest.importorskip("torch")


def test_checkpoint_forms_decode_alike(tiny_vae_dir, tmp_path):
    folder, vae = tiny_vae_dir
    z = rng_latent((1, 4, 3, 3, 4), 9)
    want = movq.Decoder(folder, threads=1).decode(z)
    config = folder / "config.json"

    sharded = tmp_path / "sharded"
    vae.save_pretrained(str(sharded), safe_serialization=True, max_shard_size="200KB")
    (index,) = sharded.glob("*.safetensors.index.json")
    pt = tmp_path / "vae.pt"
    torch.save({"state_dict": vae.state_dict()}, pt)
    forms = {
        "sharded folder": movq.Decoder(sharded, threads=1),
        "shard index": movq.Decoder(index, config=config, threads=1),
        "safetensors file": movq.Decoder(folder / "diffusion_pytorch_model.safetensors", config=config, threads=1),
        "torch.save": movq.Decoder(pt, config=config, threads=1),
    }
    assert len(list(sharded.glob("*.safetensors"))) > 1
    for name, dec in forms.items():
        assert dec.config["class"] == "CogVideoXDecoder3D", name
        np.testing.assert_array_equal(dec.decode(z), want, err_msg=name)
