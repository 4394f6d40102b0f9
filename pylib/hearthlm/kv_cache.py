"""The KV cache: one contiguous allocation made once, written in place, used as a
ring buffer that never runs out.

Layout: k, v: [n_layers, n_kv_heads, capacity, row] in the storage type (`kv_dtype`),
so each kv head of each layer is one sequential stream for attention, which reads the
storage type directly:
  f32   row = head_dim float32                       (4 bytes per value)
  f16   row = head_dim IEEE half; bf16 bfloat16       (2 bytes)
  q8    row = head_dim padded to 32 int8, plus one float32 scale per 32 in
        k_scales / v_scales [n_layers, n_kv_heads, capacity, row / 32]  (~1.1 bytes) `slot_pos[s]` is the position of
the token in slot s (-1 = empty); attention masks by these positions, so tokens may
sit in any slot.

Slots [0, n_keep) hold the first n_keep tokens (the attention sinks) for good; slots
[n_keep, capacity) are a ring holding the rest, oldest at `tail`. The token at
logical index i always has RoPE position i. When the cache is full, a context shift
drops the oldest tokens of the middle (just after the sinks): their slots are reused,
and the keys of the tokens after them, cached already rotated, are rotated back by
the number dropped (R(p - d) = R(-d)·R(p)), so positions stay 0..length-1.
"""
from __future__ import annotations

import numpy as np

from . import _kernels as K
from ._per_token import Ring
from .errors import InvalidInputError
from .models import ModelArgs

KV_DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "q8": np.int8}
Q8_BLOCK = K.limits["kv_q8_block"]  # values per scale of a q8 cache row


