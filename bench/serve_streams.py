"""Aggregate decode throughput of `hearthlm serve` against the number of concurrent streams,
optionally beside llama.cpp's `llama-server` on the same weights, or beside itself with
speculative decoding (--lookup, --draft).

    python bench/serve_streams.py                                   # the demo model
    python bench/serve_streams.py --shape tinyllama-1.1b --dtype q4 --streams 1,2,4,8 --tokens 48
    python bench/serve_streams.py --shape tinyllama-1.1b --dtype q4 --threads 2 \
        --llama-server /path/to/llama.cpp/build/bin/llama-server
    python bench/serve_streams.py MODEL --lookup --prompts grounded,free --streams 1,4 --tokens 64

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

With --lookup (and/or --draft MODEL), `hearthlm serve --lookup` (`--draft MODEL`) runs
beside the plain server, rounds interleaved, for each of --prompts: "grounded" (a
passage, then an instruction to repeat it: what prompt lookup is for) and "free" (a
short prompt, free text). The table gives each engine's ratio to the same server
without speculation ("× plain") on the same prompt and streams, and the acceptance
(drafted tokens kept, from the usage's completion_tokens_details). With --llama-server
too, `llama-server --spec-type ngram-simple` (llama.cpp's prompt lookup) joins (its
acceptance is not in its usage: "–"). "tokens per step": the round's tokens over
hearthlm's scheduler steps (from /metrics; prefill steps included), which load on the
machine does not change: N streams decoding plainly make about N. Random weights do not copy a passage, so only a
trained model shows the grounded gain; on random weights, lookup gains where greedy decoding
falls into loops, which it copies.
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


PASSAGE = ("The committee met on Tuesday to review the budget for the new library. After a long discussion, "
           "the members agreed to fund the reading room, the children's corner and a small cafe, and to ask "
           "the city for help with the roof.")
GROUNDED = f"Here is a passage.\n\n{PASSAGE}\n\nRepeat the passage word for word.\n\n"
FREE = "Once upon a time"


def one_stream(url: str, prompt, tokens: int, per_token: bool) -> dict:
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
    details = (usage or {}).get("completion_tokens_details") or {}
    return {"tokens": n, "ttft": times[0] - t0 if times else float("nan"),
            "decode_tps": (n - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0,
            "accepted": details.get("accepted_prediction_tokens", 0),
            "drafted": details.get("accepted_prediction_tokens", 0) + details.get("rejected_prediction_tokens", 0)}


def run_round(url: str, streams: int, prompt, tokens: int, per_token: bool) -> dict:
    before = counters(url)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda _: one_stream(url, prompt, tokens, per_token), range(streams)))
    wall = time.perf_counter() - t0
    after = counters(url)
    drafted = sum(r["drafted"] for r in results)
    steps = after.get("hearthlm_forward_steps_total", 0) - before.get("hearthlm_forward_steps_total", 0)
    return {"aggregate_tps": sum(r["tokens"] for r in results) / wall,
            "stream_decode_tps": statistics.median(r["decode_tps"] for r in results),
            "ttft": statistics.median(r["ttft"] for r in results),
            "acceptance": sum(r["accepted"] for r in results) / drafted if drafted else float("nan"),
            "tokens_per_step": sum(r["tokens"] for r in results) / steps if steps else float("nan")}


def counters(url: str) -> dict:
    """hearthlm serve's Prometheus counters ({} from a server without them)."""
    r = httpx.get(url + "/metrics", timeout=30)
    if r.status_code != 200 or "hearthlm_forward_steps_total" not in r.text:
        return {}
    from prometheus_client.parser import text_string_to_metric_families
    return {s.name: s.value for f in text_string_to_metric_families(r.text) for s in f.samples}


