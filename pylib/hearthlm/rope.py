"""RoPE cos/sin tables as Hugging Face computes them (rotate-half pairing), with the
default, linear, llama3 and longrope frequency rules. Angles are taken in float64.

longrope: position p turns by the short factors' frequencies while p <
original_max_position_embeddings and by the long factors' from there on, and cos and
sin are multiplied by the attention factor (so are the rotated dims of q and k, not
the pass-through ones), as transformers does. transformers picks one factor set per
forward call (long when its last position is past the original length); the two
agree for a prompt within the original length followed by decoding token by token,
which is how sessions grow. A prompt longer than the original length rotates its
leading positions by the short factors here and by the long ones in transformers.
"""
from __future__ import annotations

import math

import numpy as np

from .models.base import RopeSpec


def inverse_frequencies(spec: RopeSpec, long: bool = False) -> np.ndarray:
    """[rotary_dim/2] float32, as transformers builds them (float32 arithmetic).
    long: longrope's long factors instead of its short ones."""
    dim = spec.rotary_dim
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    powers = np.power(np.float32(spec.theta), exponents)
    scaling = spec.scaling
    kind = scaling["rope_type"]
    if kind == "longrope":
        factors = np.asarray(scaling["long_factor" if long else "short_factor"], np.float32)
        return (np.float32(1.0) / (factors * powers)).astype(np.float32)
    inv = (np.float32(1.0) / powers).astype(np.float32)
    if kind == "linear":
        inv = (inv / np.float32(scaling["factor"])).astype(np.float32)
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_ctx = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def attention_factor(spec: RopeSpec) -> float:
    """The factor transformers multiplies cos and sin by (longrope; 1 otherwise)."""
    return spec.scaling["attention_factor"] if spec.scaling["rope_type"] == "longrope" else 1.0


def rope_tables(spec: RopeSpec, n_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: [n_positions, rotary_dim/2] float32."""
    positions = np.arange(n_positions, dtype=np.float64)
    angles = np.outer(positions, inverse_frequencies(spec).astype(np.float64))
    if spec.scaling["rope_type"] == "longrope":
        start = min(spec.scaling["original_max_position_embeddings"], n_positions)
        angles[start:] = np.outer(positions[start:], inverse_frequencies(spec, long=True).astype(np.float64))
    factor = attention_factor(spec)
    return (np.cos(angles) * factor).astype(np.float32), (np.sin(angles) * factor).astype(np.float32)


def shift_rotation(spec: RopeSpec, cos: np.ndarray, sin: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [1, rotary_dim/2] of the rotation by -n positions that moves cached
    keys down on a context shift, from the tables, without their attention factor.
    cos(-a) = cos(a), sin(-a) = -sin(a)."""
    factor = np.float32(attention_factor(spec))
    return cos[n:n + 1] / factor, -sin[n:n + 1] / factor
