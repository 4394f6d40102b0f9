"""Sessions: a conversation's KV cache, fed incrementally.

    s = model.session(n_ctx=2048, n_keep=4)
    logits = s.feed(prompt_ids)        # prefill in one batch -> last position's logits
    logits = s.feed([next_id])         # decode
    s.rewind(3); s.sync(new_full_ids); s.save("chat.hls"); model.load_session("chat.hls")

Sliding-window layers (Gemma 2/3's local layers, Mistral-style windows) cache only
their window plus one feed's tokens (kv_cache), so rewinds beyond max_batch recompute.

Each session owns its cache and scratch buffers; many sessions (also in different
threads) can share one model's read-only weights. A session itself is used by one
thread at a time: a second thread gets SessionBusyError instead of corrupted state.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Optional, Sequence

import numpy as np

from .errors import (ContextOverflowError, FileWriteError, InvalidInputError, ModelFormatError,
                     SessionBusyError)
from ._per_token import check_ids
from .kv_cache import KVCache, KVPool

SESSION_MAGIC = b"HEARTHLM-SESSION\n"
SESSION_VERSION = 2  # 2: K/V per cache group (sliding-window layers hold only their window)
MAX_BATCH = 512  # tokens per forward call; longer inputs are fed in chunks


def context_size(args, n_ctx: Optional[int], n_keep: Optional[int]) -> tuple:
    """n_ctx and n_keep with their defaults; n_ctx beyond the model's context is refused."""
    if n_ctx is None:
        n_ctx = min(args.max_position_embeddings, 4096)
    if isinstance(n_ctx, int) and n_ctx > args.max_position_embeddings:
        raise ContextOverflowError(
            f"n_ctx={n_ctx} exceeds the model's context of {args.max_position_embeddings} tokens "
            "(max_position_embeddings in config.json)")
    if n_keep is None:
        n_keep = max(0, min(4, n_ctx - 1)) if isinstance(n_ctx, int) else 4
    return n_ctx, n_keep


