"""Ring exchange: neighbour blocks travel around the devices with `ppermute`.

A device never holds more than its own rows plus one visiting block, so peak memory is
O(local_batch · D) whatever the number of devices. Forward and backward are written as
`custom_vjp`s that ring explicitly (autodiff through a scan of `ppermute`s would keep every
visiting block as a residual, i.e. the global batch):

* forward: the column block `y_k` (with its running column LSE or nothing, for SigLIP) visits
  each device in turn; each device folds `x_local · y_kᵀ` into its row statistics and into
  the visiting block's column statistics. After N hops the block is home with its complete
  column statistics.
* backward: the block travels again with its gradient accumulator `dy_k`; each device adds
  its rows' contribution, and after N hops `dy_k` is home. The last hop carries only the
  per-block results (no embeddings).

Per device and step one `[b, D]` block (plus `[b]` statistics) is sent: (N−1)·b·D values in
the forward pass, about twice that in the backward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive_jax import _vma
from contrastive_jax.parallel._plan import axis_size
from contrastive_jax.tiled import _blockwise

_F32 = jnp.float32


def _shift(tree, axes):
    """Sends `tree` from each device to the next one along `axes` (a ring)."""
    n = axis_size(axes)
    return jax.lax.ppermute(tree, axes, [(i, (i + 1) % n) for i in range(n)])


def _hops(step, carry, travel, travel_home, axes):
    """Runs `step` on every device's block: N−1 full hops, then only `travel_home` goes home.

    `step(carry, travel) -> (carry, travel)`; `travel_home(travel)` selects the part of the
    travelling state that must return to the block's owner after the last visit.
    """
    n = axis_size(axes)

    def body(state, _):
        carry, travel = step(*state)
        return (carry, _shift(travel, axes)), None

    (carry, travel), _ = jax.lax.scan(body, (carry, travel), None, length=n - 1)
    carry, travel = step(carry, travel)
    return carry, _shift(travel_home(travel), axes)


def _use_fused(x, y, block_size) -> bool:
    """Tiles inside the ring: the fused GPU kernel when `block_size` is set and it can run."""
    from contrastive_jax.tiled import fused_available

    return block_size is not None and fused_available(x, y)


def _lse_values(x, y, scale, block_size):
    if block_size is None:
        logits = scale * _blockwise.similarity(x, y)
        return jax.nn.logsumexp(logits, axis=1), jax.nn.logsumexp(logits, axis=0)
    if _use_fused(x, y, block_size):
        from contrastive_jax.tiled import _fused

        return _fused.lse_forward_fused(x, y, scale)
    return _blockwise.lse_forward(x, y, scale, min(block_size, x.shape[0]))


def _lse_grads(x, y, scale, row_lse, col_lse, d_row, d_col, block_size):
    if _use_fused(x, y, block_size):
        from contrastive_jax.tiled import _fused

        return _fused.lse_backward_fused(x, y, scale, row_lse, col_lse, d_row, d_col)
    return _blockwise.lse_backward(
        x, y, scale, row_lse, col_lse, d_row, d_col, x.shape[0] if block_size is None else block_size
    )


def _ring_lse_fwd_impl(x, y, scale, axes, block_size):
    def step(row_lse, travel):
        y_block, col_lse = travel
        row_part, col_part = _lse_values(x, y_block, scale, block_size)
        return jnp.logaddexp(row_lse, row_part), (y_block, jnp.logaddexp(col_lse, col_part))

    empty_rows = jnp.full((x.shape[0],), -jnp.inf, _F32)
    empty_cols = jnp.full((y.shape[0],), -jnp.inf, _F32)
    empty_rows, empty_cols = _vma.match_varying(empty_rows, empty_cols, x, y)[:2]
    row_lse, col_lse = _hops(step, empty_rows, (y, empty_cols), lambda t: t[1], axes)
    return row_lse, col_lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def ring_lse(x, y, scale, axes, block_size):
    """Row LSE of local `x` against all devices' `y`, and column LSE of local `y` against all `x`.

    `(row_lse: f32[b], col_lse: f32[b])` for `L = scale · X_global Y_globalᵀ`, restricted to this
    device's rows and columns. `scale` must already vary along `axes` (see `_vma`).
    """
    return _ring_lse_fwd_impl(x, y, scale, axes, block_size)


def _ring_lse_fwd(x, y, scale, axes, block_size):
    row_lse, col_lse = _ring_lse_fwd_impl(x, y, scale, axes, block_size)
    return (row_lse, col_lse), (x, y, scale, row_lse, col_lse)


def _ring_lse_bwd(axes, block_size, residuals, cotangents):
    x, y, scale, row_lse, col_lse = residuals
    d_row, d_col = cotangents

    def step(carry, travel):
        dx, dscale = carry
        y_block, col_block, d_col_block, dy_block = travel
        dx_part, dy_part, dscale_part = _lse_grads(
            x, y_block, scale, row_lse, col_block, d_row, d_col_block, block_size
        )
        return (dx + dx_part, dscale + dscale_part), (y_block, col_block, d_col_block, dy_block + dy_part)

    zeros = _vma.match_varying(jnp.zeros(x.shape, _F32), jnp.zeros((), _F32), jnp.zeros(y.shape, _F32), x)
    (dx, dscale), dy = _hops(step, zeros[:2], (y, col_lse, d_col, zeros[2]), lambda t: t[3], axes)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype)


ring_lse.defvjp(_ring_lse_fwd, _ring_lse_bwd)


def _softplus_values(x, y, scale, bias, block_size):
    if block_size is None:
        return jnp.sum(jax.nn.softplus(scale * _blockwise.similarity(x, y) + bias))
    if _use_fused(x, y, block_size):
        from contrastive_jax.tiled import _fused

        return _fused.softplus_forward_fused(x, y, scale, bias)
    return _blockwise.softplus_forward(x, y, scale, bias, min(block_size, x.shape[0]))


def _softplus_grads(x, y, scale, bias, cotangent, block_size):
    if _use_fused(x, y, block_size):
        from contrastive_jax.tiled import _fused

        return _fused.softplus_backward_fused(x, y, scale, bias, cotangent)
    return _blockwise.softplus_backward(
        x, y, scale, bias, cotangent, x.shape[0] if block_size is None else block_size
    )


def _ring_softplus_impl(x, y, scale, bias, axes, block_size):
    def step(total, y_block):
        return total + _softplus_values(x, y_block, scale, bias, block_size), y_block

    zero = _vma.match_varying(jnp.zeros((), _F32), x)[0]
    total, _ = _hops(step, zero, y, lambda t: (), axes)
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def ring_softplus_sum(x, y, scale, bias, axes, block_size):
    """`Σ_{i local, j global} softplus(scale · x_i·y_j + bias)`, with all devices' `y` visiting."""
    return _ring_softplus_impl(x, y, scale, bias, axes, block_size)


