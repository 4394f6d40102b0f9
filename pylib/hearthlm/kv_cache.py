"""The KV cache: one contiguous allocation made once, written in place by slot.

Layout: k, v: [n_layers, n_kv_heads, capacity, head_dim] float32, so each kv head of
each layer is one sequential stream for attention. `slot_pos[s]` is the position of
the token held in slot s (-1 = empty); attention masks by these positions, so the
slots may be filled in any order (a ring buffer reuses them without moving data).
Keys are stored already rotated by RoPE at their position.
"""
from __future__ import annotations

import numpy as np

from .errors import ContextOverflowError
from .models import ModelArgs


class KVCache:
    def __init__(self, args: ModelArgs, capacity: int):
        shape = (args.num_hidden_layers, args.num_key_value_heads, capacity, args.head_dim)
        self.capacity = capacity
        self.k = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.slot_pos = np.full(capacity, -1, dtype=np.int32)
        self.length = 0  # tokens held, in slots [0, length)

    @property
    def memory_bytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.slot_pos.nbytes

    def reset(self) -> None:
        self.slot_pos[:] = -1
        self.length = 0

    def reserve(self, n_tokens: int) -> slice:
        """Slots for the next n_tokens; their positions continue the sequence."""
        start = self.length
        if start + n_tokens > self.capacity:
            raise ContextOverflowError(
                f"{start + n_tokens} tokens exceed the context of {self.capacity} tokens")
        self.slot_pos[start:start + n_tokens] = np.arange(start, start + n_tokens, dtype=np.int32)
        self.length = start + n_tokens
        return slice(start, start + n_tokens)

    def store(self, layer: int, slots: slice, k: np.ndarray, v: np.ndarray) -> None:
        """k, v: [T, n_kv_heads, head_dim] for the tokens in `slots`."""
        self.k[layer, :, slots, :] = k.transpose(1, 0, 2)
        self.v[layer, :, slots, :] = v.transpose(1, 0, 2)
