"""`hearthlm bench --parallel 1,2,4,8`: aggregate decode throughput and per-stream
step latency with B sequences decoding together, one batched forward per step
(Transformer.forward_batch over one KVPool). The stream counts are interleaved rep by
rep after a warm-up, and medians reported."""
from __future__ import annotations

import statistics
import time

import numpy as np

from .bench import random_prompt
from .kv_cache import KVPool
from .model import Model


def decode_streams(model: Model, n_streams: int, n_prompt: int, n_gen: int) -> float:
    """Seconds for n_gen batched greedy steps of n_streams sequences after their prompts."""
    t = model.transformer
    pool = KVPool(model.args, n_prompt + n_gen, n_streams)
    caches = [pool.sequence(i) for i in range(n_streams)]
    buf = t.buffers(max(n_streams, n_prompt))
    logits = np.zeros((n_streams, model.vocab_size), np.float32)
    one = logits[:1]
    for i, c in enumerate(caches):  # each prompt on its own: only decode is timed
        t.forward(np.roll(random_prompt(model, n_prompt), i), c, buf, one)
        logits[i] = one[0]
    steps = [np.zeros(1, np.int32) for _ in caches]
    start = time.perf_counter()
    for _ in range(n_gen):
        nxt = logits.argmax(axis=1)
        for s, tok in zip(steps, nxt):
            s[0] = tok
        t.forward_batch(list(zip(steps, caches)), buf, logits)
    return time.perf_counter() - start


def run_parallel(model: Model, streams, n_prompt: int = 32, n_gen: int = 32, reps: int = 3) -> dict:
    streams = list(streams)
    for n in streams:
        decode_streams(model, n, min(n_prompt, 8), 2)  # warm-up
    seconds = {n: [] for n in streams}
    for _ in range(reps):
        for n in streams:
            seconds[n].append(decode_streams(model, n, n_prompt, n_gen))
    rows = []
    for n in streams:
        s = statistics.median(seconds[n])
        rows.append({"streams": n, "aggregate_tok_s": n * n_gen / s, "step_ms": 1e3 * s / n_gen})
    base = rows[0]["aggregate_tok_s"]
    for r in rows:
        r["vs_first"] = r["aggregate_tok_s"] / base
    return {"n_prompt": n_prompt, "n_gen": n_gen, "reps": reps, "parallel": rows}


def format_parallel(r: dict) -> str:
    lines = [f"parallel decode: {r['n_gen']} tokens per stream after {r['n_prompt']}-token prompts, "
             f"median of {r['reps']}",
             f"{'streams':>8}{'aggregate tok/s':>17}{'step ms':>10}{'x first':>9}"]
    for row in r["parallel"]:
        lines.append(f"{row['streams']:>8}{row['aggregate_tok_s']:>17.1f}{row['step_ms']:>10.2f}"
                     f"{row['vs_first']:>9.2f}")
    return "\n".join(lines)
