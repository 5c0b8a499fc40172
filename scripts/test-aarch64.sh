#!/usr/bin/env bash
# Cross-compiles movq's tests for aarch64-unknown-linux-gnu and runs them under qemu-aarch64:
# once with the detected ISA (on aarch64: gemm's and movq's own NEON kernels; qemu's default CPU
# has FEAT_BF16, so the BFDOT kernel runs against its twin) and once with MOVQ_ISA=scalar. CLI
# tests run the aarch64 `movq` binary under qemu too (MOVQ_TEST_RUNNER). Then `--precision bf16`
# through the CLI: a golden case on the default CPU, and the named error on a CPU without bf16.
# Installs what it needs (Debian gcc-aarch64-linux-gnu, qemu-user; the rustup target); if the
# rustup target cannot be installed it says why and skips (exit 0).
# Usage: bash scripts/test-aarch64.sh [extra cargo test args, e.g. --test golden]
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null; }
fi
if ! rustup target list --installed | grep -qx "$target"; then
  if ! out=$(rustup target add "$target" 2>&1); then
    echo "SKIPPED: cannot install the rustup target $target:" >&2
    echo "$out" >&2
    exit 0
  fi
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
runner="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner"
export MOVQ_TEST_RUNNER="$runner"

echo "== cargo test --release --target $target (detected ISA)"
cargo test --release --target "$target" "$@"
echo "== MOVQ_ISA=scalar cargo test --release --target $target"
MOVQ_ISA=scalar cargo test --release --target "$target" "$@"

echo "== --precision bf16 through the CLI (qemu default CPU: FEAT_BF16; cortex-a72: none)"
cargo build --release --target "$target" -q
bin="target/$target/release/movq"
case=../shared/golden/causalconv3d_first.safetensors
if [ -f "$case" ]; then
  $runner "$bin" verify --bf16 "$case" | grep -E '^causalconv3d_first +CausalConv3d +bf16 .*measured'
else
  echo "(no $case: the golden step is skipped)"
fi
set +e
msg=$(qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu "$bin" verify --bf16 ../shared/golden 2>&1)
code=$?
set -e
if [ "$code" -ne 2 ] || ! grep -q "FEAT_BF16" <<<"$msg"; then
  echo "expected exit code 2 and a FEAT_BF16 error without bf16, got $code: $msg" >&2
  exit 1
fi
echo "without FEAT_BF16: exit 2, $msg"
echo "== aarch64 tests passed"
