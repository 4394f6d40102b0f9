"""`hearthlm pull`, `hearthlm list` and `hearthlm rm`: the Hugging Face cache from the
command line (hearthlm.hub does the work)."""
from __future__ import annotations

import json
import sys

from . import hub
from .errors import HubError


def size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def cmd_pull(args) -> int:
    from tqdm.auto import tqdm
    print(hub.resolve(args.repo, args.revision, tqdm_class=tqdm))
    return 0


def cmd_list(args) -> int:
    models = hub.cached_models()
    if args.json:
        print(json.dumps([vars(m) for m in models], indent=2))
        return 0
    if not models:
        print(f"no models in the Hugging Face cache ({hub.cache_path()})", file=sys.stderr)
        return 0
    rows = [(m.repo_id, size_text(m.size_on_disk), ",".join(m.dtypes) or "?", ",".join(m.refs) or
             ",".join(r[:8] for r in m.revisions)) for m in models]
    widths = [max(len(r[i]) for r in rows + [("REPO", "SIZE", "DTYPES", "REFS")]) for i in range(4)]
    for row in [("REPO", "SIZE", "DTYPES", "REFS")] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def cmd_rm(args) -> int:
    found = [m for m in hub.cached_models() if m.repo_id == args.repo]
    if not found:
        raise HubError(f"{args.repo}: not in the Hugging Face cache ({hub.cache_path()})")
    what = f"{args.repo} ({size_text(found[0].size_on_disk)}, {found[0].path})"
    if not args.yes:
        if not sys.stdin.isatty():
            raise HubError(f"{args.repo}: not removed: confirm with --yes (stdin is not a terminal to ask)")
        if input(f"remove {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed", file=sys.stderr)
            return 1
    hub.remove(args.repo)
    print(f"removed {what}", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    pull = sub.add_parser("pull", help="download a Hugging Face model into the cache (only the files it needs)",
                          description="Download a model from the Hugging Face Hub into its cache (HF_HOME): "
                                      "config, tokenizer, generation config and the safetensors weights, or "
                                      "one GGUF file. Prints the local path.")
    pull.add_argument("repo", help="org/name, org/name@revision, or org/name:FILE.gguf / org/name:Q4_K_M")
    pull.add_argument("--revision", help="branch, tag or commit (default: main)")
    pull.set_defaults(func=cmd_pull)

    ls = sub.add_parser("list", help="models in the Hugging Face cache: sizes and dtypes")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.set_defaults(func=cmd_list)

    rm = sub.add_parser("rm", help="remove one model from the Hugging Face cache")
    rm.add_argument("repo", help="org/name, as `hearthlm list` shows it")
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=cmd_rm)
