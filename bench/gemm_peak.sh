#!/usr/bin/env bash
# Build bench/gemm_peak.cpp against the kernels (tools/build_kernel_driver.sh's objects,
# -O3 like the wheel) and run it: one matmul kernel alone against its instruction's
# peak, in one process, alternating, by CPU time (robust on a busy machine).
#
#   bench/gemm_peak.sh avx512|avx2 q4|q8|bf16|f16|f32 [M N K]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/build/gemm-peak"
mkdir -p "$out"
BASE_FLAGS="-O3 -DNDEBUG" "$root/tools/build_kernel_driver.sh" "$out/kernel_driver" >/dev/null
objs=$(find "$out/kernel_driver.objs" -name '*.o' ! -name kernel_driver.o | sort)
# shellcheck disable=SC2086
g++ -std=c++17 -O3 -DHEARTHLM_X86=1 -fopenmp -I"$root/csrc" -I"$root/bench" "$root/bench/gemm_peak.cpp" $objs -o "$out/gemm_peak"
exec "$out/gemm_peak" "$@"
