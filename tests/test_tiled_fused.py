"""The fused Pallas kernels in interpret mode against a float64 NumPy reference; GPU lowering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import contrastive_jax as cj
from contrastive_jax import tiled
from contrastive_jax.tiled import _fused

BLOCKS = dict(block_rows=8, block_cols=16, interpret=True)


def operands(seed, n=21, m=35, dim=12, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = cj.l2_normalize(jax.random.normal(keys[0], (n, dim))).astype(dtype)
    y = cj.l2_normalize(jax.random.normal(keys[1], (m, dim))).astype(dtype)
    return x, y, jax.random.normal(keys[2], (n,)), jax.random.normal(keys[3], (m,))


def numpy_lse_reference(x, y, scale, d_row, d_col):
    """Values and gradients of Σ d_row·row_lse + Σ d_col·col_lse, float64, from the definition."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sim = x @ y.T
    logits = scale * sim
    r = np.log(np.exp(logits).sum(1))
    c = np.log(np.exp(logits).sum(0))
    g = np.asarray(d_row)[:, None] * np.exp(logits - r[:, None]) + np.asarray(d_col)[None, :] * np.exp(
        logits - c
    )
    value = np.sum(np.asarray(d_row) * r) + np.sum(np.asarray(d_col) * c)
    return value, scale * g @ y, scale * g.T @ x, np.sum(g * sim)


def test_fused_lse_matches_numpy_with_ragged_shapes_and_random_cotangents():
    x, y, d_row, d_col = operands(0)
    objective = lambda x, y, s: (lambda rc: jnp.sum(d_row * rc[0]) + jnp.sum(d_col * rc[1]))(
        _fused.pairwise_lse_fused(x, y, s, **BLOCKS)
    )
    value, grads = jax.value_and_grad(objective, (0, 1, 2))(x, y, 4.0)
    expected = numpy_lse_reference(x, y, 4.0, d_row, d_col)
    np.testing.assert_allclose(value, expected[0], rtol=1e-5)
    for got, want in zip(grads, expected[1:]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fused_softplus_matches_numpy():
    x, y, _, _ = operands(1)
    value, grads = jax.value_and_grad(
        lambda *a: 0.5 * _fused.pairwise_softplus_sum_fused(*a, **BLOCKS), (0, 1, 2, 3)
    )(x, y, 5.0, -2.0)
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    logits = 5.0 * xs @ ys.T - 2.0
    g = 0.5 / (1 + np.exp(-logits))
    np.testing.assert_allclose(value, 0.5 * np.logaddexp(0, logits).sum(), rtol=1e-5)
    for got, want in zip(grads, (5.0 * g @ ys, 5.0 * g.T @ xs, np.sum(g * (xs @ ys.T)), g.sum())):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bf16_operands_error_is_small():
    x, y, d_row, d_col = operands(2, n=16, m=16, dim=32, dtype=jnp.bfloat16)
    row16, col16 = _fused.pairwise_lse_fused(x, y, 10.0, **BLOCKS)
    value, *_ = numpy_lse_reference(
        x.astype(jnp.float32), y.astype(jnp.float32), 10.0, d_row * 0 + 1, d_col * 0
    )
    assert row16.dtype == jnp.float32
    np.testing.assert_allclose(np.sum(row16), value, rtol=1e-3)  # bf16 operands, f32 accumulation
    np.testing.assert_allclose(row16, tiled.pairwise_lse(x.astype(jnp.float32), y.astype(jnp.float32), 10.0)[0],
                               rtol=1e-3)  # fmt: skip


def test_not_used_on_cpu_and_lowers_for_cuda():
    x, y, _, _ = operands(3)
    assert not _fused.fused_supported(x, y)
    pytest.importorskip("jax.experimental.pallas.triton")
    spec = jax.ShapeDtypeStruct((256, 64), jnp.bfloat16)
    step = jax.grad(lambda x, y, s: sum(map(jnp.mean, _fused.pairwise_lse_fused(x, y, s))), (0, 1, 2))
    try:
        lowered = (
            jax.jit(step)
            .trace(spec, spec, jax.ShapeDtypeStruct((), jnp.float32))
            .lower(lowering_platforms=("cuda",))
        )
    except RuntimeError as err:  # newer jax needs a CUDA device to lower Triton kernels
        if "GPU" not in str(err):
            raise
        pytest.skip(f"this jax cannot lower for CUDA without a GPU: {err}")
    text = lowered.as_text()
    assert "triton" in text.lower()  # the kernels become Triton custom calls
