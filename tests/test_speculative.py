"""Speculative decoding is lossless: greedy output identical to plain decoding for every
tiny variant and weight format, with stop strings, eos, max tokens, constraints,
streaming, cancellation and context shifts; sampled output has exactly the target's
distribution (a chi-square test against the exact distribution, which a wrong
accept/reject rule fails). Bad draft models and options are refused by name."""
import json
import math

import jsonschema
import numpy as np
import pytest

import hearthlm
import tiny_models
from hearthlm import InvalidInputError
from hearthlm import speculative as sp
from hearthlm.chat_template import ChatTemplate
from hearthlm.constraints import Constraint
from hearthlm.conversation import Conversation
from hearthlm.formats import QUANTIZED
from hearthlm.generation import TextStream, make_sampler
from hearthlm.sampling import Sampler, SamplerConfig

GREEDY = dict(temperature=0.0)
DTYPES = ["f32", "bf16", "q8", "q4", "q4k"]


@pytest.fixture
def always_draft(monkeypatch):
    """Draft as much as a round allows (up to 5), whatever the measured costs say: the
    adaptive length would stop drafting where it does not pay, and tiny models gain
    nothing from it."""
    monkeypatch.setattr(sp.DraftLength, "choose", lambda self, kind, limit, seconds: 0 if kind is None
                        else max(0, min(limit, 5)))


def prompt_for(model, seed=0):
    """Random ids with a repeated stretch, so prompt lookup finds matches at once."""
    ids = np.random.default_rng(seed).integers(0, model.vocab_size, 14).tolist()
    return ids + ids[:9]


def assert_same_or_near_tie(model, prompt, plain, spec):
    """The tokens agree. In the quantized formats exactly: a verify step's rows are the
    bits of one-token forwards (attention does not depend on the rows beside a row, and
    the int8-activation matmuls are exact for any number of rows). In the float formats
    a tile's matmuls sum in another order than one token's, so a token may differ only
    where plain decoding's two candidates are closer than that row's one-token and
    many-token forwards disagree."""
    if plain == spec:
        return
    assert model.dtype not in QUANTIZED, f"{model.dtype}: {plain} vs {spec}"
    i = next(i for i, (a, b) in enumerate(zip(plain, spec)) if a != b)
    session = model.session()
    one = np.array(session.feed(prompt))
    for t in plain[:i]:
        one = np.array(session.feed([t]))
    assert int(np.argmax(one)) == plain[i]  # plain decoding's own row, recomputed
    gap = one[plain[i]] - one[spec[i]]
    disagreement = np.abs(one - model.logits(prompt + plain[:i])[-1]).max()
    assert gap <= disagreement, (f"first difference at token {i}: {plain} vs {spec}; gap {gap:.3g}, "
                                 f"one-token vs many-token forward {disagreement:.3g}")


def test_verify_rows_are_the_bits_of_one_token_forwards(model_dir):
    """What makes the quantized formats' speculative decoding exact: the logits of a
    many-token forward (a prompt, a verify step) equal one-token forwards' bit for bit,
    whatever the family."""
    checked = []
    for variant in sorted(tiny_models.VARIANTS):
        for dtype in QUANTIZED:
            try:
                model = hearthlm.load(model_dir(variant), dtype=dtype, n_threads=2)
            except hearthlm.HearthlmError:  # a format the variant's shapes cannot take
                continue
            prompt = prompt_for(model)
            session = model.session()
            one = np.stack([np.array(session.feed([t])) for t in prompt])
            assert np.array_equal(one, model.logits(prompt)), (variant, dtype)
            checked.append((variant, dtype))
    assert len(checked) >= 4 * len(tiny_models.VARIANTS), checked


