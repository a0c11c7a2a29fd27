"""Alignment and uniformity on the hypersphere (Wang & Isola), as losses, metrics and with CLIP."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.losses._clip import clip_loss

Array = jax.Array


def alignment_loss(
    x: Array, y: Array, *, alpha: float = 2.0, axis_name=None, exchange: str = "all_gather"
) -> Array:
    """`E ‖x_i − y_i‖^α` over positive pairs (lower is better aligned).

    Args:
      x, y: `f[N, D]` L2-normalised positive pairs; alpha: α (2 in the paper; α < 2 has an
        infinite gradient at x = y).
      axis_name, exchange: as in `clip_loss`: the mean over the global batch.

    References:
      Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
      Uniformity on the Hypersphere", ICML 2020, Eq. 4; github.com/SsnL/align_uniform.
    """
    x, y = _checks.embedding_pair(x, y, names=("x", "y"))
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    plan = _common.plan_for(axis_name, exchange, "alignment_loss")
    sq = jnp.sum(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=-1)
    # ‖·‖^α through the squared norm keeps the gradient finite at x = y for α ≥ 2.
    return plan.mean(jnp.mean(sq ** (alpha / 2)))


def uniformity_loss(x: Array, *, t: float = 2.0, axis_name=None, exchange: str = "all_gather") -> Array:
    """`log E_{i<j} exp(−t ‖x_i − x_j‖²)` over distinct pairs (lower is more uniform).

    Computed as a log-sum-exp in float32. For n points of a regular simplex it equals
    `−t (2 + 2/(n−1))`, the minimum for n ≤ D + 1.

    Args:
      x: `f[N, D]` L2-normalised, N ≥ 2; t: the Gaussian kernel's t (2 in the paper).
      axis_name, exchange: as in `clip_loss`: all pairs of the global batch (the points are
        gathered; every device computes the same value).

    References:
      Wang & Isola, ICML 2020, Eq. 5; github.com/SsnL/align_uniform.
    """
    x = _checks.float_array("x", x, rank=2, rank_hint="[N, D]")
    plan = _common.plan_for(axis_name, exchange, "uniformity_loss")
    (x,), _ = _common.gather_all(plan, x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 points, got {n}")
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t}")
    x32 = x.astype(jnp.float32)
    sq_norms = jnp.sum(x32 * x32, axis=-1)
    sq_dist = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x32 @ x32.T), 0.0)
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    return plan.mean(jax.nn.logsumexp(jnp.where(upper, -t * sq_dist, -jnp.inf)) - jnp.log(n * (n - 1) / 2))


def clip_align_uniform_loss(
    image_emb: Array,
    text_emb: Array,
    logit_scale: float | Array = 100.0,
    *,
    align_weight: float = 1.0,
    uniform_weight: float = 1.0,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """CLIP plus alignment and uniformity terms, against the "contrastive gap".

    `L = clip_loss(x, y, s) + w_a · alignment(x, y) + w_u · ½(uniformity(x) + uniformity(y))`
    with fixed scale s = 100 (τ = 0.01) and unit weights, the paper's setting. The uniformity of
    each modality is averaged (the paper adds uniformity for both). Every term is global under
    `axis_name`.

    Args:
      image_emb, text_emb: `f[N, D]` L2-normalised embeddings.
      logit_scale: the CLIP term's scale (100, fixed, in the paper).
      align_weight, uniform_weight: weights of the two extra terms (1 and 1).
      axis_name, exchange: for the CLIP term, as in `clip_loss`.

    References:
      Fahim, Murphy & Fyshe, "It's Not a Modality Gap: Characterizing and Addressing the
      Contrastive Gap", 2024; github.com/abrar-fahim/contrastive-gap.
    """
    parallel = dict(axis_name=axis_name, exchange=exchange)
    contrastive = clip_loss(image_emb, text_emb, logit_scale, **parallel)
    alignment = alignment_loss(image_emb, text_emb, **parallel)
    uniformity = 0.5 * (uniformity_loss(image_emb, **parallel) + uniformity_loss(text_emb, **parallel))
    return contrastive + align_weight * alignment + uniform_weight * uniformity
