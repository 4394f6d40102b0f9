"""logprobs=True, top_logprobs=k: each token's log-probability under the distribution
it was drawn from (mask, penalties, temperature, top-k, top-p, min-p), checked
against the same pipeline in numpy on model.logits()."""
import numpy as np
import pytest

import hearthlm
from hearthlm import InvalidInputError
from hearthlm.constraints import Constraint

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 999}},
          "required": ["name", "n"], "additionalProperties": False}
SETTINGS = [
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),   # the model's own softmax (OpenAI's logprobs)
    dict(temperature=0.7, top_k=10, top_p=1.0, min_p=0.0),
    dict(temperature=1.3, top_k=0, top_p=0.8, min_p=0.05),
    dict(temperature=1.0, top_k=50, top_p=0.9, min_p=0.1, repeat_penalty=1.7, repeat_last_n=8,
         presence_penalty=0.4, frequency_penalty=0.3),
]


@pytest.fixture(scope="module")
def model(chat_model_dir):
    return hearthlm.load(chat_model_dir("bpe"))


def reference(logits, history, allowed, s):
    """The sampled distribution in float64: {token: logprob}."""
    l = logits.astype(np.float64)
    l = np.where(allowed, l, -np.inf)
    window = history[-s.get("repeat_last_n", 64):] if s.get("repeat_last_n", 64) else []
    for t in set(window):
        rp = s.get("repeat_penalty", 1.0)
        l[t] = l[t] / rp if l[t] > 0 else l[t] * rp
        l[t] -= s.get("presence_penalty", 0.0) + s.get("frequency_penalty", 0.0) * window.count(t)
    l = l / s["temperature"]
    keep = np.isfinite(l)
    if s["top_k"]:
        keep &= l >= np.sort(l)[-s["top_k"]]
    p = np.where(keep, np.exp(l - l[keep].max()), 0.0)
    mass = p.sum()
    keep &= p >= max(s["min_p"], 1e-300)
    if s["top_p"] < 1.0:
        order = np.argsort(-np.where(keep, p, -1.0), kind="stable")
        cum = np.cumsum(np.where(keep, p, 0.0)[order])
        n = int(np.searchsorted(cum, s["top_p"] * mass)) + 1
        top = np.zeros_like(keep)
        top[order[:n]] = True
        keep &= top
    p = np.where(keep, p, 0.0)
    p /= p.sum()
    return {int(i): float(np.log(p[i])) for i in np.flatnonzero(keep)}


def check_against_numpy(model, g, prompt, settings, k, constraint=None):
    assert len(g.logprobs) == len(g.token_ids) > 0
    text = lambda i: model.tokenizer.decode([i], skip_special_tokens=False)
    for i, (token, record) in enumerate(zip(g.token_ids, g.logprobs)):
        context = prompt + g.token_ids[:i]
        logits = model.logits(context)[-1]
        allowed = np.ones(model.vocab_size, bool)
        if constraint is not None:
            allowed = np.unpackbits(constraint.next_mask().view(np.uint8), bitorder="little")[:model.vocab_size] > 0
            constraint.accept(token)
        ref = reference(logits, context, allowed, settings)
        assert record["token"] == text(token)
        assert record["logprob"] == pytest.approx(ref[token], abs=2e-4, rel=1e-3)
        best = sorted(ref.items(), key=lambda kv: -kv[1])[:k]
        assert [t["token"] for t in record["top_logprobs"]] == [text(t) for t, _ in best]
        assert [t["logprob"] for t in record["top_logprobs"]] == pytest.approx([lp for _, lp in best],
                                                                               abs=2e-4, rel=1e-3)


@pytest.mark.parametrize("settings", SETTINGS, ids=range(len(SETTINGS)))
def test_logprobs_match_numpy(model, settings):
    prompt = model.tokenizer.encode("hello world")
    g = model.generate(prompt, max_new_tokens=12, logprobs=True, top_logprobs=5, seed=2, return_result=True,
                       **settings)
    check_against_numpy(model, g, prompt, settings, 5)


def test_logprobs_under_a_constraint(model):
    settings = SETTINGS[1]
    prompt = model.tokenizer.encode("hello")
    g = model.generate(prompt, max_new_tokens=40, json_schema=SCHEMA, logprobs=True, top_logprobs=4, seed=0,
                       return_result=True, **settings)
    check_against_numpy(model, g, prompt, settings, 4, Constraint.from_options(model, json_schema=SCHEMA))


def test_greedy_draws_from_one_token(model):
    g = model.generate("hello", max_new_tokens=5, logprobs=True, top_logprobs=3, temperature=0.0,
                       return_result=True)
    assert all(r["logprob"] == 0.0 and len(r["top_logprobs"]) == 1 for r in g.logprobs)
    assert [r["top_logprobs"][0]["token"] for r in g.logprobs] == [r["token"] for r in g.logprobs]


def test_logprobs_in_chat_and_streams(model):
    messages = [{"role": "user", "content": "hi"}]
    g = model.chat(messages, max_new_tokens=6, logprobs=True, temperature=0.9, seed=1, return_result=True)
    assert len(g.logprobs) == 6 and all(r["top_logprobs"] == [] and r["logprob"] <= 0 for r in g.logprobs)
    stream = model.chat(messages, max_new_tokens=6, logprobs=True, top_logprobs=2, temperature=0.9, seed=1,
                        stream=True)
    assert "".join(stream) == g.text
    assert [r["logprob"] for r in stream.result.logprobs] == [r["logprob"] for r in g.logprobs]
    assert model.generate("hi", max_new_tokens=3, return_result=True).logprobs is None


@pytest.mark.parametrize("options, message", [
    (dict(logprobs="yes"), "logprobs: expected True or False"),
    (dict(logprobs=True, top_logprobs=21), r"top_logprobs: expected an integer in \[0, 20\]"),
    (dict(logprobs=True, top_logprobs=-1), "top_logprobs"),
    (dict(top_logprobs=3), "top_logprobs: needs logprobs=True"),
])
def test_bad_logprob_options(model, options, message):
    with pytest.raises(InvalidInputError, match=message):
        model.generate("hi", max_new_tokens=2, **options)