@pytest.mark.parametrize("variant", sorted(tiny_models.VARIANTS))
def test_greedy_identical_for_every_variant_and_dtype(model_dir, variant, always_draft):
    folder = model_dir(variant)
    totals = np.zeros(2, int)
    # phi3's fused qkv_proj does not load as q4k (weights.split_rows repacks q8/q4 only)
    for dtype in [d for d in DTYPES if not (variant.startswith("phi3") and d == "q4k")]:
        model = hearthlm.load(folder, dtype=dtype, n_threads=1)
        draft = hearthlm.load(folder, dtype="q4" if dtype != "q4" else "f32", n_threads=1)
        prompt = prompt_for(model)
        plain = model.generate(prompt, max_new_tokens=40, return_result=True, **GREEDY)
        for option in (dict(speculative="prompt-lookup"), dict(draft_model=draft)):
            g = model.generate(prompt, max_new_tokens=40, return_result=True, **GREEDY, **option)
            assert_same_or_near_tie(model, prompt, plain.token_ids, g.token_ids)
            assert g.finish_reason == plain.finish_reason and g.decode_steps == plain.decode_steps
            totals += [g.drafted_tokens, g.accepted_tokens]
    assert totals[1] > 0  # drafts were accepted (and in most variants some rejected)


def test_penalties_greedy_identical(model_dir, always_draft):
    """Penalties make each row's distribution depend on the tokens kept before it."""
    model = hearthlm.load(model_dir("llama-mha"), n_threads=1)
    draft = hearthlm.load(model_dir("llama-mha"), dtype="q4", n_threads=1)
    prompt = prompt_for(model, 1)
    for penalties in (dict(repeat_penalty=1.5, repeat_last_n=8), dict(presence_penalty=0.8, frequency_penalty=0.4)):
        plain = model.generate(prompt, max_new_tokens=40, return_result=True, **GREEDY, **penalties)
        for option in (dict(speculative="prompt-lookup"), dict(draft_model=draft)):
            g = model.generate(prompt, max_new_tokens=40, return_result=True, **GREEDY, **penalties, **option)
            assert_same_or_near_tie(model, prompt, plain.token_ids, g.token_ids)
            assert g.drafted_tokens > 0 or "speculative" in option  # penalised text rarely repeats


@pytest.fixture(scope="module")
def chat(chat_model_dir):
    return hearthlm.load(chat_model_dir("bpe"), n_threads=1)


@pytest.fixture(scope="module")
def chat_draft(chat_model_dir):
    return hearthlm.load(chat_model_dir("bpe"), dtype="q4", n_threads=1)


def options(chat_draft):
    return [dict(speculative="prompt-lookup"), dict(draft_model=chat_draft)]


def test_stop_strings_max_tokens_and_streaming(chat, chat_draft, always_draft):
    full = chat.generate("hello hello", max_new_tokens=60, return_result=True, **GREEDY)
    stop = full.text[14:18]
    plain_pieces = list(chat.generate("hello hello", max_new_tokens=60, stop=[stop], stream=True, **GREEDY))
    for option in options(chat_draft):
        stream = chat.generate("hello hello", max_new_tokens=60, stop=[stop], stream=True, **GREEDY, **option)
        assert list(stream) == plain_pieces and stream.result.finish_reason == "stop"
        assert stream.result.drafted_tokens > 0
        for n in (1, 2, 3, 7, 33):
            g = chat.generate("hello hello", max_new_tokens=n, return_result=True, **GREEDY, **option)
            assert g.token_ids == full.token_ids[:n] and g.finish_reason == "length"


def test_every_eos_id_ends_generation(chat, chat_draft, always_draft):
    tokens = chat.generate("hello", max_new_tokens=30, return_result=True, **GREEDY).token_ids
    i = next(i for i in range(3, 30) if tokens[i] not in tokens[:i])
    chat.generation_config["eos_token_id"] = [tokens[i]]
    try:
        for option in options(chat_draft):
            g = chat.generate("hello", max_new_tokens=30, return_result=True, **GREEDY, **option)
            assert g.finish_reason == "eos" and g.token_ids == tokens[:i]
    finally:
        del chat.generation_config["eos_token_id"]


