"""The network around the layer program: embed -> the family's layer program (one
native call, one parallel region for every layer, the GIL released) -> LM head ->
logits. The family file (models/) declares the weights and writes the program; this
module reads the weights, places the tokens in the cache groups and owns the RoPE
tables. Every buffer is allocated once (Buffers)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _kernels as K
from ._per_token import Placer
from .kv_cache import KVCache, KVPool, cache_groups
from .models import ModelArgs, family
from .models.program import Program
from .rope import rope_tables, shift_rotation
from .weights import WeightReader, Weights


class Buffers:
    """The program's activations for up to `max_tokens` tokens of up to `max_sequences`
    sequences per forward call, and up to `max_logits` rows of logits (each sequence's
    last tokens), allocated once."""

    def __init__(self, program: Program, max_tokens: int, max_sequences: int, scratch_bytes: int, n_groups: int,
                 max_logits: int):
        T = max_tokens
        self.max_tokens = T
        self.rows = {name: np.zeros((T, width), np.float32) for name, width in program.buffers.items()}
        self.native = list(self.rows.values())   # in declaration order, as forward() takes them
        self.input, self.output = self.rows[program.input], self.rows[program.output]
        self.scratch = np.zeros(scratch_bytes, np.uint8)  # quantized activations, attention partials
        self.positions = np.zeros(T, np.int32)
        self.ids = np.zeros(T, np.int32)
        self.slots = np.zeros((n_groups, T), np.int64)        # each token's slot in each cache group
        self.ranges = np.zeros((n_groups, T, 2), np.int64)  # the slots it attends there: (first, count)
        self.last = np.zeros(max_sequences, np.int64)  # each sequence's last token
        self.picked = np.zeros(max_logits, np.int64)  # the tokens whose logits are wanted (tails)
        # the hidden states of those tokens (or of each sequence's last)
        self.last_rows = np.zeros((max(max_sequences, max_logits), self.output.shape[1]), np.float32)
        self.placer = Placer(self.ids, self.positions, self.slots, self.ranges, self.last)
        self._pool, self._caches = None, None

    def caches(self, pool: KVPool) -> list:
        """The layer program's per-group cache arguments for a forward over `pool`."""
        if self._pool is not pool:
            self._caches = [(*g.native, self.slots[i], self.ranges[i]) for i, g in enumerate(pool.groups)]
            self._pool = pool
        return self._caches

    @property
    def arrays(self) -> list:
        return [*self.native, self.scratch, self.positions, self.ids, self.slots, self.ranges, self.last,
                self.picked, self.last_rows]


