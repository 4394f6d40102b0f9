"""Prefill against the arithmetic peak: bench/peak.cpp (compiled here with g++) measures
the int8 dot-product (VNNI, and AMX tiles where the OS allows them) and f32 FMA peaks of
this CPU, then one prefill-sized matmul per
weight type (M tokens x TinyLlama-1.1B's q/k/v/o/gate/up/down of one layer) gives
GOP/s as a share of the peak its kernels use (quantized: the best int8 path the active
ISA runs; float: f32 FMA).

    python bench/peak.py [--threads 2] [--tokens 256] [--types q4,q8,bf16,f32] [--reps 5]
        [--old /path/to/old/venv/bin/python] [--rounds 5] [--cpu-time]

Every round measures the peaks again, then runs one subprocess of each build (reps
timings each, median), so each share is of the peak measured beside it: on a shared VM
the core's speed drifts by +-15 % within minutes, and a peak measured once would turn that
drift into the shares. The printed GOP/s, peaks and shares are medians over rounds.
--old times the old environment's build too, in the same rounds. --cpu-time (with
--threads 1) times the peaks and the matmuls by the thread's CPU time instead of the
clock: on a busy machine the time the thread waits for a core then does not count (the
caches it shares still do).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
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


def build_peak(folder: str) -> str:
    """bench/peak.cpp compiled into folder."""
    exe = os.path.join(folder, "peak")
    subprocess.run(["g++", "-O3", "-fopenmp", os.path.join(HERE, "peak.cpp"), "-o", exe], check=True)
    return exe


def peaks(exe: str, threads: int, cpu_time: bool = False) -> dict:
    """{(kind, threads): GOP/s} from one run of bench/peak.cpp."""
    out = subprocess.run([exe, str(threads)] + (["cpu"] if cpu_time else []), check=True, capture_output=True, text=True).stdout
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


def layer_gops(wtypes: list, tokens: int, threads: int, reps: int, cpu_time: bool = False) -> dict:
    """{wtype: GOP/s} of one layer's matmuls, median of reps after a warm-up."""
    rng = np.random.default_rng(0)
    out = {}
    for wtype in wtypes:
        ws = layer_weights(wtype, rng)
        xs = {k: rng.standard_normal((tokens, k), dtype=np.float32) for k in (HIDDEN, INTER)}
        ys = [np.empty((tokens, n), np.float32) for n, _ in LAYER]
        clock = time.thread_time if cpu_time else time.perf_counter
        times = []
        for _ in range(reps + 1):
            t = clock()
            for w, y, (n, k) in zip(ws, ys, LAYER):
                K.matmul(y, xs[k], w, None, wtype, threads)
            times.append(clock() - t)
        out[wtype] = 2 * tokens * sum(n * k for n, k in LAYER) / statistics.median(times[1:]) / 1e9
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--types", default="q4,q8,bf16,f32")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--old", help="python of an environment with the old build, timed in turn")
    p.add_argument("--rounds", type=int, default=5, help="rounds of peaks and matmuls (both builds with --old)")
    p.add_argument("--cpu-time", action="store_true", help="time by CPU time (needs --threads 1)")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.cpu_time and a.threads != 1:
        p.error("--cpu-time needs --threads 1 (other threads' spinning would count)")
    wtypes = a.types.split(",")
    if a.json:
        print(json.dumps(layer_gops(wtypes, a.tokens, a.threads, a.reps, a.cpu_time)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f}; ISA {K.active_isa()}")
    sides = ([("old", a.old)] if a.old else []) + [("new", sys.executable)]
    rounds = []  # per round: (peaks, {side: {wtype: GOP/s}})
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_peak(tmp)
        for _ in range(a.rounds):
            pk = peaks(exe, a.threads, a.cpu_time)
            runs = {}
            for name, python in sides:
                cmd = [python, __file__, "--types", a.types, "--tokens", str(a.tokens), "--threads",
                       str(a.threads), "--reps", str(a.reps), "--json"] + (["--cpu-time"] if a.cpu_time else [])
                runs[name] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                                       env=os.environ).stdout)
            rounds.append((pk, runs))
    for key in sorted(rounds[0][0]):
        values = [pk[key] for pk, _ in rounds]
        print(f"peak {key[0]:<20} {key[1]} threads: {statistics.median(values):8.1f} GOP/s "
              f"(rounds: {min(values):.1f}-{max(values):.1f})")
    isa = K.active_isa()
    wide = isa in ("avx512", "amx")
    # The amx path's quantized share is given of both the VNNI and the tile peak.
    int8 = ["int8_avx512_vnni"] + (["int8_amx"] if isa == "amx" else []) if wide else ["int8_avx2_maddubs"]
    for wtype in wtypes:
        kinds = int8 if wtype in QUANTIZED else ["f32_fma_avx512" if wide else "f32_fma_avx2"]
        gops = {name: statistics.median(runs[name][wtype] for _, runs in rounds) for name, _ in sides}
        for kind in kinds:
            key = (kind, a.threads)
            line = "   ".join(f"{name} {gops[name]:7.1f} GOP/s = "
                              f"{100 * statistics.median(runs[name][wtype] / pk[key] for pk, runs in rounds):5.1f} %"
                              for name, _ in sides)
            ratio = (f"   new/old {statistics.median(runs['new'][wtype] / runs['old'][wtype] for _, runs in rounds):.2f}"
                     if a.old else "")
            print(f"{wtype:<5} M={a.tokens}: {line} of {kind}{ratio}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
