"""Times the PyTorch reference decoder on a movq weights file and latent, like `movq bench`.

Usage: python run.py --weights W.safetensors --latent z.npy [--config C.json] [--threads N]
                     [--repeat 3] [--output out.npy]
Prints one JSON line: runs_s, median_s, peak_rss_mib, output_shape.
"""

import argparse
import json
import resource
import time

import numpy as np
import torch
from safetensors import safe_open

from movq_ref import Decoder3D


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--latent", required=True)
    ap.add_argument("--config")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--output")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with safe_open(a.weights, "pt") as f:
        cfg = json.loads(a.config and open(a.config).read() or f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = Decoder3D(cfg).eval()
    model.load_state_dict(state, strict=True)
    del state
    z = torch.from_numpy(np.load(a.latent)).float()
    runs = []
    with torch.no_grad():
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            y = model(z)
            runs.append(time.perf_counter() - t0)
            print(f"decode {tuple(z.shape)} -> {tuple(y.shape)}: {runs[-1]:.2f} s", flush=True, file=__import__("sys").stderr)
    if a.output:
        np.save(a.output, y.numpy())
    print(json.dumps({
        "engine": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs_s": runs,
        "median_s": sorted(runs)[len(runs) // 2],
        "output_shape": list(y.shape),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
