"""Continuous batching over `parallel` slots, in one worker thread (no HTTP here).

    sched = Scheduler(model, parallel=4, n_ctx=2048, max_queue=16)
    job = Job(prompt_ids, max_tokens=64, sampler=make_sampler(model, {}), emit=callback)
    sched.submit(job)      # Overloaded when the queue is full, Unavailable once closed
    sched.cancel(job)      # the client went away: its slot is freed before the next step
    sched.close()

Each slot is a Session (its own KV cache) that keeps its tokens after a request ends, so
a later request sharing a prefix with it (a chat's next turn) prefills only the rest;
a queued job goes to the free slot with the longest common prefix (else the least
recently used). One step: admit queued jobs into free slots, run one forward over every
busy slot (the next chunk of a prompt still being prefilled, or the token sampled last),
then sample the slots whose input is all fed. Jobs join and leave between steps.
With speculative="prompt-lookup" or draft_model=Model, a decoding slot's input also
carries drafted tokens, checked in that same forward (hearthlm.serve.drafting).

job.emit(event) is called from the worker thread: Delta events (text released by a
token, with its log-probabilities when asked), then exactly one Finished or Failed.
Finish reasons are generation.py's: "eos", "stop" (a stop string), "length", "cancelled".
"""
from __future__ import annotations

import collections
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import ContextOverflowError, HearthlmError, InvalidInputError
from ..generation import ReplyText
from ..sampling import Sampler
from ..session import SessionGroup
from ..speculative import MAX_DRAFT, round_tokens, verify_token
from .drafting import Drafting

PREFILL_CHUNK = 256   # prompt tokens a slot feeds per step, so long prompts do not stall decoding
RATE_WINDOW = 10.0    # seconds over which tokens/s is measured


class Overloaded(HearthlmError, RuntimeError):
    """The queue is full: try again later."""


class Unavailable(HearthlmError, RuntimeError):
    """The scheduler is closed (shutting down)."""


@dataclass
class Delta:
    text: str                    # text that became final ("" while held back)
    logprobs: list = field(default_factory=list)  # [TokenLogprob] of the tokens it covers
    token: Optional[int] = None  # the token sampled (None: text held back until the end)


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list                    # [(token, logprob)], most likely first


@dataclass
class Finished:
    reason: str                  # "eos", "stop", "length" or "cancelled"
    prompt_tokens: int
    cached_tokens: int           # prompt tokens found in the slot's cache (not prefilled)
    completion_tokens: int
    drafted_tokens: Optional[int] = None   # tokens drafted (None: the server does not speculate)
    accepted_tokens: Optional[int] = None  # ... and kept


@dataclass
class Failed:
    error: Exception


@dataclass(eq=False)
class Job:
    prompt_ids: Sequence[int]
    max_tokens: int
    sampler: Sampler
    emit: Callable[[object], None]
    stop: Sequence[str] = ()
    top_logprobs: Optional[int] = None    # None: no log-probabilities; k: the token's and the top k
    context: Sequence[int] = ()           # ids the detokenizer continues (e.g. the prompt's tail)
    ignore_eos: bool = False              # run to max_tokens (benchmarks)
    constraint: object = None             # hearthlm.constraints / tool_calls: masks the tokens
    max_draft: Optional[int] = None       # the most tokens drafted per step (0: none) when the server speculates
    prediction: Sequence[int] = ()        # a predicted output's ids: prompt lookup drafts from it too
    cancelled: bool = False
    cached_tokens: int = 0
    completion_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    reply: Optional[ReplyText] = None


class Slot:
    def __init__(self, session):
        self.session = session
        self.job: Optional[Job] = None
        self.pending: list[int] = []   # tokens to feed at the next steps
        self.last_used = 0
        self.spec = None               # the job's JobDrafts when the server speculates


class Stats:
    """Counters the worker updates and /metrics reads."""

    def __init__(self):
        self.steps = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.prefilled_tokens = 0
        self.completion_tokens = 0
        self.drafted_tokens = 0
        self.accepted_tokens = 0
        self.finished = collections.Counter()   # reason -> requests
        self.batch_size = 0                     # slots in the last step
        self.tokens_per_second = 0.0            # completion tokens over the last RATE_WINDOW s
        self._recent = collections.deque()      # (time, completion tokens) per step
        self._recent_sum = 0

    def record_step(self, batch: int, fed: int, generated: int) -> None:
        now = time.monotonic()
        self.steps += 1
        self.batch_size = batch
        self.prefilled_tokens += fed
        self._recent.append((now, generated))
        self._recent_sum += generated
        while self._recent and self._recent[0][0] < now - RATE_WINDOW:
            self._recent_sum -= self._recent.popleft()[1]
        self.tokens_per_second = self._recent_sum / RATE_WINDOW


