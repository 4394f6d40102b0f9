"""Edge shapes through the bindings on every ISA path: empty dimensions, thread counts
out of range. Each either works (writing nothing) or raises; none may crash the process
(these once did: a division by zero in the OpenMP split for N = 0 or 0 heads)."""
import numpy as np
import pytest

import hearthlm
from hearthlm import _kernels as K

ISAS = hearthlm.cpu_info()["supported_isas"]
f32, i32 = np.float32, np.int32


def z(*shape, dtype=f32):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("M,N,K_", [(1, 0, 4), (3, 0, 4), (0, 5, 4), (1, 5, 0), (2, 3, 0), (0, 0, 0)])
def test_matmul_empty(isa, threads, M, N, K_):
    y = np.full((M, N), 7.0, f32)
    bias = np.arange(N, dtype=f32)
    K.matmul(y, z(M, K_), z(N, K_), bias, "f32", threads, isa)
    np.testing.assert_array_equal(y, np.broadcast_to(bias, (M, N)))  # K = 0: just the bias


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("T,heads,kv,slots,hd", [(1, 0, 1, 3, 4), (0, 2, 1, 3, 4), (1, 2, 1, 0, 4),
                                                 (1, 2, 2, 3, 0), (2, 4, 2, 5, 1)])
def test_attention_empty(isa, T, heads, kv, slots, hd):
    out = np.full((T, heads, hd), 7.0, f32)
    K.attention(out, z(T, heads, hd), z(kv, slots, hd), None, z(kv, slots, hd), None, "f32",
                np.arange(slots, dtype=i32), np.full(T, slots, i32), 0, 1.0, 2, isa)
    if slots == 0:
        assert not out.any()  # nothing visible: zeros


@pytest.mark.parametrize("isa", ISAS)
def test_elementwise_empty(isa):
    """Empty outputs are views at the start of a sentinel buffer: nothing may be written."""
    buf = np.full(64, 7.0, f32)

    def empty(*shape):
        return buf[:0].reshape(shape)

    assert K.rmsnorm(empty(2, 0), z(2, 0), z(0), 1e-6, 2, isa) is None
    K.layernorm(empty(2, 0), z(2, 0), z(0), z(0), 1e-6, 2, isa)
    K.glu(empty(0, 3), z(0, 3), z(0, 3), 2, isa)
    K.add(empty(3, 0), z(3, 0), z(3, 0), 2, isa)
    K.rope(empty(0, 2, 4), z(1, 2), z(1, 2), z(0, dtype=i32), 4, 2, isa)
    K.embed(empty(0, 4), z(3, 4), z(0, dtype=i32), "f32", isa)
    assert (buf == 7.0).all()


@pytest.mark.parametrize("threads", [0, -1, K.max_threads + 1, 10 ** 6])
def test_thread_count_out_of_range(threads):
    with pytest.raises(ValueError, match="n_threads"):
        K.matmul(z(1, 64), z(1, 64), z(64, 64), None, "f32", threads)
    with pytest.raises(ValueError, match="n_threads"):
        K.add(z(1, 4), z(1, 4), z(1, 4), threads)
