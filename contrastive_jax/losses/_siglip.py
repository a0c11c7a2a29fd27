"""SigLIP: pairwise sigmoid loss over image-text pairs."""

from __future__ import annotations

import jax

from contrastive_jax import _checks, parallel

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
    impl: str = "auto",
) -> Array:
    """Sigmoid loss: every image-text pair is an independent binary classification.

    `loss = −(1/B) Σ_ij log σ(z_ij · (s·x_i·y_j + b))` with `z_ii = +1`, `z_ij = −1` (i ≠ j):
    a sum over all B² pairs divided by the batch size B, not B². It is one reduction over the
    matrix, `(1/B) Σ_ij softplus(−z_ij·L_ij)`, which the blockwise, Pallas and ring paths
    accumulate chunk by chunk; each positive pair keeps its label sign inside its block (as
    big_vision's chunked sigmoid loss does), so a confident positive's term `softplus(−L_ii)` and
    gradient `−σ(−L_ii)` are exact (no `softplus(L) − L` cancellation).

    On one device this equals open_clip's `SigLipLoss()(image, text, logit_scale, logit_bias)`.
    Under `axis_name` it is the loss of the global batch (sum over all global pairs divided by
    the global batch size), the mean of the per-device values.

    Args:
      image_emb: `f[B, D]` L2-normalised image embeddings.
      text_emb: `f[B, D]` L2-normalised text embeddings, row i paired with image i.
      logit_scale: float scalar `s` (paper init 10, i.e. `exp(log 10)`).
      logit_bias: float scalar `b` (paper init −10).
      axis_name, exchange, block_size, impl: as in `clip_loss`.

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

    total = parallel.softplus_sum(
        image_emb, text_emb, logit_scale, logit_bias, plan, block_size=block_size, impl=impl, positives=True
    )
    return plan.mean(total / image_emb.shape[0])