def prompts_for(kinds: list, has_tokenizer: bool, n_prompt: int) -> dict:
    """kind -> prompt: text with a tokenizer, else token ids (a passage of ids, then the
    first half of it again, for "grounded")."""
    if has_tokenizer:
        return {kind: {"grounded": GROUNDED, "free": FREE}[kind] for kind in kinds}
    passage = [(7 * i) % 200 + 10 for i in range(n_prompt)]
    return {kind: {"grounded": passage + passage[:n_prompt // 2], "free": passage}[kind] for kind in kinds}


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
    p.add_argument("--lookup", action="store_true", help="also run hearthlm serve --lookup, interleaved")
    p.add_argument("--draft", metavar="MODEL", help="also run hearthlm serve --draft MODEL, interleaved")
    p.add_argument("--prompts", help="grounded,free (default: free; with --lookup / --draft: grounded,free)")
    args = p.parse_args()
    folder = args.model
    if args.shape:
        from hearthlm.shapes import random_model_folder
        folder = random_model_folder(args.shape, args.dtype if args.dtype in ("f32", "bf16", "f16") else "bf16")
    common = ([folder] if folder else []) + (["--dtype", args.dtype] if args.dtype else []) + \
        (["--threads", str(args.threads)] if args.threads else [])
    has_tokenizer = os.path.exists(os.path.join(folder or demo_model_path(), "tokenizer.json"))
    speculating = args.lookup or args.draft
    kinds = (args.prompts or ("grounded,free" if speculating else "free")).split(",")
    prompts = prompts_for(kinds, has_tokenizer, args.prompt_tokens)
    per_token = not has_tokenizer

    if has_tokenizer:
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(os.path.join(folder or demo_model_path(), "tokenizer.json"))
        longest = max(len(tokenizer.encode(prompt).ids) for prompt in prompts.values())
    else:
        longest = max(len(prompt) for prompt in prompts.values())
    per_slot = longest + args.tokens + 8

    def hearthlm_serve(*extra):
        return lambda n: serve_process(*common, "--parallel", str(n), "--ctx", str(per_slot), "--queue", "0",
                                       *extra, timeout=1200)
    engines = {"hearthlm": hearthlm_serve()}
    if args.lookup:
        engines["hearthlm --lookup"] = hearthlm_serve("--lookup")
    if args.draft:
        engines["hearthlm --draft"] = hearthlm_serve("--draft", args.draft)
    if args.llama_server:
        from hearthlm.gguf_export import export_gguf
        gguf = export_gguf(folder, args.dtype or "bf16")
        engines["llama-server"] = lambda n: llama_server(args.llama_server, gguf, n, args.threads, per_slot * n)
        if args.lookup:  # llama.cpp's own prompt lookup
            engines["llama-server ngram-simple"] = lambda n: llama_server(
                args.llama_server, gguf, n, args.threads, per_slot * n, "--spec-type", "ngram-simple")
    rows = []
    for n in [int(s) for s in args.streams.split(",")]:
        with contextlib.ExitStack() as stack:
            urls = {name: stack.enter_context(start(n))[0] for name, start in engines.items()}
            for kind, prompt in prompts.items():
                for url in urls.values():
                    run_round(url, n, prompt, args.tokens, per_token)  # warm-up
                rounds = {name: [] for name in urls}
                for _ in range(args.reps):  # interleaved
                    for name, url in urls.items():
                        rounds[name].append(run_round(url, n, prompt, args.tokens, per_token))
                for name, rs in rounds.items():
                    rows.append({"engine": name, "prompt": kind, "streams": n,
                                 **{k: statistics.median(r[k] for r in rs) for k in rs[0]}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| engine | prompt | streams | aggregate tok/s | × plain | × its 1st row | per-stream decode tok/s | "
          "TTFT ms | drafts kept | tokens per step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["engine"] == r["engine"] and b["prompt"] == r["prompt"])["aggregate_tps"]
        plain = next(b for b in rows if b["engine"] == r["engine"].split(" ")[0] and b["prompt"] == r["prompt"]
                     and b["streams"] == r["streams"])["aggregate_tps"]
        kept = "–" if r["acceptance"] != r["acceptance"] else f"{100 * r['acceptance']:.0f} %"
        per_step = "–" if r["tokens_per_step"] != r["tokens_per_step"] else f"{r['tokens_per_step']:.2f}"
        print(f"| {r['engine']} | {r['prompt']} | {r['streams']} | {r['aggregate_tps']:.1f} | "
              f"{r['aggregate_tps'] / plain:.2f} | {r['aggregate_tps'] / base:.2f} | {r['stream_decode_tps']:.1f} | "
              f"{r['ttft'] * 1000:.0f} | {kept} | {per_step} |")


@contextlib.contextmanager
def llama_server(binary: str, gguf: str, parallel: int, threads, n_ctx: int, *extra: str):
    """llama-server on a free loopback port -> (url, process), as serve_process does."""
    port = free_port()
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
           "-c", str(n_ctx), "-b", "512", "--no-webui", "-cb", *extra] + (["-t", str(threads), "-tb", str(threads)]
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
