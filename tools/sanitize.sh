#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the native code:
#   1. the C++ kernel driver (every kernel, every supported path, no Python);
#   2. the extensions (kernels, per-token bookkeeping) built with the sanitizers (own build
#      dir), run under the test files that exercise them: kernels, bad input, models vs
#      transformers, batches, per-token bookkeeping (+ quantization and session tests when
#      those files exist). Any report fails the run.
#
#   tools/sanitize.sh [pytest args...]        # ~3-5 minutes on 2 cores
#
# Uses the current `python`; installs pybind11 / Cython / cmake / ninja into it if missing.
# SANITIZE_TESTS overrides the test files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/build/sanitize"
mkdir -p "$out"
start=$(date +%s)
san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
# allocator_may_return_null: a huge request (tests check MemoryError paths) returns NULL as
# glibc would, instead of ASan aborting the process.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

echo "== 1. kernel driver with $san"
BASE_FLAGS="-O1 -g $san" tools/build_kernel_driver.sh "$out/kernel_driver" >"$out/driver-build.log" 2>&1 ||
  { cat "$out/driver-build.log"; exit 1; }
"$out/kernel_driver" | tail -1

echo "== 2. extension with $san"
python -c 'import pybind11' 2>/dev/null || python -m pip install -q pybind11
python -c 'import Cython' 2>/dev/null || python -m pip install -q 'Cython>=3.0'
command -v cmake >/dev/null || python -m pip install -q cmake
gen=()
if command -v ninja >/dev/null || python -m pip install -q ninja; then gen=(-G Ninja); fi
cmake -S "$root" -B "$out/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$san" -DCMAKE_MODULE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(python -c 'import sys; print(sys.executable)')" \
  >"$out/cmake.log" 2>&1 || { cat "$out/cmake.log"; exit 1; }
cmake --build "$out/build" -j 2 >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 1; }

# A private copy of the package with the sanitized extensions, ahead of any installed one.
rm -rf "$out/pkg" && mkdir -p "$out/pkg"
cp -r "$root/pylib/hearthlm" "$out/pkg/"
rm -f "$out/pkg/hearthlm/"_kernels*.so "$out/pkg/hearthlm/"_per_token*.so
cp "$out/build/"_kernels*.so "$out/build/"_per_token*.so "$out/pkg/hearthlm/"

if [ -z "${SANITIZE_TESTS:-}" ]; then
  SANITIZE_TESTS="tests/test_kernels.py tests/test_kernel_edges.py tests/test_bad_input.py tests/test_models_vs_transformers.py"
  SANITIZE_TESTS+=" tests/test_native_forward.py tests/test_batch.py tests/test_moe.py tests/test_constraints.py"
  SANITIZE_TESTS+=" tests/test_per_token.py"
  SANITIZE_TESTS+=" $(ls tests/test_quant*.py tests/test_session*.py tests/test_threads*.py 2>/dev/null | tr "\n" " " || true)"
fi
echo "   tests: $SANITIZE_TESTS"
# libasan first in the process; libstdc++ preloaded too, or ASan's __cxa_throw
# interceptor finds no real __cxa_throw (python itself does not link libstdc++) and
# aborts on the first C++ exception.
preload="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so)"
# The tests must import the sanitized copies (an editable install's import hook comes
# before PYTHONPATH and would hand them the unsanitized build).
modules=$(PYTHONPATH="$out/pkg" LD_PRELOAD="$preload" python -c \
  'import hearthlm; print(hearthlm._kernels.__file__, hearthlm._per_token.__file__)')
case "$modules" in
  "$out/pkg/"*" $out/pkg/"*) echo "   sanitized modules: $modules" ;;
  *) echo "sanitize: python imports $modules, not the sanitized copies in $out/pkg" \
       "(an editable install of hearthlm shadows them: use a venv with a regular install)"; exit 1 ;;
esac
set +e
# shellcheck disable=SC2086
PYTHONPATH="$out/pkg" LD_PRELOAD="$preload" python -m pytest -q -p no:cacheprovider $SANITIZE_TESTS "$@" \
  2>&1 | tee "$out/pytest.log" | tail -15
rc=${PIPESTATUS[0]}
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$out/pytest.log"; then
  echo "sanitizer reports in $out/pytest.log:"
  grep -E -A5 "ERROR: AddressSanitizer|runtime error:" "$out/pytest.log" | head -40
  rc=1
fi
echo "sanitize: $([ "$rc" = 0 ] && echo clean || echo FAILED) in $(( $(date +%s) - start ))s"
exit "$rc"
