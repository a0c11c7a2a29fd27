"""Casts for shard_map's varying-manual-axes (vma) type system.

Inside `jax.shard_map(..., check_vma=True)` every value carries the set of mesh axes along
which it varies. A `custom_vjp` must return cotangents of exactly its inputs' types, and a scan
carry must keep one type, so a replicated `logit_scale` that meets device-varying embeddings has
to be cast to "varying" before it enters one: the cast's transpose is then the `psum` that sums
the per-device contributions to its gradient.

Only public JAX is used: the set is `jax.typeof(x).manual_axis_type.varying`, as documented in
JAX's "Manual parallelism with shard_map" guide for jax 0.10 and 0.11 (it replaced the older
`jax.typeof(x).vma`), and the cast is `jax.lax.pcast(x, axes, to="varying")`, which rejects axes
the value already varies along (hence the filtering below).
"""

from __future__ import annotations

import jax


def varying_axes(x) -> frozenset:
    """The mesh axes along which `x` varies (empty outside shard_map or with check_vma=False)."""
    return frozenset(jax.typeof(x).manual_axis_type.varying)


def to_varying(x, axes) -> jax.Array:
    """Casts `x` to vary along every axis of `axes` it does not vary along yet."""
    missing = tuple(sorted(frozenset(axes) - varying_axes(x)))
    if not missing:
        return x
    return jax.lax.pcast(x, missing, to="varying")


def match_varying(*xs):
    """Casts all arguments to vary along the union of their varying axes."""
    axes = frozenset().union(*(varying_axes(x) for x in xs))
    return tuple(to_varying(x, axes) for x in xs)
