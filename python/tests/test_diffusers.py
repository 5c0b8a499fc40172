"""movq.diffusers.patch_vae against diffusers itself, on a tiny random CogVideoX VAE: the
patched vae.decode must land as close to diffusers' float64 decode as diffusers' own float32
does (the rule of shared/golden/README.md), chunked and tiled; and a CogVideoXPipeline call
must decode through it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import movq  # noqa: E402
import movq.diffusers  # noqa: E402
from conftest import tiny_vae  # noqa: E402


def errors(y, r):
    d = y.double() - r
    return float(d.abs().max()), float(d.norm() / r.norm())


def check_against_diffusers(vae, z, tiled=False):
    """Decodes z with diffusers in f64 and f32 and with the patched VAE in f32 and f64."""
    ref = copy.deepcopy(vae).double()
    if tiled:
        ref.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32)
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32)
    with torch.no_grad():
        r64 = ref.decode(z.double()).sample
        r32 = vae.decode(z).sample
    torch_err = errors(r32, r64)
    for precision in ("f32", "f64"):
        movq.diffusers.patch_vae(vae, precision=precision, threads=2)
        try:
            zin = z if precision == "f32" else z.double()
            out = vae.decode(zin)
            y = out.sample
        finally:
            movq.diffusers.unpatch_vae(vae)
        assert type(out).__name__ == "DecoderOutput"
        assert isinstance(y, torch.Tensor) and y.shape == r64.shape and y.dtype == zin.dtype
        max_abs, rel = errors(y, r64)
        if precision == "f64":
            assert rel < 1e-12, rel
        else:
            absmax = float(r64.abs().max())
            assert rel <= 4 * max(torch_err[1], 1e-7), (rel, torch_err)
            assert max_abs <= 4 * max(torch_err[0], 1e-7 * max(1.0, absmax)), (max_abs, torch_err)


def test_chunked_decode_matches_diffusers():
    vae = tiny_vae(seed=1)
    z = torch.randn(1, 4, 5, 4, 6, generator=torch.Generator().manual_seed(1))
    check_against_diffusers(vae, z)


def test_tiled_decode_matches_diffusers():
    vae = tiny_vae(seed=2)
    # Latent tiles of 4x4 (32 px / 8) over a 7x9 latent: a 3x3 grid with blending.
    z = torch.randn(1, 4, 3, 7, 9, generator=torch.Generator().manual_seed(2))
    check_against_diffusers(vae, z, tiled=True)


def test_return_dict_dtype_and_unpatch():
    vae = tiny_vae(seed=3)
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    dec = movq.diffusers.patch_vae(vae, threads=1)
    assert movq.diffusers.is_patched(vae) and dec.config["class"] == "CogVideoXDecoder3D"
    (y,) = vae.decode(z, return_dict=False)
    y16 = vae.decode(z.to(torch.bfloat16)).sample
    assert y16.dtype == torch.bfloat16 and y16.shape == y.shape
    movq.diffusers.unpatch_vae(vae)
    assert not movq.diffusers.is_patched(vae)
    with torch.no_grad():
        ref = vae.decode(z).sample  # diffusers' own method again
    assert float((y - ref).abs().max()) < 1e-4 * max(1.0, float(ref.abs().max()))
    with pytest.raises(movq.UnsupportedError):
        movq.diffusers.patch_vae(torch.nn.Linear(2, 2))


def test_cogvideox_pipeline_decodes_through_movq():
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=4,
        text_embed_dim=16,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=8,
    ).eval()
    vae = tiny_vae(seed=4)
    pipe = CogVideoXPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )
    embeds = torch.randn(1, 8, 16, generator=torch.Generator().manual_seed(5))

    def run():
        return pipe(
            prompt_embeds=embeds,
            guidance_scale=1.0,
            num_inference_steps=2,
            height=64,
            width=64,
            num_frames=9,
            output_type="pt",
            generator=torch.Generator().manual_seed(6),
        ).frames

    ref = run()
    dec = movq.diffusers.patch_vae(pipe, threads=2)
    calls = []
    original = vae.decode

    def counting(z, return_dict=True):
        calls.append(tuple(z.shape))
        return original(z, return_dict=return_dict)

    vae.decode = counting
    out = run()
    assert calls == [(1, 4, 3, 8, 8)], "the pipeline decoded through movq once"
    assert out.shape == ref.shape == (1, 9, 3, 64, 64)
    # Pixels in [0, 1] after the pipeline's post-processing; float32 rounding differences only.
    assert float((out - ref).abs().max()) < 1e-4
    assert dec.scaling_factor == pytest.approx(vae.config.scaling_factor)
