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
    """Which slot of a sequence's region [first, first + capacity) of one cache group
    holds each of its tokens. Slots [0, n_keep) hold the first n_keep tokens for good;
    [n_keep, capacity) is a ring of the rest, the oldest at `tail` (0-based in the
    ring). slot_pos: int32 [capacity], each slot's token position, -1 when empty.

    A full ring (window 0) holds every token up to n_ctx = capacity. A window ring
    (the layers of a sliding window of `window` tokens) is smaller than n_ctx: new
    tokens overwrite the oldest, and it holds the sinks and the middle tokens
    [start, length). A feed of n tokens needs the window before its first token and
    room for all n, so at most max_feed = ring_size - window + 1 tokens at a time."""
    cdef readonly Py_ssize_t first, capacity, n_keep, n_ctx, window, max_feed
    cdef public Py_ssize_t length, tail, start
    cdef readonly object slot_pos
    cdef int32_t[::1] pos

    def __init__(self, slot_pos, Py_ssize_t first, n_keep, Py_ssize_t n_ctx=-1, Py_ssize_t window=0):
        capacity = len(slot_pos)
        if type(n_keep) is not int or not 0 <= n_keep < capacity:
            raise InvalidInputError(f"n_keep: expected an integer in [0, n_ctx={capacity}), got {n_keep!r}")
        self.slot_pos = slot_pos
        self.pos = slot_pos
        self.first, self.capacity, self.n_keep = first, capacity, n_keep
        self.n_ctx = capacity if n_ctx < 0 else n_ctx
        self.window = window if capacity < self.n_ctx else 0
        self.max_feed = self.ring_size - self.window + 1 if self.window else capacity  # per forward
        if self.max_feed < 1:
            raise InvalidInputError(f"a ring of {self.ring_size} slots cannot hold a window of {window}")
        self.reset()

    @property
    def ring_size(self) -> int:
        return self.capacity - self.n_keep

    @property
    def intact(self) -> bool:
        """Whether it holds every token the next one attends (a window ring rewound
        past what it kept does not)."""
        return self.start <= max(self.n_keep, self.length - self.window + 1) if self.window else True

    @property
    def free_rewind(self) -> int:
        """The most tokens a rewind may drop and leave it intact."""
        if not self.window or self.start == self.n_keep:
            return self.length
        return max(0, self.length - (self.start + self.window - 1))

    def reset(self) -> None:
        self.pos[:] = -1
        self.length = 0
        self.tail = 0
        self.start = self.n_keep

    cdef inline Py_ssize_t slot(self, Py_ssize_t i) noexcept nogil:
        if i < self.n_keep:
            return i
        return self.n_keep + (self.tail + i - self.n_keep) % (self.capacity - self.n_keep)

    def slot_of(self, Py_ssize_t i) -> int:
        """The slot holding logical token i."""
        return self.slot(i)

    def held(self):
        """The logical tokens it holds, in order: int64 [sinks + middle]."""
        return np.concatenate([np.arange(min(self.length, self.n_keep)), np.arange(self.start, self.length)])

    def order(self):
        """The slots of held(), in the same order: int64."""
        i = self.held()
        return np.where(i < self.n_keep, i, self.n_keep + (self.tail + i - self.n_keep) % max(self.ring_size, 1))

    cdef inline bint fits(self, Py_ssize_t n) noexcept:
        return self.length + n <= self.n_ctx and n <= self.max_feed

    def check_feed(self, Py_ssize_t n_tokens, str where="") -> None:
        """Refuse a feed of n_tokens it cannot take."""
        if self.length + n_tokens > self.n_ctx:
            raise InvalidInputError(
                f"{where}{self.length + n_tokens} tokens exceed the cache of {self.n_ctx}; shift first")
        if n_tokens > self.max_feed:
            raise InvalidInputError(f"{where}{n_tokens} tokens at once exceed the {self.max_feed} a sliding-window "
                                    f"cache of {self.capacity} slots takes (window {self.window}); feed them in parts")

    def reserve(self, Py_ssize_t n_tokens, int64_t[::1] slots) -> None:
        """Slots for the next n_tokens (the caller made room), written to slots[:n_tokens]
        as pool slot numbers."""
        self.check_feed(n_tokens)
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
        if self.length - self.start > self.capacity - self.n_keep:  # the oldest were overwritten
            self.start = self.length - (self.capacity - self.n_keep)

    def truncate(self, Py_ssize_t length) -> None:
        """Keep only the first `length` tokens (rewind)."""
        if not 0 <= length <= self.length:
            raise InvalidInputError(f"truncate: length must be in [0, {self.length}], got {length}")
        cdef Py_ssize_t i
        with nogil:
            for i in range(max(length, self.start), self.length):
                self.pos[self.slot(i)] = -1
            for i in range(length, min(self.length, self.n_keep)):
                self.pos[i] = -1
        self.length = length
        if self.start > length:
            self.start = max(self.n_keep, length)
        if self.length <= self.n_keep:
            self.tail = 0

    def drop(self, Py_ssize_t n_drop) -> None:
        """Forget the middle tokens [n_keep, n_keep + n_drop): the later ones move down
        by n_drop and keep their slots (a context shift; the caller rotates their keys)."""
        cdef Py_ssize_t i, end = self.n_keep + n_drop
        for i in range(max(self.start, self.n_keep), min(end, self.length)):
            self.pos[self.slot(i)] = -1
        self.tail = (self.tail + n_drop) % self.ring_size
        self.start = max(self.start, end) - n_drop
        self.length -= n_drop
        for i in range(self.start, self.length):
            self.pos[self.slot(i)] = <int32_t>i


