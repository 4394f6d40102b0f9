"""Kernel micro-benchmarks (pytest-benchmark). Run: python -m pytest bench -q
--benchmark-columns=median,ops. Each records GB/s (memory-bound kernels: bytes of
weights or cache read) or GFLOP/s (prefill GEMM) in extra_info, beside the machine's
read bandwidth at the same thread count. Decode shapes are TinyLlama-1.1B's."""
import numpy as np
import pytest

from hearthlm import _kernels as K
from hearthlm.formats import FORMATS, QUANTIZED
from hearthlm.weights import f32_to_bf16_bits

rng = np.random.default_rng(0)
HIDDEN, INTER, HEAD_DIM, HEADS, KV_HEADS = 2048, 5632, 64, 32, 4


def weights(n, k, wtype):
    w = rng.standard_normal((n, k), dtype=np.float32) * 0.02
    if wtype in QUANTIZED:
        out = np.empty(FORMATS[wtype].packed_shape(n, k), np.uint8)
        K.quantize(out, w, "f32", wtype, 2)
        return out
    return {"f32": w, "bf16": f32_to_bf16_bits(w), "f16": w.astype(np.float16)}[wtype]


@pytest.fixture(scope="module")
def bandwidth(threads):
    return K.memory_read_bandwidth(1 << 30, threads, 3)


@pytest.mark.parametrize("wtype", ["f32", "bf16", "f16", *QUANTIZED])
@pytest.mark.parametrize("n,k", [(INTER, HIDDEN), (HIDDEN, INTER)])
def test_gemv(benchmark, threads, bandwidth, wtype, n, k):
    w, x, y = weights(n, k, wtype), rng.standard_normal((1, k), dtype=np.float32), np.empty((1, n), np.float32)
    benchmark(K.matmul, y, x, w, None, wtype, threads)
    gbs = w.nbytes / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(gb_s=round(gbs, 1), pct_of_bandwidth=round(100 * gbs / bandwidth, 1))


@pytest.mark.parametrize("wtype", ["f32", "bf16", *QUANTIZED])
def test_gemm_prefill(benchmark, threads, wtype):
    m, n, k = 128, HIDDEN, HIDDEN
    w, x, y = weights(n, k, wtype), rng.standard_normal((m, k), dtype=np.float32), np.empty((m, n), np.float32)
    benchmark(K.matmul, y, x, w, None, wtype, threads)
    benchmark.extra_info["gflop_s"] = round(2 * m * n * k / benchmark.stats.stats.median / 1e9, 1)


def kv_cache(context, kv_dtype):
    """K and V of `context` tokens in kv_dtype ([kv heads, slots, row], scales or None)."""
    from hearthlm.kv_cache import KV_DTYPES, Q8_BLOCK
    x = rng.standard_normal((context, KV_HEADS, HEAD_DIM), dtype=np.float32)
    row = HEAD_DIM if kv_dtype != "q8" else -(-HEAD_DIM // Q8_BLOCK) * Q8_BLOCK
    cache = [np.zeros((KV_HEADS, context, row), KV_DTYPES[kv_dtype]) for _ in range(2)]
    scales = [np.zeros((KV_HEADS, context, row // Q8_BLOCK), np.float32) if kv_dtype == "q8" else None
              for _ in range(2)]
    for c, s in zip(cache, scales):
        K.kv_store(c, s, kv_dtype, x, 0)
    return cache, scales


@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "q8"])
@pytest.mark.parametrize("context", [128, 2048])
def test_attention_decode(benchmark, threads, kv_dtype, context):
    q = rng.standard_normal((1, HEADS, HEAD_DIM), dtype=np.float32)
    out = np.empty_like(q)
    cache, scales = kv_cache(context, kv_dtype)
    pos = np.arange(context, dtype=np.int32)
    benchmark(K.attention, out, q, cache[0], scales[0], cache[1], scales[1], kv_dtype, pos,
              pos[-1:], 0, HEAD_DIM ** -0.5, threads)
    read = sum(c.nbytes for c in cache) + sum(s.nbytes for s in scales if s is not None)
    benchmark.extra_info["gb_s"] = round(read / benchmark.stats.stats.median / 1e9, 1)


@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "q8"])
def test_attention_prefill(benchmark, threads, kv_dtype):
    """The last 512-token chunk of a 4096-token prompt: GFLOP/s of q·k and p·v over the
    causally visible pairs."""
    context, T = 4096, 512
    q = rng.standard_normal((T, HEADS, HEAD_DIM), dtype=np.float32)
    out = np.empty_like(q)
    cache, scales = kv_cache(context, kv_dtype)
    pos = np.arange(context, dtype=np.int32)
    benchmark(K.attention, out, q, cache[0], scales[0], cache[1], scales[1], kv_dtype, pos,
              pos[-T:], 0, HEAD_DIM ** -0.5, threads)
    pairs = sum(int(p) + 1 for p in pos[-T:])
    benchmark.extra_info["gflop_s"] = round(4 * pairs * HEADS * HEAD_DIM / benchmark.stats.stats.median / 1e9, 1)


def test_rmsnorm(benchmark, threads):
    x, w = rng.standard_normal((1, HIDDEN), dtype=np.float32), np.ones(HIDDEN, np.float32)
    out = np.empty_like(x)
    benchmark(K.rmsnorm, out, x, w, 1e-5, threads)


def test_rope(benchmark, threads):
    x = rng.standard_normal((1, HEADS, HEAD_DIM), dtype=np.float32)
    cos, sin = np.ones((4096, HEAD_DIM // 2), np.float32), np.zeros((4096, HEAD_DIM // 2), np.float32)
    benchmark(K.rope, x, cos, sin, np.array([100], np.int32), HEAD_DIM, threads)


def test_swiglu(benchmark, threads):
    g, u = rng.standard_normal((1, INTER), dtype=np.float32), rng.standard_normal((1, INTER), dtype=np.float32)
    out = np.empty_like(g)
    benchmark(K.swiglu, out, g, u, threads)
