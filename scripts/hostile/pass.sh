#!/usr/bin/env bash
# Outside-tester pass (docs/hostile-input.md): runs hostile cases against a built movq and
# prints one markdown row per case: command, expected, observed, verdict. Devices are only
# named through symbolic links in the scratch directory: an unfixed movq replaced /dev/null
# itself (case 87).
# Usage: scripts/hostile/pass.sh [path/to/movq] > rows.md   (needs bash, coreutils, python3)
set -u
# A bounded address space: an unfixed movq reading /dev/zero must not exhaust the machine.
ulimit -v 8000000
M=${1:-target/release/movq}
M=$(readlink -f "$M")
W=$(mktemp -d)
cd "$W" || exit 1
cat > tiny.json <<'J'
{"ch": 32, "out_ch": 3, "ch_mult": [1, 1], "num_res_blocks": 0, "attn_resolutions": [], "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}
J
"$M" random-weights --config tiny.json --output w.safetensors --latent-shape 1,4,2,4,4 --latent-out z.npy 2>/dev/null
"$M" random-weights --config tiny.json --output w2.safetensors --latent-shape 2,4,2,4,4 --latent-out z2.npy 2>/dev/null
SUM=$(cat w.safetensors z.npy tiny.json | md5sum)
N=0

# case DESCRIPTION EXPECTED_RC EXPECTED_SUBSTRING -- command...
case_() {
  local desc=$1 want_rc=$2 want=$3; shift 4
  N=$((N + 1))
  rm -rf out* .out* 2>/dev/null
  local err rc
  err=$(timeout 60 "$@" 2>&1 >/dev/null </dev/null); rc=$?
  local first
  first=$(printf '%s' "$err" | grep -m1 -E '^(error|movq|warning)' || printf '%s' "$err" | head -1)
  first=${first//|/\\|}
  local ok=yes
  [[ $rc == "$want_rc" ]] || ok=no
  [[ -z $want || $err == *"$want"* ]] || ok=no
  [[ $err == *panicked* ]] && ok=no
  ls -a | grep -q '\.tmp-' && { ok=no; first="$first (temporary left)"; }
  [[ $(cat w.safetensors z.npy tiny.json | md5sum) == "$SUM" ]] || { ok=no; first="$first (input modified)"; }
  local cmd="${*:1}"
  cmd=${cmd//$M/movq}
  cmd=${cmd//|/\\|}
  cmd=$(printf '%s' "$cmd" | cat -v | tr '\n' ' ')
  printf '| %d | %s | `%s` | %s, "%s" | %s, %s | %s |\n' "$N" "$desc" "$cmd" "$want_rc" "$want" "$rc" "${first:0:150}" "$ok"
}
D="$M decode --quiet"
OK="--weights w.safetensors --latent z.npy"

# Weights
case_ "weights missing" 2 "no such.safetensors: No such file" -- $D --weights "no such.safetensors" --latent z.npy --output out.npy
: > empty.safetensors
case_ "weights empty file" 2 "truncated file" -- $D --weights empty.safetensors --latent z.npy --output out.npy
printf 'abcdefg' > seven.safetensors
case_ "weights 7 bytes" 2 "truncated file" -- $D --weights seven.safetensors --latent z.npy --output out.npy
mkdir -p emptydir
case_ "weights an empty directory" 2 "no weights in the model folder" -- $D --weights emptydir --latent z.npy --output out.npy
mkfifo fifo.safetensors
case_ "weights a FIFO (no writer)" 2 "is a named pipe" -- $D --weights fifo.safetensors --latent z.npy --output out.npy
ln -s loop1 loop2; ln -s loop2 loop1
case_ "weights a symlink loop" 2 "loop2" -- $D --weights loop2 --latent z.npy --output out.npy
python3 - <<'P'
import json, struct
def st(name, header, data=b""):
    t = json.dumps(header).encode() if not isinstance(header, bytes) else header
    open(name, "wb").write(struct.pack("<Q", len(t)) + t + data)
st("hugeshape.safetensors", {"a": {"dtype": "F32", "shape": [10**30], "data_offsets": [0, 4]}}, b"\0"*4)
st("dupkeys.safetensors", b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0"*4)
st("metanotmap.safetensors", {"__metadata__": [1, 2], "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0"*4)
st("badmetacfg.safetensors", {"__metadata__": {"config": "{not json"}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0"*4)
st("ch0.safetensors", {"__metadata__": {"config": json.dumps({"ch": 0, "out_ch": 3, "ch_mult": [1], "num_res_blocks": 0, "attn_resolutions": [], "resolution": 16, "z_channels": 4})}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0"*4)
st("levels.safetensors", {"__metadata__": {"config": json.dumps({"ch": 32, "out_ch": 3, "ch_mult": [1]*100, "num_res_blocks": 0, "attn_resolutions": [], "resolution": 16, "z_channels": 4})}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0"*4)
st("oddf16.safetensors", {"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 5]}}, b"\0"*5)
st("u64off.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2**64 - 1]}}, b"\0"*4)
st("ctlname.safetensors", {"a\u001b]0;pwned\u0007": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, b"\0"*4)
st("latent_none.safetensors", {}, b"")
st("latent_huge.safetensors", {"z": {"dtype": "F32", "shape": [1, 4, 100000, 100000, 100000], "data_offsets": [0, 4]}}, b"\0"*4)
def npy(name, d, data=b"", ver=1, hl=None):
    h = d.encode()
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    if ver == 1:
        out = b"\x93NUMPY\x01\x00" + struct.pack("<H", hl if hl is not None else len(h))
    else:
        out = b"\x93NUMPY\x02\x00" + struct.pack("<I", hl if hl is not None else len(h))
    open(name, "wb").write(out + h + data)
npy("bigendian.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 4, 2, 4, 4), }", b"\0"*512)
npy("object.npy", "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0"*8)
npy("negative.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -4, 2, 4, 4), }")
npy("six.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 4, 2, 4, 4), }", b"\0"*512)
npy("scalar.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", b"\0"*4)
npy("trailing.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 2, 4, 4), }", b"\0"*520)
npy("v2huge.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0"*4, ver=2, hl=2**32 - 1)
npy("noshape.npy", "{'descr': '<f4', 'fortran_order': False, }", b"")
npy("infs.npy", "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 4, 2, 4, 4), }", b"\x00\x7c"*128)
open("nonutf8.json", "wb").write(b'{"ch": "\xff\xfe"}')
open("deep.json", "w").write("[" * 100000 + "]" * 100000)
open("bignum.json", "w").write('{"ch": 1e400, "out_ch": 3, "ch_mult": [1], "num_res_blocks": 0, "attn_resolutions": [], "resolution": 16, "z_channels": 4}')
base = {"ch": 32, "out_ch": 3, "ch_mult": [1, 1], "num_res_blocks": 0, "attn_resolutions": [], "resolution": 16, "z_channels": 4, "temporal_compress_times": 2}
open("tct0.json", "w").write(json.dumps(dict(base, temporal_compress_times=0)))
open("res0.json", "w").write(json.dumps(dict(base, resolution=0)))
open("class.json", "w").write(json.dumps(dict(base, **{"class": "EvilDecoder"})))
open("zch0.json", "w").write(json.dumps(dict(base, z_channels=0)))
import os
os.makedirs("idx", exist_ok=True)
for n, m in [("dotdot", {"a": "../w.safetensors"}), ("abs", {"a": "/etc/passwd"}), ("missing", {"a": "nope.safetensors"}),
             ("number", {"a": 7}), ("empty", {}), ("self", {"a": "self.safetensors.index.json"})]:
    open(f"idx/{n}.safetensors.index.json", "w").write(json.dumps({"weight_map": m}))
open("idx/nomap.safetensors.index.json", "w").write(json.dumps({"metadata": {}}))
with open("idx/big.safetensors.index.json", "w") as f:
    f.write('{"weight_map": {' + ",".join(f'"t{i:09d}": "w.safetensors"' for i in range(1_100_000)) + "}}")
P
case_ "header shape 1e30" 2 "invalid safetensors header" -- $D --weights hugeshape.safetensors --latent z.npy --output out.npy
case_ "header duplicate tensor names" 2 "tensor \`a\` is listed twice" -- $D --weights dupkeys.safetensors --latent z.npy --output out.npy
case_ "__metadata__ not a map" 2 "invalid safetensors header" -- $D --weights metanotmap.safetensors --latent z.npy --output out.npy
case_ "metadata config not JSON" 2 "metadata \`config\` is not JSON" -- $D --weights badmetacfg.safetensors --latent z.npy --output out.npy
case_ "metadata config ch 0" 2 "invalid config" -- $D --weights ch0.safetensors --latent z.npy --output out.npy
case_ "metadata config 100 levels" 2 "invalid config" -- $D --weights levels.safetensors --latent z.npy --output out.npy
case_ "F16 tensor with 5 bytes" 2 "needs 6 bytes" -- $D --weights oddf16.safetensors --latent z.npy --output out.npy
case_ "data offset 2^64-1" 2 "u64off.safetensors" -- $D --weights u64off.safetensors --latent z.npy --output out.npy
case_ "ESC/BEL in a tensor name (dtype error)" 2 '\u{1b}' -- $D --weights ctlname.safetensors --latent z.npy --output out.npy
case_ "shard index ../ path" 2 "outside the index's folder" -- $D --weights idx/dotdot.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index absolute path" 2 "outside the index's folder" -- $D --weights idx/abs.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index missing shard" 2 "nope.safetensors: No such file" -- $D --weights idx/missing.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index value a number" 2 "is not a file name" -- $D --weights idx/number.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index empty weight_map" 2 "lists no files" -- $D --weights idx/empty.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index without weight_map" 2 "no \`weight_map\`" -- $D --weights idx/nomap.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index naming itself" 2 "self.safetensors.index.json" -- $D --weights idx/self.safetensors.index.json --latent z.npy --output out.npy
case_ "shard index of 1.1 M entries (44 MB)" 2 "limit" -- $D --weights idx/big.safetensors.index.json --latent z.npy --output out.npy
mkdir -p two && cp w.safetensors two/a.safetensors && cp w.safetensors two/b.safetensors
case_ "model folder with two weight files" 2 "several candidate weight files" -- $D --weights two --latent z.npy --output out.npy
mkdir -p dang/vae && cp w.safetensors dang/vae/diffusion_pytorch_model.safetensors && ln -s /nonexistent dang/vae/config.json
case_ "vae/config.json a dangling symlink" 2 "config.json" -- $D --weights dang --latent z.npy --output out.npy
mkfifo fifo_cfg_dir && mkdir -p fifocfg/vae && cp w.safetensors fifocfg/vae/diffusion_pytorch_model.safetensors && mkfifo fifocfg/vae/config.json
case_ "vae/config.json a FIFO" 2 "is a named pipe" -- $D --weights fifocfg --latent z.npy --output out.npy

# Latents
mkfifo fifo.npy
case_ "latent .npy a FIFO" 2 "is a named pipe" -- $D --weights w.safetensors --latent fifo.npy --output out.npy
case_ "latent big-endian >f4" 2 "unsupported dtype" -- $D --weights w.safetensors --latent bigendian.npy --output out.npy
case_ "latent object dtype" 2 "unsupported dtype" -- $D --weights w.safetensors --latent object.npy --output out.npy
case_ "latent negative dim" 2 "is not a size" -- $D --weights w.safetensors --latent negative.npy --output out.npy
case_ "latent rank 6" 2 "expected rank 5" -- $D --weights w.safetensors --latent six.npy --output out.npy
case_ "latent scalar shape ()" 2 "expected rank 5" -- $D --weights w.safetensors --latent scalar.npy --output out.npy
case_ "latent with 8 trailing bytes" 2 "needs 512 bytes" -- $D --weights w.safetensors --latent trailing.npy --output out.npy
case_ "npy v2 header length 4 GiB" 2 "header length" -- $D --weights w.safetensors --latent v2huge.npy --output out.npy
case_ "npy header without shape" 2 "no 'shape'" -- $D --weights w.safetensors --latent noshape.npy --output out.npy
case_ "latent f16 all +inf" 2 "NaN or infinite" -- $D --weights w.safetensors --latent infs.npy --output out.npy
case_ "latent safetensors without tensors" 2 "holds no tensor" -- $D --weights w.safetensors --latent latent_none.safetensors --output out.npy
case_ "latent safetensors, --latent-key missing" 2 "no tensor \`nope\` to read as the latent" -- $D --weights w.safetensors --latent w.safetensors --latent-key nope --output out.npy
case_ "latent header 1x4x1e5x1e5x1e5" 2 "latent_huge.safetensors" -- $D --weights w.safetensors --latent latent_huge.safetensors --output out.npy
case_ "latent a directory" 2 "is a directory" -- $D --weights w.safetensors --latent emptydir --output out.npy
case_ "latent btchw with wrong channels" 2 "channels" -- $D --weights w.safetensors --latent z.npy --layout btchw --output out.npy
case_ "latent /dev/stdin (a pipe)" 2 "not a regular file" -- $D --weights w.safetensors --latent /dev/stdin --output out.npy

# Configs
case_ "--config a directory" 2 "is a directory" -- $D $OK --config emptydir --output out.npy
case_ "--config missing" 2 "nope.json" -- $D $OK --config nope.json --output out.npy
case_ "--config not UTF-8" 2 "not UTF-8" -- $D $OK --config nonutf8.json --output out.npy
case_ "--config nested 100000 deep" 2 "recursion limit" -- $D $OK --config deep.json --output out.npy
case_ "--config ch 1e400" 2 "bignum.json" -- $D $OK --config bignum.json --output out.npy
case_ "--config temporal_compress_times 0" 2 "temporal_compress_times" -- $D $OK --config tct0.json --output out.npy
case_ "--config resolution 0 (only places attention; none here)" 0 "" -- $D $OK --config res0.json --output out.npy
case_ "--config unknown class" 2 "EvilDecoder" -- $D $OK --config class.json --output out.npy
case_ "--config z_channels 0" 2 "z_channels" -- $D $OK --config zch0.json --output out.npy

# Outputs
case_ "--output empty string" 2 "" -- $D $OK --output ""
case_ "--output .mp4" 2 "unknown output type .mp4" -- $D $OK --output out.mp4
case_ "--output .png without --apng" 2 "animated PNG" -- $D $OK --output out.png
case_ "--output - with a batch of 2" 2 "takes one Y4M video" -- $D --weights w.safetensors --latent z2.npy --output -
mkfifo fifo_out.npy
case_ "--output a FIFO named .npy (no reader)" 2 "Y4M stream" -- $D $OK --output fifo_out.npy
python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock.y4m')"
case_ "--output a socket" 2 "is a socket" -- $D $OK --output sock.y4m
mkdir -p linkframes && ln -s ../w.safetensors linkframes/frame_00000.png
case_ "frame dir holding a symlink named frame_00000.png" 2 "non-regular file" -- $D $OK --output linkframes
echo x > plainfile
case_ "frame dir name that is a regular file" 2 "exists and is not a directory" -- $D $OK --output plainfile
ln -s /dev/full full.y4m
case_ "--output a link to /dev/full (write fails midway)" 2 "No space left" -- $D $OK --output full.y4m
ln -s /nonexistent/x dangling.npy
case_ "--output a dangling symlink into a missing dir" 2 "does not resolve" -- $D $OK --output dangling.npy
case_ "--output in a missing directory" 2 "cannot write the output" -- $D $OK --output nodir/out.y4m
case_ "--fps 0" 2 "frame rate 0" -- $D $OK --output out.y4m --fps 0
case_ "--fps 100000" 2 "frame rate 100000" -- $D $OK --output out.y4m --fps 100000
case_ "--output - to a terminal-less /dev/null stdout" 0 "" -- $D $OK --output -

# Flags
case_ "--max-memory NaN" 2 "is not a positive number" -- $D $OK --output out.npy --max-memory NaN
case_ "--max-memory -1" 2 "is not a positive number" -- $D $OK --output out.npy --max-memory=-1
case_ "--latent-scaled --scaling-factor 0" 2 "not a finite non-zero" -- $D $OK --output out.npy --latent-scaled --scaling-factor 0
case_ "--latent-scaled --scaling-factor NaN" 2 "not a finite non-zero" -- $D $OK --output out.npy --latent-scaled --scaling-factor NaN
case_ "--threads 0" 2 "at least 1" -- $M --threads 0 decode $OK --output out.npy
case_ "--threads -1" 2 "invalid value" -- $M --threads=-1 decode $OK --output out.npy
case_ "RAYON_NUM_THREADS=abc" 2 "is not a thread count" -- env RAYON_NUM_THREADS=abc $D $OK --output out.npy
case_ "--precision f16" 2 "invalid value" -- $D $OK --output out.npy --precision f16
case_ "MOVQ_ISA=bogus" 2 "is not one of" -- env MOVQ_ISA=bogus $D $OK --output out.npy
case_ "MOVQ_CONV=bogus" 2 "is not one of" -- env MOVQ_CONV=bogus $D $OK --output out.npy

# Other subcommands
case_ "compare shapes differ" 2 "shapes differ" -- $M compare z.npy z2.npy
case_ "compare /dev/zero" 2 "is a character device" -- $M compare /dev/zero z.npy
case_ "compare --data-range NaN" 2 "finite" -- $M compare z.npy z.npy --data-range NaN
case_ "compare --key-a missing" 2 "missing weight" -- $M compare w.safetensors z.npy --key-a nope
case_ "compare latent header 1e15 elements" 2 "latent_huge.safetensors" -- $M compare latent_huge.safetensors z.npy
case_ "verify an empty directory" 2 "no .safetensors files" -- $M verify emptydir
case_ "verify /dev/zero (per-file ERROR line on stdout)" 2 "could not be verified" -- $M verify /dev/zero
case_ "inspect a FIFO" 2 "is a named pipe" -- $M inspect fifo.safetensors
case_ "inspect --config /dev/zero" 2 "is a character device" -- $M inspect w.safetensors --config /dev/zero
case_ "demo --out an existing file" 2 "plainfile" -- $M demo --out plainfile
case_ "random-weights --latent-shape 1e5^3 latent" 2 "memory available" -- $M random-weights --config tiny.json --output out.safetensors --latent-shape 1,4,100000,100000,100000 --latent-out out.npy
# Through a link: a movq without the fix renames over the link, not over /dev/null itself.
ln -s /dev/null devnull.safetensors
case_ "random-weights --output a link to /dev/null" 2 "is a character device" -- $M random-weights --config tiny.json --output devnull.safetensors
case_ "random-weights --config /dev/zero" 2 "is a character device" -- $M random-weights --config /dev/zero --output out.safetensors
case_ "bench --output equal to --weights" 2 "the output is the input" -- $M bench $OK --output w.safetensors --repeat 1
case_ "bench --latent FIFO" 2 "is a named pipe" -- $M bench --weights w.safetensors --latent fifo.npy --repeat 1
case_ "unknown flag" 2 "unexpected argument" -- $D $OK --output out.npy --frobnicate
# Added after the first run (the links of case 61 and /dev/stdout).
ln -s /proc/self/fd/1 fd1.y4m
case_ "--output a link to /proc/self/fd/1 (stdout: /dev/null)" 0 "" -- $D $OK --output fd1.y4m
echo old > real.npy; ln -s real.npy linked.npy
case_ "--output a link to a regular file" 0 "" -- $D $OK --output linked.npy
echo x > plain.npy
case_ "--output plain.npy/ (a file, with a trailing slash)" 2 "Not a directory" -- $D $OK --output plain.npy/
case_ "--output . (the inputs' directory)" 2 "" -- $D $OK --output .
case_ "--output a 250-byte name (its temporary is too long)" 2 "File name too long" -- $D $OK --output "$(printf 'a%.0s' {1..250}).npy"
case_ "--output named with ESC and LF (success line escaped)" 0 "" -- $D $OK --output "$(printf 'evil\033[31m\n.npy')"
# Added after the second outside-tester pass (2026-12-07).
case_ "RAYON_NUM_THREADS=0" 2 "must be at least 1" -- env RAYON_NUM_THREADS=0 $D $OK --output out.npy
case_ "--scaling-factor without --latent-scaled" 2 "--latent-scaled" -- $D $OK --output out.npy --scaling-factor 2
case_ "bench --repeat 0" 2 "invalid value" -- $M bench $OK --repeat 0
case_ "bench --output x.npy (writes safetensors)" 2 "must be a .safetensors file" -- $M bench $OK --output out.npy --repeat 1
case_ "random-weights --latent-out z.safetensors (writes npy)" 2 "must be a .npy file" -- $M random-weights --config tiny.json --output out.safetensors --latent-shape 1,4,2,4,4 --latent-out outz.safetensors
case_ "random-weights --output w.npy (writes safetensors)" 2 "must be a .safetensors file" -- $M random-weights --config tiny.json --output out.npy
case_ "random-weights --latent-shape with 5 channels (z_channels 4)" 2 "has 5 channels" -- $M random-weights --config tiny.json --output out.safetensors --latent-shape 1,5,2,4,4 --latent-out out.npy
python3 - <<'P'
h = "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 4, 2, 4, 4), }"
h += " " * (117 - len(h)) + "\n"
open("u8.npy", "wb").write(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode() + bytes(range(128)))
P
case_ "uint8 .npy latent" 2 "unsupported dtype" -- $D --weights w.safetensors --latent u8.npy --output out.npy

# Third pass: the second pass's open items.
python3 - <<'P'
import json, struct
t = open("tiny.json").read().rstrip().rstrip("}")
open("dupcfg.json", "w").write(t + ', "ch": 64}')
hdr = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
open("samebytes.safetensors", "wb").write(struct.pack("<Q", len(hdr)) + hdr + bytes(8))
P
case_ "config JSON with a key twice" 2 "key \`ch\` appears twice" -- $D $OK --config dupcfg.json --output out.npy
case_ "two tensors on the same bytes" 2 "overlap tensor \`a\`" -- $D --weights samebytes.safetensors --latent z.npy --output out.npy
case_ "--latent-key with an .npy latent" 2 "an .npy file holds one array" -- $D $OK --latent-key z --output out.npy
case_ "--fps with a tensor output" 2 "are for video outputs" -- $D $OK --output out.npy --fps 30
case_ "--chroma with an APNG output" 2 "is for .y4m outputs" -- $D $OK --output out.apng --chroma 444
case_ "compare --data-range 0" 2 "not a finite number > 0" -- $M compare z.npy z.npy --data-range 0
case_ "demo --fps 0" 2 "invalid value" -- $M demo --out out-demo --fps 0

# Fourth pass: the third outside-tester's findings.
case_ "--pad-mode contradicting the metadata config" 2 "pad_mode constant (the config has first)" -- $D $OK --pad-mode constant --output out.npy
case_ "--class contradicting the metadata config" 2 "class ContextParallelDecoder3D (the config has MOVQDecoder3D)" -- $D $OK --class ContextParallelDecoder3D --output out.npy
case_ "an .npy file as weights" 2 "it starts like an .npy array" -- $D --weights z.npy --latent z.npy --output out.npy
case_ "a JSON file as weights" 2 "it starts like JSON text" -- $D --weights tiny.json --latent z.npy --output out.npy
case_ "bench --peak with decode options" 2 "cannot be used with" -- $M bench --peak --weights w.safetensors --latent z.npy
case_ "golden --check with --mode" 2 "cannot be used with" -- $M golden --check a b --mode chunked
case_ "trace --list with --modules" 2 "cannot be used with" -- $M trace --weights w.safetensors --list --modules 'up.*'

# Fifth pass: docs/hostile-input.md's open items.
case_ "trace --crop-frames past the last frame" 2 "frames 50:60 miss its frames 0:" -- $M trace $OK --modules conv_in --crop-frames 50:60 --output out.safetensors
echo "cases: $N" >&2
rm -rf "$W"
