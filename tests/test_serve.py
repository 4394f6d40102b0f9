"""hearthlm serve: the real `openai` client and raw HTTP against uvicorn on 127.0.0.1."""
import concurrent.futures
import gc
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import hearthlm
from hearthlm.demo import demo_model_path
from hearthlm.serve import create_app
from hearthlm.serve.scheduler import Finished, Job, Scheduler
from hearthlm.generation import make_sampler
from serve_util import free_port, serve, serve_process, slow_steps

QUESTIONS = ["What is 12 plus 7?", "What is 3 times 4?", "What is 20 minus 5?", "What is 9 plus 9?",
             "What is 6 times 7?", "What is 15 minus 8?", "What is 2 plus 2?", "What is 8 times 3?"]
NAME = "hearthlm-demo"
KEY = "sk-test-key"


@pytest.fixture(scope="module")
def demo():
    return hearthlm.load(demo_model_path())


@pytest.fixture(scope="module")
def server(demo):
    with serve(create_app(demo, model_name=NAME, parallel=4, max_queue=16, max_tokens=128)) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def user(text):
    return [{"role": "user", "content": text}]


def log_softmax(logits):
    z = logits.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    return z - (np.log(np.exp(z - top).sum(axis=-1, keepdims=True)) + top)


# -- the openai client -------------------------------------------------------------

