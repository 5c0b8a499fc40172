"""movq.Decoder: inputs of every dtype, layout and memory order (numpy and torch), modes,
scaling, progress, the GIL, Ctrl-C, and the decoder's config."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import movq
from conftest import rng_latent


def test_config_and_properties(movq_golden):
    dec, z, meta = movq_golden
    assert dec.config["ch_mult"] == list(meta["config"]["ch_mult"])
    assert dec.config["class"] == "MOVQDecoder3D"
    assert dec.precision == "f32" and dec.threads == 2
    assert dec.config_source == "metadata"
    assert dec.scaling_factor is None
    assert dec.default_mode == "whole"
    assert dec.decoded_shape(z.shape) == tuple(meta["output_shape"])
    assert dec.estimate_memory(z.shape) > 0


def numpy_variants(z32: np.ndarray):
    """(name, array, bcthw reference in float32): every dtype in C order, plus strided views."""
    out = []
    for dt in (np.float32, np.float64, np.float16):
        a = z32.astype(dt)
        out.append((f"{np.dtype(dt).name}-C", a, a.astype(np.float32)))
    f = np.asfortranarray(z32)
    out.append(("float32-Fortran", f, z32))
    wide = np.zeros(z32.shape[:-1] + (2 * z32.shape[-1],), np.float32)
    wide[..., ::2] = z32
    out.append(("float32-step2", wide[..., ::2], z32))
    rev = np.ascontiguousarray(z32[:, :, ::-1])
    out.append(("float32-negative-stride", rev[:, :, ::-1], z32))
    return out


def test_numpy_dtypes_and_memory_orders_match_float32(movq_golden):
    dec, z, _ = movq_golden
    want = dec.decode(z)
    for name, a, ref in numpy_variants(z):
        # f16 rounds the values: compare with the decode of the same rounded values.
        expect = want if np.array_equal(ref, z) else dec.decode(np.ascontiguousarray(ref))
        got = dec.decode(a)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32, name
        np.testing.assert_array_equal(got, expect, err_msg=name)


def test_btchw_layout(movq_golden):
    dec, z, _ = movq_golden
    btchw = np.ascontiguousarray(z.transpose(0, 2, 1, 3, 4))
    np.testing.assert_array_equal(dec.decode(btchw, layout="btchw"), dec.decode(z))
    assert dec.decoded_shape(btchw.shape, layout="btchw") == dec.decode(z).shape
    # A strided btchw view (what `latents.permute(0, 2, 1, 3, 4)` hands over).
    np.testing.assert_array_equal(dec.decode(z.transpose(0, 2, 1, 3, 4), layout="btchw"), dec.decode(z))


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["bcthw", "btchw"])
def test_torch_inputs(movq_golden, dtype, layout):
    dec, z, _ = movq_golden
    t = torch.from_numpy(z).to(getattr(torch, dtype))
    ref = dec.decode(t.to(torch.float32).numpy())  # the same (rounded) values in float32
    if layout == "btchw":
        t = t.permute(0, 2, 1, 3, 4)  # a non-contiguous view, as the pipeline makes
    out = dec.decode(t, layout=layout)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), ref)


def test_torch_requires_grad_and_f64_precision(tmp_path):
    from conftest import GOLDEN_IGNORE, read_golden

    path, t, _ = read_golden("movq_single_frame_t1")
    dec = movq.Decoder(path, ignore=GOLDEN_IGNORE, precision="f64", threads=1)
    z = torch.from_numpy(t["input.z"]).requires_grad_(True)
    out = dec.decode(z)
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), dec.decode(t["input.z"]))


def test_scaling(movq_golden):
    dec, z, _ = movq_golden
    # The CLI's --latent-scaled: z times 1/f in the decode precision (0.5 is exact).
    np.testing.assert_array_equal(
        dec.decode(z, latent_scaled=True, scaling_factor=2.0), dec.decode(z * np.float32(0.5))
    )
    with pytest.raises(movq.ConfigError, match="needs a scaling factor"):
        dec.decode(z, latent_scaled=True)  # a MoVQ checkpoint has none
    with pytest.raises(movq.LatentError, match="not a finite non-zero"):
        dec.decode(z, latent_scaled=True, scaling_factor=0.0)


def test_progress_reports_every_stage(movq_golden):
    dec, z, meta = movq_golden
    seen = []
    dec.decode(z, progress=seen.append)
    levels = len(meta["config"]["ch_mult"])
    assert [p.stage for p in seen] == ["mid"] + [f"level {i}" for i in reversed(range(levels))] + ["out"]
    assert all(p.call == 1 and p.calls == 1 for p in seen)
    done = [p.flop_done for p in seen]
    assert done == sorted(done) and done[-1] == seen[-1].flop_total > 0
    assert seen[-1].fraction == 1.0


def test_exception_in_progress_stops_the_decode(movq_golden):
    dec, z, _ = movq_golden
    seen = []

    def cb(p):
        seen.append(p.stage)
        raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        dec.decode(z, progress=cb)
    assert seen == ["mid"], "the callback is not called again after it raised"


@pytest.fixture(scope="module")
def slow_decoder(tiny_vae_dir):
    """The tiny CogVideoX VAE: a chunked decode of a 13 x 16 x 16 latent takes seconds."""
    d, _ = tiny_vae_dir
    return movq.Decoder(d, threads=2)


def test_gil_is_released(slow_decoder):
    z = rng_latent((1, 4, 3, 16, 16), 1)
    t0 = time.perf_counter()
    slow_decoder.decode(z)
    alone = time.perf_counter() - t0
    th = threading.Thread(target=slow_decoder.decode, args=(z,))
    count = 0
    th.start()
    t0 = time.perf_counter()
    while th.is_alive():
        count += 1
    elapsed = time.perf_counter() - t0
    th.join()
    # With the GIL held for the decode, this loop would stand still until it ended.
    assert elapsed > 0.5 * alone and count > 10_000, (count, elapsed, alone)


def test_ctrl_c_interrupts_a_decode(slow_decoder):
    z = rng_latent((1, 4, 13, 16, 16), 2)
    seen = []
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        slow_decoder.decode(z, progress=seen.append)
    took = time.perf_counter() - t0
    timer.join()
    assert seen, "the decode had started"
    assert seen[-1].flop_done < seen[-1].flop_total, "interrupted before the end"
    # One stage of this model takes well under a second here.
    assert took < 5.0, took


def test_mode_and_tile_arguments(slow_decoder):
    z = rng_latent((1, 4, 3, 9, 10), 3)
    assert slow_decoder.default_mode == "chunked"
    assert slow_decoder.scaling_factor == pytest.approx(1.15258426)
    # diffusers' geometry for sample 64x64 and 8x upsampling: latent tiles 4x4, strides 3x3.
    assert slow_decoder.default_tile() == ((4, 4), (3, 3), (5, 6), (27, 26))
    tiled = slow_decoder.decode(z, mode="tiled")
    assert tiled.shape == slow_decoder.decoded_shape(z.shape, mode="tiled")
    geom = ((5, 6), (4, 5), (8, 8), (32, 40))
    custom = slow_decoder.decode(z, tile=geom)
    assert custom.shape == slow_decoder.decoded_shape(z.shape, tile=geom)
    assert not np.array_equal(custom[..., :32, :32], tiled[..., :32, :32])
    whole = slow_decoder.decode(z, mode="whole")
    chunked = slow_decoder.decode(z)
    assert whole.shape == chunked.shape  # T = 3: one batch, the same call
    np.testing.assert_array_equal(whole, chunked)
