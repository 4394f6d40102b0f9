"""The network, top to bottom: embed -> per layer [norm -> QKV -> RoPE -> attention
over the KV cache -> output projection -> residual -> norm -> SwiGLU -> residual]
-> final norm -> logits. The layers run in one native call (csrc/forward.cpp, one
parallel region for all of them, the GIL released); Python embeds, places the tokens
in the cache and applies the LM head. Every buffer is allocated once (Buffers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _kernels as K
from .kv_cache import KVCache
from .models import ModelArgs
from .rope import rope_tables
from .weights import Linear, WeightReader


@dataclass
class Norm:
    weight: np.ndarray            # [dim] float32
    bias: Optional[np.ndarray]    # [dim] float32 for LayerNorm, None for RMSNorm

    def native(self) -> tuple:
        return (self.weight, self.bias)


def native_linear(lin: Linear) -> tuple:
    return (lin.weight, lin.bias, lin.wtype)


@dataclass
class Layer:
    attn_norm: Norm
    q_proj: Linear   # [n_heads * head_dim, hidden]
    k_proj: Linear   # [n_kv_heads * head_dim, hidden]
    v_proj: Linear   # [n_kv_heads * head_dim, hidden]
    o_proj: Linear   # [hidden, n_heads * head_dim]
    mlp_norm: Norm
    gate_proj: Linear  # [intermediate, hidden]
    up_proj: Linear    # [intermediate, hidden]
    down_proj: Linear  # [hidden, intermediate]
    window: int        # sliding window in tokens, 0 = full attention

    def native(self) -> dict:
        """The layer as K.LayerStack takes it."""
        linears = {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj, "o": self.o_proj,
                   "gate": self.gate_proj, "up": self.up_proj, "down": self.down_proj}
        return {"attn_norm": self.attn_norm.native(), "mlp_norm": self.mlp_norm.native(),
                "window": self.window, **{k: native_linear(v) for k, v in linears.items()}}


class Buffers:
    """Activations for up to `max_tokens` tokens per forward call, allocated once."""

    def __init__(self, args: ModelArgs, max_tokens: int, scratch_bytes: int):
        T, H = max_tokens, args.hidden_size
        q_dim = args.num_attention_heads * args.head_dim
        kv_dim = args.num_key_value_heads * args.head_dim
        f32 = np.float32
        self.max_tokens = T
        self.x = np.zeros((T, H), f32)        # residual stream
        self.h = np.zeros((T, H), f32)        # normed input / block output
        self.q = np.zeros((T, q_dim), f32)
        self.k = np.zeros((T, kv_dim), f32)
        self.v = np.zeros((T, kv_dim), f32)
        self.attn = np.zeros((T, q_dim), f32)
        self.gate = np.zeros((T, args.intermediate_size), f32)
        self.up = np.zeros((T, args.intermediate_size), f32)
        self.scratch = np.zeros(scratch_bytes, np.uint8)  # quantized activations, attention partials
        self.positions = np.zeros(T, np.int32)
        self.ids = np.zeros(T, np.int32)
        self.arange = np.arange(T, dtype=np.int32)
        self.segments = np.zeros((3, 3), np.int64)  # KVCache.segments: at most three runs

    def segment_table(self, segments: list) -> np.ndarray:
        """KVCache segments as [n, 3] int64 rows of (offset, first slot, count)."""
        for row, (offset, slots) in zip(self.segments, segments):
            row[:] = (offset, slots.start, slots.stop - slots.start)
        return self.segments[:len(segments)]


class Transformer:
    def __init__(self, args: ModelArgs, reader: WeightReader, n_threads: int):
        self.args = args
        self.n_threads = n_threads
        H, I, V = args.hidden_size, args.intermediate_size, args.vocab_size
        q_dim = args.num_attention_heads * args.head_dim
        kv_dim = args.num_key_value_heads * args.head_dim
        # [vocab, hidden]: rows gathered for the input, and the LM head when tied
        self.embed_tokens = reader.linear("model.embed_tokens", V, H, bias=False)
        self.layers = []
        for i in range(args.num_hidden_layers):
            p = f"model.layers.{i}"
            self.layers.append(Layer(
                attn_norm=self._norm(reader, f"{p}.input_layernorm", H),
                q_proj=reader.linear(f"{p}.self_attn.q_proj", q_dim, H, args.qkv_bias),
                k_proj=reader.linear(f"{p}.self_attn.k_proj", kv_dim, H, args.qkv_bias),
                v_proj=reader.linear(f"{p}.self_attn.v_proj", kv_dim, H, args.qkv_bias),
                o_proj=reader.linear(f"{p}.self_attn.o_proj", H, q_dim, args.o_bias),
                mlp_norm=self._norm(reader, f"{p}.post_attention_layernorm", H),
                gate_proj=reader.linear(f"{p}.mlp.gate_proj", I, H, args.mlp_bias),
                up_proj=reader.linear(f"{p}.mlp.up_proj", I, H, args.mlp_bias),
                down_proj=reader.linear(f"{p}.mlp.down_proj", H, I, args.mlp_bias),
                window=args.sliding_windows[i] if args.sliding_windows else 0,
            ))
        self.final_norm = self._norm(reader, "model.norm", H)
        if args.tie_word_embeddings:
            self.lm_head = self.embed_tokens
        else:
            self.lm_head = reader.linear("lm_head", V, H, bias=False)  # [vocab, hidden]
        self.scale = float(args.head_dim) ** -0.5
        self.stack = K.LayerStack(
            hidden=H, n_heads=args.num_attention_heads, n_kv_heads=args.num_key_value_heads,
            head_dim=args.head_dim, rotary_dim=args.rotary_dim, intermediate=I,
            norm_eps=args.norm_eps, attn_scale=self.scale,
            layers=[layer.native() for layer in self.layers], final_norm=self.final_norm.native())
        # (cos, sin) [n_positions, rotary_dim/2], replaced as one pair and never edited in
        # place, so forwards in other threads see an old or a new pair, never a mix.
        empty = np.zeros((0, args.rotary_dim // 2), np.float32)
        self.rope = (empty, empty)

    def _norm(self, reader: WeightReader, prefix: str, dim: int) -> Norm:
        weight = reader.vector(f"{prefix}.weight", (dim,))
        bias = reader.vector(f"{prefix}.bias", (dim,)) if self.args.norm == "layer" else None
        return Norm(weight, bias)

    def buffers(self, max_tokens: int) -> Buffers:
        return Buffers(self.args, max_tokens, self.stack.scratch_bytes(max_tokens))

    def ensure_rope(self, n_positions: int) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin) tables covering positions [0, n_positions): use the pair returned,
        as another thread may replace self.rope meanwhile."""
        tables = self.rope
        if tables[0].shape[0] < n_positions:
            tables = rope_tables(self.args, n_positions)
            if self.rope[0].shape[0] < n_positions:
                self.rope = tables
        return tables

    # -- the forward pass -----------------------------------------------------------

    def forward(self, ids: np.ndarray, cache: KVCache, buf: Buffers,
                logits_out: np.ndarray) -> None:
        """Run len(ids) <= buf.max_tokens new tokens through the network, appending
        them to `cache`. logits_out: [T, vocab] for every position, or [1, vocab]
        for the last one only."""
        T = len(ids)
        x, h = buf.x[:T], buf.h[:T]                                   # [T, hidden]
        ids32, positions = buf.ids[:T], buf.positions[:T]
        ids32[:] = ids
        K.embed(x, self.embed_tokens.weight, ids32, self.embed_tokens.wtype)
        np.add(buf.arange[:T], cache.length, out=positions)  # token i of the cache has position i
        rope_cos, rope_sin = self.ensure_rope(cache.length + T)
        segments = cache.reserve(T)
        # every layer: h = x + attention(norm(x)); x = h + SwiGLU(norm(h)); then h = norm(x)
        self.stack.forward(x, h, buf.q[:T], buf.k[:T], buf.v[:T], buf.attn[:T], buf.gate[:T],
                           buf.up[:T], buf.scratch, cache.k, cache.k_scales, cache.v, cache.v_scales,
                           cache.kv_dtype, cache.slot_pos, positions, rope_cos, rope_sin,
                           buf.segment_table(segments), self.n_threads)
        rows = T if logits_out.shape[0] == T else 1
        K.matmul(logits_out, h[T - rows:], self.lm_head.weight, self.lm_head.bias,
                 self.lm_head.wtype, self.n_threads)
