"""Tool calling with real chat templates (tests/data/chat_templates) and tiny random
models: the tools reach the template as transformers passes them, every forced call
parses and its arguments validate against the tool's schema, replies are parsed for
each family's format, and tool results go back in."""
import json
import os

import jsonschema
import pytest

import hearthlm
from hearthlm import InvalidInputError
from hearthlm.chat_template import ChatTemplate
from hearthlm.constraints import Constraint
from hearthlm.tool_calls import ToolCalling, Triggered, parse, template_format

TEMPLATES = os.path.join(os.path.dirname(__file__), "data", "chat_templates")
FAMILIES = {  # name: (template file, format, eos token)
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", "<|im_end|>"),
    "hermes3": ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "hermes", "<|im_end|>"),
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", "<|eot_id|>"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", "</s>"),
}
MARKERS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]  # Qwen: added, not special
SPECIAL = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>", "[INST]", "[/INST]",
           "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name", "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
            "required": ["a", "b"], "additionalProperties": False}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "system", "content": "You can call tools."}, {"role": "user", "content": "Weather in Oslo?"}]
SETTINGS = [dict(temperature=0.0), dict(temperature=0.7), dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0),
            dict(temperature=1.0, top_k=5, repeat_penalty=1.5), dict(temperature=1.0, top_p=0.6, presence_penalty=1.0)]


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    import tiny_models
    import tiny_tokenizers

    built = {}

    def get(name):
        if name not in built:
            template, _, eos = FAMILIES[name]
            folder = str(tmp_path_factory.mktemp(name))
            tiny_models.build("llama-mha", folder, vocab_size=384, max_position_embeddings=2048)
            tok = tiny_tokenizers.byte_level_bpe()
            tok.add_tokens(MARKERS)
            tok.add_special_tokens(SPECIAL)
            tok.save(os.path.join(folder, "tokenizer.json"))
            with open(os.path.join(TEMPLATES, template)) as f:
                source = f.read()
            with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
                json.dump({"bos_token": "<s>", "eos_token": eos, "chat_template": source,
                           "tokenizer_class": "PreTrainedTokenizerFast"}, f)
            built[name] = folder
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
    if family == "mistral-nemo":  # its template allows no system message between turns
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


def test_auto_constrains_the_call_once_the_marker_is_sampled(family_dir):
    model = hearthlm.load(family_dir("qwen2.5"))
    calling = ToolCalling(model, ChatTemplate.for_model(model).source, TOOLS, "auto")
    c = calling.constraint()
    assert isinstance(c, Triggered) and c.next_mask() is None  # free text at first
    c.accept(c.trigger)
    mask = c.next_mask()
    allowed = [i for i in range(model.vocab_size) if mask[i // 32] >> (i % 32) & 1]
    assert model.tokenizer.decode(allowed) == "\n"  # the grammar took over: the call's layout
    c.rewind(1)
    assert c.next_mask() is None and c.n_accepted == 0
    other = calling.constraint()
    other.accept(model.tokenizer.encode("Hi", add_special_tokens=False)[0])
    assert other.next_mask() is None and not other.done  # a text reply stays free
    g = model.chat(MESSAGES, tools=TOOLS, max_new_tokens=8, temperature=0.0, return_result=True)
    assert g.finish_reason == "length" and g.tool_calls is None  # the random model did not call


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
    (dict(tools=TOOLS, stream=True), "stream: replies with tools are not streamed"),
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
