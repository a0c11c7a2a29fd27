"""Pairwise reductions of the logit matrix `L = scale · x yᵀ (+ bias)`, dense and blockwise.

Two reductions cover the contrastive losses that need the full matrix:

* row and column log-sum-exps (CLIP / InfoNCE in both directions),
* `Σ_ij softplus(−z_ij · (L_ij + b))` with labels `z_ij = +1` on the positive pairs
  `j = i + offset` and `−1` elsewhere (SigLIP's binary classification of every pair).

Each comes as raw `*_forward` / `*_backward` functions (no autodiff) in two forms: dense (the
whole matrix at once) and blockwise (a `lax.scan` over row blocks, O(block·m + (n+m)·D)
memory). `tiled.Tiling` (`_dispatch.py`) runs them, wrapped in custom VJPs for `tiled`'s entry
points and raw for `parallel/`'s ring on the block visiting the device ("tiles inside, ring
across devices").

The blockwise forward scans row blocks: each block's row LSE is exact (the block holds full
rows) and the column LSE is kept as a running (max, sum) pair merged across blocks. The
backward pass recomputes each block's logits rather than storing them: the derivative of a
log-sum-exp is the softmax, so with `P = exp(L − r)` (rows sum to 1), `Q = exp(L − c)` (columns
sum to 1) and cotangents `(dr, dc)` of the two outputs, `∂/∂L_ij = dr_i P_ij + dc_j Q_ij`, and
`dx = scale·G y`, `dy = scale·Gᵀx`, `dscale = Σ G∘(x yᵀ)` for `G = ∂/∂L` — the recomputation of
FlashAttention's backward pass (Dao et al., 2022) applied to both softmax directions, as in Inf-CL
(Cheng et al., 2024).

The positive pairs of the sigmoid reduction take their own sign inside each block (as
big_vision's chunked sigmoid loss does): `softplus(−L_ii)` and its gradient `−σ(−L_ii)` stay
exact for a confident pair, where `softplus(L_ii) − L_ii` would cancel catastrophically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _vma

Array = jax.Array
_F32 = jnp.float32
PRECISIONS = ("float32", "tf32")


def dot_precision(dtype, precision: str = "float32"):
    """The `lax` precision for float32 operands: full float32 unless TF32 is asked for.

    bf16/fp16 operands always multiply in their own dtype with float32 accumulation.
    """
    if jnp.dtype(dtype) == jnp.float32 and precision == "float32":
        return jax.lax.Precision.HIGHEST
    return jax.lax.Precision.DEFAULT


def similarity(x: Array, y: Array, precision: str = "float32") -> Array:
    """`x yᵀ` accumulated in float32; bf16 operands stay bf16 on the matrix unit.

    Float32 operands multiply in full float32 (`Precision.HIGHEST`) unless `precision="tf32"`.
    """
    dtype = jnp.promote_types(x.dtype, y.dtype)
    return jax.lax.dot_general(
        x.astype(dtype),
        y.astype(dtype),
        (((1,), (1,)), ((), ())),
        precision=dot_precision(dtype, precision),
        preferred_element_type=_F32,
    )


def _matmul(a: Array, b: Array, dtype, precision: str) -> Array:
    """`a @ b` with operands in `dtype` (the embeddings' dtype) and float32 accumulation."""
    return jnp.matmul(
        a.astype(dtype),
        b.astype(dtype),
        precision=dot_precision(dtype, precision),
        preferred_element_type=_F32,
    )


def _row_blocks(x: Array, block_size: int):
    """Splits rows into `[num_blocks, block_size, D]` (zero-padded), the validity mask and row ids."""
    n = x.shape[0]
    num_blocks = -(-n // block_size)
    padded = num_blocks * block_size
    blocks = jnp.pad(x, ((0, padded - n), (0, 0))).reshape(num_blocks, block_size, x.shape[1])
    rows = jnp.arange(padded).reshape(num_blocks, block_size)
    return blocks, rows < n, rows


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


def label_signs(rows: Array, num_cols: int, offset) -> Array:
    """`f32[len(rows), num_cols]`: −1 where column `j = row + offset` (a positive pair), else +1.

    The sigmoid term of a pair is `softplus(sign · L)`: `softplus(L) = −log σ(−L)` for a negative,
    `softplus(−L) = −log σ(L)` for a positive.
    """
    positive = jnp.arange(num_cols)[None, :] - rows[:, None] == offset
    return jnp.where(positive, -1.0, 1.0).astype(_F32)


# ----------------------------------------------------------------------------------------------
# Dense: the whole matrix at once (the ring's `block_size=None` and the dense adapter).


def lse_forward_dense(x, y, scale, precision="float32"):
    logits = scale * similarity(x, y, precision)
    return jax.nn.logsumexp(logits, axis=1), jax.nn.logsumexp(logits, axis=0)


def lse_backward_dense(x, y, scale, row_lse, col_lse, d_row, d_col, precision="float32"):
    dtype = jnp.promote_types(x.dtype, y.dtype)
    sim = similarity(x, y, precision)
    logits = scale * sim
    grad = d_row[:, None] * jnp.exp(logits - row_lse[:, None]) + d_col[None, :] * jnp.exp(logits - col_lse)
    return (
        scale * _matmul(grad, y, dtype, precision),
        scale * _matmul(grad.T, x, dtype, precision),
        jnp.sum(grad * sim),
    )


def softplus_forward_dense(x, y, scale, bias, offset, precision="float32"):
    signs = label_signs(jnp.arange(x.shape[0]), y.shape[0], offset)
    return jnp.sum(jax.nn.softplus(signs * (scale * similarity(x, y, precision) + bias)))


def softplus_backward_dense(x, y, scale, bias, offset, cotangent, precision="float32"):
    dtype = jnp.promote_types(x.dtype, y.dtype)
    sim = similarity(x, y, precision)
    signs = label_signs(jnp.arange(x.shape[0]), y.shape[0], offset)
    grad = cotangent * signs * jax.nn.sigmoid(signs * (scale * sim + bias))
    return (
        scale * _matmul(grad, y, dtype, precision),
        scale * _matmul(grad.T, x, dtype, precision),
        jnp.sum(grad * sim),
        jnp.sum(grad),
    )


# ----------------------------------------------------------------------------------------------
# Blockwise row / column log-sum-exp.


def lse_forward(x: Array, y: Array, scale: Array, block_size: int, precision: str = "float32"):
    """Row and column LSE of `scale · x yᵀ`, one row block at a time (no autodiff)."""
    m = y.shape[0]
    blocks, valid, _ = _row_blocks(x, block_size)

    def body(carry, inputs):
        col_max, col_sum = carry
        x_block, row_valid = inputs
        logits = jnp.where(row_valid[:, None], scale * similarity(x_block, y, precision), -jnp.inf)
        col_max, col_sum = _merge_lse(col_max, col_sum, logits)
        return (col_max, col_sum), jax.nn.logsumexp(logits, axis=1)

    init = (jnp.full((m,), -jnp.inf, _F32), jnp.zeros((m,), _F32))
    init = _vma.match_varying(*init, x, y)[:2]
    (col_max, col_sum), row_lse = jax.lax.scan(body, init, (blocks, valid))
    return row_lse.reshape(-1)[: x.shape[0]], col_max + jnp.log(col_sum)


def lse_backward(x, y, scale, row_lse, col_lse, d_row, d_col, block_size: int, precision: str = "float32"):
    """Gradients `(dx, dy, dscale)` of `Σ d_row·row_lse + Σ d_col·col_lse`, f32, recomputing blocks."""
    dtype = jnp.promote_types(x.dtype, y.dtype)
    blocks, valid, _ = _row_blocks(x, block_size)
    row_lse_blocks = _pad_rows(row_lse, block_size, 0.0)
    d_row_blocks = _pad_rows(d_row, block_size, 0.0)

    def body(carry, inputs):
        dy, dscale = carry
        x_block, row_valid, r_block, dr_block = inputs
        sim = similarity(x_block, y, precision)
        logits = scale * sim
        grad_logits = dr_block[:, None] * jnp.exp(logits - r_block[:, None]) + d_col[None, :] * jnp.exp(
            logits - col_lse[None, :]
        )
        grad_logits = jnp.where(row_valid[:, None], grad_logits, 0.0)
        dx_block = scale * _matmul(grad_logits, y, dtype, precision)
        dy = dy + scale * _matmul(grad_logits.T, x_block, dtype, precision)
        dscale = dscale + jnp.sum(grad_logits * sim)
        return (dy, dscale), dx_block

    init = (jnp.zeros(y.shape, _F32), jnp.zeros((), _F32))
    init = _vma.match_varying(*init, x, y)[:2]
    (dy, dscale), dx = jax.lax.scan(body, init, (blocks, valid, row_lse_blocks, d_row_blocks))
    return dx.reshape(-1, x.shape[1])[: x.shape[0]], dy, dscale


# ----------------------------------------------------------------------------------------------
# Blockwise Σ softplus(sign · (L + b)) over all pairs.


def softplus_forward(x, y, scale, bias, offset, block_size: int, precision: str = "float32") -> Array:
    """`Σ_ij softplus(sign_ij · (scale · x_i·y_j + bias))`, one row block at a time (no autodiff)."""
    blocks, valid, rows = _row_blocks(x, block_size)
    m = y.shape[0]

    def body(total, inputs):
        x_block, row_valid, row_ids = inputs
        signs = label_signs(row_ids, m, offset)
        terms = jax.nn.softplus(signs * (scale * similarity(x_block, y, precision) + bias))
        return total + jnp.sum(jnp.where(row_valid[:, None], terms, 0.0)), None

    zero = _vma.match_varying(jnp.zeros((), _F32), x, y)[0]
    total, _ = jax.lax.scan(body, zero, (blocks, valid, rows))
    return total


def softplus_backward(x, y, scale, bias, offset, cotangent, block_size: int, precision: str = "float32"):
    """Gradients `(dx, dy, dscale, dbias)` of `cotangent · Σ softplus(sign · (L + b))`, f32."""
    dtype = jnp.promote_types(x.dtype, y.dtype)
    blocks, valid, rows = _row_blocks(x, block_size)
    m = y.shape[0]

    def body(carry, inputs):
        dy, dscale, dbias = carry
        x_block, row_valid, row_ids = inputs
        sim = similarity(x_block, y, precision)
        signs = label_signs(row_ids, m, offset)
        grad_logits = cotangent * signs * jax.nn.sigmoid(signs * (scale * sim + bias))
        grad_logits = jnp.where(row_valid[:, None], grad_logits, 0.0)
        dx_block = scale * _matmul(grad_logits, y, dtype, precision)
        dy = dy + scale * _matmul(grad_logits.T, x_block, dtype, precision)
        return (dy, dscale + jnp.sum(grad_logits * sim), dbias + jnp.sum(grad_logits)), dx_block

    init = (jnp.zeros(y.shape, _F32), jnp.zeros((), _F32), jnp.zeros((), _F32))
    init = _vma.match_varying(*init, x, y)[:3]
    (dy, dscale, dbias), dx = jax.lax.scan(body, init, (blocks, valid, rows))
    return dx.reshape(-1, x.shape[1])[: x.shape[0]], dy, dscale, dbias
