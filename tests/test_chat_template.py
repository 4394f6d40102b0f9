"""Chat templates render exactly as transformers' apply_chat_template, for the common
families; bad roles raise; BOS is never doubled."""
import json
import os
from types import SimpleNamespace

import pytest

import tiny_tokenizers
from hearthlm import InvalidInputError, ModelFormatError
from hearthlm.chat_template import BUILTIN_TEMPLATES, ChatTemplate, read_template
from hearthlm.tokenizer import Tokenizer

CUSTOM = ("{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
          "{{ m | tojson }}{% if loop.index >= 3 %}{% break %}{% endif %}\n{% endfor %}"
          "{{ strftime_now('%Y') }}{% if add_generation_prompt %}>{% endif %}")
SYSTEM = [{"role": "system", "content": "You are terse. Café ☕."}]
TURNS = [{"role": "user", "content": "  What is 2+2? <tag> \"quoted\" 日本語 😀 "},
         {"role": "assistant", "content": "4."},
         {"role": "user", "content": "And times three?"}]
# template -> does it accept a system message
FAMILIES = {"chatml": True, "llama3": True, "llama2": True, "mistral": False, "zephyr": True,
            "gemma": False, "custom": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name in FAMILIES:
        folder = str(tmp_path_factory.mktemp(f"tmpl-{name}"))
        source = CUSTOM if name == "custom" else read_template(name)[0]
        out[name] = tiny_tokenizers.add_tokenizer(folder, "bpe", chat_template=source)
    return out


def ours(folder, template=None):
    return ChatTemplate.for_model(SimpleNamespace(path=folder, tokenizer=Tokenizer(folder)), template)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_matches_transformers(folders, name):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(folders[name])
    mine = ours(folders[name])
    for messages in ([SYSTEM[0]] + TURNS, TURNS, TURNS[:1]):
        for gen in (True, False):
            if messages[0]["role"] == "system" and not FAMILIES[name]:
                with pytest.raises(Exception):
                    hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
                with pytest.raises(InvalidInputError, match="rejected by the chat template"):
                    mine.render(messages, gen)
                continue
            expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert mine.render(messages, gen) == expected


@pytest.mark.parametrize("name", ["mistral", "gemma", "llama2"])
def test_bad_role_order_raises(folders, name):
    messages = [TURNS[0], TURNS[0]]
    with pytest.raises(InvalidInputError, match="alternate"):
        ours(folders[name]).render(messages)


def test_no_double_bos(folders):
    """llama3's template writes BOS itself: tokenized without adding another, the ids
    equal transformers' (which never adds special tokens to a rendered chat)."""
    from transformers import AutoTokenizer

    folder = folders["llama3"]
    tok = Tokenizer(folder)
    ids = ours(folder).encode(tok, TURNS)
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    hf = AutoTokenizer.from_pretrained(folder)
    assert ids == list(hf.apply_chat_template(TURNS, tokenize=True, add_generation_prompt=True)["input_ids"])
    # a template without BOS gets the tokenizer's own (its post-processor adds <s>)
    chatml = ChatTemplate.for_model(SimpleNamespace(path=folder, tokenizer=tok), "chatml").encode(tok, TURNS)
    assert chatml[0] == tok.bos_token_id and chatml[1] != tok.bos_token_id


def test_missing_template_names_the_folder(tmp_path):
    folder = tiny_tokenizers.add_tokenizer(str(tmp_path), "bpe", chat_template=None)
    with pytest.raises(ModelFormatError, match=str(tmp_path)) as e:
        ours(folder)
    assert "chatml" in str(e.value)
    assert ours(folder, "chatml").render(TURNS[:1]).startswith("<|im_start|>user")
    path = tmp_path / "mine.jinja"
    path.write_text("{{ messages[0]['content'] }}!")
    assert ours(folder, str(path)).render(TURNS[2:]) == "And times three?!"
    with pytest.raises(InvalidInputError, match="neither a built-in"):
        ours(folder, "no-such-template")
    # transformers >= 4.43 saves the template as chat_template.jinja beside the config
    (tmp_path / "chat_template.jinja").write_text("[{{ messages | length }}]")
    assert ours(folder).render(TURNS) == "[3]"


def test_template_list_and_syntax_errors(tmp_path):
    folder = tiny_tokenizers.add_tokenizer(str(tmp_path), "bpe", chat_template=None)
    config_path = os.path.join(folder, "tokenizer_config.json")
    config = json.load(open(config_path))
    config["chat_template"] = [{"name": "tool_use", "template": "tools"},
                               {"name": "default", "template": "default {{ messages | length }}"}]
    json.dump(config, open(config_path, "w"))
    assert ours(folder).render(TURNS) == "default 3"
    with pytest.raises(ModelFormatError, match="syntax error"):
        ChatTemplate("{% for %}", "test")
    with pytest.raises(InvalidInputError, match="role"):
        ours(folder, "chatml").render([{"content": "no role"}])
    assert set(BUILTIN_TEMPLATES) >= {"chatml", "llama3", "llama2", "mistral", "zephyr", "gemma"}
