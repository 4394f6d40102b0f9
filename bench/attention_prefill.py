"""Prefill attention: the last 512-token chunk of a 4096-token prompt (every causally
visible pair), as GFLOP/s of q·k and p·v and % of the f32 FMA peak (bench/peak.cpp)
of the active ISA, for TinyLlama's heads (32 query / 4 kv, head_dim 64) with f32, f16
and q8 KV, and with f32 KV Qwen3-0.6B's (16 / 8, head_dim 128), Llama-3.2-1B's (32 / 8,
64), Qwen2.5-0.5B's (14 / 2, 64) and Phi-3-mini's (32 / 32, 96). --tokens and --context set the
chunk and the prompt (--tokens 11: a speculative verify step). With --old, another
build's Python runs the same cases in alternate rounds and new/old is printed, of the
medians over the rounds and of the fastest rounds (a round is a process: on a shared VM
whole processes run in a slow mode now and then, which moves a median of few rounds by
up to 30 % with the same build on both sides, and the fastest round far less).

    python bench/attention_prefill.py [--old OLD_VENV/bin/python] [--rounds 5] [--threads 2]
        [--tokens 512] [--context 4096]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CASES = [  # (name, query heads, kv heads, head_dim, kv dtype)
    ("tinyllama f32 KV", 32, 4, 64, "f32"), ("tinyllama f16 KV", 32, 4, 64, "f16"),
    ("tinyllama q8 KV", 32, 4, 64, "q8"), ("qwen3-0.6b f32 KV", 16, 8, 128, "f32"),
    ("llama-3.2-1b f32 KV", 32, 8, 64, "f32"), ("qwen2.5-0.5b f32 KV", 14, 2, 64, "f32"),
    ("phi-3-mini f32 KV", 32, 32, 96, "f32"),
]


def measure(threads: int, reps: int, tokens: int, context: int) -> dict:
    """{case: median seconds} in this process."""
    import numpy as np

    from hearthlm import _kernels as K
    from hearthlm.kv_cache import KV_DTYPES, Q8_BLOCK
    rng = np.random.default_rng(0)
    pos = np.arange(context, dtype=np.int32)
    out = {}
    for name, heads, kv_heads, hd, kv in CASES:
        q = rng.standard_normal((tokens, heads, hd), dtype=np.float32)
        o = np.empty_like(q)
        row = hd if kv != "q8" else -(-hd // Q8_BLOCK) * Q8_BLOCK
        cache = [np.zeros((kv_heads, context, row), KV_DTYPES[kv]) for _ in range(2)]
        scales = [np.zeros((kv_heads, context, row // Q8_BLOCK), np.float32) if kv == "q8" else None for _ in range(2)]
        for c, s in zip(cache, scales):
            K.kv_store(c, s, kv, rng.standard_normal((context, kv_heads, hd), dtype=np.float32), 0)
        run = lambda: K.attention(o, q, cache[0], scales[0], cache[1], scales[1], kv, pos, pos[-tokens:], 0,  # noqa: E731
                                  hd ** -0.5, threads)
        run()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def flops(heads: int, hd: int, tokens: int, context: int) -> float:
    pairs = sum(p + 1 for p in range(context - tokens, context))
    return 4.0 * pairs * heads * hd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", help="python of another build, run in alternate rounds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=512, help="tokens of the forward (the last of the prompt)")
    p.add_argument("--context", type=int, default=4096, help="tokens of the prompt")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if not 0 < a.tokens <= a.context:
        p.error(f"--tokens: expected 1..--context ({a.context}), got {a.tokens}")
    if a.child:
        print(json.dumps(measure(a.threads, 3 if a.tokens > 64 else 50, a.tokens, a.context)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peak import build_peak, peaks

    from hearthlm import _kernels as K
    isa = K.active_isa()
    with tempfile.TemporaryDirectory() as tmp:
        peak = peaks(build_peak(tmp), a.threads).get((f"f32_fma_{isa}", a.threads))
    sides = {"new": sys.executable, **({"old": a.old} if a.old else {})}
    runs = {side: [] for side in sides}
    print(f"load average before: {os.getloadavg()[0]:.2f}; {isa}, {a.threads} threads, f32 FMA peak "
          f"{peak or float('nan'):.1f} GFLOP/s", flush=True)
    for _ in range(a.rounds):
        for side, py in sides.items():
            out = subprocess.run([py, os.path.abspath(__file__), "--child", "--threads", str(a.threads),
                                  "--tokens", str(a.tokens), "--context", str(a.context)],
                                 check=True, capture_output=True, text=True).stdout
            runs[side].append(json.loads(out))
    print(f"last {a.tokens} tokens of a {a.context}-token prompt: medians of {a.rounds} rounds")
    for name, heads, _, hd, _ in CASES:
        line = f"{name:<20}"
        times = {side: [r[name] for r in runs[side]] for side in sides}
        for side in sides:
            t = statistics.median(times[side])
            g = flops(heads, hd, a.tokens, a.context) / t / 1e9
            line += f"  {side} {t * 1e3:8.3f} ms {g:6.1f} GFLOP/s {100 * g / peak if peak else float('nan'):5.1f} %"
        if a.old:
            line += (f"  new/old speed {statistics.median(times['old']) / statistics.median(times['new']):.2f}x"
                     f" (fastest rounds {min(times['old']) / min(times['new']):.2f}x)")
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
