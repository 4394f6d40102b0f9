"""Tool calling with real chat templates (tests/data/chat_templates) and tiny random
models: the tools reach the template as transformers passes them, every forced call
parses and its arguments validate against the tool's schema, replies are parsed for
each family's format, and tool results go back in."""
import json
import os

import jsonschema
import pytest

import hearthlm
import tool_models
from hearthlm import InvalidInputError
from hearthlm.chat_template import ChatTemplate
from hearthlm.constraints import Constraint
from hearthlm.tool_calls import ToolCalling, Triggered, parse, template_format
from tool_models import FAMILIES, MESSAGES, SCHEMAS, SETTINGS, TEMPLATES, TOOLS


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    built = {}

    def get(name):
        if name not in built:
            built[name] = tool_models.build(name, str(tmp_path_factory.mktemp(name)))
        return built[name]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_tools_reach_the_template_as_transformers_passes_them(family_dir, family):
    from transformers import AutoTokenizer

    folder = family_dir(family)
    model = hearthlm.load(folder)
    history = MESSAGES + [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "abcDEF123", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "abcDEF123", "name": "get_weather", "content": '{"temp": 3}'}]
    if family in ("mistral-nemo", "mistral-small-3.2"):  # no system message between turns
        history = history[1:]
    ours = ChatTemplate.for_model(model).render(history, tools=TOOLS)
    theirs_history = json.loads(json.dumps(history))
    theirs_history[-2]["tool_calls"][0]["function"]["arguments"] = {"city": "Oslo", "unit": "celsius"}
    theirs = AutoTokenizer.from_pretrained(folder).apply_chat_template(
        theirs_history, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    assert "get_weather" in ours and "Add two integers" in ours and "temp" in ours


@pytest.mark.parametrize("family", FAMILIES)
def test_every_forced_call_parses_and_validates(family_dir, family):
    model = hearthlm.load(family_dir(family))
    for choice in ("required", *({"type": "function", "function": {"name": n}} for n in SCHEMAS)):
        for i, settings in enumerate(SETTINGS if choice == "required" else SETTINGS[::2]):
            g = model.chat(MESSAGES, tools=TOOLS, tool_choice=choice, max_new_tokens=120, seed=i,
                           return_result=True, **settings)
            assert g.finish_reason == "tool_calls", (family, settings, g.text)
            (call,) = g.tool_calls
            assert call["type"] == "function" and call["id"]
            name = call["function"]["name"]
            if isinstance(choice, dict):
                assert name == choice["function"]["name"]
            jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[name])


def test_call_results_go_back_in(family_dir):
    model = hearthlm.load(family_dir("qwen2.5"))
    g = model.chat(MESSAGES, tools=TOOLS, tool_choice="required", max_new_tokens=120, seed=0, return_result=True)
    call = g.tool_calls[0]
    follow = MESSAGES + [{"role": "assistant", "content": g.text, "tool_calls": g.tool_calls},
                         {"role": "tool", "tool_call_id": call["id"], "content": '{"result": 42}'}]
    prompt = ChatTemplate.for_model(model).render(follow, tools=TOOLS)
    assert "<tool_response>\n{\"result\": 42}\n</tool_response>" in prompt
    assert call["function"]["arguments"] in prompt  # the call as the model wrote it, arguments as JSON
    reply = model.chat(follow, tools=TOOLS, tool_choice="none", max_new_tokens=5, temperature=0.0,
                       return_result=True)
    assert reply.tool_calls is None and reply.finish_reason == "length"


