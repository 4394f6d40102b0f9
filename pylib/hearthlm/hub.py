"""Hugging Face repo ids -> local model files, through huggingface_hub and its cache.

A reference is `org/name`, optionally `@revision` (branch, tag or commit) and `:FILE`
(a .gguf file of the repo, or a quant tag such as Q4_K_M naming one):

    resolve("Qwen/Qwen3-0.6B")                 -> the snapshot folder (config, safetensors, tokenizer)
    resolve("Qwen/Qwen3-0.6B@main")
    resolve("org/name-GGUF:Q4_K_M")            -> the path of that one .gguf file

Only the files a model needs are downloaded (config.json, generation_config.json, the
tokenizer files, chat_template.jinja and the safetensors weights, or the one GGUF file).
The cache is huggingface_hub's (HF_HOME, HF_HUB_CACHE, or cache_dir=); offline
(HF_HUB_OFFLINE=1 or local_files_only=True) only the cache is read. Progress bars are off
unless a tqdm class is given (the CLI gives one). Failures are HubError naming the repo.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
from dataclasses import dataclass
from typing import Optional

from .errors import HubError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
MODEL_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "model*.safetensors",
               "model.safetensors.index.json"]


@dataclass(frozen=True)
class Ref:
    repo_id: str
    revision: Optional[str] = None
    file: Optional[str] = None  # a .gguf file name or a quant tag

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "") + (f":{self.file}" if self.file else "")


def parse(ref: str, revision: Optional[str] = None) -> Optional[Ref]:
    """`org/name[@rev][:FILE]` as a Ref, or None when `ref` does not look like a repo id."""
    m = re.fullmatch(r"([^@:]+)(?:@([^:]+))?(?::(.+))?", ref)
    if not m or not REPO_ID.fullmatch(m.group(1)):
        return None
    if m.group(2) and revision and m.group(2) != revision:
        raise HubError(f"{ref}: names revision {m.group(2)!r} but revision={revision!r} was given")
    return Ref(m.group(1), m.group(2) or revision, m.group(3))


def is_repo_ref(path: str) -> bool:
    """A string that is no local path but reads as a repo id."""
    return not os.path.exists(path) and parse(path) is not None


def _silent_tqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
    return Silent


def _offline(local_files_only: Optional[bool]) -> bool:
    from huggingface_hub import constants
    return bool(local_files_only) or constants.HF_HUB_OFFLINE


def cache_path(cache_dir: Optional[str] = None) -> str:
    """cache_dir, else huggingface_hub's cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants
    return os.fspath(cache_dir or constants.HF_HUB_CACHE)


