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


@pytest.mark.parametrize("variant", ["llama-gqa-tied", "qwen2", "stablelm-qk-parallel", "mistral-window",
                                     "qwen3-moe", "qwen3-window-bias", "smollm3-nope-window", "granite",
                                     "olmo2"])
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


def test_session_group_feeds_sessions_together(model_dir):
    """Sessions of a SessionGroup fed in one forward (prefill of one beside decode of
    another, then a context shift in one of them) behave as sessions fed alone."""
    from hearthlm.session import SessionGroup
    model = hearthlm.load(model_dir("llama-gqa-tied"))
    group = SessionGroup(model, 3, n_ctx=24, n_keep=2)
    a, b, c = group.sessions
    alone = [model.session(n_ctx=24, n_keep=2) for _ in range(3)]
    pa, pb, pc = prompts(model.vocab_size, [6, 11, 3])
    rows = group.feed([(a, pa), (b, pb)])
    np.testing.assert_allclose(rows, [alone[0].feed(pa), alone[1].feed(pb)], rtol=0, atol=1e-4)
    for step in range(20):  # c joins later; a runs past its 24-token context and shifts
        batch = [(a, [step % 50]), (c, pc if step == 0 else [step % 40])]
        rows = group.feed(batch)
        ref = [alone[0].feed([step % 50]), alone[2].feed(pc if step == 0 else [step % 40])]
        np.testing.assert_allclose(rows, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert a.tokens == alone[0].tokens and c.tokens == alone[2].tokens and len(a.tokens) < 26
    with pytest.raises(InvalidInputError, match="each session must be of this group and appear once"):
        group.feed([(a, [1]), (a, [2])])
    small = SessionGroup(model, 2, n_ctx=24, max_tokens=4)
    with pytest.raises(InvalidInputError, match="6 token ids .* exceed the group's max_tokens=4"):
        small.feed([(s, [1, 2, 3]) for s in small.sessions])


@pytest.mark.parametrize("dtype", ["q8", "q4"])
def test_quantized_sessions_fed_together_get_the_bits_of_one_token_at_a_time(model_dir, dtype):
    """In the quantized formats a sequence's logits in a batch (its prompt in one piece
    beside other sequences' decode steps) are bit for bit those of the sequence fed
    alone one token at a time: attention does not depend on the rows beside a row, and
    the int8-activation matmuls are exact for any number of rows."""
    from hearthlm.session import SessionGroup
    model = hearthlm.load(model_dir("qwen2"), dtype=dtype)
    group = SessionGroup(model, 3, n_ctx=40)
    alone = [model.session(n_ctx=40) for _ in range(3)]

    def one_at_a_time(session, ids):
        for t in ids:
            row = session.feed([int(t)]).copy()
        return row

    pa, pb, pc = prompts(model.vocab_size, [6, 11, 3])
    assert np.array_equal(group.feed([(group.sessions[0], pa), (group.sessions[1], pb)]),
                          [one_at_a_time(alone[0], pa), one_at_a_time(alone[1], pb)])
    for step in range(12):
        batch = [(group.sessions[0], [step]), (group.sessions[1], [step + 1]),
                 (group.sessions[2], pc if step == 0 else [step + 2])]
        rows = group.feed(batch)
        assert np.array_equal(rows, [one_at_a_time(alone[i], ids) for i, (_, ids) in enumerate(batch)]), step
