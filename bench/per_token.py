"""The Python-side per-token path, on a 2-layer model whose kernels cost almost nothing
(the `tiny` shape: hidden 64, vocab 512), each run short (--tokens) so that attention
over a growing context stays cheap:

  feed         a raw Session.feed([token]) loop
  generate     model.generate(..., max_new_tokens=--tokens): default sampling (seed 0),
               the demo model's tokenizer streaming the text (its end-of-sequence token
               removed, so every run decodes --tokens tokens)
  greedy       the same at temperature 0
  generate-ids the same with no tokenizer (the loop without detokenization)
  group8       SessionGroup.feed of one token for each of 8 sequences (the server's
               step); tok/s = 8 x steps/s

    python bench/per_token.py [--tokens 256] [--runs 8] [--threads 2] [--rounds 5] [--clock wall]
    python bench/per_token.py --old /path/to/old-venv/bin/python   # old and new interleaved
    python bench/per_token.py --parts --threads 1 --clock cpu     # where a decode step goes

A round times --runs runs of each; the figures are medians of --rounds rounds. With
--old each round runs this script once in a subprocess of the old environment's python
and once in this one, alternately. --clock cpu counts the process's CPU time instead of
wall time (steadier on a busy machine; with 2 threads it includes the OpenMP worker's)."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

N_GROUP = 8
PROMPT = list(range(4, 12))


def tiny_folders() -> tuple:
    """(the `tiny` random shape, the same with the demo model's tokenizer minus its
    end-of-sequence token)."""
    import hearthlm
    from hearthlm.shapes import cache_dir, random_model_folder
    src = random_model_folder("tiny", "f32")
    folder = os.path.join(cache_dir(), "shapes", "tiny-f32-demo-tokenizer")
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        os.makedirs(folder, exist_ok=True)
        demo = os.path.join(os.path.dirname(hearthlm.__file__), "demo_model")
        shutil.copy(os.path.join(demo, "tokenizer.json"), folder)
        with open(os.path.join(demo, "tokenizer_config.json")) as f:
            config = json.load(f)
        config["eos_token"] = None
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump(config, f)
        shutil.copy(os.path.join(src, "config.json"), folder)
        shutil.copy(os.path.join(src, "model.safetensors"), os.path.join(folder, "model.safetensors.tmp"))
        os.replace(os.path.join(folder, "model.safetensors.tmp"), os.path.join(folder, "model.safetensors"))
    return src, folder


def feed_runs(model, n: int, runs: int, clock) -> float:
    tokens = np.random.default_rng(0).integers(4, model.vocab_size, n).tolist()
    s = model.session(n_ctx=n + len(PROMPT))
    elapsed = 0.0
    for _ in range(runs):
        s.reset()
        s.feed(PROMPT)
        t0 = clock()
        for t in tokens:
            s.feed([t])
        elapsed += clock() - t0
    return n * runs / elapsed


def generate_runs(model, n: int, runs: int, clock, **sampling) -> float:
    t0, produced = clock(), 0
    for _ in range(runs):
        produced += len(model.generate(PROMPT, max_new_tokens=n, return_result=True, **sampling).token_ids)
    return produced / (clock() - t0)


def group_runs(model, n: int, runs: int, clock) -> float:
    from hearthlm.session import SessionGroup
    group = SessionGroup(model, N_GROUP, n_ctx=n + len(PROMPT))
    steps = [[(s, [int(t)]) for s, t in zip(group.sessions, row)]
             for row in np.random.default_rng(0).integers(4, model.vocab_size, (n, N_GROUP))]
    elapsed = 0.0
    for _ in range(runs):
        for s in group.sessions:
            s.reset()
        group.feed([(s, PROMPT) for s in group.sessions])
        t0 = clock()
        for batch in steps:
            group.feed(batch)
        elapsed += clock() - t0
    return N_GROUP * n * runs / elapsed


def one_round(n: int, runs: int, threads: int, clock_name: str) -> dict:
    import hearthlm
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    plain, with_tokenizer = (hearthlm.load(f, n_threads=threads) for f in tiny_folders())
    generate_runs(with_tokenizer, n, 1, clock, seed=0)  # warm-up
    return {"feed": feed_runs(plain, n, runs, clock),
            "generate": generate_runs(with_tokenizer, n, runs, clock, seed=0),
            "greedy": generate_runs(with_tokenizer, n, runs, clock, temperature=0.0),
            "generate-ids": generate_runs(plain, n, runs, clock, seed=0),
            "group8": group_runs(plain, n, max(1, runs // 4), clock)}


def parts(threads: int, clock) -> dict:
    """Microseconds per call of each piece of a decode step at a short context (best
    of 5 batches of 2000): the whole feed, its native layer program, the LM head, a
    sample, the streaming text of one token."""
    import hearthlm
    from hearthlm.generation import ReplyText, make_sampler
    plain, with_tokenizer = (hearthlm.load(f, n_threads=threads) for f in tiny_folders())
    s = plain.session(n_ctx=64)
    logits = s.feed(PROMPT).copy()
    t, buf, pool = plain.transformer, s.buf, s.cache.pool
    tables, head, hidden = t.ensure_rope(64), s.last_logits, buf.output[:1]
    sampler = make_sampler(plain, {"seed": 0})
    sampler.start(PROMPT)
    reply = ReplyText(with_tokenizer.tokenizer, (), PROMPT)
    tokens = iter(np.random.default_rng(0).integers(4, plain.vocab_size, 6 * 2000).tolist())

    def feed():
        s.feed([7])
        s.rewind(1)
    pieces = {
        "feed+rewind": feed,
        "layer program": lambda: t.native.forward(buf.native, 1, buf.scratch, buf.caches(pool), pool.kv_dtype,
                                                  buf.positions[:1], tables, threads),
        "lm head": lambda: hearthlm._kernels.matmul(head, hidden, t.lm_head.weight, t.lm_head.bias,
                                                    t.lm_head.wtype, threads),
        "sample": lambda: sampler.sample(logits),
        "reply text": lambda: reply.add(next(tokens)),
    }
    out = {}
    for name, fn in pieces.items():
        best = []
        for _ in range(5):
            t0 = clock()
            for _ in range(2000):
                fn()
            best.append((clock() - t0) / 2000 * 1e6)
        out[name] = min(best)
    return out


def subprocess_round(python: str, a) -> dict:
    out = subprocess.run([python, os.path.abspath(__file__), "--tokens", str(a.tokens), "--runs", str(a.runs),
                          "--threads", str(a.threads), "--clock", a.clock, "--rounds", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def medians(runs: list) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=256, help="tokens decoded per run")
    p.add_argument("--runs", type=int, default=8, help="runs per round (group8: a quarter as many)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--json", action="store_true")
    p.add_argument("--parts", action="store_true", help="microseconds per piece of a decode step instead")
    p.add_argument("--old", help="python of an environment with the old build installed")
    a = p.parse_args()
    load = os.getloadavg()[0]
    what = f"tok/s ({a.clock} clock), {a.threads} thread(s), medians of {a.rounds}"
    if a.parts:
        print(f"us per call ({a.clock} clock), {a.threads} thread(s), best of 5 (load average {load:.1f})")
        for k, v in parts(a.threads, time.process_time if a.clock == "cpu" else time.perf_counter).items():
            print(f"{k:<13} {v:8.2f}")
        return
    if a.old:
        runs = {"old": [], "new": []}
        for _ in range(a.rounds):
            runs["old"].append(subprocess_round(a.old, a))
            runs["new"].append(subprocess_round(sys.executable, a))
        old, new = medians(runs["old"]), medians(runs["new"])
        print(f"{what} interleaved rounds (load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
        for k in old:
            print(f"{k:<13} old {old[k]:8.0f}   new {new[k]:8.0f}   new/old {new[k] / old[k]:.2f}")
        return
    result = medians([one_round(a.tokens, a.runs, a.threads, a.clock) for _ in range(a.rounds)])
    if a.json:
        print(json.dumps(result))
        return
    print(f"{what} rounds (load average {load:.1f})")
    for k, v in result.items():
        print(f"{k:<13} {v:8.0f}")


if __name__ == "__main__":
    main()
