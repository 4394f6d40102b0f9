"""`hearthlm chat [MODEL]`: an interactive chat in the terminal.

With no MODEL it opens the bundled demo model. The conversation lives in one Session,
so a turn prefills only its new tokens, and it survives running past --ctx (context
shift). Replies stream as they are generated. Ctrl-C stops the current reply (what was
said so far stays in the conversation) and returns to the prompt; Ctrl-D or /quit
exits. With stdin not a terminal, each line is one message, only the replies are
printed (one after another, each ending in a newline), and EOF ends the chat.
"""
from __future__ import annotations

import resource
import signal
import sys
import time

from .cli_args import (DTYPE_HELP, DTYPES, REVISION_HELP, THREADS_HELP, add_mmap_option, constraint_options,
                       in_flags, load_for_text, positive_int, speculative_options, thread_count, utf8_text)
from .errors import HearthlmError

PROMPT = ">>> "
HELP = """commands:
  /help            this help
  /reset           forget the conversation (the system message stays)
  /system TEXT     set the system message (empty: remove it)
  /stats           speed of the last reply, context used, memory
  /save FILE       write the conversation's messages as JSON
  /load FILE       continue a conversation saved with /save
  /quit            exit (or Ctrl-D); Ctrl-C stops a reply"""
PIPED = """piped mode: with stdin not a terminal, each line is one message (or /command) and only
the replies are printed, one line each; EOF ends the chat. Example:
  echo "What is 12 plus 7?" | hearthlm chat"""


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="Hugging Face model folder or repo id (default: the bundled demo model)")
    p.add_argument("--revision", help=REVISION_HELP)
    p.add_argument("--dtype", choices=DTYPES, help=DTYPE_HELP)
    p.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    add_mmap_option(p)
    p.add_argument("--ctx", type=positive_int, help="context size in tokens (default: the model's, at most 4096)")
    p.add_argument("--system", help="system message")
    p.add_argument("--max-tokens", type=positive_int, help="longest reply in tokens (default: until end of turn)")
    p.add_argument("--template", help="chat template: a built-in name (chatml, llama3, llama2, mistral, "
                                      "zephyr, gemma) or a .jinja file; default: the model's own")


def run(args, sampling: dict) -> int:
    from .chat_template import ChatTemplate
    from .conversation import Conversation
    from .demo import SKILLS, demo_model_path, is_demo
    from .generation import make_sampler
    from .speculative import Speculation

    status(f"loading {args.model or demo_model_path()} ...")
    t0 = time.perf_counter()
    model = load_for_text(args)
    if args.system is not None:
        utf8_text(args.system, "--system")
    conv = Conversation(model, ChatTemplate.for_model(model, args.template), make_sampler(model, sampling),
                        n_ctx=args.ctx, system=args.system, max_new_tokens=args.max_tokens,
                        constraint=constraint_options(args, model),
                        speculation=Speculation.from_options(model, **speculative_options(args)))
    status(f"loaded in {time.perf_counter() - t0:.2f} s: {model.args.architecture}, "
           f"{model.dtype}, {model.n_threads} threads, context {conv.session.n_ctx} tokens")
    interactive = sys.stdin.isatty()
    if is_demo(model.path):
        status(SKILLS)
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad byte: an error for its line, not a crash
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        status("type a message; /help for commands, Ctrl-C stops a reply, Ctrl-D or /quit exits")
    number = 0
    while True:
        line = read_line(interactive)
        if line is None:
            break
        number += 1
        line = line.strip()
        if not line:
            continue
        try:
            utf8_text(line, f"input line {number}")
            if line.startswith("/"):
                if not command(conv, line):
                    break
            else:
                reply(conv, line)
        except HearthlmError as e:
            print(f"error: {in_flags(str(e))}", file=sys.stderr)
    return 0


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def read_line(interactive: bool):
    """The next message, or None at the end (Ctrl-D / EOF)."""
    if not interactive:
        line = sys.stdin.readline()
        return line if line else None
    while True:
        try:
            return input(PROMPT)
        except EOFError:
            print()
            return None
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line
            print()


def reply(conv, text: str) -> None:
    stream = conv.ask(text)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stream.cancel())
    try:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGINT, previous)
    if stream.result.finish_reason == "cancelled":
        sys.stdout.write(" [stopped]")
    sys.stdout.write("\n")
    sys.stdout.flush()


def command(conv, line: str) -> bool:
    """Run a /command; False means quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        print(HELP)
    elif name == "/reset":
        conv.reset()
        print("conversation cleared")
    elif name == "/system":
        conv.set_system(arg or None)
        print(f"system message {'set' if arg else 'removed'}")
    elif name == "/stats":
        print(stats(conv))
    elif name in ("/save", "/load") and not arg:
        print(f"usage: {name} FILE")
    elif name == "/save":
        conv.save(arg)
        print(f"saved {plural(len(conv.messages), 'message')} to {arg}")
    elif name == "/load":
        conv.load(arg)
        print(f"loaded {plural(len(conv.messages), 'message')} from {arg}")
    else:
        print(f"unknown command {name}; /help lists them")
    sys.stdout.flush()
    return True


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def stats(conv) -> str:
    s, model, g = conv.session, conv.model, conv.last
    mib = 1 << 20
    lines = []
    if g is None:
        lines.append("last reply: none yet")
    else:
        lines.append(f"last reply: {plural(g.completion_tokens, 'token')} ({g.finish_reason}), "
                     f"decode {g.decode_tokens_per_second:.1f} tok/s; prompt {plural(g.prompt_tokens, 'token')}, "
                     f"{g.prefilled_tokens} prefilled at {g.prefill_tokens_per_second:.1f} tok/s; "
                     f"first token after {g.time_to_first_token * 1000:.0f} ms")
        if g.drafted_tokens:
            lines.append(f"speculative: {g.accepted_tokens} of {plural(g.drafted_tokens, 'drafted token')} "
                         f"accepted ({100 * g.accepted_tokens / g.drafted_tokens:.0f} %)")
    shifted = ", older turns partly dropped (context shift)" if s.tokens != conv.fed else ""
    lines.append(f"context: {len(s.tokens)} / {plural(s.n_ctx, 'token')}{shifted}; "
                 f"{plural(len(conv.messages), 'message')}")
    lines.append(f"memory: session {s.memory_bytes / mib:.1f} MiB, weights "
                 f"{model.load_stats['mapped_bytes'] / mib:.1f} MiB mapped + "
                 f"{model.load_stats['copied_bytes'] / mib:.1f} MiB copied + "
                 f"{model.load_stats['converted_bytes'] / mib:.1f} MiB converted, "
                 f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return "\n".join(lines)
