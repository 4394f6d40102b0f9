"""The KV cache: one contiguous allocation made once, written in place, used as a
ring buffer that never runs out.

Layout: k, v: [n_layers, n_kv_heads, capacity, head_dim] float32, so each kv head of
each layer is one sequential stream for attention. `slot_pos[s]` is the position of
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
from .errors import InvalidInputError
from .models import ModelArgs


class KVCache:
    def __init__(self, args: ModelArgs, capacity: int, n_keep: int = 0):
        if not isinstance(capacity, int) or capacity < 1:
            raise InvalidInputError(f"n_ctx: expected a positive integer, got {capacity!r}")
        if not isinstance(n_keep, int) or not 0 <= n_keep < capacity:
            raise InvalidInputError(f"n_keep: expected an integer in [0, n_ctx={capacity}), got {n_keep!r}")
        shape = (args.num_hidden_layers, args.num_key_value_heads, capacity, args.head_dim)
        needed = 2 * int(np.prod(shape)) * 4
        try:
            self.k = np.zeros(shape, dtype=np.float32)
            self.v = np.zeros(shape, dtype=np.float32)
        except MemoryError:
            raise InvalidInputError(
                f"n_ctx={capacity}: the KV cache needs {needed / 2**30:.2f} GiB "
                f"({needed} bytes), which cannot be allocated") from None
        self.capacity = capacity
        self.n_keep = n_keep
        self.slot_pos = np.full(capacity, -1, dtype=np.int32)
        self.length = 0  # tokens held
        self.tail = 0    # ring index (0-based within the ring) of the oldest middle token

    @property
    def memory_bytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.slot_pos.nbytes

    @property
    def ring_size(self) -> int:
        return self.capacity - self.n_keep

    def reset(self) -> None:
        self.slot_pos[:] = -1
        self.length = 0
        self.tail = 0

    def slot_of(self, i: int) -> int:
        """The slot holding logical token i."""
        if i < self.n_keep:
            return i
        return self.n_keep + (self.tail + i - self.n_keep) % self.ring_size

    def order(self) -> np.ndarray:
        """Slots of the held tokens in logical order: [length] int64."""
        i = np.arange(self.length)
        ring = self.n_keep + (self.tail + i - self.n_keep) % max(self.ring_size, 1)
        return np.where(i < self.n_keep, i, ring)

    def segments(self, start: int, count: int) -> list:
        """Logical tokens [start, start+count) as (offset, slot slice) runs of
        contiguous slots: at most three (sinks, ring before wrap, ring after wrap)."""
        out, i = [], start
        while i < start + count:
            slot = self.slot_of(i)
            limit = self.n_keep if i < self.n_keep else self.capacity
            n = min(start + count - i, limit - slot)
            out.append((i - start, slice(slot, slot + n)))
            i += n
        return out

    def reserve(self, n_tokens: int) -> list:
        """Slots for the next n_tokens (the caller made room), as segments()."""
        if self.length + n_tokens > self.capacity:
            raise InvalidInputError(
                f"{self.length + n_tokens} tokens exceed the cache of {self.capacity}; shift first")
        start = self.length
        self.length += n_tokens
        segs = self.segments(start, n_tokens)
        for offset, slots in segs:
            self.slot_pos[slots] = np.arange(start + offset, start + offset + slots.stop - slots.start,
                                             dtype=np.int32)
        return segs

    def store(self, layer: int, segments: list, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: [T, n_kv_heads, head_dim] for the tokens reserved as `segments`."""
        for offset, slots in segments:
            n = slots.stop - slots.start
            self.k[layer, :, slots, :] = k[offset:offset + n].transpose(1, 0, 2)
            self.v[layer, :, slots, :] = v[offset:offset + n].transpose(1, 0, 2)

    def truncate(self, length: int) -> None:
        """Keep only the first `length` tokens (rewind)."""
        for _, slots in self.segments(length, self.length - length):
            self.slot_pos[slots] = -1
        self.length = length
        if self.length <= self.n_keep:
            self.tail = 0

    def shift(self, n_drop: int, rope_cos: np.ndarray, rope_sin: np.ndarray,
              rotary_dim: int, n_threads: int) -> None:
        """Drop the n_drop oldest tokens after the sinks; later tokens move down by
        n_drop positions and their cached keys are rotated back by n_drop.
        rope_cos/rope_sin: [n_positions, rotary_dim/2] tables (need n_drop < n_positions)."""
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
        # Rotation by -n_drop: cos(-a) = cos(a), sin(-a) = -sin(a). Row 0 is the identity
        # for slots that must not move (sinks, empty slots).
        cos = np.stack([np.ones_like(rope_cos[0]), rope_cos[n_drop]])
        sin = np.stack([np.zeros_like(rope_sin[0]), -rope_sin[n_drop]])
        which = (self.slot_pos >= self.n_keep).astype(np.int32)
        hd = self.k.shape[-1]
        for layer in range(self.k.shape[0]):
            for head in range(self.k.shape[1]):
                K.rope(self.k[layer, head].reshape(self.capacity, 1, hd), cos, sin, which,
                       rotary_dim, n_threads)
