#!/usr/bin/env bash
# Runs movq on an emulated x86 CPU with AVX-512 and AVX512_BF16 (Bochs 3.0, cpu model
# sapphire_rapids; MODEL=corei7_skylake_x for AVX-512 without bf16), for machines without
# them: the AVX-512 SIMD kernels and the vdpbf16ps panel product against their plain twins,
# and the golden verification with the bf16 rows. Slow (Bochs interprets every instruction).
#
#   bash scripts/test-bochs.sh tests [FILTER,FILTER,...] [PROPTEST_CASES]
#       the unit tests matching the filters (default: simd,winograd_panels,bf16; 4 cases)
#   bash scripts/test-bochs.sh verify
#       movq verify --bf16-emulated --bf16 on ../shared/golden (not bench --peak: Bochs
#       computes each vector lane in software, and the peak loops run for guest seconds)
#
# Needs Debian's package registry (grub-pc-bin, xorriso, mtools, busybox-static, cpio, the
# cloud kernel) and its source pool (Bochs 3.0's source, built here). Everything lands in
# $WORK (default /tmp/movq-bochs), nothing in the repository. The guest's console is
# $WORK/serial.out; the exit code is 0 only when the guest's command exited 0.
set -euo pipefail
MODE=${1:-tests}
FILTER=${2:-simd,winograd_panels,bf16}
CASES=${3:-4}
MODEL=${MODEL:-sapphire_rapids}
case $MODE in tests | verify) ;; *) echo "usage: $0 tests|verify [FILTERS] [CASES]" >&2; exit 2 ;; esac
WORK=${WORK:-/tmp/movq-bochs}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOLDEN=$ROOT/../shared/golden
BOCHS_TAR=bochs_3.0+dfsg.orig.tar.xz
BOCHS_SHA256=78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
cd "$WORK"

need=()
for p in grub-pc-bin:/usr/lib/grub/i386-pc xorriso:/usr/bin/xorriso mtools:/usr/bin/mcopy \
    cpio:/usr/bin/cpio vgabios:/usr/share/vgabios/vgabios.bin; do
    [ -e "${p#*:}" ] || need+=("${p%%:*}")
done
# The guest has no libc: the busybox must be the static one.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -q "${need[@]}" >/dev/null
fi

if [ ! -x bochs-3.0/bochs ]; then
    curl -sf -O "http://deb.debian.org/debian/pool/main/b/bochs/$BOCHS_TAR"
    echo "$BOCHS_SHA256  $BOCHS_TAR" | sha256sum -c --quiet
    tar xf "$BOCHS_TAR"
    (cd bochs-3.0 && ./configure --enable-x86-64 --enable-avx --enable-evex \
        --enable-all-optimizations --enable-handlers-chaining --enable-repeat-speedups \
        --with-nogui --without-x11 --disable-docbook >configure.log 2>&1 && make -j2 >make.log 2>&1) ||
        { echo "building Bochs failed: see $WORK/bochs-3.0/configure.log and make.log" >&2; exit 1; }
fi

if [ ! -e vmlinuz ]; then
    pkg=$(apt-cache search --names-only '^linux-image-[0-9.-]+-cloud-amd64$' | awk '{print $1}' | sort -V | tail -1)
    apt-get download "$pkg" >/dev/null
    rm -rf kroot && dpkg-deb -x "$pkg"_*.deb kroot
    cp kroot/boot/vmlinuz-* vmlinuz
fi

rm -rf initrd iso && mkdir -p initrd/bin initrd/proc initrd/dev initrd/tmp iso/boot/grub
cp /bin/busybox initrd/bin/
build=(cargo test --release --lib --no-run)
[ "$MODE" = verify ] && build=(cargo build --release --bin movq)
# Static binaries (the guest has no libc); the last executable cargo names is the one built.
bin=$(cd "$ROOT" && CARGO_TARGET_DIR="$WORK/target" RUSTFLAGS="-C target-feature=+crt-static" \
    "${build[@]}" --target x86_64-unknown-linux-gnu --message-format=json 2>"$WORK/cargo.log" |
    grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4) || true
