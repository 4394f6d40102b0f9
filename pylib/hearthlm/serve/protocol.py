"""OpenAI's wire format: request bodies checked field by field, response and chunk
objects, and error objects ({"error": {"message", "type", "param", "code"}}).

Nothing here touches HTTP or the model: parse_*() turn a decoded JSON body into a
Request (or raise APIError with the status and the offending parameter), and the
builders turn scheduler events into the dicts OpenAI's API returns.
"""
from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Optional

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 4          # OpenAI's limit on stop sequences
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "tool_calls": "tool_calls"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 type: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


@dataclass
class Request:
    kind: str                          # "chat" or "completion"
    model: Optional[str]
    messages: Optional[list] = None    # chat: {"role", "content": str} dicts (+ tool_calls, tool_call_id)
    tools: Optional[list] = None       # chat: OpenAI tool definitions (checked by hearthlm.tool_calls)
    tool_choice: object = None
    response_format: Optional[dict] = None
    prompt: object = None              # completion: a str or a list of token ids
    max_tokens: Optional[int] = None   # None: until the context is full (chat)
    sampling: dict = field(default_factory=dict)  # SamplerConfig fields
    stop: list = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    top_logprobs: Optional[int] = None  # None: no logprobs
    ignore_eos: bool = False            # vLLM's and llama.cpp's extension: run to max_tokens
    max_draft: Optional[int] = None     # llama-server's speculative.n_max: drafts per step (0: none)
    prediction: Optional[str] = None    # OpenAI's predicted output (text the reply is likely to contain)


# -- field checks --------------------------------------------------------------------

def _get(body: dict, name: str, check, expected: str):
    value = body.get(name)
    if value is None:
        return None
    if not check(value):
        raise invalid(name, f"expected {expected}, got {shown(value)}", "invalid_type")
    return value


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(body, name, lo, hi):
    value = _get(body, name, _is_number, "a number")
    if value is not None and not lo <= value <= hi:
        raise invalid(name, f"expected a number in [{lo}, {hi}], got {value!r}")
    return value


def _int(body, name, lo, hi=None):
    value = _get(body, name, is_int, "an integer")
    if value is not None and (value < lo or (hi is not None and value > hi)):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise invalid(name, f"expected an integer {bound}, got {value!r}")
    return value


def _bool(body, name) -> bool:
    return bool(_get(body, name, lambda v: isinstance(v, bool), "a boolean"))


def _unsupported(body, name, allowed=(None,)):
    """A field this server does not implement may only be absent, empty or `allowed`."""
    value = body.get(name)
    if value not in allowed and value not in ([], {}):
        raise invalid(name, "is not supported by this server", "unsupported_parameter")


def _common(body: dict, kind: str) -> Request:
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_type")
    model = _get(body, "model", lambda v: isinstance(v, str), "a string")
    n = _int(body, "n", 1)
    if n is not None and n != 1:
        raise invalid("n", f"only n=1 is supported (one choice per request), got {n}", "unsupported_value")
    _get(body, "user", lambda v: isinstance(v, str), "a string")
    _unsupported(body, "logit_bias")
    stream = _bool(body, "stream")
    options = _get(body, "stream_options", lambda v: isinstance(v, dict), "an object")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid("stream_options", "is only allowed when stream is true")
        include_usage = bool(_get(options, "include_usage", lambda v: isinstance(v, bool), "a boolean"))
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise invalid("stop", f"expected a string or a list of strings, got {shown(stop)}", "invalid_type")
    if len(stop) > MAX_STOP:
        raise invalid("stop", f"at most {MAX_STOP} stop sequences, got {len(stop)}")

    sampling = {}
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:  # only the most likely token
        temperature, top_p = 0.0, None
    top_k = _int(body, "top_k", -1)
    for ours, value in (("temperature", temperature), ("top_p", top_p),
                        ("top_k", 0 if top_k == -1 else top_k),  # -1 = off, as in vLLM
                        ("min_p", _number(body, "min_p", 0, 1)),
                        ("presence_penalty", _number(body, "presence_penalty", -2, 2)),
                        ("frequency_penalty", _number(body, "frequency_penalty", -2, 2)),
                        ("repeat_penalty", _get(body, "repetition_penalty", lambda v: _is_number(v) and v > 0,
                                                "a number > 0"))):
        if value is not None:
            sampling[ours] = value
    seed = _get(body, "seed", is_int, "an integer")
    if seed is not None:
        sampling["seed"] = seed % 2**64
    return Request(kind=kind, model=model, sampling=sampling, stop=stop, stream=stream,
                   include_usage=include_usage, ignore_eos=_bool(body, "ignore_eos"),
                   max_draft=_int(body, "speculative.n_max", 0), prediction=_prediction(body))


