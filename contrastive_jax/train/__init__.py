"""Training: the loop, its step, the objective registry, optimizer and checkpoints.

`train(config, workdir)` is what `python -m experiments.train` runs.
"""

from contrastive_jax.train._checkpoint import Checkpointer, StopSignal, fingerprint
from contrastive_jax.train._loop import (
    evaluate_checkpoint,
    init_state,
    make_tokenizer,
    make_train_step,
    train,
)
from contrastive_jax.train._objective import OBJECTIVES, compute_loss, init_loss_state
from contrastive_jax.train._optim import make_optimizer

__all__ = [
    "OBJECTIVES",
    "Checkpointer",
    "StopSignal",
    "compute_loss",
    "evaluate_checkpoint",
    "fingerprint",
    "init_loss_state",
    "init_state",
    "make_optimizer",
    "make_tokenizer",
    "make_train_step",
    "train",
]
