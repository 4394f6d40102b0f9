"""The KV cache: one contiguous allocation per cache group made once, written in
place, used as a ring buffer that never runs out.

Cache groups: the layers of one attention kind share a slot layout. The full-attention
layers (window 0) hold all n_ctx tokens; the layers of a sliding window of W tokens
(Gemma 2/3's local layers, Mistral-style `sliding_window`) need only the sinks, the
last W - 1 tokens and the tokens of one feed: n_keep + W + max_feed - 1 slots, newer
tokens overwriting the oldest (the Ring of _per_token.pyx).

Layout of a group: k, v: [layers, n_kv_heads, capacity, row] in the storage type
(`kv_dtype`), so each kv head of each layer is one sequential stream for attention,
which reads the storage type directly:
  f32   row = head_dim float32                       (4 bytes per value)
  f16   row = head_dim IEEE half; bf16 bfloat16       (2 bytes)
  q8    row = head_dim padded to 32 int8, plus one float32 scale per 32 in
        k_scales / v_scales [layers, n_kv_heads, capacity, row / 32]  (~1.1 bytes)
`slot_pos[s]` is the position of the token in slot s (-1 = empty); attention masks by
these positions, so tokens may sit in any slot.

Slots [0, n_keep) hold the first n_keep tokens (the attention sinks) for good; slots
[n_keep, capacity) are a ring holding the rest, oldest at `tail`. The token at
logical index i always has RoPE position i. When the cache is full, a context shift
drops the oldest tokens of the middle (just after the sinks): their slots are reused,
and the keys of the tokens after them, cached already rotated, are rotated back by
the number dropped (R(p - d) = R(-d)·R(p)), so positions stay 0..length-1. A window
group shifts alike, each layer rotated by its own RoPE table.

A window group rewound by more than max_feed tokens no longer holds the window of the
next token (`KVCache.intact` is false): Session then recomputes it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _kernels as K
from ._per_token import Ring
from .errors import InvalidInputError
from .models import ModelArgs

KV_DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "q8": np.int8}
Q8_BLOCK = K.limits["kv_q8_block"]  # values per scale of a q8 cache row


def cache_groups(args: ModelArgs) -> list:
    """(window, layer indices) of each cache group: full attention (window 0) first,
    then each sliding window in the order of its first layer."""
    windows = args.sliding_windows
    order = sorted(set(windows), key=lambda w: (w != 0, windows.index(w)))
    return [(w, tuple(i for i, x in enumerate(windows) if x == w)) for w in order]


class KVGroup:
    """One cache group's storage in a pool: `capacity` slots per sequence."""

    def __init__(self, window: int, layers: tuple, capacity: int):
        self.window, self.layers, self.capacity = window, layers, capacity
        self.k = self.v = self.k_scales = self.v_scales = self.slot_pos = None

    def allocate(self, shape: tuple, kv_dtype: str) -> None:
        q8 = kv_dtype == "q8"
        self.k = np.zeros(shape, dtype=KV_DTYPES[kv_dtype])
        self.v = np.zeros(shape, dtype=KV_DTYPES[kv_dtype])
        self.k_scales = np.zeros(shape[:3] + (shape[3] // Q8_BLOCK,), np.float32) if q8 else None
        self.v_scales = np.zeros(shape[:3] + (shape[3] // Q8_BLOCK,), np.float32) if q8 else None
        self.slot_pos = np.full(shape[2], -1, dtype=np.int32)

    @property
    def arrays(self) -> list:
        """Every per-layer storage array: [k, v] or [k, v, k_scales, v_scales]."""
        return [a for a in (self.k, self.v, self.k_scales, self.v_scales) if a is not None]

    @property
    def native(self) -> tuple:
        """(k, k_scales, v, v_scales, slot_pos), as the layer program takes them."""
        return self.k, self.k_scales, self.v, self.v_scales, self.slot_pos


class KVPool:
    """The K/V storage of one or more sequences: one allocation per cache group made up
    front, never per token. Sequence i of a pool of n_seqs sequences owns the slots
    [i * capacity, (i + 1) * capacity) of each group (a KVCache over those regions).
    max_feed: the most tokens one forward adds to a sequence, which sizes the window
    groups (n_keep + window + max_feed - 1 slots); None: every group holds n_ctx."""

    def __init__(self, args: ModelArgs, n_ctx: int, n_seqs: int = 1, kv_dtype: str = "f32", n_keep: int = 0,
                 max_feed: Optional[int] = None):
        for name, value in (("n_ctx", n_ctx), ("n_seqs", n_seqs), ("max_feed", max_feed or 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name}: expected a positive integer, got {value!r}")
        if kv_dtype not in KV_DTYPES:
            raise InvalidInputError(f"kv_dtype: expected one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
        if not isinstance(n_keep, int) or not 0 <= n_keep < n_ctx:
            raise InvalidInputError(f"n_keep: expected an integer in [0, n_ctx={n_ctx}), got {n_keep!r}")
        self.kv_dtype = kv_dtype
        self.head_dim = args.head_dim
        self.n_ctx, self.n_seqs, self.n_keep = n_ctx, n_seqs, n_keep
        row = -(-args.head_dim // Q8_BLOCK) * Q8_BLOCK if kv_dtype == "q8" else args.head_dim
        self.groups = [KVGroup(w, layers, n_ctx if not w or max_feed is None else min(n_ctx, n_keep + w + max_feed - 1))
                       for w, layers in cache_groups(args)]
        shapes = [(len(g.layers), args.num_key_value_heads, g.capacity * n_seqs, row) for g in self.groups]
        itemsize = np.dtype(KV_DTYPES[kv_dtype]).itemsize
        values = sum(int(np.prod(s)) for s in shapes)
        needed = 2 * values * itemsize + (2 * values // Q8_BLOCK * 4 if kv_dtype == "q8" else 0)
        try:
            for g, shape in zip(self.groups, shapes):
                g.allocate(shape, kv_dtype)
        except MemoryError:
            raise InvalidInputError(
                f"n_ctx={n_ctx}: the KV cache of {n_seqs} sequence(s) needs {needed / 2**30:.2f} GiB "
                f"({needed} bytes), which cannot be allocated") from None

    @property
    def arrays(self) -> list:
        """Every storage array of every group."""
        return [a for g in self.groups for a in g.arrays]

    @property
    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays) + sum(g.slot_pos.nbytes for g in self.groups)

    def sequence(self, i: int, n_keep: Optional[int] = None) -> "KVCache":
        """The cache of sequence i (its regions of the pool); n_keep: at most the pool's
        when it has window groups smaller than n_ctx (their sinks' slots)."""
        if not isinstance(i, int) or not 0 <= i < self.n_seqs:
            raise InvalidInputError(f"sequence: expected an index in [0, {self.n_seqs}), got {i!r}")
        n_keep = self.n_keep if n_keep is None else n_keep
        if isinstance(n_keep, int) and n_keep > self.n_keep and any(g.capacity < self.n_ctx for g in self.groups):
            raise InvalidInputError(f"n_keep: at most the pool's n_keep={self.n_keep} (its sliding-window caches "
                                    f"keep that many sinks), got {n_keep}")
        return KVCache(self, i, n_keep)


class KVCache:
    """One sequence's regions of a KVPool: a Ring (slot bookkeeping, compiled) per cache
    group, all holding the same logical tokens [0, length)."""

    def __init__(self, pool: KVPool, i: int, n_keep: int = 0):
        self.pool = pool
        self.kv_dtype, self.head_dim, self.n_ctx = pool.kv_dtype, pool.head_dim, pool.n_ctx
        self.rings = tuple(Ring(g.slot_pos[i * g.capacity:(i + 1) * g.capacity], i * g.capacity, n_keep, pool.n_ctx,
                                g.window) for g in pool.groups)

    @classmethod
    def alone(cls, args: ModelArgs, n_ctx: int, n_keep: int = 0, kv_dtype: str = "f32",
              max_feed: Optional[int] = None) -> "KVCache":
        """A cache with a pool of its own."""
        return KVPool(args, n_ctx, 1, kv_dtype, n_keep, max_feed).sequence(0, n_keep)

    @property
    def length(self) -> int:
        return self.rings[0].length

    @property
    def n_keep(self) -> int:
        return self.rings[0].n_keep

    @property
    def ring_size(self) -> int:
        """Tokens it holds beside the sinks (before a shift)."""
        return self.n_ctx - self.n_keep

    @property
    def max_feed(self) -> int:
        """The most tokens one forward may add."""
        return min(r.max_feed for r in self.rings)

    @property
    def intact(self) -> bool:
        """Whether every group holds what the next token attends (see Ring.intact)."""
        return all(r.intact for r in self.rings)

    @property
    def free_rewind(self) -> int:
        """The most tokens a rewind may drop and stay intact."""
        return min(r.free_rewind for r in self.rings)

    @property
    def memory_bytes(self) -> int:
        return self.pool.memory_bytes // self.pool.n_seqs

    def truncate(self, length: int) -> None:
        for r in self.rings:
            r.truncate(length)

    def reset(self) -> None:
        for r in self.rings:
            r.reset()

    def shift(self, n_drop: int, rotations: list, n_threads: int) -> None:
        """Drop the n_drop oldest tokens after the sinks; later tokens move down by
        n_drop positions and their cached keys are rotated back by n_drop.
        rotations: per layer (cos, sin, rotary_dim) of that rotation ([1, rotary_dim/2]
        tables), or None for a layer without RoPE (Transformer.shift_rotations)."""
        n_middle = self.length - self.n_keep
        if not 0 < n_drop <= n_middle:
            raise InvalidInputError(f"shift: cannot drop {n_drop} of {n_middle} middle tokens")
        for g, ring in zip(self.pool.groups, self.rings):
            ring.drop(n_drop)
            # the held middle tokens rotate; sinks and empty slots stay as they are
            which = np.full(g.slot_pos.shape, -1, np.int32)
            which[ring.first:ring.first + ring.capacity] = np.where(ring.slot_pos >= self.n_keep, 0, -1)
            for j, layer in enumerate(g.layers):
                if rotations[layer] is None:
                    continue
                cos, sin, rotary_dim = rotations[layer]
                ks = g.k_scales[j] if g.k_scales is not None else None
                K.kv_rotate(g.k[j], ks, self.kv_dtype, self.head_dim, cos, sin, which, rotary_dim, n_threads)
