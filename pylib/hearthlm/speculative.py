"""Speculative decoding: guess several tokens cheaply, check them all in one forward of
the model, keep those it agrees with (Leviathan, Kalman & Matias, 2023).

    model.generate(prompt, speculative="prompt-lookup")   # drafts copied from the text so far
    model.generate(prompt, draft_model=small)             # drafts from a small model, same tokenizer

Each round feeds the pending token and k drafted tokens in one forward
(Session.feed(all_logits=True)). Row i of its logits is the model's next-token
distribution after the pending token and drafts 1..i, and draft i + 1 is checked
against it under the sampler's own settings (constraint mask, penalties,
temperature, top-k / top-p / min-p):
- a draft proposed for sure (prompt lookup; a draft model decoding greedily) has a
  point mass as its distribution. The standard rule then keeps it with probability
  p(draft) and otherwise draws from p without it: exactly drawing x ~ p with the
  native sampler and keeping the draft iff x == draft. Greedy decoding draws the
  argmax, as it does without speculation.
- a draft model that samples draws d ~ q: kept with probability min(1, p(d) / q(d)),
  otherwise x ~ max(0, p - q) normalised.
Either way every token has the distribution plain decoding gives it. Penalties
and the constraint see exactly the tokens kept so far, since each kept token is
accepted by the sampler and the constraint before the next row is checked. The
first row that disagrees gives the round's last token, and the drafts after it are
rewound (Session.rewind: nothing is copied).

"Identical" is exact in the quantized formats (q8, q4, K-quants): attention gives a
row the same bits whatever rows share its call, and the int8-activation matmuls are
exact for any number of rows, so a verify step's logits are bit for bit those of
one-token forwards. In f32 / bf16 / f16 a tile's matmuls sum in another order than
one token's, logits differ by ~1e-5, and a greedy choice between two logits that
close may differ from plain decoding's.

The draft length adapts (DraftLength): each round takes the k with the most expected
tokens per second, from the drafter's acceptance rate so far and the measured times
of forwards of 1..k + 1 tokens (and of drafting); k = 0, plain decoding, when no
length pays, with a one-token probe now and then in case the text turns repetitive.
Drafts never run into a context shift or past max_new_tokens, so those happen at the
same token as without speculation.
"""
from __future__ import annotations

import bisect
import heapq
import time
from collections import deque
from dataclasses import replace
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .decoder import Decoder
from .errors import InvalidInputError
from .sampling import Sampler

SPECULATIVE = ("prompt-lookup",)
SPECULATION_OPTIONS = ("speculative", "draft_model")
MAX_DRAFT = 10         # drafted tokens per round, at most
LOOKUP_NGRAM = 3       # prompt lookup matches the last 3, 2 or 1 tokens
PROBE_EVERY = 16       # rounds without drafting before a one-token probe
PRIOR_RATE = 0.6       # acceptance rate assumed before any draft is checked
PRIOR_CHECKS = 1.0     # ... with the weight of this many checked drafts
DECAY = 0.8            # weight of a round's acceptance counts one round later
COST_SAMPLES = 5       # a forward's cost is the median of its last 5 times
SMOOTHING = 0.3        # weight of the newest time in the running mean of drafting's cost