class Session:
    def __init__(self, model, n_ctx: Optional[int] = None, n_keep: Optional[int] = None,
                 n_discard: Optional[int] = None, kv_dtype: str = "f32", max_batch: int = MAX_BATCH,
                 cache: Optional[KVCache] = None):
        """n_ctx: tokens the cache holds (default: the model's context, at most 4096).
        n_keep: first tokens kept through context shifts (attention sinks / system
        prompt); default 4 (fewer only when n_ctx is tiny).
        n_discard: tokens dropped per shift (default: half of the n_ctx - n_keep ring).
        kv_dtype: cache storage, "f32" (default), "f16" / "bf16" (half the memory) or
        "q8" (int8 blocks of 32 with a scale: about 0.28x f32).
        max_batch: the most tokens per forward call; it also sizes the caches of
        sliding-window layers (n_keep + window + max_batch - 1 slots, not n_ctx), which
        makes rewinds of up to max_batch tokens free; a longer rewind recomputes.
        cache: a sequence of a KVPool to use instead of a cache of its own (SessionGroup);
        n_ctx, n_keep and kv_dtype are then its own."""
        self.model = model
        args = model.args
        if cache is not None:
            n_ctx, n_keep = cache.n_ctx, cache.n_keep
        n_ctx, n_keep = context_size(args, n_ctx, n_keep)
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise InvalidInputError(f"max_batch: expected a positive integer, got {max_batch!r}")
        self.cache = cache if cache is not None else KVCache.alone(args, n_ctx, n_keep, kv_dtype, max_batch)
        ring = self.cache.ring_size
        if n_discard is None:
            n_discard = max(1, ring // 2)
        if not isinstance(n_discard, int) or not 1 <= n_discard <= ring:
            raise InvalidInputError(f"n_discard: expected an integer in [1, {ring}], got {n_discard!r}")
        self.n_discard = n_discard
        self.max_batch = max(1, min(max_batch, ring, self.cache.max_feed))
        # A session of a SessionGroup makes its own buffers only if it is ever fed alone.
        self.buf = model.transformer.buffers(self.max_batch, 1) if cache is None else None
        self.last_logits = np.zeros((1, args.vocab_size), np.float32)
        self._last_view = self.last_logits[0]  # what feed() returns
        self._last_view.flags.writeable = False
        self._staged = np.zeros(self.max_batch, np.int32)  # token ids being fed
        self._tokens: list[int] = []
        self._lock = threading.Lock()
        model.transformer.ensure_rope(n_ctx)

    # -- state ----------------------------------------------------------------------

    @property
    def tokens(self) -> list[int]:
        """The tokens the cache holds now, in order (after shifts: sinks + most recent)."""
        return list(self._tokens)

    @property
    def n_ctx(self) -> int:
        return self.cache.n_ctx

    @property
    def free_rewind(self) -> int:
        """The most tokens rewind() (or sync() to a shorter prefix) can drop without
        recomputing: all of them, except with sliding-window layers (at least
        max_batch)."""
        return self.cache.free_rewind

    @property
    def memory_bytes(self) -> int:
        """Bytes of the KV cache and this session's scratch buffers."""
        own = [*self.buf.arrays] if self.buf is not None else []
        return self.cache.memory_bytes + sum(a.nbytes for a in (*own, self.last_logits, self._staged))

    def _exclusive(self):
        if not self._lock.acquire(blocking=False):
            raise SessionBusyError("this session is in use by another thread; "
                                   "give each thread its own model.session()")
        return _Release(self._lock)

    # -- feeding --------------------------------------------------------------------

    def feed(self, token_ids: Sequence[int], all_logits: bool = False,
             out: Optional[np.ndarray] = None) -> np.ndarray:
        """Append tokens and run them (in batches of up to max_batch). Returns the
        last position's logits [vocab] as a read-only view of the session's buffer,
        valid until the next call that changes the session (copy it to keep it; the
        decode loop allocates nothing). With all_logits: [len(token_ids), vocab], new,
        or the first rows of `out` (a float32 [rows, vocab] array with enough rows, for
        loops that allocate nothing)."""
        with self._exclusive():
            ids = check_ids(token_ids, self.model.vocab_size, "token_ids", self._staged)
            if len(ids) == 0:
                raise InvalidInputError("token_ids: empty")
            if out is not None:
                if not all_logits:
                    raise InvalidInputError("out: only with all_logits=True")
                vocab = self.model.vocab_size
                if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 2
                        and out.shape[0] >= len(ids) and out.shape[1] == vocab and out.flags.c_contiguous):
                    raise InvalidInputError(f"out: expected a C-contiguous float32 array [>= {len(ids)}, {vocab}], "
                                            f"got {getattr(out, 'dtype', type(out).__name__)} "
                                            f"{getattr(out, 'shape', '')}")
                out = out[:len(ids)]
            elif all_logits:
                out = np.empty((len(ids), self.model.vocab_size), np.float32)
            self._run(ids, out)
            if all_logits:
                self.last_logits[0] = out[-1]
                return out
            return self._last_view

    def _run(self, ids: np.ndarray, out: Optional[np.ndarray]) -> None:
        """Feed ids (the session held); out: [len(ids), vocab] for every row's logits,
        or None for the last row's only, in last_logits."""
        if self.buf is None:
            self.buf = self.model.transformer.buffers(self.max_batch, 1)
        for start in range(0, len(ids), self.max_batch):
            chunk = ids[start:start + self.max_batch]
            self._make_room(len(chunk))
            dest = out[start:start + len(chunk)] if out is not None else self.last_logits
            self.model.transformer.forward(chunk, self.cache, self.buf, dest)
            self._tokens.extend(chunk.tolist())

    def _make_room(self, n: int) -> None:
        cache = self.cache
        overflow = cache.length + n - cache.n_ctx
        if overflow <= 0:
            return
        drop = min(max(overflow, self.n_discard), cache.length - cache.n_keep)
        t = self.model.transformer
        cache.shift(drop, t.shift_rotations(drop, cache.n_ctx), t.n_threads)
        del self._tokens[cache.n_keep:cache.n_keep + drop]

    def rewind(self, n: int) -> None:
        """Drop the last n tokens (undo / regenerate). Free up to free_rewind tokens; a
        model with sliding-window layers rewound further no longer has the window
        before the new end cached, and recomputes the tokens after the sinks (a
        prefill of what remains; after context shifts, of the tokens as they are now)."""
        if not isinstance(n, int) or not 0 <= n <= len(self._tokens):
            raise InvalidInputError(f"rewind: n must be in [0, {len(self._tokens)}], got {n!r}")
        with self._exclusive():
            self.cache.truncate(len(self._tokens) - n)
            del self._tokens[len(self._tokens) - n:]
            if not self.cache.intact:
                self._recompute()

    def _recompute(self) -> None:
        """Feed again every token after the sinks (the session held)."""
        keep = self.cache.n_keep
        again = np.array(self._tokens[keep:], np.int32)
        self.cache.truncate(keep)
        del self._tokens[keep:]
        if len(again):
            self._run(again, None)

    def reset(self) -> None:
        with self._exclusive():
            self.cache.reset()
            self._tokens.clear()

    def common_prefix(self, token_ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self._tokens, token_ids):
            if a != b:
                break
            n += 1
        return n

    def sync(self, token_ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly token_ids, reusing the cached common prefix and
        feeding only the rest. Returns the last position's logits."""
        ids = self.model.check_ids(token_ids)
        if len(ids) == 0:
            raise InvalidInputError("token_ids: empty")
        keep = min(self.common_prefix(ids.tolist()), len(ids) - 1)  # feed >= 1 for logits
        self.rewind(len(self._tokens) - keep)
        return self.feed(ids[keep:])

    # -- persistence ----------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write the session (tokens and their cached K/V) to `path`: per cache group,
        the K/V of the tokens it holds, in logical order."""
        with self._exclusive():
            cache = self.cache
            groups = cache.pool.groups
            header = {
                "version": SESSION_VERSION,
                "model": self.model.fingerprint,
                "dtype": self.model.dtype,
                "kv_dtype": cache.kv_dtype,
                "n_ctx": cache.n_ctx,
                "n_keep": cache.n_keep,
                "n_discard": self.n_discard,
                "max_batch": self.max_batch,
                "tokens": self._tokens,
                "rings": [{"tail": r.tail, "start": r.start} for r in cache.rings],
            }
            raw = json.dumps(header).encode()
            tmp = f"{path}.tmp-{os.getpid()}"
            try:
                with open(tmp, "wb") as f:
                    f.write(SESSION_MAGIC + len(raw).to_bytes(8, "little") + raw)
                    for g, ring in zip(groups, cache.rings):
                        slots = ring.first + ring.order()
                        for j in range(len(g.layers)):
                            for part in g.arrays:
                                f.write(np.ascontiguousarray(part[j][:, slots]).tobytes())
                os.replace(tmp, path)
            except OSError as e:
                raise FileWriteError(f"{path}: cannot save the session: {e.strerror}") from None
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    @classmethod
    def load(cls, model, path: str) -> "Session":
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ModelFormatError(f"{path}: cannot open session file: {e.strerror}") from None
        with f:
            if f.read(len(SESSION_MAGIC)) != SESSION_MAGIC:
                raise ModelFormatError(f"{path}: not a hearthlm session file")
            size = int.from_bytes(f.read(8), "little")
            if size > 1 << 30:
                raise ModelFormatError(f"{path}: session header of {size} bytes is implausible")
            try:
                header = json.loads(f.read(size))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise ModelFormatError(f"{path}: bad session header: {e}") from None
            if not isinstance(header, dict):
                raise ModelFormatError(f"{path}: session header must be a JSON object, "
                                       f"got {type(header).__name__}")
            if header.get("version") != SESSION_VERSION:
                raise ModelFormatError(f"{path}: session format version {header.get('version')!r} "
                                       f"is not {SESSION_VERSION}")
            if header.get("model") != model.fingerprint or header.get("dtype") != model.dtype:
                raise ModelFormatError(f"{path}: session was saved from another model or dtype "
                                       f"({header.get('dtype')}); it cannot be used with this one")
            try:
                s = cls(model, n_ctx=int(header["n_ctx"]), n_keep=int(header["n_keep"]),
                        n_discard=int(header["n_discard"]), kv_dtype=str(header["kv_dtype"]),
                        max_batch=int(header["max_batch"]))
                tokens = [int(t) for t in header["tokens"]]
                rings = [(int(r["tail"]), int(r["start"])) for r in header["rings"]]
            except (KeyError, TypeError, ValueError) as e:
                raise ModelFormatError(f"{path}: session header is incomplete: {e}") from None
            n = len(tokens)
            if n > s.n_ctx or len(rings) != len(s.cache.rings):
                raise ModelFormatError(f"{path}: {n} tokens in {len(rings)} cache groups do not fit this model's "
                                       f"{len(s.cache.rings)} groups of n_ctx={s.n_ctx}")
            s.model.check_ids(tokens, "session tokens")
            for ring, (tail, start) in zip(s.cache.rings, rings):
                lowest = max(s.cache.n_keep, n - ring.ring_size) if ring.window else s.cache.n_keep
                if not 0 <= tail < max(ring.ring_size, 1) or not lowest <= start <= max(s.cache.n_keep, n):
                    raise ModelFormatError(f"{path}: bad ring tail {tail} / start {start}")
                # Same slots as when saved, so attention sums in the same order: exact round trip.
                ring.tail, ring.length, ring.start = tail, n, start
            for g, ring in zip(s.cache.pool.groups, s.cache.rings):
                order, held = ring.order(), ring.held()
                for j in range(len(g.layers)):
                    for part in g.arrays:
                        rows = (part.shape[1], len(order), part.shape[3])
                        per = int(np.prod(rows)) * part.itemsize
                        data = f.read(per)
                        if len(data) != per:
                            raise ModelFormatError(f"{path}: truncated session file")
                        part[j][:, ring.first + order] = np.frombuffer(data, part.dtype).reshape(rows)
                ring.slot_pos[order] = held.astype(np.int32)
            if f.read(1):
                raise ModelFormatError(f"{path}: the cached K/V does not match the model (bytes left over)")
            s._tokens = tokens
            return s


class SessionGroup:
    """Sessions whose caches are the sequences of one KVPool, so that the new tokens
    of several of them run in one forward: B sequences decoding together cost one
    pass over the weights (Transformer.forward_batch). Each session also works alone."""

    def __init__(self, model, n_sessions: int, n_ctx: Optional[int] = None, n_keep: Optional[int] = None,
                 n_discard: Optional[int] = None, kv_dtype: str = "f32", max_tokens: int = MAX_BATCH,
                 max_session_tokens: Optional[int] = None, max_logits: Optional[int] = None):
        """max_tokens: the most tokens one feed() runs, all sessions together;
        max_session_tokens: the most of them for one session (default max_tokens),
        which sizes the caches of sliding-window layers, as a Session's max_batch does;
        max_logits: the most rows of logits one feed() returns (default n_sessions)."""
        args = model.args
        n_ctx, n_keep = context_size(args, n_ctx, n_keep)
        for name, value in (("max_tokens", max_tokens), ("max_session_tokens", max_session_tokens or max_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name}: expected a positive integer, got {value!r}")
        self.model = model
        self.pool = KVPool(args, n_ctx, n_sessions, kv_dtype, n_keep, max_session_tokens or max_tokens)
        self.sessions = [Session(model, n_discard=n_discard, cache=self.pool.sequence(i))
                         for i in range(n_sessions)]
        self.max_tokens = max_tokens
        max_logits = max_logits or n_sessions
        self.buf = model.transformer.buffers(max_tokens, n_sessions, max_logits)
        self.logits = np.zeros((max_logits, args.vocab_size), np.float32)

    def feed(self, batch, tails: Optional[Sequence[int]] = None) -> np.ndarray:
        """batch: (session, token ids) pairs, each session of this group at most once,
        at most max_tokens ids in all. Appends the ids to each session and runs them in
        one forward; returns logits [len(batch), vocab], row i after batch[i]'s last id
        (a view of the group's buffer, valid until the next feed). With tails (per
        pair, how many of its last ids want logits; at most max_logits in all): the
        rows after each of those ids, pair by pair, [sum(tails), vocab]."""
        if not batch or len(batch) > len(self.sessions):
            raise InvalidInputError(f"batch: expected 1 to {len(self.sessions)} (session, ids) pairs")
        if len({id(s) for s, _ in batch}) != len(batch) or any(s.cache.pool is not self.pool for s, _ in batch):
            raise InvalidInputError("batch: each session must be of this group and appear once")
        held = []
        try:
            for s, _ in batch:
                held.append(s._exclusive())
            vocab = self.model.vocab_size
            items = [(s, check_ids(ids, vocab, f"batch[{i}] ids", s._staged)) for i, (s, ids) in enumerate(batch)]
            total = sum(len(ids) for _, ids in items)
            if total > self.max_tokens or min(len(ids) for _, ids in items) < 1:
                raise InvalidInputError(f"batch: {total} token ids (at least one per session) exceed the group's "
                                        f"max_tokens={self.max_tokens}")
            if tails is not None:
                tails = list(tails)
                if len(tails) != len(items) or not all(isinstance(n, int) and 1 <= n <= len(ids)
                                                       for n, (_, ids) in zip(tails, items)):
                    raise InvalidInputError("tails: expected, per pair, an integer from 1 to its number of ids")
                if sum(tails) > len(self.logits):
                    raise InvalidInputError(f"tails: {sum(tails)} rows of logits exceed the group's "
                                            f"max_logits={len(self.logits)}")
            for s, ids in items:
                if len(ids) > s.cache.max_feed:
                    raise InvalidInputError(f"batch: {len(ids)} ids exceed the {s.cache.max_feed} a session's "
                                            "cache takes at once; feed them in parts")
                s._make_room(len(ids))
            logits = self.logits[:len(items) if tails is None else sum(tails)]
            self.model.transformer.forward_batch([(ids, s.cache) for s, ids in items], self.buf, logits,
                                                 tails=tails)
            for s, ids in items:
                s._tokens.extend(ids.tolist())
            return logits
        finally:
            for h in held:
                h.__exit__()


class _Release:
    def __init__(self, lock: threading.Lock):
        self.lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.lock.release()


def fingerprint(folder: str, files, args_dict: dict) -> str:
    """Identity of a checkpoint: its config and every tensor's name, dtype, shape and
    byte range (hashing gigabytes of weights at load would cost seconds)."""
    h = hashlib.sha256(json.dumps(args_dict, sort_keys=True, default=str).encode())
    for name in sorted(files.where):
        info = files.info(name)
        h.update(f"{name}|{info.dtype}|{info.shape}|{info.begin}|{info.end}\n".encode())
    return h.hexdigest()[:32]
