"""Quantized matmul kernels side by side, interleaved: every format's time on the same
shapes, calls alternating between formats so machine load hits them alike. Reports the
minimum (robust on a busy machine) and the median per format, and each format's speed
relative to q4.

    python bench/kquant_speed.py [--threads 1] [--calls 200] [--isa avx512]
        [--formats q4,q4k,q5k,q6k,q8] [--shape 5632x2048] [--tokens 1,64]

Shapes are [N, K] of weight matrices (default: TinyLlama-1.1B's FFN up and down, and
SmolLM2's 1536 x 576 whose K = 576 ends in a K-quant tail block)."""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hearthlm import _kernels as K
from hearthlm.formats import FORMATS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=200, help="timed calls per format and case (prefill: / 10)")
    p.add_argument("--isa", default=None)
    p.add_argument("--formats", default="q4,q4k,q5k,q6k,q8")
    p.add_argument("--shape", action="append", help="NxK (repeatable)")
    p.add_argument("--tokens", default="1,64", help="token counts M: 1 is decode, more is prefill")
    a = p.parse_args()
    formats = a.formats.split(",")
    shapes = [tuple(int(v) for v in s.split("x")) for s in (a.shape or ["5632x2048", "2048x5632", "1536x576"])]
    rng = np.random.default_rng(0)
    print(f"threads {a.threads}, isa {a.isa or 'dispatch'}; min / median ms over interleaved calls")
    print(f"| N x K | M | " + " | ".join(formats) + " | " + " | ".join(f"{f} ÷ q4 (min)" for f in formats[1:]) + " |")
    print("|---" * (2 + 2 * len(formats) - 1) + "|")
    for n, k in shapes:
        w = rng.standard_normal((n, k), dtype=np.float32) * 0.02
        packed = {}
        for f in formats:
            packed[f] = np.empty(FORMATS[f].packed_shape(n, k), np.uint8)
            K.quantize(packed[f], w, "f32", f, 2)
        for m in (int(t) for t in a.tokens.split(",")):
            x, y = rng.standard_normal((m, k), dtype=np.float32), np.empty((m, n), np.float32)
            times = {f: [] for f in formats}
            for _ in range(max(a.calls // (10 if m > 1 else 1), 5)):
                for f in formats:
                    t0 = time.perf_counter()
                    K.matmul(y, x, packed[f], None, f, a.threads, a.isa)
                    times[f].append(1e3 * (time.perf_counter() - t0))
            best = {f: min(v) for f, v in times.items()}
            cells = [f"{best[f]:.3f} / {statistics.median(times[f]):.3f}" for f in formats]
            ratios = [f"{best[formats[0]] / best[f]:.2f}" for f in formats[1:]]
            print(f"| {n} x {k} | {m} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
