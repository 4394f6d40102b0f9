"""`hearthlm serve [MODEL]`: load a model (the bundled demo when none) and serve
OpenAI's API on 127.0.0.1 (or --host) with uvicorn."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from ..cli import DTYPES
from ..cli_args import add_mmap_option, add_speculative_options, speculative_options

API_KEY_ENV = "HEARTHLM_API_KEY"
GRACE_SECONDS = 10  # on Ctrl-C / SIGTERM, streams still open after this are cut


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="Hugging Face model folder (default: the bundled demo model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})")
    p.add_argument("--parallel", type=_positive,
                   help="slots: sequences decoded together (default: up to 8, as memory allows)")
    p.add_argument("--ctx", type=_positive, help="context tokens per slot (default: the model's, at most 4096)")
    p.add_argument("--queue", type=int, help="requests waiting for a slot before 429 (default: 4 x parallel)")
    p.add_argument("--max-tokens", type=_positive, help="largest max_tokens a request may ask (default: --ctx)")
    p.add_argument("--max-body", type=_positive, default=1 << 20, help="largest request body in bytes "
                   "(default: %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, help="convert or quantize the weights on load")
    p.add_argument("--kv-dtype", choices=["f32", "f16", "bf16", "q8"], default="f32", help="KV cache storage")
    p.add_argument("--threads", type=int, help="kernel threads (default: physical cores - 1, at least 1: "
                                               "the HTTP side keeps a core)")
    add_mmap_option(p)
    p.add_argument("--template", help="chat template: a built-in name or a .jinja file (default: the model's)")
    p.add_argument("--model-name", help="the model id clients send and /v1/models lists "
                                        "(default: the folder's name)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: %(default)s)")
    add_speculative_options(p)


def run(args) -> int:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        print(f"hearthlm serve needs the serve extra: pip install \"hearthlm[serve]\" (missing {e.name})",
              file=sys.stderr)
        return 1
    from ..cpu import physical_cores
    from ..demo import demo_model_path
    from ..model import load

    path = args.model or demo_model_path()
    name = args.model_name or ("hearthlm-demo" if args.model is None else None)
    if not _loopback(args.host) and not args.api_key:
        print(f"hearthlm serve: warning: listening on {args.host} without --api-key: anyone who can reach "
              "this port can use the model", file=sys.stderr)
    failures = []

    def load_failed(e: Exception) -> None:
        failures.append(e)
        print(f"hearthlm: error: {e}", file=sys.stderr)
        server.should_exit = True

    args.threads = args.threads or max(1, physical_cores() - 1)
    app = create_app(lambda: load(path, dtype=args.dtype, n_threads=args.threads, mmap=args.mmap),
                     model_name=name, parallel=args.parallel, n_ctx=args.ctx, max_queue=args.queue, api_key=args.api_key,
                     max_body_bytes=args.max_body, max_tokens=args.max_tokens, kv_dtype=args.kv_dtype,
                     template=args.template, speculation=lambda: speculative_options(args),
                     on_load_error=load_failed)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                           timeout_graceful_shutdown=GRACE_SECONDS))
    print(f"hearthlm serve: loading {path}; OpenAI API at http://{args.host}:{args.port}/v1", file=sys.stderr)
    server.run()
    return 1 if failures else 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