def _ring_softplus_fwd(x, y, scale, bias, axes, block_size):
    return _ring_softplus_impl(x, y, scale, bias, axes, block_size), (x, y, scale, bias)


def _ring_softplus_bwd(axes, block_size, residuals, cotangent):
    x, y, scale, bias = residuals

    def step(carry, travel):
        dx, dscale, dbias = carry
        y_block, dy_block = travel
        dx_part, dy_part, dscale_part, dbias_part = _softplus_grads(
            x, y_block, scale, bias, cotangent, block_size
        )
        return (dx + dx_part, dscale + dscale_part, dbias + dbias_part), (y_block, dy_block + dy_part)

    zeros = _vma.match_varying(
        jnp.zeros(x.shape, _F32), jnp.zeros((), _F32), jnp.zeros((), _F32), jnp.zeros(y.shape, _F32), x
    )
    (dx, dscale, dbias), dy = _hops(step, zeros[:3], (y, zeros[3]), lambda t: t[1], axes)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


ring_softplus_sum.defvjp(_ring_softplus_fwd, _ring_softplus_bwd)


def ring_fold(step, carry, block, axes):
    """Folds `step` over every device's `block`, passing blocks around the ring (autodiff-able).

    `step(carry, block, owner) -> carry` is called N times on each device, with `owner` the
    index (along `axes`) of the device the visiting `block` came from; the first call sees the
    local block. Gradients flow through the `ppermute`s, so each visiting block is kept as a
    residual for the backward pass: use it for light losses (e.g. two-pass iSogCLR), and the
    custom-VJP rings above for the matrix-heavy ones.
    """
    n = axis_size(axes)
    me = jax.lax.axis_index(axes)

    def body(state, k):
        carry, block = state
        carry = step(carry, block, (me - k) % n)
        return (carry, _shift(block, axes)), None

    (carry, block), _ = jax.lax.scan(body, (carry, block), jnp.arange(n - 1))
    return step(carry, block, (me - (n - 1)) % n)