class PromptLookup:
    """Drafts by matching the last n tokens (n = 3, then 2, then 1) against the text so
    far (prompt and reply) and proposing what followed their latest earlier occurrence.
    An index of every n-gram's latest continuation grows by one token at a time.
    A reference given to `start` (a predicted output) is matched first at each n: its
    drafts follow the first occurrence after the one used last (else the first)."""

    seconds_per_token = 0.0  # drafting costs next to nothing

    def __init__(self):
        self._index = [dict() for _ in range(LOOKUP_NGRAM + 1)]  # n -> n-gram -> continuation start
        self._seen = 0  # tokens of the history indexed so far
        self._at = 0    # where the latest match's continuation starts
        self._reference: list[int] = []
        self._in_reference = [dict() for _ in range(LOOKUP_NGRAM + 1)]  # n -> n-gram -> its starts, ascending
        self._at_reference = 0  # where the latest match in the reference continues
        self._matched_reference = False  # whether the latest match was in the reference

    def start(self, prompt: list[int], reference: Sequence[int] = ()) -> None:
        """Index the prompt (before the first token, like a prefill) and the reference."""
        self._grow(prompt)
        self._reference = ref = list(reference)
        for i in range(1, len(ref)):
            for n in range(1, min(LOOKUP_NGRAM, i) + 1):
                self._in_reference[n].setdefault(tuple(ref[i - n:i]), []).append(i)

    def _grow(self, text: list[int]) -> None:
        while self._seen < len(text) - 1:  # the n-grams ending before the last token
            self._seen += 1
            i = self._seen
            for n in range(1, min(LOOKUP_NGRAM, i) + 1):
                self._index[n][tuple(text[i - n:i])] = i

    def kind(self, history: list[int]):
        """The key of this round's acceptance rate, ("text" or "reference", the match
        length), or None when nothing matches."""
        self._grow(history)
        for n in range(min(LOOKUP_NGRAM, len(history)), 0, -1):
            key = tuple(history[-n:])
            starts = self._in_reference[n].get(key) if self._reference else None
            if starts:
                j = bisect.bisect_right(starts, self._at_reference)
                self._at_reference = starts[j] if j < len(starts) else starts[0]
                self._matched_reference = True
                return ("reference", n)
            at = self._index[n].get(key)
            if at is not None:
                self._at, self._matched_reference = at, False
                return ("text", n)
        return None

    def draft(self, history: list[int], k: int) -> tuple[list[int], None]:
        """What followed the match (in the reference: up to its end); past the end of the
        text, the same again (the tail repeats what came after the match, so it may
        repeat once more)."""
        if self._matched_reference:
            return self._reference[self._at_reference:self._at_reference + k], None
        period = len(history) - self._at
        return [history[self._at + j % period] for j in range(k)], None


class DraftSession:
    """A draft model's session, kept in step with the text: it holds a window of the
    text ending at the newest token (from `start`), rewound where the text changed
    (rejected drafts) and fed the rest; a new window of half its context when the
    text outgrows it. It never shifts by itself."""

    def __init__(self, session):
        self.session = session
        self.held: list[int] = []  # the tokens the session holds
        self.start = 0             # the index in the text of held[0]

    @classmethod
    def of(cls, model, n_ctx: int) -> "DraftSession":
        return cls(model.session(n_ctx=n_ctx, n_keep=0))

    def sync(self, text: list[int], room: int, known: int = 0) -> np.ndarray:
        """Hold `text` with room for `room` more tokens -> the logits after it.
        known: leading tokens of `text` that are as they were at the last sync."""
        return self.feed(self.catch_up(text, room, known))

    def catch_up(self, text: list[int], room: int, known: int = 0) -> list[int]:
        """Rewind the session to where it and `text` part -> the tokens of `text` to
        feed next (at least one, for the logits after it)."""
        s, held = self.session, self.held
        same = max(0, min(known - self.start, len(held)))
        for a, b in zip(held[same:], text[self.start + same:]):
            if a != b:
                break
            same += 1
        same = min(same, len(text) - self.start - 1)  # feed at least one token, for its logits
        if same < 0 or len(text) - self.start + room > s.n_ctx:  # same < 0: the text ends before the window
            self.start, same = max(0, len(text) - s.n_ctx // 2), 0
            s.reset()
            held.clear()
        s.rewind(len(held) - same)
        del held[same:]
        return text[self.start + same:]

    def feed(self, ids: list[int]) -> np.ndarray:
        self.held.extend(ids)
        return self.session.feed(ids)


def draft_sampler(sampler: Sampler, vocab_size: int) -> Sampler:
    """A draft model's sampler: the target's settings, another seed."""
    return Sampler(replace(sampler.config, seed=sampler.seed ^ 0x5BD1E995), vocab_size)


def draft_token(logits: np.ndarray, sampler: Sampler, rng: np.random.Generator, greedy: bool):
    """A draft model's next draft -> (token, q): its argmax when the target decodes
    greedily (a point mass, q None), else a draw from its sampler's distribution q =
    (ids, probs), accepted by that sampler."""
    if greedy:
        return int(np.argmax(logits)), None
    ids, probs = sampler.distribution(logits)
    cum = np.cumsum(probs, dtype=np.float64)
    j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(ids) - 1)
    token = int(ids[j])
    sampler.accept(token)
    return token, (ids, probs)