def test_chat_matches_the_library(demo, client):
    expected = demo.chat(user(QUESTIONS[0]), max_new_tokens=16, temperature=0, return_result=True)
    t0 = time.time()
    r = client.chat.completions.create(model=NAME, messages=user(QUESTIONS[0]), max_tokens=16, temperature=0)
    assert r.choices[0].message.content == expected.text and expected.text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == NAME
    assert t0 - 2 <= r.created <= time.time() + 1
    assert r.usage.prompt_tokens == expected.prompt_tokens
    assert r.usage.completion_tokens == expected.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_stream_equals_the_whole_reply(client):
    whole = client.chat.completions.create(model=NAME, messages=user(QUESTIONS[1]), max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=NAME, messages=user(QUESTIONS[1]), max_tokens=16,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_sse_wire_format(server):
    body = {"model": NAME, "messages": user(QUESTIONS[2]), "stream": True, "max_tokens": 8}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    objects = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(o["object"] == "chat.completion.chunk" and "usage" not in o for o in objects)


def test_completions_and_logprobs_match_the_model(demo, client):
    prompt = "What is 4 plus 4?"
    expected = demo.generate(prompt, max_new_tokens=6, temperature=0, return_result=True)
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    choice = r.choices[0]
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert choice.text == expected.text
    assert choice.finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    ids = demo.tokenizer.encode(prompt)
    lp = log_softmax(demo.logits(ids + expected.token_ids)[len(ids) - 1:])
    got = choice.logprobs
    assert len(got.token_logprobs) == len(expected.token_ids)
    for i, token in enumerate(expected.token_ids):
        assert got.token_logprobs[i] == pytest.approx(lp[i, token], abs=1e-4)
        top = list(got.top_logprobs[i].values())
        assert len(top) == 3 and top == sorted(top, reverse=True)
        assert top[0] == pytest.approx(lp[i].max(), abs=1e-4)  # greedy: the top token was chosen
    assert got.text_offset[0] == 0
    streamed = client.completions.create(model=NAME, prompt=prompt, max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected.text


def test_chat_logprobs(demo, client):
    r = client.chat.completions.create(model=NAME, messages=user(QUESTIONS[3]), max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for c in content:
        assert c.logprob <= 0 and len(c.top_logprobs) == 2
        assert c.top_logprobs[0].token == c.token and c.top_logprobs[0].logprob == pytest.approx(c.logprob)
        assert c.bytes == list(c.token.encode())


def test_sampling_options_and_stop(demo, client):
    a = client.chat.completions.create(model=NAME, messages=user(QUESTIONS[4]), max_tokens=12, temperature=1.0,
                                       top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.2,
                                       extra_body={"top_k": 20, "min_p": 0.01, "repetition_penalty": 1.1})
    b = client.chat.completions.create(model=NAME, messages=user(QUESTIONS[4]), max_tokens=12, temperature=1.0,
                                       top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.2,
                                       extra_body={"top_k": 20, "min_p": 0.01, "repetition_penalty": 1.1})
    assert a.choices[0].message.content == b.choices[0].message.content  # same seed, same reply
    question = user("Reverse the word lemon.")
    full = demo.chat(question, max_new_tokens=16, temperature=0)
    assert len(full) >= 4
    stop = full[2:4]
    r = client.chat.completions.create(model=NAME, messages=question, max_tokens=16, temperature=0,
                                       stop=["zzz", stop])
    assert r.choices[0].message.content == full[:full.index(stop)] and r.choices[0].finish_reason == "stop"
    r = client.completions.create(model=NAME, prompt="What is", max_tokens=2, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length"


def test_models_tokenize_detokenize_health(demo, client, server):
    assert [m.id for m in client.models.list()] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    ids = demo.tokenizer.encode("What is 5 plus 5?")
    r = httpx.post(server.url + "/tokenize", json={"content": "What is 5 plus 5?"})
    assert r.status_code == 200 and r.json()["tokens"] == ids
    r = httpx.post(server.url + "/detokenize", json={"tokens": ids})
    assert r.json()["content"] == demo.tokenizer.decode(ids)
    r = httpx.post(server.url + "/tokenize", json={"messages": user("Hi")})
    assert r.json()["tokens"] == hearthlm.chat_template.ChatTemplate.for_model(demo).encode(demo.tokenizer,
                                                                                             user("Hi"))
    assert httpx.post(server.url + "/detokenize", json={"tokens": [10**6]}).status_code == 400
    h = httpx.get(server.url + "/health").json()
    assert h["status"] == "ok" and h["slots"] == 4


def test_eight_concurrent_clients_are_batched(demo, client, server):
    expected = [demo.chat(user(q), max_new_tokens=16, temperature=0) for q in QUESTIONS]
    batches = []
    restore = slow_steps(server.scheduler, 0.002, batches)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda q: client.chat.completions.create(
                model=NAME, messages=user(q), max_tokens=16, temperature=0).choices[0].message.content, QUESTIONS))
    finally:
        restore()
    assert replies == expected
    assert max(batches) == 4  # all four slots ran in one step; the other requests queued


def test_no_job_outlives_its_request(client, server):
    def ask(i):
        r = client.chat.completions.create(model=NAME, messages=user(QUESTIONS[i]), max_tokens=8, stream=i % 2 == 0)
        return list(r) if i % 2 == 0 else r

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(ask, range(len(QUESTIONS))))
    assert server.wait_idle(2.0)
    gc.collect()
    assert [o for o in gc.get_objects() if type(o) is Job] == []


def test_follow_up_turn_reuses_the_cached_prefix(demo, client):
    first = user("What is 7 plus 8?")
    r1 = client.chat.completions.create(model=NAME, messages=first, max_tokens=16, temperature=0)
    turn2 = first + [{"role": "assistant", "content": r1.choices[0].message.content},
                     {"role": "user", "content": "What is 2 times 3?"}]
    r2 = client.chat.completions.create(model=NAME, messages=turn2, max_tokens=16, temperature=0)
    template = hearthlm.chat_template.ChatTemplate.for_model(demo)
    fed = template.encode(demo.tokenizer, first) + demo.chat(first, max_new_tokens=16, temperature=0,
                                                             return_result=True).token_ids
    ids2 = template.encode(demo.tokenizer, turn2)
    assert r2.usage.prompt_tokens == len(ids2)
    assert r2.usage.prompt_tokens_details.cached_tokens == len(os.path.commonprefix([fed, ids2]))
    assert r2.usage.prompt_tokens_details.cached_tokens > r1.usage.prompt_tokens  # turn 1 and its reply
    assert r2.choices[0].message.content == demo.chat(turn2, max_new_tokens=16, temperature=0)


# -- cancellation and overload -----------------------------------------------------

@pytest.fixture(scope="module")
def endless(chat_model_dir):
    """A server whose model never ends a reply by itself (eos logit is 0), one slot."""
    model = hearthlm.load(chat_model_dir("bpe"))
    with serve(create_app(model, model_name="endless", parallel=1, max_queue=1)) as s:
        yield s


def test_disconnect_mid_stream_frees_the_slot(endless):
    s = endless.scheduler
    restore = slow_steps(s, 0.01)
    cancelled = s.stats.finished["cancelled"]
    produced = s.stats.completion_tokens
    try:
        body = {"messages": user("hello"), "stream": True, "max_tokens": 200}
        with httpx.stream("POST", endless.url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            next(line for line in lines if '"content"' in line and '"content": ""' not in line)
            assert s.busy_slots == 1
        assert endless.wait_idle(2.0)
        assert s.stats.finished["cancelled"] == cancelled + 1
        assert s.stats.completion_tokens - produced < 100  # stopped long before max_tokens
        # a non-streaming client that gives up frees its slot too
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(endless.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=0.3)
        assert endless.wait_idle(2.0)
        assert s.stats.finished["cancelled"] == cancelled + 2
    finally:
        restore()
    r = httpx.post(endless.url + "/v1/chat/completions", json={"messages": user("hi"), "max_tokens": 3})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"


def test_overload_is_refused_with_retry_after(endless):
    s = endless.scheduler
    restore = slow_steps(s, 0.01)
    body = {"messages": user("hello"), "stream": True, "max_tokens": 200}
    try:
        with httpx.stream("POST", endless.url + "/v1/chat/completions", json=body, timeout=30) as running, \
                httpx.stream("POST", endless.url + "/v1/chat/completions", json=body, timeout=30) as queued:
            assert running.status_code == 200 and queued.status_code == 200
            assert s.queue_depth == 1 or s.busy_slots == 1
            r = httpx.post(endless.url + "/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert endless.wait_idle(2.0)  # the queued request left the queue when its client closed
    finally:
        restore()


@pytest.mark.parametrize("method", ["_forward_step", "_sample"])
def test_a_failing_step_fails_its_requests_and_the_server_goes_on(server, method):
    def broken(*args):
        raise RuntimeError("injected failure")

    setattr(server.scheduler, method, broken)
    try:
        r = httpx.post(server.url + CHAT, json={"messages": user("hi"), "max_tokens": 4}, timeout=30)
        assert r.status_code == 500 and "injected failure" in r.json()["error"]["message"]
        body = {"messages": user("hi"), "max_tokens": 4, "stream": True}
        with httpx.stream("POST", server.url + CHAT, json=body, timeout=30) as r:
            lines = [line for line in r.iter_lines() if line]
        assert "injected failure" in json.loads(lines[-2][6:])["error"]["message"] and lines[-1] == "data: [DONE]"
    finally:
        vars(server.scheduler).pop(method)
    assert server.wait_idle(2.0)
    r = httpx.post(server.url + CHAT, json={"messages": user("What is 1 plus 1?"), "max_tokens": 4}, timeout=30)
    assert r.status_code == 200


# -- malformed requests ------------------------------------------------------------

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
LONG = " ".join(["What is 12 plus 7?"] * 60)     # > 256 tokens, the demo model's context
MEDIUM = " ".join(["What is 1 plus 1?"] * 16)    # ~170 tokens
BAD = [  # (path, body, param)
    (CHAT, b'{"messages": [', None),
    (CHAT, b"[1, 2]", None),
    (CHAT, {"model": NAME}, "messages"),
    (CHAT, {"messages": "hello"}, "messages"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0]"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, "max_tokens"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}, "max_tokens"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": True}, "max_tokens"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 129}, "max_tokens"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -5}, "max_completion_tokens"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, "top_p"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "top_k": 2.5}, "top_k"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "seed": "x"}, "seed"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "stop": 3}, "stop"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}},
     "stream_options"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}},
     "response_format"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "user": 5}, "user"),
    (CHAT, {"messages": [{"role": "user", "content": LONG}]}, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": MEDIUM}], "max_tokens": 120, "stream": True},
     "messages"),  # the prompt fits, but not with max_tokens
    (COMPLETIONS, {"prompt": 5}, "prompt"),
    (COMPLETIONS, {}, "prompt"),
    (COMPLETIONS, {"prompt": ["a", "b"]}, "prompt"),
    (COMPLETIONS, {"prompt": [1, 2, 10**6]}, None),
    (COMPLETIONS, {"prompt": LONG, "max_tokens": 8}, "prompt"),
    (COMPLETIONS, {"prompt": "hi", "logprobs": 6}, "logprobs"),
    (COMPLETIONS, {"prompt": "hi", "echo": True}, "echo"),
    (COMPLETIONS, {"prompt": "hi", "best_of": 3}, "best_of"),
    (COMPLETIONS, {"prompt": "hi", "n": 3}, "n"),
    (COMPLETIONS, {"prompt": "hi", "presence_penalty": float("inf")}, "presence_penalty"),
]


