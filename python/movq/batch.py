"""Batch decoding of many latents on Ray: one loaded decoder per worker (a Ray actor), Ray's
``ActorPool`` handing out the latents, every output written atomically (a hidden temporary
renamed into place when complete), complete outputs skipped, so a rerun after a crash, a
killed worker or a lost node finishes exactly what is missing.

    python -m movq.batch --weights CogVideoX-2b/ --inputs latents/ --output-dir videos/ \\
        --format y4m --workers 4 --threads-per-worker 2 [--address auto]

Inputs: a directory (every ``*.npy`` in it, sorted) or a manifest file (one latent path per
line, relative to the manifest's folder, optionally followed by a tab and an output name;
``#`` starts a comment). Output ``<output-dir>/<latent stem>.<format>`` unless the manifest
names it. Every output written is recorded as one JSON line in
``<output-dir>/.movq-batch-log.jsonl`` (latent, outputs, inode, mtime, worker pid and host),
with a ``start`` line when a worker begins a latent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import MovqIOError

LOG_NAME = ".movq-batch-log.jsonl"
FORMATS = ("y4m", "npy", "safetensors", "apng")


@dataclasses.dataclass(frozen=True)
class Job:
    latent: str
    output: str
    samples: int  # batch size of the latent: video outputs are one file per sample


@dataclasses.dataclass
class BatchReport:
    written: List[str] = dataclasses.field(default_factory=list)
    skipped: List[str] = dataclasses.field(default_factory=list)
    failed: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    missing: List[str] = dataclasses.field(default_factory=list)
    workers_lost: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missing


def output_files(job: Job) -> List[str]:
    """The files a job's output consists of (movq's naming: one per sample for video)."""
    p = Path(job.output)
    if job.samples == 1 or p.suffix in (".npy", ".safetensors"):
        return [job.output]
    return [str(p.with_name(f"{p.stem}_b{i}{p.suffix}")) for i in range(job.samples)]


def is_complete(job: Job) -> bool:
    """Outputs appear under their names only when complete (atomic rename), so existence is
    completeness."""
    return all(os.path.isfile(f) for f in output_files(job))


def _read_manifest(path: Path) -> List[tuple]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        latent, _, out = line.partition("\t")
        rows.append((str((path.parent / latent.strip()).resolve()), out.strip() or None))
    return rows


def plan_jobs(inputs: os.PathLike, output_dir: os.PathLike, fmt: str = "y4m") -> List[Job]:
    """The jobs of a batch, checked before any decoding: formats, duplicate outputs, outputs
    that are inputs."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    src = Path(inputs)
    if src.is_dir():
        rows = [(str(p.resolve()), None) for p in sorted(src.glob("*.npy"))]
    else:
        rows = _read_manifest(src)
    out_dir = Path(output_dir).resolve()
    jobs, seen = [], {}
    latents = {os.path.realpath(r[0]) for r in rows}
    for latent, name in rows:
        out = out_dir / (name or f"{Path(latent).stem}.{fmt}")
        if str(out) in seen:
            raise MovqIOError(f"{out}: the output of both {seen[str(out)]} and {latent}")
        if os.path.realpath(out) in latents:
            raise MovqIOError(f"{out}: the output is an input latent; refusing to overwrite an input")
        seen[str(out)] = latent
        samples = int(np.load(latent, mmap_mode="r").shape[0])
        jobs.append(Job(latent, str(out), samples))
    return jobs


def _append_log(log: str, record: Dict[str, Any]) -> None:
    # One write() on an O_APPEND file: lines of concurrent workers do not interleave.
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Worker:
    """A Ray actor holding one loaded decoder; decodes one latent per call."""

    def __init__(self, weights: str, decoder_kwargs: Dict[str, Any], decode_kwargs: Dict[str, Any]):
        from . import Decoder

        self.decoder = Decoder(weights, **decoder_kwargs)
        self.decode_kwargs = decode_kwargs

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: Job, log: str) -> Dict[str, Any]:
        if is_complete(job):
            return {"status": "skipped", "latent": job.latent}
        base = {"latent": job.latent, "pid": os.getpid(), "host": socket.gethostname()}
        _append_log(log, {"event": "start", **base})
        t0 = time.time()
        try:
            z = np.load(job.latent, mmap_mode="r")  # read in place by the decoder
            paths = self.decoder.decode_to_file(z, job.output, **self.decode_kwargs)
        except Exception as e:  # one bad latent must not stop the batch
            return {"status": "error", "latent": job.latent, "error": f"{type(e).__name__}: {e}"}
        stats = [os.stat(p) for p in paths]
        _append_log(
            log,
            {
                "event": "written",
                **base,
                "outputs": paths,
                "inodes": [s.st_ino for s in stats],
                "mtimes_ns": [s.st_mtime_ns for s in stats],
                "seconds": round(time.time() - t0, 3),
            },
        )
        return {"status": "written", "latent": job.latent, "outputs": paths}


