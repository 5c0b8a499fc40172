"""movq.batch on a local Ray cluster started here (2 workers, 10 latents): one worker killed
mid-run, then a rerun; nothing lost, nothing written twice, outputs equal to direct decodes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import movq  # noqa: E402
from movq import batch  # noqa: E402
from conftest import rng_latent  # noqa: E402

N = 10


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def read_log(out_dir):
    p = out_dir / batch.LOG_NAME
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines()]


def run_and_kill_a_worker(src, out, weights, **kwargs):
    """Runs decode_batch on a thread and SIGKILLs a worker while it is decoding (it has started
    a latent it has not written, after at least one output is complete). Returns the report."""
    result = {}
    run = threading.Thread(target=lambda: result.update(r=batch.decode_batch(src, out, weights, **kwargs)))
    run.start()
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline and run.is_alive():
        log = read_log(out)
        written = [r for r in log if r["event"] == "written"]
        open_ = {r["pid"]: r["latent"] for r in log if r["event"] == "start"}
        for r in written:
            if open_.get(r["pid"]) == r["latent"]:
                del open_[r["pid"]]
        if written and open_:
            victim = next(iter(open_))
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.05)
    run.join()
    assert victim is not None, "the run ended before a worker could be killed"
    return result["r"]


def make_latents(src, n=N):
    src.mkdir()
    for i in range(n):
        np.save(src / f"z{i:02d}.npy", rng_latent((1, 4, 5, 12, 12), 100 + i))


def test_kill_a_worker_then_rerun(ray_cluster, tiny_vae_dir, tmp_path):
    weights, _ = tiny_vae_dir
    src = tmp_path / "latents"
    make_latents(src)
    kwargs = dict(workers=2, threads_per_worker=1, fmt="npy", max_retries=0)
    # The kill can land after the victim finished its output but before the test read that
    # from the log (CI saw it once): then nothing is missing and the run is repeated, in a
    # fresh output directory, up to three times.
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        r1 = run_and_kill_a_worker(src, out, weights, **kwargs)
        assert r1.workers_lost == 1 and r1.failed == []
        assert len(r1.missing) < N and len(r1.written) + len(r1.missing) == N
        if r1.missing:
            break
    assert r1.missing, "in three runs every kill landed after the victim's output was complete"
    # The killed worker's latent has no file under its output name (at most a hidden temporary).
    for latent in r1.missing:
        assert not (out / (os.path.basename(latent)[:-4] + ".npy")).exists()
    first = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in out.glob("*.npy")}
    assert len(first) == len(r1.written)

    r2 = batch.decode_batch(src, out, weights, **kwargs)
    assert r2.ok and r2.workers_lost == 0
    assert sorted(r2.written) == sorted(r1.missing) and sorted(r2.skipped) == sorted(r1.written)
    # Outputs of the first run were not touched; every output was written exactly once.
    for name, stamp in first.items():
        f = out / name
        assert (f.stat().st_ino, f.stat().st_mtime_ns) == stamp, name
    written = [o for r in read_log(out) if r["event"] == "written" for o in r["outputs"]]
    assert sorted(written) == sorted(str(out / f"z{i:02d}.npy") for i in range(N))

    # A third run finds every output complete and writes nothing.
    r3 = batch.decode_batch(src, out, weights, **kwargs)
    assert r3.written == [] and len(r3.skipped) == N

    # The rerun's outputs and two of the first run's equal a direct decode (movq's output does
    # not depend on the thread count).
    dec = movq.Decoder(weights, threads=2)
    for latent in sorted(r1.missing) + sorted(r1.written)[:2]:
        z = np.load(latent)
        got = np.load(out / (os.path.basename(latent)[:-4] + ".npy"))
        np.testing.assert_array_equal(got, dec.decode(z), err_msg=latent)


def test_a_killed_worker_is_restarted_and_its_latent_retried(ray_cluster, tiny_vae_dir, tmp_path):
    weights, _ = tiny_vae_dir
    src, out = tmp_path / "latents", tmp_path / "out"
    make_latents(src, 6)
    r = run_and_kill_a_worker(src, out, weights, workers=2, threads_per_worker=1, fmt="npy", max_retries=1)
    assert r.ok and r.workers_lost == 0 and len(r.written) == 6
    written = [o for x in read_log(out) if x["event"] == "written" for o in x["outputs"]]
    assert sorted(written) == sorted(str(out / f"z{i:02d}.npy") for i in range(6))


def test_manifest_and_input_safety(tiny_vae_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "a.npy", rng_latent((1, 4, 1, 2, 2)))
    manifest = tmp_path / "list.txt"
    manifest.write_text("# latents\nin/a.npy\tfirst.y4m\nin/a.npy\n")
    jobs = batch.plan_jobs(manifest, tmp_path / "o", "y4m")
    assert [os.path.basename(j.output) for j in jobs] == ["first.y4m", "a.y4m"]
    # npy outputs into the input folder would overwrite the latents: refused up front.
    with pytest.raises(movq.MovqIOError, match="is an input latent"):
        batch.plan_jobs(src, src, "npy")
    manifest.write_text("in/a.npy\tsame.y4m\nin/a.npy\tsame.y4m\n")
    with pytest.raises(movq.MovqIOError, match="the output of both"):
        batch.plan_jobs(manifest, tmp_path / "o", "y4m")
