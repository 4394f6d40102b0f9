"""Generation: prefill, then sample / feed one token at a time, streaming text.

    model.generate("Once upon a time", max_new_tokens=50, temperature=0.7, seed=1)  # -> str
    for piece in model.generate(prompt, stream=True): print(piece, end="")
    g = model.generate(prompt, return_result=True)   # -> Generation (text, finish_reason, timings)
    model.chat([{"role": "user", "content": "Hi"}], stream=True)

Sampling settings (see hearthlm.sampling) default to the model's generation_config.json,
then to SamplerConfig's defaults. A reply ends at an end-of-sequence token (any of
model.eos_token_ids: finish_reason "eos"), after max_new_tokens ("length"), at a stop
string ("stop"; the text ends just before it, and text that might be the start of a
stop string is held back until it cannot be), or when cancelled ("cancelled").

A prompt longer than the context raises ContextOverflowError, unless truncate="left"
(see fit_context: the one rule, also for Model.logits and each turn of a Conversation).
A reply that runs past the context shifts it (Session: the oldest tokens after the
first few are dropped).

Speculative decoding (hearthlm.speculative: speculative="prompt-lookup" or
draft_model=a Model with the same tokenizer) checks several drafted tokens per
forward; the tokens have the distribution plain decoding gives them.

Constraints (hearthlm.constraints: json_schema=, response_format=, regex=, grammar=)
restrict every token to what the grammar allows; a reply whose constraint is complete
ends with "eos" ("length" means it was cut short and may not parse). logprobs=True,
top_logprobs=k fill Generation.logprobs (hearthlm.logprobs says on which distribution).

The session holds the prompt and every generated token when a stream ends (the last
token is fed even though its logits go unused), so a conversation can continue from it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from . import logprobs as lp
from .chat_template import ChatTemplate
from .constraints import CONSTRAINT_OPTIONS, Constraint
from .decoder import Decoder
from .detokenizer import StreamDecoder
from .errors import ContextOverflowError, InvalidInputError
from .sampling import Sampler, SamplerConfig
from .speculative import SPECULATION_OPTIONS, Speculation
from .stop_strings import StopStrings
from .tool_calls import ToolCalling

PROMPT_CONTEXT = 8  # prompt tokens the detokenizer sees, so a continuation joins the prompt right
SAMPLING_OPTIONS = tuple(f.name for f in fields(SamplerConfig))


@dataclass
class Generation:
    text: str
    token_ids: list
    finish_reason: str           # "eos", "length", "stop" or "cancelled"
    prompt_tokens: int           # tokens in the prompt
    prefilled_tokens: int        # of those, fed this time (the rest were already cached)
    prefill_seconds: float
    time_to_first_token: float   # seconds from the start to the first sampled token
    decode_seconds: float        # from the first token to the end, minus time spent by the reader
    decode_steps: int            # generated tokens fed to the session
    seed: int
    truncated_tokens: int = 0    # oldest prompt tokens dropped (truncate="left") to fit the context
    logprobs: Optional[list] = None  # with logprobs=True: one record per token_ids entry
    tool_calls: Optional[list] = None  # chat with tools: OpenAI-form calls parsed from the reply
    drafted_tokens: int = 0      # speculative decoding: tokens drafted and checked
    accepted_tokens: int = 0     # of those, tokens the model agreed with

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prefilled_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(completion_tokens=self.completion_tokens,
                 prefill_tokens_per_second=self.prefill_tokens_per_second,
                 decode_tokens_per_second=self.decode_tokens_per_second)
        return d


class ReplyText:
    """Token ids of a reply -> its final text pieces: streaming detokenization, then
    stop strings (text that could begin one is held back)."""

    def __init__(self, tokenizer, stop: Sequence[str] = (), context: Sequence[int] = ()):
        self.decoder = StreamDecoder(tokenizer, context) if tokenizer is not None else None
        self.stops = StopStrings(stop)

    def add(self, token: int) -> tuple[str, bool]:
        """-> (text that is final, whether a stop string was reached)."""
        return self.stops.push(self.decoder.add(token)) if self.decoder else ("", False)

    def flush(self) -> tuple[str, bool]:
        """At the end of a reply that did not stop at a stop string: the text held back
        -> (text, whether it completes a stop string)."""
        if self.decoder is None:
            return "", False
        out, stopped = self.stops.push(self.decoder.flush())
        return (out, True) if stopped else (out + self.stops.flush(), False)


class TextStream:
    """An iterator over the text pieces of one generation. Once it is exhausted,
    `.result` holds the Generation. cancel() (safe from a signal handler) ends it after
    the token being computed, with finish_reason "cancelled"."""

    def __init__(self, model, session, prefill: Callable[[], tuple[np.ndarray, int]],
                 prompt_ids: Sequence[int], sampler: Sampler, max_new_tokens: Optional[int],
                 stop: Sequence[str] = (), context: Sequence[int] = (),
                 on_finish: Optional[Callable[[Generation], None]] = None, truncated: int = 0,
                 constraint: Optional[Constraint] = None, top_logprobs: Optional[int] = None,
                 speculation=None):
        """prefill() feeds the prompt (or what the session lacks of it) and returns
        (last logits, tokens fed). max_new_tokens None = until EOS / stop / cancel.
        truncated: prompt tokens dropped before this, for the result.
        constraint: restricts the tokens (advanced here; rewind it with the session).
        top_logprobs: None, or record logprobs with that many alternatives.
        speculation: None, or a hearthlm.speculative.Speculation that drafts tokens."""
        check_max_new_tokens(max_new_tokens)
        if isinstance(stop, str):
            stop = [stop]
        if stop and model.tokenizer is None:
            raise InvalidInputError("stop: stop strings need a tokenizer, and this model has none")
        self.model, self.session, self.sampler = model, session, sampler
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = max_new_tokens
        self.result: Optional[Generation] = None
        self._prefill, self._stop, self._context, self._on_finish = prefill, list(stop), context, on_finish
        self._cancelled, self._truncated = False, truncated
        self.constraint, self.top_logprobs, self.speculation = constraint, top_logprobs, speculation
        self.token_ids: list[int] = []  # the reply's tokens so far
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        """Stop reading now: finish_reason "cancelled", no further token computed."""
        self._pieces.close()

    def finish(self) -> Generation:
        """Run to the end without reading the pieces; returns the Generation."""
        for _ in self:
            pass
        return self.result

    def _run(self) -> Iterator[str]:
        eos = set(self.model.eos_token_ids)
        t0 = time.perf_counter()
        logits, n_fed = self._prefill()
        t_prefill = time.perf_counter()
        self.sampler.start(self.prompt_ids)
        reply = ReplyText(self.model.tokenizer, self._stop, self._context)
        tokens, pieces, reason = self.token_ids, [], "cancelled"
        logprobs = [] if self.top_logprobs is not None else None
        record = None if logprobs is None else (
            lambda token, distribution=None: lp.entry(self.sampler, self.model.tokenizer, token, self.top_logprobs,
                                                      distribution))
        parts = (self.session, self.sampler, self.constraint, eos, record, logits)
        decoder = (self.speculation.decoder(*parts, self.prompt_ids, self.max_new_tokens) if self.speculation
                   else Decoder(*parts))
        t_first, paused, finished = None, 0.0, False
        try:
            while True:
                if self._cancelled:
                    reason = "cancelled"
                    break
                token = decoder.next()
                if t_first is None:
                    t_first = time.perf_counter()
                if token in eos:
                    reason = "eos"
                    break
                tokens.append(token)
                if logprobs is not None:
                    logprobs.append(decoder.entry)
                out, stopped = reply.add(token)
                if out:
                    pieces.append(out)
                    t_pause = time.perf_counter()
                    yield out
                    paused += time.perf_counter() - t_pause
                if stopped:
                    reason = "stop"
                    break
                if decoder.done:  # the constraint allows only end-of-sequence now
                    reason = "eos"
                    break
                if self.max_new_tokens is not None and len(tokens) >= self.max_new_tokens:
                    reason = "length"
                    break
            decoder.finish(len(tokens))
            finished = True
            if reason != "stop":  # the text held back so far is final now
                out, stopped = reply.flush()
                if stopped:
                    reason = "stop"
                if out:
                    pieces.append(out)
                    yield out
        except GeneratorExit:
            reason = "cancelled"  # the reader closed the stream early
            if not finished:  # closed while yielding: the session never gets this token
                tokens.pop()
                if logprobs:
                    logprobs.pop()
                decoder.finish(len(tokens))
            raise
        finally:
            t_end = time.perf_counter()
            self.result = Generation(
                text="".join(pieces), token_ids=tokens, finish_reason=reason,
                prompt_tokens=len(self.prompt_ids), prefilled_tokens=n_fed,
                prefill_seconds=t_prefill - t0,
                time_to_first_token=(t_first or t_end) - t0,
                decode_seconds=t_end - (t_first or t_end) - paused, decode_steps=decoder.fed,
                seed=self.sampler.seed, truncated_tokens=self._truncated, logprobs=logprobs,
                drafted_tokens=decoder.drafted, accepted_tokens=decoder.accepted)
            if self._on_finish is not None:
                self._on_finish(self.result)


def check_max_new_tokens(max_new_tokens) -> None:
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool)
                                       or max_new_tokens < 1):
        raise InvalidInputError(f"max_new_tokens: expected a positive integer or None, got {max_new_tokens!r}")


def fit_context(ids: np.ndarray, n_ctx: int, truncate: Optional[str], argument: str,
                room: int = 0) -> tuple[np.ndarray, int]:
    """The rule for input longer than the context (n_ctx tokens): ContextOverflowError
    naming `argument`, unless truncate="left", which drops the oldest tokens so that
    the rest leaves `room` (for new tokens) free. -> (ids, number dropped)."""
    if truncate not in (None, "left"):
        raise InvalidInputError(f"truncate: expected None or 'left', got {truncate!r}")
    if len(ids) <= n_ctx:
        return ids, 0
    keep = n_ctx - room
    if truncate is None:
        raise ContextOverflowError(
            f"{argument}: {len(ids)} tokens do not fit the context of {n_ctx} tokens; shorten it, "
            f"or pass truncate=\"left\" to keep its last {keep} tokens")
    return ids[len(ids) - keep:], len(ids) - keep


def make_sampler(model, sampling: dict) -> Sampler:
    """A Sampler from keyword options (SAMPLING_OPTIONS) over the model's defaults."""
    unknown = sorted(set(sampling) - set(SAMPLING_OPTIONS))
    if unknown:
        raise InvalidInputError(f"unknown sampling option {', '.join(unknown)}; expected some of "
                                f"{', '.join(SAMPLING_OPTIONS)}")
    return Sampler(SamplerConfig.for_model(model.generation_config, **sampling), model.vocab_size)


