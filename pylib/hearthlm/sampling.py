"""Choosing the next token: a SamplerConfig (the settings) and a Sampler (native code
holding the RNG and the penalty window).

    sampler = Sampler(SamplerConfig(temperature=0.7, seed=1), model.vocab_size)
    sampler.start(prompt_ids)            # penalty window := the prompt's last tokens
    token = sampler.sample(logits)       # logits: float32 [vocab]
    sampler.accept(token)
    token = sampler.sample(logits, mask) # mask: uint32 [ceil(vocab / 32)] bits of allowed tokens
    chosen, top = sampler.logprobs(5)    # after sample(): log-probabilities it drew from

Per token, over the whole vocabulary: first the token mask when there is one (a grammar
constraint, hearthlm.constraints: disallowed logits become -inf before anything else,
so penalties and filters see only allowed tokens); then in transformers' order: repetition penalty
(divide positive logits, multiply negative ones), presence and frequency penalties
(OpenAI: logit -= presence * (count > 0) + frequency * count), all three over the last
`repeat_last_n` tokens; temperature (0 = greedy argmax); top-k; top-p; min-p (relative
to the most likely token, after temperature); a draw from a seeded xoshiro256**.
Same seed and same logits -> same tokens.

Cost per token with the defaults (Python call included, measured on a busy 2-core
x86-64): about 50-65 us at a 32 000 vocabulary and 105-130 us at 151 936; greedy
10-15 / 40-75 us. Without top-k, top-p must find its set among the whole vocabulary:
0.5-0.9 ms / 2.5-3.6 ms on noise-like logits.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import _kernels as K
from .errors import InvalidInputError


@dataclass(frozen=True)
class SamplerConfig:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: Optional[int] = None  # None: a random seed (Sampler.seed tells which)

    def __post_init__(self):
        def check(name, ok, expected):
            value = getattr(self, name)
            if isinstance(value, bool) or not ok(value):
                raise InvalidInputError(f"{name}: expected {expected}, got {value!r}")

        real = lambda lo, hi: lambda v: isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi
        integer = lambda lo: lambda v: isinstance(v, int) and v >= lo
        check("temperature", real(0, math.inf), "a number >= 0")
        check("top_k", integer(0), "an integer >= 0 (0 = off)")
        check("top_p", lambda v: real(0, 1)(v) and v > 0, "a number in (0, 1]")
        check("min_p", real(0, 1), "a number in [0, 1]")
        check("repeat_penalty", lambda v: real(0, math.inf)(v) and v > 0, "a number > 0 (1 = off)")
        check("repeat_last_n", integer(0), "an integer >= 0")
        check("presence_penalty", real(-math.inf, math.inf), "a finite number")
        check("frequency_penalty", real(-math.inf, math.inf), "a finite number")
        check("seed", lambda v: v is None or (isinstance(v, int) and 0 <= v < 2**64),
              "None or an integer in [0, 2**64)")

    @classmethod
    def for_model(cls, generation_config: dict, **overrides) -> "SamplerConfig":
        """Settings from a model's generation_config.json (temperature, top_k, top_p,
        min_p, repetition_penalty; "do_sample": false means greedy), then `overrides`
        (None values are ignored)."""
        fields = {}
        for ours, theirs in (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"),
                             ("min_p", "min_p"), ("repeat_penalty", "repetition_penalty")):
            if generation_config.get(theirs) is not None:
                fields[ours] = generation_config[theirs]
        if generation_config.get("do_sample") is False:
            fields["temperature"] = 0.0
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)


class Sampler:
    """One generation stream's sampler. Not thread-safe: one per session."""

    def __init__(self, config: SamplerConfig, vocab_size: int):
        self.config = config
        self.seed = config.seed if config.seed is not None else secrets.randbits(64)
        c = config
        top_k = min(c.top_k, vocab_size)  # the same set; keeps it within the native int
        self._native = K.Sampler(vocab_size, self.seed, c.temperature, top_k, c.top_p, c.min_p,
                                 c.repeat_penalty, c.repeat_last_n, c.presence_penalty,
                                 c.frequency_penalty)
        self._token = np.zeros(1, np.int32)  # accept()'s argument

    def start(self, context_ids: Sequence[int]) -> None:
        """Begin a new reply: the penalty window becomes the last tokens of context_ids."""
        self._native.clear_history()
        self._native.accept(np.asarray(context_ids, np.int32)[-max(self.config.repeat_last_n, 1):])

    def accept(self, token: int) -> None:
        self._token[0] = token
        self._native.accept(self._token)

    def sample(self, logits: np.ndarray, mask: Optional[np.ndarray] = None) -> int:
        """The next token. mask: None or uint32 [ceil(vocab / 32)], bit i % 32 of word
        i // 32 set iff token i is allowed (llguidance's bitmask layout)."""
        return self._native.sample(logits, mask)

    def distribution(self, logits: np.ndarray, mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, probs) that sample() would draw from for these logits."""
        return self._native.distribution(logits, mask)

    def logprobs(self, k: int) -> tuple[float, list[tuple[int, float]]]:
        """After sample(): (the chosen token's natural-log probability, the k most
        likely [(id, logprob)], most likely first) under the distribution it was drawn
        from: masked, penalised, divided by the temperature, filtered by top-k / top-p
        / min-p, renormalised. Fewer than k when fewer tokens survive the filters;
        greedy (temperature 0) draws from one token: logprob 0.0."""
        ids, lps = np.empty(k, np.int32), np.empty(k, np.float32)
        chosen, n = self._native.sampled_logprobs(ids, lps)
        return chosen, list(zip(ids[:n].tolist(), lps[:n].tolist()))
