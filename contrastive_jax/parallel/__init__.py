"""Negatives across devices: one mechanism, inside `jax.shard_map` (or `pmap`).

Losses call `plan_negatives(axis_name, exchange)` once and then reduce with the functions
below; users normally only pass `axis_name=` / `exchange=` to a loss. See the README's
"Distributed negatives" section for when to choose which exchange. `fsdp_shardings` lays out
parameters and optimizer state over an "fsdp" mesh axis for the trainer (one rule table).
"""

from contrastive_jax.parallel._accumulate import accumulate_value_and_grad
from contrastive_jax.parallel._fsdp import (
    SHARDING_RULES,
    bytes_per_device,
    fsdp_shardings,
    fsdp_spec,
    fsdp_specs,
)
from contrastive_jax.parallel._mesh import data_mesh, shard_batch
from contrastive_jax.parallel._plan import EXCHANGES, Negatives, axis_size, gather_over, plan_negatives
from contrastive_jax.parallel._reduce import (
    gather_negatives,
    negatives_mean,
    softmax_lse,
    softplus_sum,
)
from contrastive_jax.parallel._ring import ring_fold, ring_sum

__all__ = [
    "accumulate_value_and_grad",
    "axis_size",
    "bytes_per_device",
    "EXCHANGES",
    "Negatives",
    "data_mesh",
    "fsdp_shardings",
    "fsdp_spec",
    "fsdp_specs",
    "gather_negatives",
    "gather_over",
    "negatives_mean",
    "plan_negatives",
    "ring_fold",
    "ring_sum",
    "SHARDING_RULES",
    "shard_batch",
    "softmax_lse",
    "softplus_sum",
]
