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

Each visit reduces `x_local` against the visiting block with the raw passes of a `tiled.Tiling`
— dense, blockwise or Pallas, as `tiled.resolve_tiling` resolved the loss's `block_size` /
`impl` — the same adapters as the single-device path. SigLIP's positive pairs are found from the
visiting block's owner (hop `k` brings device `me − k`'s block), so they keep their label sign
inside the block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive_jax import _vma
from contrastive_jax.parallel._plan import axis_size
from contrastive_jax.tiled import Tiling

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


def _ring_lse_fwd_impl(x, y, scale, axes, tiling):
    def step(row_lse, travel):
        y_block, col_lse = travel
        row_part, col_part = tiling.lse_forward(x, y_block, scale)
        return jnp.logaddexp(row_lse, row_part), (y_block, jnp.logaddexp(col_lse, col_part))

    empty_rows = jnp.full((x.shape[0],), -jnp.inf, _F32)
    empty_cols = jnp.full((y.shape[0],), -jnp.inf, _F32)
    empty_rows, empty_cols = _vma.match_varying(empty_rows, empty_cols, x, y)[:2]
    row_lse, col_lse = _hops(step, empty_rows, (y, empty_cols), lambda t: t[1], axes)
    return row_lse, col_lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def ring_lse(x, y, scale, axes, tiling: Tiling):
    """Row LSE of local `x` against all devices' `y`, and column LSE of local `y` against all `x`.

    `(row_lse: f32[b], col_lse: f32[b])` for `L = scale · X_global Y_globalᵀ`, restricted to this
    device's rows and columns. `scale` must already vary along `axes` (see `_vma`). `tiling` (a
    `tiled.Tiling`) says how each visiting block is reduced (dense, blockwise, Pallas).
    """
    return _ring_lse_fwd_impl(x, y, scale, axes, tiling)


def _ring_lse_fwd(x, y, scale, axes, tiling):
    row_lse, col_lse = _ring_lse_fwd_impl(x, y, scale, axes, tiling)
    return (row_lse, col_lse), (x, y, scale, row_lse, col_lse)


def _ring_lse_bwd(axes, tiling, residuals, cotangents):
    x, y, scale, row_lse, col_lse = residuals
    d_row, d_col = cotangents

    def step(carry, travel):
        dx, dscale = carry
        y_block, col_block, d_col_block, dy_block = travel
        dx_part, dy_part, dscale_part = tiling.lse_backward(
            x, y_block, scale, row_lse, col_block, d_row, d_col_block
        )
        return (dx + dx_part, dscale + dscale_part), (y_block, col_block, d_col_block, dy_block + dy_part)

    zeros = _vma.match_varying(jnp.zeros(x.shape, _F32), jnp.zeros((), _F32), jnp.zeros(y.shape, _F32), x)
    (dx, dscale), dy = _hops(step, zeros[:2], (y, col_lse, d_col, zeros[2]), lambda t: t[3], axes)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype)


ring_lse.defvjp(_ring_lse_fwd, _ring_lse_bwd)


def _positive_offset(hop, axes, b: int, positives: bool):
    """Offset of the positive pairs in the block visiting after `hop` hops (none: `b`, out of range).

    The block then belongs to device `k = me − hop (mod N)`; local row `i` (global `me·b + i`) is
    paired with its column `j` (global `k·b + j`) when `j = i + (me − k)·b`.
    """
    if not positives:
        return jnp.int32(b)
    me = jax.lax.axis_index(axes)
    owner = (me - hop) % axis_size(axes)
    return ((me - owner) * b).astype(jnp.int32)


def _ring_softplus_impl(x, y, scale, bias, axes, tiling, positives):
    def step(carry, y_block):
        total, hop = carry
        offset = _positive_offset(hop, axes, y.shape[0], positives)
        total = total + tiling.softplus_forward(x, y_block, scale, bias, offset)
        return (total, hop + 1), y_block

    zero = _vma.match_varying(jnp.zeros((), _F32), x)[0]
    (total, _), _ = _hops(step, (zero, jnp.int32(0)), y, lambda t: (), axes)
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def ring_softplus_sum(x, y, scale, bias, axes, tiling: Tiling, positives: bool = False):
    """`Σ_{i local, j global} softplus(−z_ij · (scale · x_i·y_j + bias))`, all devices' `y` visiting.

    `z_ij = +1` for the global positive pairs (row `i` with its own column) when `positives`, else
    every pair is a negative (`z = −1`).
    """
    return _ring_softplus_impl(x, y, scale, bias, axes, tiling, positives)


def _ring_softplus_fwd(x, y, scale, bias, axes, tiling, positives):
    return _ring_softplus_impl(x, y, scale, bias, axes, tiling, positives), (x, y, scale, bias)


