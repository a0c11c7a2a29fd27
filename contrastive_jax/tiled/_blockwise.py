"""Pairwise reductions of the logit matrix `L = scale · x yᵀ (+ bias)` without materialising it.

Two reductions cover the contrastive losses that need the full matrix:

* `pairwise_lse` → row and column log-sum-exps (CLIP / InfoNCE in both directions),
* `pairwise_softplus_sum` → `Σ_ij softplus(L_ij)` (SigLIP's all-pairs term).

Each has three implementations behind one signature: dense (`block_size=None`, plain
autodiff, O(n·m) memory), blockwise XLA (a `lax.scan` over row blocks with a
`jax.custom_vjp` whose backward pass recomputes each block, O(block·m + (n+m)·D) memory),
and a fused Pallas GPU kernel (`tiled/_fused.py`) used automatically on GPUs.

The blockwise forward scans row blocks: each block's row LSE is exact (the block holds full
rows) and the column LSE is kept as a running (max, sum) pair merged across blocks. With
`P = exp(L − r)`, `Q = exp(L − c)` and cotangents `(dr, dc)` of the two outputs, the
backward pass uses `∂/∂L_ij = dr_i P_ij + dc_j Q_ij` (SPEC, "Tiled (blockwise) CLIP").

The raw `*_forward` / `*_backward` functions are exposed for `parallel/`'s ring, which runs
them on the block that is visiting the device ("tiles inside, ring across devices").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive_jax import _vma

Array = jax.Array
_F32 = jnp.float32


def similarity(x: Array, y: Array) -> Array:
    """`x yᵀ` accumulated in float32; bf16 operands stay bf16 on the matrix unit."""
    dtype = jnp.promote_types(x.dtype, y.dtype)
    return jax.lax.dot_general(
        x.astype(dtype), y.astype(dtype), (((1,), (1,)), ((), ())), preferred_element_type=_F32
    )


def _matmul(a: Array, b: Array, dtype) -> Array:
    """`a @ b` with operands in `dtype` (the embeddings' dtype) and float32 accumulation."""
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=_F32)


