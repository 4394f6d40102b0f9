"""Float weights read from the safetensors file's memory map (4 KB pages) against the
same weights copied at load into huge-page memory (hearthlm.load(mmap=False)).

    python bench/bf16_mapping.py gemv [--rounds 7] [--threads 2]
        the GEMVs over TinyLlama-1.1B's layer matrices, both models loaded in this
        process and run alternately, beside the read probe
    python bench/bf16_mapping.py decode [--rounds 5] [--dtypes bf16,f16] [--gen 64]
        `hearthlm bench --shape tinyllama-1.1b --dtype D --mmap` and `--no-mmap`,
        interleaved round by round: medians of decode tok/s, GB/s and % of the read
        probe measured in the same run, load time, first logits, RSS after load
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import hearthlm
from hearthlm import _kernels as K
from hearthlm import shapes


def gemv(a) -> None:
    folder = shapes.random_model_folder("tinyllama-1.1b", "bf16")
    models = {"mapped": hearthlm.load(folder, mmap=True, n_threads=a.threads),
              "copied": hearthlm.load(folder, mmap=False, n_threads=a.threads)}
    layers = {name: [w for n, w in m.transformer.weights.tensors.items() if w.ndim == 2 and ".layers." in n]
              for name, m in models.items()}
    some = layers["mapped"]
    gbytes = sum(w.nbytes for w in some) / 1e9
    xs = {k: np.ones((1, k), np.float32) for k in {w.shape[1] for w in some}}
    ys = {n: np.empty((1, n), np.float32) for n in {w.shape[0] for w in some}}

    def run(ws: list) -> float:
        t = time.perf_counter()
        for w in ws:
            K.matmul(ys[w.shape[0]], xs[w.shape[1]], w, None, "bf16", a.threads)
        return time.perf_counter() - t

    print(f"load average before: {os.getloadavg()[0]:.2f}; {len(some)} matrices, {gbytes:.3f} GB")
    for ws in layers.values():
        run(ws)
    times = {name: [] for name in layers}
    for _ in range(a.rounds):
        for name, ws in layers.items():
            times[name].append(run(ws))
    probe = K.memory_read_bandwidth(1 << 30, a.threads, 3)
    for name, v in times.items():
        gbs = gbytes / statistics.median(v)
        print(f"{name:<8} median {statistics.median(v) * 1e3:7.1f} ms  {gbs:5.1f} GB/s = {100 * gbs / probe:5.1f} % "
              f"of the probe's {probe:.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def decode(a) -> None:
    keys = ("decode_tok_s", "weight_gb_s", "bandwidth_pct")
    report_keys = ("memory_read_gb_s", "load_s", "load_to_first_logits_s", "rss_after_load_mb")
    runs = {(d, m): [] for d in a.dtypes.split(",") for m in ("--mmap", "--no-mmap")}
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for _ in range(a.rounds):
        for dtype, mode in runs:
            out = subprocess.run([sys.executable, "-m", "hearthlm", "bench", "--json", "--shape", "tinyllama-1.1b",
                                  "--dtype", dtype, "--prompt", "16", "--gen", str(a.gen), "--reps", "1",
                                  "--threads", str(a.threads), mode], check=True, capture_output=True,
                                 text=True).stdout
            r = json.loads(out)
            runs[dtype, mode].append({**{k: r["engines"][0][k] for k in keys}, **{k: r[k] for k in report_keys}})
    print(f"tinyllama-1.1b shape, {a.threads} threads, --prompt 16 --gen {a.gen}: medians of {a.rounds} rounds")
    print(f"{'dtype':<6}{'weights':<11}{'tok/s':>8}{'GB/s':>7}{'% probe':>9}{'probe':>7}{'load s':>8}"
          f"{'1st logits s':>14}{'RSS MB':>8}")
    for (dtype, mode), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in (*keys, *report_keys)}
        print(f"{dtype:<6}{mode:<11}{med['decode_tok_s']:>8.2f}{med['weight_gb_s']:>7.1f}"
              f"{med['bandwidth_pct']:>9.1f}{med['memory_read_gb_s']:>7.1f}{med['load_s']:>8.2f}"
              f"{med['load_to_first_logits_s']:>14.2f}{med['rss_after_load_mb']:>8.0f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["gemv", "decode"])
    p.add_argument("--rounds", type=int, default=None, help="default: 7 (gemv), 5 (decode)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtypes", default="bf16,f16", help="decode: comma-separated storage dtypes")
    p.add_argument("--gen", type=int, default=64, help="decode: tokens generated per run")
    a = p.parse_args()
    a.rounds = a.rounds or (7 if a.mode == "gemv" else 5)
    gemv(a) if a.mode == "gemv" else decode(a)


if __name__ == "__main__":
    main()
