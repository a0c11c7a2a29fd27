"""A training run's directory: where each of its files lives, its saved config, and whether a
path holds a run at all.

    WORKDIR/
      config.json          the run's resolved config (`write_run_config`, once resuming is settled)
      checkpoints/<step>/  Orbax step folders (`run_checkpointer`); damaged ones set aside as
                           `<step>.damaged`, unfinished writes keep Orbax's temporary names
      metrics.jsonl        one JSON line per logged step
      tensorboard/         TensorBoard event files
      eval.json            the final evaluation (`experiments.eval` writes eval_<split>.json)

A directory is a *run* once it has config.json and at least one finished step folder (a folder
written by `experiments/convert.py` is one too). One error type per condition: a workdir that is
missing, is a file, cannot be written or has no (readable) config.json raises `WorkdirError`; a
run without a checkpoint raises `CheckpointError`. Nothing here changes an existing run's files
except `write_run_config`; `check_workdir` creates a missing directory and probes it with a
temporary file, no more.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import ml_collections

from contrastive_jax._errors import CheckpointError, WorkdirError
from contrastive_jax.train._checkpoint import Checkpointer


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The paths of a run's files under `workdir` (nothing is created or checked).

    Examples:
      >>> RunPaths("/tmp/run").config
      '/tmp/run/config.json'
      >>> RunPaths("/tmp/run").eval_results("validation")
      '/tmp/run/eval_validation.json'
    """

    workdir: str

    @property
    def config(self) -> str:
        return os.path.join(self.workdir, "config.json")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.workdir, "checkpoints")

    @property
    def metrics(self) -> str:
        return os.path.join(self.workdir, "metrics.jsonl")

    @property
    def tensorboard(self) -> str:
        return os.path.join(self.workdir, "tensorboard")

    def eval_results(self, split: str | None = None) -> str:
        """`eval.json` (the trainer's final evaluation), or `eval_<split>.json` (experiments.eval)."""
        return os.path.join(self.workdir, "eval.json" if split is None else f"eval_{split}.json")


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in `workdir/config.json`, as written (tokenizer paths unresolved).

    Raises:
      WorkdirError: there is no config.json, or it is not readable JSON.
    """
    path = RunPaths(workdir).config
    if not os.path.isfile(path):
        raise WorkdirError(
            f"{workdir} has no config.json, so it is not a training run's workdir; pass the --workdir "
            "given to experiments.train"
        )
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as err:
        raise WorkdirError(f"cannot read {path} ({err}); it is not a training run's config") from err


def write_run_config(workdir: str, config) -> None:
    """Writes `config` to `workdir/config.json`, replacing the file in one step: a process killed
    mid-write leaves the previous config.json, never a truncated one."""
    path = RunPaths(workdir).config
    partial = path + ".partial"
    with open(partial, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(partial, path)


def run_checkpointer(workdir: str, **options) -> Checkpointer:
    """The `Checkpointer` of the run in `workdir` (its `checkpoints/` folder, created if missing);
    `options` are `Checkpointer`'s (`max_to_keep`, `save_interval_steps`)."""
    return Checkpointer(RunPaths(workdir).checkpoints, **options)


def checkpoint_steps(workdir: str) -> list[int]:
    """The run's finished checkpoint steps, oldest first, read from the folder names alone
    (nothing is created; unfinished writes and set-aside `<step>.damaged` folders do not count)."""
    folder = RunPaths(workdir).checkpoints
    if not os.path.isdir(folder):
        return []
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def check_run_dir(workdir: str) -> None:
    """Makes sure `workdir` holds a run to read: its config.json and at least one finished
    checkpoint step folder. Changes nothing.

    Raises:
      WorkdirError: `workdir` does not exist, is a file, or has no config.json.
      CheckpointError: it has no finished checkpoint yet.
    """
    if not os.path.isdir(workdir):
        what = "is a file" if os.path.exists(workdir) else "does not exist"
        raise WorkdirError(f"--workdir {workdir} {what}; pass the directory of a training run")
    read_run_config(workdir)
    if not checkpoint_steps(workdir):
        raise CheckpointError(
            f"{workdir} has no checkpoint yet; train first (python -m experiments.train --workdir {workdir})"
        )


def _first_existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _check_writable(directory: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".write_probe_"):
            pass
    except OSError as err:
        raise WorkdirError(
            f"cannot write to {directory} ({err.strerror}); pass a --workdir you can write to"
        ) from err


def check_workdir(workdir: str) -> None:
    """Makes sure the run can write to `workdir`: creates it if missing, else changes nothing.

    Raises `WorkdirError` when it is a file, lies under a file, or cannot be created or written
    (also its `checkpoints/` folder, if present).
    """
    if not workdir:
        raise WorkdirError("the workdir is empty; pass --workdir=DIR")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(
            f"--workdir {workdir} is a file, not a directory; pass a directory (new or an earlier run's)"
        )
    ancestor = _first_existing_ancestor(workdir)
    if not os.path.isdir(ancestor):
        raise WorkdirError(
            f"--workdir {workdir} lies under {ancestor}, which is a file; pass a directory path"
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as err:
        raise WorkdirError(
            f"cannot create --workdir {workdir} ({err.strerror}); pass a path you can write to"
        ) from err
    _check_writable(workdir)
    checkpoints = RunPaths(workdir).checkpoints
    if os.path.isdir(checkpoints):
        _check_writable(checkpoints)
