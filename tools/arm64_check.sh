#!/usr/bin/env bash
# arm64 without arm64 hardware: cross-compile the C++ kernel driver
# (csrc/tests/kernel_driver.cpp: every kernel of every supported path against scalar)
# and run it under qemu-user on three CPU models, checking which path dispatch picks.
#
#   tools/arm64_check.sh            # needs g++-aarch64-linux-gnu and qemu-user (Debian 12)
#
# Two builds:
#   per-TU    the wheel's way: baseline armv8-a, ISA folders with their own flags
#   dotprod   every translation unit at -march=armv8.2-a+dotprod (a CPU-level build)
# CPU models (QEMU 7.2): cortex-a57 = NEON only; cortex-a76 = +dotprod;
# max = +dotprod +i8mm +bf16 +SVE. getauxval follows the model, so dispatch is tested.
# Exit status is non-zero if any run fails or dispatch picks an unexpected path.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
sysroot=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
out="$root/build/arm64-check"
mkdir -p "$out"
for tool in "$cxx" qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "arm64_check: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user)"; exit 2; }
done

BASE_FLAGS="-O2 -march=armv8-a" "$root/tools/build_kernel_driver.sh" "$out/per-tu/kernel_driver" "$cxx" >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }
BASE_FLAGS="-O2 -march=armv8.2-a+dotprod" "$root/tools/build_kernel_driver.sh" "$out/dotprod/kernel_driver" "$cxx" >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }

# The path dispatch should pick: the best compiled one the CPU model has.
expected_isa() {  # cpu, compiled paths
  local have
  case "$1" in
    cortex-a57) have="scalar neon" ;;
    cortex-a76) have="scalar neon dotprod" ;;
    max) have="scalar neon dotprod i8mm" ;;
  esac
  local best=scalar
  for isa in $2; do
    case " $have " in *" $isa "*) best=$isa ;; esac
  done
  echo "$best"
}

status=0
printf '%-9s %-11s %-8s %-30s %s\n' build cpu picks "result" seconds
for build in per-tu dotprod; do
  for cpu in cortex-a76 max cortex-a57; do
    bin="$out/$build/kernel_driver"
    compiled=$(qemu-aarch64 -L "$sysroot" -cpu "$cpu" "$bin" --isa scalar 2>/dev/null | sed -n 's/^compiled://p')
    expect=$(expected_isa "$cpu" "$compiled")
    start=$(date +%s.%N)
    log="$out/$build-$cpu.log"
    qemu-aarch64 -L "$sysroot" -cpu "$cpu" "$bin" --expect-isa "$expect" >"$log" 2>&1
    rc=$?
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    picks=$(sed -n 's/^dispatch picks: //p' "$log")
    result=$(tail -1 "$log")
    [ $rc -eq 132 ] && result="SIGILL (illegal instruction)"
    [ $rc -ne 0 ] && status=1
    printf '%-9s %-11s %-8s %-30s %.2f\n' "$build" "$cpu" "${picks:-?}" "$result" "$secs"
    grep '^cpu features' "$log" | sed 's/^/          /'
    grep '^FAIL' "$log" | head -5
  done
done
exit $status
