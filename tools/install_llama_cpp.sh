#!/usr/bin/env bash
# llama.cpp as the tests' peer: llama-cpp-python (the version tests/gguf_tools.py pins),
# built from its sdist into the active environment, for llama.cpp's quantizer (the
# Q4_K_M / Q5_K_M / Q6_K / Q4_0 ... GGUF test files) and its logits on the same files.
# Built portable (no -march=native, no AMX: ggml's AMX path crashes in some VMs), so the
# comparisons run on any x86-64 machine with AVX2 (--no-cache-dir: never a wheel pip built
# natively before). About 3 minutes on 2 cores.
#
#   tools/install_llama_cpp.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
spec=$(cd "$root/tests" && python -c "import gguf_tools; print(gguf_tools.SDIST)")
if python -c "import llama_cpp" 2>/dev/null; then
  echo "llama-cpp-python already installed: $(python -c 'import llama_cpp; print(llama_cpp.__version__)')"
  exit 0
fi
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  python -m pip install -q --no-cache-dir --no-binary llama-cpp-python "$spec"
python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'installed')"
