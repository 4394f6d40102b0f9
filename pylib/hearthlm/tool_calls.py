"""Tool calling in OpenAI's format, over the model's own chat template.

    g = model.chat(messages, tools=[{"type": "function", "function": {"name": "get_weather",
                   "parameters": {...JSON schema...}}}], tool_choice="auto", return_result=True)
    g.tool_calls   # [{"id": "call_…", "type": "function", "function": {"name", "arguments": "{…}"}}]

The tools go to the chat template as its `tools` variable (as transformers does), and
the reply is parsed into calls in the format the template teaches (FORMATS):
- hermes: `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, one block per call
  (Qwen2.5, Hermes 2 Pro / 3);
- mistral: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` (Mistral Nemo / v3);
- mistral-args: `[TOOL_CALLS]name[ARGS]{…}` per call (Mistral Small 3.2, Devstral, Ministral 3);
- granite: `<|tool_call|>[{"name": …, "arguments": {…}}, …]` (Granite 3.x);
- llama3: the whole reply is `{"name": …, "parameters": {…}}` (Llama 3.1 / 3.2 / 3.3).
Templates without a tool-call format (Gemma 2, Phi-3.5) raise InvalidInputError.

tool_choice: "auto" (default) lets the model answer in text or call. A call is
constrained from the token that opens it: the format's marker (`<tool_call>` anywhere
in the reply, text before, between and after calls allowed; `[TOOL_CALLS]`), or, for
Llama 3, a first token that begins the call's JSON. "required" constrains the reply
to one call of any tool, {"type": "function", "function": {"name": N}} to a call of N:
the call's name and arguments are then those the tool's `parameters` schema allows, so
they always parse and validate. "none": the tools are shown but nothing is parsed.
A reply with calls has finish_reason "tool_calls" and text = what is outside them
(without special tokens); each call's arguments are the JSON text the model wrote.

stream=True yields the text outside the calls (str) and the calls as OpenAI streams
them (dict: {"index", "id", "type": "function", "function": {"name", "arguments": ""}}
when a call's name is complete, then {"index", "function": {"arguments": piece}});
they add up to the unstreamed result, which `.result` holds at the end.
"""
from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .constraints import JSON_LAYOUT, Constraint
from .detokenizer import StreamDecoder
from .errors import InvalidInputError
from .stop_strings import StopStrings

FORMATS = {  # name: (opening marker, closing marker, the arguments' key)
    "hermes": ("<tool_call>", "</tool_call>", "arguments"),
    "mistral": ("[TOOL_CALLS]", None, "arguments"),
    "mistral-args": ("[TOOL_CALLS]", None, "arguments"),  # [TOOL_CALLS]name[ARGS]{…}, repeated
    "granite": ("<|tool_call|>", None, "arguments"),
    "llama3": (None, None, "parameters"),
}
ARGS = "[ARGS]"
KEPT = {"mistral-args": (ARGS, "[CALL_ID]"), "llama3": ("<|python_tag|>",)}  # special tokens kept in the text


def template_format(source: str) -> Optional[str]:
    """The tool-call format a chat template teaches, from its text."""
    if "<tool_call>" in source:
        return "hermes"
    if "[TOOL_CALLS]" in source:
        return "mistral-args" if ARGS in source else "mistral"
    if "<|tool_call|>" in source:
        return "granite"
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
        if opening is None:  # llama3: a reply that opens as a call does is one
            mask = np.frombuffer(grammar.next_mask().tobytes(), np.uint8)
            first = np.flatnonzero(np.unpackbits(mask, bitorder="little")[:self.model.vocab_size])
            return Triggered(grammar, first.tolist(), anywhere=False)
        trigger = self.model.tokenizer.token_to_id(opening)
        anywhere = self.format in ("hermes", "mistral-args")  # text may come before a call, calls repeat
        return None if trigger is None else Triggered(grammar, [trigger], anywhere)

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
                if self.format == "mistral-args":
                    arguments = {**(f.get("parameters") or {"type": "object"}), "x-guidance": JSON_LAYOUT}
                    calls[-1] = f"{json.dumps(f['name'])} {self._marker(ARGS)} %json {json.dumps(arguments)}"
        rules = ["call: " + " | ".join(f"call{i}" for i in range(len(calls)))]
        rules += [f"call{i}: {c}" for i, c in enumerate(calls)]
        if self.format == "hermes":
            start = f'{self._marker(opening)} "\\n" call "\\n" {self._marker(closing)}'
        elif self.format in ("mistral", "granite"):
            start = f'{self._marker(opening)} "[" call "]"'
        elif self.format == "mistral-args":
            start = f"{self._marker(opening)} call"
        else:
            start = "call"
        return "\n".join([f"start: {start}"] + rules)

    def _marker(self, text: str) -> str:
        """A marker in Lark: its token when the vocabulary has it as one, else the text."""
        token = self.model.tokenizer.token_to_id(text)
        return f"<[{token}]>" if token is not None else json.dumps(text)

    def apply(self, result, stop=()) -> None:
        """Parse the finished Generation's reply into result.tool_calls."""
        if self.choice == "none":
            return
        calls = CallStream(self, stop)
        for token in result.token_ids:
            calls.add(token)
        calls.finish()
        set_calls(result, calls)

    def stream(self, text_stream, stop=()) -> "ToolStream":
        """The events of a reply being generated (stream=True)."""
        return ToolStream(self, text_stream, stop)


