"""K.LayerStack.forward, the native layer loop, refuses inconsistent buffers, caches and
token placements with an error naming the argument, instead of reading or writing out
of bounds."""
import numpy as np
import pytest

import hearthlm


@pytest.fixture
def parts(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    session = model.session(n_ctx=16)
    t = model.transformer
    buf, cache = session.buf, session.cache
    T = 3
    rope_cos, rope_sin = t.ensure_rope(16)
    args = dict(x=buf.x[:T], h=buf.h[:T], q=buf.q[:T], k=buf.k[:T], v=buf.v[:T], attn=buf.attn[:T],
                gate=buf.gate[:T], up=buf.up[:T], scratch=buf.scratch, k_cache=cache.k, k_scales=None,
                v_cache=cache.v, v_scales=None, kv_dtype="f32", slot_pos=cache.slot_pos,
                positions=np.arange(T, dtype=np.int32), cos=rope_cos, sin=rope_sin,
                segments=np.array([[0, 0, T]], np.int64), n_threads=2)
    return t.stack, args


def test_valid_call_runs(parts):
    stack, args = parts
    stack.forward(**args)
    assert np.isfinite(args["h"]).all()


@pytest.mark.parametrize("change, message", [
    (dict(segments=np.array([[0, 0, 2]], np.int64)), "segments: cover 2 tokens, expected 3"),
    (dict(segments=np.array([[0, 15, 3]], np.int64)), "segments: row 0"),
    (dict(segments=np.array([[1, 0, 3]], np.int64)), "segments: row 0"),
    (dict(positions=np.array([0, 1, 99], np.int32)), "positions: position 99"),
    (dict(positions=np.array([0, 1], np.int32)), "positions: expected 3"),
    (dict(scratch=np.zeros(8, np.uint8)), "scratch: expected a writable buffer"),
    (dict(kv_dtype="q8"), "k_cache"),
    (dict(n_threads=0), "n_threads"),
])
def test_bad_arguments_are_named(parts, change, message):
    stack, args = parts
    with pytest.raises((ValueError, TypeError), match=message):
        stack.forward(**{**args, **change})


def test_mismatched_buffers_are_named(parts):
    stack, args = parts
    args = dict(args, gate=args["gate"][:2])
    with pytest.raises(ValueError, match=r"gate: expected \(3, "):
        stack.forward(**args)
    args = dict(args, gate=args["up"], k_cache=args["k_cache"][:1])
    with pytest.raises(ValueError, match="k_cache: expected 2 layers"):
        stack.forward(**args)


def test_weights_checked_when_built():
    from hearthlm import _kernels as K
    f32 = np.float32
    layer = {"attn_norm": (np.ones(4, f32), None), "mlp_norm": (np.ones(4, f32), None), "window": 0,
             **{name: (np.zeros((4, 4), f32), None, "f32") for name in ("q", "o", "gate", "up", "down")},
             "k": (np.zeros((2, 4), f32), None, "f32"), "v": (np.zeros((2, 4), f32), None, "f32")}
    shape = dict(hidden=4, n_heads=2, n_kv_heads=1, head_dim=2, rotary_dim=2, intermediate=4,
                 norm_eps=1e-5, attn_scale=0.7, final_norm=(np.ones(4, f32), None))
    K.LayerStack(**shape, layers=[layer])
    with pytest.raises(ValueError, match=r"layers\[1\]\.k\.weight: expected \(2, 4\)"):
        K.LayerStack(**shape, layers=[layer, dict(layer, k=(np.zeros((4, 4), f32), None, "f32"))])
    with pytest.raises(ValueError, match=r"layers\[0\]\.up\.bias: expected 4 elements"):
        K.LayerStack(**shape, layers=[dict(layer, up=(np.zeros((4, 4), f32), np.zeros(3, f32), "f32"))])
    with pytest.raises(ValueError, match="n_heads must be a multiple of n_kv_heads"):
        K.LayerStack(**dict(shape, n_kv_heads=3), layers=[layer])
