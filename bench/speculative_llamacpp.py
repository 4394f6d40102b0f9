"""Prompt lookup and draft-model decoding against llama.cpp's llama-lookup and
llama-speculative, on GGUFs of the same weights, interleaved, medians.

    python bench/speculative_llamacpp.py --shape smollm2-135m --threads 1
    python bench/speculative_llamacpp.py FOLDER --dtype q8 --draft-dtype q4 --bin /work/llama.cpp-build/bin

FOLDER: a plain Llama folder (hearthlm.gguf_export writes its GGUFs, with a synthetic
byte-level vocabulary when it has no tokenizer). The prompt is a passage of random
letters followed by its first half ("repeat it"), tokenized by llama-tokenize, and
hearthlm gets the same ids, so both engines decode greedily from the same tokens.
Needs the `gguf` package (the `test` or `bench` extra)."""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import tempfile

import hearthlm
from hearthlm.gguf_export import export_gguf
from hearthlm.shapes import random_model_folder


def llama(binary: str, gguf: str, prompt_file: str, args, extra: list) -> tuple:
    """-> (decode tok/s, accepted, drafted) from the tool's log."""
    log = subprocess.run([binary, "-m", gguf, "-f", prompt_file, "-n", str(args.tokens), "-t", str(args.threads),
                          "--temp", "0", "-c", "2048", *extra], capture_output=True, text=True, timeout=900).stderr
    speed = re.search(r"decoded\s+\d+ tokens in\s+[\d.]+ seconds, speed:\s+([\d.]+)", log)
    if speed is None:
        raise SystemExit(f"{binary}: no speed in its log:\n{log[-2000:]}")
    counts = [re.search(rf"{k}\s+=\s+(\d+)", log) for k in ("n_accept", "n_drafted")]
    return (float(speed.group(1)), *[int(c.group(1)) if c else 0 for c in counts])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="plain Llama model folder")
    p.add_argument("--shape", help="random weights of a named shape instead")
    p.add_argument("--dtype", default="q4", choices=["f32", "bf16", "q8", "q4"], help="target weights (%(default)s)")
    p.add_argument("--draft-dtype", default="q4", choices=["f32", "bf16", "q8", "q4"],
                   help="the draft: the same weights in this type (default: %(default)s)")
    p.add_argument("--bin", default="/work/llama.cpp-build/bin", help="llama.cpp's binaries")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--passage", type=int, default=240, help="characters of the passage (%(default)s)")
    args = p.parse_args()
    folder = args.model or random_model_folder(args.shape or "smollm2-135m", "bf16")
    target, draft = export_gguf(folder, args.dtype), export_gguf(folder, args.draft_dtype)
    rng = random.Random(0)
    passage = "".join(rng.choice("abcdefghij ") for _ in range(args.passage))
    prompt_file = os.path.join(tempfile.mkdtemp(), "prompt.txt")
    with open(prompt_file, "w") as f:
        f.write(passage + passage[:len(passage) // 2])
    out = subprocess.run([os.path.join(args.bin, "llama-tokenize"), "-m", target, "-f", prompt_file, "--ids",
                          "--log-disable"], capture_output=True, text=True, timeout=300).stdout
    ids = json.loads(out.strip().splitlines()[-1])
    model = hearthlm.load(folder, dtype=args.dtype, n_threads=args.threads)
    small = hearthlm.load(folder, dtype=args.draft_dtype, n_threads=args.threads)

    def ours(**option):
        g = model.generate(ids, max_new_tokens=args.tokens, temperature=0, return_result=True, **option)
        return g.decode_tokens_per_second, g.accepted_tokens, g.drafted_tokens

    lookup, spec = os.path.join(args.bin, "llama-lookup"), os.path.join(args.bin, "llama-speculative")
    engines = {
        "hearthlm plain": ours,
        "hearthlm prompt lookup": lambda: ours(speculative="prompt-lookup"),
        f"hearthlm draft {args.draft_dtype}": lambda: ours(draft_model=small),
        "llama-lookup, no drafts": lambda: llama(lookup, target, prompt_file, args, ["--spec-draft-n-max", "0"]),
        "llama-lookup": lambda: llama(lookup, target, prompt_file, args, ["--spec-draft-n-max", "10"]),
        f"llama-speculative, draft {args.draft_dtype}": lambda: llama(spec, target, prompt_file, args,
                                                                       ["-md", draft, "--spec-draft-n-max", "10"]),
    }
    runs = {name: [] for name in engines}
    for _ in range(args.reps):
        for name, run in engines.items():
            runs[name].append(run())
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"{folder}: {args.dtype} target, {len(ids)} prompt tokens, {args.tokens} generated, greedy, "
          f"{args.threads} thread(s), {args.reps} interleaved runs, load average {load}")
    print("| engine | decode tok/s (median) | runs | accepted / drafted (last run) |")
    print("|---|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {statistics.median(r[0] for r in rs):.1f} | {', '.join(f'{r[0]:.1f}' for r in rs)} | "
              f"{rs[-1][1]} / {rs[-1][2]} |")


if __name__ == "__main__":
    main()