class DraftModel:
    """Drafts with a second model that shares the tokenizer: greedily when the target
    decodes greedily (point masses), else sampled with the target's settings, each
    draft then with q, the distribution it was drawn from."""

    def __init__(self, draft: DraftSession, sampler: Sampler, rng: np.random.Generator):
        self.draft_session, self.rng = draft, rng
        self.greedy = sampler.config.temperature == 0
        self.sampler = draft_sampler(sampler, draft.session.model.vocab_size)
        self.seconds_per_token = 0.0
        self._known = 0  # the text so far only grows: what was there at the last draft is unchanged

    def start(self, prompt: list[int]) -> None:
        """Prefill the prompt (timed as part of the first token, not of drafting)."""
        self.draft_session.sync(prompt, MAX_DRAFT + 1)
        self._known = len(prompt)

    def kind(self, history: list[int]):
        return "draft"

    def draft(self, history: list[int], k: int):
        t0 = time.perf_counter()
        logits = self.draft_session.sync(history, k, self._known)
        self._known = len(history)
        self.sampler.start(history)
        drafts, qs = [], None if self.greedy else []
        for i in range(k):
            if i:
                logits = self.draft_session.feed(drafts[-1:])
            token, q = draft_token(logits, self.sampler, self.rng, self.greedy)
            drafts.append(token)
            if q is not None:
                qs.append(q)
        self.seconds_per_token = smoothed(self.seconds_per_token, (time.perf_counter() - t0) / k)
        return drafts, qs


def smoothed(mean: float, value: float) -> float:
    """The running mean after `value` (the first value when mean is 0, not measured)."""
    return value if mean == 0 else mean + SMOOTHING * (value - mean)


def match_weight(kind) -> float:
    """How a drafter kind not seen yet compares with the pooled rate: a prompt-lookup
    match of n tokens (PromptLookup.kind) n / LOOKUP_NGRAM, since one token matched is
    weak evidence that the text repeats; any other kind 1."""
    return kind[1] / LOOKUP_NGRAM if isinstance(kind, tuple) else 1.0


class Acceptance:
    """The acceptance rate of drafts per drafter kind: drafts kept over drafts checked,
    each round's counts weighing DECAY times the next one's. A kind's counts start as
    PRIOR_CHECKS checks at the rate over every kind so far (pooled the same way, from
    PRIOR_CHECKS checks at PRIOR_RATE) times match_weight, so a kind is judged from its
    first rounds, and one not seen yet starts from the others: on text that does not
    repeat, drafting stops after a round or two. `start` gives the counts to begin from
    (a server's over every job)."""

    def __init__(self, start: Optional["Acceptance"] = None):
        self.counts: dict = dict(start.counts) if start is not None else {}  # kind -> (kept, checked)
        self.pooled = start.pooled if start is not None else (PRIOR_RATE * PRIOR_CHECKS, PRIOR_CHECKS)

    def of(self, kind) -> float:
        if kind in self.counts:
            kept, checked = self.counts[kind]
            return min(kept / checked, 0.99)
        kept, checked = self.pooled  # not seen yet: the rate over every kind
        return min(kept / checked * match_weight(kind), 0.99)

    def update(self, kind, k: int, accepted: int) -> None:
        """k drafts, the first `accepted` kept: all of them checked, or up to the first rejected."""
        if k:
            checked = accepted + (accepted < k)
            start = self.counts.get(kind) or (self.of(kind) * PRIOR_CHECKS, PRIOR_CHECKS)
            self.counts[kind] = (DECAY * start[0] + accepted, DECAY * start[1] + checked)
            self.pooled = (DECAY * self.pooled[0] + accepted, DECAY * self.pooled[1] + checked)


def cost_prior(m: int) -> float:
    """A forward's cost before it is measured, relative to one token's."""
    return 1 + 0.25 * (m - 1)


