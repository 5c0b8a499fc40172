#!/usr/bin/env bash
# Same-run comparison of movq and the PyTorch reference (bench/torch_ref) on a named config:
# same random weights, same latent, same thread count. Prints the median of REPEAT runs each,
# the speed ratio, GFLOP/s (spec section 13 counting), the fraction of the machine's measured
# FMA peak (`movq bench --peak`), and each process's peak RSS.
#
# Usage: bench/compare.sh [seed|bench|seed_attn|cogvideox] [THREADS=2] [REPEAT=3]
# cogvideox: random weights with the CogVideoX-2b VAE config, z 1x16x3x30x45, movq's chunked
# decode against diffusers' `AutoencoderKLCogVideoX.decode` (bench/torch_ref/cogvideox.py).
# Installs PyTorch (+ numpy, safetensors, diffusers) into bench/.venv when missing (from PyPI).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
name="${1:-seed}"
threads="${2:-2}"
repeat="${3:-3}"
work="${WORK:-$root/target/compare/$name}"
venv="${VENV:-$here/.venv}"
mkdir -p "$work"

case "$name" in
  seed)      res=256; shape=1,256,4,16,16 ;;
  seed_attn) res=128; shape=1,256,4,16,16 ;;
  bench)     res=256; shape=1,256,5,32,32 ;;
  cogvideox) shape=1,16,3,30,45 ;;
  *) echo "unknown config $name (seed|seed_attn|bench|cogvideox)" >&2; exit 2 ;;
esac
if [ "$name" = cogvideox ]; then
  mkdir -p "$work/cog"
  cat > "$work/cog/config.json" <<JSON
{"_class_name": "AutoencoderKLCogVideoX", "act_fn": "silu", "block_out_channels": [128, 256, 256, 512],
 "down_block_types": ["CogVideoXDownBlock3D", "CogVideoXDownBlock3D", "CogVideoXDownBlock3D", "CogVideoXDownBlock3D"],
 "force_upcast": true, "in_channels": 3, "latent_channels": 16, "layers_per_block": 3, "norm_eps": 1e-06,
 "norm_num_groups": 32, "out_channels": 3, "sample_height": 480, "sample_width": 720, "scaling_factor": 1.15258426,
 "temporal_compression_ratio": 4,
 "up_block_types": ["CogVideoXUpBlock3D", "CogVideoXUpBlock3D", "CogVideoXUpBlock3D", "CogVideoXUpBlock3D"],
 "use_post_quant_conv": false, "use_quant_conv": false}
JSON
else
cat > "$work/config.json" <<JSON
{"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [16],
 "dropout": 0.0, "resamp_with_conv": true, "in_channels": 3, "resolution": $res, "z_channels": 256,
 "give_pre_end": false, "add_conv": false, "pad_mode": "first", "temporal_compress_times": 4}
JSON
fi

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, numpy, safetensors, diffusers" 2>/dev/null; then
  echo "installing PyTorch into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch numpy safetensors diffusers
fi

(cd "$root" && cargo build --release -q)
movq="$root/target/release/movq"
if [ "$name" = cogvideox ]; then
  "$movq" random-weights --config "$work/cog/config.json" --diffusers-names --seed 1 \
    --output "$work/cog/diffusion_pytorch_model.safetensors" --latent-shape "$shape" --latent-out "$work/z.npy"
  weights="$work/cog"
else
  "$movq" random-weights --config "$work/config.json" --output "$work/w.safetensors" --seed 1 \
    --latent-shape "$shape" --latent-out "$work/z.npy"
  weights="$work/w.safetensors"
fi

peak=$("$movq" --threads "$threads" bench --peak)
m=$("$movq" --threads "$threads" bench --weights "$weights" --latent "$work/z.npy" \
  --repeat "$repeat" --output "$work/movq.safetensors")
if [ "$name" = cogvideox ]; then
  t=$(cd "$here/torch_ref" && "$venv/bin/python" cogvideox.py --folder "$work/cog" \
    --latent "$work/z.npy" --threads "$threads" --repeat "$repeat" --output "$work/torch.npy")
else
  t=$(cd "$here/torch_ref" && "$venv/bin/python" run.py --weights "$work/w.safetensors" \
    --latent "$work/z.npy" --threads "$threads" --repeat "$repeat" --output "$work/torch.npy")
fi

"$venv/bin/python" - "$peak" "$m" "$t" "$work" <<'PY'
import json, sys
import numpy as np
from safetensors.numpy import load_file
peak, m, t, work = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
flop = m["flop"]
ym = load_file(f"{work}/movq.safetensors")["sample"].astype(np.float64)
yt = np.load(f"{work}/torch.npy").astype(np.float64)
rel = np.linalg.norm(ym - yt) / np.linalg.norm(yt)
print(f"config {work.rsplit('/', 1)[-1]}: z {m['input_shape']} -> {m['output_shape']}, {flop / 1e12:.3f} TFLOP, "
      f"threads {m['threads']} (torch {t['threads']}), FMA peak {peak['peak_gflops']:.1f} GFLOP/s "
      f"({peak['peak_1t_gflops']:.1f} on 1 thread)")
print(f"{'engine':<8} {'median s':>9} {'runs':<24} {'GFLOP/s':>8} {'% peak':>7} {'peak RSS MiB':>13}")
for e in (m, t):
    g = flop / e["median_s"] / 1e9
    runs = ",".join(f"{r:.1f}" for r in e["runs_s"])
    print(f"{e['engine']:<8} {e['median_s']:>9.2f} {runs:<24} {g:>8.1f} {100 * g / peak['peak_gflops']:>6.1f}% "
          f"{e['peak_rss_mib']:>13.0f}")
print(f"speed ratio (torch / movq): {t['median_s'] / m['median_s']:.2f}x; "
      f"RSS ratio (movq / torch): {m['peak_rss_mib'] / t['peak_rss_mib']:.2f}; "
      f"outputs rel-L2 difference {rel:.2e}")
PY
