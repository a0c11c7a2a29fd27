"""SigLIP: pairwise sigmoid loss over image-text pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, parallel
from contrastive_jax.losses._clip import positive_logits

Array = jax.Array


def siglip_loss(
    image_emb: Array,
    text_emb: Array,
    logit_scale: Array,
    logit_bias: Array,
    *,
    axis_name=None,
    exchange: str = "all_gather",
    block_size: int | None = None,
) -> Array:
    """Sigmoid loss: every image-text pair is an independent binary classification.

    `loss = −(1/B) Σ_ij log σ(z_ij · (s·x_i·y_j + b))` with `z_ii = +1`, `z_ij = −1` (i ≠ j):
    a sum over all B² pairs divided by the batch size B, not B². Since
    `−log σ(−l) = softplus(l)` and `−log σ(l) = softplus(l) − l`, it is computed as
    `(1/B)[Σ_ij softplus(L_ij) − Σ_i L_ii]`, one reduction over the matrix, which the
    blockwise and ring paths accumulate chunk by chunk.

    On one device this equals open_clip's `SigLipLoss()(image, text, logit_scale, logit_bias)`.
    Under `axis_name` it is the loss of the global batch (sum over all global pairs divided by
    the global batch size), the mean of the per-device values.

    Args:
      image_emb: `f[B, D]` L2-normalised image embeddings.
      text_emb: `f[B, D]` L2-normalised text embeddings, row i paired with image i.
      logit_scale: float scalar `s` (paper init 10, i.e. `exp(log 10)`).
      logit_bias: float scalar `b` (paper init −10).
      axis_name, exchange, block_size: as in `clip_loss`.

    Returns:
      A float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0]])
      >>> round(float(siglip_loss(x, x, 10.0, -10.0)), 4)  # softplus(-(10 - 10)) = log 2
      0.6931

    References:
      Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, Algorithm 1.
      open_clip `SigLipLoss` (mlfoundations/open_clip, src/open_clip/loss.py).
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    logit_scale = _checks.scalar("logit_scale", logit_scale)
    logit_bias = _checks.scalar("logit_bias", logit_bias)
    plan = parallel.plan_negatives(axis_name, exchange)

    all_pairs = parallel.softplus_sum(
        image_emb, text_emb, logit_scale, logit_bias, plan, block_size=block_size
    )
    positives = positive_logits(image_emb, text_emb, logit_scale) + logit_bias
    return plan.mean((all_pairs - jnp.sum(positives)) / image_emb.shape[0])
