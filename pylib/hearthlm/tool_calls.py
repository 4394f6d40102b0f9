"""Tool calling in OpenAI's format, over the model's own chat template.

    g = model.chat(messages, tools=[{"type": "function", "function": {"name": "get_weather",
                   "parameters": {...JSON schema...}}}], tool_choice="auto", return_result=True)
    g.tool_calls   # [{"id": "call_…", "type": "function", "function": {"name", "arguments": "{…}"}}]

The tools go to the chat template as its `tools` variable (as transformers does), and
the reply is parsed into calls in the format the template teaches (FORMATS):
- hermes: `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, one block per call
  (Qwen2.5, Hermes 2 Pro / 3);
- mistral: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` (Mistral Nemo / v3);
- llama3: the whole reply is `{"name": …, "parameters": {…}}` (Llama 3.1 / 3.2 / 3.3).
Templates without a tool-call format (Gemma 2, Phi-3.5) raise InvalidInputError.

tool_choice: "auto" (default) lets the model answer in text or call; when its first
token is the format's opening marker (a single token such as `<tool_call>` or
`[TOOL_CALLS]`), the rest of the call is constrained. "required" constrains the reply
to one call of any tool, {"type": "function", "function": {"name": N}} to a call of N:
the call's name and arguments are then those the tool's `parameters` schema allows, so
they always parse and validate. "none": the tools are shown but nothing is parsed.
A reply with calls has finish_reason "tool_calls" and text = what is outside them.
"""
from __future__ import annotations

import json
import re
import secrets
import string
from typing import Optional

from .constraints import JSON_LAYOUT, Constraint
from .errors import InvalidInputError

FORMATS = {  # name: (opening marker, closing marker, the arguments' key)
    "hermes": ("<tool_call>", "</tool_call>", "arguments"),
    "mistral": ("[TOOL_CALLS]", None, "arguments"),
    "llama3": (None, None, "parameters"),
}


def template_format(source: str) -> Optional[str]:
    """The tool-call format a chat template teaches, from its text."""
    if "<tool_call>" in source:
        return "hermes"
    if "[TOOL_CALLS]" in source:
        return "mistral"
    if '"parameters": ' in source and "<|start_header_id|>" in source:
        return "llama3"
    return None


def check_tools(tools) -> list:
    if not isinstance(tools, (list, tuple)) or not tools:
        raise InvalidInputError(f"tools: expected a non-empty list of {{\"type\": \"function\", \"function\": "
                                f"{{\"name\", \"parameters\"}}}}, got {tools!r}")
    names = set()
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise InvalidInputError(f"tools[{i}]: expected {{\"type\": \"function\", \"function\": {{\"name\": "
                                    f"..., \"parameters\": {{...}}}}}}, got {t!r}")
        if not isinstance(f.get("parameters", {}), dict):
            raise InvalidInputError(f"tools[{i}].function.parameters: expected a JSON schema object")
        if f["name"] in names:
            raise InvalidInputError(f"tools[{i}]: a second tool named {f['name']!r}")
        names.add(f["name"])
    return list(tools)


