"""Decoupled contrastive losses: DCL, DCLW (Yeh et al.) and DHEL (Koromilas et al.)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.losses._simclr import _positive, _two_view_logits
from contrastive_jax.tiled import similarity

Array = jax.Array


def _decoupled_terms(z_a, z_b, temperature, plan):
    """Per-anchor `(positive logit, log-sum-exp over the negatives only)` for the 2b local anchors."""
    logits, self_id, positive_id = _two_view_logits(z_a, z_b, temperature, plan)
    cols = jnp.arange(logits.shape[1])[None, :]
    negatives = (cols != self_id[:, None]) & (cols != positive_id[:, None])
    positive = jnp.take_along_axis(logits, positive_id[:, None], axis=1)[:, 0]
    return positive, _common.masked_logsumexp(logits, negatives)


def dcl_loss(
    z_a: Array, z_b: Array, *, temperature: float = 0.1, axis_name=None, exchange: str = "all_gather"
) -> Array:
    """Decoupled contrastive loss: InfoNCE with the positive removed from the denominator.

    `ℓ_i = −s(i, p(i))/τ + log Σ_{k ∉ {i, p(i)}} e^{s(i, k)/τ}` over all 2N anchors (SimCLR's
    set-up), averaged. NT-Xent = DCL + mean softplus(pos − lse_neg), so DCL ≤ NT-Xent. The
    authors' example calls their loss once per direction and sums the two; this is the mean of
    the two directions (half of that sum).

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views.
      temperature: τ (0.1 in the paper's ImageNet experiments).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped").

    Returns:
      A float32 scalar.

    Raises:
      ValueError: a batch of one sample (across devices): there are no negatives.

    References:
      Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, Eq. 6.
    """
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    _positive("temperature", temperature)
    plan = _common.plan_for(axis_name, exchange, "dcl_loss")
    _common.require_negatives("dcl_loss", z_a.shape[0], plan)
    positive, negative_lse = _decoupled_terms(z_a, z_b, temperature, plan)
    return plan.mean(jnp.mean(negative_lse - positive))


def dclw_loss(
    z_a: Array,
    z_b: Array,
    *,
    temperature: float = 0.1,
    sigma: float = 0.5,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """DCL with von Mises-Fisher weighting of the positive term.

    As `dcl_loss`, but the positive logit of pair i is scaled by
    `w_i = 2 − N · softmax_i(⟨z_a_i, z_b_i⟩ / σ)` (softmax over the N pairs of the global batch,
    so the weights average to 1, the paper's `2 − exp(s_i/σ) / E_j[exp(s_j/σ)]`): easy positives
    (high similarity) weigh less. The weight is differentiated through, as in the widely used
    PyTorch implementation (github.com/raminnakhli/Decoupled-Contrastive-Learning). That code's
    first releases (before its commit f876c83, November 2021, and in copies made from them)
    compute `2 − softmax_i(…)` without the factor N, weights near 2, which gives other values (at
    B = 8, τ = 0.2, σ = 0.5 on random unit vectors: 5.3368 with N, 3.6515 without); its current
    code and lightly's `DCLWLoss` have N, as here.

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views.
      temperature: τ (0.1); sigma: σ of the weighting (0.5, the paper's value).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped").

    Raises:
      ValueError: a batch of one sample (across devices): there are no negatives.

    References:
      Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, Eq. 7 (DCLW).
    """
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    _positive("temperature", temperature)
    _positive("sigma", sigma)
    plan = _common.plan_for(axis_name, exchange, "dclw_loss")
    _common.require_negatives("dclw_loss", z_a.shape[0], plan)
    pair_sim = jnp.sum(z_a.astype(jnp.float32) * z_b.astype(jnp.float32), axis=-1)
    (all_pair_sim,), offset = _common.gather_all(plan, pair_sim)
    n = all_pair_sim.shape[0]
    weights = 2.0 - n * jax.nn.softmax(all_pair_sim / sigma)
    local_weights = jax.lax.dynamic_slice_in_dim(weights, offset, z_a.shape[0])
    positive, negative_lse = _decoupled_terms(z_a, z_b, temperature, plan)
    weighted_positive = jnp.tile(local_weights, 2) * positive
    return plan.mean(jnp.mean(negative_lse - weighted_positive))


def dhel_loss(
    z_a: Array, z_b: Array, *, temperature: float = 0.1, axis_name=None, exchange: str = "all_gather"
) -> Array:
    """Decoupled hyperspherical energy loss: alignment across views, uniformity within each view.

    `ℓ_i = −log( e^{a_i·b_i/τ} / (Σ_{j≠i} e^{a_i·a_j/τ} · Σ_{j≠i} e^{b_i·b_j/τ}) )`, averaged over
    the N pairs: negatives come only from the anchor's own view, for both views.

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views.
      temperature: τ (0.1, the authors' ImageNet-1k setting).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped").

    Raises:
      ValueError: a batch of one sample (across devices): there are no negatives.

    References:
      Koromilas et al., "Bridging Mini-Batch and Asymptotic Analysis in Contrastive Learning:
      From InfoNCE to Kernel-Based Losses", ICML 2024; github.com/pakoromilas/DHEL-KCL and the
      two-view case of `MVDHEL` in github.com/pakoromilas/Multi-View-CL (models/losses.py).
    """
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    _positive("temperature", temperature)
    plan = _common.plan_for(axis_name, exchange, "dhel_loss")
    _common.require_negatives("dhel_loss", z_a.shape[0], plan)
    return plan.mean(jnp.mean(_dhel_terms(jnp.stack([z_a, z_b]), temperature, plan)))


def _same_view_energy(views, temperature, plan):
    """`f32[V, b]`: log Σ_{j≠i} e^{v_i·v_j/τ} within each view, over the global batch."""
    (all_views,), offset = _common.gather_all(plan, jnp.swapaxes(views, 0, 1))  # gather along samples
    all_views = jnp.swapaxes(all_views, 0, 1)
    rows = offset + jnp.arange(views.shape[1])
    not_self = rows[:, None] != jnp.arange(all_views.shape[1])[None, :]
    energies = [
        _common.masked_logsumexp(similarity(views[v], all_views[v]) / temperature, not_self)
        for v in range(views.shape[0])
    ]
    return jnp.stack(energies)


def _pair_alignment(views, temperature):
    """`f32[b]`: log Σ_{l<m} e^{v_l·v_m/τ} over the unordered view pairs of each sample."""
    v = views.shape[0]
    views32 = views.astype(jnp.float32)
    logits = [
        jnp.sum(views32[first] * views32[second], axis=-1) / temperature
        for first in range(v)
        for second in range(first + 1, v)
    ]
    return jax.nn.logsumexp(jnp.stack(logits), axis=0)


def _dhel_terms(views, temperature, plan):
    return jnp.sum(_same_view_energy(views, temperature, plan), axis=0) - _pair_alignment(views, temperature)
