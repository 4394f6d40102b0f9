"""Decode step times of several model folders in one process, interleaved in short
bursts so machine load hits them alike: each round feeds every model `--burst` tokens
one at a time (after its own prompt), round after round. Reports each model's
per-token min / 10th percentile / median ms and, against the first folder, the ratio
of tokens/s at each (on a shared machine the low percentiles are the steps no other
process disturbed).

    python bench/kquant_decode.py TL-Q4 TL-Q4K [--threads 2] [--rounds 20] [--burst 8]
"""
import argparse
import os
import statistics
import time

import numpy as np

import hearthlm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--burst", type=int, default=8, help="tokens per model per round")
    p.add_argument("--prompt", type=int, default=32)
    a = p.parse_args()
    models = [hearthlm.load(f, n_threads=a.threads) for f in a.folders]
    n_ctx = a.prompt + a.rounds * a.burst + 8
    sessions = [m.session(n_ctx=n_ctx, n_keep=0) for m in models]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, min(m.vocab_size for m in models), a.prompt).astype(np.int32)
    logits = [s.feed(prompt) for s in sessions]
    times = [[] for _ in models]
    load_before = os.getloadavg()[0]
    for _ in range(a.rounds):
        for i, s in enumerate(sessions):
            for _ in range(a.burst):
                t = time.perf_counter()
                logits[i] = s.feed([int(np.argmax(logits[i]))])
                times[i].append(1e3 * (time.perf_counter() - t))
    print(f"decode, {a.threads} threads, {a.rounds} rounds x {a.burst} tokens, load average "
          f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    stats = [(min(t), float(np.percentile(t, 10)), statistics.median(t)) for t in times]
    print("| folder | min ms | p10 ms | median ms | tok/s vs first (min / p10 / median) |")
    print("|---|---|---|---|---|")
    for f, st in zip(a.folders, stats):
        ratios = " / ".join(f"{b / s:.3f}" for b, s in zip(stats[0], st))
        print(f"| {os.path.basename(os.path.normpath(f))} | {st[0]:.2f} | {st[1]:.2f} | {st[2]:.2f} | {ratios} |")


if __name__ == "__main__":
    main()