def _ring_softplus_bwd(axes, tiling, positives, residuals, cotangent):
    x, y, scale, bias = residuals

    def step(carry, travel):
        dx, dscale, dbias, hop = carry
        y_block, dy_block = travel
        offset = _positive_offset(hop, axes, y.shape[0], positives)
        dx_part, dy_part, dscale_part, dbias_part = tiling.softplus_backward(
            x, y_block, scale, bias, offset, cotangent
        )
        carry = (dx + dx_part, dscale + dscale_part, dbias + dbias_part, hop + 1)
        return carry, (y_block, dy_block + dy_part)

    zeros = _vma.match_varying(
        jnp.zeros(x.shape, _F32), jnp.zeros((), _F32), jnp.zeros((), _F32), jnp.zeros(y.shape, _F32), x
    )
    (dx, dscale, dbias, _), dy = _hops(step, (*zeros[:3], jnp.int32(0)), (y, zeros[3]), lambda t: t[1], axes)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


ring_softplus_sum.defvjp(_ring_softplus_fwd, _ring_softplus_bwd)


def ring_fold(step, carry, block, axes):
    """Folds `step` over every device's `block`, passing blocks around the ring (forward only).

    `step(carry, block, owner) -> carry` is called N times on each device, with `owner` the
    index (along `axes`) of the device the visiting `block` came from; the first call sees the
    local block. Meant for statistics that need no gradient (e.g. iSogCLR's row maxima): were
    it differentiated, autodiff would keep every visiting block's intermediates, O(N·b) per
    device. For a differentiable sum over the blocks use `ring_sum`.
    """
    n = axis_size(axes)
    me = jax.lax.axis_index(axes)

    def body(state, k):
        carry, block = state
        carry = step(carry, block, (me - k) % n)
        return (carry, _shift(block, axes)), None

    (carry, block), _ = jax.lax.scan(body, (carry, block), jnp.arange(n - 1))
    return step(carry, block, (me - (n - 1)) % n)


def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _ring_sum_impl(term, operands, block, axes):
    n = axis_size(axes)
    me = jax.lax.axis_index(axes)

    def body(state, k):
        total, block = state
        block = _shift(block, axes)  # after k shifts this device holds device (me − k)'s block
        return (_add(total, term(operands, block, (me - k) % n)), block), None

    (total, _), _ = jax.lax.scan(body, (term(operands, block, me), block), jnp.arange(1, n))
    return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def ring_sum(term, operands, block, axes):
    """`Σ_k term(operands, block_k, k)` over every device k's `block`; memory of one term per device.

    `term(operands, block, owner) -> pytree` must be a function of its arguments only (no
    closed-over arrays: pass them in `operands`); `owner` is the index along `axes` of the
    device the visiting block belongs to. The result is this device's sum, a pytree like
    `term`'s output.

    Custom VJP, like `ring_lse`: the forward pass keeps only `operands` and the local `block`;
    the backward pass rings the blocks again, recomputing each term's VJP, and each block
    travels with its gradient accumulator (float32), which one last hop brings home. Memory per
    device is that of one term, whatever the number of devices. Traffic per device: (N−1) blocks
    forward; backward (N−1) blocks with their float32 accumulators, then one accumulator home.
    """
    return _ring_sum_impl(term, operands, block, axes)


def _ring_sum_fwd(term, operands, block, axes):
    return _ring_sum_impl(term, operands, block, axes), (operands, block)


def _wide(tree):
    """Float leaves in float32: accumulators over the N blocks add no bf16 rounding of their own."""
    return jax.tree.map(lambda a: a.astype(_F32) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _like(tree, primals):
    return jax.tree.map(lambda a, p: a.astype(p.dtype), tree, primals)


def _ring_sum_bwd(term, axes, residuals, cotangent):
    operands, block = residuals
    n = axis_size(axes)
    me = jax.lax.axis_index(axes)

    def term_grads(block, owner):
        _, vjp = jax.vjp(lambda ops, blk: term(ops, blk, owner), operands, block)
        return _wide(vjp(cotangent))

    def body(state, k):
        d_operands, block, d_block = state
        block, d_block = _shift((block, d_block), axes)
        d_operands_k, d_block_k = term_grads(block, (me - k) % n)
        return (_add(d_operands, d_operands_k), block, _add(d_block, d_block_k)), None

    d_operands, d_block = term_grads(block, me)
    (d_operands, _, d_block), _ = jax.lax.scan(body, (d_operands, block, d_block), jnp.arange(1, n))
    # Device me now holds the accumulator of device (me + 1)'s block: one hop takes it home.
    return _like(d_operands, operands), _like(_shift(d_block, axes), block)


ring_sum.defvjp(_ring_sum_fwd, _ring_sum_bwd)
