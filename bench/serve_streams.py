"""Aggregate decode throughput of `hearthlm serve` against the number of concurrent streams.

    python bench/serve_streams.py                                   # the demo model
    python bench/serve_streams.py --shape tinyllama-1.1b --dtype q4 --streams 1,2,4,8 --tokens 48

For each N: `hearthlm serve --parallel N` in a child process (loopback), one warm-up
round, then N clients at once, each streaming /v1/completions with --tokens tokens
(ignore_eos, greedy) after a --prompt-token prompt. Aggregate tok/s = all streams'
tokens / wall time of the round; per-stream decode tok/s = (tokens - 1) / (last token -
first token) of each stream, median; TTFT median. Medians over --reps rounds. A model
without a tokenizer streams no text, so there each request asks logprobs=0 (one chunk
per token, plus a log-softmax over the vocabulary per token).
"""
import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import time

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from serve_util import serve_process  # noqa: E402

from hearthlm.demo import demo_model_path  # noqa: E402


def one_stream(url: str, prompt: list, tokens: int, per_token: bool) -> dict:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    if per_token:  # without a tokenizer there is no text: logprobs make a chunk per token
        body["logprobs"] = 0
    t0 = time.perf_counter()
    times, usage = [], None
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["finish_reason"] is None:
                times.append(time.perf_counter())
            if chunk.get("usage"):
                usage = chunk["usage"]
    n = usage["completion_tokens"]
    return {"tokens": n, "ttft": times[0] - t0 if times else float("nan"),
            "decode_tps": (n - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0}


def run_round(url: str, streams: int, prompt: list, tokens: int, per_token: bool) -> dict:
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda _: one_stream(url, prompt, tokens, per_token), range(streams)))
    wall = time.perf_counter() - t0
    return {"aggregate_tps": sum(r["tokens"] for r in results) / wall,
            "stream_decode_tps": statistics.median(r["decode_tps"] for r in results),
            "ttft": statistics.median(r["ttft"] for r in results)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="model folder (default: the demo model, or --shape)")
    p.add_argument("--shape", help="random weights of a named shape (hearthlm.shapes)")
    p.add_argument("--dtype")
    p.add_argument("--threads", type=int)
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    folder = args.model
    if args.shape:
        from hearthlm.shapes import random_model_folder
        folder = random_model_folder(args.shape, args.dtype if args.dtype in ("f32", "bf16", "f16") else "bf16")
    common = ([folder] if folder else []) + (["--dtype", args.dtype] if args.dtype else []) + \
        (["--threads", str(args.threads)] if args.threads else [])
    prompt = [(7 * i) % 200 + 10 for i in range(args.prompt_tokens)]
    per_token = not os.path.exists(os.path.join(folder or demo_model_path(), "tokenizer.json"))
    rows = []
    for n in [int(s) for s in args.streams.split(",")]:
        ctx = str(args.prompt_tokens + args.tokens + 8)
        with serve_process(*common, "--parallel", str(n), "--ctx", ctx, "--queue", "0", timeout=1200) as (url, _):
            run_round(url, n, prompt, args.tokens, per_token)  # warm-up
            rounds = [run_round(url, n, prompt, args.tokens, per_token) for _ in range(args.reps)]
        rows.append({"streams": n, **{k: statistics.median(r[k] for r in rounds) for k in rounds[0]}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    base = rows[0]["aggregate_tps"]
    print("| streams | aggregate tok/s | × first row | per-stream decode tok/s | TTFT ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['aggregate_tps']:.1f} | {r['aggregate_tps'] / base:.2f} | "
              f"{r['stream_decode_tps']:.1f} | {r['ttft'] * 1000:.0f} |")


if __name__ == "__main__":
    main()
