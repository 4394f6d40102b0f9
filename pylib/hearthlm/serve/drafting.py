"""Speculative decoding in the server (`hearthlm serve --lookup` / `--draft MODEL`).

Each scheduler step, every decoding job may carry k drafted tokens after its pending
token. The step's one batched forward returns the logits after the pending token and
after each draft (SessionGroup.feed tails), and hearthlm.speculative's round_tokens /
verify_token keep the drafts the model agrees with, exactly as model.generate does;
the scheduler rewinds the rest (Session.rewind: nothing is copied).

How many tokens each job drafts is speculative.draft_lengths: the split with the most
expected tokens per second, from each job's acceptance rate (starting from the rate over
all jobs so far) and the measured cost of forwards of M tokens (which the step's other
jobs share). A job whose drafts are rarely kept stops drafting, with a one-token probe
every PROBE_EVERY steps. Drafts never pass
max_tokens or the slot's context, and `max_draft` (the request's speculative.n_max)
caps them.

Drafters: prompt lookup (a speculative.PromptLookup per job), or a draft model with the
same tokenizer: its own SessionGroup, a session per slot kept in step with the slot's
text (speculative.DraftSession), all jobs' drafts made together, one draft forward per
draft position.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ..errors import InvalidInputError
from ..session import SessionGroup
from ..speculative import (MAX_DRAFT, PROBE_EVERY, SPECULATIVE, Acceptance, DraftSession, ForwardCosts,
                           PromptLookup, check_draft_model, draft_lengths, draft_sampler, draft_token, smoothed)


class JobDrafts:
    """One job's speculation: its text so far, its acceptance, its drafter's state and
    this step's drafts."""

    def __init__(self, job, prompt: list[int], draft: Optional[DraftSession], served: Acceptance):
        self.text = list(prompt)  # the prompt and the tokens generated
        self.served = served      # the acceptance over every job so far: where a new job's starts
        self.acceptance = Acceptance(served)
        self.idle = 0             # steps without drafting since the last probe
        self.rng = np.random.default_rng(job.sampler.seed)
        self.greedy = job.sampler.config.temperature == 0
        self.max_draft = MAX_DRAFT if job.max_draft is None else min(job.max_draft, MAX_DRAFT)
        self.draft = draft
        if draft is None:
            self.lookup = PromptLookup()
            self.lookup.start(self.text, job.prediction)
        else:
            self.sampler = draft_sampler(job.sampler, draft.session.model.vocab_size)
            self.known = 0        # leading tokens of text the draft session was synced with
        self.kind = None
        self.drafts: list[int] = []
        self.qs: Optional[list] = None

    def update(self, accepted: int) -> None:
        """The first `accepted` of this step's drafts were kept."""
        if self.drafts:
            self.acceptance.update(self.kind, len(self.drafts), accepted)
            self.served.update(self.kind, len(self.drafts), accepted)
        self.drafts, self.qs = [], None


class Drafting:
    """The scheduler's drafter: prompt lookup (speculative="prompt-lookup") or a draft
    model (draft_model=Model) for every slot."""

    def __init__(self, model, n_slots: int, n_ctx: int, max_tokens: int, kv_dtype: str,
                 speculative: Optional[str] = None, draft_model=None):
        if speculative is not None and speculative not in SPECULATIVE:
            raise InvalidInputError(f"speculative: expected one of {', '.join(SPECULATIVE)} or None, "
                                    f"got {speculative!r}")
        if (speculative is None) == (draft_model is None):
            raise InvalidInputError("speculative, draft_model: give one of them")
        self.sessions: list[Optional[DraftSession]] = [None] * n_slots
        self.group = None  # the draft model's sessions, one per slot
        self.chunk = max_tokens // n_slots  # tokens a draft session catches up per forward
        if draft_model is not None:
            check_draft_model(model, draft_model)
            self.group = SessionGroup(draft_model, n_slots, n_ctx=min(n_ctx, draft_model.args.max_position_embeddings),
                                      n_keep=0, kv_dtype=kv_dtype, max_tokens=max_tokens,
                                      max_session_tokens=self.chunk)
            self.sessions = [DraftSession(s) for s in self.group.sessions]
        self.costs = ForwardCosts(max_tokens)
        self.acceptance = Acceptance()  # over every job
        self.draft_seconds = 0.0  # per draft position (0 for prompt lookup)

    def start(self, job, slot_index: int, prompt: list[int]) -> JobDrafts:
        return JobDrafts(job, prompt, self.sessions[slot_index], self.acceptance)

    def propose(self, decoding: list, other_tokens: int) -> None:
        """decoding: (JobDrafts, the most drafts its slot allows now) of each decoding
        job; other_tokens: the step's other tokens (prompt chunks). Sets each job's
        drafts (and their q when a draft model samples)."""
        sequences = []
        for state, limit in decoding:
            limit = min(limit, state.max_draft)
            state.kind = (state.lookup.kind(state.text) if state.draft is None else "draft") if limit > 0 else None
            sequences.append((state.acceptance.of(state.kind), limit if state.kind is not None else 0))
        ks = draft_lengths(sequences, other_tokens, self.costs, self.draft_seconds)
        for i, (state, _) in enumerate(decoding):
            if state.kind is not None and sequences[i][1] > 0 and ks[i] == 0:
                state.idle += 1
                if state.idle >= PROBE_EVERY:
                    state.idle, ks[i] = 0, 1
        chosen = [(state, k) for (state, _), k in zip(decoding, ks) if k > 0]
        if not chosen:
            return
        if self.group is None:
            for state, k in chosen:
                state.drafts, state.qs = state.lookup.draft(state.text, k)
        else:
            self._draft_model(chosen)

    def _draft_model(self, chosen: list) -> None:
        t0 = time.perf_counter()
        todo = {}
        for state, k in chosen:
            todo[id(state)] = state.draft.catch_up(state.text, k, state.known)
            state.known = len(state.text)
            state.sampler.start(state.text[-max(state.sampler.config.repeat_last_n, 1):])
            state.qs = None if state.greedy else []
        while any(len(ids) > self.chunk for ids in todo.values()):  # long catch-ups (a prompt) in parts
            part = [(state, todo[id(state)][:self.chunk]) for state, _ in chosen if len(todo[id(state)]) > self.chunk]
            self._feed(part)
            for state, ids in part:
                del todo[id(state)][:len(ids)]
        batch = [(state, todo[id(state)]) for state, _ in chosen]
        longest = max(k for _, k in chosen)
        for position in range(longest):
            rows = self._feed(batch)
            for (state, _), row in zip(batch, rows):
                token, q = draft_token(row, state.sampler, state.rng, state.greedy)
                state.drafts.append(token)
                if q is not None:
                    state.qs.append(q)
            wanted = {id(state) for state, k in chosen if k > position + 1}
            batch = [(state, state.drafts[-1:]) for state, _ in batch if id(state) in wanted]
        self.draft_seconds = smoothed(self.draft_seconds, (time.perf_counter() - t0) / longest)

    def _feed(self, batch: list) -> np.ndarray:
        for state, ids in batch:
            state.draft.held.extend(ids)
        return self.group.feed([(state.draft.session, ids) for state, ids in batch])