class Transformer:
    def __init__(self, args: ModelArgs, reader: WeightReader, n_threads: int):
        self.args = args
        self.n_threads = n_threads
        fam = family(args)
        self.weights = Weights(reader, fam.weights(args))
        # [vocab, hidden]: rows gathered for the input, and the LM head when tied
        self.embed_tokens = self.weights.linear(f"{args.prefix}model.embed_tokens")
        self.lm_head = self.embed_tokens if args.tie_word_embeddings else self.weights.linear(f"{args.prefix}lm_head")
        self.program = fam.program(args, self.weights)
        group = {layer: g for g, (_, layers) in enumerate(cache_groups(args)) for layer in layers}
        self.n_cache_groups = len(set(group.values()))
        self.native = self.program.native([group[i] for i in range(args.num_hidden_layers)],
                                          args.num_key_value_heads, args.head_dim)
        # (cos, sin) [n_positions, rotary_dim/2] per table, replaced as one tuple and never
        # edited in place, so forwards in other threads see old or new tables, never a mix.
        self.rope = tuple((np.zeros((0, r.rotary_dim // 2), np.float32),) * 2 for r in args.rope)

    def buffers(self, max_tokens: int, max_sequences: Optional[int] = None,
                max_logits: Optional[int] = None) -> Buffers:
        """Buffers for forwards of up to max_tokens tokens of up to max_sequences
        sequences (default: max_tokens, as every sequence has a token), with up to
        max_logits rows of logits picked by tails (default: one per sequence)."""
        max_sequences = max_sequences or max_tokens
        return Buffers(self.program, max_tokens, max_sequences, self.native.scratch_bytes(max_tokens),
                       self.n_cache_groups, max_logits or max_sequences)

    def matrix_bytes(self) -> int:
        """Bytes of the matrices one token multiplies by (a mixture of experts: only the
        experts it is routed to), and the LM head."""
        return self.program.bytes_per_token() + self.lm_head.weight.nbytes

    def ensure_rope(self, n_positions: int) -> tuple:
        """RoPE tables covering positions [0, n_positions): use the tuple returned,
        as another thread may replace self.rope meanwhile."""
        tables = self.rope
        if tables and tables[0][0].shape[0] < n_positions:
            tables = tuple(rope_tables(spec, n_positions) for spec in self.args.rope)
            if self.rope[0][0].shape[0] < n_positions:
                self.rope = tables
        return tables

    def shift_rotations(self, n_drop: int, n_positions: int) -> list:
        """Per layer: (cos, sin, rotary_dim) of the rotation by -n_drop that moves its
        cached keys n_drop positions down, or None for a layer without RoPE."""
        tables = self.ensure_rope(n_positions)
        out = []
        for t in self.args.layer_rope:
            if t < 0:
                out.append(None)
                continue
            out.append((*shift_rotation(self.args.rope[t], *tables[t], n_drop), self.args.rope[t].rotary_dim))
        return out

    # -- the forward pass -----------------------------------------------------------

    def forward(self, ids: np.ndarray, cache: KVCache, buf: Buffers,
                logits_out: np.ndarray) -> None:
        """Run len(ids) <= buf.max_tokens new tokens through the network, appending
        them to `cache`. logits_out: [T, vocab] for every position, or [1, vocab]
        for the last one only."""
        self.forward_batch(((ids, cache),), buf, logits_out, all_logits=logits_out.shape[0] == len(ids))

    def forward_batch(self, items, buf: Buffers, logits_out: np.ndarray, all_logits: bool = False,
                      tails: Optional[list] = None) -> None:
        """Tokens of several sequences in one pass over the weights. items: (ids,
        cache) pairs, every cache a region of one KVPool, at most buf.max_tokens tokens
        in all; each sequence's tokens are appended to its cache and attend only it.
        logits_out: [len(items), vocab], the logits after each sequence's last token;
        with all_logits, [tokens, vocab] for every token in order; with tails (per
        item, 1 <= n <= its ids, at most the buffers' max_logits in all),
        [sum(tails), vocab]: the logits after each item's last n tokens, in order."""
        pool = items[0][1].pool
        T, n_positions = buf.placer.place(items, pool)
        K.embed(buf.input[:T], self.embed_tokens.weight, buf.ids[:T], self.embed_tokens.wtype)
        tables = self.ensure_rope(n_positions)
        self.native.forward(buf.native, T, buf.scratch, buf.caches(pool), pool.kv_dtype, buf.positions[:T],
                            tables, self.n_threads)
        if all_logits:
            hidden, rows = buf.output[:T], T
        elif tails is not None:
            rows = 0
            for last, n in zip(buf.last.tolist(), tails):
                for row in range(last - n + 1, last + 1):
                    buf.picked[rows] = row
                    rows += 1
            hidden = np.take(buf.output, buf.picked[:rows], axis=0, out=buf.last_rows[:rows])
        else:
            rows = len(items)
            hidden = buf.output[T - 1:T] if rows == 1 else np.take(buf.output, buf.last[:rows], axis=0,
                                                                   out=buf.last_rows[:rows])
        logits = logits_out[:rows]
        K.matmul(logits, hidden, self.lm_head.weight, self.lm_head.bias, self.lm_head.wtype, self.n_threads)
        a = self.args
        if a.logits_scale != 1.0:
            np.multiply(logits, np.float32(a.logits_scale), out=logits)
        if a.logits_softcap > 0.0:
            cap = np.float32(a.logits_softcap)
            np.divide(logits, cap, out=logits)
            np.tanh(logits, out=logits)
            np.multiply(logits, cap, out=logits)
