#!/usr/bin/env python3
"""Greedy accuracy of a demo-model folder under Hugging Face transformers or hearthlm.

Two sets, both written by tools/train_demo_model.py into the folder:
- heldout.jsonl: questions that never occur in training ({"messages": [system, user],
  "answer": ..., "task": ...}), copy / edit passages among them;
- first_tries.jsonl: what a new user types first (every single-digit sum, difference
  and comparison in every phrasing, a sample of two-digit ones, the README's examples
  with questions outside the skills, greetings, copy and edit requests); mostly
  training questions, by design.
--set also takes a path to another such file (e.g. an older model's heldout.jsonl).

Each row is rendered with the chat template (add_generation_prompt=True), decoded
greedily to the end-of-turn token, stripped and compared exactly with "answer"; or,
with --teacher-forced (and --all), checked in one forward pass over prompt + answer +
end of turn (every position's argmax the next expected token: the same verdict), 16
conversations per forward pass.

--system TEXT replaces the system message ("none" drops it: the template then inserts
the default one); --multi-turn puts 1-3 earlier turns (other rows' questions with their
correct answers, seeded; the oldest dropped while the conversation exceeds the
256-token context) before each question and checks the last answer.

Usage:
  python3 tools/eval_demo_model.py [MODEL_DIR] [--set heldout|first_tries|FILE.jsonl]
                                   [--engine transformers|hearthlm] [--system TEXT|none]
                                   [--multi-turn] [--teacher-forced] [--quiet]
  python3 tools/eval_demo_model.py [MODEL_DIR] --all     # every set x system x engine (the model card's tables)
  python3 tools/eval_demo_model.py [MODEL_DIR] --two-digit [--all]   # every sum and difference of 0..99 and
      # two-digit ones under every phrasing, system prompt and after earlier turns (--all: both engines)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_corpus import every_pair, phrasing_sample  # noqa: E402

SYSTEMS = {"default": None, "none": "none", "Be brief.": "Be brief.",
           "unseen": "You are a concise assistant that answers questions."}


def heldout_multiturn(rows, seed: int, max_prev: int = 3, n_tokens=None, context: int = 256, pool=None):
    """For every row: 1..max_prev earlier turns made of OTHER rows' questions (or of
    `pool`'s rows) with their correct answers, then the row's question. Deterministic.
    With n_tokens (messages -> token count of the whole conversation, answer included),
    the oldest earlier turns are dropped until the conversation fits `context`."""
    rng = random.Random(seed * 31337 + 11)
    out = []
    for i, row in enumerate(rows):
        k = rng.randint(1, max_prev)
        others = [rows[j] for j in rng.sample([j for j in range(len(rows)) if j != i], k)] if pool is None \
            else rng.sample(pool, k)
        system = [m for m in row["messages"] if m["role"] == "system"]
        turns = [[{"role": "user", "content": o["messages"][-1]["content"]},
                  {"role": "assistant", "content": o["answer"]}] for o in others]
        last = [row["messages"][-1], {"role": "assistant", "content": row["answer"]}]
        while n_tokens and turns and n_tokens(system + sum(turns, []) + last) > context:
            turns = turns[1:]
        out.append({"task": row["task"], "messages": system + sum(turns, []) + last[:1], "answer": row["answer"]})
    return out


def with_system(rows, system):
    """system None: the rows as they are; "none": no system message; else that text."""
    if system is None:
        return rows
    head = [] if system == "none" else [{"role": "system", "content": system}]
    return [dict(r, messages=head + [m for m in r["messages"] if m["role"] != "system"]) for r in rows]


class Engine:
    """One engine's greedy reply to a conversation and its teacher-forced check of an
    expected answer (one forward pass over prompt + answer + end of turn: every
    position's argmax is the next expected token, which is greedy exact match)."""

    def __init__(self, name: str, model_dir: str, max_new_tokens: int, dtype: str | None = None):
        self.name, self.max_new_tokens = name, max_new_tokens
        if name == "hearthlm":
            import hearthlm

            self.model = hearthlm.load(model_dir, dtype=dtype, n_threads=1)
            self.tok = self.model.tokenizer
        else:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            torch.set_num_threads(1)
            self.tok = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def prompt(self, messages) -> list:
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def target(self, answer: str) -> list:
        return list(self.tok.encode(answer, add_special_tokens=False)) + [self.tok.eos_token_id]

    def n_tokens(self, messages) -> int:
        """Tokens of a conversation that ends with an assistant answer, its end of turn included."""
        return len(self.prompt(messages[:-1])) + len(self.target(messages[-1]["content"]))

    def reply(self, messages) -> str:
        if self.name == "hearthlm":
            return self.model.chat(messages, max_new_tokens=self.max_new_tokens, temperature=0).strip()
        import torch

        ids = torch.tensor([self.prompt(messages)])
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=self.max_new_tokens, eos_token_id=self.tok.eos_token_id,
                                      pad_token_id=self.tok.pad_token_id)
        return self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    def checks(self, rows, batch: int = 16) -> list:
        """Teacher-forced verdicts of rows, `batch` conversations per forward pass."""
        import numpy as np

        seqs = [(self.prompt(r["messages"]), self.target(r["answer"])) for r in rows]
        if self.name == "hearthlm":
            return hearthlm_verdicts(self.model, seqs, batch)
        import torch

        out = []
        for start in range(0, len(seqs), batch):
            chunk = seqs[start:start + batch]
            width = max(len(p) + len(t) for p, t in chunk)
            # right padding: causal attention keeps the pads out of every earlier position
            x = torch.tensor([p + t + [self.tok.pad_token_id] * (width - len(p) - len(t)) for p, t in chunk])
            with torch.no_grad():
                pred = self.model(input_ids=x).logits.argmax(-1).numpy()
            out += [bool((pred[i, len(p) - 1:len(p) + len(t) - 1] == np.array(t)).all())
                    for i, (p, t) in enumerate(chunk)]
        return out


