"""Orbax checkpoints of a training run, and what happens when one cannot be used.

Each checkpoint holds two items: `state` (params, optimizer state, step, RNG key data, loss
state such as iSogCLR's per-sample arrays) written with `StandardSave`, and `meta` (the data
iterator position) written with `JsonSave`. Integrity is Orbax's own: a step folder appears
only once its write has committed (async writes finish into a temporary folder first), and
tensorstore rejects chunks whose compressed bytes were altered.

Restoring distinguishes three cases, newest checkpoint first:

* **intact** — restored; any newer checkpoint that was damaged is *set aside* (renamed
  `<step>.damaged`, outside Orbax's step namespace, never deleted), so training can save
  that step again and run to the end;
* **damaged** (unreadable metadata or arrays) — skipped with a warning, the next older one
  is tried;
* **another run's structure** (a tree path, shape or dtype differs from what the current
  config builds) — a `CheckpointError` naming the differences; nothing on disk changes.

If step folders exist but none restores, that is a `CheckpointError` too: a run never
starts from scratch over existing checkpoints. Both restores (`restore_latest`: the whole state;
`restore_item`: one subtree, read-only) make these decisions in one loop, `_restore_newest`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from contrastive_jax._errors import CheckpointError

log = logging.getLogger(__name__)
DAMAGED_SUFFIX = ".damaged"


def _host_copy_if_replicated(leaf):
    if isinstance(leaf, jax.Array) and leaf.is_fully_addressable and leaf.is_fully_replicated:
        return np.asarray(leaf)
    return leaf


def _leaf_specs(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{"params/w": (shape, dtype)}` for every array leaf, with Orbax's path naming."""
    flat = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(tree, keep_empty_nodes=True), sep="/")
    return {
        path: (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
        for path, leaf in flat.items()
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype")
    }


def structure_differences(saved, expected, *, limit: int = 3) -> list[str]:
    """Human-readable differences between two `_leaf_specs` dicts (saved vs. expected)."""
    lines = []
    # Parameters first: the optimizer's moments repeat their paths and would bury them.
    order = lambda path: (not path.startswith("params/"), path)
    for path in sorted(saved.keys() | expected.keys(), key=order):
        if path not in expected:
            lines.append(f"{path} is in the checkpoint but not in this config's state")
        elif path not in saved:
            lines.append(f"{path} is in this config's state but not in the checkpoint")
        elif saved[path] != expected[path]:
            (s_shape, s_dtype), (e_shape, e_dtype) = saved[path], expected[path]
            lines.append(f"{path}: checkpoint {s_dtype}{list(s_shape)}, config {e_dtype}{list(e_shape)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"and {len(lines) - limit} more arrays differ"]
    return lines


@contextlib.contextmanager
def _quiet_unraisable():
    """Tensorstore leaves failed read coroutines behind; their 'Exception ignored' noise would
    bury the one warning that matters, so route it to the debug log while restoring."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda info: log.debug("ignored during restore: %s", info.exc_value)
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _abstract_as_saved(saved, prefix: str) -> dict:
    """The subtree under `prefix` as the checkpoint holds it: `ShapeDtypeStruct`s (from `saved`
    leaf specs) on this process's first device."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    flat = {
        tuple(path[len(prefix) :].split("/")): jax.ShapeDtypeStruct(shape, dtype, sharding=device)
        for path, (shape, dtype) in saved.items()
    }
    return ocp.tree.from_flat_dict(flat)


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
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def save(self, step: int, state, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts an asynchronous save of `state` and `meta` at `step` (returns at once)."""
        # Replicated arrays are saved from a host copy: Orbax would otherwise compile a slice per
        # device for each of them. Sharded arrays (e.g. per-sample loss state) stay distributed.
        state = jax.tree.map(_host_copy_if_replicated, state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self._manager.save(int(step), args=args, force=force)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, target, *, set_aside_damaged: bool = False, describe_change=None):
        """Newest intact checkpoint as `(step, state, meta)`, or None if there is none.

        Args:
          target: a pytree of arrays (or `jax.ShapeDtypeStruct`s) with the state's structure,
            dtypes and shardings.
          set_aside_damaged: rename damaged checkpoints newer than the restored one to
            `<step>.damaged` (the trainer does); False (default, for evaluation) only skips
            them and leaves the folder untouched.
          describe_change: optional `() -> str` appended to a structure-mismatch error (e.g.
            which config keys differ from the run's saved config).

        Raises:
          CheckpointError: a checkpoint was written for a different state structure, or step
            folders exist and none of them restores. Nothing on disk is changed then.
        """
        expected = _leaf_specs(target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)

        def plan(step, saved):
            self._check_structure(step, saved, expected, describe_change)
            return abstract

        def read(step, abstract):
            args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
            restored = self._manager.restore(step, args=args)
            return restored.state, dict(restored.meta)

        found = self._restore_newest(plan, read, set_aside_damaged=set_aside_damaged)
        if found is None:
            return None
        step, (state, meta) = found
        return step, state, meta

    def restore_params(self, target, *, describe_change=None):
        """`(step, params)`: only the `params` subtree of the newest intact checkpoint (read-only).

        For fine-tuning from another run (`config.init_from`): its optimizer and loss state are
        not read. `target` is the current params pytree (shapes, dtypes, shardings). Damaged
        checkpoints are skipped with a warning.

        Raises:
          CheckpointError: no checkpoint, none intact, or parameters of another architecture.
        """
        return self.restore_item("params", target, describe_change=describe_change)

    def restore_item(self, key: str, target=None, *, describe_change=None):
        """`(step, subtree)`: the `key` subtree of the state ("params", "loss_state", ...) of the
        newest intact checkpoint, read-only; the rest of the state is not read.

        Args:
          key: a top-level entry of the saved state.
          target: its pytree of arrays or `jax.ShapeDtypeStruct`s (structure, dtypes, shardings),
            checked against what was saved; None: as saved (nested dicts of arrays on this
            process's first device).
          describe_change: as for `restore_latest`.

        Raises:
          CheckpointError: no checkpoint, none intact, no `key` in it, or another structure.
        """
        prefix = key + "/"

        def plan(step, saved):
            saved = {path: spec for path, spec in saved.items() if path.startswith(prefix)}
            if target is None:
                if not saved:
                    raise CheckpointError(f"the checkpoint at step {step} in {self.directory} has no {key!r}")
                return {key: _abstract_as_saved(saved, prefix)}
            expected = {prefix + path: spec for path, spec in _leaf_specs(target).items()}
            self._check_structure(step, saved, expected, describe_change)
            return {key: jax.tree.map(ocp.utils.to_shape_dtype_struct, target)}

        def read(step, abstract):
            with ocp.PyTreeCheckpointer() as reader:
                restored = reader.restore(
                    os.path.join(self.directory, str(step), "state"),
                    args=ocp.args.PyTreeRestore(
                        item=abstract,
                        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                        partial_restore=True,
                    ),
                )
            return restored[key]

        found = self._restore_newest(plan, read, set_aside_damaged=False)
        if found is None:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored (no step folders)")
        return found

    def _restore_newest(self, plan, read, *, set_aside_damaged: bool):
        """The one restore loop: `(step, read(step, plan(step, saved)))` for the newest checkpoint
        that restores, or None when there are no step folders.

        Newest step first: metadata that cannot be read is damage; `plan(step, saved)` turns the
        saved leaf specs into what to read, or raises `CheckpointError` when they are another
        run's structure (the loop stops there, nothing on disk changed); `read` failing is damage.
        Damaged steps newer than the one restored are reported, and set aside with
        `set_aside_damaged`, only once one has restored.

        Raises:
          CheckpointError: from `plan`, or step folders exist and none of them restores.
        """
        self._manager.reload()
        damaged: list[tuple[int, str]] = []
        for step in reversed(self.steps()):
            with _quiet_unraisable():
                saved = self._saved_specs(step)
                if isinstance(saved, str):
                    damaged.append((step, saved))
                    continue
                what = plan(step, saved)
                try:
                    result = read(step, what)
                except Exception as err:  # noqa: BLE001 - a readable structure whose arrays fail
                    damaged.append((step, _first_line(err)))
                    continue
            self._report_damaged(damaged, set_aside_damaged)
            return step, result
        if damaged:
            reasons = "; ".join(f"step {s}: {r}" for s, r in damaged)
            raise CheckpointError(
                f"none of the {len(damaged)} checkpoints in {self.directory} can be restored ({reasons}); "
                "they are left as they are. Move that folder away to start the run afresh."
            )
        return None

    def _check_structure(self, step: int, saved, expected, describe_change) -> None:
        """Raises the mismatch `CheckpointError` when `saved` and `expected` leaf specs differ."""
        differences = structure_differences(saved, expected)
        if differences:
            raise CheckpointError(self._mismatch_message(step, differences, describe_change))

    def _saved_specs(self, step: int):
        """The saved state's leaf specs, or a one-line reason why its metadata is unreadable."""
        try:
            metadata = self._manager.item_metadata(step)["state"]
            tree = getattr(metadata, "tree", metadata)
            flat = ocp.tree.to_flat_dict(tree, sep="/")
            return {
                path: (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
                for path, leaf in flat.items()
                if getattr(leaf, "shape", None) is not None
            }
        except Exception as err:  # noqa: BLE001 - unreadable metadata is damage, whatever raised
            return _first_line(err)

    def _mismatch_message(self, step, differences, describe_change) -> str:
        message = (
            f"the checkpoint at step {step} in {self.directory} was written for a different model or "
            f"loss state: {'; '.join(differences)}."
        )
        if describe_change is not None:
            message += " " + describe_change()
        return message + (
            " Resume with the run's original config (its config.json), or give this config a new --workdir; "
            "the checkpoints were not changed."
        )

    def _report_damaged(self, damaged, set_aside: bool) -> None:
        for step, reason in damaged:
            if not set_aside:
                log.warning("Skipping damaged checkpoint at step %d in %s: %s", step, self.directory, reason)
                continue
            target = self._set_aside(step)
            log.warning(
                "Skipping damaged checkpoint at step %d in %s (%s); set aside as %s",
                step,
                self.directory,
                reason,
                os.path.basename(target),
            )
        if set_aside and damaged:
            multihost_utils.sync_global_devices("contrastive_jax: damaged checkpoints set aside")
            self._manager.reload()

    def _set_aside(self, step: int) -> str:
        """Renames a step folder to `<step>.damaged` (or `<step>.damaged-K`), on process 0 only."""
        source = os.path.join(self.directory, str(step))
        target = source + DAMAGED_SUFFIX
        k = 1
        while os.path.exists(target):
            target, k = f"{source}{DAMAGED_SUFFIX}-{k}", k + 1
        if jax.process_index() == 0:
            os.rename(source, target)
        return target

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


class StopSignal:
    """Turns SIGTERM and SIGINT (Ctrl-C) into a stop request the loop polls between steps.

    One process: the handlers set a flag, the loop saves a checkpoint at the end of the current
    step and returns. Several processes (`jax.distributed`): JAX's preemption service owns
    SIGTERM (it tells every process, and `reached_preemption_sync_point` names one step at which
    all of them save), so no Python SIGTERM handler is installed, and SIGINT is forwarded to it
    as a SIGTERM of this process; `should_stop(step)` is the one test the loop makes.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self._event = threading.Event()
        self._previous = {}
        self._multiprocess = jax.process_count() > 1
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in signals:
            if self._multiprocess and sig == signal.SIGTERM:
                continue
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        if self._multiprocess:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption notifier tells the other processes
            return
        log.warning("Received signal %d: saving a checkpoint and stopping", signum)
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        self._event.set()

    def should_stop(self, step: int) -> bool:
        """Whether to save and stop after `step`; call it after every step, on every process."""
        if self._multiprocess:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.requested

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
