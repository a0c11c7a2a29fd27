"""AdamW with linear warm-up, cosine decay and global-norm clipping (the CLIP recipe)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

LOGIT_SCALE_PARAM = "logit_scale_param"
# Every logit scale the models learn: CLIP's, and CL2L's separate one of its local heads
# (clip-rocket clamps both to ln 100).
LOGIT_SCALE_PARAMS = (LOGIT_SCALE_PARAM, "local_logit_scale_param")


def _decay_mask(params):
    """Weight decay on matrices only: not on biases, norm scales, embeddings' scalars or the logit scale."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(
    config, total_steps: int, *, max_logit_scale: float | None = None
) -> optax.GradientTransformation:
    """`config`: lr, warmup_steps, weight_decay, b1, b2, eps, grad_clip (None or a max norm).

    With `max_logit_scale`, the chain ends with `clamp_logit_scale(max_logit_scale)`: the
    model's logit scale parameters (`LOGIT_SCALE_PARAMS`) are projected onto `[0, ln max_logit_scale]` after each step.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019; CLIP (Radford et
      al. 2021) uses AdamW with cosine decay and no decay on gains/biases/temperature.
    """
    warmup = min(int(config.warmup_steps), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=config.lr * config.get("final_lr_fraction", 0.0),
    )
    chain = []
    if config.get("grad_clip", None):
        chain.append(optax.clip_by_global_norm(config.grad_clip))
    chain.append(
        optax.adamw(
            schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=_decay_mask,
        )
    )
    if max_logit_scale is not None:
        chain.append(clamp_logit_scale(max_logit_scale))
    return optax.chain(*chain)


def learning_rate(config, total_steps: int):
    """The schedule alone, for logging."""
    warmup = min(int(config.warmup_steps), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, warmup, max(total_steps, warmup + 1), config.lr * config.get("final_lr_fraction", 0.0)
    )


def _is_logit_scale(path) -> bool:
    return any(getattr(key, "key", getattr(key, "name", None)) in LOGIT_SCALE_PARAMS for key in path)


def clamp_logit_scale(max_logit_scale: float) -> optax.GradientTransformation:
    """Keeps the log-scale parameter in `[0, ln max_logit_scale]` after every update (open_clip).

    The last link of the optimizer chain: for each leaf whose path contains
    `logit_scale_param` or `local_logit_scale_param` (`LOGIT_SCALE_PARAMS`), the update becomes `clip(p + u, 0, ln max) − p`, so the new parameter
    is the projection of the unconstrained step. The forward pass uses `exp(p)` unclamped, so
    the gradient of the scale is never cut off: a scale at the bound comes back down as soon as
    the loss prefers a smaller one (unlike `exp(min(p, ln max))`, whose gradient is 0 above the
    bound). Other leaves pass through unchanged. Needs `params` in `update`.
    """
    if not max_logit_scale > 1:
        raise ValueError(f"max_logit_scale must be > 1, got {max_logit_scale}")
    upper = math.log(max_logit_scale)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("clamp_logit_scale needs the parameters: call update(grads, state, params)")

        def project(path, u, p):
            return jnp.clip(p + u, 0.0, upper) - p if _is_logit_scale(path) else u

        return jax.tree_util.tree_map_with_path(project, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
