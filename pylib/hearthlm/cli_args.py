"""What the command line's commands share: argument types and help texts, the sampling
and constraint flags, a progress line for load() and quantize(), and library errors
spoken in flags (the API names parameters, the CLI names the flags that set them)."""
from __future__ import annotations

import argparse
import os
import re
import sys

from .formats import FORMATS

DTYPES = list(FORMATS)
THREADS_HELP = "threads for the kernels (default: one per physical core; at most the CPUs available)"
DTYPE_HELP = ("weight type the kernels read; others are converted or quantized on load "
              "(default: the checkpoint's)")
REVISION_HELP = "with a Hugging Face repo id: branch, tag or commit (default: main; also REPO@REVISION)"
MMAP_HELP = ("--mmap: use the weights from the file's memory map (loads lazily, shares the page cache "
             "with other processes); --no-mmap: copy them into huge-page memory (decode reads them faster); "
             "default: copy if that takes at most half of the available memory")
PROGRESS_MIN_BYTES = 256 << 20  # draw a progress line when quantizing more than this


class ProgressLine:
    """A progress(done, total) callback for load() and quantize(), for jobs large enough
    to take a while: on a terminal one self-overwriting line on stderr, redrawn when the
    percentage changes; into a file or pipe (a log) one line per tenth of the job."""

    def __init__(self, what: str):
        self.what = what
        self.shown = None  # the last percentage (terminal) or tenth (log) drawn

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_MIN_BYTES:
            return
        percent = 100 * done // total
        terminal = sys.stderr.isatty()
        step = percent if terminal else percent // 10
        if step == self.shown:
            return
        self.shown = step
        text = f"hearthlm: {self.what}: {percent:3d}% ({done / 1e9:.2f} / {total / 1e9:.2f} GB)"
        if terminal:
            print("\r" + text, end="\n" if done >= total else "", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def add_mmap_option(p) -> None:
    p.add_argument("--mmap", action=argparse.BooleanOptionalAction, help=MMAP_HELP)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def thread_count(text: str) -> int:
    """argparse type for --threads: refused above the CPUs this process may run on,
    where every barrier of a forward pass would wait for a thread that is not running."""
    value, cpus = positive_int(text), usable_cpus()
    if value > cpus:
        raise argparse.ArgumentTypeError(
            f"{value} threads, but this process may run on {cpus} CPUs; use at most {cpus} "
            f"(default: one per physical core)")
    return value


# API parameter -> CLI flag, for library errors the CLI prints. Names with an underscore
# are mapped wherever they appear; plain words only before ':' or '=' (as in "dtype: ...").
FLAG_FOR = {"n_threads": "--threads", "n_ctx": "--ctx", "max_new_tokens": "--max-tokens",
            "head_dtype": "--head-dtype", "template": "--template", "dtype": "--dtype",
            "truncate": "--truncate", "stop": "--stop", "prompt": "--prompt", "max_chunks": "--chunks",
            "base": "--kl-base", "vs": "--vs",
            "calibration": "--calibration", "draft_model": "--draft", "speculative": "--lookup",
            "revision": "--revision"}


def in_flags(message: str) -> str:
    """A library error message, with the API's parameter names replaced by the CLI's
    flags: "n_ctx=300" -> "--ctx 300", 'truncate="left"' -> "--truncate left"."""
    def flag(m):
        name, colon, equals, value = m.groups()
        if equals:
            return f"{FLAG_FOR[name]} {value or ''}"
        if colon or "_" in name:
            return FLAG_FOR[name] + (colon or "")
        return m.group(0)
    names = "|".join(map(re.escape, FLAG_FOR))
    return re.sub(rf"(?<![\w./-])({names})\b(?:(:)|(=)\s*(?:[\"']([^\"']*)[\"'])?)?", flag, message)


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
FLAG_FOR.update({dest: flag for flag, dest, _, _ in SAMPLING_FLAGS})


def add_sampling_options(p) -> None:
    g = p.add_argument_group("sampling (default: the model's generation_config.json, then "
                             "temperature 0.8, top-k 40, top-p 0.95, min-p 0.05)")
    for flag, dest, type_, help_ in SAMPLING_FLAGS:
        g.add_argument(flag, dest=dest, type=type_, help=help_)


def sampling_options(args) -> dict:
    return {dest: getattr(args, dest) for _, dest, _, _ in SAMPLING_FLAGS if getattr(args, dest) is not None}


def load_for_text(args):
    """args.model (default: the bundled demo) loaded for the text commands, which need
    its tokenizer."""
    from . import hub
    from .demo import demo_model_path
    from .errors import ModelFormatError
    from .model import load
    path, revision = args.model or demo_model_path(), getattr(args, "revision", None)
    if hub.is_repo_ref(path):  # resolved here to draw the download's progress bars
        from tqdm.auto import tqdm
        path, revision = hub.resolve(path, revision, tqdm_class=tqdm), None
    model = load(path, dtype=args.dtype, n_threads=args.threads, revision=revision, mmap=args.mmap,
                 progress=ProgressLine(f"loading {args.dtype} weights" if args.dtype else "loading weights"))
    if model.tokenizer is None:
        raise ModelFormatError(f"{model.path}: no tokenizer.json, so the hearthlm command cannot turn text "
                               f"into tokens (from Python, model.generate() takes token ids)")
    return model


def utf8_text(text: str, what: str) -> str:
    """Text from the command line or a pipe, decoded with surrogateescape: refuse bytes
    that were not UTF-8 instead of letting the tokenizer choke on them."""
    from .errors import InvalidInputError
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(f"{what}: not valid UTF-8 (byte {ord(text[e.start]) - 0xDC00:#04x} at character "
                                f"{e.start}); hearthlm reads text as UTF-8") from None
    return text


CONSTRAINT_FLAGS = (  # (flag, generate() option, help)
    ("--json-schema", "json_schema", "the output is JSON valid against the JSON schema in FILE"),
    ("--grammar", "grammar", "the output follows the Lark or llama.cpp GBNF grammar in FILE"),
)


def add_constraint_options(p) -> None:
    g = p.add_argument_group('constrained output (pip install "hearthlm[structured]")')
    for flag, dest, help_ in CONSTRAINT_FLAGS:
        g.add_argument(flag, dest=dest, metavar="FILE", help=help_)


def constraint_options(args, model) -> dict:
    """generate() options from the constraint flags' files, checked now so that an
    error names the flag and the file."""
    from .constraints import Constraint
    from .errors import InvalidInputError
    options = {}
    for flag, dest, _ in CONSTRAINT_FLAGS:
        path = getattr(args, dest)
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                options[dest] = f.read()
            Constraint.from_options(model, **{dest: options[dest]})
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"{flag} {path}: cannot read: {e}") from None
        except InvalidInputError as e:
            raise InvalidInputError(f"{flag} {path}: {e}") from None
    return options


def add_speculative_options(p) -> None:
    g = p.add_argument_group("speculative decoding (the same output; faster where the reply repeats its input)")
    g.add_argument("--lookup", action="store_true",
                   help="draft tokens by prompt lookup: what followed the last few tokens earlier in the text")
    g.add_argument("--draft", metavar="MODEL", help="draft tokens with a small model folder of the same tokenizer")


def speculative_options(args) -> dict:
    """generate() / Speculation options from --lookup and --draft (the draft model loaded
    here, with --threads)."""
    from .errors import InvalidInputError
    from .model import load
    if args.lookup and args.draft:
        raise InvalidInputError("--lookup, --draft: give one of them")
    if args.draft:
        return {"draft_model": load(args.draft, n_threads=args.threads, mmap=args.mmap)}
    return {"speculative": "prompt-lookup"} if args.lookup else {}
