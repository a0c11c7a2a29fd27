"""Helpers shared by the catalogue losses: global candidates and masked log-sum-exp."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import parallel

Array = jax.Array

GATHER_EXCHANGES = ("all_gather", "grouped")


def plan_for(axis_name, exchange: str, loss_name: str):
    """The negatives plan; these losses gather their candidates (all_gather or grouped)."""
    plan = parallel.plan_negatives(axis_name, exchange)
    if plan.exchange == "ring":
        raise ValueError(
            f"{loss_name} supports exchange in {GATHER_EXCHANGES}; the ring exchange is implemented for "
            "clip_loss, siglip_loss, coca_loss and isogclr_loss"
        )
    return plan


def require_negatives(loss_name: str, local_batch: int, plan) -> None:
    """Raises (at trace time) when the batch across the plan's devices has a single sample.

    Losses whose negatives are the *other* samples only (DCL, DHEL) have an empty sum, −∞, then.
    """
    total = local_batch * plan.num_devices()
    if total < 2:
        where = f" across {plan.num_devices()} devices" if plan.gather_axes else ""
        raise ValueError(
            f"{loss_name} needs at least 2 samples in the batch{where}: its negatives are the other "
            f"samples, and a batch of {total} has none (the loss would be -inf)"
        )


def gather_all(plan, *arrays):
    """Each array gathered over the negative set, plus the offset of this device's rows in it."""
    gathered = [parallel.gather_negatives(a, plan)[0] for a in arrays]
    return gathered, plan.device_index() * arrays[0].shape[0]


def masked_logsumexp(logits: Array, mask: Array, axis: int = -1) -> Array:
    """`log Σ_{mask} exp(logits)` along `axis`; −inf where the mask selects nothing."""
    return jax.nn.logsumexp(jnp.where(mask, logits, -jnp.inf), axis=axis)
