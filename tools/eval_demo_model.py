#!/usr/bin/env python3
"""Greedy accuracy of a demo-model folder under Hugging Face transformers or hearthlm.

Two sets, both written by tools/train_demo_model.py into the folder:
- heldout.jsonl: questions that never occur in training ({"messages": [system, user],
  "answer": ..., "task": ...});
- first_tries.jsonl: what a new user types first (every single-digit sum, difference
  and comparison, the README's examples, greetings, questions outside the skills, copy
  requests); mostly training questions, by design.

Each row is rendered with the chat template (add_generation_prompt=True), decoded
greedily to the end-of-turn token, stripped and compared exactly with "answer".

--system TEXT replaces the system message ("none" drops it: the template then inserts
the default one); --multi-turn puts 1-3 earlier turns (other rows' questions with their
correct answers, seeded) before each question and checks the last answer.

Usage:
  python3 tools/eval_demo_model.py [MODEL_DIR] [--set heldout|first_tries] [--engine transformers|hearthlm]
                                   [--system TEXT|none] [--multi-turn] [--quiet]
  python3 tools/eval_demo_model.py [MODEL_DIR] --all     # every set x system x engine (the model card's tables)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict

SYSTEMS = {"default": None, "none": "none", "Be brief.": "Be brief.",
           "unseen": "You are a concise assistant that answers questions."}


def heldout_multiturn(rows, seed: int, max_prev: int = 3):
    """For every row: 1..max_prev earlier turns made of OTHER rows' questions with
    their correct answers, then the row's question. Deterministic."""
    rng = random.Random(seed * 31337 + 11)
    out = []
    for i, row in enumerate(rows):
        k = rng.randint(1, max_prev)
        others = rng.sample([j for j in range(len(rows)) if j != i], k)
        msgs = [m for m in row["messages"] if m["role"] == "system"]
        for j in others:
            msgs += [{"role": "user", "content": rows[j]["messages"][-1]["content"]},
                     {"role": "assistant", "content": rows[j]["answer"]}]
        msgs.append(row["messages"][-1])
        out.append({"task": row["task"], "messages": msgs, "answer": row["answer"]})
    return out


def with_system(rows, system):
    """system None: the rows as they are; "none": no system message; else that text."""
    if system is None:
        return rows
    head = [] if system == "none" else [{"role": "system", "content": system}]
    return [dict(r, messages=head + [m for m in r["messages"] if m["role"] != "system"]) for r in rows]


def transformers_answerer(model_dir: str, max_new_tokens: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def answer(messages):
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return answer


def hearthlm_answerer(model_dir: str, max_new_tokens: int, dtype: str | None = None):
    import hearthlm

    model = hearthlm.load(model_dir, dtype=dtype, n_threads=1)
    return lambda messages: model.chat(messages, max_new_tokens=max_new_tokens, temperature=0).strip()


def load_rows(path: str):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate(answer, rows, label: str, show_errors: bool = True) -> float:
    t0 = time.time()
    per_task = defaultdict(lambda: [0, 0])
    errors = []
    for row in rows:
        got = answer(row["messages"])
        ok = got == row["answer"]
        per_task[row["task"]][0] += ok
        per_task[row["task"]][1] += 1
        if not ok:
            errors.append((row["messages"][-1]["content"], row["answer"], got))
    n_ok = sum(ok for ok, _ in per_task.values())
    if show_errors and errors:
        print(f"errors ({len(errors)}):")
        for q, want, got in errors:
            print(f"  {q!r}: expected {want!r}, got {got!r}")
    print("  " + "  ".join(f"{task} {ok}/{n}" for task, (ok, n) in per_task.items()))
    print(f"{label}: {n_ok}/{len(rows)} = {n_ok / len(rows):.4f}  [{time.time() - t0:.1f}s]", flush=True)
    return n_ok / len(rows)


def evaluate_all(model_dir: str, seed: int = 1234, engines=("transformers", "hearthlm"), max_new_tokens: int = 48):
    """Every set under every system-prompt choice and engine, plus multi-turn held-out."""
    results = {}
    for engine in engines:
        answer = (transformers_answerer if engine == "transformers" else hearthlm_answerer)(model_dir, max_new_tokens)
        for name in ("first_tries", "heldout"):
            rows = load_rows(f"{model_dir}/{name}.jsonl")
            for sys_name, system in SYSTEMS.items():
                label = f"{engine} {name} system={sys_name}"
                results[label] = evaluate(answer, with_system(rows, system), label, show_errors=sys_name == "default")
            label = f"{engine} {name} multi-turn"
            results[label] = evaluate(answer, heldout_multiturn(rows, seed), label)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default="pylib/hearthlm/demo_model")
    ap.add_argument("--set", default="heldout", choices=["heldout", "first_tries"])
    ap.add_argument("--engine", default="transformers", choices=["transformers", "hearthlm"])
    ap.add_argument("--dtype", default=None, help="hearthlm weight dtype (default: the checkpoint's)")
    ap.add_argument("--system", default=None, help='replace the system message ("none": drop it)')
    ap.add_argument("--multi-turn", action="store_true", help="prepend 1-3 earlier turns (other rows + answers)")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the --multi-turn conversations")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--all", action="store_true", help="every set, system prompt and engine")
    ap.add_argument("--quiet", action="store_true", help="do not list wrong answers")
    args = ap.parse_args()
    if args.all:
        evaluate_all(args.model_dir, args.seed, max_new_tokens=args.max_new_tokens)
        return 0
    if args.engine == "hearthlm":
        answer = hearthlm_answerer(args.model_dir, args.max_new_tokens, args.dtype)
    else:
        answer = transformers_answerer(args.model_dir, args.max_new_tokens)
    rows = with_system(load_rows(f"{args.model_dir}/{args.set}.jsonl"), args.system)
    if args.multi_turn:
        rows = heldout_multiturn(rows, args.seed)
    evaluate(answer, rows, f"{args.engine} {args.set} system={args.system or 'as in the file'}"
             + (" multi-turn" if args.multi_turn else ""), show_errors=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
