#!/usr/bin/env python3
"""Greedy held-out accuracy of a demo-model folder under Hugging Face transformers.

For every line of heldout.jsonl ({"messages": [system, user], "answer": "..."}):
render the prompt with tok.apply_chat_template(add_generation_prompt=True),
greedy-generate until the eos token, decode the new tokens (skipping special
tokens), strip, and compare to the expected answer exactly.

--multi-turn: for every held-out row, prepend 1-3 earlier user/assistant turns made
of OTHER held-out questions with their correct answers (seeded, see
heldout_multiturn), and check the answer to the final question.
--no-system: drop the system message (the chat template then inserts the default
system prompt).

Usage:
  python3 tools/eval_demo_model.py [MODEL_DIR] [--heldout FILE] [--multi-turn] [--no-system] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict

import torch


def heldout_multiturn(heldout, seed: int, max_prev: int = 3):
    """For every held-out row: 1..max_prev earlier turns made of OTHER held-out
    questions with their correct answers, then the row's question. Deterministic;
    tools/eval_demo_model.py --multi-turn builds the same conversations."""
    rng = random.Random(seed * 31337 + 11)
    out = []
    for i, row in enumerate(heldout):
        k = rng.randint(1, max_prev)
        others = rng.sample([j for j in range(len(heldout)) if j != i], k)
        msgs = [row["messages"][0]]
        for j in others:
            msgs += [{"role": "user", "content": heldout[j]["messages"][-1]["content"]},
                     {"role": "assistant", "content": heldout[j]["answer"]}]
        msgs.append(row["messages"][-1])
        out.append({"task": row["task"], "messages": msgs, "answer": row["answer"]})
    return out


def evaluate(model_dir: str, heldout_path: str | None = None, show_errors: bool = True,
             max_new_tokens: int = 16, multi_turn: bool = False, no_system: bool = False,
             seed: int = 1234) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    heldout_path = heldout_path or f"{model_dir}/heldout.jsonl"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    with open(heldout_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if multi_turn:
        rows = heldout_multiturn(rows, seed)
    if no_system:
        rows = [dict(r, messages=[m for m in r["messages"] if m["role"] != "system"]) for r in rows]
    mode = ("multi-turn" if multi_turn else "single-turn") + (", no system message" if no_system else "")

    t0 = time.time()
    n_ok = 0
    per_task = defaultdict(lambda: [0, 0])
    errors = []
    for row in rows:
        prompt = tok.apply_chat_template(row["messages"], add_generation_prompt=True, tokenize=False)
        enc = tok(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        got = tok.decode(new, skip_special_tokens=True).strip()
        ok = got == row["answer"]
        n_ok += ok
        task = row.get("task", "all")
        per_task[task][0] += ok
        per_task[task][1] += 1
        if not ok:
            errors.append((row["messages"][-1]["content"], row["answer"], got))
    acc = n_ok / len(rows)
    if show_errors and errors:
        print(f"errors ({len(errors)}):")
        for q, want, got in errors:
            print(f"  {q!r}: expected {want!r}, got {got!r}")
    for task, (ok, n) in per_task.items():
        print(f"  {task:6s} {ok}/{n} = {ok / n:.3f}")
    print(f"held-out greedy accuracy (transformers, {mode}): {n_ok}/{len(rows)} = {acc:.4f}  "
          f"[{time.time() - t0:.1f}s]")
    return acc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default="pylib/hearthlm/demo_model")
    ap.add_argument("--heldout", default=None, help="default: MODEL_DIR/heldout.jsonl")
    ap.add_argument("--quiet", action="store_true", help="do not list wrong answers")
    ap.add_argument("--multi-turn", action="store_true",
                    help="prepend 1-3 earlier turns (other held-out questions + correct answers)")
    ap.add_argument("--no-system", action="store_true", help="drop the system message")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the --multi-turn conversations")
    args = ap.parse_args()
    acc = evaluate(args.model_dir, args.heldout, show_errors=not args.quiet,
                   multi_turn=args.multi_turn, no_system=args.no_system, seed=args.seed)
    return 0 if acc >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
