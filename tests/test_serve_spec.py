"""hearthlm serve with speculative decoding (prompt lookup, a draft model): concurrent
greedy streams are the plain server's token for token (stop strings, max_tokens, eos,
json_schema, logprobs, cancellation); seeded sampling with prompt lookup draws what
plain sampling draws; sampling with a draft model keeps the target's distribution (a
chi-square test through the scheduler, which a wrong rule fails). The batched verify
forward, the per-job draft lengths, metrics, usage and the per-request opt-out."""
import concurrent.futures
import threading

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import hearthlm
import tiny_models
import tool_models
from hearthlm import InvalidInputError
from hearthlm import speculative as sp
from hearthlm.demo import demo_model_path
from hearthlm.generation import make_sampler
from hearthlm.serve import create_app, drafting
from hearthlm.serve import scheduler as sched_module
from hearthlm.serve.scheduler import Delta, Failed, Finished, Job, Scheduler
from hearthlm.session import SessionGroup
from serve_util import serve, serve_process, slow_steps
from test_speculative import N_SAMPLES, N_TOKENS, SAMPLED, chi_square_p, exact_distribution, no_residual
from tool_models import MESSAGES, TOOLS

PASSAGE = "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat."
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module", autouse=True)
def always_draft():
    """Draft as much as a step allows (up to 5): the adaptive split would stop drafting
    where it does not pay, and the demo model gains little from it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(drafting, "draft_lengths", lambda sequences, other, cost, seconds:
                   [min(limit, 5) for _, limit in sequences])
        yield


@pytest.fixture(scope="module")
def demo():
    return hearthlm.load(demo_model_path(), n_threads=1)


@pytest.fixture(scope="module")
def draft():
    return hearthlm.load(demo_model_path(), dtype="q4", n_threads=1)


SPECULATIONS = {"plain": None, "lookup": {"speculative": "prompt-lookup"}, "draft": "draft"}


@pytest.fixture(scope="module")
def servers(demo, draft):
    """name -> (server, openai client), started one at a time as a test asks."""
    apps = {}

    def get(name):
        if name not in apps:
            spec = SPECULATIONS[name]
            spec = {"draft_model": draft} if spec == "draft" else spec
            ctx = serve(create_app(demo, model_name="demo", parallel=4, max_queue=16, max_tokens=128,
                                   speculation=spec))
            s = ctx.__enter__()
            apps[name] = (ctx, s, openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0,
                                                timeout=60))
        return apps[name][1:]
    yield get
    for ctx, _, _ in apps.values():
        ctx.__exit__(None, None, None)


def user(text):
    return [{"role": "user", "content": text}]


def requests():
    """Requests of different lengths and kinds, sent at once: name -> (endpoint, kwargs)."""
    grounded = f"Repeat after me: {PASSAGE} Again: {PASSAGE} Again:"
    return {
        "grounded": ("completions", dict(prompt=grounded, max_tokens=60, ignore_eos=True, logprobs=2)),
        "short": ("completions", dict(prompt="Once upon a time", max_tokens=7, ignore_eos=True)),
        "eos": ("chat", dict(messages=user("What is 12 plus 7?"), max_tokens=100)),
        "chat-logprobs": ("chat", dict(messages=user(f"Repeat after me: {PASSAGE}"), max_tokens=50,
                                       logprobs=True, top_logprobs=2)),
        "json": ("chat", dict(messages=user("Give me a person as JSON."), max_tokens=60,
                              response_format={"type": "json_schema",
                                               "json_schema": {"name": "person", "schema": PERSON}})),
        "stream": ("chat-stream", dict(messages=user(f"Say this twice: {PASSAGE}"), max_tokens=40)),
    }


def ask(client, endpoint, kwargs):
    """-> (text, finish_reason, logprob tokens and values, usage)"""
    extra = {k: kwargs.pop(k) for k in ("ignore_eos", "speculative.n_max") if k in kwargs}
    if endpoint == "completions":
        r = client.completions.create(model="demo", temperature=0, extra_body=extra, **kwargs)
        c = r.choices[0]
        lp = (c.logprobs.tokens, c.logprobs.token_logprobs) if c.logprobs else None
        return c.text, c.finish_reason, lp, r.usage
    if endpoint == "chat":
        r = client.chat.completions.create(model="demo", temperature=0, extra_body=extra, **kwargs)
        c = r.choices[0]
        lp = ([e.token for e in c.logprobs.content], [e.logprob for e in c.logprobs.content]) if c.logprobs else None
        return c.message.content, c.finish_reason, lp, r.usage
    chunks = list(client.chat.completions.create(model="demo", temperature=0, stream=True, extra_body=extra,
                                                 stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, [c.choices[0].finish_reason for c in chunks if c.choices][-1], None, chunks[-1].usage


def ask_all(client, reqs):
    with concurrent.futures.ThreadPoolExecutor(len(reqs)) as pool:
        futures = {name: pool.submit(ask, client, endpoint, dict(kwargs)) for name, (endpoint, kwargs) in reqs.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_same(plain, spec):
    for name in plain:
        text, reason, lp, usage = plain[name]
        s_text, s_reason, s_lp, s_usage = spec[name]
        assert (s_text, s_reason) == (text, reason), name
        assert (s_usage.prompt_tokens, s_usage.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
        if lp is not None:
            assert s_lp[0] == lp[0]
            np.testing.assert_allclose(s_lp[1], lp[1], atol=1e-4)


@pytest.fixture(scope="module")
def plain_replies(servers):
    reqs = requests()
    plain = ask_all(servers("plain")[1], reqs)
    # a stop string from the middle of a reply, and a max_tokens that cuts one short
    text = plain["grounded"][0]
    reqs["stop"] = ("completions", dict(reqs["grounded"][1], stop=[text[len(text) // 2:len(text) // 2 + 5]]))
    reqs["cut"] = ("chat", dict(reqs["chat-logprobs"][1], max_tokens=9))
    plain.update(ask_all(servers("plain")[1], {k: reqs[k] for k in ("stop", "cut")}))
    return reqs, plain


@pytest.mark.parametrize("name", ["lookup", "draft"])
def test_greedy_streams_are_the_plain_servers(servers, plain_replies, name):
    reqs, plain = plain_replies
    assert plain["stop"][1] == "stop" and len(plain["stop"][0]) < len(plain["grounded"][0])
    assert plain["cut"][1] == "length" and plain["eos"][1] == "stop"
    server, client = servers(name)
    spec = ask_all(client, reqs)
    assert_same(plain, spec)
    drafted = [u.completion_tokens_details for _, _, _, u in spec.values()]
    assert all(d.accepted_prediction_tokens >= 0 and d.rejected_prediction_tokens >= 0 for d in drafted)
    assert sum(d.accepted_prediction_tokens for d in drafted) > 0  # drafts were kept, so the check was real
    assert server.wait_idle(2.0)


def test_metrics_count_drafts_and_the_opt_out_drafts_nothing(servers, plain_replies):
    reqs, plain = plain_replies
    server, client = servers("lookup")
    endpoint, kwargs = reqs["grounded"]
    before = draft_counters(server)
    text, reason, _, usage = ask(client, endpoint, dict(kwargs))
    after = draft_counters(server)
    details = usage.completion_tokens_details
    drafted = details.accepted_prediction_tokens + details.rejected_prediction_tokens
    assert text == plain["grounded"][0] and drafted > 0
    assert after["hearthlm_draft_tokens_total"] - before["hearthlm_draft_tokens_total"] == drafted
    assert (after["hearthlm_draft_accepted_tokens_total"] - before["hearthlm_draft_accepted_tokens_total"]
            == details.accepted_prediction_tokens)
    text, _, _, usage = ask(client, endpoint, dict(kwargs, **{"speculative.n_max": 0}))
    assert text == plain["grounded"][0]
    assert usage.completion_tokens_details.accepted_prediction_tokens == 0
    assert usage.completion_tokens_details.rejected_prediction_tokens == 0
    for bad in (-1, "3", 1.5):
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "hi", "speculative.n_max": bad}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "speculative.n_max"


def test_a_predicted_output_is_drafted_from_and_changes_nothing(servers):
    """OpenAI's `prediction`: prompt lookup drafts from it (the demo's refusal is in
    neither the prompt nor the template, so without it nearly every draft fails)."""
    server, client = servers("lookup")
    messages = user("Write a short story about a fox who learns to sail.")
    ask = lambda **kw: client.chat.completions.create(model="demo", temperature=0, messages=messages,
                                                      max_tokens=40, **kw)
    plain = ask()
    text = plain.choices[0].message.content
    assert text == "I can only do small arithmetic and word puzzles."
    for prediction in ({"type": "content", "content": text},
                       {"type": "content", "content": [{"type": "text", "text": text[:20]},
                                                       {"type": "text", "text": text[20:]}]}):
        r = ask(prediction=prediction)
        got = r.usage.completion_tokens_details
        assert r.choices[0].message.content == text and r.usage.completion_tokens == plain.usage.completion_tokens
        # every draft kept: 5 a step (always_draft) beside each step's own token
        assert got.rejected_prediction_tokens == 0
        assert got.accepted_prediction_tokens >= (r.usage.completion_tokens - 2) * 5 // 6
        assert got.accepted_prediction_tokens > plain.usage.completion_tokens_details.accepted_prediction_tokens
    r = ask(prediction={"type": "content", "content": "something else entirely, nothing like the reply"})
    assert r.choices[0].message.content == text  # a wrong prediction changes only the speed
    for bad, param in (("text", "prediction"), ({"type": "audio"}, "prediction"),
                       ({"type": "content", "content": 5}, "prediction.content"),
                       ({"type": "content", "content": [{"type": "image_url"}]}, "prediction.content[0]")):
        r = httpx.post(server.url + "/v1/chat/completions", json={"messages": messages, "prediction": bad}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, bad


def draft_counters(server):
    r = httpx.get(server.url + "/metrics")
    return {s.name: s.value for f in text_string_to_metric_families(r.text) for s in f.samples
            if s.name.startswith("hearthlm_draft")}


def test_a_plain_server_reports_no_drafts(servers, plain_replies):
    assert all(u.completion_tokens_details is None for _, _, _, u in plain_replies[1].values())


def test_seeded_sampling_with_lookup_draws_what_plain_draws(servers):
    body = dict(prompt=f"Repeat after me: {PASSAGE} Again: {PASSAGE}", max_tokens=40, temperature=0.9,
                seed=11, extra_body={"ignore_eos": True, "top_k": 20})
    # prompt lookup proposes drafts for sure: each token is one native draw, kept iff it equals the draft
    texts = [servers(name)[1].completions.create(model="demo", **body).choices[0].text for name in ("plain", "lookup")]
    assert texts[0] == texts[1] and texts[0]


def test_cancelling_mid_round_frees_the_slot(servers, plain_replies):
    reqs, plain = plain_replies
    server, client = servers("lookup")
    restore = slow_steps(server.scheduler, 0.05)
    try:
        stream = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=120, stream=True,
                                           temperature=0, extra_body={"ignore_eos": True})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        assert server.wait_idle(5.0)
    finally:
        restore()
    assert server.scheduler.stats.finished["cancelled"] >= 1
    assert ask(client, "completions", dict(reqs["grounded"][1]))[0] == plain["grounded"][0]


def test_tool_calls_are_the_plain_servers(tmp_path_factory):
    """Tool calls (the constraint's trigger and JSON arguments) with prompt lookup,
    greedy and seeded, sent at once."""
    model = hearthlm.load(tool_models.build("qwen2.5", str(tmp_path_factory.mktemp("qwen"))), n_threads=1)
    choices = ["required", {"type": "function", "function": {"name": "add"}}, "auto"]

    def calls(url, i):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        r = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS, tool_choice=choices[i % 3],
                                           max_tokens=100, temperature=0 if i < 3 else 0.8, seed=i)
        c = r.choices[0]
        return c.finish_reason, c.message.content, [(t.function.name, t.function.arguments)
                                                    for t in c.message.tool_calls or []]

    replies = []
    for spec in (None, {"speculative": "prompt-lookup"}):
        with serve(create_app(model, model_name="qwen", parallel=3, max_tokens=100, speculation=spec)) as s:
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                replies.append(list(pool.map(lambda i: calls(s.url, i), range(6))))
    assert replies[0] == replies[1]
    assert sum(reason == "tool_calls" for reason, _, _ in replies[0]) >= 4


# -- the scheduler: sampling with a draft model keeps the target's distribution ------------

@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    folders = [tiny_models.build("llama-mha", str(tmp_path_factory.mktemp(f"sv6-{i}")), vocab_size=6, seed=i)
               for i in (0, 7)]
    return [hearthlm.load(f, n_threads=1) for f in folders]


def scheduler_counts(scheduler, model, prompt, settings, n):
    counts, lock, done = {}, threading.Lock(), threading.Semaphore(0)

    def run(seed):
        tokens = []

        def emit(ev):
            if isinstance(ev, Delta) and ev.token is not None:
                tokens.append(ev.token)
            elif isinstance(ev, (Finished, Failed)):
                assert isinstance(ev, Finished), ev
                with lock:
                    counts[tuple(tokens)] = counts.get(tuple(tokens), 0) + 1
                done.release()
        return Job(prompt, N_TOKENS, make_sampler(model, dict(settings, seed=seed)), emit, ignore_eos=True)

    for start in range(0, n, 16):  # within the queue's bound
        batch = [run(seed) for seed in range(start, min(start + 16, n))]
        for job in batch:
            scheduler.submit(job)
        for _ in batch:
            done.acquire()
    return counts


@pytest.mark.parametrize("settings", SAMPLED, ids=["plain-filters", "top-k-p-min-p-penalties"])
def test_sampled_distribution_with_a_draft_model(small_vocab, settings):
    model, draft = small_vocab
    prompt = [1, 2, 3, 4, 1, 2, 3]
    exact = exact_distribution(model, prompt, settings)
    s = Scheduler(model, 4, n_ctx=32, draft_model=draft)
    try:
        counts = scheduler_counts(s, model, prompt, settings, N_SAMPLES)
        assert s.stats.drafted_tokens >= N_SAMPLES and s.stats.accepted_tokens > 0
    finally:
        s.close()
    p = chi_square_p(counts, exact, N_SAMPLES)
    assert p > 1e-3, f"the sampled sequences do not follow the target distribution (p = {p:.2g})"


def test_a_wrong_rule_fails_the_distribution_test(small_vocab, monkeypatch):
    """The test above can tell: drawing from p instead of the residual on rejection fails."""
    model, draft = small_vocab
    monkeypatch.setattr(sched_module, "verify_token", no_residual)
    prompt, settings = [1, 2, 3, 4, 1, 2, 3], SAMPLED[0]
    s = Scheduler(model, 4, n_ctx=32, draft_model=draft)
    try:
        counts = scheduler_counts(s, model, prompt, settings, N_SAMPLES)
    finally:
        s.close()
    assert chi_square_p(counts, exact_distribution(model, prompt, settings), N_SAMPLES) < 1e-6


# -- pieces ----------------------------------------------------------------------------------

def test_group_feed_tails_are_the_all_logits_rows(demo):
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, demo.vocab_size, n).tolist() for n in (5, 9, 3)]
    group = SessionGroup(demo, 3, n_ctx=64, max_tokens=64, max_logits=12)
    rows = group.feed([(s, p) for s, p in zip(group.sessions, prompts)], tails=[2, 9, 1]).copy()
    expected = np.concatenate([demo.session(n_ctx=64).feed(p, all_logits=True)[-n:]
                               for p, n in zip(prompts, (2, 9, 1))])
    np.testing.assert_allclose(rows, expected, atol=1e-4 * np.abs(expected).max())
    for tails, message in (([2, 2], "tails: expected"), ([0, 1, 1], "tails: expected"),
                           ([5, 9, 3], "tails: 17 rows")):
        with pytest.raises(InvalidInputError, match=message):
            group.feed([(s, p) for s, p in zip(group.sessions, prompts)], tails=tails)
    assert [len(s.tokens) for s in group.sessions] == [5, 9, 3]  # a refused feed changes nothing


def test_draft_lengths_go_where_acceptance_pays():
    cost = lambda m: 1.0 + 0.05 * (m - 1)
    assert sp.draft_lengths([(0.9, 10), (0.05, 10), (0.9, 0)], 0, cost, 0.0) == [10, 0, 0]
    high, low = sp.draft_lengths([(0.9, 10), (0.7, 10)], 0, cost, 0.0)
    assert high > low > 0
    assert sp.draft_lengths([(0.9, 10)], 0, lambda m: float(m), 0.0) == [0]  # a forward as dear as m tokens
    assert sp.draft_lengths([(0.9, 10)], 0, cost, 5.0) == [0]               # drafting dearer than it saves
    assert sp.draft_lengths([], 100, cost, 0.0) == []


def test_a_job_whose_drafts_fail_stops_drafting_but_probes(demo, monkeypatch):
    monkeypatch.setattr(drafting, "draft_lengths", sp.draft_lengths)  # the real split
    d = drafting.Drafting(demo, 2, 128, 64, "f32", speculative="prompt-lookup")
    for m in range(1, 30):
        d.costs.measure(m, 1.0 + 0.05 * (m - 1))
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7]
    good, bad = (d.start(Job(prompt, 100, make_sampler(demo, {}), print), i, prompt) for i in range(2))
    for _ in range(10):
        for n in range(1, sp.LOOKUP_NGRAM + 1):
            good.acceptance.update(("text", n), 10, 10)
            bad.acceptance.update(("text", n), 10, 0)
    assert good.acceptance.of(("text", 3)) > 0.95 and bad.acceptance.of(("text", 3)) < 0.05
    drafted = []
    for _ in range(2 * sp.PROBE_EVERY):
        d.propose([(good, 10), (bad, 10)], 0)
        drafted.append((len(good.drafts), len(bad.drafts)))
        assert good.drafts == [8, 5, 6, 7, 8, 5, 6, 7, 8, 5][:len(good.drafts)]
        good.drafts, bad.drafts = [], []
    assert all(g == 10 for g, _ in drafted)
    assert [b for _, b in drafted].count(1) == 2 and [b for _, b in drafted].count(0) == 2 * sp.PROBE_EVERY - 2


def test_a_new_job_starts_from_the_servers_acceptance(demo):
    d = drafting.Drafting(demo, 2, 128, 64, "f32", speculative="prompt-lookup")
    prompt = [5, 6, 7, 8, 5, 6, 7]
    first = d.start(Job(prompt, 100, make_sampler(demo, {}), print), 0, prompt)
    for _ in range(5):
        first.kind, first.drafts = ("text", 3), [1, 2, 3, 4]
        first.update(0)  # all rejected
    assert first.drafts == [] and d.acceptance.of(("text", 3)) == first.acceptance.of(("text", 3)) < 0.2
    second = d.start(Job(prompt, 100, make_sampler(demo, {}), print), 1, prompt)
    assert second.acceptance.of(("text", 3)) == d.acceptance.of(("text", 3))
    assert second.acceptance.of(("text", 2)) == d.acceptance.of(("text", 2)) < 0.2  # not seen: from the others


def test_bad_speculation_options_are_refused_by_name(demo, small_vocab):
    with pytest.raises(InvalidInputError, match="speculative: expected one of prompt-lookup"):
        Scheduler(demo, 1, speculative="ngram")
    with pytest.raises(InvalidInputError, match="speculative, draft_model: give one of them"):
        Scheduler(demo, 1, speculative="prompt-lookup", draft_model=demo)
    with pytest.raises(InvalidInputError, match="draft_model: its vocabulary has 6 tokens"):
        Scheduler(demo, 1, draft_model=small_vocab[0])


@pytest.mark.parametrize("flags", [["--lookup"], ["--draft", demo_model_path()]], ids=["lookup", "draft"])
def test_hearthlm_serve_speculation_flags(flags):
    with serve_process(*flags, "--parallel", "2") as (url, _):
        body = {"prompt": f"Repeat after me: {PASSAGE} Again: {PASSAGE}", "max_tokens": 30, "temperature": 0,
                "ignore_eos": True}
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200
        details = r.json()["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] + details["rejected_prediction_tokens"] > 0


def test_a_prompt_prefilled_in_chunks_joins_drafting_jobs(demo, draft):
    """A long prompt's chunks share steps with other jobs' drafts (scheduler level,
    16-token chunks); every job's tokens are the plain scheduler's."""
    tokenizer = demo.tokenizer
    first = tokenizer.encode(f"Repeat after me: {PASSAGE} Again:")
    second = tokenizer.encode(f"{PASSAGE} {PASSAGE[:40]}")

    def run(scheduler):
        out, started = {}, threading.Event()
        done = threading.Semaphore(0)

        def job(name, prompt):
            tokens = out.setdefault(name, [])

            def emit(ev):
                if isinstance(ev, Delta) and ev.token is not None:
                    tokens.append(ev.token)
                    if len(tokens) == 3:
                        started.set()
                elif isinstance(ev, (Finished, Failed)):
                    assert isinstance(ev, Finished), ev
                    done.release()
            return Job(prompt, 40, make_sampler(demo, {"temperature": 0}), emit, ignore_eos=True)
        scheduler.submit(job("first", first))
        assert started.wait(30)
        scheduler.submit(job("second", second))  # prefilled in chunks while "first" drafts
        done.acquire()
        done.acquire()
        scheduler.close()
        return out

    plain = run(Scheduler(demo, 2, n_ctx=256, prefill_chunk=16))
    for spec in ({"speculative": "prompt-lookup"}, {"draft_model": draft}):
        s = Scheduler(demo, 2, n_ctx=256, prefill_chunk=16, **spec)
        assert run(s) == plain and s.stats.accepted_tokens > 0


def test_default_parallel_counts_the_draft_models_cache(demo, draft, monkeypatch):
    per_slot = demo.session(n_ctx=256).memory_bytes + draft.session(n_ctx=256).memory_bytes
    pages = 6 * per_slot // 4096 + 1
    monkeypatch.setattr(sched_module.os, "sysconf", lambda name: pages if name == "SC_AVPHYS_PAGES" else 4096)
    assert sched_module.default_parallel(demo, 256, draft_model=draft, budget_fraction=1.0) == 6
    assert sched_module.default_parallel(demo, 256, budget_fraction=1.0) == 8  # the 8-slot cap
