"""Blockwise (tiled) reductions: same values and gradients as dense, O(B·block) memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import contrastive_jax as cj
from contrastive_jax import losses, tiled


def operands(seed, n=13, m=11, dim=6):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = cj.l2_normalize(jax.random.normal(keys[0], (n, dim)))
    y = cj.l2_normalize(jax.random.normal(keys[1], (m, dim)))
    return x, y, jax.random.normal(keys[2], (n,)), jax.random.normal(keys[3], (m,))


def lse_objective(block_size):
    def objective(x, y, scale, d_row, d_col):
        row_lse, col_lse = tiled.pairwise_lse(x, y, scale, block_size=block_size, impl="xla")
        return jnp.sum(d_row * row_lse) + jnp.sum(d_col * col_lse)

    return objective


@pytest.mark.parametrize("block_size", [1, 4, 5, 13, 64])  # divides n=13 or not, larger than n
def test_pairwise_lse_blockwise_equals_dense(block_size):
    x, y, d_row, d_col = operands(0)
    dense = jax.value_and_grad(lse_objective(None), (0, 1, 2))(x, y, 3.0, d_row, d_col)
    blocked = jax.jit(jax.value_and_grad(lse_objective(block_size), (0, 1, 2)))(x, y, 3.0, d_row, d_col)
    for a, b in zip(jax.tree.leaves(blocked), jax.tree.leaves(dense)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pairwise_lse_dense_matches_numpy():
    x, y, _, _ = operands(1)
    logits = 2.5 * np.asarray(x, np.float64) @ np.asarray(y, np.float64).T
    row, col = tiled.pairwise_lse(x, y, 2.5, block_size=4)
    np.testing.assert_allclose(row, np.log(np.exp(logits).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(col, np.log(np.exp(logits).sum(0)), rtol=1e-6)


@pytest.mark.parametrize("block_size", [3, 13])
def test_pairwise_softplus_blockwise_equals_dense(block_size):
    x, y, _, _ = operands(2)

    def objective(bs):
        return lambda x, y, s, b: 0.7 * tiled.pairwise_softplus_sum(x, y, s, b, block_size=bs, impl="xla")

    dense = jax.value_and_grad(objective(None), (0, 1, 2, 3))(x, y, 4.0, -1.5)
    blocked = jax.value_and_grad(objective(block_size), (0, 1, 2, 3))(x, y, 4.0, -1.5)
    for a, b in zip(jax.tree.leaves(blocked), jax.tree.leaves(dense)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_clip_and_siglip_with_block_size_equal_dense(smoothing):
    x, y, _, _ = operands(3, n=10, m=10)
    for fn, extra in (
        (lambda *a, **k: losses.clip_loss(*a, label_smoothing=smoothing, **k), (6.0,)),
        (losses.siglip_loss, (6.0, -3.0)),
    ):
        argnums = tuple(range(2 + len(extra)))
        dense = jax.value_and_grad(fn, argnums)(x, y, *extra)
        blocked = jax.value_and_grad(lambda *a: fn(*a, block_size=3), argnums)(x, y, *extra)
        for a, b in zip(jax.tree.leaves(blocked), jax.tree.leaves(dense)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_operands_accumulate_in_f32():
    x, y, d_row, d_col = operands(4, n=64, m=64, dim=32)
    row16, col16 = tiled.pairwise_lse(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16), 10.0, block_size=16)
    row32, col32 = tiled.pairwise_lse(x, y, 10.0, block_size=16)
    assert row16.dtype == jnp.float32
    np.testing.assert_allclose(row16, row32, rtol=1e-2)
    grads = jax.grad(lse_objective(16), (0, 1))(
        x.astype(jnp.bfloat16), y.astype(jnp.bfloat16), 10.0, d_row, d_col
    )
    assert grads[0].dtype == jnp.bfloat16
    ref_grads = jax.grad(lse_objective(16), (0, 1))(x, y, 10.0, d_row, d_col)
    rel = jnp.linalg.norm(grads[0].astype(jnp.float32) - ref_grads[0]) / jnp.linalg.norm(ref_grads[0])
    assert rel < 2e-2


def test_fused_impl_is_refused_on_cpu_and_auto_falls_back():
    x, y, _, _ = operands(5)
    assert not tiled.fused_available(x, y)
    with pytest.raises(ValueError, match="GPU"):
        tiled.pairwise_lse(x, y, 1.0, block_size=4, impl="fused")
    np.testing.assert_allclose(
        tiled.pairwise_lse(x, y, 1.0, block_size=4, impl="auto")[0],
        tiled.pairwise_lse(x, y, 1.0)[0],
        rtol=1e-6,
    )
    with pytest.raises(ValueError):
        tiled.pairwise_lse(x, y, 1.0, block_size=4, impl="triton")
    with pytest.raises(ValueError):
        tiled.pairwise_lse(x, y[:, :3], 1.0)


def compiled_temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_tiled_clip_temporary_memory_is_linear_in_batch():
    batch, dim, block = 16384, 64, 256
    x = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
    scale = jax.ShapeDtypeStruct((), jnp.float32)
    step = lambda bs: jax.value_and_grad(lambda x, y, s: losses.clip_loss(x, y, s, block_size=bs), (0, 1, 2))
    tiled_bytes = compiled_temp_bytes(step(block), x, x, scale)
    # A handful of [block, B] float32 buffers plus [B, D] accumulators; nothing of size B².
    linear_bound = 8 * 4 * batch * (block + dim)
    assert tiled_bytes < linear_bound, (tiled_bytes, linear_bound)
    assert tiled_bytes < batch * batch * 4 / 16
    dense_bytes = compiled_temp_bytes(step(None), x, x, scale)
    assert dense_bytes > batch * batch * 4  # the dense loss does hold the B×B logits
