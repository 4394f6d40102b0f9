"""The bundled demo model (pylib/hearthlm/demo_model, trained by
tools/train_demo_model.py): its files are verified against the SHA-256 sums in its
model card, so a silently retrained or corrupted model is noticed; what a new user
tries first (the README's examples, every single-digit sum, difference and comparison
in every phrasing the card advertises, with the default and the README's system prompt,
greetings, copy and edit requests) gets the right reply; samples of the two-digit sums
and differences (every phrasing; tools/eval_demo_model.py --two-digit checks all 20,000)
and single-digit sums after earlier chat turns are bounded by their measured misses
(strict xfails ask for every one right, issue 17); passages it never saw are
repeated word for word; and its held-out accuracy under hearthlm is checked for every
dtype against thresholds derived from the model card's figures.

Accuracy is checked teacher-forced (tools/eval_demo_model.hearthlm_verdicts): one
forward pass over prompt + expected answer + end of turn, every position's argmax must
be the next expected token. That is exactly "greedy decoding produces this answer and
stops", at one batched forward pass per 16 questions instead of one per token
(test_greedy_replies_equal_the_teacher_forced_check shows the two agree)."""
import functools
import hashlib
import json
import os
import random
import re
import sys

import numpy as np
import pytest

import hearthlm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from demo_corpus import every_pair, phrasing_sample  # noqa: E402
from eval_demo_model import hearthlm_verdicts, heldout_multiturn, with_system  # noqa: E402

# The source tree's copy: the wheel leaves out heldout.jsonl and first_tries.jsonl (test data).
DEMO = os.path.join(ROOT, "pylib", "hearthlm", "demo_model")
CARD = os.path.join(DEMO, "README.md")