def allowed(model, mask):
    return [i for i in range(model.vocab_size) if mask[i // 32] >> (i % 32) & 1]


def test_auto_constrains_the_call_once_the_marker_is_sampled(family_dir):
    model = hearthlm.load(family_dir("qwen2.5"))
    calling = ToolCalling(model, ChatTemplate.for_model(model).source, TOOLS, "auto")
    c = calling.constraint()
    (trigger,) = c.triggers
    assert isinstance(c, Triggered) and c.next_mask() is None  # free text at first
    c.accept(trigger)
    assert model.tokenizer.decode(allowed(model, c.next_mask())) == "\n"  # the grammar took over
    c.rewind(1)
    assert c.next_mask() is None and c.n_accepted == 0
    other = calling.constraint()
    text = model.tokenizer.encode("Hi there", add_special_tokens=False)
    for t in text:
        other.accept(t)
    assert other.next_mask() is None and not other.done  # a text reply stays free...
    other.accept(trigger)  # ...and a call after text is constrained (Qwen writes text, then calls)
    assert other.next_mask() is not None
    call = model.tokenizer.encode('\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n', add_special_tokens=False)
    for t in call + [model.tokenizer.token_to_id("</tool_call>")]:
        assert other.next_mask()[t // 32] >> (t % 32) & 1
        other.accept(t)
    assert other.next_mask() is None and not other.done  # the call is over: free text, or another call
    other.rewind(len(call) + 1)  # back into the call, replayed
    assert other.next_mask() is not None and other.n_accepted == len(text) + 1
    g = model.chat(MESSAGES, tools=TOOLS, max_new_tokens=8, temperature=0.0, return_result=True)
    assert g.finish_reason == "length" and g.tool_calls is None  # the random model did not call


def test_auto_llama3_constrains_a_reply_that_opens_as_a_call(family_dir):
    model = hearthlm.load(family_dir("llama3.1"))
    c = ToolCalling(model, ChatTemplate.for_model(model).source, TOOLS, "auto").constraint()
    brace = model.tokenizer.encode("{", add_special_tokens=False)[0]
    assert brace in c.triggers and c.next_mask() is None
    c.accept(brace)
    assert model.tokenizer.decode(allowed(model, c.next_mask())) == '"'  # {"name": ... follows
    late = ToolCalling(model, ChatTemplate.for_model(model).source, TOOLS, "auto").constraint()
    late.accept(model.tokenizer.encode("x", add_special_tokens=False)[0])
    late.accept(brace)
    assert late.next_mask() is None  # only a reply that opens with the call is one


REPLIES = {  # a reply in each format, with text around the calls
    "hermes": 'Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": {"c": [2, "}"]}}}\n</tool_call>\n'
              '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo \\"N\\"", "unit": "celsius"}}\n'
              '</tool_call>\nDone.',
    "mistral": 'Sure [TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}, '
               '{"name": "get_weather", "arguments": {"city": "Oslo"}}] ok',
    "llama3": '{"name": "add", "parameters": {"a": 5, "b": {"x": "}"}}}',
    "mistral-args": 'Sure [TOOL_CALLS]add[ARGS]{"a": 1, "b": {"c": "]"}}[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}',
    "granite": '<|tool_call|>[{"name": "add", "arguments": {"a": 1, "b": 2}}, '
               '{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
}


@pytest.mark.parametrize("family", ["qwen2.5", "mistral-nemo", "llama3.1", "mistral-small-3.2", "granite-3.3"])
def test_streamed_calls_add_up_to_the_parsed_reply(family_dir, family):
    from hearthlm.tool_calls import CallStream

    model = hearthlm.load(family_dir(family))
    calling = ToolCalling(model, ChatTemplate.for_model(model).source, TOOLS, "auto")
    text = REPLIES[calling.format]
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    stream = CallStream(calling)
    content, calls, views = "", {}, []
    for event in [e for t in ids for e in stream.add(t)] + stream.finish():
        if isinstance(event, str):
            content += event
        elif "id" in event:
            assert event["index"] == len(calls) and event["function"]["arguments"] == ""
            calls[event["index"]] = {"id": event["id"], "name": event["function"]["name"], "arguments": ""}
        else:
            calls[event["index"]]["arguments"] += event["function"]["arguments"]
        views.append((content, [c["arguments"] for c in calls.values()]))
    expected_content, expected = parse(text, calling.format, calling.names)
    assert content == expected_content == stream.content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == \
        [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in expected]
    assert [c["id"] for c in calls.values()] == [c["id"] for c in stream.calls()]
    assert len(expected) == (1 if calling.format == "llama3" else 2)
    # it streamed, not all at the end: the text and each call's arguments in several pieces
    assert len({v[0] for v in views}) > (2 if expected_content else 0)
    assert len({tuple(v[1]) for v in views}) > 4 * len(expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_streamed_forced_call_equals_the_unstreamed_one(family_dir, family):
    model = hearthlm.load(family_dir(family))
    kw = dict(tools=TOOLS, tool_choice="required", max_new_tokens=120, seed=3, temperature=0.8)
    whole = model.chat(MESSAGES, return_result=True, **kw)
    stream = model.chat(MESSAGES, stream=True, **kw)
    events = list(stream)
    assert all(isinstance(e, dict) for e in events if not isinstance(e, str))
    arguments = "".join(e["function"]["arguments"] for e in events if isinstance(e, dict))
    (call,) = stream.result.tool_calls
    assert stream.result.finish_reason == whole.finish_reason == "tool_calls"
    assert arguments == call["function"]["arguments"] == whole.tool_calls[0]["function"]["arguments"]
    assert call["function"]["name"] == whole.tool_calls[0]["function"]["name"]
    assert events[0]["id"] == call["id"] and stream.result.text == whole.text
    jsonschema.validate(json.loads(arguments), SCHEMAS[call["function"]["name"]])


def test_parse_each_format():
    names = ["get_weather", "add"]
    content, calls = parse('Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
                           '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>', "hermes", names)
    assert content == "Let me check." and [c["function"]["name"] for c in calls] == ["add", "get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1, "b": 2}
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    content, calls = parse('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}, '
                           '{"name": "add", "arguments": {"a": 3, "b": 4}}]', "mistral", names)
    assert content == "" and len(calls) == 2 and len(calls[0]["id"]) == 9 and calls[0]["id"].isalnum()
    content, calls = parse('<|python_tag|>{"name": "add", "parameters": {"a": 5, "b": 6}}', "llama3", names)
    assert content == "" and json.loads(calls[0]["function"]["arguments"]) == {"a": 5, "b": 6}
    for text, fmt in (('<tool_call>{"name": "add", "arguments": {"a": 1</tool_call>', "hermes"),  # bad JSON
                      ('<tool_call>{"name": "rm", "arguments": {}}</tool_call>', "hermes"),        # unknown tool
                      ('[TOOL_CALLS][{"name": "add"', "mistral"),
                      ('[TOOL_CALLS]add[ARGS]{"a": 1', "mistral-args"),
                      ('[TOOL_CALLS]rm[ARGS]{}', "mistral-args"),
                      ('The answer is {"name": "add"}', "llama3")):
        assert parse(text, fmt, names) == (text.strip(), [])


def test_template_formats():
    expected = {f: fmt for f, fmt, _ in FAMILIES.values()}
    expected["meta-llama-Llama-3.3-70B-Instruct.jinja"] = "llama3"
    expected["Qwen-Qwen3-0.6B.jinja"] = "hermes"  # Gemma 2, Phi-3.5, SmolLM3, DeepSeek-R1-Distill: none
    for file in os.listdir(TEMPLATES):
        if file.endswith(".jinja"):
            with open(os.path.join(TEMPLATES, file)) as f:
                assert template_format(f.read()) == expected.get(file), file


@pytest.mark.parametrize("options, message", [
    (dict(tools=[]), "tools: expected a non-empty list"),
    (dict(tools=[{"type": "function"}]), r"tools\[0\]: expected"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": 3}}]), "parameters"),
    (dict(tools=TOOLS + TOOLS[:1]), r"tools\[2\]: a second tool named 'get_weather'"),
    (dict(tools=TOOLS, tool_choice="always"), "tool_choice: expected"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "rm"}}), "tool_choice: expected"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}],
          tool_choice="required"), "(?s)tools: .*Invalid type: nope"),
    (dict(tools=TOOLS, tool_choice="required", json_schema={"type": "object"}), "json_schema: not with tools"),
])
def test_bad_tool_requests(family_dir, options, message):
    model = hearthlm.load(family_dir("qwen2.5"))
    with pytest.raises(InvalidInputError, match=message):
        model.chat(MESSAGES, max_new_tokens=4, **options)


def test_a_template_without_a_tool_format_is_refused(family_dir):
    model = hearthlm.load(family_dir("qwen2.5"))
    with pytest.raises(InvalidInputError, match="defines no tool-call format"):
        model.chat([{"role": "user", "content": "hi"}], tools=TOOLS,
                   template=os.path.join(TEMPLATES, "google-gemma-2-2b-it.jinja"))
    assert Constraint.from_options(model) is None
