"""Mesh helpers: a data-parallel mesh over whatever devices exist, and batch placement."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(
    axis_names: str | Sequence[str] = "data",
    shape: Sequence[int] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh over all (or the given) devices, with Auto axis types so shard_map accepts plain arrays.

    Args:
      axis_names: one name for pure data parallelism, or e.g. `("group", "member")` for
        grouped aggregation.
      shape: sizes of the axes; defaults to all devices along the first axis.
      devices: devices to use (default `jax.devices()`, all processes' devices).

    Returns:
      A `jax.sharding.Mesh`.
    """
    names = (axis_names,) if isinstance(axis_names, str) else tuple(axis_names)
    devices = list(jax.devices() if devices is None else devices)
    if shape is None:
        shape = (len(devices),) + (1,) * (len(names) - 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(names):
        raise ValueError(f"mesh shape {shape} and axis names {names} differ in length")
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, {len(devices)} given")
    auto = (jax.sharding.AxisType.Auto,) * len(names)
    return Mesh(np.asarray(devices).reshape(shape), names, axis_types=auto)


def shard_batch(batch, mesh: Mesh, axes: str | Sequence[str] | None = None):
    """Places every leaf of `batch` on `mesh`, split along its leading (batch) dimension.

    The leading dimension must divide by the product of the axes' sizes. With several
    processes, pass each process's local slice through `jax.make_array_from_process_local_data`
    instead (the training loop does).
    """
    axes = tuple(mesh.axis_names) if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    sharding = NamedSharding(mesh, P(axes))
    return jax.tree.map(lambda leaf: jax.device_put(leaf, sharding), batch)
