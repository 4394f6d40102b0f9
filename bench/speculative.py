"""Decode tokens/s: plain vs prompt lookup vs a draft model, interleaved, medians, with
acceptance rates, on input-grounded tasks (repeat a given passage; repeat it with a word
replaced) and on free text (greedy, and sampled at temperature 1 with the filters off,
where drafts are rejected most).

    python bench/speculative.py                       # the bundled demo model
    python bench/speculative.py MODEL --draft SMALL   # any folder; the draft shares its tokenizer
    python bench/speculative.py --shape tinyllama-1.1b --dtype q4 --tokens 64

With no --draft the draft model is MODEL itself loaded as --draft-dtype (q4): on random
weights that is the only draft that agrees at all. A folder without a tokenizer (or
--shape) gets token ids: the copy prompt is a random passage followed by its first
half ("repeat" it), the free prompt random ids. Greedy by default, so every engine must
produce the same tokens; the table says whether they did (sampled, prompt lookup gives
the same tokens too: its drafts are checked by the sampler's own draw)."""
import argparse
import json
import statistics

import numpy as np

import hearthlm
from hearthlm.chat_template import ChatTemplate
from hearthlm.errors import HearthlmError
from hearthlm.shapes import random_model_folder

PASSAGE = ("The lighthouse keeper climbed the one hundred and twelve steps every evening at dusk. "
           "He cleaned the great lens, trimmed the wick, and wrote the weather in a small blue book: "
           "wind from the west, light rain, two fishing boats returning before dark.")
FREE = "Write a short story about a fox who learns to sail."


def prompts(model, room: int, passage: str) -> dict:
    """task -> prompt token ids, each at most `room` tokens: "copy" repeats the passage,
    "edit" repeats it with one word replaced, "free" is text not in the prompt."""
    if model.tokenizer is None:
        rng = np.random.default_rng(0)
        passage = rng.integers(0, model.vocab_size, room * 2 // 3).tolist()
        return {"copy": passage + passage[:room // 3], "free": rng.integers(0, model.vocab_size, room).tolist()}
    try:
        template = ChatTemplate.for_model(model)
        encode = lambda text: template.encode(model.tokenizer, [{"role": "user", "content": text}])
    except HearthlmError:
        encode = model.tokenizer.encode
    words = passage.split()
    old = max(words, key=lambda w: (words.count(w), len(w) * w.isalpha()))  # a word to edit
    asks = {"copy": lambda text: "Repeat after me: " + text,
            "edit": lambda text: f"Replace {old} with {'cat' if old != 'cat' else 'dog'}: " + text}
    out = {}
    for task, ask in asks.items():
        n = len(words)
        while len(encode(ask(" ".join(words[:n])))) > room and n > 4:
            n -= 1
        out[task] = encode(ask(" ".join(words[:n])))
    out["free"] = encode(FREE)[:room]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="model folder (default: the bundled demo model)")
    p.add_argument("--shape", help="random weights of a named shape instead (hearthlm.shapes)")
    p.add_argument("--dtype", help="weight type (default: the checkpoint's; with --shape: bf16)")
    p.add_argument("--draft", help="draft model folder (default: MODEL at --draft-dtype)")
    p.add_argument("--draft-dtype", default="q4", help="dtype of the draft model (default: %(default)s)")
    p.add_argument("--no-draft", action="store_true", help="plain and prompt lookup only")
    p.add_argument("--tokens", type=int, default=128, help="tokens to generate (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="interleaved runs per engine (default: %(default)s)")
    p.add_argument("--threads", type=int, help="threads (default: one per physical core)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--passage", default=PASSAGE, help="the text to copy and edit (default: a lighthouse "
                   "keeper's evening, cut to fit the context)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    if args.shape:
        folder = random_model_folder(args.shape, args.dtype or "bf16")
        dtype = None if args.dtype in (None, "bf16", "f32", "f16") else args.dtype
    else:
        folder = args.model or hearthlm.demo_model_path()
        dtype = args.dtype
    model = hearthlm.load(folder, dtype=dtype, n_threads=args.threads)
    engines = {"plain": {}, "prompt-lookup": {"speculative": "prompt-lookup"}}
    if not args.no_draft:
        draft = hearthlm.load(args.draft or folder, dtype=None if args.draft else args.draft_dtype,
                              n_threads=args.threads)
        engines[f"draft ({draft.dtype})"] = {"draft_model": draft}
    room = min(model.args.max_position_embeddings, 4096) - args.tokens
    if room < 16:
        p.error(f"--tokens {args.tokens} leaves no room for a prompt in the context of "
                f"{model.args.max_position_embeddings}")
    texts = prompts(model, min(room, 512), args.passage)
    tasks = [(name, ids, dict(temperature=args.temperature, seed=0)) for name, ids in texts.items()] \
        + [("free, sampled", texts["free"], dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=0))]
    rows = []
    for task, prompt, sampling in tasks:
        runs = {name: [] for name in engines}
        for name, option in engines.items():  # warm-up
            model.generate(prompt, max_new_tokens=8, **sampling, **option)
        for _ in range(args.reps):
            for name, option in engines.items():
                runs[name].append(model.generate(prompt, max_new_tokens=args.tokens, return_result=True,
                                                 **sampling, **option))
        plain_speed = statistics.median(g.decode_tokens_per_second for g in runs["plain"])
        for name, gs in runs.items():
            speed = statistics.median(g.decode_tokens_per_second for g in gs)
            drafted, accepted = sum(g.drafted_tokens for g in gs), sum(g.accepted_tokens for g in gs)
            rows.append(dict(task=task, engine=name, prompt_tokens=len(prompt),
                             tokens=statistics.median(g.completion_tokens for g in gs),
                             tok_s=round(speed, 2), vs_plain=round(speed / plain_speed, 3),
                             drafted_per_run=drafted / len(gs),
                             acceptance=round(accepted / drafted, 3) if drafted else None,
                             same_tokens=all(g.token_ids == p.token_ids for g, p in zip(gs, runs["plain"]))))
    load = open("/proc/loadavg").read().split()[:3]
    report = dict(model=folder, dtype=model.dtype, threads=model.n_threads, reps=args.reps,
                  load_average=" ".join(load), rows=rows)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{folder} ({model.dtype}, {model.n_threads} threads), {args.reps} interleaved runs, "
          f"load average {report['load_average']}")
    print("| task | engine | prompt | tokens | tok/s (median) | vs plain | drafted/run | accepted | same tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{100 * r['acceptance']:.0f} %"
        print(f"| {r['task']} | {r['engine']} | {r['prompt_tokens']} | {r['tokens']:g} | {r['tok_s']:.1f} | "
              f"{r['vs_plain']:.2f}x | {r['drafted_per_run']:.1f} | {acc} | {'yes' if r['same_tokens'] else 'NO'} |")


if __name__ == "__main__":
    main()
