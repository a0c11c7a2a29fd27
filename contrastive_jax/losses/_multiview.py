"""Multi-view contrastive losses: MV-InfoNCE and MV-DHEL (Koromilas et al., 2025)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.losses._decoupled import _dhel_terms, _pair_alignment
from contrastive_jax.losses._simclr import _positive
from contrastive_jax.tiled import similarity

Array = jax.Array


def _check_views(views) -> Array:
    views = _checks.float_array("views", views, rank=3, rank_hint="[V, B, D]")
    if views.shape[0] < 2:
        raise ValueError(f"need at least 2 views, got views of shape {views.shape}")
    if views.shape[1] < 1:
        raise ValueError(f"views must hold at least one sample, got shape {views.shape}")
    return views


def mv_infonce_loss(
    views: Array, *, temperature: float = 0.1, axis_name=None, exchange: str = "all_gather"
) -> Array:
    """MV-InfoNCE: all V views of a sample in one term.

    `ℓ_i = −log( Σ_{l≠m} e^{v^l_i·v^m_i/τ} / Σ_l Σ_{(m, j) ≠ (l, i)} e^{v^l_i·v^m_j/τ} )`: the
    numerator sums every ordered pair of the sample's views; the denominator sums, for each view
    as anchor, every other embedding in the batch (other views of the same sample included, as in
    the authors' code; the paper's written form leaves out same-view negatives, the code keeps
    them). For V = 2 it is ≥ NT-Xent (log of a mean ≥ mean of logs), equal for identical views.

    Args:
      views: `f[V, B, D]` L2-normalised embeddings, V ≥ 2 views of B samples.
      temperature: τ (0.1, the authors' ImageNet-1k setting).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"); samples are split.

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning", 2025;
      github.com/pakoromilas/Multi-View-CL (models/losses.py, `MVINFONCE`).
    """
    views = _check_views(views)
    _positive("temperature", temperature)
    plan = _common.plan_for(axis_name, exchange, "mv_infonce_loss")
    v, b, d = views.shape
    (all_views,), offset = _common.gather_all(plan, jnp.swapaxes(views, 0, 1))  # [n, V, D]
    n = all_views.shape[0]
    candidates = jnp.swapaxes(all_views, 0, 1).reshape(v * n, d)  # view-major
    cand_view = jnp.repeat(jnp.arange(v), n)
    cand_sample = jnp.tile(jnp.arange(n), v)
    rows = offset + jnp.arange(b)
    denominators = []
    for view in range(v):
        logits = similarity(views[view], candidates) / temperature  # [b, V·n]
        is_self = (cand_view[None, :] == view) & (cand_sample[None, :] == rows[:, None])
        denominators.append(_common.masked_logsumexp(logits, ~is_self))
    log_denominator = jax.nn.logsumexp(jnp.stack(denominators), axis=0)
    log_numerator = _pair_alignment_ordered(views, temperature)
    return plan.mean(jnp.mean(log_denominator - log_numerator))


def _pair_alignment_ordered(views, temperature):
    """`f32[b]`: log Σ_{l≠m} e^{v_l·v_m/τ} (each unordered pair counted twice)."""
    return _pair_alignment(views, temperature) + jnp.log(2.0)


def mv_dhel_loss(
    views: Array, *, temperature: float = 0.1, axis_name=None, exchange: str = "all_gather"
) -> Array:
    """MV-DHEL: multi-view alignment over the product of each view's own uniformity term.

    `ℓ_i = −log( Σ_{l<m} e^{v^l_i·v^m_i/τ} / Π_l Σ_{j≠i} e^{v^l_i·v^l_j/τ} )`, averaged over samples.
    With V = 2 it is exactly `dhel_loss`.

    Args:
      views: `f[V, B, D]` L2-normalised embeddings, V ≥ 2.
      temperature: τ (0.1).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped").

    Raises:
      ValueError: a batch of one sample (across devices): there are no negatives.

    References:
      Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning", 2025;
      github.com/pakoromilas/Multi-View-CL (models/losses.py, `MVDHEL`).
    """
    views = _check_views(views)
    _positive("temperature", temperature)
    plan = _common.plan_for(axis_name, exchange, "mv_dhel_loss")
    _common.require_negatives("mv_dhel_loss", views.shape[1], plan)
    return plan.mean(jnp.mean(_dhel_terms(views, temperature, plan)))
