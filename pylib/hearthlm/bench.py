"""`hearthlm bench`: prefill and decode speed, bandwidth achieved, memory, load time,
optionally side by side with transformers (PyTorch) on the same weights.

Runs are interleaved (hearthlm, peer, hearthlm, peer, ...) after a warm-up, and the
medians are reported, so a noisy machine affects every engine alike."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from . import _kernels
from .kv_cache import KVCache
from .model import Model, load
from .transformer import Buffers


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
    t = model.transformer
    total = sum(lin.weight.nbytes for layer in t.layers
                for lin in (layer.q_proj, layer.k_proj, layer.v_proj, layer.o_proj,
                            layer.gate_proj, layer.up_proj, layer.down_proj))
    return total + t.lm_head.weight.nbytes


@dataclass
class EngineRuns:
    prefill_s: list = field(default_factory=list)
    decode_token_s: list = field(default_factory=list)  # every decode step of every rep
    decode_s: list = field(default_factory=list)        # whole decode phase per rep


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

    def __init__(self, model: Model, n_prompt: int, n_gen: int):
        self.model = model
        self.cache = KVCache(model.args, n_prompt + n_gen)
        self.buf = Buffers(model.args, n_prompt)
        self.logits = np.empty((1, model.vocab_size), np.float32)

    def run(self, prompt: np.ndarray, n_gen: int, runs: EngineRuns) -> None:
        t = self.model.transformer
        self.cache.reset()
        t0 = time.perf_counter()
        t.forward(prompt, self.cache, self.buf, self.logits)
        runs.prefill_s.append(time.perf_counter() - t0)
        token = np.zeros(1, np.int32)
        start = time.perf_counter()
        for _ in range(n_gen):
            s = time.perf_counter()
            token[0] = int(np.argmax(self.logits[0]))
            t.forward(token, self.cache, self.buf, self.logits)
            runs.decode_token_s.append(time.perf_counter() - s)
        runs.decode_s.append(time.perf_counter() - start)


class TorchRunner:
    """transformers on the same folder, same dtype, same threads, greedy with a KV cache."""
    name = "torch"

    def __init__(self, folder: str, dtype: str, n_threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(n_threads)
        self.torch = torch
        # Quantized runs are compared with torch in bf16 (it has no q8/q4 CPU path here).
        torch_dtype = {"f32": torch.float32, "f16": torch.float16}.get(dtype, torch.bfloat16)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).eval()

    def run(self, prompt: np.ndarray, n_gen: int, runs: EngineRuns) -> None:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.tensor(prompt[None, :].astype(np.int64))
            t0 = time.perf_counter()
            out = self.model(ids, use_cache=True)
            runs.prefill_s.append(time.perf_counter() - t0)
            past, logits = out.past_key_values, out.logits[:, -1]
            start = time.perf_counter()
            for _ in range(n_gen):
                s = time.perf_counter()
                token = logits.argmax(-1, keepdim=True)
                out = self.model(token, past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1]
                runs.decode_token_s.append(time.perf_counter() - s)
            runs.decode_s.append(time.perf_counter() - start)


def run_bench(folder: str, dtype: Optional[str] = None, n_threads: Optional[int] = None,
              n_prompt: int = 512, n_gen: int = 128, reps: int = 3, vs=(),
              bandwidth_bytes: int = 1 << 30) -> dict:
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    model = load(folder, dtype=dtype, n_threads=n_threads)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_bytes()
    dtype = model.dtype
    bandwidth = _kernels.memory_read_bandwidth(bandwidth_bytes, model.n_threads, 3)
    prompt = np.random.default_rng(0).integers(0, model.vocab_size, n_prompt).astype(np.int32)
    runners = [HearthlmRunner(model, n_prompt, n_gen)]
    if "torch" in vs:
        runners.append(TorchRunner(folder, dtype, model.n_threads))
    results = {r.name: EngineRuns() for r in runners}
    for r in runners:  # warm-up: page in weights, fill caches, JIT nothing
        r.run(prompt[: min(n_prompt, 16)], 2, EngineRuns())
    rss_after_warmup = rss_bytes()
    for _ in range(reps):
        for r in runners:
            r.run(prompt, n_gen, results[r.name])
    wbytes = weight_bytes_per_token(model)
    engines = [asdict(EngineResult.from_runs(name, dtype, runs, n_prompt, n_gen, wbytes, bandwidth))
               for name, runs in results.items()]
    return {
        "model": folder,
        "architecture": model.args.architecture,
        "dtype": dtype,
        "threads": model.n_threads,
        "isa": _kernels.active_isa(),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "reps": reps,
        "load_s": load_s,
        "weight_bytes_per_token": wbytes,
        "rss_after_load_mb": (rss_loaded - rss_before) / 2 ** 20,
        "rss_after_run_mb": (rss_after_warmup - rss_before) / 2 ** 20,
        "kv_cache_mb": runners[0].cache.memory_bytes / 2 ** 20,
        "memory_read_gb_s": bandwidth,
        "engines": engines,
    }


def format_report(r: dict) -> str:
    lines = [
        f"model      {r['model']} ({r['architecture']})",
        f"dtype      {r['dtype']}   threads {r['threads']}   isa {r['isa']}",
        f"load       {r['load_s']:.2f} s   RSS +{r['rss_after_load_mb']:.0f} MB after load, "
        f"+{r['rss_after_run_mb']:.0f} MB after running (KV cache {r['kv_cache_mb']:.0f} MB)",
        f"weights    {r['weight_bytes_per_token'] / 1e6:.1f} MB read per decoded token",
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