class KVPool:
    """The K/V storage of one or more sequences: one allocation per model made up
    front, never per token. Sequence i of a pool of n_seqs sequences owns the slots
    [i * n_ctx, (i + 1) * n_ctx) (a KVCache over that region)."""

    def __init__(self, args: ModelArgs, n_ctx: int, n_seqs: int = 1, kv_dtype: str = "f32"):
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 1:
            raise InvalidInputError(f"n_ctx: expected a positive integer, got {n_ctx!r}")
        if not isinstance(n_seqs, int) or isinstance(n_seqs, bool) or n_seqs < 1:
            raise InvalidInputError(f"n_seqs: expected a positive integer, got {n_seqs!r}")
        if kv_dtype not in KV_DTYPES:
            raise InvalidInputError(f"kv_dtype: expected one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
        self.kv_dtype = kv_dtype
        self.head_dim = args.head_dim
        self.n_ctx, self.n_seqs = n_ctx, n_seqs
        q8 = kv_dtype == "q8"
        row = -(-args.head_dim // Q8_BLOCK) * Q8_BLOCK if q8 else args.head_dim
        shape = (args.num_hidden_layers, args.num_key_value_heads, n_ctx * n_seqs, row)
        scale_shape = shape[:3] + (row // Q8_BLOCK,)
        itemsize = np.dtype(KV_DTYPES[kv_dtype]).itemsize
        needed = 2 * int(np.prod(shape)) * itemsize + (2 * int(np.prod(scale_shape)) * 4 if q8 else 0)
        try:
            self.k = np.zeros(shape, dtype=KV_DTYPES[kv_dtype])
            self.v = np.zeros(shape, dtype=KV_DTYPES[kv_dtype])
            self.k_scales = np.zeros(scale_shape, np.float32) if q8 else None
            self.v_scales = np.zeros(scale_shape, np.float32) if q8 else None
        except MemoryError:
            raise InvalidInputError(
                f"n_ctx={n_ctx}: the KV cache of {n_seqs} sequence(s) needs {needed / 2**30:.2f} GiB "
                f"({needed} bytes), which cannot be allocated") from None
        self.slot_pos = np.full(n_ctx * n_seqs, -1, dtype=np.int32)

    @property
    def arrays(self) -> list:
        """Every per-layer storage array: [k, v] or [k, v, k_scales, v_scales]."""
        return [a for a in (self.k, self.v, self.k_scales, self.v_scales) if a is not None]

    @property
    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays) + self.slot_pos.nbytes

    def layer(self, i: int) -> tuple:
        """(k, k_scales, v, v_scales) of layer i, scales None unless q8."""
        ks = self.k_scales[i] if self.k_scales is not None else None
        vs = self.v_scales[i] if self.v_scales is not None else None
        return self.k[i], ks, self.v[i], vs

    def sequence(self, i: int, n_keep: int = 0) -> "KVCache":
        """The cache of sequence i (its region of the pool)."""
        if not isinstance(i, int) or not 0 <= i < self.n_seqs:
            raise InvalidInputError(f"sequence: expected an index in [0, {self.n_seqs}), got {i!r}")
        return KVCache(self, i * self.n_ctx, n_keep)


class KVCache(Ring):
    """One sequence's slots [first, first + capacity) of a KVPool. Slot numbers below
    are local to the region (slot_pos is a view of the pool's). The slot bookkeeping
    (slot_of, segments, reserve, truncate, reset, length, tail) is the compiled Ring's."""

    def __init__(self, pool: KVPool, first: int, n_keep: int = 0):
        super().__init__(pool.slot_pos[first:first + pool.n_ctx], first, n_keep)
        self.pool = pool
        self.kv_dtype, self.head_dim = pool.kv_dtype, pool.head_dim
        self.k, self.v, self.k_scales, self.v_scales = pool.k, pool.v, pool.k_scales, pool.v_scales

    @classmethod
    def alone(cls, args: ModelArgs, capacity: int, n_keep: int = 0, kv_dtype: str = "f32") -> "KVCache":
        """A cache with a pool of its own."""
        return KVPool(args, capacity, 1, kv_dtype).sequence(0, n_keep)

    @property
    def arrays(self) -> list:
        return self.pool.arrays

    @property
    def memory_bytes(self) -> int:
        return self.pool.memory_bytes // self.pool.n_seqs

    def layer(self, i: int) -> tuple:
        return self.pool.layer(i)

    def order(self) -> np.ndarray:
        """Slots of the held tokens in logical order: [length] int64."""
        i = np.arange(self.length)
        ring = self.n_keep + (self.tail + i - self.n_keep) % max(self.ring_size, 1)
        return np.where(i < self.n_keep, i, ring)

    def shift(self, n_drop: int, rotations: list, n_threads: int) -> None:
        """Drop the n_drop oldest tokens after the sinks; later tokens move down by
        n_drop positions and their cached keys are rotated back by n_drop.
        rotations: per layer (cos, sin, rotary_dim) of that rotation ([1, rotary_dim/2]
        tables), or None for a layer without RoPE (Transformer.shift_rotations)."""
        n_middle = self.length - self.n_keep
        if not 0 < n_drop <= n_middle:
            raise InvalidInputError(f"shift: cannot drop {n_drop} of {n_middle} middle tokens")
        for _, slots in self.segments(self.n_keep, n_drop):
            self.slot_pos[slots] = -1
        self.tail = (self.tail + n_drop) % self.ring_size
        self.length -= n_drop
        for offset, slots in self.segments(self.n_keep, self.length - self.n_keep):
            first = self.n_keep + offset
            self.slot_pos[slots] = np.arange(first, first + slots.stop - slots.start, dtype=np.int32)
        # sinks and empty slots stay as they are
        which = np.full(self.pool.slot_pos.shape, -1, np.int32)
        which[self.first:self.first + self.capacity] = np.where(self.slot_pos >= self.n_keep, 0, -1)
        for layer, rotation in enumerate(rotations):
            if rotation is None:
                continue
            cos, sin, rotary_dim = rotation
            kc, ks, _, _ = self.layer(layer)
            K.kv_rotate(kc, ks, self.kv_dtype, self.head_dim, cos, sin, which, rotary_dim, n_threads)
