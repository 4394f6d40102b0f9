"""Every kernel on every ISA path this CPU supports, against numpy (float64) and the
scalar reference, on awkward sizes (odd, not multiples of any vector width)."""
import numpy as np
import pytest

import hearthlm
from hearthlm import _kernels as K
from hearthlm.weights import f32_to_bf16_bits

ISAS = hearthlm.cpu_info()["supported_isas"]
SIZES = [1, 3, 7, 17, 33, 67]
rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def weights_as(w32, wtype):
    """(stored weights, float64 values they represent)."""
    if wtype == "f32":
        return w32, w32.astype(np.float64)
    if wtype == "bf16":
        bits = f32_to_bf16_bits(w32)
        return bits, (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    half = w32.astype(np.float16)
    return half, half.astype(np.float64)


def test_isa_list_is_consistent():
    info = hearthlm.cpu_info()
    assert info["active_isa"] == info["supported_isas"][-1]
    assert "scalar" in info["supported_isas"]
    assert set(info["supported_isas"]) <= set(info["compiled_isas"])


def test_unsupported_isa_is_an_error():
    unsupported = [i for i in K.compiled_isas() if i not in K.supported_isas()] + ["sse9000"]
    for name in unsupported:
        with pytest.raises(hearthlm.UnsupportedISAError, match=name):
            hearthlm.select_isa(name)
    assert K.active_isa() == K.supported_isas()[-1]


def test_environment_variable_forces_the_path():
    import subprocess
    import sys
    for isa in ISAS:
        out = subprocess.run([sys.executable, "-c", "import hearthlm; print(hearthlm.cpu_info()['active_isa'])"],
                             env={**__import__("os").environ, "HEARTHLM_ISA": isa},
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == isa
    bad = subprocess.run([sys.executable, "-c", "import hearthlm"], capture_output=True, text=True,
                         env={**__import__("os").environ, "HEARTHLM_ISA": "nonsense"})
    assert bad.returncode != 0 and "UnsupportedISAError" in bad.stderr


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wtype", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("M,N,K_", [(1, 67, 33), (1, 5, 130), (3, 17, 7), (7, 33, 67), (67, 65, 17), (130, 3, 9),
                                      (2, 41, 300), (8, 19, 70), (13, 66, 129), (16, 7, 33), (17, 24, 64),
                                      (32, 11, 50), (33, 5, 19)])
@pytest.mark.parametrize("threads", [1, 3])
def test_matmul(isa, wtype, M, N, K_, threads):
    x, w32, bias = rand(M, K_), rand(N, K_), rand(N)
    w, w64 = weights_as(w32, wtype)
    ref = x.astype(np.float64) @ w64.T + bias
    y = np.full((M, N), np.nan, np.float32)
    K.matmul(y, x, w, bias, wtype, threads, isa)
    tol = 1e-5 * np.sqrt(K_) * (np.abs(x).astype(np.float64) @ np.abs(w64).T + 1)
    assert np.all(np.abs(y - ref) <= tol)
    y_scalar = np.empty_like(y)
    K.matmul(y_scalar, x, w, None, wtype, 1, "scalar")
    assert np.all(np.abs(y - (y_scalar + bias)) <= tol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES)