@pytest.mark.parametrize("path, body, param", BAD, ids=[f"{i}-{p[1:]}" for i, (p, _, _) in enumerate(BAD)])
def test_malformed_requests_get_400(server, path, body, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert server.wait_idle(2.0)


ODD_VALUES = [None, True, "x", -1, 0, 0.5, 1e308, 10**30, [], {}, [1], {"a": 1}, float("nan")]
FIELDS = ["model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
          "presence_penalty", "frequency_penalty", "repetition_penalty", "seed", "stop", "n", "stream",
          "stream_options", "logprobs", "top_logprobs", "user", "ignore_eos", "tools", "tool_choice",
          "response_format", "logit_bias"]


@pytest.mark.parametrize("path, base, extra", [
    (CHAT, {"messages": user("hi"), "max_tokens": 2}, ["messages"]),
    (COMPLETIONS, {"prompt": "hi", "max_tokens": 2}, ["prompt", "echo", "suffix", "best_of"])])
def test_no_field_value_gives_a_500(server, path, base, extra):
    with httpx.Client(timeout=30) as c:
        for field in FIELDS + extra:
            for value in ODD_VALUES:
                r = c.post(server.url + path, content=json.dumps({**base, field: value}))
                assert r.status_code in (200, 400), (field, value, r.text)
                assert r.status_code == 200 or set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert server.wait_idle(2.0)


def test_the_openai_client_sees_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=user("hi"), n=2)
    assert e.value.code == "unsupported_value" and e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt=LONG)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_other_http_errors_have_openai_shape(server):
    r = httpx.post(server.url + CHAT, content=b"x" * (2 << 20))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(server.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = httpx.get(server.url + CHAT)
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_api_key(demo):
    with serve(create_app(demo, model_name=NAME, parallel=1, api_key=KEY)) as s:
        assert httpx.get(s.url + "/health").status_code == 200  # probes need no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.post(s.url + CHAT, json={"messages": user("hi")}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/metrics").status_code == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0)
        assert good.chat.completions.create(model=NAME, messages=user("What is 1 plus 1?"), max_tokens=4).choices


# -- metrics, health while loading -------------------------------------------------

def test_metrics(client, server):
    client.chat.completions.create(model=NAME, messages=user(QUESTIONS[5]), max_tokens=8)
    httpx.post(server.url + CHAT, json={"messages": "x"})
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.text) for s in f.samples}
    assert samples[("hearthlm_http_requests_total", (("endpoint", CHAT), ("status", "200")))] >= 1
    assert samples[("hearthlm_http_requests_total", (("endpoint", CHAT), ("status", "400")))] >= 1
    assert samples[("hearthlm_completion_tokens_total", ())] >= 1
    assert samples[("hearthlm_prompt_tokens_total", ())] >= samples[("hearthlm_cached_prompt_tokens_total", ())]
    assert samples[("hearthlm_slots", ())] == 4 and samples[("hearthlm_slots_busy", ())] == 0
    assert samples[("hearthlm_queue_depth", ())] == 0
    assert samples[("hearthlm_batch_size", ())] >= 1
    assert samples[("hearthlm_tokens_per_second", ())] > 0
    assert samples[("hearthlm_time_to_first_token_seconds_count", ())] >= 1


