#!/usr/bin/env bash
# The Python path's overhead against the CLI on the seed config (bench/compare.sh seed): same
# random weights, latent and thread count; CLI and Python runs alternate, ROUNDS of each.
# Both decode into a .npy file (decode_stream + the atomic frame writer). Prints, per run, the
# decode time (the CLI's own "decode" figure; Python: the decode_to_file call, latent
# conversion included), the whole process's wall time, and its CPU time (user + system, all
# threads; less disturbed than wall time by other work on a shared machine).
# Usage: scripts/python-overhead.sh [THREADS=2] [ROUNDS=2]   (with `movq` importable by python3)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
rounds="${2:-2}"
py="${PYTHON:-python3}"
work=target/overhead
mkdir -p "$work"
cat > "$work/config.json" <<JSON
{"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [16],
 "dropout": 0.0, "resamp_with_conv": true, "in_channels": 3, "resolution": 256, "z_channels": 256,
 "give_pre_end": false, "add_conv": false, "pad_mode": "first", "temporal_compress_times": 4}
JSON
cargo build --release -q
movq=target/release/movq
[ -f "$work/w.safetensors" ] || "$movq" random-weights --config "$work/config.json" \
  --output "$work/w.safetensors" --seed 1 --latent-shape 1,256,4,16,16 --latent-out "$work/z.npy"
for r in $(seq 1 "$rounds"); do
  rm -f "$work/cli.npy" "$work/py.npy"
  s=$(date +%s.%N)
  line=$(/usr/bin/time -o "$work/cpu" -f "%U %S" "$movq" --threads "$threads" decode --weights "$work/w.safetensors" --latent "$work/z.npy" \
    --output "$work/cli.npy" --quiet 2>&1 | grep '^wrote')
  e=$(date +%s.%N)
  dec=$(sed -E 's/.*decode ([0-9.]+) s.*/\1/' <<<"$line")
  cpu=$(awk '{print $1 + $2}' "$work/cpu")
  echo "round $r cli:    decode $dec s, process wall $(echo "$e - $s" | bc) s, process CPU $cpu s"
  s=$(date +%s.%N)
  dec=$(/usr/bin/time -o "$work/cpu" -f "%U %S" "$py" - "$work" "$threads" <<'PY'
import sys, time
import numpy as np
import movq
work, threads = sys.argv[1], int(sys.argv[2])
d = movq.Decoder(f"{work}/w.safetensors", threads=threads)
z = np.load(f"{work}/z.npy")
t = time.perf_counter()
d.decode_to_file(z, f"{work}/py.npy")
print(f"{time.perf_counter() - t:.2f}")
PY
)
  e=$(date +%s.%N)
  cpu=$(awk '{print $1 + $2}' "$work/cpu")
  echo "round $r python: decode $dec s, process wall $(echo "$e - $s" | bc) s, process CPU $cpu s"
  cmp "$work/cli.npy" "$work/py.npy" && echo "round $r: outputs identical"
done
