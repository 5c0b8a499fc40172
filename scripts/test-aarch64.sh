#!/usr/bin/env bash
# Cross-compiles movq's tests for aarch64-unknown-linux-gnu and runs them under qemu-aarch64:
# once with the detected ISA (on aarch64: gemm's NEON kernels, movq's own kernels take their
# scalar path) and once with MOVQ_ISA=scalar. CLI tests run the aarch64 `movq` binary under qemu
# too (MOVQ_TEST_RUNNER). Installs what it needs (Debian gcc-aarch64-linux-gnu, qemu-user; the
# rustup target); if the rustup target cannot be installed it says why and skips (exit 0).
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
echo "== aarch64 tests passed"
