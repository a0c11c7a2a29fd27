"""Distillation of a contrastive teacher's similarity distributions into a student."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.losses import _common

Array = jax.Array


def _soft_cross_entropy(student_logits: Array, teacher_logits: Array) -> Array:
    """Per row: `−Σ_j softmax(teacher)_j · log_softmax(student)_j`."""
    targets = jax.nn.softmax(teacher_logits, axis=-1)
    return -jnp.sum(targets * jax.nn.log_softmax(student_logits, axis=-1), axis=-1)


def distill_clip_loss(
    image_emb: Array,
    text_emb: Array,
    logit_scale,
    teacher_image_emb: Array,
    teacher_text_emb: Array,
    teacher_logit_scale,
    *,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """Cross-entropy of the student's image↔text similarity rows against the teacher's softmax.

    With `S = s · image_emb @ text_embᵀ` (student) and `T = t · teacher_image_emb @ teacher_text_embᵀ`
    (teacher) over the global batch,
    `L = ½ [mean_i H(softmax(T_i·), log_softmax(S_i·)) + mean_j H(softmax(T_·j), log_softmax(S_·j))]`
    with `H(p, log q) = −Σ p log q`: open_clip's `DistillClipLoss` distillation term. The teacher
    is a constant (no gradient reaches it). A student equal to its teacher is at the entropy of
    the teacher's distributions, the term's minimum.

    Args:
      image_emb, text_emb: `f[B, D]` the student's L2-normalised embeddings (B local rows).
      logit_scale: the student's multiplicative scale.
      teacher_image_emb, teacher_text_emb: `f[B, D']` the teacher's (D' may differ from D).
      teacher_logit_scale: the teacher's scale.
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"): both models' rows of
        the global batch are gathered, so the student and the teacher see the same negatives.

    Returns:
      A float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from contrastive_jax import losses
      >>> e = jnp.eye(3)
      >>> round(float(losses.distill_clip_loss(e, e, 1.0, e, e, 1.0)), 4)
      0.9753

    References:
      Cherti et al., "Reproducible scaling laws for contrastive language-image learning",
      CVPR 2023 (open_clip; `DistillClipLoss`); Hinton et al., "Distilling the Knowledge in a
      Neural Network", 2015.
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    teacher_image_emb, teacher_text_emb = _checks.embedding_pair(
        teacher_image_emb, teacher_text_emb, names=("teacher_image_emb", "teacher_text_emb")
    )
    if teacher_image_emb.shape[0] != image_emb.shape[0]:
        raise ValueError(
            f"the teacher's batch ({teacher_image_emb.shape[0]}) differs from the student's ({image_emb.shape[0]})"
        )
    plan = _common.plan_for(axis_name, exchange, "distill_clip_loss")
    teacher_image_emb, teacher_text_emb = jax.lax.stop_gradient((teacher_image_emb, teacher_text_emb))
    teacher_logit_scale = jax.lax.stop_gradient(jnp.asarray(teacher_logit_scale, jnp.float32))
    scale = jnp.asarray(logit_scale, jnp.float32)
    (all_image, all_text, all_teacher_image, all_teacher_text), _ = _common.gather_all(
        plan, image_emb, text_emb, teacher_image_emb, teacher_text_emb
    )
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    image_rows = _soft_cross_entropy(
        scale * f32(image_emb) @ f32(all_text).T,
        teacher_logit_scale * f32(teacher_image_emb) @ f32(all_teacher_text).T,
    )
    text_rows = _soft_cross_entropy(
        scale * f32(text_emb) @ f32(all_image).T,
        teacher_logit_scale * f32(teacher_text_emb) @ f32(all_teacher_image).T,
    )
    return plan.mean(0.5 * (jnp.mean(image_rows) + jnp.mean(text_rows)))
