"""K.LayerProgram: every op is checked against its buffers, weights and the cache when
the program is built, and forward() refuses inconsistent buffers, caches and token
placements with an error naming the argument, instead of reading or writing out of
bounds."""
import numpy as np
import pytest

import hearthlm
from hearthlm import _kernels as K
from hearthlm.models.program import Program
from hearthlm.weights import Linear, Norm

f32 = np.float32


@pytest.fixture
def parts(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    session = model.session(n_ctx=16)
    t = model.transformer
    buf, group = session.buf, session.cache.pool.groups[0]
    T = 3
    args = dict(buffers=buf.native, T=T, scratch=buf.scratch, kv_dtype="f32",
                positions=np.arange(T, dtype=np.int32), tables=t.ensure_rope(16), n_threads=2)
    cache = dict(k=group.k, k_scales=None, v=group.v, v_scales=None, slot_pos=group.slot_pos,
                 slots=np.arange(T, dtype=np.int64), ranges=np.array([[0, 16]] * T, np.int64))
    return t.native, args, cache, buf


def call(program, args, cache, **change):
    """forward() with some arguments, or some of the one cache group's, changed."""
    group = {**cache, **{k: v for k, v in change.items() if k in cache}}
    program.forward(**{**args, **{k: v for k, v in change.items() if k not in cache}},
                    caches=[tuple(group.values())])


def test_valid_call_runs(parts):
    program, args, cache, buf = parts
    buf.output[:] = np.nan
    call(program, args, cache)
    assert np.isfinite(buf.output[:3]).all()


@pytest.mark.parametrize("change, message", [
    (dict(slots=np.arange(2, dtype=np.int64)), r"caches\[0\].slots/ranges: expected 3 slots"),
    (dict(slots=np.array([0, 1, 16], np.int64)), r"caches\[0\].slots: token 2's slot 16 is outside its range"),
    (dict(ranges=np.array([[0, 16], [0, 16], [8, 9]], np.int64)),
     r"caches\[0\].ranges: token 2's range \(8, 9\) is outside"),
    (dict(ranges=np.array([[0, 16], [0, 16], [3, 4]], np.int64)), "slots: token 2's slot 2 is outside its range"),
    (dict(slot_pos=np.full(8, -1, np.int32)), r"caches\[0\].slot_pos: expected 16 slots"),
    (dict(positions=np.array([0, 1, 99], np.int32)), "positions: position 99"),
    (dict(positions=np.array([0, 1], np.int32)), "positions: expected 3"),
    (dict(scratch=np.zeros(8, np.uint8)), "scratch: expected a writable buffer"),
    (dict(kv_dtype="q8"), r"caches\[0\].k"),
    (dict(n_threads=0), "n_threads"),
    (dict(T=0), "T: at least one token"),
    (dict(tables=()), r"tables: expected 1 \(cos, sin\) pairs"),
])
def test_bad_arguments_are_named(parts, change, message):
    program, args, cache, _ = parts
    with pytest.raises((ValueError, TypeError), match=message):
        call(program, args, cache, **change)


def test_mismatched_buffers_are_named(parts):
    program, args, cache, buf = parts
    bufs = list(args["buffers"])
    bufs[6] = bufs[6][:2]  # gate
    with pytest.raises(ValueError, match=r"buffers\['gate'\]: expected at least \(3, "):
        call(program, args, cache, buffers=bufs)
    with pytest.raises(ValueError, match="buffers: expected 8 arrays"):
        call(program, args, cache, buffers=bufs[:7])
    with pytest.raises(ValueError, match=r"caches\[0\].k: expected 2 layers"):
        call(program, args, cache, k=cache["k"][:1])
    with pytest.raises(ValueError, match="caches: expected 1 cache groups, got 2"):
        program.forward(**args, caches=[tuple(cache.values())] * 2)


def tiny_program(**changes) -> Program:
    """One layer over widths 4 (hidden), 4 (two heads of 2), 2 (one kv head)."""
    lin = lambda n, k: Linear(np.zeros((n, k), f32), "f32")
    norm = Norm(np.ones(4, f32), None, 1e-5)
    p = Program(dict(x=4, h=4, q=4, k=2, v=2, attn=4), input="x", output="h")
    p.norm("h", "x", norm)
    p.matmul("h", q=changes.get("q", lin(4, 4)), k=lin(2, 4), v=lin(2, 4))
    p.rope("q", 2, 2, 2)
    p.rope("k", 1, 2, 2)
    p.kv_store("k", "v", layer=changes.get("layer", 0))
    p.attention("attn", "q", layer=0, heads=changes.get("heads", 2), scale=0.7)
    p.matmul("attn", h=lin(4, 4))
    p.add("x", "h")
    p.norm("h", "x", changes.get("final", norm))
    return p


def test_program_checked_when_built():
    program = tiny_program().native([0], 1, 2)
    assert program.n_ops == 8  # the last add and norm are fused
    with pytest.raises(ValueError, match=r"ops\[1\] \(matmul\)\.linears\[0\]\.weight: expected \(4, 4\)"):
        tiny_program(q=Linear(np.zeros((2, 4), f32), "f32")).native([0], 1, 2)
    with pytest.raises(ValueError, match=r"ops\[1\] \(matmul\)\.linears\[0\]\.bias: expected 4 elements"):
        tiny_program(q=Linear(np.zeros((4, 4), f32), "f32", np.zeros(3, f32))).native([0], 1, 2)
    with pytest.raises(ValueError, match=r"ops\[4\] \(kv_store\): cache layer 3 outside \[0, 1\)"):
        tiny_program(layer=3).native([0], 1, 2)
    with pytest.raises(ValueError, match=r"ops\[5\] \(attention\): buffer 'q' has width 4, expected 6"):
        tiny_program(heads=3).native([0], 1, 2)
    with pytest.raises(ValueError, match=r"ops\[8\] \(norm\): weight must be \[1 or 1, 4\], got \(2, 4\)"):
        tiny_program(final=Norm(np.ones(8, f32), None, 1e-5)).native([0], 1, 2)
    with pytest.raises(ValueError, match=r"ops\[0\] \(norm\).in: no buffer named 'y'"):
        K.LayerProgram([("x", 4)], [{"op": "norm", "out": "x", "in": "y"}], [0], 1, 2)
    with pytest.raises(ValueError, match=r"ops\[0\] \(swirl\): unknown op"):
        K.LayerProgram([("x", 4)], [{"op": "swirl"}], [0], 1, 2)
    with pytest.raises(ValueError, match="layer_groups: group 0 has no layer"):
        K.LayerProgram([("x", 4)], [], [1, 1], 1, 2)
    with pytest.raises(ValueError, match="a layer program has at most 64 buffers"):  # forward's stack arrays
        K.LayerProgram([(f"b{i}", 4) for i in range(65)], [], [0], 1, 2)
    with pytest.raises(ValueError, match="8 cache groups"):
        K.LayerProgram([("x", 4)], [], list(range(9)), 1, 2)


def test_program_prints_the_network(model_dir):
    text = str(hearthlm.load(model_dir("llama-gqa-tied")).transformer.program)
    assert text.splitlines()[:5] == [
        "buffers: x[64], h[64], q[64], k[16], v[16], attn[64], gate[132], up[132]",
        "h = rmsnorm(x)", "q, k, v = h · Wᵀ (f32)", "rope(q, rotary_dim=8, table=0)",
        "rope(k, rotary_dim=8, table=0)"]
    assert text.splitlines()[-1] == "h = rmsnorm(x)"


@pytest.mark.parametrize("dtype", ["q8", "q4", "q4k", "f32"])
def test_fused_barriers_give_the_same_logits_on_any_thread_count(model_dir, dtype):
    """The fusion pass drops barriers (a norm or glu quantizing its own rows for the
    next matmul; a rope followed by a rope or kv_store without a barrier): with 1 thread
    nothing can race, so 2 and 3 threads (uneven token splits) must give the same bits,
    for a prefill of 7 tokens and for decode steps after it (the FFN is wide enough
    that one token's forward runs on every thread). q4k: the mix's last layer has a
    q6k V beside q4k Q and K, one task list of two formats."""
    folder = model_dir("llama-gqa-tied", intermediate_size=520)
    if dtype == "q4k":
        t = hearthlm.load(folder, dtype=dtype).transformer
        assert [t.weights.linear(f"model.layers.1.self_attn.{m}_proj").wtype for m in "qkv"] == ["q4k", "q4k", "q6k"]
    ids = [3, 1, 4, 1, 5, 9, 2]
    results = []
    for threads in (1, 2, 3):
        s = hearthlm.load(folder, dtype=dtype, n_threads=threads).session(n_ctx=32)
        steps = [s.feed(ids)]
        for t in (6, 5, 3):
            steps.append(s.feed([t]))
        results.append(np.stack(steps))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
