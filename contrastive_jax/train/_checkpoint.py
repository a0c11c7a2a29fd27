"""Orbax checkpoints of a training run: arrays + JSON metadata, verified on restore.

Each checkpoint holds two items: `state` (params, optimizer state, step, RNG key data, loss
state such as iSogCLR's per-sample arrays) written with `StandardSave`, and `meta` (the data
iterator position, the config and a fingerprint of `state`) written with `JsonSave`. Orbax
already ignores checkpoints whose write did not finish (no commit marker). A checkpoint that
finished but was damaged afterwards is caught by the fingerprint — a float64 sum per leaf —
and skipped with a warning in favour of the newest earlier one; nothing is loaded silently.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def fingerprint(tree) -> list[float]:
    """One float64 checksum per leaf (sum of values plus a position-weighted sum)."""
    sums = []
    for leaf in jax.tree.leaves(tree):
        values = np.asarray(jax.device_get(leaf), dtype=np.float64).ravel()
        weights = np.arange(1, values.size + 1, dtype=np.float64) / max(values.size, 1)
        sums.append(float(values.sum() + (values * weights).sum()))
    return sums


def _host_copy_if_replicated(leaf):
    if isinstance(leaf, jax.Array) and leaf.is_fully_addressable and leaf.is_fully_replicated:
        return np.asarray(leaf)
    return leaf


class Checkpointer:
    """Saves and restores a run's state in `directory` with `ocp.CheckpointManager`.

    Args:
      directory: where the step folders live (created if missing).
      max_to_keep: how many recent checkpoints to keep.
      save_interval_steps: `save(step, ...)` is a no-op between intervals unless `force`.
    """

    def __init__(self, directory: str, *, max_to_keep: int = 3, save_interval_steps: int = 1):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps, enable_async_checkpointing=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, meta: dict[str, Any], *, force: bool = False) -> bool:
        meta = dict(meta, fingerprint=fingerprint(state))
        # Replicated arrays are saved from a host copy: Orbax would otherwise compile a slice per
        # device for each of them. Sharded arrays (e.g. per-sample loss state) stay distributed.
        state = jax.tree.map(_host_copy_if_replicated, state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self._manager.save(int(step), args=args, force=force)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, target) -> tuple[int, Any, dict] | None:
        """Newest intact checkpoint as `(step, state, meta)`, or None if there is none.

        `target` is a pytree of arrays (or `jax.ShapeDtypeStruct`s) with the state's structure,
        dtypes and shardings. Damaged checkpoints are skipped with a warning.
        """
        self._manager.reload()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        for step in reversed(self.steps()):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                    ),
                )
                state, meta = restored.state, dict(restored.meta)
                expected = meta.pop("fingerprint", None)
                if expected is None or not np.allclose(fingerprint(state), expected, rtol=1e-6, atol=1e-6):
                    raise ValueError("fingerprint mismatch: the saved arrays changed after they were written")
            except Exception as err:  # noqa: BLE001 - any failure means this checkpoint is unusable
                log.warning("Skipping damaged checkpoint at step %d in %s: %s", step, self.directory, err)
                continue
            return step, state, meta
        return None

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop polls, so it can save before exiting."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self._event = threading.Event()
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        log.warning("Received signal %d: saving a checkpoint and stopping", signum)
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        self._event.set()

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
