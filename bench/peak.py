"""Prefill against the arithmetic peak: bench/peak.cpp (compiled here with g++) measures
the int8 dot-product and f32 FMA peaks of this CPU, then one prefill-sized matmul per
weight type (M tokens x TinyLlama-1.1B's q/k/v/o/gate/up/down of one layer) gives
GOP/s as a share of the peak its kernels use (quantized: the best int8 path the active
ISA runs; float: f32 FMA).

    python bench/peak.py [--threads 2] [--tokens 256] [--types q4,q8,bf16,f32] [--reps 5]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

from hearthlm import _kernels as K
from hearthlm.formats import FORMATS, QUANTIZED
from hearthlm.weights import f32_to_bf16_bits

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN, INTER, KV = 2048, 5632, 256
LAYER = [(HIDDEN, HIDDEN), (KV, HIDDEN), (KV, HIDDEN), (HIDDEN, HIDDEN),
         (INTER, HIDDEN), (INTER, HIDDEN), (HIDDEN, INTER)]  # (N, K) of one layer


def peaks(threads: int) -> dict:
    """{(kind, threads): GOP/s} from bench/peak.cpp."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "peak")
        subprocess.run(["g++", "-O3", "-fopenmp", os.path.join(HERE, "peak.cpp"), "-o", exe], check=True)
        out = subprocess.run([exe, str(threads)], check=True, capture_output=True, text=True).stdout
    return {(kind, int(t)): float(g) for kind, t, g in (line.split() for line in out.splitlines())}


def layer_weights(wtype: str, rng) -> list:
    out = []
    for n, k in LAYER:
        w = rng.standard_normal((n, k), dtype=np.float32) * 0.02
        if wtype in QUANTIZED:
            q = np.empty(FORMATS[wtype].packed_shape(n, k), np.uint8)
            K.quantize(q, w, "f32", wtype, 2)
            out.append(q)
        else:
            out.append({"f32": w, "bf16": f32_to_bf16_bits(w), "f16": w.astype(np.float16)}[wtype])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--types", default="q4,q8,bf16,f32")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; ISA {K.active_isa()}")
    pk = peaks(a.threads)
    for (kind, t), g in sorted(pk.items()):
        print(f"peak {kind:<20} {t} threads: {g:8.1f} GOP/s")
    int8 = "int8_avx512_vnni" if K.active_isa() == "avx512" else "int8_avx2_maddubs"
    rng = np.random.default_rng(0)
    for wtype in a.types.split(","):
        ws = layer_weights(wtype, rng)
        xs = {k: rng.standard_normal((a.tokens, k), dtype=np.float32) for k in (HIDDEN, INTER)}
        ys = [np.empty((a.tokens, n), np.float32) for n, _ in LAYER]
        times = []
        for _ in range(a.reps + 1):
            t = time.perf_counter()
            for w, y, (n, k) in zip(ws, ys, LAYER):
                K.matmul(y, xs[k], w, None, wtype, a.threads)
            times.append(time.perf_counter() - t)
        ops = 2 * a.tokens * sum(n * k for n, k in LAYER)
        gops = ops / statistics.median(times[1:]) / 1e9
        kind = int8 if wtype in QUANTIZED else ("f32_fma_avx512" if K.active_isa() == "avx512" else "f32_fma_avx2")
        peak = pk[(kind, a.threads)]
        print(f"{wtype:<5} M={a.tokens}: {gops:7.1f} GOP/s = {100 * gops / peak:5.1f} % of {kind} ({peak:.1f})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