class ToolCalling:
    """One chat request's tools: the constraint to generate under, and the parser."""

    def __init__(self, model, template_source: str, tools, tool_choice=None):
        self.tools = check_tools(tools)
        self.format = template_format(template_source)
        if self.format is None:
            raise InvalidInputError("tools: this chat template defines no tool-call format "
                                    f"(known: {', '.join(FORMATS)})")
        self.model, self.choice = model, "auto" if tool_choice is None else tool_choice
        self.names = [t["function"]["name"] for t in self.tools]
        if isinstance(self.choice, dict):
            name = (self.choice.get("function") or {}).get("name")
            if self.choice.get("type", "function") != "function" or name not in self.names:
                raise InvalidInputError(f"tool_choice: expected {{\"type\": \"function\", \"function\": {{\"name\": "
                                        f"one of {self.names}}}}}, got {self.choice!r}")
        elif self.choice not in ("auto", "none", "required"):
            raise InvalidInputError(f"tool_choice: expected \"auto\", \"none\", \"required\" or "
                                    f"{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {self.choice!r}")

    def constraint(self):
        """What the reply is generated under (None: free text)."""
        if self.choice == "none":
            return None
        names = [self.choice["function"]["name"]] if isinstance(self.choice, dict) else self.names
        grammar = Constraint(self.model, self._lark(names), "tools")
        if self.choice != "auto":
            return grammar
        opening = FORMATS[self.format][0]
        trigger = self.model.tokenizer.token_to_id(opening) if opening else None
        return None if trigger is None else Triggered(grammar, trigger)

    def _lark(self, names) -> str:
        opening, closing, key = FORMATS[self.format]
        calls = []
        for t in self.tools:
            f = t["function"]
            if f["name"] in names:
                schema = {"type": "object", "properties": {"name": {"const": f["name"]},
                                                           key: f.get("parameters") or {"type": "object"}},
                          "required": ["name", key], "additionalProperties": False, "x-guidance": JSON_LAYOUT}
                calls.append(f"%json {json.dumps(schema)}")
        rules = ["call: " + " | ".join(f"call{i}" for i in range(len(calls)))]
        rules += [f"call{i}: {c}" for i, c in enumerate(calls)]
        if self.format == "hermes":
            start = f'{self._marker(opening)} "\\n" call "\\n" {self._marker(closing)}'
        elif self.format == "mistral":
            start = f'{self._marker(opening)} "[" call "]"'
        else:
            start = "call"
        return "\n".join([f"start: {start}"] + rules)

    def _marker(self, text: str) -> str:
        """A marker in Lark: its token when the vocabulary has it as one, else the text."""
        token = self.model.tokenizer.token_to_id(text)
        return f"<[{token}]>" if token is not None else json.dumps(text)

    def apply(self, result) -> None:
        """Parse the finished Generation's reply into result.tool_calls."""
        if self.choice == "none" or result.finish_reason == "cancelled":
            return
        raw = self.model.tokenizer.decode(result.token_ids, skip_special_tokens=False)
        content, calls = parse(raw, self.format, self.names)
        if calls:
            result.text, result.tool_calls, result.finish_reason = content, calls, "tool_calls"


def parse(text: str, fmt: str, names) -> tuple[str, list]:
    """-> (the text outside the calls, calls in OpenAI's form). A call that does not
    parse, or names no known tool, stays in the text."""
    opening, closing, key = FORMATS[fmt]
    found = []  # (start, end, name, arguments)
    if fmt == "hermes":
        for m in re.finditer(re.escape(opening) + r"\s*(.*?)\s*" + re.escape(closing), text, re.S):
            call = _call(m.group(1), key, names)
            if call:
                found.append((m.start(), m.end(), *call))
    elif fmt == "mistral":
        at = text.find(opening)
        if at >= 0:
            try:
                items, end = json.JSONDecoder().raw_decode(text, at + len(opening))
            except ValueError:
                items, end = None, at
            calls = [_call(json.dumps(c), key, names) for c in items] if isinstance(items, list) else []
            if calls and all(calls):  # the first spans the whole list, so none of it stays in the text
                found = [(at, end, *calls[0])] + [(end, end, *c) for c in calls[1:]]
    else:
        body = text.strip()
        body = body[len("<|python_tag|>"):] if body.startswith("<|python_tag|>") else body
        call = _call(body, key, names) or _call(body, "arguments", names)
        if call:
            found.append((0, len(text), *call))
    content, at = [], 0
    for start, end, _, _ in found:
        content.append(text[at:start])
        at = end
    content.append(text[at:])
    calls = [{"id": call_id(fmt), "type": "function",
              "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}
             for _, _, name, args in found]
    return "".join(content).strip(), calls


def _call(text: str, key: str, names):
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names or not isinstance(obj.get(key, {}), dict):
        return None
    return obj["name"], obj.get(key, {})


def call_id(fmt: str) -> str:
    """Mistral's templates require 9 alphanumeric characters; OpenAI's ids look like call_…"""
    alnum = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return alnum if fmt == "mistral" else "call_" + alnum


class Triggered:
    """tool_choice "auto": free text, unless the reply opens with the call marker's
    token; then the rest of the reply follows the call grammar."""

    def __init__(self, grammar: Constraint, trigger: int):
        self.grammar, self.trigger = grammar, trigger
        self.n_accepted, self.active = 0, False

    def next_mask(self):
        return self.grammar.next_mask() if self.active else None

    def accept(self, token: int) -> None:
        if self.n_accepted == 0 and token == self.trigger:
            self.active = True
        if self.active:
            self.grammar.accept(token)
        self.n_accepted += 1

    def rewind(self, n: int) -> None:
        if not isinstance(n, int) or not 0 <= n <= self.n_accepted:
            raise InvalidInputError(f"rewind: n must be in [0, {self.n_accepted}], got {n!r}")
        if self.active:
            self.grammar.rewind(min(n, self.grammar.n_accepted))
            self.active = self.grammar.n_accepted > 0
        self.n_accepted -= n

    @property
    def done(self) -> bool:
        return self.active and self.grammar.done
