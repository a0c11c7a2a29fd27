"""Long-tailed recognition: subclass-balancing contrastive learning (SBCL, Hou et al.)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.losses._metric import class_labels
from contrastive_jax.losses._simclr import _positive, _two_view_logits
from contrastive_jax.losses._temperature import _concrete_values

Array = jax.Array


def _mean_negative_log_prob(logits: Array, positives: Array, contrast: Array) -> Array:
    """`−mean_{p ∈ positives} [logits_p − lse_{a ∈ contrast} logits_a]` per row (rows have a positive)."""
    log_prob = logits - _common.masked_logsumexp(logits, contrast)[:, None]
    total = jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1)
    return -total / jnp.sum(positives, axis=1)


def _check_sbcl_values(class_temperatures, labels, subclass_labels) -> None:
    """Value checks that need concrete arrays (skipped, silently, under jit / shard_map)."""
    temperatures = _concrete_values(class_temperatures)
    if temperatures is not None and not np.all(temperatures > 0):
        raise ValueError(f"class_temperatures must all be > 0, got {temperatures.tolist()}")
    classes, subclasses = _concrete_values(labels), _concrete_values(subclass_labels)
    if classes is None or subclasses is None:
        return
    for sub in np.unique(subclasses):
        owners = np.unique(classes[subclasses == sub])
        if owners.size > 1:
            raise ValueError(
                f"subclass_labels must be unique across classes (offset each class's cluster ids, as the "
                f"authors do): subclass {sub} holds samples of classes {owners.tolist()}"
            )


def sbcl_loss(
    z_a: Array,
    z_b: Array,
    labels: Array,
    subclass_labels: Array,
    class_temperatures: Array,
    *,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    gamma: float = 0.25,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """SBCL: SupCon over subclasses plus a class-level term that contrasts only other subclasses.

    Two views stack into 2N anchors; anchor r has class c_r, subclass k_r (a cluster of its
    class) and other view p(r). With `s_ra = ⟨z_r, z_a⟩`:
    `L_sub(r) = −mean_{p≠r, k_p=k_r} [s_rp/τ − lse_{a≠r} s_ra/τ]` (SupCon on subclass labels), and
    with `A_r = {p(r)} ∪ {a : k_a ≠ k_r}`, `P_r = {p(r)} ∪ {a ∈ A_r : c_a = c_r}`,
    `L_cls(r) = −mean_{p∈P_r} [s_rp/τ_c − lse_{a∈A_r} s_ra/τ_c]`, τ_c = `class_temperatures[c_r]`;
    `L = mean_r [(τ/τ_base)·L_sub(r) + γ·L_cls(r)]`. Both positive sets hold the other view, so
    neither is empty. With γ = 0 and subclasses equal to the classes it is
    `supcon_loss(temperature=τ, base_temperature=τ_base)`.

    Clustering (balanced k-means per class, redone every 10 epochs in the authors' code) stays
    outside; `sbcl_class_temperatures` computes τ_c from the features.

    Across devices both views and the two label arrays are gathered: anchors are local, the
    contrast set is the global batch (the authors' SimCLR code uses DataParallel, so its loss also
    sees the whole batch), and the value and gradients equal the single-device loss on it.

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views, row i of each a positive pair.
      labels: `int[N]` classes in [0, C).
      subclass_labels: `int[N]` cluster ids, unique across classes (each class's ids offset).
      class_temperatures: `f[C]` τ_c > 0, e.g. from `sbcl_class_temperatures`.
      temperature: τ (0.1, the authors' `--temperature`).
      base_temperature: τ_base (0.07, the constructor default; `main.py` passes none, so the
        subclass term is scaled by 0.1/0.07).
      gamma: γ ≥ 0, the class term's weight (0.25, constructor default).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"); the labels are gathered.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: wrong shapes; `class_temperatures` not `[C]` or (when concrete) not all > 0;
        labels outside [0, C) or a subclass id shared by two classes (when concrete: under jit or
        shard_map these two are not checked); `temperature` or `base_temperature` <= 0;
        `gamma < 0`; `exchange="ring"`.
      TypeError: non-float embeddings / temperatures or non-integer labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> z_a = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> z_b = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> loss = sbcl_loss(z_a, z_b, jnp.array([0, 0, 1]), jnp.array([0, 1, 2]), jnp.array([0.08, 0.12]))
      >>> round(float(loss), 4)
      2.9425

    References:
      Hou et al., "Subclass-balancing Contrastive Learning for Long-tailed Recognition", ICCV 2023
      (arXiv 2306.15925);
      github.com/JackHck/SBCL (SimCLR/loss.py `SupConLoss_rank`, SimCLR/main.py `cluster`, `main`).
    """
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    n = z_a.shape[0]
    class_temperatures = _checks.float_array(
        "class_temperatures", class_temperatures, rank=1, rank_hint="[C]"
    )
    labels = class_labels("labels", labels, class_temperatures.shape[0], n)
    subclass_labels = class_labels("subclass_labels", subclass_labels, None, n)
    _positive("temperature", temperature)
    _positive("base_temperature", base_temperature)
    _checks.nonnegative("gamma", gamma)
    _check_sbcl_values(class_temperatures, labels, subclass_labels)
    plan = _common.plan_for(axis_name, exchange, "sbcl_loss")

    sims, self_id, other_id = _two_view_logits(z_a, z_b, 1.0, plan)  # candidates [all z_a; all z_b]
    (all_labels, all_subclasses), _ = _common.gather_all(plan, labels, subclass_labels)
    candidate_class = jnp.tile(all_labels, 2)
    candidate_sub = jnp.tile(all_subclasses, 2)
    anchor_class, anchor_sub = jnp.tile(labels, 2), jnp.tile(subclass_labels, 2)
    cols = jnp.arange(sims.shape[1])[None, :]
    not_self = cols != self_id[:, None]
    other_view = cols == other_id[:, None]
    same_sub = anchor_sub[:, None] == candidate_sub[None, :]
    same_class = anchor_class[:, None] == candidate_class[None, :]

    subclass_term = _mean_negative_log_prob(sims / temperature, same_sub & not_self, not_self)
    class_tau = class_temperatures.astype(jnp.float32)[anchor_class]
    class_term = _mean_negative_log_prob(
        sims / class_tau[:, None], other_view | (~same_sub & same_class), other_view | ~same_sub
    )
    per_anchor = (temperature / base_temperature) * subclass_term + gamma * class_term
    return plan.mean(jnp.mean(per_anchor))


def sbcl_class_temperatures(
    features, labels, clusters_per_class: Sequence[int], *, temperature: float = 0.1
) -> np.ndarray:
    """SBCL's per-class temperatures from the spread of each class's features (host NumPy).

    `d_c = mean_{i∈c} ‖f_i − μ_c‖ / log(n_c + 10)` (μ_c the class mean, n_c its size), clipped to
    its 20th–80th percentiles over the classes (NumPy's linear interpolation), then
    `τ_c = τ · d_c / mean_c d_c`; classes with a single cluster get `τ_c = τ`. The authors'
    `F.pairwise_distance` adds 1e-6 to each difference before the norm; this does not (a
    relative change of order 1e-6 / d_c).

    Args:
      features: `f[M, D]` the features of the training set (the authors' `cluster` pass).
      labels: `int[M]` classes in [0, C); every class needs a sample.
      clusters_per_class: C ints ≥ 1, the number of subclasses of each class.
      temperature: τ > 0 (0.1, the authors' `--temperature`).

    Returns:
      `float64[C]`, for `sbcl_loss`'s `class_temperatures`.

    Raises:
      ValueError: shapes, a class without samples, labels outside [0, C), clusters < 1,
        `temperature <= 0`, or features without any spread (every d_c = 0).
      TypeError: non-integer labels.

    Examples:
      >>> import numpy as np
      >>> f = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
      >>> sbcl_class_temperatures(f, np.array([0, 0, 1, 1, 2]), [2, 2, 1]).round(4).tolist()
      [0.1, 0.16, 0.1]

    References:
      Hou et al., ICCV 2023; github.com/JackHck/SBCL (SimCLR/main.py, `cluster`).
    """
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    clusters = np.asarray(clusters_per_class)
    if features.ndim != 2 or labels.shape != (features.shape[0],) or labels.size == 0:
        raise ValueError(
            f"features must be [M, D] and labels [M] with M >= 1, got shapes {features.shape} and "
            f"{labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if clusters.ndim != 1 or clusters.size == 0 or not np.issubdtype(clusters.dtype, np.integer):
        raise ValueError(f"clusters_per_class must be a sequence of C ints, got {clusters_per_class!r}")
    if np.any(clusters < 1):
        raise ValueError(f"clusters_per_class must all be >= 1, got {clusters.tolist()}")
    _positive("temperature", temperature)
    num_classes = clusters.size
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]"
        )
    counts = np.bincount(labels, minlength=num_classes)
    if np.any(counts == 0):
        raise ValueError(
            f"every class needs a sample; classes without one: {np.flatnonzero(counts == 0).tolist()}"
        )
    spread = np.empty(num_classes)
    for c in range(num_classes):
        members = features[labels == c]
        spread[c] = np.linalg.norm(members - members.mean(axis=0), axis=1).mean() / np.log(len(members) + 10)
    spread = np.clip(spread, np.percentile(spread, 20), np.percentile(spread, 80))
    if not spread.mean() > 0:
        raise ValueError("every class's features are identical (no spread): the temperatures are undefined")
    return np.where(clusters == 1, temperature, temperature * spread / spread.mean())
