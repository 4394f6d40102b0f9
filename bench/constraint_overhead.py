"""Cost per token of a grammar constraint against the decode step it rides on.

    python bench/constraint_overhead.py                      # demo model, then SmolLM2-135M q4
    python bench/constraint_overhead.py --tokens 400 --json

Per generated token under a JSON schema, timed apart: the llguidance mask
(Constraint.next_mask), the masked native sample, the matcher's advance
(Constraint.accept), and for comparison the unmasked sample on the same logits and
the decode step (Session.feed of one token). The overhead is mask + accept + (masked
- unmasked sample), as a share of decode step + unmasked sample.

The SmolLM2-135M shape has random weights and no tokenizer; this script gives it a
byte-level BPE of the model's 49 152 tokens trained on the Python standard library's
sources (in a folder beside the cached random weights, linking to them), so llguidance sees a realistic
vocabulary of words, identifiers and punctuation."""
import argparse
import glob
import json
import os
import statistics
import sysconfig
import time

import numpy as np

import hearthlm
from hearthlm.constraints import Constraint
from hearthlm.demo import demo_model_path
from hearthlm.generation import make_sampler
from hearthlm.shapes import random_model_folder

SCHEMA = {"type": "array", "maxItems": 50, "items": {
    "type": "object", "additionalProperties": False, "required": ["id", "name", "tags", "score", "active"],
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 99999},
                   "name": {"type": "string", "maxLength": 24},
                   "tags": {"type": "array", "items": {"enum": ["alpha", "beta", "gamma", "delta"]}, "maxItems": 3},
                   "score": {"type": "number", "minimum": 0, "maximum": 1},
                   "active": {"type": "boolean"}}}}


def with_bpe_tokenizer(weights: str) -> str:
    """A folder beside `weights` with links to its files and a trained tokenizer."""
    folder = weights.rstrip(os.sep) + "-bpe"
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(weights):
        if not os.path.exists(os.path.join(folder, name)):
            os.symlink(os.path.join(weights, name), os.path.join(folder, name))
    with open(os.path.join(weights, "config.json")) as f:
        vocab_size = json.load(f)["vocab_size"]

    def sources():
        for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"), recursive=True)):
            with open(path, encoding="utf-8", errors="replace") as f:
                yield f.read()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(sources(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    return folder


def measure(model, n_tokens: int, seed: int) -> dict:
    prompt = model.tokenizer.encode("Here is the list as JSON:")
    session = model.session(n_ctx=min(model.args.max_position_embeddings, len(prompt) + n_tokens + 1))
    sampler = make_sampler(model, dict(temperature=0.8, seed=seed))
    logits = session.feed(prompt)
    sampler.start(prompt)
    t = {k: [] for k in ("mask", "masked_sample", "sample", "accept", "decode")}
    constraint = Constraint.from_options(model, json_schema=SCHEMA)
    clock = time.perf_counter
    for _ in range(n_tokens):
        if constraint.done:  # a whole document: start another
            constraint = Constraint.from_options(model, json_schema=SCHEMA)
        t0 = clock()
        mask = constraint.next_mask()
        t1 = clock()
        token = sampler.sample(logits, mask)
        t2 = clock()
        sampler.sample(logits)
        t3 = clock()
        constraint.accept(token)
        sampler.accept(token)
        t4 = clock()
        logits = session.feed([token])
        t5 = clock()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            t[k].append(dt * 1e6)
    med = {k: statistics.median(v) for k, v in t.items()}
    mean = {k: statistics.fmean(v) for k, v in t.items()}
    overhead = lambda m: m["mask"] + m["accept"] + m["masked_sample"] - m["sample"]
    step = lambda m: m["decode"] + m["sample"]
    return {"median_us": med, "mean_us": mean,
            "p90_mask_us": float(np.percentile(t["mask"], 90)),
            "overhead_share_median": overhead(med) / step(med),
            "overhead_share_mean": overhead(mean) / step(mean)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    folder = with_bpe_tokenizer(random_model_folder("smollm2-135m", "bf16"))
    report = {}
    for name, path, dtype in (("demo", demo_model_path(), None), ("smollm2-135m-q4", folder, "q4")):
        model = hearthlm.load(path, dtype=dtype, n_threads=args.threads)
        measure(model, 20, seed=1)  # warm up: caches, llguidance's tokenizer trie
        report[name] = {"vocab": model.vocab_size, "threads": model.n_threads, **measure(model, args.tokens, seed=0)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, r in report.items():
        m, a = r["median_us"], r["mean_us"]
        print(f"{name} (vocab {r['vocab']}, {r['threads']} threads), per token, median / mean us:")
        for k in m:
            print(f"  {k:14s} {m[k]:9.1f} {a[k]:9.1f}")
        print(f"  mask p90 {r['p90_mask_us']:.1f} us; constraint overhead {100 * r['overhead_share_median']:.2f} % "
              f"(median) / {100 * r['overhead_share_mean']:.2f} % (mean) of a decode step")


if __name__ == "__main__":
    main()