def hearthlm_verdicts(model, seqs, batch: int = 16) -> list:
    """(prompt ids, target ids) pairs -> whether each target is the greedy continuation
    of its prompt under a hearthlm Model: `batch` sequences per forward (a SessionGroup),
    the logits of each target's positions only."""
    import numpy as np
    from hearthlm.session import SessionGroup

    n_ctx = model.args.max_position_embeddings
    group = SessionGroup(model, batch, n_ctx=n_ctx, max_tokens=batch * n_ctx, max_session_tokens=n_ctx,
                         max_logits=batch * n_ctx)
    out = []
    for start in range(0, len(seqs), batch):
        chunk = seqs[start:start + batch]
        for s in group.sessions:
            s.reset()
        logits = group.feed([(s, p + t) for s, (p, t) in zip(group.sessions, chunk)],
                            tails=[len(t) + 1 for _, t in chunk])
        row = 0
        for _, t in chunk:  # rows after the prompt's last token .. the target's last: keep all but the last
            out.append(bool((logits[row:row + len(t)].argmax(-1) == np.array(t)).all()))
            row += len(t) + 1
    return out


def load_rows(path: str):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate(engine: Engine, rows, label: str, show_errors: bool = True, teacher_forced: bool = False) -> list:
    """Per-row correctness; prints the per-task and total counts (and the wrong replies)."""
    t0 = time.time()
    per_task = defaultdict(lambda: [0, 0])
    errors, oks = [], []
    verdicts = engine.checks(rows) if teacher_forced else [None] * len(rows)
    for row, ok in zip(rows, verdicts):
        got = None if ok or (teacher_forced and not show_errors) else engine.reply(row["messages"])
        if not teacher_forced:
            ok = got == row["answer"]
        per_task[row["task"]][0] += ok
        per_task[row["task"]][1] += 1
        oks.append(ok)
        if not ok:
            errors.append((row["messages"][-1]["content"], row["answer"], got))
    if show_errors and errors:
        print(f"errors ({len(errors)}):")
        for q, want, got in errors:
            print(f"  {q!r}: expected {want!r}, got {got!r}")
    print("  " + "  ".join(f"{task} {ok}/{n}" for task, (ok, n) in per_task.items()))
    print(f"{label}: {sum(oks)}/{len(rows)} = {sum(oks) / len(rows):.4f}  [{time.time() - t0:.1f}s]", flush=True)
    return oks