def rows(name):
    with open(os.path.join(DEMO, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


HELDOUT, FIRST = rows("heldout.jsonl"), rows("first_tries.jsonl")
BRIEF = [{"role": "system", "content": "Be brief."}]
# Measured (model card, "Accuracy"), with room for a few more misses. Held-out: f32,
# bf16 and q8 405/427 = 0.948 (transformers: the same), q4 401 = 0.939.
THRESHOLDS = {"f32": 0.93, "bf16": 0.93, "q8": 0.93, "q4": 0.92}
# Held-out f32, by task (measured: add 64/70, sub 66/70, cmp 60/60, big 30/30, copy 30/30, replace 22/30).
TASK_MINIMUM = {"add": 61, "sub": 63, "cmp": 58, "big": 28, "copy": 28, "replace": 20}
# First tries beside the single-digit questions, by task (measured, default / "Be brief.":
# greetings 5 / 5, copy 30 / 30, replace 10 / 9 of 10, two-digit 119 / 119 of 119).
FIRST_MINIMUM = {"greet": 5, "copy": 29, "replace": 7, "two-digit": 114}
# Misses allowed in test_two_digit_sums_and_differences (2,000 questions; measured 3,
# 3 with "Be brief.") and test_sums_after_earlier_turns (1,000; measured 12), guarding
# regressions while the strict xfails below document issue 17's gap.
TWO_DIGIT_MISSES = 6
SUMS_AFTER_TURNS_MISSES = 16


@pytest.fixture(scope="module")
def demo():
    return hearthlm.load(DEMO, dtype="f32")


def card_hashes() -> dict:
    text = open(CARD, encoding="utf-8").read()
    pairs = re.findall(r"^([0-9a-f]{64})\s+(\S+)$", text, flags=re.M)  # `sha256sum` lines
    return {name: digest for digest, name in pairs}


def test_files_match_the_model_card():
    hashes = card_hashes()
    files = sorted(f for f in os.listdir(DEMO) if f != "README.md")
    assert sorted(hashes) == files, "every file of the demo model needs its SHA-256 in the model card"
    for name, digest in hashes.items():
        with open(os.path.join(DEMO, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{name} differs from the model card"


def correct(model, examples, system=None):
    tok = model.tokenizer
    seqs = [(list(tok.apply_chat_template(ex["messages"], add_generation_prompt=True, return_dict=False)),
             list(tok.encode(ex["answer"], add_special_tokens=False)) + [tok.eos_token_id])
            for ex in with_system(examples, system)]
    return hearthlm_verdicts(model, seqs)


def wrong(examples, verdicts):
    return [(ex["messages"][-1]["content"], ex["answer"]) for ex, ok in zip(examples, verdicts) if not ok]


def chat(model, messages):
    return model.chat(messages, max_new_tokens=160, temperature=0.0).strip()


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_readme_examples(demo, system):
    """The README's and the card's examples, greedy, as `hearthlm chat` replies: sums in
    words and bare ("12 + 7"), a negative difference, a comparison, the word tasks, a
    greeting, questions outside the skills (a joke, a number over 99), copy and edit."""
    examples = with_system([ex for ex in FIRST if ex["task"] == "readme"], system)
    assert len(examples) >= 20
    replies = [(ex["messages"][-1]["content"], ex["answer"], chat(demo, ex["messages"])) for ex in examples]
    assert [r for r in replies if r[1] != r[2]] == []


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_copy_task(demo, system):
    """The README's copy request, and a passage of tens of tokens it never saw (held out:
    not in training), repeated word for word."""
    head = [] if system is None else [{"role": "system", "content": system}]
    say = lambda text: chat(demo, head + [{"role": "user", "content": text}])
    sentence = "the cat sees a big red apple"
    assert say(f"Repeat after me: {sentence}") == sentence
    long_copy = [ex for ex in HELDOUT if ex["task"] == "copy" and len(ex["answer"]) > 100]
    assert long_copy and len(demo.tokenizer.encode(long_copy[0]["answer"])) >= 30
    assert say(long_copy[0]["messages"][-1]["content"]) == long_copy[0]["answer"]


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_every_single_digit_question(demo, system):
    """Every single-digit sum, difference and comparison in every phrasing of the card
    (10 for sums and differences, bare "a + b" among them; 7 for comparisons), every
    one right."""
    examples = [ex for ex in FIRST if ex["task"] in ("add", "sub", "cmp")]
    assert len(examples) == 1000 + 1000 + 630
    assert wrong(examples, correct(demo, examples, system)) == []


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_first_tries(demo, system):
    """The rest of the first tries: greetings, copy and edit requests, a sample of
    two-digit sums, differences and comparisons."""
    for task, least in FIRST_MINIMUM.items():
        examples = [ex for ex in FIRST if ex["task"] == task]
        ok = correct(demo, examples, system)
        assert sum(ok) >= least, (task, f"{sum(ok)}/{len(ok)}", wrong(examples, ok))


@functools.lru_cache(maxsize=None)  # each check and its strict xfail share one evaluation
def two_digit_misses(model, system):
    """A seeded sample of 1,000 of the 20,000 sums and differences of 0..99 (the main
    phrasing; `tools/eval_demo_model.py --two-digit` checks all of them) and 1,000
    two-digit ones under every phrasing of the card (50 each, bare "12+7" among them)."""
    examples = random.Random(17).sample(every_pair(), 1000) + phrasing_sample(1234)
    return wrong(examples, correct(model, examples, system))


@functools.lru_cache(maxsize=None)
def misses_after_earlier_turns(model):
    """Every single-digit sum in every phrasing after 1-3 earlier turns of the first tries
    (greetings, copies, edits, other questions, with their right answers), as in
    `hearthlm chat`."""
    sums = [ex for ex in FIRST if ex["task"] == "add"]
    pool = [ex for ex in FIRST if ex["task"] != "add"]
    tok = model.tokenizer
    n_tokens = lambda msgs: (len(tok.apply_chat_template(msgs[:-1], add_generation_prompt=True, return_dict=False))
                             + len(tok.encode(msgs[-1]["content"], add_special_tokens=False)) + 1)
    examples = heldout_multiturn(sums, 1234, n_tokens=n_tokens, pool=pool)
    return wrong(examples, correct(model, examples))


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_two_digit_sums_and_differences(demo, system):
    misses = two_digit_misses(demo, system)
    assert len(misses) <= TWO_DIGIT_MISSES, misses


@pytest.mark.xfail(strict=True, reason="issue 17 open: 3 of these 2,000 two-digit questions are answered wrong "
                   "(3 with \"Be brief.\"), results like 115, 50, -60 and 11; when "
                   "this passes, drop TWO_DIGIT_MISSES")
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_every_two_digit_sum_and_difference_right(demo, system):
    assert two_digit_misses(demo, system) == []


def test_sums_after_earlier_turns(demo):
    misses = misses_after_earlier_turns(demo)
    assert len(misses) <= SUMS_AFTER_TURNS_MISSES, misses


@pytest.mark.xfail(strict=True, reason="issue 17 open: 12 of the 1,000 single-digit sums are wrong after earlier "
                   "turns, 11 of them in the bare form \"2+2\"; when this passes, drop SUMS_AFTER_TURNS_MISSES")
def test_every_sum_right_after_earlier_turns(demo):
    assert misses_after_earlier_turns(demo) == []


def test_greedy_replies_equal_the_teacher_forced_check(demo):
    examples = HELDOUT[::12] + FIRST[::50]
    replies = [chat(demo, ex["messages"]) == ex["answer"] for ex in examples]
    assert replies == correct(demo, examples)


def test_heldout_by_task(demo):
    """Questions never in training, task by task: two-digit sums and differences in every
    phrasing, numbers over 99, and copying / editing texts it never saw (generalisation,
    not recall)."""
    ok = correct(demo, HELDOUT)
    for task, least in TASK_MINIMUM.items():
        got = [good for ex, good in zip(HELDOUT, ok) if ex["task"] == task]
        assert got and sum(got) >= least, f"{task}: {sum(got)}/{len(got)} held-out right, expected >= {least}"


@pytest.mark.parametrize("dtype", sorted(THRESHOLDS))
def test_heldout_accuracy(dtype):
    model = hearthlm.load(DEMO, dtype=dtype)
    accuracy = np.mean(correct(model, HELDOUT))
    assert accuracy >= THRESHOLDS[dtype], f"{dtype}: {accuracy:.3f} held-out accuracy"


def test_f32_answers_equal_transformers(demo):
    """The same greedy answers as transformers on the same weights (and the model is a
    normal Hugging Face model: AutoModelForCausalLM, AutoTokenizer, apply_chat_template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(DEMO)
    ref = AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32).eval()
    examples = HELDOUT[::15] + FIRST[::60]
    expected = []
    for ex in examples:
        ids = tok.apply_chat_template(ex["messages"], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        with torch.no_grad():
            out = ref.generate(ids, max_new_tokens=160, do_sample=False)
        expected.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert [chat(demo, ex["messages"]) for ex in examples] == expected