class ForwardCosts:
    """Seconds per forward of m tokens: the median of its last COST_SAMPLES times (a
    stall, from a busy machine or a first run of m tokens, moves it little), or until
    m is measured a prior (each extra token +25 %) scaled to the nearest measured size."""

    def __init__(self, max_tokens: int):
        self.cost = [0.0] * (max_tokens + 1)  # 0 = not measured yet
        self.times: list = [None] * (max_tokens + 1)
        self.known: list[int] = []            # the sizes measured, in order

    def __call__(self, m: int) -> float:
        if m < len(self.cost) and self.cost[m] > 0:
            return self.cost[m]
        if not self.known:
            return cost_prior(m)
        at = bisect.bisect(self.known, m)
        j = min(self.known[max(at - 1, 0):at + 1], key=lambda j: abs(j - m))
        return self.cost[j] * cost_prior(m) / cost_prior(j)

    def measure(self, m: int, seconds: float) -> None:
        if m >= len(self.cost):
            return
        times = self.times[m]
        if times is None:
            times = self.times[m] = deque(maxlen=COST_SAMPLES)
            bisect.insort(self.known, m)
        times.append(seconds)
        self.cost[m] = sorted(times)[len(times) // 2]


def draft_lengths(sequences: Sequence[tuple[float, int]], other_tokens: int, cost: Callable[[int], float],
                  draft_seconds: float) -> list[int]:
    """How many tokens each decoding sequence drafts in a step, for the most expected
    tokens per second. sequences: (acceptance rate a, most drafts allowed) each; the
    step's forward also runs `other_tokens` tokens (prompt chunks) and costs cost(M)
    for M tokens; drafting costs draft_seconds per draft position (the sequences'
    drafts are made together). A sequence's j-th draft is kept with probability a^j,
    so taking the largest of the remaining gains first gives the best split of every
    total, and the best total is chosen among them; the search ends when even every
    remaining draft kept at the next total's cost would not beat the best."""
    n_seq = len(sequences)
    rest = sum(a * (1 - a ** limit) / (1 - a) if a < 1 else limit for a, limit in sequences)  # every draft's gain
    best, best_speed = 0, n_seq / cost(other_tokens + n_seq)
    if (n_seq + rest) / cost(other_tokens + n_seq + 1) <= best_speed:
        return [0] * n_seq
    gains = [(-a, i) for i, (a, limit) in enumerate(sequences) if limit > 0]
    heapq.heapify(gains)
    counts = [0] * n_seq
    order, expected, longest = [], float(n_seq), 0
    while gains and (expected + rest) / cost(other_tokens + n_seq + len(order) + 1) > best_speed:
        gain, i = heapq.heappop(gains)
        counts[i] += 1
        order.append(i)
        expected -= gain
        rest += gain
        longest = max(longest, counts[i])
        if counts[i] < sequences[i][1]:
            heapq.heappush(gains, (gain * sequences[i][0], i))
        speed = expected / (cost(other_tokens + n_seq + len(order)) + longest * draft_seconds)
        if speed > best_speed:
            best, best_speed = len(order), speed
    ks = [0] * n_seq
    for i in order[:best]:
        ks[i] += 1
    return ks


class DraftLength:
    """Chooses each round's draft length for one sequence (draft_lengths), from the
    drafter's acceptance per kind and the measured forward costs; with nothing worth
    drafting, a one-token probe every PROBE_EVERY rounds."""

    def __init__(self):
        self.acceptance = Acceptance()
        self.cost = ForwardCosts(MAX_DRAFT + 1)
        self.idle = 0

    def choose(self, kind, limit: int, draft_seconds: float) -> int:
        if kind is None or limit < 1:
            return 0
        best = draft_lengths([(self.acceptance.of(kind), limit)], 0, self.cost, draft_seconds)[0]
        if best == 0:
            self.idle += 1
            if self.idle >= PROBE_EVERY:
                self.idle, best = 0, 1
        return best

    def update(self, kind, k: int, accepted: int, m: int, seconds: float) -> None:
        self.cost.measure(m, seconds)
        self.acceptance.update(kind, k, accepted)


class SpeculativeDecoder(Decoder):
    """generation.Decoder's interface (next / finish), a round of drafts at a time."""

    def __init__(self, session, sampler, constraint, eos, record, logits, drafter, prompt_ids: Sequence[int],
                 max_new_tokens: Optional[int], length: DraftLength, rng: np.random.Generator):
        super().__init__(session, sampler, constraint, eos, record, logits)
        self.drafter, self.length, self.rng = drafter, length, rng
        self.prompt = list(prompt_ids)
        self.history = list(prompt_ids)  # the prompt and the tokens kept, grown each round
        self.max_new_tokens = max_new_tokens
        self.queue: list = []   # (token, entry, done) checked, not handed out yet
        self.drafted = self.accepted = 0
        self.rows = np.empty((MAX_DRAFT + 2, session.model.vocab_size), np.float32)  # a round's logits

    def next(self) -> int:
        if not self.queue:
            self._round()
        token, self.entry, self.done = self.queue.pop(0)
        return token

    def _round(self) -> None:
        if not self.tokens:  # the first token: from the prompt's logits (a draft model reads the prompt first)
            self.drafter.start(self.prompt)
            self._check([self.logits], [], None)
            return
        history = self.history
        history += self.tokens[len(history) - len(self.prompt):]
        room = self.session.n_ctx - self.session.cache.length
        limit = min(MAX_DRAFT, room - 1)  # this round's forward fits without a context shift
        if self.max_new_tokens is not None:
            limit = min(limit, self.max_new_tokens - len(self.tokens) - 1)
        kind = self.drafter.kind(history) if limit > 0 else None
        k = self.length.choose(kind, limit, self.drafter.seconds_per_token)
        t0 = time.perf_counter()
        if not k:  # nothing worth drafting: plain decoding's step, timed
            m = len(self.tokens) - self.fed
            self.queue.append((super().next(), self.entry, self.done))
            self.length.cost.measure(m, time.perf_counter() - t0)
            return
        drafts, qs = self.drafter.draft(history, k)
        batch = self.tokens[self.fed:] + drafts
        if len(batch) > len(self.rows):
            self.rows = np.empty((len(batch), self.rows.shape[1]), np.float32)
        rows = self.session.feed(batch, all_logits=True, out=self.rows) if drafts else self.session.feed(batch)[None]
        self.fed = len(self.tokens) + len(drafts)
        accepted = self._check(rows[len(batch) - len(drafts) - 1:], drafts, qs)
        self.length.update(kind, len(drafts), accepted, len(batch), time.perf_counter() - t0)
        self.drafted += len(drafts)
        self.accepted += accepted
        if accepted < len(drafts):
            self.session.rewind(len(drafts) - accepted)
            self.fed -= len(drafts) - accepted

    def _check(self, rows: np.ndarray, drafts: list[int], qs) -> int:
        """Checks drafts against rows[:len(drafts)] and draws the round's last token;
        queues the tokens kept -> how many drafts were kept."""
        kept = 0
        for i, token in enumerate(round_tokens(rows, drafts, qs, self._token_for)):
            self.queue.append((token, self.entry, self.done))
            if token in self.eos:  # an end-of-sequence draft is not kept
                break
            if i < len(drafts) and token == drafts[i]:
                kept = i + 1
            if self.done:
                break
        return kept

    def _token_for(self, row: np.ndarray, d: Optional[int], q) -> int:
        if q is None:
            return self.choose(row)
        c = self.constraint
        mask = c.next_mask() if c else None
        token = verify_token(row, self.sampler, mask, self.rng, d, q)
        # drawn by the accept / reject rule, the token has the sampler's distribution
        self.entry = self.record(token, self.sampler.distribution(row, mask)) if self.record else None
        self.accept(token)
        return token


def round_tokens(rows: np.ndarray, drafts: Sequence[int], qs, token_for) -> Iterator[int]:
    """The tokens of a round, one at a time: row i's is token_for(row, draft i + 1 or
    None, its q or None), and the round ends after the first token that is not its
    draft (the row after the last draft always ends it). The caller accepts each token
    (sampler, constraint) before asking for the next, and may stop early (end of
    sequence, a stop string)."""
    for i, row in enumerate(rows):
        d = drafts[i] if i < len(drafts) else None
        token = token_for(row, d, qs[i] if qs is not None and d is not None else None)
        yield token
        if token != d:
            return


def verify_token(row: np.ndarray, sampler: Sampler, mask, rng: np.random.Generator, draft: Optional[int] = None,
                 q=None) -> int:
    """The token for one row of a round's logits (mask: the constraint's, or None).
    A draft drawn from q = (ids, probs) is kept with probability min(1, p(d) / q(d)),
    else the token is drawn from max(0, p - q) normalised; without q (no draft, or one
    proposed for sure) it is the sampler's own draw, which keeps a sure draft iff it
    draws it."""
    if q is None:
        return sampler.sample(row, mask)
    ids, probs = sampler.distribution(row, mask)
    q_ids, q_probs = q
    p_d, q_d = float(probs[ids == draft].sum()), float(q_probs[q_ids == draft].sum())
    if rng.random() * q_d < p_d:
        return draft
    both = np.union1d(ids, q_ids)
    residual = np.zeros(len(both))
    residual[np.searchsorted(both, ids)] += probs
    residual[np.searchsorted(both, q_ids)] -= q_probs
    cum = np.cumsum(np.maximum(residual, 0.0))
    if cum[-1] <= 0:  # p == q up to rounding: any draw from p
        return sampler.sample(row, mask)
    j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(both) - 1)
    return int(both[j])


