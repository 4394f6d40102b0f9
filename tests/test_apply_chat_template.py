"""model.tokenizer.apply_chat_template gives transformers' results for the same arguments,
on real models' templates (tests/data/chat_templates): text and token ids, with and
without a generation prompt, tools, template variables, continue_final_message,
batches, tensors and padding; hearthlm.Conversation is public."""
import os

import numpy as np
import pytest

import hearthlm
import tiny_tokenizers
from hearthlm import InvalidInputError
from hearthlm.tokenizer import Tokenizer

DATA = os.path.join(os.path.dirname(__file__), "data", "chat_templates")
TEMPLATES = sorted(f for f in os.listdir(DATA) if f.endswith(".jinja"))
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CHAT = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2? Café ☕"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And times three?"}]
TOOL_CHAT = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
             {"role": "tool", "name": "get_weather", "content": "sunny"}]


def pair(tmp_path, source):
    from transformers import AutoTokenizer

    folder = tiny_tokenizers.add_tokenizer(str(tmp_path), "bpe", chat_template=source)
    return AutoTokenizer.from_pretrained(folder), Tokenizer(folder)


def same(hf, ours, *args, **kwargs):
    """Equal results, or both refuse."""
    try:
        expected = hf.apply_chat_template(*args, **kwargs)
    except Exception:
        with pytest.raises(InvalidInputError):
            ours.apply_chat_template(*args, **kwargs)
        return False
    got = ours.apply_chat_template(*args, **kwargs)
    if isinstance(expected, str) or (isinstance(expected, list) and not hasattr(expected, "keys")):
        assert got == expected
    else:
        assert sorted(got) == sorted(k for k in expected.keys() if k in ("input_ids", "attention_mask"))
        for k in got:
            assert np.array_equal(np.asarray(got[k]), np.asarray(expected[k])), k
    return True


@pytest.mark.parametrize("name", TEMPLATES)
def test_real_templates_match_transformers(tmp_path, name):
    hf, ours = pair(tmp_path, open(os.path.join(DATA, name), encoding="utf-8").read())
    rendered = 0
    for messages in (CHAT, CHAT[1:], CHAT[1:2]):
        for gen in (False, True):
            rendered += same(hf, ours, messages, tokenize=False, add_generation_prompt=gen)
            same(hf, ours, messages, add_generation_prompt=gen)                          # defaults: dict of ids
            same(hf, ours, messages, tokenize=True, return_dict=False, add_generation_prompt=gen)
    rendered += same(hf, ours, CHAT[1:2], tools=[WEATHER], tokenize=False, add_generation_prompt=True)
    rendered += same(hf, ours, TOOL_CHAT, tools=[WEATHER], tokenize=False, add_generation_prompt=True)
    assert rendered >= 2, "the template rendered (almost) nothing: the comparison would be empty"
    same(hf, ours, CHAT[1:2], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    same(hf, ours, CHAT[1:3], tokenize=False, continue_final_message=True)
    same(hf, ours, [CHAT[1:2], CHAT[1:]], tokenize=False, add_generation_prompt=True)  # a batch


def test_tensors_padding_and_truncation(tmp_path):
    hf, ours = pair(tmp_path, open(os.path.join(DATA, "Qwen-Qwen3-0.6B.jinja"), encoding="utf-8").read())
    hf.pad_token = ours.config["pad_token"] = "<unk>"
    same(hf, ours, CHAT[1:2], add_generation_prompt=True, return_tensors="np")
    same(hf, ours, CHAT[1:2], add_generation_prompt=True, return_tensors="pt")
    same(hf, ours, [CHAT[1:2], CHAT[1:]], padding=True, return_tensors="np")
    same(hf, ours, CHAT[1:], truncation=True, max_length=7, return_dict=False)
    with pytest.raises(InvalidInputError, match="return_tensors"):
        ours.apply_chat_template([CHAT[1:2], CHAT[1:]], return_tensors="np")


def test_bad_arguments_name_the_parameter(tmp_path):
    _, ours = pair(tmp_path, tiny_tokenizers.CHATML_WITH_BOS)
    with pytest.raises(InvalidInputError, match="conversation"):
        ours.apply_chat_template([])
    with pytest.raises(InvalidInputError, match="continue_final_message"):
        ours.apply_chat_template(CHAT, continue_final_message=True, add_generation_prompt=True)
    with pytest.raises(InvalidInputError, match=r"tools\[0\]"):
        ours.apply_chat_template(CHAT, tools=[print])
    with pytest.raises(InvalidInputError, match="return_assistant_tokens_mask"):
        ours.apply_chat_template(CHAT, return_assistant_tokens_mask=True)


def test_demo_model_prompt_is_what_chat_feeds():
    model = hearthlm.load(hearthlm.demo_model_path())
    messages = [{"role": "user", "content": "What is 12 plus 7?"}]
    ids = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    result = model.chat(messages, max_new_tokens=4, temperature=0, return_result=True)
    assert result.prompt_tokens == len(ids)
    assert model.generate(ids, max_new_tokens=4, temperature=0) == result.text


def test_conversation_is_public():
    model = hearthlm.load(hearthlm.demo_model_path())
    conv = hearthlm.Conversation(model, system="Be brief.", temperature=0, max_new_tokens=8)
    first = "".join(conv.ask("What is 12 plus 7?"))
    assert first == model.chat([{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is 12 plus 7?"}], max_new_tokens=8, temperature=0)
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant"]
    with pytest.raises(InvalidInputError, match="temperature"):
        hearthlm.Conversation(model, sampler=conv.sampler, temperature=0)