def _row_blocks(x: Array, block_size: int):
    """Splits rows into `[num_blocks, block_size, D]` (zero-padded) plus a validity mask."""
    n = x.shape[0]
    num_blocks = -(-n // block_size)
    padded = num_blocks * block_size
    blocks = jnp.pad(x, ((0, padded - n), (0, 0))).reshape(num_blocks, block_size, x.shape[1])
    valid = (jnp.arange(padded) < n).reshape(num_blocks, block_size)
    return blocks, valid


def _pad_rows(v: Array, block_size: int, value) -> Array:
    n = v.shape[0]
    padded = -(-n // block_size) * block_size
    return jnp.pad(v, (0, padded - n), constant_values=value).reshape(-1, block_size)


def _merge_lse(running_max, running_sum, block_logits):
    """Online log-sum-exp over axis 0: folds a `[rows, m]` block into per-column (max, sum)."""
    new_max = jnp.maximum(running_max, jnp.max(block_logits, axis=0))
    # A column seen only through masked (-inf) entries keeps max -inf; shift by 0 there so
    # that exp(-inf - shift) is 0 rather than NaN.
    shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    running_sum = running_sum * jnp.exp(running_max - shift) + jnp.sum(jnp.exp(block_logits - shift), axis=0)
    return new_max, running_sum


# ----------------------------------------------------------------------------------------------
# Row / column log-sum-exp.


def lse_forward(x: Array, y: Array, scale: Array, block_size: int) -> tuple[Array, Array]:
    """Row and column LSE of `scale · x yᵀ`, one row block at a time (no autodiff)."""
    m = y.shape[0]
    blocks, valid = _row_blocks(x, block_size)

    def body(carry, inputs):
        col_max, col_sum = carry
        x_block, row_valid = inputs
        logits = jnp.where(row_valid[:, None], scale * similarity(x_block, y), -jnp.inf)
        col_max, col_sum = _merge_lse(col_max, col_sum, logits)
        return (col_max, col_sum), jax.nn.logsumexp(logits, axis=1)

    init = (jnp.full((m,), -jnp.inf, _F32), jnp.zeros((m,), _F32))
    init = _vma.match_varying(*init, x, y)[:2]
    (col_max, col_sum), row_lse = jax.lax.scan(body, init, (blocks, valid))
    return row_lse.reshape(-1)[: x.shape[0]], col_max + jnp.log(col_sum)


def lse_backward(x, y, scale, row_lse, col_lse, d_row, d_col, block_size: int):
    """Gradients `(dx, dy, dscale)` of `Σ d_row·row_lse + Σ d_col·col_lse`, f32, recomputing blocks."""
    dtype = jnp.promote_types(x.dtype, y.dtype)
    blocks, valid = _row_blocks(x, block_size)
    row_lse_blocks = _pad_rows(row_lse, block_size, 0.0)
    d_row_blocks = _pad_rows(d_row, block_size, 0.0)

    def body(carry, inputs):
        dy, dscale = carry
        x_block, row_valid, r_block, dr_block = inputs
        sim = similarity(x_block, y)
        logits = scale * sim
        grad_logits = dr_block[:, None] * jnp.exp(logits - r_block[:, None]) + d_col[None, :] * jnp.exp(
            logits - col_lse[None, :]
        )
        grad_logits = jnp.where(row_valid[:, None], grad_logits, 0.0)
        dx_block = scale * _matmul(grad_logits, y, dtype)
        dy = dy + scale * _matmul(grad_logits.T, x_block, dtype)
        dscale = dscale + jnp.sum(grad_logits * sim)
        return (dy, dscale), dx_block

    init = (jnp.zeros(y.shape, _F32), jnp.zeros((), _F32))
    init = _vma.match_varying(*init, x, y)[:2]
    (dy, dscale), dx = jax.lax.scan(body, init, (blocks, valid, row_lse_blocks, d_row_blocks))
    return dx.reshape(-1, x.shape[1])[: x.shape[0]], dy, dscale


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lse_blockwise(x, y, scale, block_size):
    return lse_forward(x, y, scale, block_size)


def _lse_blockwise_fwd(x, y, scale, block_size):
    row_lse, col_lse = lse_forward(x, y, scale, block_size)
    return (row_lse, col_lse), (x, y, scale, row_lse, col_lse)


def _lse_blockwise_bwd(block_size, residuals, cotangents):
    x, y, scale, row_lse, col_lse = residuals
    d_row, d_col = cotangents
    dx, dy, dscale = lse_backward(x, y, scale, row_lse, col_lse, d_row, d_col, block_size)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype)


_lse_blockwise.defvjp(_lse_blockwise_fwd, _lse_blockwise_bwd)


# ----------------------------------------------------------------------------------------------
# Σ softplus over all pairs.


def softplus_forward(x: Array, y: Array, scale: Array, bias: Array, block_size: int) -> Array:
    """`Σ_ij softplus(scale · x_i·y_j + bias)`, one row block at a time (no autodiff)."""
    blocks, valid = _row_blocks(x, block_size)

    def body(total, inputs):
        x_block, row_valid = inputs
        terms = jax.nn.softplus(scale * similarity(x_block, y) + bias)
        return total + jnp.sum(jnp.where(row_valid[:, None], terms, 0.0)), None

    total, _ = jax.lax.scan(body, _vma.match_varying(jnp.zeros((), _F32), x, y)[0], (blocks, valid))
    return total


def softplus_backward(x, y, scale, bias, cotangent, block_size: int):
    """Gradients `(dx, dy, dscale, dbias)` of `cotangent · Σ softplus(L)`, f32."""
    dtype = jnp.promote_types(x.dtype, y.dtype)
    blocks, valid = _row_blocks(x, block_size)

    def body(carry, inputs):
        dy, dscale, dbias = carry
        x_block, row_valid = inputs
        sim = similarity(x_block, y)
        grad_logits = cotangent * jax.nn.sigmoid(scale * sim + bias)
        grad_logits = jnp.where(row_valid[:, None], grad_logits, 0.0)
        dx_block = scale * _matmul(grad_logits, y, dtype)
        dy = dy + scale * _matmul(grad_logits.T, x_block, dtype)
        return (dy, dscale + jnp.sum(grad_logits * sim), dbias + jnp.sum(grad_logits)), dx_block

    init = (jnp.zeros(y.shape, _F32), jnp.zeros((), _F32), jnp.zeros((), _F32))
    init = _vma.match_varying(*init, x, y)[:3]
    (dy, dscale, dbias), dx = jax.lax.scan(body, init, (blocks, valid))
    return dx.reshape(-1, x.shape[1])[: x.shape[0]], dy, dscale, dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _softplus_blockwise(x, y, scale, bias, block_size):
    return softplus_forward(x, y, scale, bias, block_size)


def _softplus_blockwise_fwd(x, y, scale, bias, block_size):
    return softplus_forward(x, y, scale, bias, block_size), (x, y, scale, bias)


def _softplus_blockwise_bwd(block_size, residuals, cotangent):
    x, y, scale, bias = residuals
    dx, dy, dscale, dbias = softplus_backward(x, y, scale, bias, cotangent, block_size)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_softplus_blockwise.defvjp(_softplus_blockwise_fwd, _softplus_blockwise_bwd)
