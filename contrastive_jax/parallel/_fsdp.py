"""Where parameters and optimizer state live on a `(data, fsdp)` mesh: one rule table.

Fully sharded data parallelism on JAX's own sharding engine: every large array is split along
one of its dimensions over the `fsdp` mesh axis and `jax.jit` (GSPMD) inserts the all-gathers
before use and the reduce-scatters of the gradients. Small arrays (norm scales, biases, the
logit scale) stay replicated: splitting them saves nothing and costs a collective each.

The rule is a function of an array's path and shape only, so an optimizer's moments (same
shapes as the parameters) get the parameters' layout without knowing the optimizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# (regular expression on the "/"-joined path of a leaf, rule); the first match wins.
#   "fsdp":      split along the largest dimension the fsdp axis size divides (replicate if none)
#   "replicate": a full copy on every device
# Paths of optimizer state leaves carry the optimizer's prefix (e.g. "0/mu/vision/..."), so
# the patterns search anywhere in the path.
SHARDING_RULES: tuple[tuple[str, str], ...] = (
    (r"logit_(scale|bias)", "replicate"),
    (r".*", "fsdp"),
)

# Arrays with fewer elements than this stay replicated (LayerNorm scales, biases, counters).
MIN_SHARDED_SIZE = 2**14


def fsdp_spec(
    shape: Sequence[int], fsdp_size: int, *, axis: str = "fsdp", min_size: int = MIN_SHARDED_SIZE
) -> P:
    """The partition spec of one array: its largest dimension divisible by `fsdp_size` over `axis`.

    Ties go to the later dimension (the output features of a kernel, contiguous in memory).
    Arrays smaller than `min_size` elements, or with no divisible dimension, are replicated.
    """
    shape = tuple(int(s) for s in shape)
    if fsdp_size <= 1 or not shape or int(np.prod(shape)) < min_size:
        return P()
    candidates = [i for i, size in enumerate(shape) if size % fsdp_size == 0]
    if not candidates:
        return P()
    dim = max(candidates, key=lambda i: (shape[i], i))
    return P(*([None] * dim + [axis]))


def _path_string(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def fsdp_specs(
    tree, fsdp_size: int, *, axis: str = "fsdp", rules=SHARDING_RULES, min_size: int = MIN_SHARDED_SIZE
):
    """A pytree of `PartitionSpec`s for `tree` (arrays or `jax.ShapeDtypeStruct`s) by `rules`."""

    def spec(path, leaf):
        name = _path_string(path)
        for pattern, rule in rules:
            if re.search(pattern, name):
                if rule == "replicate":
                    return P()
                if rule == "fsdp":
                    return fsdp_spec(np.shape(leaf), fsdp_size, axis=axis, min_size=min_size)
                raise ValueError(f"unknown sharding rule {rule!r} for {pattern!r}: use 'fsdp' or 'replicate'")
        return P()

    return jax.tree_util.tree_map_with_path(spec, tree)


def fsdp_shardings(
    tree, mesh: Mesh, *, axis: str = "fsdp", rules=SHARDING_RULES, min_size: int = MIN_SHARDED_SIZE
):
    """`NamedSharding`s on `mesh` for every leaf of `tree`: sharded over `axis` by `rules`.

    With no `axis` in the mesh (or an axis of size 1) every leaf is replicated, which is plain
    data parallelism.
    """
    size = mesh.shape.get(axis, 1) if hasattr(mesh.shape, "get") else dict(mesh.shape).get(axis, 1)
    specs = fsdp_specs(tree, size, axis=axis, rules=rules, min_size=min_size)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P))


def bytes_per_device(tree) -> int:
    """Bytes one device holds of `tree`'s arrays (each leaf's largest shard)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = (
            leaf.sharding.shard_shape(leaf.shape)
            if getattr(leaf, "sharding", None) is not None
            else leaf.shape
        )
        total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
    return total