def generate(model, prompt: Union[str, Sequence[int]], max_new_tokens: Optional[int] = 64,
             stop: Sequence[str] = (), stream: bool = False, return_result: bool = False,
             truncate: Optional[str] = None, **sampling):
    """Continue `prompt` (text or token ids). See the module docstring."""
    if isinstance(prompt, str):
        prompt = model.require_tokenizer().encode(prompt)
    ids = model.check_ids(prompt, "prompt")
    if len(ids) == 0:
        raise InvalidInputError("prompt: empty")
    return _one_shot(model, ids, "prompt", max_new_tokens, stop, stream, return_result, truncate, sampling,
                     context=ids[-PROMPT_CONTEXT:])


def chat(model, messages: list, max_new_tokens: Optional[int] = 512, stop: Sequence[str] = (),
         stream: bool = False, return_result: bool = False, template: Optional[str] = None,
         truncate: Optional[str] = None, tools: Optional[list] = None, tool_choice=None, **sampling):
    """The assistant's reply to OpenAI-style `messages`, rendered by the model's chat
    template (or `template`: a built-in name or a .jinja file). With `tools`, the
    result's tool_calls (hearthlm.tool_calls)."""
    chat_template = ChatTemplate.for_model(model, template)
    calling = None
    if tools is not None or tool_choice is not None:
        calling = ToolCalling(model, chat_template.source, tools, tool_choice)
    ids = chat_template.encode(model.tokenizer, messages, tools=tools)
    result = _one_shot(model, model.check_ids(ids, "rendered chat"), "messages", max_new_tokens, stop, stream,
                       True if calling else return_result, truncate, sampling, context=(),
                       constraint=calling.constraint() if calling else None)
    if calling is None:
        return result
    if stream:
        return calling.stream(result, stop)
    calling.apply(result, stop)
    return result if return_result else result.text