def decode_batch(
    inputs: os.PathLike,
    output_dir: os.PathLike,
    weights: os.PathLike,
    *,
    fmt: str = "y4m",
    workers: int = 2,
    threads_per_worker: int = 1,
    address: Optional[str] = None,
    max_retries: int = 0,
    decoder_kwargs: Optional[Dict[str, Any]] = None,
    decode_kwargs: Optional[Dict[str, Any]] = None,
    init_kwargs: Optional[Dict[str, Any]] = None,
) -> BatchReport:
    """Decodes every latent of ``inputs`` that has no complete output in ``output_dir``.

    Connects to the Ray cluster at ``address`` (``"auto"``, ``"ray://head:10001"``, ...), or
    uses the running one, or starts a local one with ``init_kwargs``. ``workers`` actors of
    ``threads_per_worker`` CPUs each load the decoder once. A worker that dies is restarted up
    to ``max_retries`` times with its latent retried; beyond that its latent stays missing
    (reported), and a rerun decodes it."""
    import ray
    from ray.util import ActorPool

    t0 = time.time()
    jobs = plan_jobs(inputs, output_dir, fmt)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    log = str(Path(output_dir).resolve() / LOG_NAME)
    report = BatchReport()
    todo = []
    for j in jobs:
        (report.skipped.append(j.latent) if is_complete(j) else todo.append(j))
    if todo:
        if not ray.is_initialized():
            if address is not None:
                ray.init(address=address, **(init_kwargs or {}))
            else:
                ray.init(**(init_kwargs or {}))
        decoder_kwargs = dict(decoder_kwargs or {}, threads=threads_per_worker)
        actor = ray.remote(
            num_cpus=threads_per_worker, max_restarts=max_retries, max_task_retries=max_retries
        )(Worker)
        weights = os.fspath(Path(weights).resolve())
        n = max(1, min(workers, len(todo)))
        pool = ActorPool([actor.remote(weights, decoder_kwargs, decode_kwargs or {}) for _ in range(n)])
        for j in todo:
            pool.submit(lambda a, job: a.run.remote(job, log), j)
        while pool.has_next():
            try:
                r = pool.get_next_unordered()
            except ray.exceptions.RayActorError:
                report.workers_lost += 1
                continue
            except TimeoutError:
                break  # no live worker is left to run the rest: the rerun will
            if r["status"] == "written":
                report.written.append(r["latent"])
            elif r["status"] == "skipped":
                report.skipped.append(r["latent"])
            else:
                report.failed.append({"latent": r["latent"], "error": r["error"]})
    report.missing = [j.latent for j in jobs if not is_complete(j)]
    report.seconds = round(time.time() - t0, 3)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movq.batch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="checkpoint: file, shard index or model folder")
    ap.add_argument("--inputs", required=True, help="a directory of .npy latents or a manifest file")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--format", default="y4m", choices=FORMATS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--address", help="Ray cluster address (default: start a local one)")
    ap.add_argument("--max-retries", type=int, default=2, help="restarts of a dead worker")
    ap.add_argument("--precision", default="f32", choices=("f32", "f64", "bf16-emulated", "bf16"))
    ap.add_argument("--mode", choices=("whole", "chunked", "tiled"))
    ap.add_argument("--layout", default="bcthw", choices=("bcthw", "btchw"))
    ap.add_argument("--latent-scaled", action="store_true", help="divide by the model's scaling_factor")
    ap.add_argument("--fps", type=int, default=8)
    a = ap.parse_args(argv)
    report = decode_batch(
        a.inputs,
        a.output_dir,
        a.weights,
        fmt=a.format,
        workers=a.workers,
        threads_per_worker=a.threads_per_worker,
        address=a.address,
        max_retries=a.max_retries,
        decoder_kwargs={"precision": a.precision},
        decode_kwargs={"mode": a.mode, "layout": a.layout, "latent_scaled": a.latent_scaled, "fps": a.fps},
    )
    print(json.dumps(dataclasses.asdict(report)))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