def test_session_and_constraint_hold_what_was_kept(chat, chat_draft, always_draft):
    """After a stream (finished, stopped, closed early) the session holds the prompt and
    the kept tokens, and the constraint has accepted exactly those."""
    prompt = chat.tokenizer.encode("hello")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 999}},
              "required": ["name", "n"], "additionalProperties": False}
    plain = chat.generate(prompt, json_schema=schema, max_new_tokens=80, return_result=True, **GREEDY)
    jsonschema.validate(json.loads(plain.text), schema)
    for speculation in (sp.Speculation(chat, "prompt-lookup"), sp.Speculation(chat, draft_model=chat_draft)):
        for close_after in (None, 3):
            session = chat.session(n_ctx=256)
            constraint = Constraint.from_options(chat, json_schema=schema)
            stream = TextStream(chat, session, lambda: (session.feed(prompt), len(prompt)), prompt,
                                make_sampler(chat, GREEDY), 80, constraint=constraint, speculation=speculation)
            if close_after is None:
                g = stream.finish()
                assert g.token_ids == plain.token_ids and g.finish_reason == plain.finish_reason == "eos"
            else:
                for _ in range(close_after):
                    next(stream)
                stream.close()
                g = stream.result
                assert g.finish_reason == "cancelled" and g.token_ids == plain.token_ids[:len(g.token_ids)]
            assert session.tokens == prompt + g.token_ids and constraint.n_accepted == len(g.token_ids)


def test_conversation_past_the_context(chat, chat_draft, always_draft):
    """Context shifts happen at the same token as without speculation: the sessions
    hold the same tokens turn after turn."""
    def run(speculation):
        conv = Conversation(chat, ChatTemplate.for_model(chat), make_sampler(chat, GREEDY), n_ctx=48,
                            max_new_tokens=20, speculation=speculation)
        out = []
        for turn in range(5):
            g = conv.ask(f"Question {turn}?").finish()
            out.append((g.token_ids, conv.session.tokens))
        return out, conv
    plain, plain_conv = run(None)
    assert plain_conv.session.tokens != plain_conv.fed  # the context did shift
    for speculation in (sp.Speculation(chat, "prompt-lookup"), sp.Speculation(chat, draft_model=chat_draft)):
        spec, conv = run(speculation)
        assert spec == plain and conv.last.drafted_tokens > 0


def test_logprobs_with_prompt_lookup(chat, always_draft):
    kwargs = dict(max_new_tokens=20, logprobs=True, top_logprobs=3, temperature=0.8, seed=5, return_result=True)
    plain = chat.generate("hello hello hello", **kwargs)
    g = chat.generate("hello hello hello", speculative="prompt-lookup", **kwargs)
    # a point-mass draft is checked by the sampler's own draw: one draw per token, as without drafts
    assert g.token_ids == plain.token_ids and g.drafted_tokens > 0
    for a, b in zip(plain.logprobs, g.logprobs):
        assert a["token"] == b["token"] and a["logprob"] == pytest.approx(b["logprob"], abs=1e-5)
        assert [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]


# -- sampling: the distribution is the target's --------------------------------------

SAMPLED = [dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
           dict(temperature=0.8, top_k=5, top_p=0.9, min_p=0.05, repeat_penalty=1.4, presence_penalty=0.3,
                frequency_penalty=0.2, repeat_last_n=6)]
N_SAMPLES = 3000
N_TOKENS = 3


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    """A target and a different draft model over 6 tokens."""
    folders = [tiny_models.build("llama-mha", str(tmp_path_factory.mktemp(f"v6-{i}")), vocab_size=6, seed=i)
               for i in (0, 7)]
    return [hearthlm.load(f, n_threads=1) for f in folders]


def no_residual(row, sampler, mask, rng, draft=None, q=None):
    """A wrong verify rule: on rejection it draws from p, not from max(0, p - q)."""
    if q is not None:
        ids, probs = sampler.distribution(row, mask)
        if rng.random() * float(q[1][q[0] == draft].sum()) < float(probs[ids == draft].sum()):
            return draft
    return sampler.sample(row, mask)


