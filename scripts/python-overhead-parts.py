"""The Python path's own work around a decode, measured inside one process: reading and
converting the latent before the decode, and the calling thread's CPU while the decode runs
(signal polls, progress hand-off). Run in target/overhead after scripts/python-overhead.sh made
the seed weights and latent there: `cd target/overhead && python ../../scripts/python-overhead-parts.py`."""

import time

import numpy as np

import movq

d = movq.Decoder("w.safetensors", threads=2)
z = np.load("z.npy")
t = time.perf_counter()
for _ in range(20):
    try:
        d.decode(z, max_memory=1e-9)  # latent read/convert + NaN check + estimate, then refused
    except movq.ResourceError:
        pass
pre = (time.perf_counter() - t) / 20
c0, t0 = time.thread_time(), time.perf_counter()
d.decode_to_file(z, "py.npy")
wall, caller_cpu = time.perf_counter() - t0, time.thread_time() - c0
print(
    f"before-decode work {pre * 1e3:.2f} ms; decode {wall:.2f} s; calling thread CPU during it "
    f"{caller_cpu * 1e3:.1f} ms ({100 * caller_cpu / wall:.3f} % of one core)"
)
