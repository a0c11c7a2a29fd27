"""The Pallas kernels against float64 NumPy references: interpret mode on CPU, compiled on a GPU.

Set `CONTRASTIVE_JAX_PALLAS_COMPILED=1` on a CUDA machine (`benchmarks/gpu_check.sh` does) to run
the same tests compiled through Triton instead of interpreted; without a GPU they are skipped then.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import contrastive_jax as cj
from contrastive_jax.tiled import _pallas

COMPILED = os.environ.get("CONTRASTIVE_JAX_PALLAS_COMPILED") == "1"
if COMPILED and jax.default_backend() != "gpu":
    pytest.skip("CONTRASTIVE_JAX_PALLAS_COMPILED=1 needs a GPU backend", allow_module_level=True)

# Triton's dot wants every tile side ≥ 16. D = 20 is padded to 32 and walked in two chunks.
TILES = _pallas.Tiles(block_rows=16, block_cols=16, d_chunk=16, d_pad=32)
OPTS = dict(tiles=TILES, interpret=not COMPILED)


def operands(seed, n=37, m=45, dim=20, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = cj.l2_normalize(jax.random.normal(keys[0], (n, dim))).astype(dtype)
    y = cj.l2_normalize(jax.random.normal(keys[1], (m, dim))).astype(dtype)
    return x, y, jax.random.normal(keys[2], (n,)), jax.random.normal(keys[3], (m,))


def f64(*arrays):
    return [np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in arrays]


def numpy_lse(x, y, scale, d_row, d_col):
    """Row/column LSE and the gradients of Σ d_row·row_lse + Σ d_col·col_lse, float64."""
    x, y, d_row, d_col = f64(x, y, d_row, d_col)
    sim = x @ y.T
    logits = scale * sim
    r, c = np.log(np.exp(logits).sum(1)), np.log(np.exp(logits).sum(0))
    g = d_row[:, None] * np.exp(logits - r[:, None]) + d_col[None, :] * np.exp(logits - c)
    return r, c, (scale * g @ y, scale * g.T @ x, np.sum(g * sim))


def numpy_sigmoid(x, y, scale, bias, offset, cotangent):
    x, y = f64(x, y)
    sim = x @ y.T
    rows, cols = np.indices(sim.shape)
    z = np.where(cols == rows + offset, 1.0, -1.0)
    margin = z * (scale * sim + bias)
    g = -cotangent * z / (1.0 + np.exp(margin))
    return np.sum(np.logaddexp(0.0, -margin)), (scale * g @ y, scale * g.T @ x, np.sum(g * sim), np.sum(g))


@pytest.mark.parametrize("strip_rows", [None, 16, 32, 1000])  # 3, 3, 2 and 1 strips of n = 37 rows
def test_lse_forward_one_pass_matches_numpy(strip_rows):
    x, y, _, _ = operands(0)
    row, col = _pallas.lse_forward(x, y, 4.0, strip_rows=strip_rows, **OPTS)
    want_row, want_col, _ = numpy_lse(x, y, 4.0, np.zeros(37), np.zeros(45))
    np.testing.assert_allclose(row, want_row, rtol=1e-6)
    np.testing.assert_allclose(col, want_col, rtol=1e-6)


def test_strips_bound_the_column_partials():
    tiles = _pallas.choose_tiles(512, jnp.float32)
    assert _pallas.strip_rows_for(262_144, tiles, None) * _pallas.MAX_STRIPS >= 262_144
    assert _pallas.strip_rows_for(100, tiles, None) == 64  # few rows: one row block per program
    assert _pallas.strip_rows_for(10_000, tiles, 1000) == 1024  # rounded up to whole row blocks


def test_lse_backward_one_pass_matches_numpy_with_random_cotangents():
    x, y, d_row, d_col = operands(1)
    want_row, want_col, want = numpy_lse(x, y, 4.0, d_row, d_col)
    got = _pallas.lse_backward(x, y, 4.0, jnp.asarray(want_row, jnp.float32), jnp.asarray(want_col, jnp.float32),
                               d_row, d_col, **OPTS)  # fmt: skip
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("offset", [0, 5, -3, 45])
def test_sigmoid_forward_and_backward_match_numpy(offset):
    x, y, _, _ = operands(2)
    value = _pallas.softplus_forward(x, y, 5.0, -2.0, jnp.int32(offset), **OPTS)
    grads = _pallas.softplus_backward(x, y, 5.0, -2.0, jnp.int32(offset), 0.5, **OPTS)
    want_value, want_grads = numpy_sigmoid(x, y, 5.0, -2.0, offset, 0.5)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for a, b in zip(grads, want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_operands_accumulate_in_float32():
    x, y, d_row, d_col = operands(3, dtype=jnp.bfloat16)
    row, col = _pallas.lse_forward(x, y, 10.0, **OPTS)
    want_row, want_col, _ = numpy_lse(x, y, 10.0, d_row, d_col)  # on the bf16-rounded inputs
    assert row.dtype == jnp.float32
    np.testing.assert_allclose(row, want_row, rtol=1e-5)
    np.testing.assert_allclose(col, want_col, rtol=1e-5)


@pytest.mark.parametrize("dim", [64, 256, 512, 768, 1024, 1280])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tiles_fit_the_shared_memory_budget_and_pad_little(dim, dtype):
    tiles = _pallas.choose_tiles(dim, dtype)
    itemsize = jnp.dtype(dtype).itemsize
    assert tiles.smem_bytes(itemsize) <= _pallas.SMEM_BUDGET < 228 * 1024
    for side in (tiles.block_rows, tiles.block_cols, tiles.d_chunk):  # Triton: powers of two, ≥ 16
        assert side >= 16 and side & (side - 1) == 0
    assert tiles.d_pad % tiles.d_chunk == 0 and tiles.d_pad >= dim
    assert tiles.d_pad == dim  # multiples of 64 are never padded (768 stays 768, not 1024)
    assert tiles.d_chunk >= 64  # and not walked in needlessly thin chunks


@pytest.mark.parametrize("dim,dtype", [(20, jnp.float32), (100, jnp.float32), (800, jnp.bfloat16)])
def test_odd_feature_sizes_pad_at_most_an_eighth(dim, dtype):
    tiles = _pallas.choose_tiles(dim, dtype)
    assert tiles.d_pad - dim <= max(dim // 8, 15)
    assert tiles.smem_bytes(jnp.dtype(dtype).itemsize) <= _pallas.SMEM_BUDGET


def test_not_supported_on_cpu_and_lowers_for_cuda():
    x, y, _, _ = operands(4)
    if jax.default_backend() != "gpu":
        assert not _pallas.pallas_supported(x, y)
    pytest.importorskip("jax.experimental.pallas.triton")
    spec = jax.ShapeDtypeStruct((256, 64), jnp.bfloat16)
    tiles = _pallas.choose_tiles(64, jnp.bfloat16)

    def step(x, y, s):  # all four kernels
        row, col = _pallas.lse_forward(x, y, s, tiles=tiles)
        offset = jnp.int32(0)
        sigmoid = _pallas.softplus_forward(x, y, s, s, offset, tiles=tiles)
        sigmoid_grads = _pallas.softplus_backward(x, y, s, s, offset, sigmoid, tiles=tiles)
        return _pallas.lse_backward(x, y, s, row, col, row, col, tiles=tiles), sigmoid_grads

    try:
        lowered = (
            jax.jit(step)
            .trace(spec, spec, jax.ShapeDtypeStruct((), jnp.float32))
            .lower(lowering_platforms=("cuda",))
        )
    except RuntimeError as err:  # newer jax needs a CUDA device to lower Triton kernels
        if "GPU" not in str(err) and "CUDA" not in str(err):
            raise
        pytest.skip(f"this jax cannot lower for CUDA without a GPU: {err}")
    assert lowered.as_text().count("__gpu$xla.gpu.triton") == 4  # each kernel a Triton custom call


@pytest.mark.parametrize("precision", ["float32", "tf32"])
def test_triton_dots_are_ieee_float32_unless_tf32_is_asked(precision, monkeypatch, capsys):
    # `pallas_call(debug=True)` prints the Triton IR; Triton omits `inputPrecision` when it is
    # its default, IEEE (full float32).
    pytest.importorskip("jax.experimental.pallas.triton")
    monkeypatch.setattr(_pallas, "_DEBUG", True)
    spec = jax.ShapeDtypeStruct((128, 768), jnp.float32)
    tiles = _pallas.choose_tiles(768, jnp.float32)

    def step(x, y, s):
        row, col = _pallas.lse_forward(x, y, s, tiles=tiles, precision=precision)
        grads = _pallas.lse_backward(x, y, s, row, col, row, col, tiles=tiles, precision=precision)
        return grads, _pallas.softplus_forward(x, y, s, s, jnp.int32(0), tiles=tiles, precision=precision)

    try:
        jax.jit(step).trace(spec, spec, jax.ShapeDtypeStruct((), jnp.float32)).lower(
            lowering_platforms=("cuda",)
        )
    except RuntimeError as err:
        if "GPU" not in str(err) and "CUDA" not in str(err):
            raise
        pytest.skip(f"this jax cannot lower for CUDA without a GPU: {err}")
    dots = [line for line in capsys.readouterr().out.splitlines() if "tt.dot " in line]
    assert len(dots) >= 4, dots  # forward S; backward S, dx and dy; sigmoid forward S
    assert all(("inputPrecision = tf32" in line) == (precision == "tf32") for line in dots), dots
