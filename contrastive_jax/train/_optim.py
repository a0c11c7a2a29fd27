"""AdamW with linear warm-up, cosine decay and global-norm clipping (the CLIP recipe)."""

from __future__ import annotations

import jax
import optax


def _decay_mask(params):
    """Weight decay on matrices only: not on biases, norm scales, embeddings' scalars or the logit scale."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """`config`: lr, warmup_steps, weight_decay, b1, b2, eps, grad_clip (None or a max norm).

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
    return optax.chain(*chain)


def learning_rate(config, total_steps: int):
    """The schedule alone, for logging."""
    warmup = min(int(config.warmup_steps), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, warmup, max(total_steps, warmup + 1), config.lr * config.get("final_lr_fraction", 0.0)
    )
