"""Decoder.stream: frame batches as they finish, in order, equal to decode(); bounded
look-ahead; closing stops the decode."""

from __future__ import annotations

import time

import numpy as np
import pytest

import movq
from conftest import rng_latent


@pytest.fixture(scope="module")
def cog(tiny_vae_dir):
    d, _ = tiny_vae_dir
    return movq.Decoder(d, threads=2)


def test_chunked_stream_equals_decode(cog):
    z = rng_latent((1, 4, 7, 4, 5), 4)
    batches = list(cog.stream(z))
    # 7 latent frames: batches of 3, 2, 2 -> 9, 8, 8 frames.
    assert [(f, b.shape[2]) for f, b in batches] == [(0, 9), (9, 8), (17, 8)]
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches], axis=2), cog.decode(z))


def test_whole_and_tiled_stream_one_batch(cog):
    z = rng_latent((1, 4, 3, 9, 10), 5)
    for mode in ("whole", "tiled"):
        batches = list(cog.stream(z, mode=mode))
        assert len(batches) == 1 and batches[0][0] == 0
        np.testing.assert_array_equal(batches[0][1], cog.decode(z, mode=mode))


def test_stream_torch_and_progress(cog):
    torch = pytest.importorskip("torch")
    z = torch.from_numpy(rng_latent((1, 4, 5, 4, 4), 6)).to(torch.bfloat16)
    seen = []
    out = [b for _, b in cog.stream(z, progress=seen.append)]
    assert all(isinstance(b, torch.Tensor) for b in out)
    assert [p.call for p in seen if p.stage == "out"] == [1, 2]
    assert seen[-1].flop_done == seen[-1].flop_total


def test_stream_runs_at_most_one_batch_ahead(cog):
    # 13 latent frames: 6 decoder calls. A slow consumer holds the decode back: when batch i
    # is handed out, batch i + 1 may wait in the queue and batch i + 2 be finished and
    # blocked on it, but nothing later can have started its stages.
    z = rng_latent((1, 4, 13, 8, 8), 7)
    seen = []
    ahead = []
    for i, (_, frames) in enumerate(cog.stream(z, progress=seen.append)):
        ahead.append(max(p.call for p in seen) - (i + 1))
        time.sleep(0.4)
    assert len(ahead) == 6
    assert max(ahead) <= 2, ahead


def test_close_stops_the_decode(cog):
    z = rng_latent((1, 4, 13, 8, 8), 8)
    t0 = time.perf_counter()
    cog.decode(z)
    full = time.perf_counter() - t0
    s = cog.stream(z)
    first, _ = next(s)
    assert first == 0
    t0 = time.perf_counter()
    s.close()  # returns once the worker thread has ended
    closing = time.perf_counter() - t0
    # The worker stopped after its running stage instead of decoding the other 5 batches.
    assert closing < full / 3, (closing, full)
    with pytest.raises(StopIteration):
        next(s)


def test_stream_errors_raise_before_starting(cog):
    with pytest.raises(movq.LatentError) as e:
        cog.stream(np.zeros((1, 3, 2, 4, 4), np.float32))
    assert e.value.variant == "LatentChannels"
