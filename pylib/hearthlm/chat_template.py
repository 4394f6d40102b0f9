"""Chat templates: OpenAI-style messages -> the prompt text a chat model was trained on.

The template is the model's own Jinja `chat_template` (tokenizer_config.json, or a
chat_template.jinja file next to it), rendered the way transformers'
apply_chat_template renders it: a sandboxed environment with trim_blocks,
lstrip_blocks and loop controls, `raise_exception`, `tojson`, `strftime_now`, the
special tokens (`bos_token`, `eos_token`, ...), `add_generation_prompt` and, when
given, `tools` (OpenAI-format tool definitions). An assistant message's tool calls in
OpenAI's form carry their arguments as JSON text; templates index them as objects, so
they are parsed first.
A model without one can borrow a built-in (BUILTIN_TEMPLATES) or a .jinja file.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Optional

from .errors import InvalidInputError, ModelFormatError
from .tokenizer import Tokenizer, token_text

TEMPLATE_DIR = os.path.join(os.path.dirname(__file__), "chat_templates")
BUILTIN_TEMPLATES = sorted(f[:-len(".jinja")] for f in os.listdir(TEMPLATE_DIR) if f.endswith(".jinja"))
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which prompts must not have.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


class ChatTemplate:
    def __init__(self, source: str, origin: str, special_tokens: Optional[dict] = None):
        """source: Jinja text; origin: where it came from, for error messages;
        special_tokens: {"bos_token": "<s>", ...} visible to the template."""
        import jinja2

        self.source = source
        self.origin = origin
        self.special_tokens = dict(special_tokens or {})
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ModelFormatError(f"{origin}: chat template has a syntax error at line {e.lineno}: "
                                   f"{e.message}") from None

    @classmethod
    def for_model(cls, model, template: Optional[str] = None) -> "ChatTemplate":
        """The model's own template, or `template`: a built-in name (chatml, llama3, ...)
        or the path of a .jinja file."""
        tokenizer = model.tokenizer
        if tokenizer is None:
            raise ModelFormatError(f"{model.path}: no tokenizer.json, so it cannot chat")
        special = {name: token_text(tokenizer.config.get(name)) for name in SPECIAL_TOKENS}
        special = {k: v for k, v in special.items() if v is not None}
        if template is not None:
            source, origin = read_template(template)
        else:
            source, origin = model_template(model.path, tokenizer)
        return cls(source, origin, special)

    def render(self, messages: list, add_generation_prompt: bool = True, **variables) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...])."""
        import jinja2

        messages = _plain_messages(messages)
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self.special_tokens, **variables)
        except jinja2.TemplateError as e:
            raise InvalidInputError(f"messages: rejected by the chat template ({self.origin}): {e}") from None

    def encode(self, tokenizer: Tokenizer, messages: list, add_generation_prompt: bool = True,
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


def model_template(folder: str, tokenizer: Tokenizer) -> tuple[str, str]:
    """tokenizer_config.json's chat_template (a string, or a list of named ones: take
    "default"), else chat_template.jinja in the folder."""
    config_path = os.path.join(folder, "tokenizer_config.json")
    value = tokenizer.config.get("chat_template")
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    if isinstance(value, str):
        return value, config_path
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        return read_template(jinja_path)
    raise ModelFormatError(
        f"{folder}: the model has no chat template (no \"chat_template\" in tokenizer_config.json, "
        f"no chat_template.jinja); give one: template= one of {', '.join(BUILTIN_TEMPLATES)} "
        f"or a .jinja file")


def _plain_messages(messages) -> list:
    """A JSON-plain copy: the template sees only dicts, lists, strings and numbers."""
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
        for j, call in enumerate(m.get("tool_calls") or []):
            f = call.get("function") if isinstance(call, dict) else None
            if isinstance(f, dict) and isinstance(f.get("arguments"), str):
                try:
                    f["arguments"] = json.loads(f["arguments"])
                except ValueError as e:
                    raise InvalidInputError(f"messages[{i}].tool_calls[{j}].function.arguments: not JSON ({e})") from None
    return plain
