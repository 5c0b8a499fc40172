#!/usr/bin/env bash
# Same-run comparison of movq and the PyTorch reference (bench/torch_ref) on a named config:
# same random weights, same latent, same thread count. Prints the median of REPEAT runs each,
# the speed ratio, GFLOP/s (spec section 13 counting), the fraction of the machine's measured
# FMA peak (`movq bench --peak`), and each process's peak RSS.
#
# Usage: bench/compare.sh [seed|bench|seed_attn] [THREADS=2] [REPEAT=3]
# Installs PyTorch (+ numpy, safetensors) into bench/.venv when missing (from PyPI).
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
  *) echo "unknown config $name (seed|seed_attn|bench)" >&2; exit 2 ;;
esac
cat > "$work/config.json" <<JSON
{"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [16],
 "dropout": 0.0, "resamp_with_conv": true, "in_channels": 3, "resolution": $res, "z_channels": 256,
 "give_pre_end": false, "add_conv": false, "pad_mode": "first", "temporal_compress_times": 4}
JSON

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, numpy, safetensors" 2>/dev/null; then
  echo "installing PyTorch into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch numpy safetensors
fi

(cd "$root" && cargo build --release -q)
movq="$root/target/release/movq"
"$movq" random-weights --config "$work/config.json" --output "$work/w.safetensors" --seed 1 \
  --latent-shape "$shape" --latent-out "$work/z.npy"

peak=$("$movq" --threads "$threads" bench --peak)
m=$("$movq" --threads "$threads" bench --weights "$work/w.safetensors" --latent "$work/z.npy" \
  --repeat "$repeat" --output "$work/movq.safetensors")
t=$(cd "$here/torch_ref" && "$venv/bin/python" run.py --weights "$work/w.safetensors" \
  --latent "$work/z.npy" --threads "$threads" --repeat "$repeat" --output "$work/torch.npy")

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
