"""The compiled per-token bookkeeping (hearthlm._per_token): token id checks, the KV
cache's slot ring, a batch placed in the forward buffers, and the buffers' sizes."""
import numpy as np
import pytest

import hearthlm
from hearthlm._per_token import check_ids
from hearthlm.errors import InvalidInputError
from hearthlm.kv_cache import KVPool
from hearthlm.session import SessionGroup


@pytest.mark.parametrize("ids, expected", [
    ([3, 0, 9], [3, 0, 9]), ((4,), [4]), (np.array([1, 2], np.int64), [1, 2]),
    ([np.int16(5), 6], [5, 6]),        # numpy integers in a list: numpy's rules
    ([True, 2], [1, 2]), ([[1, 2], [3, 4]], [1, 2, 3, 4]), ([], []),
])
def test_check_ids_accepts_integer_sequences(ids, expected):
    got = check_ids(ids, 10)
    assert got.dtype == np.int32 and got.tolist() == expected


@pytest.mark.parametrize("ids, message", [
    ([1, 10], r"ids\[1\] = 10 is outside the vocabulary \[0, 10\)"),
    ([-1], r"ids\[0\] = -1 is outside"),
    ([0, 2**70], r"ids\[1\] = 1180591620717411303424 is outside"),
    ([0, -2**70], r"ids\[1\] = -1180591620717411303424 is outside"),
    (np.array([0, 0, 12]), r"ids\[2\] = 12 is outside"),
    (["a"], "ids: expected a sequence of integer token ids"),
    ([1, None], "ids: expected a sequence of integer token ids"),
])
def test_check_ids_names_the_argument_and_index(ids, message):
    with pytest.raises(InvalidInputError, match=message):
        check_ids(ids, 10, "ids")


def test_check_ids_writes_into_out_when_it_fits():
    out = np.zeros(4, np.int32)
    got = check_ids([7, 8], 10, "ids", out)
    assert got.base is out and out[:2].tolist() == [7, 8]
    got = check_ids(np.array([1, 2, 3]), 10, "ids", out)
    assert got.base is out and out[:3].tolist() == [1, 2, 3]
    longer = check_ids(list(range(6)), 10, "ids", out)
    assert longer.base is not out and longer.tolist() == list(range(6))


def held(cache):
    """{slot: position} of the occupied slots, from the ring's slot_pos."""
    return {int(s): int(p) for s, p in enumerate(cache.slot_pos) if p >= 0}


@pytest.mark.parametrize("n_keep", [0, 1, 3])
def test_ring_keeps_every_token_in_one_slot(model_dir, n_keep):
    """Through reserve / truncate / shift in a small ring, each held position sits in
    exactly one slot, the one order() lists it at, and reserve hands out those slots."""
    model = hearthlm.load(model_dir("llama-mha"))
    pool = KVPool(model.args, 7, 2)
    cache = pool.sequence(1, n_keep)
    ring = cache.rings[0]
    t = model.transformer
    rng = np.random.default_rng(n_keep)
    slots = np.zeros(7, np.int64)
    for step in range(60):
        room = ring.capacity - ring.length
        op = rng.integers(3)
        if op == 0 and room:
            n = int(rng.integers(1, room + 1))
            start = ring.length
            ring.reserve(n, slots)
            order = ring.order()
            assert (slots[:n] == ring.first + order[start:start + n]).all()
        elif op == 1 and cache.length:
            cache.truncate(int(rng.integers(0, cache.length + 1)))
        elif cache.length > n_keep:
            n = int(rng.integers(1, cache.length - n_keep + 1))
            cache.shift(n, t.shift_rotations(n, 8), 1)
        order = ring.order()
        assert held(ring) == {int(s): i for i, s in enumerate(order)}
        assert all(int(ring.slot_of(i)) == s for i, s in enumerate(order))
        assert (order[:n_keep] == np.arange(min(n_keep, ring.length))).all()
    assert (pool.groups[0].slot_pos[:7] == -1).all()  # the other sequence's region is untouched


