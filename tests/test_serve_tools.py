"""hearthlm serve with tools and response_format, through the real `openai` client:
forced calls parse and validate, streamed call deltas add up to the whole reply, tool
results go back in, JSON replies validate, batched or not."""
import concurrent.futures
import json

import httpx
import jsonschema
import openai
import pytest

import hearthlm
import tool_models
from hearthlm.demo import demo_model_path
from hearthlm.serve import create_app
from serve_util import serve
from tool_models import MESSAGES, SCHEMAS, TOOLS

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    model = hearthlm.load(tool_models.build("qwen2.5", str(tmp_path_factory.mktemp("qwen"))))
    with serve(create_app(model, model_name="qwen", parallel=4, max_tokens=160)) as s:
        yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60), model, s


@pytest.fixture(scope="module")
def demo():
    with serve(create_app(hearthlm.load(demo_model_path()), model_name="demo", parallel=2, max_tokens=64)) as s:
        yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60), s


def forced(name=None):
    return {"type": "function", "function": {"name": name}} if name else "required"


def test_forced_calls_parse_validate_and_equal_the_library(qwen):
    client, model, _ = qwen
    for i, choice in enumerate([forced(), forced("add"), forced("get_weather")]):
        r = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS, tool_choice=choice,
                                           max_tokens=120, temperature=0.9, seed=i)
        (call,) = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and call.type == "function" and call.id
        if isinstance(choice, dict):
            assert call.function.name == choice["function"]["name"]
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        mine = model.chat(MESSAGES, tools=TOOLS, tool_choice=choice, max_new_tokens=120, temperature=0.9,
                          seed=i, return_result=True)
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in mine.tool_calls] == \
            [(call.function.name, call.function.arguments)]


def test_streamed_call_deltas_add_up_to_the_whole_reply(qwen):
    client, _, _ = qwen
    kw = dict(model="qwen", messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=120,
              temperature=0.7, seed=5)
    whole = client.chat.completions.create(**kw).choices[0]
    calls, reasons, content = {}, [], ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        choice = chunk.choices[0]
        reasons.append(choice.finish_reason)
        content += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            if d.id:
                assert d.index not in calls and d.type == "function"
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": d.function.arguments or ""}
            else:
                calls[d.index]["arguments"] += d.function.arguments
    (call,) = calls.values()
    assert reasons[-1] == "tool_calls" and content == (whole.message.content or "")
    assert len([r for r in reasons if r is None]) > 3  # the arguments came in pieces
    (expected,) = whole.message.tool_calls
    assert (call["name"], call["arguments"]) == (expected.function.name, expected.function.arguments)


def test_tool_results_go_back_in_and_none_means_text(qwen):
    client, _, _ = qwen
    r = client.chat.completions.create(model="qwen", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                       max_tokens=120, seed=1)
    call = r.choices[0].message.tool_calls[0]
    follow = MESSAGES + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                         {"role": "tool", "tool_call_id": call.id, "content": '{"result": 42}'}]
    r2 = client.chat.completions.create(model="qwen", messages=follow, tools=TOOLS, tool_choice="none",
                                        max_tokens=6, temperature=0.0)
    assert r2.choices[0].message.tool_calls is None and r2.choices[0].finish_reason == "length"
    tokens = httpx.post(str(client.base_url).replace("/v1/", "") + "/tokenize",
                        json={"messages": follow}).json()
    assert tokens  # the conversation with a tool result renders


def test_json_replies_validate_batched_and_streamed(demo):
    client, _ = demo
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}

    def ask(i):
        r = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Who?"}],
                                           response_format=fmt, max_tokens=60, temperature=1.0, seed=i)
        return r.choices[0]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for choice in pool.map(ask, range(6)):
            assert choice.finish_reason == "stop", choice
            jsonschema.validate(json.loads(choice.message.content), PERSON)
    chunks = list(client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hi"}],
                                                 response_format=fmt, max_tokens=60, temperature=0.8, seed=2,
                                                 stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in chunks)), PERSON)


@pytest.mark.parametrize("body, param", [
    ({"tools": TOOLS}, "tools"),  # the demo model's template has no tool-call format
    ({"tools": TOOLS, "tool_choice": 5}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0]"),
])
def test_bad_tool_and_format_requests_get_400(demo, body, param):
    _, server = demo
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert server.wait_idle(2.0)


def test_a_bad_tool_choice_names_it(qwen):
    _, _, server = qwen
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"messages": MESSAGES, "tools": TOOLS, "tool_choice": "sometimes"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice", r.text
