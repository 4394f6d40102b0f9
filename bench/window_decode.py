"""Decode step time with window-sized caches for the sliding-window layers against
caches of n_ctx for every layer (the path before issue 12), same build, interleaved;
or this build against an old one (--old PY: the old environment's python runs the
full-cache side through its own Model.session). Per step: CPU time of the process
(steadier on a busy machine) and wall time, medians of --rounds rounds.

    python bench/window_decode.py ~/.cache/hearthlm/shapes/gemma3-1b-q4-seed0 --ctx 3000 --threads 1
    python bench/window_decode.py FOLDER --ctx 64 --old /tmp/venv-old/bin/python   # no regression
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def steps(folder: str, ctx: int, n: int, threads: int, full: bool) -> dict:
    import numpy as np

    import hearthlm
    model = hearthlm.load(folder, n_threads=threads)
    n_ctx = ctx + n + 8
    if full:  # every layer's cache holds n_ctx tokens
        from hearthlm.kv_cache import KVCache
        from hearthlm.session import Session
        s = Session(model, cache=KVCache.alone(model.args, n_ctx, 0))
    else:
        s = model.session(n_ctx=n_ctx, n_keep=0)
    ids = np.random.default_rng(0).integers(0, model.vocab_size, ctx + n + 4).tolist()
    s.feed(ids[:ctx])
    for t in ids[ctx:ctx + 4]:  # warm-up
        s.feed([t])
    c0, w0 = time.process_time(), time.perf_counter()
    for t in ids[ctx + 4:]:
        s.feed([t])
    return {"cpu_ms": (time.process_time() - c0) / n * 1e3, "wall_ms": (time.perf_counter() - w0) / n * 1e3,
            "kv_mib": s.cache.memory_bytes / 2 ** 20}


def side(python: str, a, full: bool) -> dict:
    cmd = [python, os.path.abspath(__file__), a.folder, "--ctx", str(a.ctx), "--steps", str(a.steps),
           "--threads", str(a.threads), "--one"] + (["--full"] if full else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--ctx", type=int, default=3000, help="tokens in the cache before the timed steps")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--old", help="python of an old build: compare its default session with this build's")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(steps(a.folder, a.ctx, a.steps, a.threads, a.full)))
        return
    names = ("old", "new") if a.old else ("full", "windowed")
    runs = {name: [] for name in names}
    load = os.getloadavg()[0]
    for _ in range(a.rounds):
        runs[names[0]].append(side(a.old or sys.executable, a, full=not a.old))
        runs[names[1]].append(side(sys.executable, a, full=False))
    print(f"{os.path.basename(a.folder)}, context {a.ctx}, {a.threads} thread(s), medians of {a.rounds} "
          f"interleaved rounds (load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
    for key in ("cpu_ms", "wall_ms", "kv_mib"):
        x, y = (statistics.median(r[key] for r in runs[n]) for n in names)
        print(f"{key:<8} {names[0]} {x:9.2f}   {names[1]} {y:9.2f}   {names[1]}/{names[0]} {y / x:.3f}")


if __name__ == "__main__":
    main()
