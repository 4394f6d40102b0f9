#!/usr/bin/env bash
# Build csrc/tests/kernel_driver.cpp with the kernel sources, without Python.
#
#   tools/build_kernel_driver.sh OUT [CXX]
#
# CXX defaults to $CXX or g++; the target (x86_64 or aarch64) is read from
# `CXX -dumpmachine`. Each ISA folder under csrc/kernels/ gets the flags CMakeLists.txt
# gives it (the baseline gets none), so the driver is built like the wheel.
# Environment:
#   BASE_FLAGS   flags for every translation unit (default: -O2), e.g.
#                "-O2 -march=armv8.2-a+dotprod" to build everything for one CPU level
#   OPENMP=0     build without -fopenmp (the pragmas are then ignored, one thread)
#   EMULATE_AVX512=1  build the avx512 folder for AVX2 with its intrinsics mapped to
#                SIMDe (csrc/tests/avx512_emulation.h; Debian: libsimde-dev), so
#                `kernel_driver --emulated avx512` checks the AVX-512 kernels on a CPU
#                without AVX-512
# Objects go to OUT.objs/ and are rebuilt only when a source or header is newer, so a
# second run is fast. Prints the objects of each ISA folder on the last line
# ("isa-objects: avx2=... avx512=...") for tools that inspect them.
set -euo pipefail
out=${1:?usage: build_kernel_driver.sh OUT [CXX]}
cxx=${2:-${CXX:-g++}}
root="$(cd "$(dirname "$0")/.." && pwd)"
base_flags=${BASE_FLAGS:--O2}
machine=$("$cxx" -dumpmachine)
case "$machine" in
  x86_64*|i?86*) arch=x86; defs="-DHEARTHLM_X86=1" ;;
  aarch64*|arm64*) arch=arm64; defs="-DHEARTHLM_ARM64=1" ;;
  *) echo "build_kernel_driver: unknown target $machine" >&2; exit 2 ;;
esac

# The amx folder only where the compiler has AMX (as CMakeLists.txt checks it).
amx=""
if [ "$arch" = x86 ] && echo 'int main(){}' | "$cxx" -mamx-tile -mamx-int8 -x c++ - -o /dev/null 2>/dev/null; then
  amx=1
  defs="$defs -DHEARTHLM_AMX=1"
fi

# Extra flags per ISA (csrc/kernels/*/kernels_<isa>.cpp), as in CMakeLists.txt. Another
# architecture's ISA is skipped; an ISA this table does not know is an error, so a new
# one gets its flags here too (and in CMakeLists.txt).
isa_flags() {  # isa -> flags, or "skip"
  case "$arch:$1" in
    *:scalar|*:.) echo "" ;;
    x86:avx2) echo "-mavx2 -mfma -mf16c" ;;
    x86:avx512) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c" ;;
    x86:amx) [ -n "$amx" ] && echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c -mamx-tile -mamx-int8 -fno-exceptions" || echo skip ;;
    x86:neon|x86:dotprod|x86:i8mm) echo skip ;;
    arm64:neon) echo "" ;;
    arm64:dotprod) echo "-march=armv8.2-a+dotprod" ;;
    arm64:i8mm) echo "-march=armv8.6-a+i8mm" ;;
    arm64:avx2|arm64:avx512|arm64:vnni|arm64:amx) echo skip ;;
    *) echo "build_kernel_driver: no flags known for csrc/kernels/$1 on $arch: add them" >&2; return 1 ;;
  esac
}

omp_flags=""
if [ "${OPENMP:-1}" = 1 ]; then
  omp_flags="-fopenmp -DHEARTHLM_OPENMP=1"
fi

objdir="$out.objs"
mkdir -p "$objdir"
newest_header=$(find "$root/csrc" \( -name '*.h' -o -name '*.inc' \) -printf '%T@\n' | sort -n | tail -1)
objects=()
isa_objects=""
compile() {  # source, extra flags, object
  local src=$1 flags=$2 obj=$3
  local src_time obj_time
  src_time=$(stat -c %Y "$src")
  if [ -f "$obj" ]; then
    obj_time=$(stat -c %Y "$obj")
    if [ "$obj_time" -ge "$src_time" ] && [ "$obj_time" -ge "${newest_header%.*}" ] &&
       [ "$obj_time" -ge "$(stat -c %Y "$0")" ]; then
      objects+=("$obj")
      return
    fi
  fi
  # shellcheck disable=SC2086
  "$cxx" -std=c++17 $base_flags $flags $defs $omp_flags -fno-math-errno -I"$root/csrc" -c "$src" -o "$obj"
  objects+=("$obj")
}

for src in "$root"/csrc/cpu_features.cpp "$root"/csrc/dispatch.cpp "$root"/csrc/formats.cpp "$root"/csrc/ops.cpp "$root"/csrc/quantize.cpp \
           "$root"/csrc/tests/kernel_driver.cpp; do
  compile "$src" "" "$objdir/$(basename "$src" .cpp).o"
done
while IFS= read -r src; do
  rel=${src#"$root"/csrc/kernels/}
  folder=$(basename "$src" .cpp)  # kernels_<isa>.cpp: flags by ISA, as CMakeLists.txt sets them
  folder=${folder#kernels_}
  flags=$(isa_flags "$folder")
  [ "$flags" = skip ] && continue
  obj="$objdir/$(echo "$rel" | tr / _ | sed 's/\.cpp$/.o/')"
  if [ "${EMULATE_AVX512:-0}" = 1 ] && [ "$folder" = avx512 ]; then
    wrapper="$objdir/emulated_$(basename "$src")"
    printf '#include "tests/avx512_emulation.h"\n#include "%s"\n' "$src" > "$wrapper.new"
    cmp -s "$wrapper.new" "$wrapper" && rm "$wrapper.new" || mv "$wrapper.new" "$wrapper"
    src=$wrapper
    flags="-mavx2 -mfma -mf16c -Wno-psabi"
    obj="${obj%.o}.emulated.o"
  fi
  compile "$src" "$flags" "$obj"
  [ "$folder" != scalar ] && [ "$folder" != . ] && isa_objects+=" $folder=$obj"
done < <(find "$root/csrc/kernels" -name '*.cpp' | sort)

# shellcheck disable=SC2086
"$cxx" $base_flags $omp_flags "${objects[@]}" -o "$out" -lm
echo "built $out ($machine)"
echo "isa-objects:$isa_objects"
