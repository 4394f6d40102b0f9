"""Plain decoding: one token per forward (hearthlm.speculative drafts several)."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .constraints import Constraint
from .sampling import Sampler


class Decoder:
    """Plain decoding, one token per forward. next() returns the next token (sampled,
    then accepted by the sampler and the constraint unless it ends the sequence) with
    .entry (its logprobs record) and .done (the constraint allows only end-of-sequence
    after it). A token is fed when the next one is asked for, so its text is out before
    the forward runs; finish(kept) leaves the session holding the prompt and the first
    `kept` generated tokens, and rewinds the constraint to match."""

    drafted = accepted = 0

    def __init__(self, session, sampler: Sampler, constraint: Optional[Constraint], eos: set,
                 record: Optional[Callable[..., dict]], logits: np.ndarray):
        self.session, self.sampler, self.constraint, self.eos, self.record = session, sampler, constraint, eos, record
        self.logits = logits
        self.tokens: list[int] = []  # generated so far (kept or not)
        self.fed = 0                 # of those, how many the session holds
        self.entry, self.done = None, False
        self._base = constraint.n_accepted if constraint else 0

    def next(self) -> int:
        if self.fed < len(self.tokens):
            self.logits = self.session.feed(self.tokens[self.fed:])
            self.fed = len(self.tokens)
        return self.choose(self.logits)

    def choose(self, logits: np.ndarray) -> int:
        """The sampler's token for one row of logits, recorded and accepted."""
        c = self.constraint
        token = self.sampler.sample(logits, c.next_mask() if c else None)
        self.entry = self.record(token) if self.record else None
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        if token not in self.eos:
            self.tokens.append(token)
            self.sampler.accept(token)
            if self.constraint:
                self.constraint.accept(token)
                self.done = self.constraint.done

    def finish(self, kept: int) -> None:
        if self.fed > kept:
            self.session.rewind(self.fed - kept)
        elif self.fed < kept:
            self.session.feed(self.tokens[self.fed:kept])
        self.fed = kept
        c = self.constraint
        if c and c.n_accepted - self._base > kept:
            c.rewind(c.n_accepted - self._base - kept)
