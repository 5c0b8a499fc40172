"""Trains the small MoVQ-style autoencoder whose decoder `movq demo` ships.

Developer tool (needs PyTorch, numpy, safetensors); tests never run it. The decoder is
bench/torch_ref/movq_ref.py's MOVQDecoder3D (upstream state-dict names), trained together with a
throwaway encoder on synthetic clips of coloured shapes moving over a gradient background.
Writes, into --out (default assets/demo):
  decoder.safetensors  decoder weights in float16, config in the metadata (`config`)
  latent.npy           the encoder's latent of the held-out demo clip, (1, 4, T, H/4, W/4) f32
  frames.npy           that clip's ground-truth frames, (frames, height, width, 3) uint8
  reference.json       PyTorch's 8-bit PSNR of the float16 decoder on that latent (movq's test
                       checks `movq demo` reports the same)
every --export-every steps and at the end. Training runs on random --crop x --crop windows of
64x64 clips (the decoder is convolutional; no attention, so nothing depends on the frame size).
Usage: python scripts/demo/train.py [--steps 1000] [--threads 2] [--out assets/demo]
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench", "torch_ref"))
from movq_ref import Decoder3D  # noqa: E402

CONFIG = {
    "class": "MOVQDecoder3D",
    "ch": 32,
    "out_ch": 3,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "resolution": 64,
    "z_channels": 4,
    "pad_mode": "first",
    "temporal_compress_times": 4,
}
SIZE = 64
TCT = 4


def clip(rng, frames, size=SIZE):
    """One clip in [-1, 1], (3, frames, size, size): 2-4 shapes bouncing over a gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c0, c1 = rng.uniform(0.0, 0.6, 3), rng.uniform(0.0, 0.6, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx * np.cos(angle) + yy * np.sin(angle)) / size + 1) / 2
    bg = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp
    shapes = []
    for _ in range(rng.integers(2, 5)):
        r = rng.uniform(5, 12)
        shapes.append(
            dict(
                kind=rng.integers(0, 3),
                r=r,
                p=rng.uniform(r, size - r, 2),
                v=rng.uniform(-3.5, 3.5, 2),
                color=rng.uniform(0.3, 1.0, 3) * (rng.uniform(size=3) > 0.3),
            )
        )
    out = np.empty((3, frames, size, size), np.float32)
    for t in range(frames):
        img = bg.copy()
        for s in shapes:
            dx, dy = xx - s["p"][0], yy - s["p"][1]
            if s["kind"] == 0:
                inside = dx * dx + dy * dy < s["r"] ** 2
            elif s["kind"] == 1:
                inside = (np.abs(dx) < s["r"] * 0.85) & (np.abs(dy) < s["r"] * 0.85)
            else:
                d = np.sqrt(dx * dx + dy * dy)
                inside = (d < s["r"]) & (d > s["r"] * 0.55)
            img[:, inside] = s["color"][:, None]
            s["p"] = s["p"] + s["v"]
            for a in range(2):
                if s["p"][a] < s["r"] or s["p"][a] > size - s["r"]:
                    s["v"][a] = -s["v"][a]
        out[:, t] = img
    return out * 2 - 1


class Encoder(nn.Module):
    """Frame 0 alone, then groups of 4 frames -> one latent frame each; 4x spatial reduction."""

    def __init__(self, zc):
        super().__init__()
        c = 3 * TCT
        self.net = nn.Sequential(
            nn.Conv3d(c, 64, (1, 3, 3), padding=(0, 1, 1)), nn.SiLU(),
            nn.Conv3d(64, 64, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1)), nn.SiLU(),
            nn.Conv3d(64, 96, (3, 3, 3), padding=(1, 1, 1)), nn.SiLU(),
            nn.Conv3d(96, 96, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1)), nn.SiLU(),
            nn.Conv3d(96, 96, (1, 3, 3), padding=(0, 1, 1)), nn.SiLU(),
            nn.Conv3d(96, zc, 1),
        )

    def forward(self, x):
        b, c, f, h, w = x.shape
        x = torch.cat([x[:, :, :1]] * (TCT - 1) + [x], dim=2)
        t = x.shape[2] // TCT
        x = x.reshape(b, c, t, TCT, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c * TCT, t, h, w)
        return self.net(x)


def batch(rng, n, frames, crop):
    out = []
    for _ in range(n):
        x = clip(rng, frames)
        i, j = rng.integers(0, SIZE - crop + 1, 2) // 4 * 4
        out.append(x[:, :, i : i + crop, j : j + crop])
    return torch.from_numpy(np.stack(out))


def export(enc, dec, out, demo_latent_frames, steps):
    """Writes the float16 decoder, the demo latent and frames, and PyTorch's PSNR on them."""
    os.makedirs(out, exist_ok=True)
    demo = torch.from_numpy(clip(np.random.default_rng(12345), TCT * (demo_latent_frames - 1) + 1))[None]
    weights = {k: v.detach().half().contiguous() for k, v in dec.state_dict().items()}
    with torch.no_grad():
        z = enc(demo)
        dec16 = Decoder3D(CONFIG)
        dec16.load_state_dict({k: v.float() for k, v in weights.items()})
        y = dec16(z)
    # The pipelines' mapping: (x / 2 + 0.5) clamped, * 255, numpy round (half to even).
    to8 = lambda v: np.round(np.clip(v.numpy() / 2 + 0.5, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    gt = to8(demo[0]).transpose(1, 2, 3, 0)
    rec = to8(y[0]).transpose(1, 2, 3, 0)
    mse8 = np.mean((gt.astype(np.float64) - rec.astype(np.float64)) ** 2)
    psnr = 10 * math.log10(255**2 / mse8)
    meta = {"config": json.dumps(CONFIG), "producer": "scripts/demo/train.py", "steps": str(steps)}
    save_file(weights, os.path.join(out, "decoder.safetensors"), metadata=meta)
    np.save(os.path.join(out, "latent.npy"), z.numpy().astype(np.float32))
    np.save(os.path.join(out, "frames.npy"), gt)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"psnr_8bit_pytorch": psnr, "steps": steps, "frames": list(gt.shape)}, f)
    n = sum(v.numel() for v in weights.values())
    print(f"exported {out} after {steps} steps: {n} decoder parameters, demo clip PSNR {psnr:.2f} dB", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent-frames", type=int, default=3, help="training clip length, in latent frames")
    ap.add_argument("--demo-latent-frames", type=int, default=5)
    ap.add_argument("--export-every", type=int, default=200)
    ap.add_argument("--out", default="assets/demo")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    frames = TCT * (a.latent_frames - 1) + 1
    enc, dec = Encoder(CONFIG["z_channels"]), Decoder3D(CONFIG)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=a.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.05)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        x = batch(rng, a.batch, frames, a.crop)
        y = dec(enc(x))
        loss = F.l1_loss(y, x) + F.mse_loss(y, x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            mse = F.mse_loss(y.clamp(-1, 1), x).item()
            psnr = 10 * math.log10(4.0 / max(mse, 1e-12))
            print(f"step {step:5d} loss {loss.item():.4f} psnr {psnr:5.2f} dB ({time.time() - t0:.0f} s)", flush=True)
        if step % a.export_every == 0 or step == a.steps:
            export(enc, dec, a.out, a.demo_latent_frames, step)


if __name__ == "__main__":
    main()