def set_calls(result, calls: "CallStream") -> None:
    """The Generation's text and tool_calls from the reply's CallStream."""
    result.text, result.tool_calls = calls.content, calls.calls() or None
    if result.tool_calls and result.finish_reason != "cancelled":
        result.finish_reason = "tool_calls"


def parse(text: str, fmt: str, names) -> tuple[str, list]:
    """-> (the text outside the calls, calls in OpenAI's form). A call that does not
    parse, or names no known tool, stays in the text."""
    content, calls = scan(text, fmt, names, final=True)
    return content, [openai_call(call_id(fmt), c.name, c.arguments) for c in calls]


def openai_call(id_: str, name: str, arguments: str) -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass
class Call:
    name: Optional[str]   # None until the name is complete (and a tool's)
    arguments: str        # the arguments' JSON text so far; it only grows


def scan(text: str, fmt: str, names, final: bool) -> tuple[str, list]:
    """The reply so far -> (the text outside the calls, [Call]). While the reply is
    still being generated (not final), both only ever grow as text is added: an open
    call shows what of it is certain, and whitespace or a marker's first characters
    that may still turn out to be part of a call are held back."""
    opening, closing, key = FORMATS[fmt]
    outside, calls = [], []
    if fmt == "hermes":
        at = 0
        while True:
            start = text.find(opening, at)
            if start < 0:
                outside.append(text[at:] if final else _hold(text[at:], opening))
                break
            outside.append(text[at:start])
            body_at = start + len(opening)
            end = text.find(closing, body_at)
            if end < 0:  # the call is still being written (or was cut off)
                if final:
                    outside.append(text[start:])
                else:
                    calls.append(_open_call(_hold(text[body_at:], closing), key, names))
                break
            call = _whole_call(text[body_at:end], key, names)
            if call:
                calls.append(call)
            else:
                outside.append(text[start:end + len(closing)])
            at = end + len(closing)
    elif fmt == "mistral-args":
        start = text.find(opening)
        if start < 0:
            outside.append(text if final else _hold(text, opening))
        else:
            outside.append(text[:start])
            at = start
            while text.startswith(opening, at):
                call, end = _named_call(text, at + len(opening), names)
                if end is None:  # still being written (or cut off)
                    if final:
                        outside.append(text[at:])
                    elif call:
                        calls.append(call)
                    at = len(text)
                    break
                if call:
                    calls.append(call)
                else:
                    outside.append(text[at:end])
                at = end
            outside.append(text[at:])
    elif fmt in ("mistral", "granite"):
        start = text.find(opening)
        if start < 0:
            outside.append(text if final else _hold(text, opening))
        else:
            outside.append(text[:start])
            found, end = _call_list(text, start + len(opening), key, names)
            if final and (end is None or not all(found)):  # all of the list, or none of it
                outside.append(text[start:])
            else:
                calls = [c for c in found if c]
                if end is not None:
                    outside.append(text[end:])
    else:  # llama3: the whole reply is the call
        body = text.lstrip()
        body = body[len("<|python_tag|>"):] if body.startswith("<|python_tag|>") else body
        if body.startswith("{"):
            end = _object_end(body, 0)
            call = (_whole_call(body, key, names) or _whole_call(body, "arguments", names)) \
                if final or end is not None else _open_call(body, key, names)
            if call:
                calls.append(call)
            elif final or end is not None:
                outside.append(text)
        elif final or not "<|python_tag|>".startswith(body):
            outside.append(text)
    return "".join(outside).strip(), calls