def test_health_is_503_while_loading(demo):
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return demo

    with serve(create_app(slow_load, parallel=1), ready=False) as s:
        r = httpx.get(s.url + "/health")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"]
        r = httpx.post(s.url + CHAT, json={"messages": user("hi")})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        release.set()
        for _ in range(500):
            if httpx.get(s.url + "/health").status_code == 200:
                break
            time.sleep(0.01)
        assert httpx.get(s.url + "/health").json()["status"] == "ok"

    def broken():
        raise hearthlm.errors.ModelFormatError("/nowhere: not a directory")

    with serve(create_app(broken), ready=False) as s:
        for _ in range(500):
            if httpx.get(s.url + "/health").json()["status"] != "loading":
                break
            time.sleep(0.01)
        r = httpx.get(s.url + "/health")
        assert r.status_code == 503 and "not a directory" in r.json()["error"]


# -- the scheduler alone, and the command ------------------------------------------

def test_scheduler_runs_jobs_together_like_generate(demo):
    s = Scheduler(demo, parallel=3, max_queue=8)
    try:
        results, done = {}, threading.Event()
        prompts = [demo.tokenizer.encode(q) for q in QUESTIONS[:6]]

        def emit_for(i):
            def emit(ev):
                results.setdefault(i, []).append(ev)
                if isinstance(ev, Finished) and len(results) == 6 and all(
                        isinstance(r[-1], Finished) for r in results.values()):
                    done.set()
            return emit

        for i, p in enumerate(prompts):
            s.submit(Job(p, 10, make_sampler(demo, {"temperature": 0}), emit_for(i), context=p[-8:]))
        assert done.wait(30)
        for i, p in enumerate(prompts):
            expected = demo.generate(p, max_new_tokens=10, temperature=0, return_result=True)
            text = "".join(ev.text for ev in results[i][:-1])
            assert text == expected.text
            assert results[i][-1].completion_tokens == expected.completion_tokens
        assert s.busy_slots == 0 and s.queue_depth == 0
    finally:
        s.close()


def test_serve_command(tmp_path):
    with serve_process("--parallel", "2", env={**os.environ, "HEARTHLM_API_KEY": KEY}) as (url, _):
        assert httpx.get(url + "/v1/models").status_code == 401
        c = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        r = c.chat.completions.create(model="hearthlm-demo", messages=user("What is 12 plus 7?"), max_tokens=8)
        assert r.model == "hearthlm-demo" and r.choices[0].message.content
    bad = subprocess.run([sys.executable, "-m", "hearthlm", "serve", str(tmp_path / "missing"), "--port",
                          str(free_port())], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "hearthlm: error:" in bad.stderr and "no such folder" in bad.stderr
