# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The per-token bookkeeping, compiled: token ids checked into an int32 buffer
(check_ids), where a sequence's cache puts each token (Ring, the base of
kv_cache.KVCache) and a batch's tokens placed in the forward buffers (Placer).
Plain loops over preallocated arrays: nothing is allocated per token."""
from libc.stdint cimport int32_t, int64_t

import numpy as np

from .errors import InvalidInputError


def check_ids(token_ids, Py_ssize_t vocab_size, str argument="token_ids", out=None):
    """token_ids (a sequence of integers) as int32 [n], each in [0, vocab_size); in
    out[:n] when `out` (int32, long enough) is given, else in a new array."""
    cdef Py_ssize_t i, n
    cdef long long v
    cdef int32_t[::1] dst
    cdef object t
    if type(token_ids) is list or type(token_ids) is tuple:  # the decode loop's [token]
        n = len(token_ids)
        arr = out[:n] if out is not None and len(out) >= n else np.empty(n, np.int32)
        dst = arr
        for i in range(n):
            t = token_ids[i]
            if type(t) is not int:  # bool, numpy integers...: numpy's rules below
                break
            try:
                v = t
            except OverflowError:
                v = -1
            if not 0 <= v < vocab_size:
                _out_of_vocabulary(argument, i, t, vocab_size)
            dst[i] = <int32_t>v
        else:
            return arr
    try:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidInputError(f"{argument}: expected a sequence of integer token ids ({e})") from None
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        i = int(np.argmax(bad))
        _out_of_vocabulary(argument, i, int(ids[i]), vocab_size)
    n = len(ids)
    arr = out[:n] if out is not None and len(out) >= n else np.empty(n, np.int32)
    arr[...] = ids
    return arr


cdef _out_of_vocabulary(str argument, Py_ssize_t i, object value, Py_ssize_t vocab_size):
    raise InvalidInputError(f"{argument}[{i}] = {value} is outside the vocabulary [0, {vocab_size})")


cdef class Ring:
    """Which slot of a sequence's region [first, first + capacity) of the pool holds
    each of its tokens. Slots [0, n_keep) hold the first n_keep tokens for good;
    [n_keep, capacity) is a ring of the rest, the oldest at `tail` (0-based in the
    ring). slot_pos: int32 [capacity], each slot's token position, -1 when empty."""
    cdef readonly Py_ssize_t first, capacity, n_keep
    cdef public Py_ssize_t length, tail
    cdef readonly object slot_pos
    cdef int32_t[::1] pos

    def __init__(self, slot_pos, Py_ssize_t first, n_keep):
        capacity = len(slot_pos)
        if type(n_keep) is not int or not 0 <= n_keep < capacity:
            raise InvalidInputError(f"n_keep: expected an integer in [0, n_ctx={capacity}), got {n_keep!r}")
        self.slot_pos = slot_pos
        self.pos = slot_pos
        self.first, self.capacity, self.n_keep = first, capacity, n_keep
        self.reset()

    @property
    def ring_size(self) -> int:
        return self.capacity - self.n_keep

    def reset(self) -> None:
        self.pos[:] = -1
        self.length = 0
        self.tail = 0

    cdef inline Py_ssize_t slot(self, Py_ssize_t i) noexcept nogil:
        if i < self.n_keep:
            return i
        return self.n_keep + (self.tail + i - self.n_keep) % (self.capacity - self.n_keep)

    def slot_of(self, Py_ssize_t i) -> int:
        """The slot holding logical token i."""
        return self.slot(i)

    def segments(self, Py_ssize_t start, Py_ssize_t count) -> list:
        """Logical tokens [start, start+count) as (offset, slot slice) runs of
        contiguous slots: at most three (sinks, ring before wrap, ring after wrap)."""
        out = []
        cdef Py_ssize_t i = start, s, n
        while i < start + count:
            s = self.slot(i)
            n = min(start + count - i, (self.n_keep if i < self.n_keep else self.capacity) - s)
            out.append((i - start, slice(s, s + n)))
            i += n
        return out

    def reserve(self, Py_ssize_t n_tokens, int64_t[::1] slots) -> None:
        """Slots for the next n_tokens (the caller made room), written to slots[:n_tokens]
        as pool slot numbers."""
        if self.length + n_tokens > self.capacity:
            raise InvalidInputError(
                f"{self.length + n_tokens} tokens exceed the cache of {self.capacity}; shift first")
        if slots.shape[0] < n_tokens:
            raise InvalidInputError(f"slots: {slots.shape[0]} entries for {n_tokens} tokens")
        self.place(n_tokens, &slots[0])

    cdef void place(self, Py_ssize_t n, int64_t* slots) noexcept nogil:
        cdef Py_ssize_t j, s
        for j in range(n):
            s = self.slot(self.length + j)
            self.pos[s] = <int32_t>(self.length + j)
            slots[j] = self.first + s
        self.length += n

    def truncate(self, Py_ssize_t length) -> None:
        """Keep only the first `length` tokens (rewind)."""
        if not 0 <= length <= self.length:
            raise InvalidInputError(f"truncate: length must be in [0, {self.length}], got {length}")
        cdef Py_ssize_t i
        with nogil:
            for i in range(length, self.length):
                self.pos[self.slot(i)] = -1
        self.length = length
        if self.length <= self.n_keep:
            self.tail = 0


cdef class Placer:
    """Places the tokens of a forward over several sequences in a Buffers' arrays:
    their ids, positions, cache slots and attention ranges, and each sequence's last row."""
    cdef int32_t[::1] ids, positions
    cdef int64_t[::1] slots, last
    cdef int64_t[:, ::1] ranges
    cdef readonly Py_ssize_t max_tokens, max_sequences

    def __init__(self, ids, positions, slots, ranges, last):
        self.ids, self.positions, self.slots, self.ranges, self.last = ids, positions, slots, ranges, last
        self.max_tokens, self.max_sequences = len(ids), len(last)

    def place(self, items, pool) -> tuple:
        """items: (ids int32 [n], cache: a Ring of `pool`) pairs, at least one id each,
        at most max_tokens in all and max_sequences pairs, each cache with room for its
        ids (all checked before any is changed). Appends each sequence's ids to its
        cache. -> (tokens, the largest position + 1)."""
        cdef Py_ssize_t k, j, n, T = 0, top = 0, n_items = len(items)
        cdef Ring cache
        cdef const int32_t[::1] src
        if not 1 <= n_items <= self.max_sequences:
            raise InvalidInputError(f"items: expected 1 to {self.max_sequences} sequences, got {n_items}")
        for k in range(n_items):
            ids, cache = items[k]
            if cache.pool is not pool:
                raise InvalidInputError("items: the caches of one batch must share one KVPool")
            n = len(ids)
            if n < 1 or cache.length + n > cache.capacity:
                raise InvalidInputError(f"items[{k}]: {n} tokens for a cache holding {cache.length} of "
                                        f"{cache.capacity} (at least one each; shift first)")
            T += n
        if T > self.max_tokens:
            raise InvalidInputError(f"items: {T} tokens (at least one per sequence) exceed the {self.max_tokens} "
                                    "of the buffers")
        T = 0
        for k in range(n_items):
            ids, cache = items[k]
            src = ids
            n = src.shape[0]
            for j in range(n):
                self.ids[T + j] = src[j]
                self.positions[T + j] = <int32_t>(cache.length + j)  # token i of a cache: position i
                self.ranges[T + j, 0] = cache.first
                self.ranges[T + j, 1] = cache.capacity
            top = max(top, cache.length + n)
            cache.place(n, &self.slots[T])
            T += n
            self.last[k] = T - 1
        return T, top
