"""Errors a user can fix, shared by every layer (a leaf module: it imports nothing of the package).

`data`, `evaluate` and `train` raise them; `contrastive_jax.train` re-exports them, and the
command-line entry points print them as one line, without a traceback.
"""

from __future__ import annotations

import difflib


class TrainingError(Exception):
    """A problem with the run's inputs (config, workdir, checkpoints) that the user can fix.

    The message names the problem and the fix; `experiments/train.py` and `experiments/eval.py`
    print it as one line and exit non-zero (a traceback only with `--debug`).
    """


class ConfigError(TrainingError, ValueError):
    """The config asks for something impossible or unknown (a bad value, an unknown name)."""


class CheckpointError(TrainingError):
    """The workdir's checkpoints cannot be used for this run (none restores, or they belong to a
    different config); nothing in the workdir has been changed."""


class WorkdirError(TrainingError):
    """The workdir cannot hold the run (it is a file, or cannot be created or written to)."""


def did_you_mean(name: str, choices, *, what: str = "one of") -> str:
    """`"did you mean 'x'?"` for close matches of `name` among `choices`, else the full list.

    The tail of a fix-it message: `f"unknown loss {name!r}; {did_you_mean(name, OBJECTIVES)}"`.
    """
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"choose {what}: " + ", ".join(choices)
