"""Perplexity of a model on a text, the way llama.cpp's `llama-perplexity` measures it,
and optionally how far its predictions are from a base model's (KL divergence), to judge
a quantization on one's own text.

    r = hearthlm.perplexity(model, open("wiki.test.raw").read(), n_ctx=512)
    r.perplexity, r.uncertainty, r.tokens

The text is tokenized once (with BOS if the tokenizer adds one) and cut into chunks of
n_ctx tokens; the last partial chunk is dropped. Each chunk is evaluated from an empty
cache with its first token replaced by BOS, and only the predictions of its second half
are scored, so every scored token has at least n_ctx/2 tokens of context: positions
n_ctx/2 .. n_ctx-2 predict the tokens after them (n_ctx - 1 - n_ctx/2 per chunk).
perplexity = exp(mean negative log-likelihood); uncertainty is its standard error as
llama.cpp prints it (± after "Final estimate").

With a base model (same vocabulary), the same positions of the same chunks are also
scored by it: mean KL(base || model) per token with its standard error, the share of
positions where both pick the same top token, and the base model's own perplexity.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import InvalidInputError

MIN_CTX = 4  # a chunk must score at least one token from its second half
ROWS = 64    # scored positions turned into float64 log-probabilities at a time


@dataclass
class Perplexity:
    perplexity: float
    uncertainty: float          # standard error of the perplexity
    tokens: int                 # tokens scored
    chunks: int
    n_ctx: int
    text_tokens: int            # tokens in the whole text
    chunk_perplexities: list = field(default_factory=list)  # running value after each chunk, as llama.cpp prints
    base_perplexity: Optional[float] = None
    kl_divergence: Optional[float] = None          # mean KL(base || model) in nats per token
    kl_divergence_uncertainty: Optional[float] = None
    same_top_token: Optional[float] = None         # share of positions where both models' argmax agree

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Rows of float32 logits -> float64 log-probabilities."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class _Mean:
    """Running mean and standard error of per-token values."""

    def __init__(self):
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        self.n += len(values)
        self.total += float(values.sum())
        self.squares += float(np.square(values).sum())

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def stderr(self) -> float:
        var = self.squares / self.n - self.mean ** 2
        return math.sqrt(var / (self.n - 1)) if var > 0 and self.n > 1 else 0.0


def perplexity(model, text: str, n_ctx: int = 512, base=None, max_chunks: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> Perplexity:
    """Perplexity of `model` on `text` (see the module docstring). base: another Model
    with the same vocabulary for KL divergence and top-token agreement. max_chunks:
    score at most this many chunks. progress(done, total) is called after each chunk."""
    context = model.args.max_position_embeddings
    if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or not MIN_CTX <= n_ctx <= context:
        raise InvalidInputError(f"n_ctx: expected an integer in [{MIN_CTX}, {context}] (the model's context), "
                                f"got {n_ctx!r}")
    if base is not None and base.vocab_size != model.vocab_size:
        raise InvalidInputError(f"base: its vocabulary has {base.vocab_size} tokens, the model's {model.vocab_size}; "
                                f"KL divergence needs the same tokens")
    if base is not None and n_ctx > base.args.max_position_embeddings:
        raise InvalidInputError(f"n_ctx: {n_ctx} exceeds the base model's context of "
                                f"{base.args.max_position_embeddings} tokens")
    tokenizer = model.require_tokenizer()
    ids = np.asarray(tokenizer.encode(text), np.int32)
    bos = tokenizer.bos_token_id
    add_bos = bos is not None and len(ids) > 0 and ids[0] == bos
    n_chunks = len(ids) // n_ctx
    if n_chunks < 2:
        raise InvalidInputError(f"text: {len(ids)} tokens; perplexity with n_ctx={n_ctx} needs at least "
                                f"{2 * n_ctx} (two chunks)")
    if max_chunks is not None:
        if not isinstance(max_chunks, int) or max_chunks < 1:
            raise InvalidInputError(f"max_chunks: expected a positive integer or None, got {max_chunks!r}")
        n_chunks = min(n_chunks, max_chunks)

    first = n_ctx // 2
    sessions = [m.session(n_ctx=n_ctx, n_keep=0) for m in (model, base) if m is not None]
    nll, base_nll, kl = _Mean(), _Mean(), _Mean()
    same, running = 0, []
    for c in range(n_chunks):
        chunk = ids[c * n_ctx:(c + 1) * n_ctx].copy()
        if add_bos:
            chunk[0] = bos
        logits = []
        for s in sessions:
            s.reset()
            logits.append(s.feed(chunk, all_logits=True)[first:-1])
        for r in range(0, len(logits[0]), ROWS):  # float64 rows a block at a time (vocabularies are large)
            targets = chunk[first + 1 + r:first + 1 + r + ROWS]
            logp = [log_softmax(x[r:r + ROWS]) for x in logits]
            picked = np.arange(len(targets))
            nll.add(-logp[0][picked, targets])
            if base is not None:
                base_nll.add(-logp[1][picked, targets])
                kl.add((np.exp(logp[1]) * (logp[1] - logp[0])).sum(axis=-1))
                same += int((logp[0].argmax(-1) == logp[1].argmax(-1)).sum())
        running.append(math.exp(nll.mean))
        if progress is not None:
            progress(c + 1, n_chunks)

    ppl = math.exp(nll.mean)
    result = Perplexity(perplexity=ppl, uncertainty=nll.stderr * ppl, tokens=nll.n, chunks=n_chunks, n_ctx=n_ctx,
                        text_tokens=len(ids), chunk_perplexities=running)
    if base is not None:
        result.base_perplexity = math.exp(base_nll.mean)
        result.kl_divergence, result.kl_divergence_uncertainty = kl.mean, kl.stderr
        result.same_top_token = same / kl.n
    return result
