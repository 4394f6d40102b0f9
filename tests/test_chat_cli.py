"""`hearthlm chat` driven through a pseudo-terminal (pexpect) and through a pipe, and
`hearthlm generate --json`."""
import json
import os
import signal
import subprocess
import sys
import time

import pexpect

import hearthlm
from hearthlm import cli

PYLIB = os.path.dirname(os.path.dirname(hearthlm.__file__))
ENV = dict(os.environ, PYTHONPATH=PYLIB, TERM="dumb")


def spawn(*args):
    """The chat on a pseudo-terminal, as a foreground job: SIGINT handled by default
    even when the tests run in the background (where the shell ignores it)."""
    return pexpect.spawn(sys.executable, ["-m", "hearthlm", "chat", *args], env=ENV, encoding="utf-8",
                         timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def run_piped(args, text):
    return subprocess.run([sys.executable, "-m", "hearthlm", "chat", *args], input=text, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_terminal_session(chat_model_dir, tmp_path):
    c = spawn(chat_model_dir("bpe"), "--temperature", "0", "--max-tokens", "24", "--system", "Be brief.")
    c.expect("loaded in")
    c.expect_exact(">>> ")
    c.sendline("What is 2+2?")
    c.expect_exact("What is 2+2?\r\n")  # the terminal's echo of the line
    c.expect_exact(">>> ")
    answer = c.before
    assert answer.strip() and "[stopped]" not in answer
    c.sendline("/stats")
    c.expect(r"last reply: 24 tokens \(length\).*context: \d+ / 256 tokens; 3 messages.*memory: session")
    c.expect_exact(">>> ")
    c.sendline(f"/save {tmp_path / 'chat.json'}")
    c.expect_exact(">>> ")
    c.sendline("/reset")
    c.expect_exact("conversation cleared")
    c.expect_exact(">>> ")
    c.sendline("/stats")
    c.expect_exact("; 1 message\r\n")  # the system message stays
    c.expect_exact(">>> ")
    c.sendline("/bogus")
    c.expect_exact("unknown command /bogus")
    c.sendline("/quit")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
    saved = json.load(open(tmp_path / "chat.json"))["messages"]
    assert [m["role"] for m in saved] == ["system", "user", "assistant"]
    assert saved[2]["content"].strip() == answer.strip().replace("\r\n", "\n")


def test_ctrl_c_stops_the_reply_and_the_chat_goes_on(chat_model_dir):
    """No length limit and eos never wins greedy decoding here: only Ctrl-C ends a reply."""
    c = spawn(chat_model_dir("bpe"), "--temperature", "0", "--ctx", "64")
    c.expect_exact(">>> ")
    for question in ("Tell me a story", "Another one"):
        c.sendline(question)
        c.expect_exact(question + "\r\n")
        c.expect(r".{20}")  # the reply is streaming
        c.sendintr()
        c.expect_exact("[stopped]")
        c.expect_exact(">>> ")
    c.sendline("/stats")
    c.expect(r"\(cancelled\).*older turns partly dropped \(context shift\); 4 messages")
    c.expect_exact(">>> ")
    # Ctrl-C at the prompt: a fresh prompt. (CPython's readline prints the prompt before
    # it waits for input; a SIGINT in between is only seen at the next key.)
    time.sleep(0.2)
    c.sendintr()
    c.expect_exact(">>> ")
    c.sendeof()
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


def test_piped_stdin_past_the_context(chat_model_dir, tmp_path):
    saved = tmp_path / "c.json"
    saved.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "hello"}]}))
    lines = [f"Question {i}?" for i in range(6)] + ["/stats", f"/load {saved}", "And now?", "/stats"]
    r = run_piped([chat_model_dir("spm"), "--ctx", "48", "--max-tokens", "10", "--seed", "1"],
                  "\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    assert ">>>" not in r.stdout and "loaded in" in r.stderr and "error" not in r.stderr
    stats = r.stdout.split("last reply: ")
    assert len(stats) == 3
    assert "context shift); 12 messages" in stats[1]
    assert "loaded 2 messages" in stats[1] and "; 4 messages" in stats[2]


def test_without_a_model_opens_the_demo():
    r = run_piped([], "")
    demo = os.path.join(os.path.dirname(hearthlm.__file__), "demo_model")
    if os.path.isdir(demo):
        assert r.returncode == 0 and "loaded in" in r.stderr
        assert hearthlm.demo.SKILLS in r.stderr  # the banner says what the demo model can do
    else:
        assert r.returncode == 1 and "demo model is not part of this hearthlm installation" in r.stderr


def test_generate_json(chat_model_dir, capsys):
    folder = chat_model_dir("bpe")
    assert cli.main(["generate", folder, "-p", "hello", "--max-tokens", "9", "--temperature", "0",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["finish_reason"] == "length" and out["completion_tokens"] == 9
    assert out["text"] == hearthlm.load(folder).generate("hello", max_new_tokens=9, temperature=0)
    assert {"prefill_tokens_per_second", "decode_tokens_per_second", "time_to_first_token"} <= set(out)
    assert cli.main(["generate", folder, "-p", "hello", "--max-tokens", "5", "--seed", "3"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    assert cli.main(["generate", folder, "-p", "hello", "--top-p", "2"]) == 1
    assert "--top-p" in capsys.readouterr().err


def test_failing_commands_print_one_line_and_the_chat_goes_on(chat_model_dir, tmp_path):
    lines = [f"/save {tmp_path / 'missing' / 'x.json'}", f"/save {tmp_path}", f"/load {tmp_path}",
             "hello", f"/save {tmp_path / 'ok.json'}"]
    r = run_piped([chat_model_dir("bpe"), "--max-tokens", "3", "--temperature", "0"], "\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "Traceback" not in r.stderr
    assert str(tmp_path / "missing" / "x.json") in errors[0] and str(tmp_path) in errors[1]
    assert "saved 2 messages" in r.stdout  # the conversation survived: the message and its reply
