"""Which devices' rows a loss sees as negatives, and over which axes it averages.

Every loss takes `axis_name=` and `exchange=` and turns them into a `Negatives` plan here, at
trace time. The plan is the single place that knows the mesh axes; the reductions in
`_reduce.py` and `_ring.py` only follow it.

* `axis_name=None`: one device (or a caller who wants per-device losses); no communication.
* `exchange="all_gather"`: negatives from every device of `axis_name` (a name or a tuple of
  names); loss averaged over the same axes.
* `exchange="ring"`: the same negatives, visited one neighbour block at a time with
  `ppermute`, so no device holds the global batch.
* `exchange="grouped"`: M2-Encoder's grouped aggregation; `axis_name=(group_axis,
  member_axis)`, negatives gathered over `member_axis` only, loss averaged over both.
"""

from __future__ import annotations

import dataclasses

import jax

EXCHANGES = ("all_gather", "ring", "grouped")


@dataclasses.dataclass(frozen=True)
class Negatives:
    """A resolved exchange: where negatives come from and how the loss is averaged.

    Attributes:
      exchange: "local" (no axis) or one of `EXCHANGES`.
      gather_axes: mesh axes whose devices contribute negatives (empty for "local").
      mean_axes: mesh axes over which per-device losses are averaged into the global loss.
    """

    exchange: str
    gather_axes: tuple[str, ...] = ()
    mean_axes: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        return not self.gather_axes and not self.mean_axes

    def num_devices(self) -> int:
        """Devices contributing negatives (1 for a local plan)."""
        return axis_size(self.gather_axes)

    def device_index(self):
        """This device's position among `gather_axes` (0 for a local plan)."""
        return jax.lax.axis_index(self.gather_axes) if self.gather_axes else 0

    def mean(self, value):
        """The global mean of a per-device value (identity for a local plan)."""
        return jax.lax.pmean(value, self.mean_axes) if self.mean_axes else value

    def sum(self, value):
        """The global sum of a per-device value (identity for a local plan)."""
        return jax.lax.psum(value, self.mean_axes) if self.mean_axes else value


def axis_size(axes: tuple[str, ...]) -> int:
    """Number of devices along the mesh axes `axes` (1 for no axes); call inside shard_map/pmap."""
    return jax.lax.axis_size(axes) if axes else 1


def gather_over(axes: tuple[str, ...]) -> Negatives:
    """A plan that gathers from (and averages over) every device of `axes`, whatever a loss's plan.

    For state or statistics that must be seen by every device of a plan's `mean_axes` (e.g. a
    sample-sharded state looked up across a grouped exchange's groups):
    `gather_negatives(x, gather_over(plan.mean_axes))`. No axes give a local plan.
    """
    axes = tuple(axes)
    if not axes:
        return Negatives("local")
    _check_bound(axes)
    return Negatives("all_gather", gather_axes=axes, mean_axes=axes)


def _as_axes(axis_name) -> tuple[str, ...]:
    if isinstance(axis_name, str):
        return (axis_name,)
    if isinstance(axis_name, (tuple, list)) and axis_name and all(isinstance(a, str) for a in axis_name):
        if len(set(axis_name)) != len(axis_name):
            raise ValueError(f"axis_name has repeated axes: {axis_name!r}")
        return tuple(axis_name)
    raise TypeError(f"axis_name must be None, a mesh axis name or a tuple of names, got {axis_name!r}")


def _check_bound(axes: tuple[str, ...]) -> None:
    for axis in axes:
        try:
            jax.lax.axis_size(axis)
        except NameError as err:
            raise ValueError(
                f"axis_name {axis!r} is not a mesh axis here: call the loss inside jax.shard_map over a "
                f"mesh with that axis (or inside pmap with axis_name={axis!r}), or pass axis_name=None "
                "for a single-device loss"
            ) from err


def plan_negatives(axis_name, exchange: str) -> Negatives:
    """Validates `axis_name`/`exchange` (at trace time) and returns the plan they describe.

    Raises:
      ValueError: unknown `exchange`, an axis not bound by the enclosing shard_map/pmap, or a
        "grouped" exchange whose `axis_name` is not a `(group_axis, member_axis)` pair.
      TypeError: `axis_name` of the wrong type.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}, got {exchange!r}")
    if axis_name is None:
        return Negatives("local")
    axes = _as_axes(axis_name)
    _check_bound(axes)
    if exchange == "grouped":
        if len(axes) != 2:
            raise ValueError(
                "exchange='grouped' needs axis_name=(group_axis, member_axis): negatives are gathered over "
                f"the member axis within each group; got axis_name={axis_name!r}"
            )
        return Negatives("grouped", gather_axes=(axes[1],), mean_axes=axes)
    return Negatives(exchange, gather_axes=axes, mean_axes=axes)
