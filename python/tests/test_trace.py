"""Per-module traces through Python (issue 18, item 4): the same entries as `movq trace`, in the
checkpoint's naming and execution order, matching the committed PyTorch-hook trace; and the
checkpoint-form errors of issue 14 raised as named exceptions."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import movq
from conftest import GOLDEN_IGNORE, REPO, read_golden

HOOK_TRACE = REPO / "tests" / "fixtures" / "trace" / "diffusers_decoder_whole_t3.torch.safetensors"
SAT = REPO / "tests" / "fixtures" / "checkpoints" / "sat_cogvideox"


def test_trace_matches_the_pytorch_hook_trace_and_the_file_it_writes(tmp_path: pathlib.Path):
    from safetensors.numpy import load_file

    path, tensors, _ = read_golden("diffusers_decoder_whole_t3")
    dec = movq.Decoder(path, ignore=GOLDEN_IGNORE, precision="f64", threads=2)
    out = tmp_path / "t.safetensors"
    # The crop scripts/fixtures/hook_trace.py kept of every module output.
    crop = dict(crop_frames=(0, 3), crop_rows=(3, 5), crop_cols=(2, 5))
    tr = dec.trace(tensors["input.z"], mode="whole", output=out, **crop)
    hooks = load_file(str(HOOK_TRACE))
    assert len(tr) > 10
    assert set(hooks) <= set(tr), sorted(set(hooks) - set(tr))[:5]
    for name, ref in hooks.items():
        got = tr[name]
        assert got.shape == ref.shape, name
        rel = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300)
        assert rel < 1e-12, (name, rel)
    # The last module is conv_out: the decoded video itself, cropped.
    last = list(tr)[-1]
    assert last.endswith("conv_out")
    assert np.array_equal(tr[last], dec.decode(tensors["input.z"], mode="whole")[:, :, 0:3, 3:5, 2:5])
    written = load_file(str(out))
    assert set(written) == set(tr)
    assert all(np.array_equal(written[k], v) for k, v in tr.items())


def test_trace_selects_and_crops():
    path, tensors, _ = read_golden("diffusers_decoder_whole_t3")
    dec = movq.Decoder(path, ignore=GOLDEN_IGNORE, threads=2)
    tr = dec.trace(tensors["input.z"], mode="whole", modules=["*conv_out"], crop_rows=(0, 2))
    assert list(tr) == ["decoder.conv_out"]
    assert tr["decoder.conv_out"].shape[3] == 2
    with pytest.raises(movq.ConfigError, match="matches no module"):
        dec.trace(tensors["input.z"], mode="whole", modules=["nothing*"])
    with pytest.raises(movq.ConfigError, match=r"crop \(frames 40:41\) keeps nothing of .*frames 40:41 miss its frames 0:"):
        dec.trace(tensors["input.z"], mode="whole", modules=["*conv_out"], crop_frames=(40, 41))


def test_sat_checkpoint_class_and_nonfinite_output_errors():
    from safetensors.numpy import load_file

    refs = load_file(str(SAT / "reference.safetensors"))
    dec = movq.Decoder(SAT / "3d-vae.pt", precision="f64", threads=2)
    assert dec.config["class"] == "ContextParallelDecoder3D"
    y = dec.decode(refs["z.sat_t13"].astype(np.float64))
    assert y.shape[2] == 49
    ref = refs["f64.sat_t13"]
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-12
    z = refs["z.sat_t5"].astype(np.float64)
    z[0, :, 0] = 1e308
    with pytest.raises(movq.NonFiniteOutputError, match="non-finite"):
        dec.decode(z, mode="whole")
    lenient = movq.Decoder(SAT / "3d-vae.pt", precision="f64", threads=2, allow_nonfinite_output=True)
    assert not np.isfinite(lenient.decode(z, mode="whole")).all()
    with pytest.raises(movq.ConfigError, match="decoder_class"):
        movq.Decoder(SAT / "3d-vae.pt", decoder_class="Nope")
