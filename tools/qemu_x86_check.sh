#!/usr/bin/env bash
# The x86 fallbacks on CPUs this machine is not: run the installed hearthlm under
# qemu-user CPU models and check the path dispatch picks, the kernel tests, and a tiny
# model's logits against a native run.
#
#   tools/qemu_x86_check.sh [--dev] [--python PY]
#
#   --python PY  interpreter whose site-packages has hearthlm (`pip install .`);
#                default: `python`. Its real binary is run under qemu (not a shim).
#   --dev        use the source tree's pylib/ (a dev build symlinked into it) instead.
# Environment:
#   QEMU_TESTS   test files to run emulated (default: tests/test_kernels.py and any
#                tests/test_quant*.py). Only files that do not import torch: torch is
#                kept out of emulation and the reference logits are made natively.
#   QEMU_CPUS    "Model:expected_isa ..." (default "Haswell:avx2 Nehalem:scalar")
#   QEMU_K       pytest -k expression for the emulated tests (default: the prefill
#                attention tiles in their two smallest shapes only; the larger shapes
#                take most of an emulated run, and every path runs them all natively)
#
# Haswell has AVX2+FMA+F16C and no AVX-512; Nehalem has SSE4.2 only, so hearthlm must
# run its scalar path and nothing in the module may execute an AVX instruction (QEMU
# 7.2 raises SIGILL for instructions the model lacks). Needs qemu-user (apt-get
# install qemu-user). Results: build/qemu-x86-check/summary.txt.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py=python
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) export PYTHONPATH="$root/pylib${PYTHONPATH:+:$PYTHONPATH}" ;;
    --python) py=$2; shift ;;
    *) echo "usage: $0 [--dev] [--python PY]"; exit 2 ;;
  esac
  shift
done
command -v qemu-x86_64 >/dev/null || { echo "qemu_x86_check: qemu-x86_64 not found (apt-get install qemu-user)"; exit 2; }
py=$("$py" -c 'import sys; print(sys.executable)')  # the real binary, not a pyenv shim
where=$("$py" -c 'import hearthlm, os; print(os.path.dirname(hearthlm.__file__))') ||
  { echo "qemu_x86_check: hearthlm is not importable by $py"; exit 2; }
out="$root/build/qemu-x86-check"
mkdir -p "$out"
summary="$out/summary.txt"
cd "$root"

if [ -z "${QEMU_TESTS:-}" ]; then
  QEMU_TESTS="tests/test_kernels.py $(ls tests/test_quant*.py 2>/dev/null | tr '\n' ' ' || true)"
fi
QEMU_CPUS=${QEMU_CPUS:-"Haswell:avx2 Nehalem:scalar"}
QEMU_K=${QEMU_K:-"not test_prefill_attention_in_token_tiles or 4-4-6 or 8-2-17"}

status=0
now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc | xargs printf '%.1f'; }
record() {  # cpu, step, result, seconds
  printf '%-8s %-34s %-44s %6ss\n' "$1" "$2" "$3" "$4" | tee -a "$summary"
}

{
  echo "hearthlm from: $where"
  echo "python: $py ($("$py" -V 2>&1)); $(qemu-x86_64 --version | head -1)"
  echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "emulated tests: $QEMU_TESTS (-k \"$QEMU_K\")"
} | tee "$summary"

# Native side: tiny models (torch), then reference logits with the best path and scalar.
t=$(now)
"$py" tools/emulated_model_check.py build "$out/models" >"$out/native-build.log" 2>&1 || { cat "$out/native-build.log"; exit 1; }
"$py" tools/emulated_model_check.py run "$out/models" "$out/native.npz" >"$out/native.log" 2>&1 &&
  HEARTHLM_ISA=scalar "$py" tools/emulated_model_check.py run "$out/models" "$out/native-scalar.npz" >>"$out/native.log" 2>&1 ||
  { cat "$out/native.log"; exit 1; }
native_isa=$("$py" -c 'import hearthlm; print(hearthlm.cpu_info()["active_isa"])')
record native "tiny models + reference logits" "ok (best path: $native_isa)" "$(secs "$t")"

# One CPU model: dispatch, the kernel tests, the tiny models. Its summary lines go to
# $out/$cpu.summary; the exit status says whether everything passed.
check_cpu() {  # cpu, expected isa
  local cpu=$1 expect=$2 status=0 t rc res picked same refs ref
  # numpy's OpenBLAS picks its kernels from cpuid and, under qemu's Nehalem, one with
  # instructions that CPU lacks (numpy's import then dies of SIGILL); named, it keeps to it.
  local q=(env OPENBLAS_CORETYPE="$cpu" qemu-x86_64 -cpu "$cpu")
  local log="$out/$cpu.log"
  local summary="$out/$cpu.summary"
  : >"$log"
  : >"$summary"

  t=$(now)
  picked=$("${q[@]}" "$py" -c 'import hearthlm; print(hearthlm.cpu_info()["active_isa"])' 2>>"$log")
  rc=$?
  if [ $rc -eq 0 ] && [ "$picked" = "$expect" ]; then res="ok: $picked"; else res="FAIL: picked '$picked' (rc $rc), want $expect"; status=1; fi
  record "$cpu" "dispatch (cpu_info active_isa)" "$res" "$(secs "$t")"

  t=$(now)
  # shellcheck disable=SC2086
  "${q[@]}" "$py" -m pytest -q -p no:cacheprovider -k "$QEMU_K" $QEMU_TESTS >>"$log" 2>&1
  rc=$?
  res=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$log" | tail -1 | tr -d '=' | xargs)
  [ $rc -eq 132 ] && res="SIGILL (illegal instruction) $res"
  [ $rc -ne 0 ] && { status=1; res="FAIL rc=$rc: $res"; }
  record "$cpu" "pytest $(echo $QEMU_TESTS | wc -w) kernel test file(s)" "$res" "$(secs "$t")"

  t=$(now)
  "${q[@]}" "$py" tools/emulated_model_check.py run "$out/models" "$out/$cpu.npz" >>"$log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    status=1
    res="FAIL rc=$rc$([ $rc -eq 132 ] && echo ' SIGILL')"
    record "$cpu" "tiny models: logits + greedy" "$res" "$(secs "$t")"
    return 1
  fi
  same=native.npz
  [ "$expect" != "$native_isa" ] && same=native-scalar.npz
  [ "$expect" != scalar ] && [ "$expect" != "$native_isa" ] && same=""
  res=""
  refs=$same
  [ "$same" != native.npz ] && refs="$same native.npz"
  for ref in $refs; do
    if "$py" tools/emulated_model_check.py compare "$out/$cpu.npz" "$out/$ref" --rtol 1e-5 >>"$log" 2>&1; then
      res+="= ${ref%.npz} ok; "
    else
      res+="vs ${ref%.npz} FAIL; "
      status=1
    fi
  done
  record "$cpu" "tiny models: logits + greedy" "$res" "$(secs "$t")"
  grep -E '^(PASS|FAIL) ' "$log" | sed 's/^/           /' | sort -u >>"$summary"
  return $status
}

# The CPU models run side by side (each emulation is mostly one thread), then report in order.
pids=()
for spec in $QEMU_CPUS; do
  check_cpu "${spec%%:*}" "${spec#*:}" >/dev/null &
  pids+=($!)
done
i=0
for spec in $QEMU_CPUS; do
  wait "${pids[$i]}" || status=1
  tee -a "$out/summary.txt" <"$out/${spec%%:*}.summary"
  i=$((i + 1))
done
echo "details: $out/*.log" | tee -a "$out/summary.txt"
exit $status