def test_norms(isa, n):
    x, w, b = rand(5, n) * 3 + 1, rand(n), rand(n)
    x64 = x.astype(np.float64)
    out = np.empty_like(x)
    K.rmsnorm(out, x, w, 1e-5, 2, isa)
    ref = x64 / np.sqrt((x64 ** 2).mean(1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    K.layernorm(out, x, w, b, 1e-5, 2, isa)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("head_dim,rot_dim", [(2, 2), (6, 6), (22, 22), (40, 10), (64, 64)])
def test_rope(isa, head_dim, rot_dim):
    T, heads, n_pos = 5, 3, 5000
    x = rand(T, heads, head_dim)
    pos = np.array([0, 1, 17, 2047, 4999], np.int32)
    inv = 1.0 / 10000 ** (np.arange(0, rot_dim, 2) / rot_dim)
    angles = np.outer(np.arange(n_pos), inv)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    ref = x.astype(np.float64).copy()
    half = rot_dim // 2
    c, s = cos[pos][:, None, :], sin[pos][:, None, :]
    a, b = ref[..., :half].copy(), ref[..., half:rot_dim].copy()
    ref[..., :half] = a * c - b * s
    ref[..., half:rot_dim] = b * c + a * s
    K.rope(x, cos, sin, pos, rot_dim, 1, isa)
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)


def attention_reference(q, k, v, kv_pos, q_pos, window, scale, softcap=0.0):
    T, H, D = q.shape
    n_rep = H // k.shape[0]
    out = np.zeros((T, H, D))
    for t in range(T):
        for h in range(H):
            kh, vh = k[h // n_rep].astype(np.float64), v[h // n_rep].astype(np.float64)
            ok = (kv_pos >= 0) & (kv_pos <= q_pos[t])
            if window:
                ok &= q_pos[t] - kv_pos < window
            s = kh[ok] @ q[t, h] * scale
            if softcap:
                s = softcap * np.tanh(s / softcap)
            p = np.exp(s - s.max())
            out[t, h] = p @ vh[ok] / p.sum()
    return out


def kv_cache_of(x, kv_dtype):
    """Store x [kv_heads, n_slots, head_dim] with K.kv_store; return (cache, scales, the
    float64 values the cache now represents, decoded here independently)."""
    heads, n, hd = x.shape
    row = -(-hd // 32) * 32 if kv_dtype == "q8" else hd
    dt = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "q8": np.int8}[kv_dtype]
    cache = np.zeros((heads, n, row), dt)
    scales = np.zeros((heads, n, row // 32), np.float32) if kv_dtype == "q8" else None
    K.kv_store(cache, scales, kv_dtype, np.ascontiguousarray(x.transpose(1, 0, 2)), 0)
    if kv_dtype == "bf16":
        values = (cache.astype(np.uint32) << 16).view(np.float32)
    elif kv_dtype == "q8":
        values = cache.astype(np.float32) * np.repeat(scales, 32, axis=2)
    else:
        values = cache
    return cache, scales, values[..., :hd].astype(np.float64)


@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "bf16", "q8"])
def test_kv_store_conversions(kv_dtype):
    x = rand(3, 5, 45) * 10
    x[0, 0, :32] = 0.0                                  # an all-zero q8 block
    x[1, 1, 3] = 1e30 if kv_dtype != "f16" else 6e4     # an outlier
    x[2, 2, :] = 1e-41                                  # denormals
    cache, scales, values = kv_cache_of(x, kv_dtype)
    if kv_dtype == "f32":
        np.testing.assert_array_equal(values, x)
    elif kv_dtype == "f16":
        np.testing.assert_array_equal(cache, x.astype(np.float16))
    elif kv_dtype == "bf16":
        np.testing.assert_array_equal(cache, f32_to_bf16_bits(x))
    else:
        assert np.all(np.abs(cache) <= 127) and np.all(cache[..., 45:] == 0)
        assert np.all(scales[0, 0, 0] == 0) and np.all(np.isfinite(scales))
        block_scale = np.repeat(scales, 32, axis=2)[..., :45]
        assert np.all(np.abs(values - x) <= block_scale * 0.5 * (1 + 1e-6))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "bf16", "q8"])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 4, 6), (8, 2, 17), (12, 1, 64), (9, 3, 33)])
@pytest.mark.parametrize("n_slots,window,softcap", [(5, 0, 0.0), (150, 0, 0.0), (150, 7, 0.0), (150, 0, 0.8)])
def test_attention(isa, kv_dtype, heads, kv_heads, head_dim, n_slots, window, softcap):
    T = 3
    q = rand(T, heads, head_dim)
    k, kscale, kvals = kv_cache_of(rand(kv_heads, n_slots, head_dim), kv_dtype)
    v, vscale, vvals = kv_cache_of(rand(kv_heads, n_slots, head_dim), kv_dtype)
    kv_pos = rng.permutation(n_slots).astype(np.int32)  # slots filled in any order
    q_pos = np.arange(n_slots - T, n_slots, dtype=np.int32)
    kv_pos[(rng.random(n_slots) < 0.2) & ~np.isin(kv_pos, q_pos)] = -1  # some empty slots
    out = np.full_like(q, np.nan)
    K.attention(out, q, k, kscale, v, vscale, kv_dtype, kv_pos, q_pos, window, 0.3, 2, isa, softcap=softcap)
    ref = attention_reference(q, kvals, vvals, kv_pos, q_pos, window, 0.3, softcap)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "q8"])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 4, 6), (8, 2, 17), (16, 2, 64), (9, 3, 33), (24, 8, 40)])
