"""Aggregate decode throughput of `hearthlm serve` against the number of concurrent streams,
optionally beside llama.cpp's `llama-server` on the same weights.

    python bench/serve_streams.py                                   # the demo model
    python bench/serve_streams.py --shape tinyllama-1.1b --dtype q4 --streams 1,2,4,8 --tokens 48
    python bench/serve_streams.py --shape tinyllama-1.1b --dtype q4 --threads 2 \
        --llama-server /path/to/llama.cpp/build/bin/llama-server

For each N: `hearthlm serve --parallel N` in a child process (loopback), one warm-up
round, then N clients at once, each streaming /v1/completions with --tokens tokens
(ignore_eos, greedy) after a --prompt-token prompt. Aggregate tok/s = all streams'
tokens / wall time of the round; per-stream decode tok/s = (tokens - 1) / (last token -
first token) of each stream, median; TTFT median. Medians over --reps rounds. A model
without a tokenizer streams no text, so there each request asks logprobs=0 (one chunk
per token, plus a log-softmax over the vocabulary per token).

With --llama-server, the same N also runs on `llama-server -np N -t THREADS` with the
GGUF `hearthlm bench --vs llama.cpp` writes from the folder (q4 -> Q4_0, q8 -> Q8_0),
its rounds interleaved with hearthlm's (both servers are up; the idle one sleeps).
"""
import argparse
import concurrent.futures
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from serve_util import free_port, serve_process  # noqa: E402

from hearthlm.demo import demo_model_path  # noqa: E402


def one_stream(url: str, prompt: list, tokens: int, per_token: bool) -> dict:
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}, "cache_prompt": False}
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
    n = usage["completion_tokens"] if usage else len(times)
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
    p.add_argument("--llama-server", metavar="BINARY", help="also run llama.cpp's llama-server, interleaved")
    args = p.parse_args()
    folder = args.model
    if args.shape:
        from hearthlm.shapes import random_model_folder
        folder = random_model_folder(args.shape, args.dtype if args.dtype in ("f32", "bf16", "f16") else "bf16")
    common = ([folder] if folder else []) + (["--dtype", args.dtype] if args.dtype else []) + \
        (["--threads", str(args.threads)] if args.threads else [])
    prompt = [(7 * i) % 200 + 10 for i in range(args.prompt_tokens)]

    per_slot = args.prompt_tokens + args.tokens + 8
    per_token = not os.path.exists(os.path.join(folder or demo_model_path(), "tokenizer.json"))
    engines = {"hearthlm": lambda n: serve_process(*common, "--parallel", str(n), "--ctx", str(per_slot),
                                                   "--queue", "0", timeout=1200)}
    if args.llama_server:
        from hearthlm.gguf_export import export_gguf
        gguf = export_gguf(folder, args.dtype or "bf16")
        engines["llama-server"] = lambda n: llama_server(args.llama_server, gguf, n, args.threads, per_slot * n)
    rows = []
    for n in [int(s) for s in args.streams.split(",")]:
        with contextlib.ExitStack() as stack:
            urls = {name: stack.enter_context(start(n))[0] for name, start in engines.items()}
            for url in urls.values():
                run_round(url, n, prompt, args.tokens, per_token)  # warm-up
            rounds = {name: [] for name in urls}
            for _ in range(args.reps):  # interleaved
                for name, url in urls.items():
                    rounds[name].append(run_round(url, n, prompt, args.tokens, per_token))
        for name, rs in rounds.items():
            rows.append({"engine": name, "streams": n, **{k: statistics.median(r[k] for r in rs) for k in rs[0]}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| engine | streams | aggregate tok/s | × its 1st row | per-stream decode tok/s | TTFT ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["engine"] == r["engine"])["aggregate_tps"]
        print(f"| {r['engine']} | {r['streams']} | {r['aggregate_tps']:.1f} | {r['aggregate_tps'] / base:.2f} | "
              f"{r['stream_decode_tps']:.1f} | {r['ttft'] * 1000:.0f} |")


@contextlib.contextmanager
def llama_server(binary: str, gguf: str, parallel: int, threads, n_ctx: int):
    """llama-server on a free loopback port -> (url, process), as serve_process does."""
    port = free_port()
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
           "-c", str(n_ctx), "-b", "512", "--no-webui", "-cb"] + (["-t", str(threads), "-tb", str(threads)]
                                                                 if threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"llama-server exited with {proc.returncode}: {' '.join(cmd)}"
            assert time.monotonic() < end, "llama-server did not start"
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
