"""Times diffusers' `AutoencoderKLCogVideoX.decode` (PyTorch eager) on a movq-made diffusers
folder (config.json + decoder weights with diffusers names) and latent, like `movq bench`.

The folder holds decoder weights only; the encoder keeps its random initialisation (decode never
runs it). z is decoded as given (`vae.decode(z)`: chunks of 2 latent frames with carried conv
caches, no tiling), which is what `movq bench` runs in chunked mode.

Usage: python cogvideox.py --folder cog/ --latent z.npy [--threads N] [--repeat 3] [--output out.npy]
Prints one JSON line: runs_s, median_s, peak_rss_mib, output_shape.
"""

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--latent", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--output")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = json.load(open(f"{a.folder}/config.json"))
    vae = AutoencoderKLCogVideoX(**{k: v for k, v in cfg.items() if not k.startswith("_")}).eval()
    state = load_file(f"{a.folder}/diffusion_pytorch_model.safetensors")
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if unexpected or any(k.startswith("decoder.") for k in missing):
        sys.exit(f"weights do not match the decoder: missing {missing[:5]}, unexpected {unexpected[:5]}")
    del state
    z = torch.from_numpy(np.load(a.latent)).float()
    runs = []
    with torch.no_grad():
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            y = vae.decode(z).sample
            runs.append(time.perf_counter() - t0)
            print(f"decode {tuple(z.shape)} -> {tuple(y.shape)}: {runs[-1]:.2f} s", flush=True, file=sys.stderr)
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