cdef class Placer:
    """Places the tokens of a forward over several sequences in a Buffers' arrays:
    their ids, positions, per cache group their slots and attention ranges, and each
    sequence's last row."""
    cdef int32_t[::1] ids, positions
    cdef int64_t[:, ::1] slots
    cdef int64_t[::1] last
    cdef int64_t[:, :, ::1] ranges
    cdef readonly Py_ssize_t max_tokens, max_sequences

    def __init__(self, ids, positions, slots, ranges, last):
        """slots [groups, tokens], ranges [groups, tokens, 2]."""
        self.ids, self.positions, self.slots, self.ranges, self.last = ids, positions, slots, ranges, last
        self.max_tokens, self.max_sequences = len(ids), len(last)

    def place(self, items, pool) -> tuple:
        """items: (ids int32 [n], cache: a KVCache of `pool`) pairs, at least one id each,
        at most max_tokens in all and max_sequences pairs, each cache with room for its
        ids (all checked before any is changed). Appends each sequence's ids to its
        cache. -> (tokens, the largest position + 1)."""
        cdef Py_ssize_t k, j, g, n, length, T = 0, top = 0, n_items = len(items)
        cdef Ring ring
        cdef tuple rings
        cdef const int32_t[::1] src
        if not 1 <= n_items <= self.max_sequences:
            raise InvalidInputError(f"items: expected 1 to {self.max_sequences} sequences, got {n_items}")
        for k in range(n_items):
            ids, cache = items[k]
            if cache.pool is not pool:
                raise InvalidInputError("items: the caches of one batch must share one KVPool")
            n = len(ids)
            if n < 1:
                raise InvalidInputError(f"items[{k}]: no tokens (at least one each)")
            for ring in cache.rings:
                if not ring.fits(n):
                    ring.check_feed(n, f"items[{k}]: ")
            T += n
        if T > self.max_tokens:
            raise InvalidInputError(f"items: {T} tokens (at least one per sequence) exceed the {self.max_tokens} "
                                    "of the buffers")
        T = 0
        for k in range(n_items):
            ids, cache = items[k]
            src = ids
            n = src.shape[0]
            rings = cache.rings
            length = (<Ring>rings[0]).length
            for j in range(n):
                self.ids[T + j] = src[j]
                self.positions[T + j] = <int32_t>(length + j)  # token i of a cache: position i
            for g in range(len(rings)):
                ring = rings[g]
                for j in range(n):
                    self.ranges[g, T + j, 0] = ring.first
                    self.ranges[g, T + j, 1] = ring.capacity
                ring.place(n, &self.slots[g, T])
            top = max(top, length + n)
            T += n
            self.last[k] = T - 1
        return T, top
