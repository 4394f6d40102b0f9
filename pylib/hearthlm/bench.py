"""`hearthlm bench`: prefill and decode speed, bandwidth achieved, memory, load time,
optionally side by side with transformers (PyTorch) on the same weights.

Runs are interleaved (hearthlm, peer, hearthlm, peer, ...) after a warm-up, and the
medians are reported, so a noisy machine affects every engine alike."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from . import _kernels
from .bench_peers import PEERS, EngineRuns, PeerUnavailableError
from .errors import InvalidInputError
from .model import Model, load


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def weight_bytes_per_token(model: Model) -> int:
    """Bytes of weights one decode step reads: every matrix once (the embedding
    gather reads one row, counted only when the LM head is a separate matrix)."""
    return model.transformer.matrix_bytes()


@dataclass
class EngineResult:
    engine: str
    dtype: str
    prefill_tok_s: float
    decode_tok_s: float
    ttft_ms: float
    token_ms_p50: float
    token_ms_p90: float
    weight_gb_s: float = 0.0
    bandwidth_pct: float = 0.0

    @staticmethod
    def from_runs(engine: str, dtype: str, runs: EngineRuns, n_prompt: int, n_gen: int,
                  weight_bytes: int, bandwidth: float) -> "EngineResult":
        prefill = statistics.median(runs.prefill_s)
        decode = statistics.median(runs.decode_s)
        steps = sorted(runs.decode_token_s)
        tok_s = n_gen / decode
        gbs = weight_bytes * tok_s / 1e9
        return EngineResult(engine, dtype, n_prompt / prefill, tok_s, prefill * 1e3,
                            steps[len(steps) // 2] * 1e3, steps[int(len(steps) * 0.9)] * 1e3,
                            gbs, 100.0 * gbs / bandwidth if bandwidth else 0.0)


class HearthlmRunner:
    name = "hearthlm"

    def __init__(self, model: Model, n_ctx: int):
        self.model = model
        self.session = model.session(n_ctx=n_ctx, n_keep=0)

    def run(self, prompt: np.ndarray, n_gen: int, runs: EngineRuns) -> None:
        s = self.session
        s.reset()
        t0 = time.perf_counter()
        logits = s.feed(prompt)
        runs.prefill_s.append(time.perf_counter() - t0)
        start = time.perf_counter()
        for _ in range(n_gen):
            t = time.perf_counter()
            logits = s.feed([int(np.argmax(logits))])
            runs.decode_token_s.append(time.perf_counter() - t)
        runs.decode_s.append(time.perf_counter() - start)


def make_runners(model: Model, folder: str, n_ctx: int, vs) -> list:
    runners = [HearthlmRunner(model, n_ctx)]
    for name in vs:
        if name not in PEERS:
            raise PeerUnavailableError(f"vs: unknown engine '{name}' (known: {', '.join(PEERS)})")
        runners.append(PEERS[name](folder, model.dtype, model.n_threads, n_ctx))
    return runners


def interleaved(runners, prompt: np.ndarray, n_gen: int, reps: int) -> dict:
    """Warm every engine up, then alternate them rep by rep."""
    runs = {r.name: EngineRuns() for r in runners}
    for r in runners:
        r.run(prompt[: min(len(prompt), 16)], 2, EngineRuns())
    for _ in range(reps):
        for r in runners:
            r.run(prompt, n_gen, runs[r.name])
    return runs


def random_prompt(model: Model, n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, model.vocab_size, n).astype(np.int32)


def run_bench(folder: str, dtype: Optional[str] = None, n_threads: Optional[int] = None,
              n_prompt: int = 512, n_gen: int = 128, reps: int = 3, vs=(),
              bandwidth_bytes: int = 1 << 30, mmap: Optional[bool] = None) -> dict:
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    model = load(folder, dtype=dtype, n_threads=n_threads, mmap=mmap)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_bytes()
    bandwidth = _kernels.memory_read_bandwidth(bandwidth_bytes, model.n_threads, 7)  # best of 7
    runners = make_runners(model, folder, n_prompt + n_gen, vs)
    t0 = time.perf_counter()
    first = runners[0].session.feed(random_prompt(model, 1))  # first token after load
    first_token_s = time.perf_counter() - t0 + load_s
    del first
    results = interleaved(runners, random_prompt(model, n_prompt), n_gen, reps)
    rss_after = rss_bytes()
    wbytes = weight_bytes_per_token(model)
    engines = [asdict(EngineResult.from_runs(name, model.dtype, runs, n_prompt, n_gen, wbytes, bandwidth))
               for name, runs in results.items()]
    return {
        "model": folder,
        "architecture": model.args.architecture,
        "dtype": model.dtype,
        "threads": model.n_threads,
        "isa": _kernels.active_isa(),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "reps": reps,
        "load_s": load_s,
        "load_to_first_logits_s": first_token_s,
        "weight_bytes_per_token": wbytes,
        "weights_copied": model.load_stats["copied_bytes"] > 0,
        "rss_after_load_mb": (rss_loaded - rss_before) / 2 ** 20,
        "rss_after_run_mb": (rss_after - rss_before) / 2 ** 20,
        "rss_hearthlm_only": len(runners) == 1,
        "kv_cache_mb": runners[0].session.cache.memory_bytes / 2 ** 20,
        "memory_read_gb_s": bandwidth,
        "engines": engines,
    }


def run_context_sweep(folder: str, contexts, dtype: Optional[str] = None,
                      n_threads: Optional[int] = None, n_gen: int = 16, reps: int = 1, vs=(),
                      mmap: Optional[bool] = None) -> dict:
    """Decode tokens/s after a prompt of each length in `contexts` (attention cost
    grows with the context), for hearthlm and each peer."""
    model = load(folder, dtype=dtype, n_threads=n_threads, mmap=mmap)
    runners = make_runners(model, folder, max(contexts) + n_gen, vs)
    sweep = {r.name: [] for r in runners}
    for c in contexts:
        runs = interleaved(runners, random_prompt(model, c), n_gen, reps)
        for name, r in runs.items():
            sweep[name].append(n_gen / statistics.median(r.decode_s))
    return {"model": folder, "dtype": model.dtype, "threads": model.n_threads,
            "contexts": list(contexts), "decode_tok_s": sweep}


def plot_sweep(sweep: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise InvalidInputError("plot_sweep needs matplotlib (pip install 'hearthlm[bench]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in sweep["decode_tok_s"].items():
        ax.plot(sweep["contexts"], values, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"{os.path.basename(sweep['model'].rstrip('/'))} {sweep['dtype']}, "
                 f"{sweep['threads']} threads")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_report(r: dict) -> str:
    lines = [
        f"model      {r['model']} ({r['architecture']})",
        f"dtype      {r['dtype']}   threads {r['threads']}   isa {r['isa']}",
        f"load       {r['load_s']:.2f} s (first logits {r['load_to_first_logits_s']:.2f} s after the load "
        f"began)   RSS +{r['rss_after_load_mb']:.0f} MB after load, +{r['rss_after_run_mb']:.0f} MB "
        f"after running{'' if r['rss_hearthlm_only'] else ' (all engines)'}; KV cache {r['kv_cache_mb']:.0f} MB",
        f"weights    {r['weight_bytes_per_token'] / 1e6:.1f} MB read per decoded token, "
        f"{'copied into huge-page memory' if r['weights_copied'] else 'memory-mapped'}",
        f"memory     {r['memory_read_gb_s']:.1f} GB/s read bandwidth measured with {r['threads']} threads",
        "",
        f"{'engine':<10}{'pp' + str(r['n_prompt']) + ' tok/s':>14}{'tg' + str(r['n_gen']) + ' tok/s':>14}"
        f"{'TTFT ms':>10}{'p50 ms':>9}{'p90 ms':>9}{'GB/s':>8}{'% bw':>7}",
    ]
    for e in r["engines"]:
        lines.append(f"{e['engine']:<10}{e['prefill_tok_s']:>14.1f}{e['decode_tok_s']:>14.2f}"
                     f"{e['ttft_ms']:>10.1f}{e['token_ms_p50']:>9.2f}{e['token_ms_p90']:>9.2f}"
                     f"{e['weight_gb_s']:>8.1f}{e['bandwidth_pct']:>7.1f}")
    base = r["engines"][0]
    for e in r["engines"][1:]:
        lines.append(f"hearthlm / {e['engine']}: prefill x{base['prefill_tok_s'] / e['prefill_tok_s']:.2f}, "
                     f"decode x{base['decode_tok_s'] / e['decode_tok_s']:.2f}")
    return "\n".join(lines)