def parse_chat(body) -> Request:
    """POST /v1/chat/completions."""
    req = _common(body, "chat")
    for name in ("functions", "audio"):
        _unsupported(body, name)
    req.tools = _get(body, "tools", lambda v: isinstance(v, list), "a list of tools")
    req.tool_choice = _get(body, "tool_choice", lambda v: isinstance(v, (str, dict)), "a string or an object")
    if req.tool_choice is not None and not req.tools:
        raise invalid("tool_choice", "is only allowed when tools are given")
    if req.tools == []:
        req.tools = None
    _get(body, "parallel_tool_calls", lambda v: isinstance(v, bool), "a boolean")
    req.response_format = _get(body, "response_format", lambda v: isinstance(v, dict), "an object")
    if req.tools and req.response_format and req.response_format.get("type") != "text":
        raise invalid("response_format", "not with tools (their calls are constrained already)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "expected a non-empty list of messages" if messages is not None
                      else "is required", "invalid_type" if messages is not None else "missing_required_parameter")
    req.messages = [_message(m, i) for i, m in enumerate(messages)]
    a = _int(body, "max_tokens", 1)
    b = _int(body, "max_completion_tokens", 1)
    req.max_tokens = b if b is not None else a
    if _bool(body, "logprobs"):
        req.top_logprobs = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    elif body.get("top_logprobs") is not None:
        raise invalid("top_logprobs", "needs logprobs: true")
    return req