@pytest.mark.parametrize("n_keep", [0, 2])
def test_window_ring_holds_the_newest_tokens(n_keep):
    """A ring of n_keep + 6 slots for a window of 3 in a context of 40: through random
    reserves (up to max_feed = 4), truncates and drops, it holds the sinks and the
    newest middle tokens [start, length) in distinct slots, a token is lost only when
    overwritten, and `intact` says whether the window before the end is all held."""
    from hearthlm._per_token import Ring
    slot_pos = np.full(n_keep + 6, -1, np.int32)
    ring = Ring(slot_pos, 0, n_keep, 40, 3)
    assert ring.max_feed == 4
    rng = np.random.default_rng(n_keep)
    slots = np.zeros(8, np.int64)
    lost = set()  # logical tokens overwritten or dropped
    for step in range(400):
        op = rng.integers(3)
        if op == 0 and ring.length < 40:
            n = int(rng.integers(1, min(4, 40 - ring.length) + 1))
            before = set(ring.held().tolist())
            ring.reserve(n, slots)
            lost |= before - set(ring.held().tolist())
        elif op == 1 and ring.length:
            ring.truncate(int(rng.integers(max(0, ring.length - 8), ring.length + 1)))
            lost = {i for i in lost if i < ring.length}
        elif op == 2 and ring.length > n_keep:
            d = int(rng.integers(1, ring.length - n_keep + 1))
            ring.drop(d)
            lost = {i if i < n_keep else i - d for i in lost if i < n_keep or i >= n_keep + d}
        kept = ring.held().tolist()
        assert kept == list(range(min(ring.length, n_keep))) + list(range(ring.start, ring.length))
        assert ring.length - ring.start <= 6 and not lost & set(kept)
        assert set(kept) | lost == set(range(ring.length))
        assert held(ring) == {int(s): i for s, i in zip(ring.order(), kept)}
        assert ring.intact == all(i in kept for i in range(max(0, ring.length - 2), ring.length))
        assert ring.free_rewind == (max(0, ring.length - (ring.start + 2)) if lost else ring.length)


def test_ring_refuses_what_does_not_fit(model_dir):
    model = hearthlm.load(model_dir("llama-mha"))
    cache = KVPool(model.args, 4, 1).sequence(0, 1).rings[0]
    slots = np.zeros(8, np.int64)
    cache.reserve(3, slots)
    with pytest.raises(InvalidInputError, match="5 tokens exceed the cache of 4; shift first"):
        cache.reserve(2, slots)
    with pytest.raises(InvalidInputError, match="slots: 0 entries for 1 tokens"):
        cache.reserve(1, slots[:0])
    with pytest.raises(InvalidInputError, match=r"truncate: length must be in \[0, 3\], got 4"):
        cache.truncate(4)
    with pytest.raises(InvalidInputError, match=r"n_keep: expected an integer in \[0, n_ctx=4\), got 4"):
        KVPool(model.args, 4, 1).sequence(0, 4)
    assert cache.length == 3 and held(cache) == {0: 0, 1: 1, 2: 2}


def test_batch_refused_before_any_cache_changes(model_dir):
    """A batch whose second sequence has no room changes neither cache."""
    model = hearthlm.load(model_dir("llama-mha"))
    t = model.transformer
    pool = KVPool(model.args, 4, 2)
    a, b = pool.sequence(0), pool.sequence(1)
    buf = t.buffers(8, 2)
    logits = np.zeros((2, model.vocab_size), np.float32)
    t.forward_batch([(np.array([1, 2, 3], np.int32), b)], buf, logits)
    before = pool.groups[0].slot_pos.copy()
    with pytest.raises(InvalidInputError, match=r"items\[1\]: 5 tokens exceed the cache of 4; shift first"):
        t.forward_batch([(np.array([5], np.int32), a), (np.array([6, 7], np.int32), b)], buf, logits)
    with pytest.raises(InvalidInputError, match="items: expected 1 to 2 sequences, got 3"):
        t.forward_batch([(np.array([5], np.int32), a)] * 3, buf, logits)
    assert a.length == 0 and b.length == 3 and (pool.groups[0].slot_pos == before).all()


def test_buffers_sized_by_sequences(model_dir):
    """A session's buffers hold one sequence's last row; a group's sessions have no
    buffers of their own until one is fed alone."""
    model = hearthlm.load(model_dir("llama-mha"))
    s = model.session(n_ctx=32)
    assert s.buf.last_rows.shape == (1, model.args.hidden_size) and s.buf.last.shape == (1,)
    group = SessionGroup(model, 3, n_ctx=32, max_tokens=12)
    assert group.buf.last_rows.shape == (3, model.args.hidden_size) and group.buf.max_tokens == 12
    a, b, c = group.sessions
    group.feed([(a, [1, 2]), (b, [3])])
    assert all(x.buf is None for x in group.sessions)
    alone = model.session(n_ctx=32)
    np.testing.assert_allclose(c.feed([4, 5]), alone.feed([4, 5]), rtol=0, atol=1e-5)
    assert c.buf is not None and a.buf is None
    assert c.memory_bytes > a.memory_bytes


def test_feed_returns_one_read_only_view(model_dir):
    model = hearthlm.load(model_dir("llama-mha"))
    s = model.session(n_ctx=16)
    first = s.feed([1, 2])
    expected = first.copy()
    second = s.feed([3])
    assert second is first and not first.flags.writeable
    assert not np.array_equal(expected, second)  # updated in place
    with pytest.raises(ValueError):
        second[0] = 0.0
