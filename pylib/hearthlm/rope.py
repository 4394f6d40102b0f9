"""RoPE cos/sin tables as Hugging Face computes them (rotate-half pairing), with the
default, linear and llama3 frequency rules. Angles are taken in float64."""
from __future__ import annotations

import math

import numpy as np

from .models.base import RopeSpec


def inverse_frequencies(spec: RopeSpec) -> np.ndarray:
    """[rotary_dim/2] float32, as transformers builds them (float32 arithmetic)."""
    dim = spec.rotary_dim
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv = (np.float32(1.0) / np.power(np.float32(spec.theta), exponents)).astype(np.float32)
    scaling = spec.scaling
    kind = scaling["rope_type"]
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


def rope_tables(spec: RopeSpec, n_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: [n_positions, rotary_dim/2] float32."""
    angles = np.outer(np.arange(n_positions, dtype=np.float64),
                      inverse_frequencies(spec).astype(np.float64))
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