[ -x "$bin" ] || { echo "cargo built no executable (see $WORK/cargo.log)" >&2; exit 1; }
if [ "$MODE" = verify ]; then
    [ -d "$GOLDEN" ] || { echo "no ../shared/golden beside the repository" >&2; exit 1; }
    strip -o initrd/bin/movq "$bin"
    mkdir -p initrd/golden && cp "$GOLDEN"/*.safetensors initrd/golden/
    run='/bin/movq --threads 1 verify --bf16-emulated --bf16 /golden'
else
    strip -o initrd/bin/movq-tests "$bin"
    run="PROPTEST_CASES=$CASES RAYON_NUM_THREADS=1 /bin/movq-tests --test-threads=1 ${FILTER//,/ }"
fi
{
    echo '#!/bin/busybox sh'
    echo '/bin/busybox mount -t proc proc /proc'
    echo '/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null'
    echo "echo \"MOVQ-BOCHS: \$(/bin/busybox grep -m1 -o -w 'avx512f\\|avx512_bf16' /proc/cpuinfo | /bin/busybox tr '\\n' ' ')\""
    echo 'cd /tmp'
    echo "($run) 2>&1"
    echo 'echo "MOVQ-BOCHS: exit=$?"'
    # The console drains before the power goes.
    echo '/bin/busybox sync; /bin/busybox sleep 5; /bin/busybox poweroff -f'
} >initrd/init
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip -1 >../iso/boot/initrd.gz)
cp vmlinuz iso/boot/vmlinuz
# Bochs 3.0 workarounds, found here: no5lvl and acpi=off (its SMM restore rejects a saved CR4
# with LA57, at the ACPI-enable SMI); clearcpuid=fsrm (with FSRM the sapphire_rapids guest
# faulted in a loop in the kernel's direct map early in boot; corei7_skylake_x, without FSRM,
# booted); the rest as in the boots that worked.
cat >iso/boot/grub/grub.cfg <<EOF
set timeout=0
menuentry movq {
  linux /boot/vmlinuz console=ttyS0,115200 nokaslr tsc=reliable mitigations=off idle=poll lsm=capability nowatchdog no5lvl acpi=off nopcid nogbpages clearcpuid=fsrm
  initrd /boot/initrd.gz
}
EOF
grub-mkrescue -o movq.iso iso >grub.log 2>&1 || { echo "grub-mkrescue failed: see $WORK/grub.log" >&2; exit 1; }

cat >bochsrc.txt <<EOF
memory: guest=1024, host=1024
cpu: model=$MODEL, count=1, ips=300000000, reset_on_triple_fault=0
romimage: file=$WORK/bochs-3.0/bios/bios.bin-1.13.0
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=movq.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=serial.out
display_library: nogui
log: bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
clock: sync=none, time0=local
EOF
rm -f serial.out
# The guest halts at the end (no ACPI to power off): stop Bochs once the exit line is out.
bochs-3.0/bochs -q -f bochsrc.txt >bochs.stdout 2>&1 &
pid=$!
for _ in $(seq $((${TIMEOUT:-5400} / 5))); do
    kill -0 $pid 2>/dev/null || break
    grep -a -q 'MOVQ-BOCHS: exit=' serial.out 2>/dev/null && sleep 6 && break
    sleep 5
done
kill $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
sed -n '/^MOVQ-BOCHS/,$p' serial.out 2>/dev/null | grep -a -v '^\[ *[0-9.]*\] ' || true
if ! grep -a -q 'MOVQ-BOCHS: ' serial.out 2>/dev/null; then
    echo "the guest never reached its init: see $WORK/bochs.log and $WORK/serial.out" >&2
    exit 1
fi
want='avx512f avx512_bf16'
[ "$MODEL" = corei7_skylake_x ] && want=avx512f
grep -a -q "MOVQ-BOCHS: $want" serial.out || { echo "the guest lacks $want" >&2; exit 1; }
grep -a -q 'MOVQ-BOCHS: exit=' serial.out || { echo "timed out (TIMEOUT=${TIMEOUT:-5400} s)" >&2; exit 1; }
grep -a -q 'MOVQ-BOCHS: exit=0' serial.out