def evaluate_all(model_dir: str, seed: int = 1234, engines=("transformers", "hearthlm"), max_new_tokens: int = 160,
                 sets=("first_tries", "heldout")):
    """Every set under every system-prompt choice and engine, plus multi-turn, teacher-
    forced (wrong replies listed for the default system prompt); then whether the
    engines agree row by row."""
    results = {}
    for name in engines:
        engine = Engine(name, model_dir, max_new_tokens)
        for set_name in sets:
            rows = load_rows(f"{model_dir}/{set_name}.jsonl")
            for sys_name, system in SYSTEMS.items():
                label = f"{set_name} system={sys_name}"
                results[name, label] = evaluate(engine, with_system(rows, system), f"{name} {label}",
                                                show_errors=sys_name == "default", teacher_forced=True)
            label = f"{set_name} multi-turn"
            results[name, label] = evaluate(engine, heldout_multiturn(rows, seed, n_tokens=engine.n_tokens),
                                            f"{name} {label}", show_errors=False, teacher_forced=True)
    if len(engines) == 2:
        labels = sorted({label for _, label in results})
        differ = [label for label in labels if results[engines[0], label] != results[engines[1], label]]
        print(f"{engines[0]} and {engines[1]} agree row by row on {len(labels) - len(differ)}/{len(labels)} "
              f"evaluations" + (f"; they differ on {differ}" if differ else ""), flush=True)
    return results


def evaluate_two_digit(engine: Engine, model_dir: str, seed: int = 1234) -> dict:
    """Every sum and difference of 0..99 in the main phrasing, then a seeded sample of
    two-digit ones under every phrasing (demo_corpus.phrasing_sample) with every system
    prompt of SYSTEMS and after 1-3 earlier turns of the first tries (default system
    prompt), teacher-forced; the first 40 wrong questions of each are listed."""
    results = {}
    sample = phrasing_sample(seed)
    sets = [("every pair", every_pair())] + [(f"phrasings system={name}", with_system(sample, system))
                                             for name, system in SYSTEMS.items()]
    sets.append(("phrasings multi-turn", heldout_multiturn(sample, seed, n_tokens=engine.n_tokens,
                                                           pool=load_rows(f"{model_dir}/first_tries.jsonl"))))
    for label, rows in sets:
        oks = evaluate(engine, rows, f"{engine.name} two-digit {label}", show_errors=False, teacher_forced=True)
        misses = [r["messages"][-1]["content"] for r, ok in zip(rows, oks) if not ok]
        if misses:
            print(f"  wrong ({len(misses)}): " + ", ".join(map(repr, misses[:40])), flush=True)
        results[label] = oks
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default="pylib/hearthlm/demo_model")
    ap.add_argument("--set", default="heldout", help="a .jsonl set of MODEL_DIR (heldout, first_tries) or a path")
    ap.add_argument("--engine", default="transformers", choices=["transformers", "hearthlm"])
    ap.add_argument("--dtype", default=None, help="hearthlm weight dtype (default: the checkpoint's)")
    ap.add_argument("--system", default=None, help='replace the system message ("none": drop it)')
    ap.add_argument("--multi-turn", action="store_true", help="prepend 1-3 earlier turns (other rows + answers)")
    ap.add_argument("--teacher-forced", action="store_true", help="one forward pass per question (same verdicts)")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the --multi-turn conversations")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--all", action="store_true", help="every set, system prompt and engine, teacher-forced")
    ap.add_argument("--quiet", action="store_true", help="do not list wrong answers")
    ap.add_argument("--two-digit", action="store_true",
                    help="every sum and difference of 0..99, and two-digit ones under every phrasing, system "
                         "prompt and after earlier turns (teacher-forced; with --all: under both engines)")
    args = ap.parse_args()
    if args.two_digit:
        engines = ("transformers", "hearthlm") if args.all else (args.engine,)
        results = [evaluate_two_digit(Engine(name, args.model_dir, args.max_new_tokens, args.dtype), args.model_dir,
                                      args.seed) for name in engines]
        if len(results) == 2:
            differ = [label for label in results[0] if results[0][label] != results[1][label]]
            print(f"{engines[0]} and {engines[1]} agree row by row on {len(results[0]) - len(differ)}/"
                  f"{len(results[0])} two-digit evaluations" + (f"; they differ on {differ}" if differ else ""))
        return 0
    if args.all:
        evaluate_all(args.model_dir, args.seed, max_new_tokens=args.max_new_tokens)
        return 0
    engine = Engine(args.engine, args.model_dir, args.max_new_tokens, args.dtype)
    path = args.set if args.set.endswith(".jsonl") else f"{args.model_dir}/{args.set}.jsonl"
    rows = with_system(load_rows(path), args.system)
    if args.multi_turn:
        rows = heldout_multiturn(rows, args.seed, n_tokens=engine.n_tokens)
    evaluate(engine, rows, f"{args.engine} {args.set} system={args.system or 'as in the file'}"
             + (" multi-turn" if args.multi_turn else ""), show_errors=not args.quiet,
             teacher_forced=args.teacher_forced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
