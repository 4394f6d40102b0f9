"""Tokens of several sequences in one forward (Transformer.forward_batch over one
KVPool): each sequence sees only its own cache, so its logits and greedy tokens equal
those of the sequence run alone."""
import numpy as np
import pytest

import hearthlm
from hearthlm.errors import InvalidInputError
from hearthlm.kv_cache import KVCache, KVPool


def prompts(vocab, lengths, seed=5):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).astype(np.int32) for n in lengths]


def greedy_alone(model, ids, n):
    return model.generate_ids(ids.tolist(), n)


@pytest.mark.parametrize("variant", ["llama-gqa-tied", "qwen2", "stablelm-qk-parallel", "mistral-window"])
@pytest.mark.parametrize("kv_dtype", ["f32", "q8"])
def test_batched_greedy_equals_each_sequence_alone(model_dir, variant, kv_dtype):
    model = hearthlm.load(model_dir(variant))
    t = model.transformer
    seqs = prompts(model.vocab_size, [7, 1, 12])
    pool = KVPool(model.args, n_ctx=48, n_seqs=4, kv_dtype=kv_dtype)
    caches = [pool.sequence(i) for i in (2, 0, 3)]  # any regions, in any order
    buf = t.buffers(32)
    logits = np.zeros((3, model.vocab_size), np.float32)
    t.forward_batch(list(zip(seqs, caches)), buf, logits)  # all three prompts in one pass
    out = [[] for _ in seqs]
    for _ in range(10):
        nxt = logits.argmax(axis=1).astype(np.int32)
        for o, tok in zip(out, nxt):
            o.append(int(tok))
        t.forward_batch([(nxt[i:i + 1], c) for i, c in enumerate(caches)], buf, logits)
    for ids, got in zip(seqs, out):
        alone = KVCache.alone(model.args, 48, kv_dtype=kv_dtype)
        one = np.zeros((1, model.vocab_size), np.float32)
        t.forward(ids, alone, t.buffers(32), one)
        assert got[0] == int(one.argmax())
        if kv_dtype == "f32":
            assert got == greedy_alone(model, ids, 10)


def test_batched_logits_match_alone(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    t = model.transformer
    seqs = prompts(model.vocab_size, [5, 9])
    pool = KVPool(model.args, n_ctx=16, n_seqs=2)
    caches = [pool.sequence(0), pool.sequence(1)]
    buf = t.buffers(16)
    every = np.zeros((14, model.vocab_size), np.float32)
    t.forward_batch(list(zip(seqs, caches)), buf, every, all_logits=True)
    ref = np.concatenate([model.logits(s) for s in seqs])
    np.testing.assert_allclose(every, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert [c.length for c in caches] == [5, 9]


def test_batch_refuses_mixed_pools_and_overflow(model_dir):
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    t = model.transformer
    a, b = KVPool(model.args, 8, 1).sequence(0), KVPool(model.args, 8, 1).sequence(0)
    ids = np.array([1, 2], np.int32)
    out = np.zeros((2, model.vocab_size), np.float32)
    with pytest.raises(InvalidInputError, match="share one KVPool"):
        t.forward_batch([(ids, a), (ids, b)], t.buffers(8), out)
    pool = KVPool(model.args, 8, 2)
    c, d = pool.sequence(0), pool.sequence(1)
    with pytest.raises(InvalidInputError, match="4 tokens .* exceed the 3 of the buffers"):
        t.forward_batch([(ids, c), (ids, d)], t.buffers(3), out)
    assert c.length == d.length == 0  # refused before anything changed