def exact_distribution(model, prompt, settings) -> dict:
    """P(first N_TOKENS tokens) under plain sampling, from the sampler's own per-token
    distributions (penalties included) along every path."""
    out = {}

    def walk(prefix, p):
        if len(prefix) == N_TOKENS:
            out[tuple(prefix)] = p
            return
        sampler = Sampler(SamplerConfig(**settings, seed=0), model.vocab_size)
        sampler.start(prompt)
        for t in prefix:
            sampler.accept(t)
        ids, probs = sampler.distribution(model.logits(prompt + prefix)[-1])
        for i, q in zip(ids.tolist(), probs.tolist()):
            if q > 0:
                walk(prefix + [i], p * q)
    walk([], 1.0)
    return out


def chi_square_p(counts: dict, exact: dict, n: int) -> float:
    """Goodness of fit of the counted sequences to `exact` (cells expected below 5
    pooled); the p-value by the Wilson-Hilferty approximation."""
    stat, pool_o, pool_e, cells = 0.0, 0.0, 0.0, 0
    for key, p in exact.items():
        e, o = n * p, counts.get(key, 0)
        if e < 5:
            pool_o, pool_e = pool_o + o, pool_e + e
        else:
            stat, cells = stat + (o - e) ** 2 / e, cells + 1
    assert sum(counts.values()) == n and set(counts) <= set(exact)  # nothing outside the support
    if pool_e > 0:
        stat, cells = stat + (pool_o - pool_e) ** 2 / pool_e, cells + 1
    df = cells - 1
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


def sample_counts(model, prompt, settings, **option) -> dict:
    counts = {}
    for seed in range(N_SAMPLES):
        ids = tuple(model.generate(prompt, max_new_tokens=N_TOKENS, seed=seed, return_result=True, **settings,
                                   **option).token_ids)
        counts[ids] = counts.get(ids, 0) + 1
    return counts


@pytest.mark.parametrize("settings", SAMPLED, ids=["plain-filters", "top-k-p-min-p-penalties"])
def test_sampled_distribution_is_the_targets(small_vocab, settings, always_draft):
    model, draft = small_vocab
    prompt = [1, 2, 3, 4, 1, 2, 3]
    exact = exact_distribution(model, prompt, settings)
    assert sum(exact.values()) == pytest.approx(1.0)
    runs = {"plain": {}, "prompt-lookup": dict(speculative="prompt-lookup"), "draft": dict(draft_model=draft)}
    for name, option in runs.items():
        p = chi_square_p(sample_counts(model, prompt, settings, **option), exact, N_SAMPLES)
        assert p > 1e-3, f"{name}: the sampled sequences do not follow the target distribution (p = {p:.2g})"


def test_a_wrong_rule_fails_the_distribution_test(small_vocab, always_draft, monkeypatch):
    """The test above has the power to catch a plausible mistake: on rejection, drawing
    from p instead of the residual max(0, p - q)."""
    model, draft = small_vocab
    prompt = [1, 2, 3, 4, 1, 2, 3]
    settings = SAMPLED[0]

    monkeypatch.setattr(sp, "verify_token", no_residual)
    exact = exact_distribution(model, prompt, settings)
    assert chi_square_p(sample_counts(model, prompt, settings, draft_model=draft), exact, N_SAMPLES) < 1e-6


# -- bad input --------------------------------------------------------------------

def test_bad_options_are_refused_by_name(chat, model_dir):
    other = hearthlm.load(model_dir("llama-mha"), n_threads=1)
    with pytest.raises(InvalidInputError, match="draft_model: its vocabulary has 257 tokens, the model's 384"):
        chat.generate("hello", draft_model=other)
    with pytest.raises(InvalidInputError, match="draft_model: expected a hearthlm Model"):
        chat.generate("hello", draft_model="some/folder")
    with pytest.raises(InvalidInputError, match="speculative: expected one of prompt-lookup"):
        chat.generate("hello", speculative="medusa")
    with pytest.raises(InvalidInputError, match="speculative, draft_model: give one"):
        chat.generate("hello", speculative="prompt-lookup", draft_model=chat)