def default_parallel(model, n_ctx: int, kv_dtype: str = "f32", draft_model=None, budget_fraction: float = 0.5) -> int:
    """Slots by default: up to 8 (4 per physical core), as many as fit in
    budget_fraction of the available memory, with a draft model's cache per slot too."""
    from ..cpu import physical_cores
    per_slot = 0
    for m in (model,) if draft_model is None else (model, draft_model):
        probe = m.session(n_ctx=min(n_ctx, m.args.max_position_embeddings), kv_dtype=kv_dtype)
        per_slot += probe.memory_bytes
        del probe
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 8 * per_slot
    return max(1, min(8, 4 * physical_cores(), int(available * budget_fraction) // per_slot))


class Scheduler:
    def __init__(self, model, parallel: int, n_ctx: Optional[int] = None, max_queue: Optional[int] = None,
                 kv_dtype: str = "f32", prefill_chunk: int = PREFILL_CHUNK, speculative: Optional[str] = None,
                 draft_model=None):
        """parallel: slots (sequences decoded together); n_ctx: tokens per slot (default:
        the model's context, at most 4096); max_queue: jobs waiting while every slot is
        busy before submit() refuses (default 4 x parallel); speculative
        ("prompt-lookup") or draft_model (a Model with the same tokenizer): draft tokens
        and check them in the batched step (the same output)."""
        if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
            raise InvalidInputError(f"parallel: expected a positive integer, got {parallel!r}")
        if max_queue is None:
            max_queue = 4 * parallel
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 0:
            raise InvalidInputError(f"max_queue: expected an integer >= 0, got {max_queue!r}")
        self.model = model
        speculating = speculative is not None or draft_model is not None
        self.group = SessionGroup(model, parallel, n_ctx=n_ctx, kv_dtype=kv_dtype,
                                  max_tokens=parallel * prefill_chunk,
                                  max_session_tokens=prefill_chunk + MAX_DRAFT,  # a chunk, or a token and its drafts
                                  max_logits=parallel * (MAX_DRAFT + 1) if speculating else None)
        self.slots = [Slot(session) for session in self.group.sessions]
        self.n_ctx = self.slots[0].session.n_ctx
        self.drafting = Drafting(model, parallel, self.n_ctx, parallel * prefill_chunk, kv_dtype, speculative,
                                 draft_model) if speculating else None
        self.max_queue, self.prefill_chunk = max_queue, prefill_chunk
        self.stats = Stats()
        self._eos = frozenset(model.eos_token_ids)
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._clock = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="hearthlm-scheduler", daemon=True)
        self._thread.start()

    # -- called from any thread -------------------------------------------------------

    def submit(self, job: Job) -> None:
        n = len(job.prompt_ids)
        if n == 0:
            raise InvalidInputError("prompt: empty")
        if n + job.max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"the prompt ({n} tokens) and max_tokens ({job.max_tokens}) exceed the context of "
                f"{self.n_ctx} tokens")
        job.reply = ReplyText(self.model.tokenizer, job.stop, job.context)
        with self._cond:
            if self._closed:
                raise Unavailable("the server is shutting down")
            free = sum(s.job is None for s in self.slots)  # queued jobs go there at the next step
            if len(self._queue) >= self.max_queue + free:
                raise Overloaded(f"all {len(self.slots)} slots are busy and {len(self._queue)} "
                                 "requests are waiting")
            self._queue.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one leaves the queue now, a running one frees its slot
        before the next step."""
        with self._cond:
            job.cancelled = True
            try:
                self._queue.remove(job)
            except ValueError:  # running, finished, or taken by the worker this moment
                self._cond.notify()
                return
            self.stats.finished["cancelled"] += 1
        self._emit(job, Finished("cancelled", len(job.prompt_ids), 0, 0))

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy_slots(self) -> int:
        return sum(s.job is not None for s in self.slots)

    def close(self) -> None:
        """Fail queued and running jobs (Unavailable) and stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # -- the worker thread ------------------------------------------------------------

    def _run(self) -> None:
        # Each step is a call, so no finished job stays referenced by a local here.
        while self._wait_for_work():
            try:
                self._admit_queued()
                self._step()
            except Exception as e:  # noqa: BLE001  a bug: fail the running jobs rather than hang them
                for slot in self.slots:
                    if slot.job is not None:
                        slot.session.reset()
                        self._end(slot, Failed(e))
        gone = Unavailable("the server is shutting down")
        for slot in self.slots:
            if slot.job is not None:
                self._end(slot, Failed(gone))
        while self._queue:
            self._emit(self._queue.popleft(), Failed(gone))

    def _wait_for_work(self) -> bool:
        """Sleep until a job is queued or a slot is busy; False once closed."""
        with self._cond:
            while not self._closed and not self._queue and self.busy_slots == 0:
                self._cond.wait()
            return not self._closed

    def _admit_queued(self) -> None:
        with self._cond:
            free = sum(s.job is None for s in self.slots)
            taken = []
            while self._queue and len(taken) < free:
                taken.append(self._queue.popleft())
        for job in taken:
            if job.cancelled:
                self.stats.finished["cancelled"] += 1
                self._emit(job, Finished("cancelled", len(job.prompt_ids), 0, 0))
                continue
            try:
                self._admit(job)
            except Exception as e:  # noqa: BLE001  e.g. a sampler that cannot start: this job fails
                self.stats.finished["error"] += 1
                self._emit(job, Failed(e))

    def _admit(self, job: Job) -> None:
        """Put a job in the free slot sharing the longest prefix with its prompt."""
        prompt = list(job.prompt_ids)
        free = [s for s in self.slots if s.job is None]
        slot = max(free, key=lambda s: (s.session.common_prefix(prompt), -s.last_used))
        keep = min(slot.session.common_prefix(prompt), len(prompt) - 1)  # feed >= 1 for logits
        slot.session.rewind(len(slot.session.tokens) - keep)
        slot.job, slot.pending, slot.last_used = job, prompt[keep:], next(self._clock)
        job.cached_tokens = keep
        if self.drafting is not None:
            slot.spec = self.drafting.start(job, self.slots.index(slot), prompt)
        job.sampler.start(prompt)
        self.stats.prompt_tokens += len(prompt)
        self.stats.cached_tokens += keep

    def _step(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot, "cancelled")
        busy = [s for s in self.slots if s.job is not None]
        if not busy:
            return
        batch = [(s, s.pending[:self.prefill_chunk]) for s in busy]
        if self.drafting is not None:
            self._propose(batch)
        tails = [1 + len(s.spec.drafts) if s.spec else 1 for s in busy]
        t0 = time.perf_counter()
        try:
            rows = self._forward_step([(s, chunk + s.spec.drafts if s.spec else chunk) for s, chunk in batch],
                                      tails if self.drafting is not None else None)
        except Exception as e:  # noqa: BLE001  the requests of this step fail; the server goes on
            for slot, _ in batch:
                slot.session.reset()
                self._end(slot, Failed(e))
            return
        fed = sum(len(chunk) + n - 1 for (_, chunk), n in zip(batch, tails))  # with the drafts
        if self.drafting is not None:
            self.drafting.costs.measure(fed, time.perf_counter() - t0)
        generated, row = 0, 0
        for (slot, chunk), n in zip(batch, tails):
            del slot.pending[:len(chunk)]
            if not slot.pending:
                generated += self._sample(slot, rows[row:row + n])
            row += n
        self.stats.record_step(len(batch), fed, generated)

    def _propose(self, batch: list[tuple[Slot, list[int]]]) -> None:
        """Drafts for the decoding slots of this step, within their limits."""
        decoding, other = [], 0
        for slot, chunk in batch:
            job = slot.job
            if job.completion_tokens == 0:  # prefilling, or the first token
                other += len(chunk)
                continue
            cache = slot.session.cache
            limit = min(job.max_tokens - job.completion_tokens - 1,  # the round stays within max_tokens,
                        self.n_ctx - cache.length - 1,               # the context (no shift),
                        cache.ring_size - 1, self.prefill_chunk - 1)  # and the step's token budget
            decoding.append((slot.spec, limit))
        if decoding:
            self.drafting.propose(decoding, other)

    def _forward_step(self, batch: list[tuple[Slot, list[int]]], tails: Optional[list[int]]) -> np.ndarray:
        """Feed each slot its tokens (appended to its cache) in one forward for the whole
        batch; -> the logits after each slot's last tails[i] tokens (None: its last
        one), slot by slot, valid until the next step."""
        return self.group.feed([(slot.session, tokens) for slot, tokens in batch], tails)

    def _sample(self, slot: Slot, rows: np.ndarray) -> int:
        """The slot's next tokens from the logits after its pending token (and after each
        of its drafts): emit them, rewind the rejected drafts; -> tokens generated."""
        job, state = slot.job, slot.spec
        drafts, qs = (state.drafts, state.qs) if state else ([], None)
        rng = state.rng if state else None

        def token_for(row, draft, q):
            return verify_token(row, job.sampler, job.constraint.next_mask() if job.constraint else None, rng,
                                draft, q)

        job.drafted_tokens += len(drafts)  # counted before the round's tokens, which may finish the job
        self.stats.drafted_tokens += len(drafts)
        drawn = kept = 0
        before = job.completion_tokens
        for i, token in enumerate(round_tokens(rows, drafts, qs, token_for)):
            drawn += 1
            if i < len(drafts) and token == drafts[i] and (token not in self._eos or job.ignore_eos):
                kept += 1
                job.accepted_tokens += 1
                self.stats.accepted_tokens += 1
            if not self._take(slot, token, rows[i]):
                break
        if drafts:
            slot.session.rewind(len(drafts) + 1 - drawn)  # the cache holds what plain decoding's would
        if state:
            state.update(kept)
        return job.completion_tokens - before

    def _take(self, slot: Slot, token: int, logits: np.ndarray) -> bool:
        """Emit the slot's next token -> whether its job goes on."""
        job = slot.job
        if token in self._eos and not job.ignore_eos:
            self._finish(slot, "eos")
            return False
        job.sampler.accept(token)
        if job.constraint:
            job.constraint.accept(token)
        job.completion_tokens += 1
        self.stats.completion_tokens += 1
        if slot.spec:
            slot.spec.text.append(token)
        text, stopped = job.reply.add(token)
        logprobs = [token_logprob(logits, token, job.top_logprobs)] if job.top_logprobs is not None else []
        self._emit(job, Delta(text, logprobs, token))
        if stopped:
            self._finish(slot, "stop", flush=False)
        elif job.constraint and job.constraint.done:  # only end-of-sequence may follow
            self._finish(slot, "eos")
        elif job.completion_tokens >= job.max_tokens:
            self._finish(slot, "length")
        else:
            slot.pending = [token]
            return True
        return False

    def _finish(self, slot: Slot, reason: str, flush: bool = True) -> None:
        job = slot.job
        if flush and reason != "cancelled":
            text, stopped = job.reply.flush()
            if stopped:
                reason = "stop"
            if text:
                self._emit(job, Delta(text))
        drafts = (job.drafted_tokens, job.accepted_tokens) if self.drafting is not None else (None, None)
        self._end(slot, Finished(reason, len(job.prompt_ids), job.cached_tokens, job.completion_tokens, *drafts))

    def _end(self, slot: Slot, event) -> None:
        job, slot.job, slot.pending, slot.spec = slot.job, None, [], None
        if isinstance(event, Finished):
            self.stats.finished[event.reason] += 1
        else:
            self.stats.finished["error"] += 1
        self._emit(job, event)

    def _emit(self, job: Job, event) -> None:
        try:
            job.emit(event)
        except Exception:  # noqa: BLE001  the receiver is gone (e.g. its event loop closed)
            job.cancelled = True


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """The model's log-probability of `token` (log-softmax of the raw logits) and the
    `top` most likely tokens."""
    z = logits.astype(np.float64)
    lse = float(np.log(np.exp(z - z.max()).sum()) + z.max())
    k = min(top, len(z))
    best = np.argpartition(-z, k - 1)[:k] if k else np.empty(0, np.int64)
    best = best[np.argsort(-z[best], kind="stable")]
    return TokenLogprob(int(token), float(z[token] - lse), [(int(i), float(z[i] - lse)) for i in best])
