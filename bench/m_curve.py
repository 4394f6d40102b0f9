"""The M-curve: one matmul over all of TinyLlama-1.1B's layer weights (22 layers of
q, k, v, o, gate, up, down) for M = 1..32 tokens, time(M) / time(1) per weight type.

The layers' matrices are stacked into two (every K = 2048 one, then the K = 5632 down
projections), each tiled from one quantized chunk so building them costs little; the
weights are far larger than the caches, so every pass reads them from memory. The
token counts are interleaved within each round; medians over the rounds. With q4 among
the types, each other type also gets q4 time / its time at every M (1.0 = q4's speed).

    python bench/m_curve.py [--types q4,q8] [--ms 1,2,4,8,16] [--rounds 5] [--threads 2]
        [--old /path/to/old/venv/bin/python] [--in-cache]

--in-cache measures the kernels' own cost instead, which machine load disturbs far
less: one thread, 640 and 128 rows of K = 2048 (their difference cancels the per-call
overhead; in a 2 MB L2 for the quantized types, not for bf16/f16 at 2.6 MB or f32 at
5 MB), the fastest of 200 calls; ns per 16 rows x 32 k per M, and per token. It is the
compute a pass over DRAM has to hide.

--old runs the same measurement under another environment's build too, one round of
each in turn (a subprocess per round), and adds old's curve and new/old times.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from hearthlm import _kernels as K
from hearthlm.formats import FORMATS, QUANTIZED
from hearthlm.weights import f32_to_bf16_bits

LAYERS, HIDDEN, INTER, KV = 22, 2048, 5632, 256
ROWS_IN = LAYERS * (HIDDEN + 2 * KV + HIDDEN + 2 * INTER)  # rows with K = HIDDEN
ROWS_DOWN = LAYERS * HIDDEN                                # rows with K = INTER
CHUNK = 2048                                               # rows quantized, then tiled


def packed(rows: int, k: int, wtype: str, rng) -> np.ndarray:
    w = rng.standard_normal((rows, k), dtype=np.float32) * 0.02
    if wtype in QUANTIZED:
        out = np.empty(FORMATS[wtype].packed_shape(rows, k), np.uint8)
        K.quantize(out, w, "f32", wtype, 2)
        return out
    return {"f32": w, "bf16": f32_to_bf16_bits(w), "f16": w.astype(np.float16)}[wtype]


def stacked(rows: int, k: int, wtype: str, rng) -> np.ndarray:
    chunk = packed(CHUNK, k, wtype, rng)
    reps = -(-rows // CHUNK)
    groups = rows // FORMATS[wtype].block_rows
    return np.tile(chunk, (reps,) + (1,) * (chunk.ndim - 1))[:groups]


def measure(wtypes: list, ms: list, rounds: int, threads: int) -> dict:
    """{wtype: {M: [seconds per round]}}"""
    rng = np.random.default_rng(0)
    out = {}
    for wtype in wtypes:
        w_in, w_down = stacked(ROWS_IN, HIDDEN, wtype, rng), stacked(ROWS_DOWN, INTER, wtype, rng)
        y_in = np.empty((max(ms), ROWS_IN), np.float32)
        y_down = np.empty((max(ms), ROWS_DOWN), np.float32)
        xs = {m: (rng.standard_normal((m, HIDDEN), dtype=np.float32),
                  rng.standard_normal((m, INTER), dtype=np.float32)) for m in ms}

        def run(m: int) -> float:
            x_in, x_down = xs[m]
            t = time.perf_counter()
            K.matmul(y_in[:m], x_in, w_in, None, wtype, threads)
            K.matmul(y_down[:m], x_down, w_down, None, wtype, threads)
            return time.perf_counter() - t

        run(1)
        times = {m: [] for m in ms}
        for _ in range(rounds):
            for m in ms:
                times[m].append(run(m))
        out[wtype] = {"gbytes": (w_in.nbytes + w_down.nbytes) / 1e9, "times": times}
        del w_in, w_down
    return out


def in_cache(wtypes: list, ms: list, reps: int = 200) -> dict:
    """{wtype: {M: ns per 16-row x 32-k block}}"""
    rng = np.random.default_rng(0)
    out = {}
    for wtype in wtypes:
        ws = {rows: packed(rows, HIDDEN, wtype, rng) for rows in (128, 640)}
        out[wtype] = {}
        for m in ms:
            x = rng.standard_normal((m, HIDDEN), dtype=np.float32)
            best = {}
            for rows, w in ws.items():
                y = np.empty((m, rows), np.float32)
                best[rows] = 1e9
                for _ in range(reps):
                    t = time.perf_counter()
                    K.matmul(y, x, w, None, wtype, 1)
                    best[rows] = min(best[rows], time.perf_counter() - t)
            out[wtype][m] = (best[640] - best[128]) / ((640 - 128) // 16 * HIDDEN // 32) * 1e9
    return out


def interleaved(a, args: list) -> dict:
    """{"old" (with --old), "new": [one result per round]}: each round runs this script
    with `args --json` under old's python, then under this one."""
    pythons = {"old": a.old, "new": sys.executable} if a.old else {"new": sys.executable}
    runs = {name: [] for name in pythons}
    for _ in range(a.rounds):
        for name, python in pythons.items():
            cmd = [python, __file__, "--types", a.types, "--ms", a.ms, *args, "--json"]
            runs[name].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default=",".join(["f32", "bf16", "f16", "q8", "q4", "q4k", "q5k", "q6k"]))
    p.add_argument("--ms", default=",".join(str(m) for m in range(1, 33)))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--old", help="python of an environment with the old build, measured in turn")
    p.add_argument("--in-cache", action="store_true", help="kernel cost with the weights in L2, 1 thread")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    ms, wtypes = [int(m) for m in a.ms.split(",")], a.types.split(",")
    if a.json:
        print(json.dumps(in_cache(wtypes, ms) if a.in_cache else measure(wtypes, ms, a.rounds, a.threads)))
        return
    if a.in_cache:
        print(f"in cache, 1 thread, ISA {K.active_isa()}; load average before: {os.getloadavg()[0]:.2f}")
        runs = interleaved(a, ["--in-cache"])
        for wtype in wtypes:
            med = {name: {m: statistics.median(r[wtype][str(m)] for r in rs) for m in ms} for name, rs in runs.items()}
            for name, t in med.items():
                print(f"{wtype} {name}: ns per 16 x 32 block (per token): "
                      + "  ".join(f"{m}:{t[m]:.2f} ({t[m] / m:.2f})" for m in ms))
            if "old" in med:
                print("  new/old:  " + "  ".join(f"{m}:{med['new'][m] / med['old'][m]:.2f}" for m in ms))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    print(f"M-curve, TinyLlama-1.1B shape, {a.threads} threads, ISA {K.active_isa()}, "
          f"medians of {a.rounds}; load average before: {os.getloadavg()[0]:.2f}")
    if a.old:
        runs = interleaved(a, ["--rounds", "1", "--threads", str(a.threads)])
        results = {name: {w: {"gbytes": r[0][w]["gbytes"],
                              "times": {m: [x[w]["times"][str(m)][0] for x in r] for m in ms}}
                          for w in wtypes} for name, r in runs.items()}
    else:
        results = {"new": measure(wtypes, ms, a.rounds, a.threads)}
    for wtype in wtypes:
        med = {name: {m: statistics.median(v) for m, v in r[wtype]["times"].items()} for name, r in results.items()}
        gbytes = results["new"][wtype]["gbytes"]
        for name, t in med.items():
            base = t[ms[0]]
            print(f"{wtype} {name}: {gbytes:.3f} GB, M={ms[0]} {base * 1e3:.1f} ms ({gbytes / base:.1f} GB/s)")
            print("  time(M)/time(1): " + "  ".join(f"{m}:{t[m] / base:.2f}" for m in ms))
        if "old" in med:
            print("  new/old time:    " + "  ".join(f"{m}:{med['new'][m] / med['old'][m]:.2f}" for m in ms))
        if "q4" in wtypes and wtype != "q4":
            for name, t in med.items():
                q4 = {m: statistics.median(v) for m, v in results[name]["q4"]["times"].items()}
                print(f"  q4 time / {wtype} time ({name}): " + "  ".join(f"{m}:{q4[m] / t[m]:.2f}" for m in ms))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
