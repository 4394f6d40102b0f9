"""Second chat turn with and without prefix reuse, KV memory per token per kv_dtype,
and decode speed at a short and a long context.

    python bench/session_reuse.py --shape tinyllama-1.1b --dtype bf16 --history 1500

A "turn" is: the whole conversation so far (history) plus a new user message of
--turn tokens, then --gen decoded tokens. Without reuse the conversation is fed from
scratch each turn; with reuse Session.sync() finds the cached prefix and feeds only
the new message."""
import argparse
import json
import statistics
import time

import numpy as np

import hearthlm
from hearthlm.shapes import random_model_folder


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def decode(session, logits, n):
    for _ in range(n):
        logits = session.feed([int(np.argmax(logits))])
    return logits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="tinyllama-1.1b")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--history", type=int, default=1500)
    p.add_argument("--turn", type=int, default=30)
    p.add_argument("--gen", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()

    model = hearthlm.load(random_model_folder(args.shape, args.dtype))
    rng = np.random.default_rng(0)
    history = rng.integers(0, model.vocab_size, args.history).tolist()
    n_ctx = args.history + args.turn + args.gen + 8
    reuse, scratch = [], []
    s = model.session(n_ctx=n_ctx)
    for _ in range(args.reps):
        s.reset()
        decode(s, s.feed(history), 0)                      # turn 1 is cached
        turn2 = history + rng.integers(0, model.vocab_size, args.turn).tolist()
        reuse.append(timed(lambda: decode(s, s.sync(turn2), args.gen)))
        s.reset()
        scratch.append(timed(lambda: decode(s, s.feed(turn2), args.gen)))

    per_token = {}
    for kv in ("f32", "f16", "bf16", "q8"):
        c = model.session(n_ctx=256, kv_dtype=kv).cache
        per_token[kv] = (c.memory_bytes - sum(g.slot_pos.nbytes for g in c.pool.groups)) / c.n_ctx

    speed = {}
    for ctx in (128, 2000):
        t = model.session(n_ctx=ctx + args.gen + 1)
        logits = t.feed(rng.integers(0, model.vocab_size, ctx).tolist())
        times = []
        for _ in range(args.reps):
            times.append(timed(lambda: decode(t, logits, args.gen)) / args.gen)
            t.rewind(args.gen)
        speed[ctx] = 1 / statistics.median(times)

    print(json.dumps({
        "model": f"{args.shape} {model.dtype}", "threads": model.n_threads,
        "second_turn_s": {"with_prefix_reuse": statistics.median(reuse),
                          "from_scratch": statistics.median(scratch)},
        "kv_bytes_per_token": per_token,
        "decode_tok_s_at_context": speed,
    }, indent=2))


if __name__ == "__main__":
    main()