@pytest.mark.parametrize("window", [0, 40])
@pytest.mark.parametrize("threads", [1, 3])
def test_prefill_attention_in_token_tiles(isa, kv_dtype, heads, kv_heads, head_dim, window, threads):
    """Many tokens: each task attends a tile of consecutive tokens, reading every K/V
    block once for the tile; the tokens' causal masks differ inside a block, and the
    first tokens see few slots."""
    n_slots, T = 230, 77
    q = rand(T, heads, head_dim)
    k, kscale, kvals = kv_cache_of(rand(kv_heads, n_slots, head_dim), kv_dtype)
    v, vscale, vvals = kv_cache_of(rand(kv_heads, n_slots, head_dim), kv_dtype)
    kv_pos = np.arange(n_slots, dtype=np.int32)
    q_pos = np.arange(n_slots - T, n_slots, dtype=np.int32)
    out = np.full_like(q, np.nan)
    K.attention(out, q, k, kscale, v, vscale, kv_dtype, kv_pos, q_pos, window, 0.3, threads, isa)
    ref = attention_reference(q, kvals, vvals, kv_pos, q_pos, window, 0.3)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv_dtype", ["f32", "bf16", "q8"])
@pytest.mark.parametrize("heads,kv_heads,hd", [(6, 2, 24), (16, 8, 128), (32, 4, 64), (4, 4, 40)])
@pytest.mark.parametrize("n_slots, window, q_pos", [(1000, 0, 990), (1333, 300, 1200), (777, 0, 100)])
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_a_token_gets_the_same_bits_alone_and_in_a_tile(isa, kv_dtype, heads, kv_heads, hd, n_slots, window, q_pos,
                                                        threads):
    """Decode (one token), verify and prefill (tiles of tokens) and any team size split
    the work differently (tiles, head groups); each token's output is the same bits
    whichever (what makes speculative decoding's verify agree with plain decoding
    exactly); ranges of the cache may hold no visible slot at all."""
    T = 9
    q = rand(T, heads, hd)
    k, kscale, kvals = kv_cache_of(rand(kv_heads, n_slots, hd), kv_dtype)
    v, vscale, vvals = kv_cache_of(rand(kv_heads, n_slots, hd), kv_dtype)
    kv_pos = rng.permutation(n_slots).astype(np.int32)
    kv_pos[rng.random(n_slots) < 0.2] = -1
    positions = np.arange(q_pos - T + 1, q_pos + 1, dtype=np.int32)
    tile = np.full_like(q, np.nan)
    K.attention(tile, q, k, kscale, v, vscale, kv_dtype, kv_pos, positions, window, 0.3, threads, isa)
    np.testing.assert_allclose(tile, attention_reference(q, kvals, vvals, kv_pos, positions, window, 0.3),
                               rtol=1e-4, atol=1e-5)
    for t in range(T):
        alone = np.full_like(q[t:t + 1], np.nan)
        K.attention(alone, q[t:t + 1], k, kscale, v, vscale, kv_dtype, kv_pos, positions[t:t + 1], window, 0.3,
                    1 + t % threads, isa)
        assert np.array_equal(alone[0], tile[t]), t


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kv_dtype", ["f32", "f16", "q8"])
def test_kv_rotate(isa, kv_dtype):
    hd, rot = 40, 10
    cache, scales, before = kv_cache_of(rand(2, 7, hd), kv_dtype)
    angle = 0.7 / 10000 ** (np.arange(0, rot, 2) / rot)
    cos, sin = np.cos(angle)[None].astype(np.float32), np.sin(angle)[None].astype(np.float32)
    which = np.array([0, -1, 0, 0, -1, -1, 0], np.int32)
    raw_before = cache.copy()
    K.kv_rotate(cache, scales, kv_dtype, hd, cos, sin, which, rot, 1, isa)
    if kv_dtype == "q8":
        after = (cache.astype(np.float64) * np.repeat(scales, 32, axis=2))[..., :hd]
    else:
        after = cache.astype(np.float64)
    expected = before.copy()
    h = rot // 2
    a, b = before[..., :h], before[..., h:rot]
    expected[..., :h] = a * np.cos(angle) - b * np.sin(angle)
    expected[..., h:rot] = b * np.cos(angle) + a * np.sin(angle)
    expected[:, which < 0] = before[:, which < 0]
    tol = {"f32": 1e-6, "f16": 2e-3, "q8": 3e-2}[kv_dtype] * np.abs(before).max()
    np.testing.assert_allclose(after, expected, atol=tol, rtol=0)
    np.testing.assert_array_equal(cache[:, which < 0], raw_before[:, which < 0])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES + [70000])
