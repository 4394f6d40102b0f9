"""The `hearthlm` command as a new user meets it: --version, help for every option,
errors that name the flags, the demo model as the default, bad input refused clearly."""
import argparse
import json
import os
import subprocess
import sys

import pytest

import hearthlm
from hearthlm import cli
from hearthlm.cli_args import in_flags, usable_cpus

PYLIB = os.path.dirname(os.path.dirname(hearthlm.__file__))
ENV = dict(os.environ, PYTHONPATH=PYLIB)
HAS_DEMO = os.path.isfile(os.path.join(os.path.dirname(hearthlm.__file__), "demo_model", "config.json"))


def run(args, stdin=None):
    return subprocess.run([sys.executable, "-m", "hearthlm", *args], input=stdin, env=ENV, capture_output=True,
                          timeout=120)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"hearthlm {hearthlm.__version__}\n"


def test_every_option_has_help():
    p = cli.parser()
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"chat", "generate", "bench", "quantize", "info"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"hearthlm {name} {'/'.join(action.option_strings) or action.dest}: no help text"


def test_chat_help_lists_commands_and_piped_mode(capsys):
    with pytest.raises(SystemExit):
        cli.main(["chat", "--help"])
    out = capsys.readouterr().out
    assert all(c in out for c in ("/save FILE", "/stats", "/system TEXT", "/quit")) and "piped mode" in out


@pytest.mark.parametrize("flags,message", [
    (["--max-tokens", "-3"], "argument --max-tokens: expected a positive integer, got -3"),
    (["--threads", "0"], "argument --threads: expected a positive integer, got 0"),
    (["--threads", str(usable_cpus() + 1)], f"argument --threads: {usable_cpus() + 1} threads, but this "
                                            f"process may run on {usable_cpus()} CPUs"),
    (["--ctx", "0"], "argument --ctx: expected a positive integer, got 0"),
])
def test_bad_flags_are_named(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["chat", *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_library_errors_speak_in_flags():
    assert in_flags("n_ctx=300 exceeds the model's context") == "--ctx 300 exceeds the model's context"
    assert in_flags("top_p: expected a number in [0, 1]") == "--top-p: expected a number in [0, 1]"
    assert in_flags("use a larger n_ctx or a shorter message") == "use a larger --ctx or a shorter message"
    assert in_flags("give one: template= one of chatml") == "give one: --template one of chatml"
    # plain words only as a parameter; never inside names or paths
    untouched = "the chat template (/m/template: x) kv_dtype: f8"
    assert in_flags(untouched) == untouched


def test_generate_errors_name_flags(chat_model_dir, capsys):
    folder = chat_model_dir("bpe")
    assert cli.main(["generate", folder, "-p", "hello", "--top-p", "2"]) == 1
    assert "--top-p" in capsys.readouterr().err
    assert cli.main(["generate", folder, "-p", "hello " * 300]) == 1
    err = capsys.readouterr().err
    assert "--prompt: " in err and "tokens do not fit the context of 256 tokens" in err and "--truncate left" in err
    assert cli.main(["generate", folder, "-p", "hello " * 300, "--truncate", "left", "--max-tokens", "3",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["truncated_tokens"] > 0


def test_model_without_tokenizer_or_template_tells_cli_users_what_to_do(model_dir, chat_model_dir, tmp_path, capsys):
    assert cli.main(["generate", model_dir("llama-mha"), "-p", "hi"]) == 1
    err = capsys.readouterr().err
    assert "no tokenizer.json, so the hearthlm command cannot turn text into tokens" in err
    folder = tmp_path / "untemplated"
    folder.mkdir()
    for f in os.listdir(chat_model_dir("bpe")):
        data = open(os.path.join(chat_model_dir("bpe"), f), "rb").read()
        if f == "tokenizer_config.json":
            config = json.loads(data)
            del config["chat_template"]
            data = json.dumps(config).encode()
        (folder / f).write_bytes(data)
    assert cli.main(["chat", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "--template one of chatml" in err and "template=" not in err


def test_missing_model_folder_repo_id_and_file(tmp_path, capsys):
    assert cli.main(["generate", str(tmp_path / "nope"), "-p", "x"]) == 1
    assert "nope: no such folder" in capsys.readouterr().err
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert cli.main(["quantize", str(tmp_path / "model.safetensors"), str(tmp_path / "q")]) == 1
    assert "model.safetensors: is a file" in capsys.readouterr().err


def test_quantize_into_a_file_says_so(model_dir, tmp_path, capsys):
    src = model_dir("llama-mha")
    assert cli.main(["quantize", src, os.path.join(src, "model.safetensors")]) == 1
    assert "model.safetensors: is a file; the destination must be a new or empty folder" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_DEMO, reason="this build has no demo model")
def test_generate_without_a_model_uses_the_demo(capsys):
    assert cli.main(["generate", "-p", "What is 2 plus 3?", "--max-tokens", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["completion_tokens"] >= 1


def test_chat_prompt_past_the_context_and_bad_bytes_are_one_line_each(chat_model_dir):
    r = run(["chat", chat_model_dir("bpe"), "--ctx", "10", "--max-tokens", "2"], b"What is 12 plus 7?\n")
    assert r.returncode == 0 and b"Traceback" not in r.stderr
    assert b"error: --ctx: this message needs" in r.stderr and b"use a larger --ctx" in r.stderr
    assert r.stdout == b""  # no answer from a cut prompt
    r = run(["chat", chat_model_dir("bpe"), "--max-tokens", "2"], b"caf\xe9\nhello\n")
    assert r.returncode == 0 and b"Traceback" not in r.stderr
    assert b"error: input line 1: not valid UTF-8 (byte 0xe9 at character 3)" in r.stderr
    assert r.stdout.count(b"\n") == 1  # the second line was answered


def test_bench_options_are_checked_before_it_runs(tmp_path, monkeypatch, capsys):
    import importlib.util
    monkeypatch.setenv("HEARTHLM_CACHE", str(tmp_path / "cache"))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    assert cli.main(["bench", "--shape", "tiny", "--plot", str(tmp_path / "p.png")]) == 1
    assert "--plot needs matplotlib (not installed): pip install 'hearthlm[bench]'" in capsys.readouterr().err
    assert cli.main(["bench", "--shape", "tiny", "--vs", "torch,nope"]) == 1
    assert "--vs: unknown engine nope (known: torch, llama.cpp)" in capsys.readouterr().err
    assert cli.main(["bench", "--shape", "tiny", "--plot", str(tmp_path / "no" / "p.png")]) == 1
    assert "no folder" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before building the shape
    with pytest.raises(SystemExit):
        cli.main(["bench", "--shape", "tiny", "--contexts", "128,x"])
    assert "argument --contexts: expected comma-separated positive integers" in capsys.readouterr().err


def test_context_larger_than_the_model_names_the_flag(chat_model_dir, capsys):
    assert cli.main(["chat", chat_model_dir("bpe"), "--ctx", "300"]) == 1
    assert "hearthlm: error: --ctx 300 exceeds the model's context of 256 tokens" in capsys.readouterr().err