def resolve(ref: str, revision: Optional[str] = None, local_files_only: Optional[bool] = None,
            cache_dir: Optional[str] = None, tqdm_class=None) -> str:
    """The local path of the model `ref` names (see the module docstring), downloaded
    into the cache first unless offline."""
    parsed = parse(ref, revision)
    if parsed is None:
        raise HubError(f"{ref}: not a Hugging Face repo id (expected org/name[@revision][:FILE])")
    offline = _offline(local_files_only)
    cache_dir = cache_path(cache_dir)
    tqdm_class = tqdm_class or _silent_tqdm()
    files = None if offline else _remote_files(parsed)
    if files is None:  # offline, or the Hub is unreachable: the cache alone
        offline = True
        files = _cached_files(parsed, cache_dir)
    if parsed.file or (files and not any(fnmatch.fnmatch(f, "model*.safetensors") for f in files)):
        name = _gguf_name(parsed, files)
        return _call(parsed, "hf_hub_download", offline, filename=name, cache_dir=cache_dir,
                     tqdm_class=tqdm_class)
    folder = _call(parsed, "snapshot_download", offline, allow_patterns=MODEL_FILES, cache_dir=cache_dir,
                   tqdm_class=tqdm_class)
    missing = [f for f in ("config.json",) if not os.path.isfile(os.path.join(folder, f))]
    if not any(os.path.isfile(os.path.join(folder, f)) for f in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        where = "the cache" if offline else "the repo"
        raise HubError(f"{parsed}: {where} has no {' and no '.join(missing)} ({folder})"
                       + ("; run `hearthlm pull` with network access" if offline else ""))
    return folder


def _remote_files(ref: Ref) -> Optional[list]:
    """The repo's file names from the Hub; None when the Hub cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    try:
        return HfApi().list_repo_files(ref.repo_id, revision=ref.revision)
    except GatedRepoError:
        raise HubError(f"{ref}: a gated repo: accept its terms on https://huggingface.co/{ref.repo_id} "
                       f"and log in (`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise HubError(f"{ref}: no such model repo on the Hugging Face Hub (or a private one: log in)") from None
    except RevisionNotFoundError:
        raise HubError(f"{ref}: the repo has no revision {ref.revision!r}") from None
    except (HfHubHTTPError, OSError, ValueError):  # no network: fall back to the cache
        return None
    except Exception as e:  # httpx's transport errors are not OSError
        if type(e).__module__.startswith(("httpx", "httpcore")):
            return None
        raise


def _cached_files(ref: Ref, cache_dir: Optional[str]) -> list:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        folder = snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        raise HubError(f"{ref}: not in the Hugging Face cache ({cache_dir}) and "
                       f"offline (HF_HUB_OFFLINE / local_files_only, or no network); run "
                       f"`hearthlm pull {ref}` with network access") from None
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _gguf_name(ref: Ref, files: list) -> str:
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    if ref.file and ref.file in files:
        return ref.file
    if ref.file:
        tag = ref.file.lower()
        match = [f for f in ggufs if re.search(rf"(^|[-_.]){re.escape(tag)}([-_.]|$)", os.path.basename(f).lower())]
        if len(match) == 1:
            return match[0]
        if match:
            raise HubError(f"{ref}: {ref.file!r} matches {len(match)} files ({', '.join(match)}); name one")
    if not ggufs:
        raise HubError(f"{ref}: the repo has neither model*.safetensors weights nor .gguf files")
    raise HubError(f"{ref}: give one of the repo's GGUF files as {ref.repo_id}:FILE "
                   f"({', '.join(ggufs[:12])}{', ...' if len(ggufs) > 12 else ''})")


def _call(ref: Ref, name: str, offline: bool, **kwargs) -> str:
    import huggingface_hub
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError)
    try:
        return getattr(huggingface_hub, name)(ref.repo_id, revision=ref.revision, local_files_only=offline,
                                              **kwargs)
    except GatedRepoError:
        raise HubError(f"{ref}: a gated repo: accept its terms on https://huggingface.co/{ref.repo_id} "
                       f"and log in (`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise HubError(f"{ref}: no such model repo on the Hugging Face Hub (or a private one: log in)") from None
    except (EntryNotFoundError, LocalEntryNotFoundError):
        raise HubError(f"{ref}: {kwargs.get('filename', 'the model files')} "
                       f"{'not in the cache' if offline else 'not in the repo'}") from None
    except (HfHubHTTPError, OSError) as e:
        raise HubError(f"{ref}: download failed: {e}") from None


@dataclass
class CachedModel:
    repo_id: str
    revisions: list       # commit hashes
    refs: list            # branch / tag names pointing at them
    size_on_disk: int
    dtypes: list          # the weights' dtypes (config.json's dtype, or the GGUF files' quant tags)
    path: str


def cached_models(cache_dir: Optional[str] = None) -> list:
    """The models in the cache, with sizes and weight dtypes (huggingface_hub's scan)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound
    try:
        info = scan_cache_dir(cache_path(cache_dir))
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        dtypes = set()
        for rev in repo.revisions:
            for f in rev.files:
                if f.file_name == "config.json":
                    dtypes.add(_config_dtype(str(f.file_path)))
                elif f.file_name.lower().endswith(".gguf"):
                    dtypes.add(_gguf_tag(f.file_name))
        out.append(CachedModel(repo.repo_id, sorted(r.commit_hash for r in repo.revisions),
                               sorted(ref for r in repo.revisions for ref in r.refs), repo.size_on_disk,
                               sorted(d for d in dtypes if d), str(repo.repo_path)))
    return out


def _config_dtype(path: str) -> Optional[str]:
    import json
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        return config.get("dtype") or config.get("torch_dtype")
    except (OSError, ValueError, AttributeError):
        return None


def _gguf_tag(name: str) -> str:
    m = re.search(r"(I?Q\d+_[A-Z0-9_]+|Q\d+_\d|BF16|F16|F32)", name.upper())
    return m.group(1) if m else "gguf"


def remove(repo_id: str, cache_dir: Optional[str] = None) -> CachedModel:
    """Delete one repo from the cache: its folder models--org--name (snapshots, blobs,
    refs), nothing else; -> what was removed."""
    root = os.path.realpath(cache_path(cache_dir))
    for model in cached_models(cache_dir):
        if model.repo_id == repo_id:
            path = os.path.realpath(model.path)
            if os.path.dirname(path) != root or not os.path.basename(path).startswith("models--"):
                raise HubError(f"{repo_id}: {model.path} is not a repo folder of the cache {root}; not removed")
            shutil.rmtree(path)
            return model
    raise HubError(f"{repo_id}: not in the Hugging Face cache")
