"""The `hearthlm` command: chat, generate, serve, bench, perplexity, quantize, pull, list, rm, info."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

from .cli_args import (DTYPE_HELP, DTYPES, REVISION_HELP, THREADS_HELP, ProgressLine, add_constraint_options,
                       add_mmap_option, add_sampling_options, add_speculative_options, constraint_options,
                       in_flags, load_for_text, positive_int, sampling_options, speculative_options,
                       thread_count, utf8_text)
from .formats import QUANTIZED


def cmd_info(args) -> int:
    from .cpu import cpu_info
    print(json.dumps(cpu_info(), indent=2))
    return 0


def cmd_generate(args) -> int:
    model = load_for_text(args)
    stream = model.generate(utf8_text(args.prompt, "--prompt"), max_new_tokens=args.max_tokens,
                            stop=args.stop or (), stream=True, truncate=args.truncate, **sampling_options(args),
                            **constraint_options(args, model), **speculative_options(args))
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


def check_bench_options(vs: list, plot) -> None:
    """What --vs and --plot need, checked before minutes of benchmarking."""
    from .bench_peers import PEERS
    from .errors import InvalidInputError
    unknown = [v for v in vs if v not in PEERS]
    if unknown:
        raise InvalidInputError(f"--vs: unknown engine {', '.join(unknown)} (known: {', '.join(PEERS)})")
    if plot and not os.path.isdir(os.path.dirname(os.path.abspath(plot))):
        raise InvalidInputError(f"--plot {plot}: no folder {os.path.dirname(os.path.abspath(plot))} to write it in")
    needs = [(f"--vs {v}", PEERS[v].requires) for v in vs] + ([("--plot", ("matplotlib",))] if plot else [])
    for what, modules in needs:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise InvalidInputError(f"{what} needs {' and '.join(missing)} (not installed): "
                                    f"pip install 'hearthlm[bench]'")


def context_list(text: str) -> list:
    """argparse type for --contexts and --parallel: comma-separated positive integers."""
    try:
        return [positive_int(c) for c in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


def bench_parallel(folder: str, args) -> int:
    from .bench_parallel import format_parallel, run_parallel
    from .model import load
    model = load(folder, dtype=args.dtype, n_threads=args.threads, mmap=args.mmap)
    report = run_parallel(model, args.parallel, reps=args.reps)
    print(json.dumps(report, indent=2) if args.json else format_parallel(report))
    return 0


def cmd_bench(args) -> int:
    from .bench import format_report, plot_sweep, run_bench, run_context_sweep
    from .shapes import random_model_folder
    if (args.model is None) == (args.shape is None):
        print("hearthlm bench: give a MODEL folder or --shape NAME", file=sys.stderr)
        return 2
    vs = [v.strip() for v in (args.vs or "").split(",") if v.strip()]
    check_bench_options(vs, args.plot)
    folder = args.model or random_model_folder(args.shape, args.dtype or "bf16",
                                               progress=ProgressLine(f"building the {args.shape} shape"))
    if args.parallel:
        return bench_parallel(folder, args)
    report = run_bench(folder, dtype=args.dtype, n_threads=args.threads, n_prompt=args.prompt,
                       n_gen=args.gen, reps=args.reps, vs=vs, mmap=args.mmap)
    if args.plot:
        report["context_sweep"] = run_context_sweep(folder, args.contexts, dtype=args.dtype,
                                                    n_threads=args.threads, vs=vs, mmap=args.mmap)
        plot_sweep(report["context_sweep"], args.plot)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def cmd_perplexity(args) -> int:
    from .errors import InvalidInputError
    from .model import load
    from .perplexity_eval import perplexity
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{args.file}: cannot read the text: {getattr(e, 'strerror', None) or e}") from None
    model = load_for_text(args)
    base = None
    if args.kl_base:
        base = load(args.kl_base, n_threads=args.threads, mmap=args.mmap)

    def progress(done: int, total: int) -> None:
        print(f"\rhearthlm: perplexity: chunk {done}/{total}", end="\n" if done == total else "",
              file=sys.stderr, flush=True)

    result = perplexity(model, text, n_ctx=args.ctx, base=base, max_chunks=args.chunks, progress=progress)
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"perplexity {result.perplexity:.4f} +/- {result.uncertainty:.5f} over {result.tokens} tokens "
          f"({result.chunks} chunks of {result.n_ctx})")
    if base is not None:
        print(f"base perplexity {result.base_perplexity:.4f}; KL divergence {result.kl_divergence:.6f} "
              f"+/- {result.kl_divergence_uncertainty:.6f} nats/token; "
              f"same top token {100 * result.same_top_token:.2f} %")
    return 0


def cmd_quantize(args) -> int:
    from .quant_writer import quantize
    t0 = time.perf_counter()
    dst = quantize(args.src, args.dst, dtype=args.dtype, head_dtype=args.head_dtype, n_threads=args.threads,
                   calibration=args.calibration, progress=ProgressLine(f"quantizing to {args.dtype}"))
    print(f"{dst}: {args.dtype} weights written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from .serve.command import run
    return run(args)


def parser() -> argparse.ArgumentParser:
    from . import chat_cli
    from .shapes import SHAPES

    from . import __version__

    p = argparse.ArgumentParser(prog="hearthlm", description="Fast CPU inference for Llama-family LLMs")
    p.add_argument("--version", action="version", version=f"hearthlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="CPU features and the kernel path in use")
    info.set_defaults(func=cmd_info)

    chat = sub.add_parser("chat", help="chat in the terminal (default model: the bundled demo)",
                          description="Chat with a model in the terminal (default: the bundled demo model).",
                          epilog=f"{chat_cli.HELP}\n\n{chat_cli.PIPED}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    chat_cli.add_arguments(chat)
    add_sampling_options(chat)
    add_constraint_options(chat)
    add_speculative_options(chat)
    chat.set_defaults(func=cmd_chat)

    gen = sub.add_parser("generate", help="continue a prompt, streaming the text")
    gen.add_argument("model", nargs="?", help="Hugging Face model folder or repo id (default: the bundled demo model)")
    gen.add_argument("--revision", help=REVISION_HELP)
    gen.add_argument("-p", "--prompt", required=True, help="the text to continue")
    gen.add_argument("--max-tokens", type=positive_int, default=64,
                     help="most tokens to generate (default: %(default)s)")
    gen.add_argument("--stop", action="append", help="stop string (repeatable)")
    gen.add_argument("--dtype", choices=DTYPES, help=DTYPE_HELP)
    gen.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    add_mmap_option(gen)
    gen.add_argument("--truncate", choices=["left"],
                     help="a prompt longer than the model's context: drop its oldest tokens "
                          "(default: refuse it)")
    gen.add_argument("--json", action="store_true",
                     help="print one JSON object: text, finish_reason, token counts, timings")
    add_sampling_options(gen)
    add_constraint_options(gen)
    add_speculative_options(gen)
    gen.set_defaults(func=cmd_generate)

    b = sub.add_parser("bench", help="prefill/decode speed, bandwidth, memory")
    b.add_argument("model", nargs="?", help="model folder (or use --shape)")
    b.add_argument("--shape", choices=sorted(SHAPES), help="random weights of a named shape, no download")
    b.add_argument("--dtype", choices=DTYPES,
                   help="with --shape: the dtype the random weights are written in (q8/q4: quantized as generated)")
    b.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    add_mmap_option(b)
    b.add_argument("--prompt", type=positive_int, default=512, help="prompt tokens (pp; default: %(default)s)")
    b.add_argument("--gen", type=positive_int, default=128, help="generated tokens (tg; default: %(default)s)")
    b.add_argument("--reps", type=positive_int, default=3, help="measured runs per engine (default: %(default)s)")
    b.add_argument("--vs", help="comma-separated engines to run side by side: torch, llama.cpp")
    b.add_argument("--plot", metavar="FILE.png", help="also plot decode tok/s against context length")
    b.add_argument("--contexts", type=context_list, default="128,256,512,1024,2048,4096",
                   help="context lengths for --plot (default: %(default)s)")
    b.add_argument("--parallel", metavar="N,N,...", type=context_list,
                   help="aggregate decode tok/s of N streams decoding together, e.g. 1,2,4,8")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=cmd_bench)

    ppl = sub.add_parser("perplexity", help="perplexity on a text file (llama.cpp's method), KL to a base model")
    ppl.add_argument("model", help="Hugging Face model folder or repo id")
    ppl.add_argument("--revision", help=REVISION_HELP)
    ppl.add_argument("file", help="UTF-8 text file, e.g. wikitext-2's wiki.test.raw")
    ppl.add_argument("--ctx", type=positive_int, default=512,
                     help="tokens per chunk; the second half of each is scored (default: %(default)s)")
    ppl.add_argument("--chunks", type=positive_int, help="score at most this many chunks (default: all)")
    ppl.add_argument("--kl-base", metavar="BASE_MODEL",
                     help="also score a base model (e.g. the unquantized folder): KL divergence, same top token")
    ppl.add_argument("--dtype", choices=DTYPES, help=DTYPE_HELP)
    ppl.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    add_mmap_option(ppl)
    ppl.add_argument("--json", action="store_true",
                     help='print one JSON object: {"perplexity": ..., "tokens": ..., ...}')
    ppl.set_defaults(func=cmd_perplexity)

    q = sub.add_parser("quantize", help="write a quantized copy of a model folder (loads zero-copy)")
    q.add_argument("src", help="Hugging Face model folder")
    q.add_argument("dst", help="new folder (must not exist or be empty)")
    q.add_argument("--dtype", choices=QUANTIZED, default="q4",
                   help="q4k / q5k: llama.cpp's Q4_K_M / Q5_K_M mix; q4: the embedding table and LM head q8 (default %(default)s)")
    q.add_argument("--head-dtype", choices=QUANTIZED,
                   help="embedding table and LM head (default: the dtype's mix)")
    q.add_argument("--calibration", metavar="FILE.txt",
                   help="text to measure input importance on (K-quants; needs torch and transformers)")
    q.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    q.set_defaults(func=cmd_quantize)

    from . import hub_cli
    hub_cli.add_parsers(sub)

    from .serve import command as serve_command
    srv = sub.add_parser("serve", help="OpenAI-compatible HTTP server (default model: the bundled demo)")
    serve_command.add_arguments(srv)
    srv.set_defaults(func=cmd_serve)
    return p


def main(argv=None) -> int:
    from .errors import HearthlmError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except HearthlmError as e:
        print(f"hearthlm: error: {in_flags(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