def _one_shot(model, ids: np.ndarray, argument: str, max_new_tokens, stop, stream, return_result, truncate,
              sampling, context, constraint=None):
    check_max_new_tokens(max_new_tokens)
    top_logprobs = lp.top_count(sampling.pop("logprobs", False), sampling.pop("top_logprobs", None))
    options = {k: sampling.pop(k) for k in CONSTRAINT_OPTIONS if k in sampling}
    if constraint is not None and any(v is not None for v in options.values()):
        raise InvalidInputError(f"{', '.join(options)}: not with tools (their calls are constrained already)")
    constraint = constraint or Constraint.from_options(model, **options)
    speculation = Speculation.from_options(model, **{k: sampling.pop(k) for k in SPECULATION_OPTIONS
                                                     if k in sampling})
    sampler = make_sampler(model, sampling)
    limit = model.args.max_position_embeddings
    # truncated, the prompt leaves room for the reply: max_new_tokens, at most half the context
    ids, dropped = fit_context(ids, limit, truncate, argument, room=min(max_new_tokens or limit, limit // 2))
    # room for the prompt and every new token (default size when unbounded)
    n_ctx = None if max_new_tokens is None else min(limit, len(ids) + max_new_tokens)
    session = model.session(n_ctx=n_ctx)
    text_stream = TextStream(model, session, lambda: (session.feed(ids), len(ids)), ids.tolist(), sampler,
                             max_new_tokens, stop, context=list(context), truncated=dropped,
                             constraint=constraint, top_logprobs=top_logprobs, speculation=speculation)
    if stream:
        return text_stream
    result = text_stream.finish()
    return result if return_result else result.text
