"""CLIP: the symmetric InfoNCE loss over image-text pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, parallel

Array = jax.Array


def positive_logits(image_emb: Array, text_emb: Array, logit_scale: Array) -> Array:
    """`scale · x_i·y_i` for each local pair, in float32: `f32[b]`."""
    return logit_scale * jnp.sum(image_emb.astype(jnp.float32) * text_emb.astype(jnp.float32), axis=-1)


def clip_loss(
    image_emb: Array,
    text_emb: Array,
    logit_scale: Array,
    *,
    axis_name=None,
    exchange: str = "all_gather",
    block_size: int | None = None,
    impl: str = "auto",
    label_smoothing: float = 0.0,
) -> Array:
    """Symmetric InfoNCE (CLIP): cross-entropy of matching images to texts and texts to images.

    With `L = s·x yᵀ` over the global batch of `B` pairs,
    `loss = ½ [CE(L, arange B) + CE(Lᵀ, arange B)]`, each CE the mean over rows. With label
    smoothing ε the targets are `(1−ε)·onehot + ε/B` (PyTorch's `label_smoothing`), so a row's
    loss is `lse_i − (1−ε)·L_ii − ε·mean_j L_ij`; the mean logit needs only the mean embedding,
    so smoothing works with every exchange and with `block_size`.

    On one device this equals open_clip's `ClipLoss()(image, text, logit_scale)`.

    Args:
      image_emb: `f[B, D]` L2-normalised image embeddings (local rows under shard_map).
      text_emb: `f[B, D]` L2-normalised text embeddings, row i paired with image i.
      logit_scale: float scalar `s` (already `exp`-ed and clamped, see `logit_scale_from_param`).
      axis_name: `None` for one device; inside `jax.shard_map`/`pmap`, the mesh axis (or tuple)
        over which the batch is split. The result is then the loss of the global batch, the
        same on every device, with exact gradients.
      exchange: how negatives cross devices: "all_gather", "ring" or "grouped" (see
        `contrastive_jax.parallel`).
      block_size: rows per block for the memory-efficient path (O(B·block) memory instead of
        O(B²)); `None` materialises the logits.
      impl: how the logit matrix is reduced: "auto" (dense without `block_size`, the blockwise
        XLA loop with it, on every backend), "dense", "blockwise", or "pallas" (the fused Triton
        kernel, CUDA GPUs only; ValueError elsewhere). See `tiled.pairwise_lse`.
      label_smoothing: ε in [0, 1).

    Returns:
      A float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.eye(3)
      >>> round(float(clip_loss(x, x, 10.0)), 4)
      0.0001

    References:
      Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
      ICML 2021, Fig. 3. open_clip `ClipLoss` (mlfoundations/open_clip, src/open_clip/loss.py).
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    logit_scale = _checks.scalar("logit_scale", logit_scale)
    _checks.in_unit_interval("label_smoothing", label_smoothing, closed_high=False)
    plan = parallel.plan_negatives(axis_name, exchange)

    row_lse, col_lse = parallel.softmax_lse(
        image_emb, text_emb, logit_scale, plan, block_size=block_size, impl=impl
    )
    positives = positive_logits(image_emb, text_emb, logit_scale)
    image_to_text = row_lse - positives
    text_to_image = col_lse - positives
    if label_smoothing:
        eps = label_smoothing
        mean_text = parallel.negatives_mean(text_emb.astype(jnp.float32), plan)
        mean_image = parallel.negatives_mean(image_emb.astype(jnp.float32), plan)
        row_mean_logit = logit_scale * (image_emb.astype(jnp.float32) @ mean_text)
        col_mean_logit = logit_scale * (text_emb.astype(jnp.float32) @ mean_image)
        image_to_text = row_lse - (1 - eps) * positives - eps * row_mean_logit
        text_to_image = col_lse - (1 - eps) * positives - eps * col_mean_logit
    return plan.mean(0.5 * (jnp.mean(image_to_text) + jnp.mean(text_to_image)))
