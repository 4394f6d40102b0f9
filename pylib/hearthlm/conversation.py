"""A multi-turn chat kept in one Session, so each turn prefills only its new tokens.

    conv = hearthlm.Conversation(model, system="Be brief.", temperature=0)
    for piece in conv.ask("What is 2 + 3?"): print(piece, end="")
    conv.last        # the reply's Generation (timings, finish reason)

`template`: the model's own chat template by default, a built-in name, a .jinja file or
a ChatTemplate; sampling options (temperature=, top_k=, seed=, ...) as model.chat, or
a ready `sampler`.

Each turn renders the whole conversation with the chat template and tokenizes it.
While the cache still holds the conversation, Session.sync() reuses the cached common
prefix (usually everything up to the new user message). Once a context shift has
dropped middle tokens, the cache no longer holds a prefix of the conversation; then
only the tokens after the common prefix with what was fed so far are fed (the new
turn), on top of what the cache kept — so a chat can run past n_ctx indefinitely.

A cancelled reply stays in the conversation with the text produced so far. With
`constraint` options (json_schema=, grammar=, ...: hearthlm.constraints) every reply
follows them, each from the start.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence, Union

import numpy as np

from .chat_template import ChatTemplate
from .constraints import Constraint
from .errors import ContextOverflowError, FileWriteError, InvalidInputError
from .generation import Generation, TextStream, make_sampler
from .sampling import Sampler


class Conversation:
    def __init__(self, model, template: Union[ChatTemplate, str, None] = None, sampler: Optional[Sampler] = None,
                 n_ctx: Optional[int] = None, system: Optional[str] = None, max_new_tokens: Optional[int] = None,
                 stop: Sequence[str] = (), constraint: Optional[dict] = None, speculation=None, **sampling):
        if not isinstance(template, ChatTemplate):
            template = ChatTemplate.for_model(model, template)
        if sampler is None:
            sampler = make_sampler(model, sampling)
        elif sampling:
            raise InvalidInputError(f"{', '.join(sorted(sampling))}: give sampling options or a sampler, not both")
        self.model, self.template, self.sampler, self.speculation = model, template, sampler, speculation
        self.constraint = dict(constraint or {})
        Constraint.from_options(model, **self.constraint)  # a bad one fails now, not at the first turn
        self.session = model.session(n_ctx=n_ctx)
        self.max_new_tokens, self.stop = max_new_tokens, list(stop)
        self.messages: list[dict] = []
        self.fed: list[int] = []  # every token fed to the session, including any shifted out
        self.last: Optional[Generation] = None
        self.set_system(system)

    def ask(self, text: str) -> TextStream:
        """Add a user message; returns the stream of the reply, which joins the
        conversation when the stream ends."""
        messages = self.messages + [{"role": "user", "content": text}]
        ids = self.template.encode(self.model.tokenizer, messages)
        self._check_turn_fits(ids)

        def finish(result: Generation):
            self.messages = messages + [{"role": "assistant", "content": result.text}]
            self.fed = ids + result.token_ids
            self.last = result

        return TextStream(self.model, self.session, lambda: self._catch_up(ids), ids, self.sampler,
                          self.max_new_tokens, self.stop, on_finish=finish,
                          constraint=Constraint.from_options(self.model, **self.constraint),
                          speculation=self.speculation)

    def _check_turn_fits(self, ids: list[int]) -> None:
        """Older turns may shift out of the context; the new message itself must fit
        (otherwise its beginning would be dropped before the model reads its end)."""
        before = []  # what was there before this turn: nothing on the first one
        if any(m["role"] == "assistant" for m in self.messages):
            try:
                before = self.template.encode(self.model.tokenizer, self.messages, add_generation_prompt=False)
            except InvalidInputError:  # a template that renders only conversations ending with a user
                pass
        turn, ring = len(ids) - len(os.path.commonprefix([before, ids])), self.session.n_ctx - self.session.cache.n_keep
        if turn > ring:
            raise ContextOverflowError(
                f"n_ctx: this message needs {turn} tokens, but a context of {self.session.n_ctx} tokens holds at "
                f"most {ring} beside its first {self.session.cache.n_keep}; use a larger n_ctx or a shorter message")

    def _catch_up(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Make the session hold the conversation `ids`; -> (last logits, tokens fed)."""
        s = self.session
        common = min(len(os.path.commonprefix([self.fed, ids])), len(ids) - 1)
        if s.tokens == self.fed:  # no context shift so far: the cache holds the conversation
            return s.sync(ids), len(ids) - common
        undo = len(self.fed) - common
        if undo <= len(s.tokens) - s.cache.n_keep:  # the change is within what the cache kept
            s.rewind(undo)
        else:
            s.reset()
            common = 0
        return s.feed(ids[common:]), len(ids) - common

    @property
    def system(self) -> Optional[str]:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def set_system(self, text: Optional[str]) -> None:
        """Set (or with None / "" remove) the system message; the rest of the chat stays."""
        rest = self.messages[1:] if self.system is not None else self.messages
        self.messages = ([{"role": "system", "content": text}] if text else []) + rest

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = self.messages[:1] if self.system is not None else []
        self.session.reset()
        self.fed = []
        self.last = None

    def save(self, path: str) -> None:
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"messages": self.messages}, f, ensure_ascii=False, indent=1)
        except OSError as e:
            raise FileWriteError(f"{path}: cannot save the conversation: {e.strerror}") from None

    def load(self, path: str) -> None:
        """Replace the messages with those saved in `path` (the cache catches up lazily)."""
        try:
            with open(path, encoding="utf-8") as f:
                messages = json.load(f).get("messages")
        except (OSError, ValueError, AttributeError, RecursionError) as e:
            raise InvalidInputError(f"{path}: cannot read a saved conversation: {e}") from None
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise InvalidInputError(f"{path}: expected {{\"messages\": [{{\"role\": ..., \"content\": ...}}]}}")
        self.messages = messages