class Speculation:
    """How a generation drafts: `speculative` ("prompt-lookup") or `draft_model` (a
    Model with the same tokenizer). One object serves the streams of one conversation
    in turn (a draft model's session is reused)."""

    def __init__(self, model, speculative: Optional[str] = None, draft_model=None):
        if speculative is not None and speculative not in SPECULATIVE:
            raise InvalidInputError(f"speculative: expected one of {', '.join(SPECULATIVE)} or None, "
                                    f"got {speculative!r}")
        if (speculative is None) == (draft_model is None):
            raise InvalidInputError("speculative, draft_model: give one of them")
        if draft_model is not None:
            check_draft_model(model, draft_model)
        self.model, self.kind, self.draft_model = model, speculative, draft_model
        self.length = DraftLength()  # what it learns carries over to the next turn
        self._draft: Optional[DraftSession] = None

    @classmethod
    def from_options(cls, model, speculative=None, draft_model=None) -> Optional["Speculation"]:
        if speculative is None and draft_model is None:
            return None
        return cls(model, speculative, draft_model)

    def decoder(self, session, sampler, constraint, eos, record, logits, prompt_ids, max_new_tokens):
        rng = np.random.default_rng(sampler.seed)
        if self.draft_model is None:
            drafter = PromptLookup()
        else:
            n_ctx = min(session.n_ctx, self.draft_model.args.max_position_embeddings)
            if self._draft is None or self._draft.session.n_ctx < n_ctx:
                self._draft = DraftSession.of(self.draft_model, n_ctx)
            drafter = DraftModel(self._draft, sampler, rng)
        return SpeculativeDecoder(session, sampler, constraint, eos, record, logits, drafter, prompt_ids,
                                  max_new_tokens, self.length, rng)


def check_draft_model(model, draft) -> None:
    """A draft model must share the model's vocabulary: the same size and, when both
    have one, the same tokenizer."""
    if not isinstance(draft, type(model)):
        raise InvalidInputError(f"draft_model: expected a hearthlm Model (hearthlm.load(...)), "
                                f"got {type(draft).__name__}")
    if draft.vocab_size != model.vocab_size:
        raise InvalidInputError(f"draft_model: its vocabulary has {draft.vocab_size} tokens, the model's "
                                f"{model.vocab_size}; a draft model needs the same tokenizer")
    if (draft.tokenizer is None) != (model.tokenizer is None) or (
            model.tokenizer is not None and draft.tokenizer.vocab() != model.tokenizer.vocab()):
        raise InvalidInputError(f"draft_model: {draft.path} has another tokenizer than {model.path}; "
                                f"a draft model needs the same one")
