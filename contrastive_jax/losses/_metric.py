"""Metric-learning terms over the pairs of a labelled batch: TCM (Zhang et al.) and UNPG (Jung et al.)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.losses._simclr import _positive
from contrastive_jax.losses._temperature import _concrete_values
from contrastive_jax.tiled import similarity

Array = jax.Array


def class_labels(name: str, labels, num_classes: int | None, batch: int) -> Array:
    """`int[B]` labels of a batch of `batch`; values in `[0, num_classes)` checked when concrete.

    Under `jit` or `shard_map` the values are traced and not checked (an out-of-range label then
    gives a meaningless value, NaN or a clamped lookup): check them before the step.
    """
    labels = _checks.int_array(name, labels, rank=1, rank_hint="[B]")
    if labels.shape[0] != batch:
        raise ValueError(f"{name} has {labels.shape[0]} entries for a batch of {batch}")
    values = _concrete_values(labels) if num_classes is not None else None
    if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got values in [{values.min()}, {values.max()}]"
        )
    return labels


def _reduce_over_devices(value: Array, plan) -> Array:
    """The global mean of a value already complete over the plan's gather axes (grouped: over groups)."""
    rest = tuple(a for a in plan.mean_axes if a not in plan.gather_axes)
    return jax.lax.pmean(value, rest) if rest else value


