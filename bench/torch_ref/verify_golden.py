"""Checks the PyTorch reference (movq_ref.py) against ../shared/golden with the golden README's
tolerance rule, in float32 and float64. Usage: python verify_golden.py [GOLDEN_DIR]"""

import json
import pathlib
import sys

import torch
from safetensors import safe_open

from movq_ref import AttnBlock2D, CausalConv3d, Decoder3D, ResnetBlock3D, SpatialNorm3D, Upsample3D


def build(cls, cfg):
    if cls in ("MOVQDecoder3D", "NewDecoder3D"):
        return Decoder3D(dict(cfg, **{"class": cls}))
    if cls == "CausalConv3d":
        return CausalConv3d(cfg["chan_in"], cfg["chan_out"], cfg["kernel_size"], cfg["pad_mode"])
    if cls == "SpatialNorm3D":
        return SpatialNorm3D(cfg["f_channels"], cfg["zq_channels"], cfg["add_conv"])
    if cls == "ResnetBlock3D":
        return ResnetBlock3D(cfg["in_channels"], cfg["out_channels"], cfg["zq_ch"], cfg["add_conv"], cfg["pad_mode"])
    if cls == "AttnBlock2D":
        return AttnBlock2D(cfg["in_channels"], cfg["zq_ch"], cfg["add_conv"])
    if cls == "Upsample3D":
        return Upsample3D(cfg["in_channels"], cfg["with_conv"], cfg["compress_time"])
    return None


def main():
    golden = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../../../shared/golden")
    failed = 0
    for path in sorted(golden.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["meta"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        m = build(meta["class"], meta["config"])
        if m is None:
            print(f"{path.stem:<36} SKIPPED ({meta['class']})")
            continue
        weights = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output"))}
        m.load_state_dict(weights, strict=True)
        ref = tensors["output.f64"]
        for dtype in (torch.float32, torch.float64):
            mm = m.to(dtype)
            inputs = [tensors[i["name"]].to(dtype) for i in meta["inputs"]]
            with torch.no_grad():
                y = mm(*inputs).to(torch.float64)
            d = y - ref
            max_abs = d.abs().max().item()
            rel = (d.norm() / ref.norm()).item()
            if dtype == torch.float32:
                ok = rel <= 4 * max(meta["f32_rel_l2_err"], 1e-7) and max_abs <= 4 * max(
                    meta["f32_max_abs_err"], 1e-7 * max(1, meta["output_f64_absmax"])
                )
            else:
                ok = rel < 1e-12
            failed += not ok
            print(f"{path.stem:<36} {str(dtype)[6:]:<8} max_abs {max_abs:.3e} rel_l2 {rel:.3e} {'PASS' if ok else 'FAIL'}")
    print(f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
