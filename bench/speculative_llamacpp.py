"""Prompt lookup and draft-model decoding against llama.cpp's llama-lookup and
llama-speculative, on GGUFs of the same weights, interleaved, medians.

    python bench/speculative_llamacpp.py --shape smollm2-135m --threads 1
    python bench/speculative_llamacpp.py FOLDER --dtype q8 --draft-dtype q4 --bin /work/llama.cpp-build/bin

    python bench/speculative_llamacpp.py --chat "Repeat after me: ..."   # the demo model, f32

FOLDER: a plain Llama folder (hearthlm.gguf_export writes its GGUFs, with a synthetic
byte-level vocabulary when it has no tokenizer). The prompt is a passage of random
letters followed by its first half ("repeat it"), tokenized by llama-tokenize, and
hearthlm gets the same ids, so both engines decode greedily from the same tokens.

--chat TEXT: a chat model with its own tokenizer (default: the bundled demo model); the
prompt is TEXT as a user turn rendered by its chat template, the GGUF is written by
llama.cpp's own converter (--converter) with its tokenizer. The converter does not
know the demo tokenizer's pre-tokenizer (single digits, then GPT-2's byte-level split)
and is told to use Qwen2's, which splits such text the same way: the run stops unless
llama-tokenize gives exactly hearthlm's token ids for the prompt. Prompt lookup only
(a draft of the same tiny weights cannot pay). The converter needs torch and
`sentencepiece` (`pip install sentencepiece`: it falls back to the tokenizer.json path
only when sentencepiece is importable).
Needs the `gguf` package (the `test` or `bench` extra)."""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

import hearthlm
from hearthlm.gguf_export import export_gguf
from hearthlm.shapes import random_model_folder


def llama(binary: str, gguf: str, prompt_file: str, args, extra: list) -> tuple:
    """-> (decode tok/s, accepted, drafted, tokens decoded) from the tool's log."""
    log = subprocess.run([binary, "-m", gguf, "-f", prompt_file, "-n", str(args.tokens), "-t", str(args.threads),
                          "--temp", "0", "-c", "2048", *extra], capture_output=True, text=True, timeout=900).stderr
    speed = re.search(r"decoded\s+(\d+) tokens in\s+[\d.]+ seconds, speed:\s+([\d.]+)", log)
    if speed is None:
        raise SystemExit(f"{binary}: no speed in its log:\n{log[-2000:]}")
    counts = [re.search(rf"{k}\s+=\s+(\d+)", log) for k in ("n_accept", "n_drafted")]
    return (float(speed.group(2)), *[int(c.group(1)) if c else 0 for c in counts], int(speed.group(1)))


CONVERTER = "/work/llama.cpp-src/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"
# Runs llama.cpp's converter with its pre-tokenizer check answered "qwen2" (see --chat).
CONVERT = """import sys
sys.path.insert(0, sys.argv[1])
import convert_hf_to_gguf
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
convert_hf_to_gguf.main()
"""
CONVERTER_TYPES = {"f32": "f32", "bf16": "bf16", "q8": "q8_0"}


def convert_with_llamacpp(folder: str, dtype: str, converter: str) -> str:
    if dtype not in CONVERTER_TYPES:
        raise SystemExit(f"--dtype {dtype}: llama.cpp's converter writes {', '.join(CONVERTER_TYPES)}")
    out = os.path.join(tempfile.mkdtemp(), f"model-{dtype}.gguf")
    subprocess.run([sys.executable, "-c", CONVERT, os.path.dirname(converter), folder, "--outfile", out,
                    "--outtype", CONVERTER_TYPES[dtype]], check=True, capture_output=True, timeout=900)
    return out


def tokenize(binary_dir: str, gguf: str, prompt_file: str) -> list:
    out = subprocess.run([os.path.join(binary_dir, "llama-tokenize"), "-m", gguf, "-f", prompt_file, "--ids",
                          "--log-disable"], capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


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
    p.add_argument("--chat", metavar="TEXT", help="a user turn for a chat model's template (see above)")
    p.add_argument("--converter", default=CONVERTER, help="llama.cpp's convert_hf_to_gguf.py (--chat)")
    args = p.parse_args()
    prompt_file = os.path.join(tempfile.mkdtemp(), "prompt.txt")
    if args.chat:
        folder = args.model or hearthlm.demo_model_path()
        model = hearthlm.load(folder, dtype=args.dtype, n_threads=args.threads)
        target = convert_with_llamacpp(folder, args.dtype, args.converter)
        text = model.tokenizer.apply_chat_template([{"role": "user", "content": args.chat}],
                                                   add_generation_prompt=True, tokenize=False)
        with open(prompt_file, "w") as f:
            f.write(text)
        ids = tokenize(args.bin, target, prompt_file)
        if ids != model.tokenizer.encode(text):
            raise SystemExit("llama-tokenize and hearthlm tokenize the prompt differently: no comparison")
    else:
        folder = args.model or random_model_folder(args.shape or "smollm2-135m", "bf16")
        target, draft = export_gguf(folder, args.dtype), export_gguf(folder, args.draft_dtype)
        rng = random.Random(0)
        passage = "".join(rng.choice("abcdefghij ") for _ in range(args.passage))
        with open(prompt_file, "w") as f:
            f.write(passage + passage[:len(passage) // 2])
        ids = tokenize(args.bin, target, prompt_file)
        model = hearthlm.load(folder, dtype=args.dtype, n_threads=args.threads)
        small = hearthlm.load(folder, dtype=args.draft_dtype, n_threads=args.threads)

    def ours(**option):
        g = model.generate(ids, max_new_tokens=args.tokens, temperature=0, return_result=True, **option)
        return g.decode_tokens_per_second, g.accepted_tokens, g.drafted_tokens, g.completion_tokens

    lookup, spec = os.path.join(args.bin, "llama-lookup"), os.path.join(args.bin, "llama-speculative")
    engines = {
        "hearthlm plain": ours,
        "hearthlm prompt lookup": lambda: ours(speculative="prompt-lookup"),
        "llama-lookup, no drafts": lambda: llama(lookup, target, prompt_file, args, ["--spec-draft-n-max", "0"]),
        "llama-lookup": lambda: llama(lookup, target, prompt_file, args, ["--spec-draft-n-max", "10"]),
    }
    if not args.chat:
        engines[f"hearthlm draft {args.draft_dtype}"] = lambda: ours(draft_model=small)
        engines[f"llama-speculative, draft {args.draft_dtype}"] = lambda: llama(
            spec, target, prompt_file, args, ["-md", draft, "--spec-draft-n-max", "10"])
    runs = {name: [] for name in engines}
    for _ in range(args.reps):
        for name, run in engines.items():
            runs[name].append(run())
    load = " ".join(open("/proc/loadavg").read().split()[:3])
    print(f"{folder}: {args.dtype} target, {len(ids)} prompt tokens, at most {args.tokens} generated, greedy, "
          f"{args.threads} thread(s), {args.reps} interleaved runs, load average {load}")
    print("| engine | decode tok/s (median) | runs | accepted / drafted (last run) | tokens |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {statistics.median(r[0] for r in rs):.1f} | {', '.join(f'{r[0]:.1f}' for r in rs)} | "
              f"{rs[-1][1]} / {rs[-1][2]} | {rs[-1][3]} |")


if __name__ == "__main__":
    main()