def tcm_regularizer(
    z: Array,
    labels: Array,
    *,
    margin_pos: float = 0.9,
    margin_neg: float = 0.5,
    lambda_pos: float = 1.0,
    lambda_neg: float = 1.0,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """Threshold-consistent margin: penalises positive pairs below m⁺ and negative pairs above m⁻.

    Over the ordered pairs i ≠ j of the batch with cosine `s_ij = ⟨z_i, z_j⟩`,
    `TCM = λ⁺ · mean_{y_i = y_j, s_ij ≤ m⁺} (m⁺ − s_ij) + λ⁻ · mean_{y_i ≠ y_j, s_ij ≥ m⁻} (s_ij − m⁻)`;
    a term whose set is empty is 0 (so a batch of one sample gives 0). The means are over the
    pairs inside the margins only (a pair at exactly m⁺ counts in the denominator with a zero
    hinge), as in pytorch-metric-learning. It is a regulariser: add it to a base metric loss.

    Across devices the pairs are (local i, every j of the gathered batch), and the four sums and
    counts are summed over the devices, so the value (and its gradient) is the global one. With
    `exchange="grouped"` the pairs stay within each group and the groups' values are averaged.

    Args:
      z: `f[B, D]` L2-normalised embeddings (the reference normalises inside; pass
        `l2_normalize(raw)` to match it on raw features).
      labels: `int[B]` class labels.
      margin_pos: m⁺ in [−1, 1] (0.9, pytorch-metric-learning's default).
      margin_neg: m⁻ in [−1, 1] (0.5, same source).
      lambda_pos, lambda_neg: λ⁺, λ⁻ ≥ 0 (1.0 and 1.0, same source).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"; labels are gathered too).

    Returns:
      A float32 scalar (the same on every device).

    Raises:
      ValueError: wrong ranks or sizes, margins outside [−1, 1], a negative λ, `exchange="ring"`.
      TypeError: non-float `z` or non-integer `labels`.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> round(float(tcm_regularizer(z, jnp.array([0, 0, 1]))), 4)  # (0.9 − 0.6) + (0.8 − 0.5)
      0.6

    References:
      Zhang et al., "Threshold-Consistent Margin Loss for Open-World Deep Metric Learning", CVPR
      2023 (arXiv 2307.04047). The authors' repository was not located; this follows
      pytorch-metric-learning's `ThresholdConsistentMarginLoss` (v2.7 or later,
      losses/tcm_loss.py), which returns the regulariser alone.
    """
    z = _checks.float_array("z", z, rank=2, rank_hint="[B, D]")
    labels = class_labels("labels", labels, None, z.shape[0])
    for name, value in (("margin_pos", margin_pos), ("margin_neg", margin_neg)):
        if not -1.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [-1, 1] (a cosine), got {value}")
    _checks.nonnegative("lambda_pos", lambda_pos)
    _checks.nonnegative("lambda_neg", lambda_neg)
    plan = _common.plan_for(axis_name, exchange, "tcm_regularizer")
    (z_all, labels_all), offset = _common.gather_all(plan, z, labels)
    sims = similarity(z, z_all)
    rows = offset + jnp.arange(z.shape[0])
    not_self = rows[:, None] != jnp.arange(z_all.shape[0])[None, :]
    same = labels[:, None] == labels_all[None, :]
    low_positive = same & not_self & (sims <= margin_pos)
    high_negative = ~same & (sims >= margin_neg)
    sums = jnp.stack([
        jnp.sum(jnp.where(low_positive, margin_pos - sims, 0.0)),
        jnp.sum(low_positive, dtype=jnp.float32),
        jnp.sum(jnp.where(high_negative, sims - margin_neg, 0.0)),
        jnp.sum(high_negative, dtype=jnp.float32),
    ])  # fmt: skip
    if plan.gather_axes:
        sums = jax.lax.psum(sums, plan.gather_axes)
    positive_term = sums[0] / jnp.maximum(sums[1], 1.0)  # an empty set: 0 / 1
    negative_term = sums[2] / jnp.maximum(sums[3], 1.0)
    return _reduce_over_devices(lambda_pos * positive_term + lambda_neg * negative_term, plan)


def box_and_whisker_keep(values: Array, valid: Array, whisker: float) -> Array:
    """Which valid values lie within Tukey's fences `[Q1 − w·IQR, Q3 + w·IQR]` of the valid ones.

    With l valid values sorted ascending as g, `Q1 = g[⌊l/4⌋]` and `Q3 = g[⌊3l/4⌋]` (0-based, no
    interpolation, as UNPG's `box_and_whisker_algorithm`). Static shapes: invalid entries are
    sorted last as +∞ and the quartiles read at an index computed from l. The fences carry no
    gradient (the selection is piecewise constant).

    Args:
      values: `f32[M]`; valid: `bool[M]`; whisker: w ≥ 0.

    Returns:
      `bool[M]`, False wherever `valid` is False.
    """
    ordered = jnp.sort(jnp.where(valid, jax.lax.stop_gradient(values), jnp.inf))
    count = jnp.sum(valid, dtype=jnp.int32)
    lower_quartile, upper_quartile = ordered[count // 4], ordered[(3 * count) // 4]
    spread = upper_quartile - lower_quartile
    return (
        valid & (values >= lower_quartile - whisker * spread) & (values <= upper_quartile + whisker * spread)
    )


def unpg_loss(
    margin_logits: Array,
    z: Array,
    labels: Array,
    *,
    scale: float = 64.0,
    whisker: float = 1.5,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """Unified negative pair generation: a margin head's cross-entropy with the batch's negative pairs.

    The cosines of the batch's negative pairs `g = {⟨z_i, z_j⟩ : i < j, y_i ≠ y_j}` are filtered by
    a box-and-whisker rule (Q1, Q3 the ⌊l/4⌋-th and ⌊3l/4⌋-th smallest of the l values; keep
    `Q1 − w·IQR ≤ g ≤ Q3 + w·IQR`), and the kept values `a_1..a_M` join every row's logits:
    `L = mean_r CE([s·m_r1, …, s·m_rC, s·a_1, …, s·a_M], y_r)`. The extra columns are not detached:
    their gradient pushes negative pairs apart. With no negative pair (all labels equal) it is
    the head's plain cross-entropy. UNPG replaces the head's loss (it is not added to it).

    Across devices z and the labels are gathered: the pairs are those of the global batch (the
    authors train with DataParallel, so theirs are too). Every device sorts the B(B−1)/2 pair
    cosines, O(B²) memory.

    Args:
      margin_logits: `f[B, C]` the margin head's cosine logits, margin already applied to each
        row's target column (ArcFace `cos(θ + m)`, CosFace `cos θ − m`), not yet scaled.
      z: `f[B, D]` L2-normalised embeddings (the head's input, normalised).
      labels: `int[B]` identities in [0, C) (checked when concrete).
      scale: s > 0 (64, the authors' head config for ArcFace and CosFace).
      whisker: w ≥ 0 (1.5, the authors' config; the class default 1.0 is overridden there).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped").

    Returns:
      A float32 scalar.

    Raises:
      ValueError: wrong ranks or row counts, labels out of range (when concrete), `scale <= 0`,
        `whisker < 0`, `exchange="ring"`.
      TypeError: non-float `margin_logits` / `z` or non-integer `labels`.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> head = jnp.array([[0.5, 0.1], [0.4, 0.0], [0.1, 0.6]])
      >>> round(float(unpg_loss(head, z, jnp.array([0, 0, 1]), scale=10.0)), 4)
      3.0655

    References:
      Jung et al., "Unified Negative Pair Generation toward Well-discriminative Feature Space for
      Face Recognition", 2022 (arXiv 2203.11593); github.com/Jung-Jun-Uk/UNPG
      (recognition/models/build.py `box_and_whisker_algorithm`, `convert_label_to_similarity`;
      recognition/models/head.py `UNPG`; recognition/data/head.zoo.yaml).
    """
    margin_logits = _checks.float_array("margin_logits", margin_logits, rank=2, rank_hint="[B, C]")
    z = _checks.float_array("z", z, rank=2, rank_hint="[B, D]")
    batch, num_classes = margin_logits.shape
    if z.shape[0] != batch:
        raise ValueError(f"margin_logits has {batch} rows and z has {z.shape[0]}: they must match")
    labels = class_labels("labels", labels, num_classes, batch)
    _positive("scale", scale)
    _checks.nonnegative("whisker", whisker)
    plan = _common.plan_for(axis_name, exchange, "unpg_loss")
    (z_all, labels_all), _ = _common.gather_all(plan, z, labels)
    first, second = np.triu_indices(z_all.shape[0], k=1)
    pair_cosines = similarity(z_all, z_all)[first, second]
    kept = box_and_whisker_keep(pair_cosines, labels_all[first] != labels_all[second], whisker)
    extra = jnp.broadcast_to(jnp.where(kept, pair_cosines, -jnp.inf), (batch, pair_cosines.shape[0]))
    head = margin_logits.astype(jnp.float32)
    logits = scale * jnp.concatenate([head, extra], axis=1)
    target = scale * jnp.take_along_axis(head, labels[:, None], axis=1)[:, 0]
    return plan.mean(jnp.mean(jax.nn.logsumexp(logits, axis=1) - target))
