"""The bundled demo model (pylib/hearthlm/demo_model, trained by
tools/train_demo_model.py): its files are verified against the SHA-256 sums in its
model card, so a silently retrained or corrupted model is noticed; what a new user
tries first (README examples, greetings, every single-digit sum, copy requests) gets
the right reply; passages it never saw are repeated word for word; and its held-out accuracy under hearthlm is checked for every dtype
against thresholds derived from the model card's figures.

Accuracy is checked teacher-forced: one forward pass over prompt + expected answer +
end of turn, every position's argmax must be the next expected token. That is exactly
"greedy decoding produces this answer and stops", at one forward pass per question
instead of one per token (test_greedy_replies_equal_the_teacher_forced_check shows the
two agree)."""
import hashlib
import json
import os
import re

import numpy as np
import pytest

import hearthlm

# The source tree's copy: the wheel leaves out heldout.jsonl and first_tries.jsonl (test data).
DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pylib", "hearthlm", "demo_model")
CARD = os.path.join(DEMO, "README.md")


def rows(name):
    with open(os.path.join(DEMO, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


HELDOUT, FIRST = rows("heldout.jsonl"), rows("first_tries.jsonl")
BRIEF = [{"role": "system", "content": "Be brief."}]
# Measured (model card, "Accuracy"): held-out 305/407 = 0.749 for f32 (transformers: the
# same); first tries 433/446 (default or no system prompt), 431/446 ("Be brief."), single-
# digit sums 199/200 and 197/200. Thresholds allow a few more misses than measured.
THRESHOLDS = {"f32": 0.73, "bf16": 0.73, "q8": 0.72, "q4": 0.70}
FIRST_THRESHOLDS = {None: (0.96, 0.985), "none": (0.96, 0.985), "Be brief.": (0.955, 0.975)}  # all, sums
# Held-out f32, by task (measured: add 49/70, sub 38/70, cmp 56/60, copy 28/30).
TASK_MINIMUM = {"add": 46, "sub": 35, "cmp": 53, "copy": 26}


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


def greedy_says(model, messages, answer) -> bool:
    tok = model.tokenizer
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    target = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
    logits = model.logits(prompt + target)
    return bool((logits[len(prompt) - 1:-1].argmax(-1) == np.array(target)).all())


def correct(model, examples, system=None):
    swap = (lambda m: m) if system is None else \
        (lambda m: ([{"role": "system", "content": system}] if system else []) + [x for x in m if x["role"] != "system"])
    return [greedy_says(model, swap(ex["messages"]), ex["answer"]) for ex in examples]


def chat(model, messages):
    return model.chat(messages, max_new_tokens=160, temperature=0.0).strip()


def test_readme_examples(demo):
    assert chat(demo, BRIEF + [{"role": "user", "content": "What is 12 plus 7?"}]) == "19"
    assert chat(demo, [{"role": "user", "content": "What is 12 plus 7?"}]) == "19"
    assert chat(demo, BRIEF + [{"role": "user", "content": "Hi!"}]) == "Hello! Ask me a small sum or a word puzzle."
    assert chat(demo, [{"role": "user", "content": "What is the capital of France?"}]) == \
        "I can only do small arithmetic and word puzzles."
    assert chat(demo, [{"role": "user", "content": "What is 3 minus 5?"}]) == "-2"


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


@pytest.mark.parametrize("system", [None, "none", "Be brief."])
def test_first_tries(demo, system):
    """Every single-digit sum, difference and comparison, greetings, the README's examples,
    copy requests; with the default, no, and the README's system prompt."""
    ok = correct(demo, FIRST, None if system is None else ("" if system == "none" else system))
    wrong = [(ex["messages"][-1]["content"], ex["answer"]) for ex, good in zip(FIRST, ok) if not good]
    sums = [good for ex, good in zip(FIRST, ok) if ex["task"] == "add"]
    least, least_sums = FIRST_THRESHOLDS[system]
    assert np.mean(sums) >= least_sums, wrong
    assert np.mean(ok) >= least, wrong


def test_greedy_replies_equal_the_teacher_forced_check(demo):
    examples = HELDOUT[::12] + FIRST[::25]
    replies = [chat(demo, ex["messages"]) == ex["answer"] for ex in examples]
    assert replies == correct(demo, examples)


def test_heldout_by_task(demo):
    """Questions never in training, task by task: two-digit sums and differences in every
    phrasing, and copying / editing passages it never saw (generalisation, not recall)."""
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
    examples = HELDOUT[::15] + FIRST[::20]
    expected = []
    for ex in examples:
        ids = tok.apply_chat_template(ex["messages"], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        with torch.no_grad():
            out = ref.generate(ids, max_new_tokens=160, do_sample=False)
        expected.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert [chat(demo, ex["messages"]) for ex in examples] == expected
