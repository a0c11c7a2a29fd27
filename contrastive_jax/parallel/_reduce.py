"""The reductions losses need, computed over the negatives a `Negatives` plan names.

Each function sees this device's rows and returns this device's share; the loss then calls
`plan.mean` once. All of them are exact under autodiff: the transpose of `all_gather` is a
reduce-scatter that returns every gradient to the device owning the row, and the ring's
custom VJP routes gradients around the ring (see `_ring.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _vma
from contrastive_jax.parallel import _ring
from contrastive_jax.parallel._plan import Negatives
from contrastive_jax.tiled import pairwise_lse, pairwise_softplus_sum, resolve_tiling


def gather_negatives(x: jax.Array, plan: Negatives) -> tuple[jax.Array, jax.Array]:
    """All rows of `x` in this device's negative set, and the offset of the local rows in it.

    Returns:
      `(x_all: [N·b, ...], offset: int32[])` where `x_all[offset : offset + b] == x`. For a local
      plan, `(x, 0)`. The gather is differentiable (its transpose is a reduce-scatter).
    """
    if not plan.gather_axes:
        return x, jnp.zeros((), jnp.int32)
    x_all = jax.lax.all_gather(x, plan.gather_axes, axis=0, tiled=True)
    return x_all, (plan.device_index() * x.shape[0]).astype(jnp.int32)


def negatives_mean(x: jax.Array, plan: Negatives) -> jax.Array:
    """Mean over the negative set of the rows of `x` (`[b, D] -> [D]`), by a psum of local sums."""
    if not plan.gather_axes:
        return jnp.mean(x, axis=0)
    return jax.lax.psum(jnp.sum(x, axis=0), plan.gather_axes) / (x.shape[0] * plan.num_devices())


def _lse_across(values: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """`log Σ_devices exp(values)` elementwise, returned as this device's slice of the vector.

    `values: f32[N·b]` holds, on every device, partial LSEs of all N·b columns over its own
    rows; the result `f32[b]` is the complete LSE of this device's own columns.
    """
    shift = jax.lax.pmax(jax.lax.stop_gradient(values), axes)
    total = jax.lax.psum_scatter(jnp.exp(values - shift), axes, scatter_dimension=0, tiled=True)
    size = total.shape[0]
    own_shift = jax.lax.dynamic_slice_in_dim(shift, jax.lax.axis_index(axes) * size, size)
    return own_shift + jnp.log(total)


def softmax_lse(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    plan: Negatives,
    *,
    block_size: int | None = None,
    impl: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """LSEs of the local rows and columns of `L = scale · x yᵀ` over the whole negative set.

    `row_lse_i = log Σ_{j ∈ negatives} exp(L_ij)` for local images `i`, and `col_lse_j` likewise
    for local texts `j` against all images of the negative set. One matrix product per device:
    the local rows against the gathered columns give the row LSEs and *partial* column LSEs,
    which an all-reduce of N·b floats completes (half the flops and traffic of gathering both
    modalities and scoring both directions). `block_size` and `impl` choose how the matrix is
    reduced on each device (see `tiled.pairwise_lse`), for the ring on each visiting block.

    Returns:
      `(row_lse: f32[b], col_lse: f32[b])`.
    """
    if plan.is_local:
        return pairwise_lse(x, y, scale, block_size=block_size, impl=impl)
    scale = _vma.to_varying(scale, plan.gather_axes)
    if plan.exchange == "ring":
        tiling = resolve_tiling(impl, block_size, "float32", x, y)
        x, y, scale = _vma.match_varying(x, y, scale)
        return _ring.ring_lse(x, y, scale, plan.gather_axes, tiling)
    y_all, _ = gather_negatives(y, plan)
    row_lse, col_partial = pairwise_lse(x, y_all, scale, block_size=block_size, impl=impl)
    return row_lse, _lse_across(col_partial, plan.gather_axes)


def softplus_sum(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    plan: Negatives,
    *,
    block_size: int | None = None,
    impl: str = "auto",
    positives: bool = False,
) -> jax.Array:
    """`Σ_{i local, j ∈ negatives} softplus(−z_ij · (scale · x_i·y_j + bias))`: this device's share of SigLIP.

    With `positives`, `z_ij = +1` when column `j` is local row `i`'s own pair in the global batch
    (its positive, handled with its label sign inside the blocks) and `−1` otherwise; without,
    every pair is a negative. The positive's column is located per exchange: `j = i` locally,
    `j = i + device_index·b` among gathered columns, and on the ring from the visiting block's
    owner.
    """
    if plan.is_local:
        offset = 0 if positives else None
        return pairwise_softplus_sum(
            x, y, scale, bias, positive_offset=offset, block_size=block_size, impl=impl
        )
    scale = _vma.to_varying(scale, plan.gather_axes)
    bias = _vma.to_varying(bias, plan.gather_axes)
    if plan.exchange == "ring":
        tiling = resolve_tiling(impl, block_size, "float32", x, y)
        x, y, scale, bias = _vma.match_varying(x, y, scale, bias)
        return _ring.ring_softplus_sum(x, y, scale, bias, plan.gather_axes, tiling, positives)
    y_all, offset = gather_negatives(y, plan)
    return pairwise_softplus_sum(
        x, y_all, scale, bias, positive_offset=offset if positives else None, block_size=block_size, impl=impl
    )
