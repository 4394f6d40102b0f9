"""Log-probabilities of the generated tokens, in OpenAI's shape:

    {"token": " Paris", "logprob": -0.31, "top_logprobs": [{"token": " Paris", "logprob": -0.31}, ...]}

Unlike OpenAI's (the model's own softmax, whatever the temperature), these are
measured on the distribution each token was actually drawn from: the logits after
the grammar mask, the penalties and the temperature, keeping what top-k, top-p and
min-p keep, renormalised (see Sampler.logprobs). So the logprobs of a draw at
temperature 1 with the filters off are OpenAI's; with filters, top_logprobs lists
only tokens that could have been drawn (fewer than k when fewer survive); greedy
decoding draws from a single token, whose logprob is 0.0.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InvalidInputError

MAX_TOP_LOGPROBS = 20  # OpenAI's limit


def top_count(logprobs, top_logprobs) -> Optional[int]:
    """None when logprobs are off, else the number of alternatives to report."""
    if not isinstance(logprobs, bool):
        raise InvalidInputError(f"logprobs: expected True or False, got {logprobs!r}")
    if top_logprobs is not None and (isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int)
                                     or not 0 <= top_logprobs <= MAX_TOP_LOGPROBS):
        raise InvalidInputError(f"top_logprobs: expected an integer in [0, {MAX_TOP_LOGPROBS}], "
                                f"got {top_logprobs!r}")
    if top_logprobs is not None and not logprobs:
        raise InvalidInputError("top_logprobs: needs logprobs=True")
    return (top_logprobs or 0) if logprobs else None


def entry(sampler, tokenizer, token: int, k: int, distribution=None) -> dict:
    """The record of the token sampler.sample() just returned, or of one drawn another
    way with the sampler's distribution (ids, probs) (Sampler.distribution: a
    speculative round's accept / reject draw from a sampling draft model)."""
    chosen, top = sampler.logprobs(k) if distribution is None else distribution_logprobs(*distribution, token, k)
    text = (lambda i: tokenizer.decode([i], skip_special_tokens=False)) if tokenizer else str
    return {"token": text(token), "logprob": chosen,
            "top_logprobs": [{"token": text(i), "logprob": lp} for i, lp in top]}


def distribution_logprobs(ids: np.ndarray, probs: np.ndarray, token: int, k: int) -> tuple:
    """Sampler.logprobs' result for `token` drawn from (ids, probs)."""
    top = np.argsort(-probs, kind="stable")[:k]
    with np.errstate(divide="ignore"):
        return (float(np.log(probs[ids == token].sum())),
                [(int(ids[j]), float(np.log(probs[j]))) for j in top])
