"""Sessions: incremental feeding, ring-buffer context shift, rewind/sync, save/load,
threads."""
import os
import threading

import numpy as np
import pytest

import hearthlm
import tiny_models
from streaming_reference import StreamingReference, assert_follows


def ids_for(model, n, seed=0):
    return np.random.default_rng(seed).integers(0, model.vocab_size, n).tolist()


def close(a, b, scale):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("variant", sorted(tiny_models.VARIANTS))
def test_chunked_feeding_matches_full_logits(model_dir, variant):
    model = hearthlm.load(model_dir(variant))
    ids = ids_for(model, 30)
    full = model.logits(ids)
    scale = np.abs(full).max()
    for chunk in (1, 7, 30):
        s = model.session(n_ctx=64)
        for start in range(0, len(ids), chunk):
            last = s.feed(ids[start:start + chunk])
            close(last, full[min(start + chunk, len(ids)) - 1], scale)
        assert s.tokens == ids


def test_all_logits_into_a_given_array(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    ids = ids_for(model, 9)
    out = np.full((12, model.vocab_size), np.nan, np.float32)
    rows = model.session(n_ctx=32).feed(ids, all_logits=True, out=out)
    assert rows.base is out and rows.shape == (9, model.vocab_size) and np.isnan(out[9:]).all()
    np.testing.assert_array_equal(rows, model.session(n_ctx=32).feed(ids, all_logits=True))
    s = model.session(n_ctx=32)
    for bad in (out[:8], out.astype(np.float64), out[:, :-1], out.T.copy().T):
        with pytest.raises(hearthlm.InvalidInputError, match="out: expected"):
            s.feed(ids, all_logits=True, out=bad)
    with pytest.raises(hearthlm.InvalidInputError, match="out: only with all_logits"):
        s.feed(ids, out=out)
    assert s.tokens == []  # refused before anything was fed


@pytest.mark.parametrize("variant", ["llama-gqa-tied", "stablelm", "qwen2", "qwen3-moe"])
def test_context_shift_matches_independent_reference(model_dir, variant):
    """n_ctx=24, n_keep=4, n_discard=6: 60 tokens one at a time shift the context
    several times. Design: kept tokens keep the K/V computed when they were first
    seen, and are renumbered to positions 0..len-1 (as llama.cpp's context shift).
    The reference models exactly that in float64 without hearthlm's cache code."""
    folder = model_dir(variant)
    model = hearthlm.load(folder)
    ids = ids_for(model, 60, seed=5)
    s = model.session(n_ctx=24, n_keep=4, n_discard=6)
    ref = StreamingReference(folder, n_ctx=24, n_keep=4, n_discard=6)
    assert_follows(s, ref, ids)
    assert s.tokens[:4] == ids[:4] and s.tokens[-1] == ids[-1] and len(s.tokens) <= 24


def test_batch_feed_through_shift_matches_reference(model_dir):
    """A prompt longer than the context, fed at once: it runs in batches of up to the
    ring size, each batch making room with one shift."""
    folder = model_dir("llama-gqa-tied")
    model = hearthlm.load(folder)
    ids = ids_for(model, 100, seed=2)
    s = model.session(n_ctx=32, n_keep=3)
    ref = StreamingReference(folder, n_ctx=32, n_keep=3, n_discard=s.n_discard)
    logits = s.feed(ids)
    for start in range(0, len(ids), s.max_batch):
        expected = ref.feed_batch(ids[start:start + s.max_batch])[-1]
    assert s.tokens == ref.tokens and s.tokens[:3] == ids[:3]
    close(logits, expected, np.abs(expected).max())


def test_long_stream_constant_memory(model_dir):
    import resource
    model = hearthlm.load(model_dir("llama-mha"))
    s = model.session(n_ctx=128, n_keep=4)
    k_buffer = s.cache.pool.groups[0].k
    rng = np.random.default_rng(0)
    rss = []
    for i in range(2000):  # 100 000 tokens in chunks of 50
        s.feed(rng.integers(0, model.vocab_size, 50).tolist())
        if i in (200, 1999):
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    assert s.cache.pool.groups[0].k is k_buffer and len(s.tokens) <= 128
    assert rss[1] - rss[0] < 20 * 1024  # KiB: no growth beyond noise
    assert np.isfinite(s.feed([1])).all()


def test_rewind_and_sync(model_dir):
    model = hearthlm.load(model_dir("qwen2"))
    ids = ids_for(model, 20)
    full = model.logits(ids)
    s = model.session(n_ctx=64)
    s.feed(ids + ids_for(model, 5, seed=9))
    s.rewind(5)
    assert s.tokens == ids
    fresh = model.session(n_ctx=64)
    fresh.feed(ids)  # then one token, as after the rewind (decode and prefill kernels round differently)
    np.testing.assert_array_equal(s.feed([ids[-1]]), fresh.feed([ids[-1]]))
    s.rewind(1)
    fed = []
    real_feed = s.feed
    s.feed = lambda t, **kw: fed.append(list(t)) or real_feed(t, **kw)
    new = ids[:15] + [3, 4, 5]
    s.sync(new)
    assert fed == [[3, 4, 5]] and s.tokens == new  # only the new suffix was fed
    close(s.sync(ids), full[-1], np.abs(full).max())
    assert s.tokens == ids
    with pytest.raises(hearthlm.InvalidInputError, match="rewind"):
        s.rewind(21)


def test_save_and_load_round_trip(model_dir, tmp_path):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    s = model.session(n_ctx=24, n_keep=2)
    s.feed(ids_for(model, 40))  # includes a shift: the ring is not in slot order
    path = tmp_path / "s.hls"
    s.save(str(path))
    t = model.load_session(str(path))
    assert t.tokens == s.tokens
    np.testing.assert_array_equal(t.feed([7]), s.feed([7]))
    other = hearthlm.load(model_dir("llama-mha"))
    with pytest.raises(hearthlm.ModelFormatError, match="another model"):
        other.load_session(str(path))
    with pytest.raises(hearthlm.ModelFormatError, match="another model or dtype"):
        hearthlm.load(model_dir("llama-gqa-tied"), dtype="bf16").load_session(str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(hearthlm.ModelFormatError, match="truncated"):
        model.load_session(str(path))
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(hearthlm.ModelFormatError, match="not a hearthlm session"):
        model.load_session(str(tmp_path / "junk"))


def test_two_threads_share_weights(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    a, b = ids_for(model, 50, 1), ids_for(model, 50, 2)
    alone = [model.session(n_ctx=64).feed(x) for x in (a, b)]
    results = [None, None]

    def run(i, x):
        s = model.session(n_ctx=64)
        for _ in range(20):
            results[i] = s.feed(x)
            s.reset()

    threads = [threading.Thread(target=run, args=(i, x)) for i, x in enumerate((a, b))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    np.testing.assert_array_equal(results[0], alone[0])
    np.testing.assert_array_equal(results[1], alone[1])


def test_one_session_two_threads_is_refused(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    s = model.session(n_ctx=64)
    errors = []
    with s._exclusive():  # hold the session as if another thread were feeding it
        th = threading.Thread(target=lambda: errors.append(_try(lambda: s.feed([1]))))
        th.start()
        th.join()
    assert len(errors) == 1 and isinstance(errors[0], hearthlm.SessionBusyError)


def _try(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    return None


def test_bad_session_arguments(model_dir):
    model = hearthlm.load(model_dir("llama-mha"))
    with pytest.raises(hearthlm.InvalidInputError, match="n_ctx"):
        model.session(n_ctx=0)
    with pytest.raises(hearthlm.InvalidInputError, match="n_keep"):
        model.session(n_ctx=8, n_keep=8)
    with pytest.raises(hearthlm.InvalidInputError, match="n_discard"):
        model.session(n_ctx=8, n_keep=2, n_discard=7)
    with pytest.raises(hearthlm.ContextOverflowError, match="exceeds the model's context of 256"):
        model.session(n_ctx=257)
    with pytest.raises(hearthlm.ContextOverflowError, match="context of 256"):
        model.logits(list(range(100)) * 3)
    from hearthlm.kv_cache import KVCache
    with pytest.raises(hearthlm.InvalidInputError, match=r"KV cache of 1 sequence\(s\) needs .* bytes"):
        KVCache.alone(model.args, 2 ** 40)


# Max |logit error| / max |logit| against an f32 cache, 60 tokens, measured on the tiny
# models at 4e-4..6e-4 (f16), 3e-3..8e-3 (bf16), 7e-3..1.4e-2 (q8). Bounds: a few times
# the storage's relative rounding: f16 2^-11 = 4.9e-4, bf16 2^-8 = 3.9e-3, q8 half a step
# of amax/127 per block of 32 = 3.9e-3 of the block's largest value.
KV_BOUNDS = {"f16": 2e-3, "bf16": 2e-2, "q8": 3e-2}


@pytest.mark.parametrize("kv_dtype", sorted(KV_BOUNDS))
@pytest.mark.parametrize("variant", ["llama-gqa-tied", "qwen2", "stablelm", "qwen3-moe", "phi3-window",
                                     "phi3-longrope", "gemma3", "qwen3", "smollm3-nope-window", "granite",
                                     "olmo2-gqa-bias"])
def test_kv_dtype_error_is_bounded(model_dir, variant, kv_dtype):
    model = hearthlm.load(model_dir(variant))
    ids = ids_for(model, 60)
    ref = model.session(n_ctx=64).feed(ids, all_logits=True)
    s = model.session(n_ctx=64, kv_dtype=kv_dtype)
    out = s.feed(ids, all_logits=True)
    assert np.abs(out - ref).max() / np.abs(ref).max() <= KV_BOUNDS[kv_dtype]


def test_kv_memory_per_token_tinyllama_shape():
    from hearthlm.kv_cache import KVCache
    from hearthlm.models import model_args
    from hearthlm.shapes import config_for

    args = model_args(config_for("tinyllama-1.1b"), "tinyllama")
    per_token = {kv: (KVCache.alone(args, 256, 4, kv).memory_bytes - 256 * 4) / 256
                 for kv in ("f32", "f16", "bf16", "q8")}
    assert per_token["f32"] == 2 * 22 * 4 * 64 * 4  # K and V, layers, kv heads, head_dim, bytes
    assert per_token["f16"] == per_token["bf16"] == per_token["f32"] / 2
    assert per_token["q8"] == 2 * 22 * 4 * (64 + 2 * 4)  # int8 values + a float scale per 32


@pytest.mark.parametrize("kv_dtype", ["f16", "q8"])
def test_kv_dtype_shift_and_save(model_dir, tmp_path, kv_dtype):
    folder = model_dir("llama-gqa-tied")
    model = hearthlm.load(folder)
    ids = ids_for(model, 50, seed=4)
    s = model.session(n_ctx=24, n_keep=4, n_discard=6, kv_dtype=kv_dtype)
    ref = StreamingReference(folder, n_ctx=24, n_keep=4, n_discard=6)
    for t in ids:
        logits, expected = s.feed([t]), ref.feed(t)
    assert s.tokens == ref.tokens
    assert np.abs(logits - expected).max() / np.abs(expected).max() <= KV_BOUNDS[kv_dtype]
    s.save(str(tmp_path / "s"))
    t = model.load_session(str(tmp_path / "s"))
    assert t.cache.kv_dtype == kv_dtype
    np.testing.assert_array_equal(t.feed([5]), s.feed([5]))


def test_save_and_load_failures_name_the_path(model_dir, tmp_path):
    model = hearthlm.load(model_dir("llama-mha"))
    s = model.session(n_ctx=16)
    s.feed([1, 2, 3])
    missing = tmp_path / "no" / "such" / "dir" / "x.hls"
    with pytest.raises(hearthlm.FileWriteError, match=f"{missing}: cannot save the session"):
        s.save(str(missing))
    with pytest.raises(hearthlm.FileWriteError, match=f"{tmp_path}: cannot save the session"):
        s.save(str(tmp_path))
    assert not os.listdir(tmp_path) and not [f for f in os.listdir(tmp_path.parent) if ".tmp-" in f]
    magic = hearthlm.session.SESSION_MAGIC
    for name, header in [("list.hls", b"[1, 2, 3]"), ("deep.hls", b"[" * 100000 + b"]" * 100000)]:
        path = tmp_path / name
        path.write_bytes(magic + len(header).to_bytes(8, "little") + header)
        with pytest.raises(hearthlm.ModelFormatError, match=f"{path}: .*session header"):
            model.load_session(str(path))
