"""Training: the loop, its step, the objective registry, optimizer, checkpoints and the run directory.

`train(config, workdir)` is what `python -m experiments.train` runs.
"""

from contrastive_jax._errors import (
    CheckpointError,
    ConfigError,
    TrainingError,
    WorkdirError,
    did_you_mean,
)
from contrastive_jax.train._checkpoint import Checkpointer, StopSignal
from contrastive_jax.train._loop import (
    abstract_state,
    evaluate_checkpoint,
    init_state,
    load_loss_state,
    load_run,
    make_mesh,
    make_tokenizer,
    make_train_step,
    quiet_logs,
    state_shardings,
    train,
)
from contrastive_jax.train._objective import (
    OBJECTIVES,
    Objective,
    compute_loss,
    get_objective,
    init_loss_state,
    loss_config,
    objective_table,
    supported_exchanges,
)
from contrastive_jax.train._optim import clamp_logit_scale, make_optimizer
from contrastive_jax.train._recipes import ema_update, locked_mask, with_recipe_defaults
from contrastive_jax.train._rundir import (
    RunPaths,
    check_run_dir,
    check_workdir,
    checkpoint_steps,
    read_run_config,
    run_checkpointer,
    write_run_config,
)
from contrastive_jax.train._validate import validate_config

__all__ = [
    "OBJECTIVES",
    "Objective",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "StopSignal",
    "abstract_state",
    "clamp_logit_scale",
    "ema_update",
    "locked_mask",
    "with_recipe_defaults",
    "compute_loss",
    "evaluate_checkpoint",
    "get_objective",
    "init_loss_state",
    "init_state",
    "load_loss_state",
    "load_run",
    "loss_config",
    "make_mesh",
    "make_optimizer",
    "make_tokenizer",
    "make_train_step",
    "objective_table",
    "quiet_logs",
    "state_shardings",
    "supported_exchanges",
    "train",
    "TrainingError",
    "WorkdirError",
    "check_run_dir",
    "check_workdir",
    "checkpoint_steps",
    "read_run_config",
    "run_checkpointer",
    "write_run_config",
    "RunPaths",
    "did_you_mean",
    "validate_config",
]