def _message(m, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise invalid(where, f"expected an object with role and content, got {shown(m)}", "invalid_type")
    role = m.get("role")
    if role not in ROLES:
        raise invalid(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {shown(role)}")
    content = m.get("content")
    content = "" if content is None and role == "assistant" else _text(content, f"{where}.content")
    out = {"role": "system" if role == "developer" else role, "content": content}
    for key in ("name", "tool_call_id"):
        value = m.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid(f"{where}.{key}", f"expected a string, got {shown(value)}", "invalid_type")
        if value is not None:
            out[key] = value
    calls = m.get("tool_calls")
    if calls is not None and role == "assistant" and calls != []:
        out["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(_list(calls, where))]
    return out


def _text(content, where: str) -> str:
    """A string, or a list of text parts ({"type": "text", "text": ...}) joined."""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise invalid(f"{where}[{j}]", "only text parts ({\"type\": \"text\", \"text\": ...}) "
                              "are supported", "unsupported_value")
            parts.append(part["text"])
        return "".join(parts)
    if not isinstance(content, str):
        raise invalid(where, f"expected a string or a list of text parts, got {shown(content)}", "invalid_type")
    return content


def _prediction(body: dict) -> Optional[str]:
    """OpenAI's predicted output, {"type": "content", "content": text}: drafts for prompt
    lookup (`hearthlm serve --lookup`); the reply is the same with or without it."""
    p = body.get("prediction")
    if p is None:
        return None
    if not isinstance(p, dict) or p.get("type") != "content":
        raise invalid("prediction", f"expected {{\"type\": \"content\", \"content\": ...}}, got {shown(p)}",
                      "invalid_type")
    return _text(p.get("content"), "prediction.content")


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise invalid(f"{where}.tool_calls", f"expected a list, got {shown(value)}", "invalid_type")
    return value


def _tool_call(c, where: str) -> dict:
    f = c.get("function") if isinstance(c, dict) else None
    if not (isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("arguments"), str)):
        raise invalid(where, "expected {\"id\", \"type\": \"function\", \"function\": {\"name\", "
                      "\"arguments\": JSON text}}", "invalid_type")
    return {"id": str(c.get("id", "")), "type": "function",
            "function": {"name": f["name"], "arguments": f["arguments"]}}


def parse_completion(body) -> Request:
    """POST /v1/completions."""
    req = _common(body, "completion")
    if _bool(body, "echo"):
        raise invalid("echo", "is not supported by this server", "unsupported_parameter")
    _unsupported(body, "suffix", (None, ""))
    best_of = _int(body, "best_of", 1)
    if best_of not in (None, 1):
        raise invalid("best_of", "only best_of=1 is supported", "unsupported_value")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        raise invalid("prompt", "one prompt per request (a batch of several is not supported)",
                      "unsupported_value")
    ok = isinstance(prompt, str) or (isinstance(prompt, list) and all(is_int(t) for t in prompt))
    if not ok or not prompt:
        raise invalid("prompt", "expected a non-empty string or list of token ids" if prompt is not None
                      else "is required", "invalid_type" if prompt is not None else "missing_required_parameter")
    req.prompt = prompt
    req.max_tokens = _int(body, "max_tokens", 1)
    if req.max_tokens is None:
        req.max_tokens = 16  # OpenAI's default for completions
    logprobs = _int(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    req.top_logprobs = logprobs
    return req


# -- responses -----------------------------------------------------------------------

def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


def usage(finished) -> dict:
    """OpenAI's usage block; a speculating server also gives completion_tokens_details,
    with drafted tokens kept as accepted_prediction_tokens and the others as
    rejected_prediction_tokens (the fields of OpenAI's predicted outputs)."""
    out = {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
           "total_tokens": finished.prompt_tokens + finished.completion_tokens,
           "prompt_tokens_details": {"cached_tokens": finished.cached_tokens}}
    if finished.drafted_tokens is not None:
        out["completion_tokens_details"] = {
            "accepted_prediction_tokens": finished.accepted_tokens,
            "rejected_prediction_tokens": finished.drafted_tokens - finished.accepted_tokens}
    return out


def finish_reason(finished) -> str:
    return FINISH_REASONS[finished.reason]


def chat_logprobs(entries, token_text) -> dict:
    def one(token, logprob):
        text = token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}


def completion_logprobs(entries, token_text, offset: int) -> dict:
    tokens = [token_text(e.token) for e in entries]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{token_text(t): lp for t, lp in e.top} for e in entries],
            "text_offset": offsets}


def response(req: Request, rid: str, created: int, model: str, text: str, finished, logprobs,
             tool_calls: Optional[list] = None) -> dict:
    """The whole (non-streamed) response object."""
    if req.kind == "chat":
        message = {"role": "assistant", "content": text, "refusal": None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason(finished)}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason(finished)}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": None,
            "choices": [choice], "usage": usage(finished)}


def chunk(req: Request, rid: str, created: int, model: str, text: Optional[str] = None, role: bool = False,
          logprobs=None, finish: Optional[str] = None, tool_call: Optional[dict] = None) -> dict:
    """One streamed chunk with a choice (its delta / text or a tool-call delta, logprobs,
    finish_reason)."""
    if req.kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
        if tool_call is not None:
            delta["tool_calls"] = [tool_call]
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": None,
           "choices": [choice]}
    if req.include_usage:
        out["usage"] = None
    return out


def usage_chunk(req: Request, rid: str, created: int, model: str, finished) -> dict:
    """The last chunk when stream_options.include_usage: no choices, the usage."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": None,
            "choices": [], "usage": usage(finished)}
