"""CoCa: contrastive loss on unimodal embeddings plus a captioning loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, parallel
from contrastive_jax.losses._clip import clip_loss

Array = jax.Array


def _caption_sums(caption_logits, caption_labels, pad_id: int, label_smoothing: float):
    """(Σ token losses over non-pad labels, number of non-pad labels), both float32."""
    logits = _checks.float_array("caption_logits", caption_logits, rank=3, rank_hint="[B, T, V]")
    labels = _checks.int_array("caption_labels", caption_labels, rank=2, rank_hint="[B, T]")
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"caption_logits [B, T, V] and caption_labels [B, T] disagree: {logits.shape} vs {labels.shape}"
        )
    _checks.in_unit_interval("label_smoothing", label_smoothing, closed_high=False)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    vocab = logits.shape[-1]
    # Pad labels are masked out; clipping keeps their (discarded) gather in range.
    target_log_prob = jnp.take_along_axis(log_probs, jnp.clip(labels, 0, vocab - 1)[..., None], axis=-1)[
        ..., 0
    ]
    token_loss = -((1 - label_smoothing) * target_log_prob + label_smoothing * jnp.mean(log_probs, axis=-1))
    mask = labels != pad_id
    return jnp.sum(jnp.where(mask, token_loss, 0.0)), jnp.sum(mask).astype(jnp.float32)


def caption_loss(
    caption_logits: Array, caption_labels: Array, *, pad_id: int = 0, label_smoothing: float = 0.0
) -> Array:
    """Token cross-entropy averaged over the non-pad labels of the whole batch.

    `Σ_{b,t: label ≠ pad} −log softmax(logits_bt)[label_bt] / #{label ≠ pad}`, as PyTorch's
    `CrossEntropyLoss(ignore_index=pad_id)`; label smoothing ε mixes in `ε·mean_v(−log p_v)`
    (PyTorch's convention). A batch with no non-pad label has loss 0 (nothing to predict; its
    gradient is zero, never NaN).

    Args:
      caption_logits: `f[B, T, V]` decoder logits, already aligned with the labels (the model
        does the next-token shift).
      caption_labels: `int[B, T]` target token ids; `pad_id` entries are ignored.
      pad_id: id of the padding token.
      label_smoothing: ε in [0, 1).

    Returns:
      A float32 scalar.

    References:
      Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models", 2022, Eq. 2.
    """
    total, count = _caption_sums(caption_logits, caption_labels, pad_id, label_smoothing)
    return total / jnp.maximum(count, 1.0)


def coca_loss(
    image_emb: Array,
    text_emb: Array,
    logit_scale: Array,
    caption_logits: Array,
    caption_labels: Array,
    *,
    pad_id: int = 0,
    contrastive_weight: float = 1.0,
    caption_weight: float = 2.0,
    label_smoothing: float = 0.0,
    axis_name=None,
    exchange: str = "all_gather",
    block_size: int | None = None,
) -> tuple[Array, dict[str, Array]]:
    """CoCa's objective: `w_c · clip_loss + w_cap · caption_loss`.

    Equals open_clip's `CoCaLoss(caption_loss_weight=w_cap, clip_loss_weight=w_c,
    pad_id=pad_id)` summed. `label_smoothing` applies to the captioning term (the contrastive
    term is plain CLIP, as in CoCa and open_clip). Under `axis_name` both terms are global:
    the contrastive term as in `clip_loss`, the caption term as the mean over all non-pad
    tokens of the global batch (a psum of sums and counts, not a mean of per-device means).

    Args:
      image_emb, text_emb: `f[B, D]` L2-normalised unimodal embeddings.
      logit_scale: float scalar.
      caption_logits: `f[B, T, V]`; caption_labels: `int[B, T]` (see `caption_loss`).
      pad_id, label_smoothing: as in `caption_loss`.
      contrastive_weight, caption_weight: the weights (CoCa's λ_Con = 1, λ_Cap = 2).
      axis_name, exchange, block_size: as in `clip_loss`.

    Returns:
      `(total, {"contrastive": clip term, "caption": caption term})`, unweighted terms.

    References:
      Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models", 2022, Eq. 3.
    """
    contrastive = clip_loss(
        image_emb, text_emb, logit_scale, axis_name=axis_name, exchange=exchange, block_size=block_size
    )
    if caption_logits.shape[0] != image_emb.shape[0]:
        raise ValueError(
            f"caption_logits batch {caption_logits.shape[0]} differs from image_emb batch {image_emb.shape[0]}"
        )
    total, count = _caption_sums(caption_logits, caption_labels, pad_id, label_smoothing)
    plan = parallel.plan_negatives(axis_name, exchange)
    caption = plan.sum(total) / jnp.maximum(plan.sum(count), 1.0)
    weighted = contrastive_weight * contrastive + caption_weight * caption
    return weighted, {"contrastive": contrastive, "caption": caption}
