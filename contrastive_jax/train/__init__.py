"""Training: the loop, its step, the objective registry, optimizer and checkpoints.

`train(config, workdir)` is what `python -m experiments.train` runs.
"""

from contrastive_jax.train._checkpoint import Checkpointer, StopSignal
from contrastive_jax.train._errors import (
    CheckpointError,
    ConfigError,
    TrainingError,
    WorkdirError,
    did_you_mean,
)
from contrastive_jax.train._loop import (
    abstract_state,
    evaluate_checkpoint,
    init_state,
    load_loss_state,
    load_run,
    make_mesh,
    make_tokenizer,
    make_train_step,
    state_shardings,
    train,
)
from contrastive_jax.train._objective import OBJECTIVES, compute_loss, init_loss_state
from contrastive_jax.train._optim import clamp_logit_scale, make_optimizer
from contrastive_jax.train._validate import check_run_dir, check_workdir, validate_config

__all__ = [
    "OBJECTIVES",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "StopSignal",
    "abstract_state",
    "clamp_logit_scale",
    "compute_loss",
    "evaluate_checkpoint",
    "init_loss_state",
    "init_state",
    "load_loss_state",
    "load_run",
    "make_mesh",
    "make_optimizer",
    "make_tokenizer",
    "make_train_step",
    "state_shardings",
    "train",
    "TrainingError",
    "WorkdirError",
    "check_run_dir",
    "check_workdir",
    "did_you_mean",
    "validate_config",
]
