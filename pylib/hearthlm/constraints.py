"""Constrained generation: the output follows a JSON schema, a regex or a grammar.

    c = Constraint.from_options(model, json_schema={"type": "object", ...})
    token = sampler.sample(logits, c.next_mask())   # only tokens the grammar allows
    c.accept(token)                                 # the matcher advances
    c.rewind(n)                                     # with Session.rewind(n)
    c.done                                          # nothing but end-of-sequence may follow

llguidance (the `structured` extra: pip install "hearthlm[structured]") compiles the
constraint against the model's tokenizer.json and computes, per step, a bitmask of
the allowed tokens (uint32 words, bit i % 32 of word i // 32 = token i) into one
buffer allocated here; the native sampler applies it before anything else. The
end-of-sequence ids are allowed exactly when the output is complete.

Options (at most one; hearthlm.generation takes them as keywords):
- json_schema: a JSON schema (dict or JSON text); the JSON is laid out as json.dumps
  does (", " and ": ", no other whitespace) unless the schema's "x-guidance" says
  otherwise (llguidance's JSON options);
- response_format: OpenAI's {"type": "json_schema", "json_schema": {"name": ...,
  "schema": {...}}}, {"type": "json_object"} (any JSON object) or {"type": "text"};
- regex: the whole output matches it;
- grammar: a Lark grammar (llguidance's dialect: `start: ...`, `%json {...}`) or
  llama.cpp GBNF (`root ::= ...`, converted by llguidance).
A schema or grammar that is invalid or cannot be satisfied raises InvalidInputError
here, before anything is generated.
"""
from __future__ import annotations

import json
import weakref
from typing import Optional

import numpy as np

from .errors import InvalidInputError

CONSTRAINT_OPTIONS = ("json_schema", "response_format", "regex", "grammar")
# JSON as json.dumps writes it: llguidance's default allows any whitespace, and small
# models then fill replies with it. A schema's "x-guidance" object can say otherwise.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_TOKENIZERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> LLTokenizer


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise InvalidInputError("json_schema / response_format / regex / grammar need llguidance: "
                                "pip install \"hearthlm[structured]\"") from None
    return llguidance


def ll_tokenizer(model):
    """The model's tokenizer as llguidance sees it (built once per model: ~1 s for a
    150k vocabulary), with the model's vocabulary size and end-of-sequence ids."""
    tok = _TOKENIZERS.get(model)
    if tok is None:
        llg = _llguidance()
        if model.tokenizer is None:
            raise InvalidInputError(f"{', '.join(CONSTRAINT_OPTIONS)}: constraints need the model's tokenizer.json, "
                                    f"and {model.path} has none")
        path = model.tokenizer.path
        text = model.tokenizer.json()  # also for a tokenizer rebuilt from a GGUF file
        eos = model.eos_token_ids
        try:
            tok = llg.LLTokenizer(text, n_vocab=model.vocab_size, eos_token=eos or None)
        except ValueError as e:
            raise InvalidInputError(f"{path}: llguidance cannot use this tokenizer: {e}") from None
        _TOKENIZERS[model] = tok
    return tok


class Constraint:
    def __init__(self, model, grammar: str, argument: str):
        """grammar: an llguidance grammar (LLMatcher.grammar_from_*); argument: the
        option it came from, for error messages."""
        llg = _llguidance()
        tok = ll_tokenizer(model)
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, tok)
        if is_error:
            raise InvalidInputError(f"{argument}: {messages[0].strip()}")
        self._matcher = llg.LLMatcher(tok, grammar, log_level=0)
        if self._matcher.is_error():
            raise InvalidInputError(f"{argument}: {self._matcher.get_error()}")
        self.argument = argument
        self.mask = np.zeros((model.vocab_size + 31) // 32, np.uint32)
        self._mask_ptr = self.mask.ctypes.data
        self.n_accepted = 0

    @classmethod
    def from_options(cls, model, json_schema=None, response_format=None, regex=None,
                     grammar=None) -> Optional["Constraint"]:
        """The constraint the options ask for; None if none does."""
        given = {k: v for k, v in zip(CONSTRAINT_OPTIONS, (json_schema, response_format, regex, grammar))
                 if v is not None}
        if len(given) > 1:
            raise InvalidInputError(f"{', '.join(given)}: give at most one constraint")
        if not given:
            return None
        llg = _llguidance()
        (argument, value), = given.items()
        if argument == "response_format":
            value = _schema_of_response_format(value)
            if value is None:
                return None
        if argument in ("json_schema", "response_format"):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as e:
                    raise InvalidInputError(f"{argument}: not valid JSON: {e}") from None
            if not isinstance(value, dict):
                raise InvalidInputError(f"{argument}: expected a JSON schema object, got {type(value).__name__}")
            try:
                grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(value), defaults=JSON_LAYOUT)
            except ValueError as e:
                raise InvalidInputError(f"{argument}: {e}") from None
            return cls(model, grammar, argument)
        if not isinstance(value, str):
            raise InvalidInputError(f"{argument}: expected a string, got {type(value).__name__}")
        if argument == "regex":
            return cls(model, llg.LLMatcher.grammar_from_regex(value), argument)
        try:
            return cls(model, llg.grammar_from("grammar", value), argument)
        except ValueError as e:  # GBNF that does not convert
            raise InvalidInputError(f"grammar: {e}") from None

    def next_mask(self) -> np.ndarray:
        """The allowed next tokens, in the buffer this constraint owns (overwritten by
        the next call)."""
        self._matcher.unsafe_compute_mask_ptr(self._mask_ptr, self.mask.nbytes)
        self._check()
        return self.mask

    def accept(self, token: int) -> None:
        """The matcher advances by `token` (one the last mask allowed)."""
        self._matcher.consume_token(token)
        self._check()
        self.n_accepted += 1

    def rewind(self, n: int) -> None:
        """Undo the last n accepted tokens (as Session.rewind(n) does to the cache)."""
        if not isinstance(n, int) or not 0 <= n <= self.n_accepted:
            raise InvalidInputError(f"rewind: n must be in [0, {self.n_accepted}], got {n!r}")
        self._matcher.rollback(n)
        self._check()
        self.n_accepted -= n

    @property
    def done(self) -> bool:
        """The output is complete and nothing but end-of-sequence can follow."""
        return self._matcher.is_stopped()

    @property
    def complete(self) -> bool:
        """The output so far satisfies the constraint (it may still go on)."""
        return self._matcher.is_accepting()

    def _check(self) -> None:
        if self._matcher.is_error():  # a token the mask did not allow, or a resource limit
            raise InvalidInputError(f"{self.argument}: {self._matcher.get_error()}")


def _schema_of_response_format(fmt):
    """OpenAI's response_format -> a JSON schema, or None for plain text."""
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise InvalidInputError(f"response_format: expected {{\"type\": \"json_schema\" | \"json_object\" "
                                f"| \"text\", ...}}, got {fmt!r}")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidInputError("response_format: \"json_schema\" must be {\"name\": ..., \"schema\": {...}}")
        return spec["schema"]
    raise InvalidInputError(f"response_format: type must be \"json_schema\", \"json_object\" or \"text\", "
                            f"got {kind!r}")
