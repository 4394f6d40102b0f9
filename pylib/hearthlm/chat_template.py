"""Chat templates: OpenAI-style messages -> the prompt text a chat model was trained on.

The template is the model's own Jinja `chat_template` (tokenizer_config.json, or a
chat_template.jinja file next to it), rendered the way transformers'
apply_chat_template renders it: a sandboxed environment with trim_blocks,
lstrip_blocks, loop controls and the `{% generation %}` tag, `raise_exception`,
`tojson`, `strftime_now`, the special tokens (`bos_token`, `eos_token`, ...),
`add_generation_prompt`, `tools` and `documents`; message keys set to None are
dropped and `reasoning` / `thinking` / `reasoning_content` alias each other. For
model.chat, an assistant message's tool calls in OpenAI's form carry their arguments
as JSON text; templates index them as objects, so they are parsed first.
A model without one can borrow a built-in (BUILTIN_TEMPLATES) or a .jinja file.
`apply_chat_template` is transformers' function of the same name (the tokenizer's
method delegates to it).
"""
from __future__ import annotations

import functools
import json
import os
from datetime import datetime
from typing import Optional

from .errors import InvalidInputError, ModelFormatError

TEMPLATE_DIR = os.path.join(os.path.dirname(__file__), "chat_templates")
BUILTIN_TEMPLATES = sorted(f[:-len(".jinja")] for f in os.listdir(TEMPLATE_DIR) if f.endswith(".jinja"))
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def token_text(value) -> Optional[str]:
    """tokenizer_config stores special tokens as strings or {"content": ...} objects."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def special_tokens(tokenizer) -> dict:
    """{"bos_token": "<s>", ...}: the template variables of tokenizer_config's special tokens."""
    found = {name: token_text(tokenizer.config.get(name)) for name in SPECIAL_TOKENS}
    return {k: v for k, v in found.items() if v is not None}


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` (marks assistant text for training
        masks in transformers): renders its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which prompts must not have.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols, Generation])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


@functools.lru_cache(maxsize=32)
def _compiled(source: str):
    """Compiling a template takes longer than rendering it: once per source text."""
    return _environment().from_string(source)


class ChatTemplate:
    def __init__(self, source: str, origin: str, special_tokens: Optional[dict] = None):
        """source: Jinja text; origin: where it came from, for error messages;
        special_tokens: {"bos_token": "<s>", ...} visible to the template."""
        import jinja2

        self.source = source
        self.origin = origin
        self.special_tokens = dict(special_tokens or {})
        try:
            self._template = _compiled(source)
        except jinja2.TemplateSyntaxError as e:
            raise ModelFormatError(f"{origin}: chat template has a syntax error at line {e.lineno}: "
                                   f"{e.message}") from None

    @classmethod
    def for_model(cls, model, template: Optional[str] = None) -> "ChatTemplate":
        """The model's own template, or `template`: a built-in name (chatml, llama3, ...)
        or the path of a .jinja file."""
        if model.tokenizer is None:
            raise ModelFormatError(f"{model.path}: no tokenizer.json, so it cannot chat")
        return cls.for_tokenizer(model.tokenizer, template, model.path)

    @classmethod
    def for_tokenizer(cls, tokenizer, template: Optional[str] = None,
                      folder: Optional[str] = None) -> "ChatTemplate":
        """As for_model, for a hearthlm Tokenizer (whose folder holds the template)."""
        if template is not None:
            source, origin = read_template(template)
        else:
            source, origin = model_template(folder or os.path.dirname(tokenizer.path), tokenizer)
        return cls(source, origin, special_tokens(tokenizer))

    def render(self, messages: list, add_generation_prompt: bool = True, openai_tool_calls: bool = True,
               **variables) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]);
        openai_tool_calls: parse tool calls' JSON-text arguments (OpenAI's form)."""
        messages = _plain_messages(messages, openai_tool_calls)
        try:
            return self._template.render({**self.special_tokens, "messages": messages,
                                          "add_generation_prompt": add_generation_prompt, **variables})
        except Exception as e:  # the template's own raise_exception, or its code failing on these messages
            raise InvalidInputError(f"messages: rejected by the chat template ({self.origin}): "
                                    f"{type(e).__name__}: {e}") from None

    def encode(self, tokenizer, messages: list, add_generation_prompt: bool = True,
               tools: Optional[list] = None) -> list[int]:
        """Rendered and tokenized. A template that writes BOS itself gets no second one."""
        text = self.render(messages, add_generation_prompt, **({"tools": tools} if tools is not None else {}))
        bos = tokenizer.bos_token
        return tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos)))


def read_template(name_or_path: str) -> tuple[str, str]:
    if name_or_path in BUILTIN_TEMPLATES:
        path = os.path.join(TEMPLATE_DIR, name_or_path + ".jinja")
    elif os.path.isfile(name_or_path):
        path = name_or_path
    else:
        raise InvalidInputError(f"template: {name_or_path!r} is neither a built-in "
                                f"({', '.join(BUILTIN_TEMPLATES)}) nor a .jinja file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"template: cannot read {path}: {e}") from None


def model_template(folder: str, tokenizer, name: str = "default") -> tuple[str, str]:
    """tokenizer_config.json's chat_template (a string, or a list of named ones: take
    `name`, else "default"), else chat_template.jinja in the folder."""
    config_path = os.path.join(folder, "tokenizer_config.json")
    named = named_templates(tokenizer)
    value = tokenizer.config.get("chat_template")
    if named:
        value = named.get(name, named.get("default"))
    if isinstance(value, str):
        return value, config_path
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        return read_template(jinja_path)
    raise ModelFormatError(
        f"{folder}: the model has no chat template (no \"chat_template\" in tokenizer_config.json, "
        f"no chat_template.jinja); give one: template= one of {', '.join(BUILTIN_TEMPLATES)} "
        f"or a .jinja file")


def named_templates(tokenizer) -> dict:
    value = tokenizer.config.get("chat_template")
    if not isinstance(value, list):
        return {}
    return {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}


def apply_chat_template(tokenizer, conversation, tools: Optional[list] = None, documents: Optional[list] = None,
                        chat_template: Optional[str] = None, add_generation_prompt: bool = False,
                        continue_final_message=False, tokenize: bool = True, padding=False,
                        truncation: bool = False, max_length: Optional[int] = None,
                        return_tensors: Optional[str] = None, return_dict: bool = True, **kwargs):
    """transformers' PreTrainedTokenizer.apply_chat_template for a hearthlm Tokenizer,
    with its defaults and results: the rendered text (tokenize=False), or the token ids
    of the text without added special tokens, as {"input_ids", "attention_mask"}
    (return_dict=True) or a list; a list of conversations gives a list of results.
    chat_template: a name of the model's named templates, a built-in, a .jinja file or
    Jinja source; with tools, a model's "tool_use" template is preferred. kwargs are
    template variables (e.g. enable_thinking=False)."""
    for name in ("sanitize_control_tokens", "return_assistant_tokens_mask", "tokenizer_kwargs"):
        if kwargs.pop(name, None):
            raise InvalidInputError(f"{name}: not supported by hearthlm's apply_chat_template")
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise InvalidInputError("conversation: expected a non-empty list of messages (or of conversations)")
    batched = isinstance(conversation[0], (list, tuple))
    if continue_final_message and add_generation_prompt:
        raise InvalidInputError("continue_final_message: cannot be combined with add_generation_prompt")
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise InvalidInputError(f"tools[{i}]: expected a JSON schema dict, got {type(tool).__name__}")
    template = _template_for(tokenizer, chat_template, tools)
    texts = [_render_one(template, conv, add_generation_prompt, continue_final_message,
                         tools=tools, documents=documents, **kwargs)
             for conv in (conversation if batched else [conversation])]
    if not tokenize:
        return texts if batched else texts[0]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    if truncation and max_length is not None:
        left = tokenizer.config.get("truncation_side") == "left"
        ids = [x[len(x) - max_length:] if left and len(x) > max_length else x[:max_length] for x in ids]
    mask = [[1] * len(x) for x in ids]
    if padding:
        ids, mask = _pad(tokenizer, ids, mask, padding, max_length)
    out = {"input_ids": ids, "attention_mask": mask}
    if return_tensors is not None:
        out = {k: _tensor(v, return_tensors) for k, v in out.items()}
    elif not batched:
        out = {k: v[0] for k, v in out.items()}
    return out if return_dict else out["input_ids"]


def _template_for(tokenizer, chat_template: Optional[str], tools) -> ChatTemplate:
    named = named_templates(tokenizer)
    if chat_template is None or chat_template in named:
        name = chat_template or ("tool_use" if tools and "tool_use" in named else "default")
        source, origin = model_template(os.path.dirname(tokenizer.path), tokenizer, name)
    elif chat_template in BUILTIN_TEMPLATES or os.path.isfile(chat_template):
        source, origin = read_template(chat_template)
    else:
        source, origin = chat_template, "chat_template"
    return ChatTemplate(source, origin, special_tokens(tokenizer))


def _render_one(template: ChatTemplate, messages, add_generation_prompt: bool, continue_final_message, **variables):
    """One conversation; continue_final_message (True = "content", or a field name)
    cuts the text after the last message's field, as transformers does."""
    if not continue_final_message:
        return template.render(messages, add_generation_prompt, openai_tool_calls=False, **variables)
    field = continue_final_message if isinstance(continue_final_message, str) else "content"
    messages = _plain_messages(messages, openai_tool_calls=False)
    if not messages or messages[-1].get(field) is None:
        raise InvalidInputError(f"continue_final_message: the final message has no {field!r} to continue")
    last = messages[-1]
    final = last[field]
    if isinstance(final, list):
        blocks = [b for b in final if isinstance(b, dict) and "text" in b]
        if not blocks:
            raise InvalidInputError("continue_final_message: the final message has no text to continue")
        final, blocks[-1]["text"] = blocks[-1]["text"], blocks[-1]["text"] + CONTINUE_TAG
    else:
        last[field] = final + CONTINUE_TAG
    text = template.render(messages, add_generation_prompt, openai_tool_calls=False, **variables)
    tag = CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise InvalidInputError("continue_final_message: the chat template drops part of the final message")
    at = text.rindex(tag)
    return text[:at] if text[at:at + len(CONTINUE_TAG)] == CONTINUE_TAG else text[:at].rstrip()


def _pad(tokenizer, ids, mask, padding, max_length):
    pad_id = tokenizer.token_to_id(token_text(tokenizer.config.get("pad_token")) or "")
    if pad_id is None:
        raise InvalidInputError("padding: the tokenizer has no pad_token")
    width = max_length if padding == "max_length" and max_length else max(len(x) for x in ids)
    left = tokenizer.config.get("padding_side") == "left"
    pad = lambda x, v: ([v] * (width - len(x)) + x) if left else (x + [v] * (width - len(x)))
    return [pad(x, pad_id) for x in ids], [pad(m, 0) for m in mask]


def _tensor(rows, kind: str):
    if len({len(r) for r in rows}) > 1:
        raise InvalidInputError("return_tensors: the conversations have different lengths; pass padding=True")
    if kind == "np":
        import numpy as np
        return np.asarray(rows, dtype=np.int64)
    if kind == "pt":
        import torch
        return torch.tensor(rows, dtype=torch.long)
    raise InvalidInputError(f"return_tensors: expected 'np' or 'pt', got {kind!r}")


def _plain_messages(messages, openai_tool_calls: bool = True) -> list:
    """A JSON-plain copy: the template sees only dicts, lists, strings and numbers;
    keys set to None dropped, the reasoning fields aliased (as transformers does)."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidInputError(f"messages: expected a list of {{'role', 'content'}} dicts, "
                                f"got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidInputError(f"messages[{i}]: expected a dict with a 'role' string, got {m!r}")
    try:
        plain = json.loads(json.dumps(list(messages)))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"messages: not plain JSON data ({e})") from None
    for i, m in enumerate(plain):
        m = plain[i] = {k: v for k, v in m.items() if v is not None}
        reasoning = next((m[k] for k in REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = plain[i] = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        if not openai_tool_calls:
            continue
        for j, call in enumerate(m.get("tool_calls") or []):
            f = call.get("function") if isinstance(call, dict) else None
            if isinstance(f, dict) and isinstance(f.get("arguments"), str):
                try:
                    f["arguments"] = json.loads(f["arguments"])
                except ValueError as e:
                    raise InvalidInputError(f"messages[{i}].tool_calls[{j}].function.arguments: not JSON ({e})") from None
    return plain
