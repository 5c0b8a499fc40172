"""Rounding error of a Winograd step in time, simulated in PyTorch before building it.

movq's f32 conv is Winograd F(2x2, 3x3) in (h, w) with the 3 time taps summed per tap
(README, Performance). A further F(2, 3) step in time (F(2x2x2): 64 products per 8 outputs
instead of 96) would cut the multiplies by a third. This script convolves random causal
("first" padded) inputs both ways, every add and multiply rounded to f32 as movq would (the
channel sums by einsum), and prints each one's rel-L2 error against the f64 conv divided by
PyTorch's own f32 conv error, the ratio `movq verify` bounds by 1.0.

Usage: python bench/winograd_time_error.py   (needs torch, numpy)
"""
import numpy as np
import torch

BT = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]  # F(2, 3) input transform
G = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]  # kernel transform
AT = [[1, 1, 1, 0], [0, 1, -1, -1]]  # output transform


def apply(m, x, dims):
    """m applied along each dim of dims, one rounded op per term (in x's dtype)."""
    for d in dims:
        x = x.movedim(d, -1)
        rows = []
        for row in m:
            acc = None
            for c, v in enumerate(row):
                if v == 0:
                    continue
                term = x[..., c] if v == 1 else (-x[..., c] if v == -1 else x[..., c] * v)
                acc = term if acc is None else acc + term
            rows.append(acc)
        x = torch.stack(rows, -1).movedim(-1, d)
    return x


def padded(x):
    """Causal "first" time padding (frame 0 twice) and zero spatial padding 1."""
    x = torch.cat([x[:, :, :1]] * 2 + [x], 2)
    return torch.nn.functional.pad(x, (1, 1, 1, 1))


def winograd(x, w, dt, time_step):
    n, ci, t, h, wd = x.shape
    co = w.shape[0]
    th, tw, tt = (h + 1) // 2, (wd + 1) // 2, (t + 1) // 2
    xp = torch.nn.functional.pad(padded(x).to(dt), (0, 2 * tw - wd, 0, 2 * th - h, 0, 2 * tt - t if time_step else 0))
    ih = torch.arange(th)[:, None] * 2 + torch.arange(4)[None]
    iw = torch.arange(tw)[:, None] * 2 + torch.arange(4)[None]
    d = apply(BT, xp[:, :, :, ih][:, :, :, :, :, iw], [4, 6])  # n, ci, frames, th, 4, tw, 4
    u = apply(G, w.double(), [3, 4])  # co, ci, 3, 4, 4 (f64, rounded once below)
    if not time_step:
        out = None
        for k in range(3):
            m = torch.einsum("nctHaWb,ocab->notHaWb", d[:, :, k : k + t], u[:, :, k].to(dt))
            out = m if out is None else out + m
    else:
        it = torch.arange(tt)[:, None] * 2 + torch.arange(4)[None]
        dtt = apply(BT, d[:, :, it], [3])  # n, ci, tt, 4, th, 4, tw, 4
        ut = apply(G, u, [2]).to(dt)  # co, ci, 4, 4, 4
        m = torch.einsum("nctjHaWb,ocjab->notjHaWb", dtt, ut)
        out = apply(AT, m, [3]).reshape(n, co, 2 * tt, th, 4, tw, 4)[:, :, :t]
    y = apply(AT, out, [4, 6]).reshape(n, co, t, 2 * th, 2 * tw)
    return y[:, :, :, :h, :wd]


def rel(a, ref):
    return float((a.double() - ref).norm() / ref.norm())


def main():
    torch.manual_seed(0)
    print("c_in c_out (t, h, w): error / PyTorch f32 error, F(2x2) and F(2x2x2), 3 draws")
    for ci, co, t, h, wd in [(8, 16, 5, 6, 7), (32, 64, 5, 8, 8), (64, 64, 5, 8, 8), (128, 128, 6, 16, 16)]:
        cols = []
        for _ in range(3):
            x = torch.randn(1, ci, t, h, wd, dtype=torch.float64).float().double()
            w = (torch.randn(co, ci, 3, 3, 3, dtype=torch.float64) / np.sqrt(27 * ci)).float().double()
            ref = torch.nn.functional.conv3d(padded(x), w)
            e = rel(torch.nn.functional.conv3d(padded(x).float(), w.float()), ref)
            assert rel(winograd(x, w, torch.float64, True), ref) < 1e-12, "the F(2x2x2) algebra"
            r2, r3 = (rel(winograd(x, w, torch.float32, s), ref) / e for s in (False, True))
            cols.append(f"{r2:.3f} {r3:.3f} ({r3 / r2:.2f}x)")
        print(ci, co, (t, h, wd), " | ".join(cols))


if __name__ == "__main__":
    main()