def test_another_tokenizer_is_refused(chat_model_dir):
    bpe, spm = hearthlm.load(chat_model_dir("bpe")), hearthlm.load(chat_model_dir("spm"))
    if bpe.vocab_size == spm.vocab_size:
        with pytest.raises(InvalidInputError, match="draft_model: .* has another tokenizer"):
            bpe.generate("hello", draft_model=spm)
    else:
        with pytest.raises(InvalidInputError, match="draft_model: its vocabulary"):
            bpe.generate("hello", draft_model=spm)


def test_cli_lookup_and_draft(chat_model_dir, capsys):
    from hearthlm.cli import main
    folder = chat_model_dir("bpe")
    assert main(["generate", folder, "-p", "hello hello", "--max-tokens", "12", "--temperature", "0", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    for flags in (["--lookup"], ["--draft", folder]):
        assert main(["generate", folder, "-p", "hello hello", "--max-tokens", "12", "--temperature", "0",
                     "--json", *flags]) == 0
        g = json.loads(capsys.readouterr().out)
        assert g["token_ids"] == plain["token_ids"] and "accepted_tokens" in g
    assert main(["generate", folder, "-p", "hi", "--lookup", "--draft", folder]) == 1
    assert "--lookup, --draft: give one of them" in capsys.readouterr().err


def test_chat_app_lookup_and_draft(chat_model_dir):
    """`hearthlm chat --lookup` / `--draft MODEL` (piped): the same replies, and /stats
    reports the drafts."""
    import subprocess
    import sys
    folder = chat_model_dir("bpe")
    lines = "hello hello hello\nsay it again: hello hello\n"

    def run(*flags):
        done = subprocess.run([sys.executable, "-m", "hearthlm", "chat", folder, "--temperature", "0",
                               "--max-tokens", "24", "--threads", "1", *flags], input=lines + "/stats\n",
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split("\n")
    plain = run()
    for flags in (["--lookup"], ["--draft", folder]):
        out = run(*flags)
        assert out[:2] == plain[:2] and any("speculative:" in line and "drafted" in line for line in out)


def test_drafts_that_fail_stop_after_two_rounds_and_a_new_kind_starts_from_the_others():
    length = sp.DraftLength()
    for m in range(1, sp.MAX_DRAFT + 2):  # a tiny model's forwards: +19 % per extra token
        length.update(None, 0, 0, m, 1.0 + 0.19 * (m - 1))
    drafted = []
    for _ in range(sp.PROBE_EVERY - 1):  # text that never repeats: every first draft rejected
        k = length.choose(("text", 3), sp.MAX_DRAFT, 0.0)
        drafted.append(k)
        length.update(("text", 3), k, 0, k + 1, 1.0 + 0.19 * k)
    assert [k > 0 for k in drafted] == [True, True] + [False] * (sp.PROBE_EVERY - 3)
    pooled = length.acceptance.of(("text", 3))  # kinds not seen yet start from the pooled rate ...
    assert length.acceptance.of(("reference", 3)) == pooled < 0.2
    assert length.acceptance.of(("text", 1)) == pytest.approx(pooled / 3)  # ... less for a shorter match
    assert length.choose(("text", 2), sp.MAX_DRAFT, 0.0) == 0


def test_a_one_token_match_is_not_drafted_from_before_the_text_has_repeated():
    length = sp.DraftLength()
    for m in range(1, sp.MAX_DRAFT + 2):  # +25 % per extra token: one draft pays from a rate of 0.25
        length.update(None, 0, 0, m, 1.0 + 0.25 * (m - 1))
    assert length.choose(("text", 1), sp.MAX_DRAFT, 0.0) == 0 < length.choose(("text", 3), sp.MAX_DRAFT, 0.0)
    for _ in range(3):
        length.update(("text", 3), 4, 4, 5, 2.0)
    assert length.choose(("text", 1), sp.MAX_DRAFT, 0.0) > 0  # once drafts are kept, short matches pay too


def test_forward_costs_are_medians_that_a_stall_does_not_move():
    costs = sp.ForwardCosts(8)
    assert costs(3) == sp.cost_prior(3)  # nothing measured: the prior
    for seconds in (1.0, 1.02, 0.98, 30.0, 1.01):  # one stall of 30x
        costs.measure(1, seconds)
    assert costs(1) == 1.01 and costs(3) == pytest.approx(1.01 * sp.cost_prior(3))


def test_draft_length_grows_with_acceptance_and_stops_when_it_does_not_pay():
    length = sp.DraftLength()
    for m in range(1, sp.MAX_DRAFT + 2):  # a forward of m tokens: +10 % per extra token
        length.update(None, 0, 0, m, 1.0 + 0.1 * (m - 1))
    for _ in range(20):  # every draft accepted
        length.update("a", 4, 4, 5, 1.4)
    assert length.choose("a", sp.MAX_DRAFT, 0.0) == sp.MAX_DRAFT
    for _ in range(20):  # every draft rejected
        length.update("b", 2, 0, 3, 1.2)
    choices = [length.choose("b", sp.MAX_DRAFT, 0.0) for _ in range(3 * sp.PROBE_EVERY)]
    assert choices.count(0) == len(choices) - 3 and choices.count(1) == 3  # one probe every PROBE_EVERY
    assert length.choose("a", sp.MAX_DRAFT, 2.0) == 0  # drafting dearer than what it saves
    assert length.choose(None, sp.MAX_DRAFT, 0.0) == 0 == length.choose("a", 0, 0.0)


def test_prompt_lookup_drafts_from_a_reference_in_order():
    lookup = sp.PromptLookup()
    reference = [1, 2, 3, 9, 1, 2, 3, 7, 8]  # "1 2 3" twice: drafts follow the occurrence in use
    lookup.start([5, 6], reference)
    history = [5, 6, 1, 2, 3]
    assert lookup.kind(history) == ("reference", 3) and lookup.draft(history, 2) == ([9, 1], None)
    history += [9, 1, 2, 3]
    assert lookup.kind(history) == ("reference", 3) and lookup.draft(history, 4) == ([7, 8], None)  # to its end
    assert lookup.kind([5, 6, 4, 5]) == ("text", 1) and lookup.draft([5, 6, 4, 5], 2) == ([6, 4], None)
    assert lookup.kind([5, 6, 0]) is None


def test_logprobs_of_a_sampling_draft_model_are_the_target_distributions(chat, chat_draft, always_draft):
    """Accepted or redrawn, a token has the target's sampling distribution: its logprobs
    are those of that distribution (here temperature 0.8, filters off)."""
    sampling = dict(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    r = chat.generate("hello there", draft_model=chat_draft, max_new_tokens=24, logprobs=True, top_logprobs=3,
                      return_result=True, **sampling)
    assert r.drafted_tokens > 0 and len(r.logprobs) == len(r.token_ids)
    prompt = chat.tokenizer.encode("hello there")
    logits = chat.logits(prompt + r.token_ids)[len(prompt) - 1:len(prompt) - 1 + len(r.token_ids)] / 0.8
    expected = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    for e, token, row in zip(r.logprobs, r.token_ids, expected):
        assert e["logprob"] == pytest.approx(row[token], abs=1e-4)
        top = np.argsort(-row)[:3]
        assert [t["token"] for t in e["top_logprobs"]] == [chat.tokenizer.decode([int(i)], skip_special_tokens=False)
                                                          for i in top]
        np.testing.assert_allclose([t["logprob"] for t in e["top_logprobs"]], row[top], atol=1e-4)