def _hold(text: str, marker: str) -> str:
    """text without an ending that may be the start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return text[:-n]
    return text


def _head(key: str):
    return re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"' + key + r'"\s*:\s*')


def _open_call(body: str, key: str, names) -> Call:
    """A call still being written: its name once complete, and the arguments so far
    (without closing braces or whitespace at the end, which may close the call)."""
    m = _head(key).match(body)
    name = json.loads(m.group(1)) if m else None
    if name not in names:
        return Call(None, "")
    return Call(name, body[m.end():].rstrip(" \t\r\n}"))


def _whole_call(body: str, key: str, names) -> Optional[Call]:
    """A finished call, or None when it does not parse or names no known tool. The
    arguments are the JSON text as the model wrote it."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names or not isinstance(obj.get(key, {}), dict):
        return None
    m = _head(key).match(body)
    if m:
        try:
            value, end = json.JSONDecoder().raw_decode(body, m.end())
        except ValueError:
            value = None
        if value == obj[key] and re.fullmatch(r"\s*\}\s*", body[end:]):
            return Call(obj["name"], body[m.end():end])
    return Call(obj["name"], json.dumps(obj.get(key, {}), ensure_ascii=False))


def _call_list(text: str, at: int, key: str, names) -> tuple[list, Optional[int]]:
    """Mistral's `[{call}, {call}]` from text[at:] -> ([Call, or None for an entry
    that is not a call], end of the list or None while it is open)."""
    m = re.compile(r"\s*\[").match(text, at)
    if not m:
        return [], None
    found, i = [], m.end()
    while True:
        m = re.compile(r"[\s,]*").match(text, i)
        i = m.end()
        if i >= len(text):
            return found, None
        if text[i] == "]":
            return found, i + 1
        if text[i] != "{":
            return found + [None], None
        end = _object_end(text, i)
        if end is None:
            return found + [_open_call(text[i:], key, names)], None
        found.append(_whole_call(text[i:end], key, names))
        i = end


def _named_call(text: str, at: int, names) -> tuple[Optional[Call], Optional[int]]:
    """Mistral's `name[ARGS]{…}` (a `[CALL_ID]id` may follow the name) from text[at:]
    -> (the call, None for one that is not; its end, None while it is open)."""
    split = text.find(ARGS, at)
    if split < 0:
        return Call(None, ""), None
    name = text[at:split].split("[CALL_ID]")[0]
    name = name if name in names else None
    body = split + len(ARGS)
    end = _object_end(text, body) if text.startswith("{", body) else None
    if end is None:
        open_call = Call(name, text[body:].rstrip(" \t\r\n}") if name else "")
        return open_call, (None if body >= len(text) or text.startswith("{", body) else body)
    try:
        value = json.loads(text[body:end])
    except ValueError:
        value = None
    return (Call(name, text[body:end]) if name and isinstance(value, dict) else None), end


