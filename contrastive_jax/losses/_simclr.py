"""NT-Xent (SimCLR) and supervised contrastive learning (SupCon)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.tiled import similarity

Array = jax.Array


def _two_view_logits(z_a, z_b, temperature, plan):
    """Logits of the 2b local anchors against the 2n global candidates, and the anchors' ids.

    Candidates are ordered `[all z_a; all z_b]`; anchor `a_i` is candidate `offset + i`, anchor
    `b_i` is candidate `n + offset + i`.
    """
    (a_all, b_all), offset = _common.gather_all(plan, z_a, z_b)
    n, b = a_all.shape[0], z_a.shape[0]
    candidates = jnp.concatenate([a_all, b_all])
    anchors = jnp.concatenate([z_a, z_b])
    logits = similarity(anchors, candidates) / temperature
    ids_a = offset + jnp.arange(b)
    self_id = jnp.concatenate([ids_a, n + ids_a])
    positive_id = jnp.concatenate([n + ids_a, ids_a])
    return logits, self_id, positive_id


def nt_xent_loss(
    z_a: Array, z_b: Array, *, temperature: float = 0.1, axis_name=None, exchange: str = "all_gather"
) -> Array:
    """NT-Xent: each of the 2N views must pick its partner among the other 2N − 1.

    `ℓ_i = −log( e^{s(i, p(i))/τ} / Σ_{k ≠ i} e^{s(i, k)/τ} )` over all 2N anchors (both views of
    each pair), averaged. SimCLR's official TF code returns twice this (it sums the two
    directions' means). `optax.losses.ntxent(embeddings, labels, temperature)` agrees with
    this function when called on `concat([z_a, z_b])` with labels `concat([arange N, arange N])`
    (one positive per anchor); with more positives per label it removes the anchor's other
    positives from each denominator, which this loss (and SupCon) does not.

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views, row i of each a positive pair.
      temperature: τ (SimCLR: 0.1 for ImageNet, 0.5 for CIFAR-10).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped").

    Returns:
      A float32 scalar.

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML
      2020, Eq. 1; github.com/google-research/simclr (objective.py, `add_contrastive_loss`).
    """
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    _positive("temperature", temperature)
    plan = _common.plan_for(axis_name, exchange, "nt_xent_loss")
    logits, self_id, positive_id = _two_view_logits(z_a, z_b, temperature, plan)
    cols = jnp.arange(logits.shape[1])
    not_self = cols[None, :] != self_id[:, None]
    positive = jnp.take_along_axis(logits, positive_id[:, None], axis=1)[:, 0]
    return plan.mean(jnp.mean(_common.masked_logsumexp(logits, not_self) - positive))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def supcon_loss(
    features: Array,
    labels: Array | None = None,
    *,
    mask: Array | None = None,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
    contrast_mode: str = "all",
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """Supervised contrastive loss (L_out): every same-label view is a positive.

    For anchor a with positives P(a) (same label, not a itself) among the contrast views A(a)
    (all views but a): `ℓ_a = −(τ/τ_base) · (1/|P(a)|) Σ_{p ∈ P(a)} log( e^{z_a·z_p/τ} /
    Σ_{k ∈ A(a)} e^{z_a·z_k/τ} )`, averaged over anchors. An anchor without positives contributes
    0 but counts in the mean (as the authors' code does). With neither labels nor mask, the
    positives are the other views of the same sample: SimCLR (NT-Xent for two views).

    Args:
      features: `f[N, V, D]` L2-normalised, V views per sample.
      labels: optional `int[N]` class labels.
      mask: optional `[N, N]` positive mask (`mask[i, j]`: j is a positive of i); not with labels,
        and single-device only.
      temperature, base_temperature: τ and τ_base (0.07 and 0.07 in the authors' code).
      contrast_mode: "all" (every view is an anchor) or "one" (only view 0 anchors).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"); labels are gathered too.

    Returns:
      A float32 scalar.

    References:
      Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. 2 (L_out);
      github.com/HobbitLong/SupContrast (losses.py, `SupConLoss`).
    """
    features = _checks.float_array("features", features, rank=3, rank_hint="[N, V, D]")
    _checks.one_of("contrast_mode", contrast_mode, ("all", "one"))
    _positive("temperature", temperature)
    _positive("base_temperature", base_temperature)
    if labels is not None and mask is not None:
        raise ValueError("pass labels or mask, not both")
    n, views, _ = features.shape
    plan = _common.plan_for(axis_name, exchange, "supcon_loss")
    if mask is not None and not plan.is_local:
        raise ValueError("supcon_loss with an explicit mask is single-device; pass labels under axis_name")
    if labels is not None:
        labels = _checks.int_array("labels", labels, rank=1, rank_hint="[N]")
        if labels.shape[0] != n:
            raise ValueError(f"labels has {labels.shape[0]} entries for {n} samples")

    (all_features,), offset = _common.gather_all(plan, features)
    n_all = all_features.shape[0]
    contrast = jnp.concatenate([all_features[:, v] for v in range(views)])  # view-major, [V·n_all, D]
    anchor_views = range(views) if contrast_mode == "all" else range(1)
    anchors = jnp.concatenate([features[:, v] for v in anchor_views])  # [A·n, D]
    logits = similarity(anchors, contrast) / temperature
    anchor_sample = jnp.tile(offset + jnp.arange(n), len(anchor_views))
    anchor_view = jnp.repeat(jnp.arange(len(anchor_views)), n)
    contrast_sample = jnp.tile(jnp.arange(n_all), views)
    contrast_view = jnp.repeat(jnp.arange(views), n_all)
    is_self = (anchor_sample[:, None] == contrast_sample[None, :]) & (
        anchor_view[:, None] == contrast_view[None, :]
    )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (n, n):
            raise ValueError(f"mask must be [N, N] = {(n, n)}, got {mask.shape}")
        same = mask.astype(bool)[anchor_sample[:, None], contrast_sample[None, :]]
    else:
        # Without labels every sample is its own class (ids are global, hence unique).
        sample_labels = offset + jnp.arange(n) if labels is None else labels
        (all_labels,), _ = _common.gather_all(plan, sample_labels)
        same = all_labels[anchor_sample][:, None] == all_labels[contrast_sample][None, :]
    positives = same & ~is_self
    log_prob = logits - _common.masked_logsumexp(logits, ~is_self)[:, None]
    num_pos = jnp.sum(positives, axis=1)
    mean_log_prob = jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1) / jnp.maximum(num_pos, 1)
    return plan.mean(jnp.mean(-(temperature / base_temperature) * mean_log_prob))
