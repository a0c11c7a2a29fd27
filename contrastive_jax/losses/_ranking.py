"""AUC-driven retrieval loss (MW loss) and the AUC metric it optimises."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks

Array = jax.Array


def _check(scores, labels):
    scores = _checks.float_array("scores", scores)
    if scores.ndim < 1:
        raise ValueError("scores must have at least one (candidate) axis")
    labels = jnp.asarray(labels)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} must match scores {scores.shape}")
    if not (jnp.issubdtype(labels.dtype, jnp.bool_) or jnp.issubdtype(labels.dtype, jnp.integer)):
        raise TypeError(f"labels must be boolean (or 0/1 integers), got dtype {labels.dtype}")
    return scores.astype(jnp.float32), labels.astype(bool)


def _pairs(scores, labels):
    """`[..., K, K]` differences s_neg − s_pos and the mask of (positive, negative) pairs."""
    diff = scores[..., None, :] - scores[..., :, None]  # [..., pos index, neg index]
    mask = labels[..., :, None] & ~labels[..., None, :]
    return diff, mask


def mw_loss(scores: Array, labels: Array, *, scale: float = 1.0) -> Array:
    """Mann-Whitney loss: binary cross-entropy on every positive-minus-negative score difference.

    `L = mean over (pos p, neg n) of −log σ(scale·(s_p − s_n)) = softplus(scale·(s_n − s_p))`,
    averaged per row (query) and then over rows that have both a positive and a negative. It is a
    smooth upper bound of 1 − AUC up to log 2: `L ≥ log 2 · (1 − AUC)`.

    Args:
      scores: `f[..., K]` scores of K candidates per query (e.g. one row of `s·x yᵀ`).
      labels: `bool[..., K]` which candidates are relevant.
      scale: multiplies the differences (a temperature's inverse).

    References:
      "Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval", 2025 (MW loss);
      Mann & Whitney, 1947.
    """
    scores, labels = _check(scores, labels)
    diff, mask = _pairs(scores, labels)
    per_pair = jnp.where(mask, jax.nn.softplus(scale * diff), 0.0)
    pairs = jnp.sum(mask, axis=(-2, -1))
    per_row = jnp.sum(per_pair, axis=(-2, -1)) / jnp.maximum(pairs, 1)
    valid = pairs > 0
    return jnp.sum(jnp.where(valid, per_row, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def auc(scores: Array, labels: Array) -> Array:
    """Area under the ROC curve per row: `U / (n₊ n₋)`, ties counted ½ (Mann-Whitney U).

    Returns `f32[...]` (NaN for a row without positives or without negatives, where AUC is
    undefined).
    """
    scores, labels = _check(scores, labels)
    diff, mask = _pairs(scores, labels)
    wins = jnp.where(mask, jnp.where(diff < 0, 1.0, jnp.where(diff == 0, 0.5, 0.0)), 0.0)
    pairs = jnp.sum(mask, axis=(-2, -1))
    return jnp.where(pairs > 0, jnp.sum(wins, axis=(-2, -1)) / jnp.maximum(pairs, 1), jnp.nan)
