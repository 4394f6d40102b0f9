"""Hugging Face repo ids through huggingface_hub's cache, offline (HF_HUB_OFFLINE=1, set in
conftest): a cache laid out as huggingface_hub lays it out (models--org--name/blobs,
snapshots/<commit>/, refs/main) is resolved by hearthlm.load, `hearthlm chat/generate`,
`pull`, `list` and `rm`; every failure is a HubError naming the repo. Nothing is downloaded."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

from huggingface_hub import constants
import pytest

import hearthlm
from hearthlm import HubError, cli, hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"


def add_to_cache(cache, repo_id, files: dict, commit=COMMIT, ref="main"):
    """files: {name in the repo: local path to copy}; stored as blobs + symlinks, like huggingface_hub."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = open(src, "rb").read()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snap / name).parent), snap / name)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(path))
    return path


@pytest.fixture
def demo_files():
    demo = hearthlm.demo_model_path()
    return {f: os.path.join(demo, f) for f in ("config.json", "generation_config.json", "model.safetensors",
                                                "tokenizer.json", "tokenizer_config.json")}


def test_parse_references():
    assert hub.parse("Qwen/Qwen3-0.6B") == hub.Ref("Qwen/Qwen3-0.6B")
    assert hub.parse("Qwen/Qwen3-0.6B@v1.0") == hub.Ref("Qwen/Qwen3-0.6B", "v1.0")
    assert hub.parse("org/x-GGUF:Q4_K_M", revision="main") == hub.Ref("org/x-GGUF", "main", "Q4_K_M")
    assert hub.parse("org/x@abc:model-q8_0.gguf") == hub.Ref("org/x", "abc", "model-q8_0.gguf")
    assert hub.parse("just-a-name") is None and hub.parse("/abs/path") is None
    with pytest.raises(HubError, match="names revision 'a' but revision='b'"):
        hub.parse("org/x@a", revision="b")


def test_load_a_cached_repo_by_id_and_revision(cache, demo_files):
    add_to_cache(cache, "hearthlm/demo", demo_files)
    add_to_cache(cache, "hearthlm/demo", demo_files, commit=OLD, ref=None)
    model = hearthlm.load("hearthlm/demo")
    assert model.path == str(cache / "models--hearthlm--demo" / "snapshots" / COMMIT)
    assert hearthlm.load("hearthlm/demo", revision=OLD).path.endswith(OLD)
    assert hearthlm.load(f"hearthlm/demo@{OLD}").path.endswith(OLD)
    reference = hearthlm.load(hearthlm.demo_model_path())
    q = [{"role": "user", "content": "What is 12 plus 7?"}]
    assert model.chat(q, temperature=0, max_new_tokens=8) == reference.chat(q, temperature=0, max_new_tokens=8)


def test_errors_name_the_repo(cache, demo_files):
    with pytest.raises(HubError, match=r"nobody/nothing: not in the Hugging Face cache .*offline"):
        hearthlm.load("nobody/nothing")
    with pytest.raises(HubError, match="nobody/nothing@v2: not in the Hugging Face cache"):
        hearthlm.load("nobody/nothing", revision="v2")
    add_to_cache(cache, "org/no-weights", {k: v for k, v in demo_files.items() if k != "model.safetensors"})
    with pytest.raises(HubError, match="org/no-weights: .*neither model\\*.safetensors weights nor .gguf files"):
        hearthlm.load("org/no-weights")
    add_to_cache(cache, "org/no-config", {"model.safetensors": demo_files["model.safetensors"]})
    with pytest.raises(HubError, match="org/no-config: the cache has no config.json"):
        hearthlm.load("org/no-config")
    with pytest.raises(hearthlm.InvalidInputError, match="revision: .* is a local path"):
        hearthlm.load(hearthlm.demo_model_path(), revision="main")


def test_gguf_files_by_name_or_quant_tag(cache, tmp_path):
    for name in ("m-Q4_K_M.gguf", "m-Q8_0.gguf"):
        (tmp_path / name).write_bytes(b"GGUF" + name.encode())
    snap = add_to_cache(cache, "org/m-GGUF", {n: tmp_path / n for n in ("m-Q4_K_M.gguf", "m-Q8_0.gguf")})
    assert hub.resolve("org/m-GGUF:Q4_K_M") == str(snap / "m-Q4_K_M.gguf")
    assert hub.resolve("org/m-GGUF:m-Q8_0.gguf") == str(snap / "m-Q8_0.gguf")
    assert hub.resolve("org/m-GGUF:q8_0") == str(snap / "m-Q8_0.gguf")
    with pytest.raises(HubError, match=r"org/m-GGUF: give one of the repo's GGUF files as org/m-GGUF:FILE "
                                       r"\(m-Q4_K_M.gguf, m-Q8_0.gguf\)"):
        hub.resolve("org/m-GGUF")
    with pytest.raises(HubError, match="org/m-GGUF:Q2_K: give one of"):
        hub.resolve("org/m-GGUF:Q2_K")


def test_cli_list_pull_rm(cache, demo_files, tmp_path, capsys):
    add_to_cache(cache, "hearthlm/demo", demo_files)
    other = add_to_cache(cache, "org/keep", {"config.json": demo_files["config.json"]})
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["REPO", "SIZE", "DTYPES", "REFS"]
    assert out[1].split() == ["hearthlm/demo", "9.9", "MB", "float32", "main"]
    assert cli.main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["repo_id"] for m in listed] == ["hearthlm/demo", "org/keep"]
    assert cli.main(["pull", "hearthlm/demo"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "models--hearthlm--demo" / "snapshots" / COMMIT)
    assert cli.main(["generate", "hearthlm/demo", "-p", "x", "--max-tokens", "1", "--revision", "nope"]) == 1
    assert "hearthlm/demo@nope: not in the Hugging Face cache" in capsys.readouterr().err
    assert cli.main(["rm", "nobody/nothing", "--yes"]) == 1
    assert "nobody/nothing: not in the Hugging Face cache" in capsys.readouterr().err
    assert cli.main(["rm", "hearthlm/demo"]) == 1  # stdin is no terminal: needs --yes
    assert "confirm with --yes" in capsys.readouterr().err
    assert (cache / "models--hearthlm--demo").is_dir()
    assert cli.main(["rm", "hearthlm/demo", "--yes"]) == 0
    assert not (cache / "models--hearthlm--demo").exists()
    assert (other / "config.json").is_file() and sorted(os.listdir(cache)) == ["models--org--keep"]
    shutil.rmtree(cache / "models--org--keep")
    assert cli.main(["list"]) == 0
    assert "no models in the Hugging Face cache" in capsys.readouterr().err


def test_chat_with_a_repo_id_in_a_fresh_process(tmp_path, demo_files):
    """HF_HOME and HF_HUB_OFFLINE as a user sets them, the `hearthlm chat REPO` command."""
    add_to_cache(tmp_path / "home" / "hub", "hearthlm/demo", demo_files)
    env = dict(os.environ, HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    r = subprocess.run([sys.executable, "-m", "hearthlm", "chat", "hearthlm/demo", "--max-tokens", "8"],
                       input=b"What is 12 plus 7?\n", capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == hearthlm.load(hearthlm.demo_model_path()).chat(
        [{"role": "user", "content": "What is 12 plus 7?"}], temperature=0, max_new_tokens=8).strip()