def test_elementwise(isa, n):
    g, u = rand(1, n) * 4, rand(1, n)
    out = np.empty_like(g)
    K.glu(out, g, u, 2, isa)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(out, g64 / (1 + np.exp(-g64)) * u, rtol=1e-5, atol=1e-6)
    K.glu(out, g, u, 2, isa, activation="gelu_tanh")
    gelu = 0.5 * g64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (g64 + 0.044715 * g64 ** 3)))
    np.testing.assert_allclose(out, gelu * u, rtol=1e-5, atol=1e-6)
    K.add(out, g, u, 2, isa)
    np.testing.assert_array_equal(out, g + u)
    K.add(out, g, u, 2, isa, b_scale=0.37)
    np.testing.assert_allclose(out, g64 + 0.37 * u.astype(np.float64), rtol=1e-6, atol=1e-6)


def test_glu_extremes():
    g = np.array([[-1e4, -100.0, -88.0, 0.0, 88.0, 100.0, 1e4, -3.0, 3.0]], np.float32)
    u = np.ones_like(g)
    for isa in ISAS:
        out = np.empty_like(g)
        K.glu(out, g, u, 1, isa)
        assert np.all(np.isfinite(out))
        g64 = g.astype(np.float64)
        with np.errstate(over="ignore"):
            ref = g64 / (1 + np.exp(-g64))
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
        K.glu(out, g, u, 1, isa, activation="gelu_tanh")
        assert np.all(np.isfinite(out))
        ref = 0.5 * g64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (g64 + 0.044715 * g64 ** 3)))
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wtype", ["f32", "bf16", "f16"])
def test_embed(isa, wtype):
    table, table64 = weights_as(rand(11, 37), wtype)
    ids = np.array([0, 10, 3, 3], np.int32)
    out = np.empty((4, 37), np.float32)
    K.embed(out, table, ids, wtype, isa)
    np.testing.assert_array_equal(out, table64[ids].astype(np.float32))
    with pytest.raises(ValueError, match="token id 11"):
        K.embed(out, table, np.array([1, 2, 11, 0], np.int32), wtype, isa)


def test_f16_conversion_covers_subnormals_and_specials():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    half = bits.view(np.float16).reshape(1, -1)
    for isa in ISAS:
        out = np.empty((1, 65536), np.float32)
        K.embed(out, half, np.zeros(1, np.int32), "f16", isa)
        np.testing.assert_array_equal(out[0], half[0].astype(np.float32))


def test_bad_arguments_raise_not_crash():
    x = rand(2, 8)
    with pytest.raises(ValueError, match="w: shape"):
        K.matmul(np.empty((2, 3), np.float32), x, rand(3, 9), None, "f32")
    with pytest.raises(TypeError, match="x"):
        K.matmul(np.empty((2, 3), np.float32), x.astype(np.float64), rand(3, 8), None, "f32")
    with pytest.raises(ValueError, match="C-contiguous"):
        K.matmul(np.empty((8, 3), np.float32), x.T, rand(3, 2), None, "f32")
    with pytest.raises(ValueError, match="wtype"):
        K.matmul(np.empty((2, 3), np.float32), x, rand(3, 8), None, "int3")
    with pytest.raises(ValueError, match="position 9"):
        K.rope(rand(1, 1, 4), rand(5, 2), rand(5, 2), np.array([9], np.int32), 4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wtype", ["f32", "bf16", "q8", "q4"])
@pytest.mark.parametrize("M", [1, 5, 12])
def test_matmul_group_equals_separate_matmuls(isa, wtype, M):
    """Q/K/V-style groups: one call, one parallel region, x quantized once; each output
    is bit-identical to its own matmul."""
    from hearthlm.quant import quantize_tensor
    K_ = 70
    x = rand(M, K_)
    shapes = [37, 9, 9]
    ws, biases = [], [rand(37), None, rand(9)]
    for n in shapes:
        w32 = rand(n, K_)
        ws.append(quantize_tensor(w32, "F32", wtype, 1, "test", "w") if wtype in ("q8", "q4")
                  else weights_as(w32, wtype)[0])
    group = [np.full((M, n), np.nan, np.float32) for n in shapes]
    K.matmul_group(group, x, ws, biases, wtype, 3, isa)
    for y, w, b, n in zip(group, ws, biases, shapes):
        alone = np.full((M, n), np.nan, np.float32)
        K.matmul(alone, x, w, b, wtype, 1, isa)
        np.testing.assert_array_equal(y, alone)
    with pytest.raises(ValueError, match=r"[yw]\[1\]: expected"):  # quantized w: N is y's width
        K.matmul_group([group[0], group[0], group[2]], x, ws, biases, wtype, 1, isa)
