"""The `hearthlm` command: chat, generate, bench, quantize, info."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .formats import FORMATS, QUANTIZED

DTYPES = list(FORMATS)


def cmd_info(args) -> int:
    from .cpu import cpu_info
    print(json.dumps(cpu_info(), indent=2))
    return 0


def cmd_generate(args) -> int:
    from .model import load
    model = load(args.model, dtype=args.dtype, n_threads=args.threads)
    stream = model.generate(args.prompt, max_new_tokens=args.max_tokens, stop=args.stop or (), stream=True,
                            **sampling_options(args))
    for piece in stream:
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    if args.json:
        print(json.dumps(stream.result.as_dict()))
    else:
        print()
    return 0


def cmd_chat(args) -> int:
    from .chat_cli import run
    return run(args, sampling_options(args))


SAMPLING_FLAGS = (  # (flag, SamplerConfig field, type, help)
    ("--temperature", "temperature", float, "0 = greedy"),
    ("--top-k", "top_k", int, "0 = off"),
    ("--top-p", "top_p", float, "1 = off"),
    ("--min-p", "min_p", float, "0 = off"),
    ("--repeat-penalty", "repeat_penalty", float, "1 = off"),
    ("--repeat-last-n", "repeat_last_n", int, "tokens the penalties look back over"),
    ("--presence-penalty", "presence_penalty", float, "0 = off"),
    ("--frequency-penalty", "frequency_penalty", float, "0 = off"),
    ("--seed", "seed", int, "same seed, same output"),
)


def add_sampling_options(p) -> None:
    g = p.add_argument_group("sampling (default: the model's generation_config.json, then "
                             "temperature 0.8, top-k 40, top-p 0.95, min-p 0.05)")
    for flag, dest, type_, help_ in SAMPLING_FLAGS:
        g.add_argument(flag, dest=dest, type=type_, help=help_)


def sampling_options(args) -> dict:
    return {dest: getattr(args, dest) for _, dest, _, _ in SAMPLING_FLAGS if getattr(args, dest) is not None}


def cmd_bench(args) -> int:
    from .bench import format_report, plot_sweep, run_bench, run_context_sweep
    from .shapes import random_model_folder
    if (args.model is None) == (args.shape is None):
        print("hearthlm bench: give a MODEL folder or --shape NAME", file=sys.stderr)
        return 2
    stored = args.dtype if args.dtype in ("f32", "bf16", "f16") else "bf16"  # q8/q4: quantized on load
    folder = args.model or random_model_folder(args.shape, stored)
    vs = [v.strip() for v in (args.vs or "").split(",") if v.strip()]
    report = run_bench(folder, dtype=args.dtype, n_threads=args.threads, n_prompt=args.prompt,
                       n_gen=args.gen, reps=args.reps, vs=vs)
    if args.plot:
        contexts = [int(c) for c in args.contexts.split(",")]
        report["context_sweep"] = run_context_sweep(folder, contexts, dtype=args.dtype,
                                                    n_threads=args.threads, vs=vs)
        plot_sweep(report["context_sweep"], args.plot)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def cmd_quantize(args) -> int:
    from .quant import quantize
    t0 = time.perf_counter()
    dst = quantize(args.src, args.dst, dtype=args.dtype, head_dtype=args.head_dtype, n_threads=args.threads,
                   calibration=args.calibration)
    print(f"{dst}: {args.dtype} weights written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from . import chat_cli
    from .errors import HearthlmError
    from .shapes import SHAPES

    p = argparse.ArgumentParser(prog="hearthlm", description="Fast CPU inference for Llama-family LLMs")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="CPU features and the kernel path in use")
    info.set_defaults(func=cmd_info)

    chat = sub.add_parser("chat", help="chat in the terminal (default model: the bundled demo)")
    chat_cli.add_arguments(chat)
    add_sampling_options(chat)
    chat.set_defaults(func=cmd_chat)

    gen = sub.add_parser("generate", help="continue a prompt, streaming the text")
    gen.add_argument("model", help="Hugging Face model folder")
    gen.add_argument("-p", "--prompt", required=True)
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.add_argument("--dtype", choices=DTYPES)
    gen.add_argument("--threads", type=int)
    gen.add_argument("--json", action="store_true",
                     help="print one JSON object: text, finish_reason, token counts, timings")
    add_sampling_options(gen)
    gen.set_defaults(func=cmd_generate)

    b = sub.add_parser("bench", help="prefill/decode speed, bandwidth, memory")
    b.add_argument("model", nargs="?", help="model folder (or use --shape)")
    b.add_argument("--shape", choices=sorted(SHAPES), help="random weights of a named shape, no download")
    b.add_argument("--dtype", choices=DTYPES, help="q8/q4 with --shape: bf16 weights quantized on load")
    b.add_argument("--threads", type=int)
    b.add_argument("--prompt", type=int, default=512, help="prompt tokens (pp)")
    b.add_argument("--gen", type=int, default=128, help="generated tokens (tg)")
    b.add_argument("--reps", type=int, default=3)
    b.add_argument("--vs", help="comma-separated engines to run side by side: torch, llama.cpp")
    b.add_argument("--plot", metavar="FILE.png", help="also plot decode tok/s against context length")
    b.add_argument("--contexts", default="128,256,512,1024,2048,4096",
                   help="context lengths for --plot (default: %(default)s)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    q = sub.add_parser("quantize", help="write a quantized copy of a model folder (loads zero-copy)")
    q.add_argument("src", help="Hugging Face model folder")
    q.add_argument("dst", help="new folder (must not exist or be empty)")
    q.add_argument("--dtype", choices=QUANTIZED, default="q4",
                   help="q4k: llama.cpp's Q4_K_M mix; q4: the embedding table and LM head q8 (default %(default)s)")
    q.add_argument("--head-dtype", choices=QUANTIZED,
                   help="embedding table and LM head (default: the dtype's mix)")
    q.add_argument("--calibration", metavar="FILE.txt",
                   help="text to measure input importance on (K-quants; needs torch and transformers)")
    q.add_argument("--threads", type=int)
    q.set_defaults(func=cmd_quantize)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except HearthlmError as e:
        print(f"hearthlm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