def _object_end(text: str, start: int) -> Optional[int]:
    """The end of the JSON object opening at text[start], or None if it is not closed."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def call_id(fmt: str) -> str:
    """Mistral's templates require 9 alphanumeric characters; OpenAI's ids look like call_…"""
    alnum = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(9))
    return alnum if fmt.startswith("mistral") else "call_" + alnum


class CallStream:
    """A reply's tool calls as it is generated, in OpenAI's streamed form: add()
    each token and get the new events, str (text outside the calls) or dict (a call's
    first delta {"index", "id", "type", "function": {"name", "arguments": ""}}, then
    {"index", "function": {"arguments": piece}}); finish() at the end. The text is
    the reply's without special tokens other than the format's markers, cut at a stop
    string as generation cuts it; .content and .calls() are what the events add up to."""

    def __init__(self, calling: "ToolCalling", stop=()):
        tokenizer = calling.model.tokenizer
        markers = {m for m in FORMATS[calling.format][:2] if m} | set(KEPT.get(calling.format, ()))
        self.hidden = {i for i, text in tokenizer.special_tokens().items() if text not in markers}
        self.decoder = StreamDecoder(tokenizer, skip_special_tokens=False)
        self.stops = StopStrings([stop] if isinstance(stop, str) else stop)
        self.fmt, self.names = calling.format, calling.names
        self.raw, self.seen, self.content, self.stopped = "", "", "", False
        self.ids, self.call_names, self.arguments = [], [], []

    def add(self, token: int) -> list:
        piece = self.decoder.add(token)
        if token not in self.hidden:
            self.raw += piece
        return self._events(final=False)

    def finish(self) -> list:
        self.raw += self.decoder.flush()
        return self._events(final=True)

    def calls(self) -> list:
        return [openai_call(*call) for call in zip(self.ids, self.call_names, self.arguments)]

    def _events(self, final: bool) -> list:
        seen, calls = scan(self.raw, self.fmt, self.names, final)
        events = []
        if not self.stopped and len(seen) > len(self.seen) and seen.startswith(self.seen):
            out, self.stopped = self.stops.push(seen[len(self.seen):])
            self.seen = seen
            if final and not self.stopped:
                out += self.stops.flush()
            if out:
                events.append(out)
                self.content += out
        for i, call in enumerate(calls):
            if call.name is None:
                break
            if i == len(self.ids):
                self.ids.append(call_id(self.fmt))
                self.call_names.append(call.name)
                self.arguments.append("")
                events.append({"index": i, "id": self.ids[i], "type": "function",
                               "function": {"name": call.name, "arguments": ""}})
            sent = self.arguments[i]
            if len(call.arguments) > len(sent) and call.arguments.startswith(sent):
                events.append({"index": i, "function": {"arguments": call.arguments[len(sent):]}})
                self.arguments[i] = call.arguments
        return events


class ToolStream:
    """model.chat(..., tools=..., stream=True): iterates over CallStream's events
    (text pieces and call deltas) of the reply; .result once exhausted, with the
    text and tool_calls the events add up to."""

    def __init__(self, calling: "ToolCalling", text_stream, stop=()):
        self.text_stream, self.result = text_stream, None
        self.calls = CallStream(calling, stop)
        self._events = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._events)

    def cancel(self) -> None:
        self.text_stream.cancel()

    def close(self) -> None:
        self._events.close()
        self.text_stream.close()

    def finish(self):
        for _ in self:
            pass
        return self.result

    def _run(self):
        seen, tokens = 0, self.text_stream.token_ids
        for _ in self.text_stream:
            for token in tokens[seen:]:
                yield from self.calls.add(token)
            seen = len(tokens)
        for token in tokens[seen:]:
            yield from self.calls.add(token)
        yield from self.calls.finish()
        self.result = self.text_stream.result
        set_calls(self.result, self.calls)


class Triggered:
    """tool_choice "auto": free text until the model samples a token that opens a
    call (one of `triggers`; `anywhere`: at any point of the reply, else only as its
    first token). The call then follows the grammar; after it, text is free again
    (`anywhere`) or the reply is done."""

    def __init__(self, grammar: Constraint, triggers, anywhere: bool):
        self.grammar, self.triggers, self.anywhere = grammar, frozenset(triggers), anywhere
        self.tokens: list[int] = []
        self.active = self.ended = False

    @property
    def n_accepted(self) -> int:
        return len(self.tokens)

    def next_mask(self):
        return self.grammar.next_mask() if self.active else None

    def accept(self, token: int) -> None:
        self._advance(token, len(self.tokens))
        self.tokens.append(token)

    def _advance(self, token: int, position: int) -> None:
        if not self.active and token in self.triggers and (self.anywhere or position == 0):
            self.active = True
        if self.active:
            self.grammar.accept(token)
            if self.grammar.done:
                self.ended = not self.anywhere
                self.active = False
                self.grammar.rewind(self.grammar.n_accepted)

    def rewind(self, n: int) -> None:
        """Undo the last n tokens: the state is replayed from the kept ones."""
        if not isinstance(n, int) or not 0 <= n <= len(self.tokens):
            raise InvalidInputError(f"rewind: n must be in [0, {len(self.tokens)}], got {n!r}")
        if n == 0:
            return
        del self.tokens[len(self.tokens) - n:]
        self.grammar.rewind(self.grammar.n_accepted)
        self.active = self.ended = False
        for position, token in enumerate(self.tokens):
            self._advance(token, position)

    @property
    def done(self) -> bool:
        return self.ended
