"""Compatibility shims for shard_map's varying-manual-axes (vma) type system.

Inside `jax.shard_map(..., check_vma=True)` every value carries the set of mesh axes along
which it varies. A `custom_vjp` must return cotangents of exactly its inputs' types, so a
replicated `logit_scale` that meets device-varying embeddings has to be cast to "varying"
before it enters one: the cast's transpose is then the `psum` that sums the per-device
contributions to its gradient. The attribute holding that set moved between jax releases
(`aval.vma` → `aval.manual_axis_type.varying`), hence this module.
"""

from __future__ import annotations

import jax


def varying_axes(x) -> frozenset:
    """The mesh axes along which `x` varies (empty outside shard_map or with check_vma=False)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", ()))


def to_varying(x, axes) -> jax.Array:
    """Casts `x` to vary along every axis of `axes` it does not vary along yet."""
    missing = tuple(sorted(frozenset(axes) - varying_axes(x)))
    if not missing:
        return x
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, missing, to="varying")
    return jax.lax.pvary(x, missing)


def match_varying(*xs):
    """Casts all arguments to vary along the union of their varying axes."""
    axes = frozenset().union(*(varying_axes(x) for x in xs))
    return tuple(to_varying(x, axes) for x in xs)
