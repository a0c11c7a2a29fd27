"""GroCo (learning by sorting) and the differentiable odd-even sorting network it ranks with."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax import _checks, _vma
from contrastive_jax.losses import _common

Array = jax.Array
_LOG_FLOOR = -100.0  # PyTorch BCELoss floors each log at -100
_HIGHEST = jax.lax.Precision.HIGHEST  # full float32 products on every backend (no TF32)


def _finite_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def diffsort_odd_even(u: Array, *, steepness: float) -> tuple[Array, Array]:
    """Differentiable odd-even transposition sort (ascending) with Cauchy-smoothed swaps.

    n layers of comparators; layer ℓ compares wires (m, m+1) for m = ℓ mod 2, ℓ mod 2 + 2, … ≤ n−2
    (an unpaired end wire is left as it is). A comparator holding values (a, b) sets

        α = ½ + arctan(β(b − a))/π,   wire m ← α a + (1−α) b,   wire m+1 ← (1−α) a + α b,

    so the smaller value moves to the lower wire (hard swap as β → ∞), and mixes columns m, m+1 of
    `P` (initially the identity) the same way. Hence `soft_sorted = u @ P`: `P[e, j]` is the weight
    of input e at sorted position j, and P is doubly stochastic. α and 1 − α are evaluated as
    `atan2(1, ∓β(b − a))/π`, which equals the formula above without its cancellation in float32
    (far-apart values give weights near 1e-9 instead of exactly 0).

    Args:
      u: `f[..., n]` values to sort along the last axis (any leading batch shape), n ≥ 1.
      steepness: β > 0, finite (diffsort's `steepness`; its default is 10, GroCo uses 1).

    Returns:
      `(soft_sorted: f32[..., n], P: f32[..., n, n])`.

    Raises:
      TypeError: `u` not floating point; `steepness` not a number.
      ValueError: `u` of rank 0 or with an empty last axis; `steepness` not finite and > 0.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> hard_sort = jax.jit(lambda u: diffsort_odd_even(u, steepness=1e6))
      >>> values, perm = hard_sort(jnp.array([0.3, -1.0, 2.0]))
      >>> [round(float(v), 4) for v in values]
      [-1.0, 0.3, 2.0]
      >>> perm.round(3).tolist()
      [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]

    References:
      Petersen et al., "Monotonic Differentiable Sorting Networks", ICLR 2022 (Cauchy relaxation);
      github.com/Felix-Petersen/diffsort (`networks.py::odd_even_network`,
      `functional.py::execute_sort`, `distribution="cauchy"`).
    """
    u = _checks.float_array("u", u)
    if u.ndim < 1 or u.shape[-1] < 1:
        raise ValueError(f"u must have rank >= 1 and a non-empty last axis ([..., n]), got shape {u.shape}")
    steepness = _finite_positive("steepness", steepness)
    n = u.shape[-1]
    values = u.astype(jnp.float32)
    perm = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), values.shape + (n,))
    values, perm = _vma.match_varying(values, perm)  # one carry type inside shard_map
    partner, side = _odd_even_layers(n)

    def layer(carry, table):
        values, perm = carry
        partner, side = table
        other = jnp.take(values, partner, axis=-1)
        gap = side * steepness * (other - values)  # β(b − a) of the wire's comparator; 0 if unpaired
        keep = jnp.arctan2(1.0, -gap) / jnp.pi  # α: what a wire keeps of its own value
        swap = jnp.arctan2(1.0, gap) / jnp.pi  # 1 − α: what it takes from its partner
        values = keep * values + swap * other
        perm = keep[..., None, :] * perm + swap[..., None, :] * jnp.take(perm, partner, axis=-1)
        return (values, perm), None

    # One scan step per layer: the compiled program does not grow with n.
    (values, perm), _ = jax.lax.scan(layer, (values, perm), (partner, side))
    return values, perm


def _odd_even_layers(n: int):
    """Per layer, each wire's comparator partner (itself if unpaired) and +1 / −1 for the low / high wire."""
    partner = np.tile(np.arange(n), (n, 1))
    side = np.zeros((n, n), np.float32)
    for layer in range(n):
        low = np.arange(layer % 2, n - 1, 2)
        partner[layer, low], partner[layer, low + 1] = low + 1, low
        side[layer, low], side[layer, low + 1] = 1.0, -1.0
    return partner, side


def _floored_log(p: Array) -> Array:
    """`max(log p, −100)`, also at p = 0, with a finite (zero) gradient where the floor holds."""
    positive = p > 0
    return jnp.where(positive, jnp.maximum(jnp.log(jnp.where(positive, p, 1.0)), _LOG_FLOOR), _LOG_FLOOR)


def _sorting_bce(perm: Array, num_neg: int) -> Array:
    """`f32[..., b]`: ℓ_i = −(1/n) Σ_e max(log m_e, −100), m_e the mass input e keeps on its own side."""
    n = perm.shape[-1]
    is_positive = np.arange(n) >= num_neg
    own_side = jnp.asarray(is_positive[:, None] == is_positive[None, :])  # [input e, slot j]
    mass = jnp.clip(jnp.sum(jnp.where(own_side, perm, 0.0), axis=-1), 0.0, 1.0)
    return -jnp.mean(_floored_log(mass), axis=-1)


def _check_views(views) -> Array:
    views = _checks.float_array("views", views, rank=3, rank_hint="[V, B, D]")
    if views.shape[0] < 2:
        raise ValueError(f"views must hold at least 2 views ([V, B, D], V >= 2), got shape {views.shape}")
    if views.shape[1] < 1:
        raise ValueError(f"views must hold at least one sample, got shape {views.shape}")
    return views


def _int_in(name: str, value, low: int, high: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}] ({why}), got {value!r}")
    return int(value)


def groco_loss(
    views: Array,
    *,
    topk_neg: int = 10,
    steepness: float = 1.0,
    stop_grad: bool = True,
    num_positive_views: int | None = None,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """GroCo: rank every positive above the hardest negatives with a differentiable sort.

    For anchor view a and sample i: the positives are `s_v = ⟨z_i^a, sg(z_i^v)⟩` for the views
    v ∈ {1..V_p} \\ {a} (V_p = `num_positive_views`), the negatives the k = `topk_neg` largest
    `⟨z_i^a, sg(z_j^a)⟩`, j ≠ i over the global batch of the same view. With both groups in
    ascending order, `u = [negatives; positives]` (n entries) is soft-sorted by
    `diffsort_odd_even(u, steepness=β)` into P, and with `q_e = Σ_{j≥k} P[e, j]`, `t_e = [e ≥ k]`:

        ℓ_i = ½ [BCE(q, t) + BCE(1 − q, 1 − t)],   L = mean_a mean_i ℓ_i,

    BCE as PyTorch's `BCELoss` (mean over the n entries, logs floored at −100). The code's second
    term uses `q'_e = Σ_{j<k} P[e, j]`, which is 1 − q_e since P's rows sum to 1, so both terms
    equal `−(1/n) Σ_e max(log m_e, −100)` with `m_e` the mass input e keeps on its own side; that
    is what is computed (no `1 − q` cancellation in float32). Every view is an anchor; views after
    the first V_p (multi-crop small crops) are anchors only and have V_p positives, the others
    V_p − 1.

    Inputs are L2-normalised by the caller (the authors' code normalises inside its cosine, so it
    equals `groco_loss(l2_normalize(raw))`). With `stop_grad` the positives and negatives are
    constants for the gradient; with `stop_grad=False` the gradient is exact across devices,
    through the gather (the authors' `GatherLayer` returns only the local slice's gradient, not
    the exact gradient). The top-k selection is piecewise constant: gradients flow through the
    selected values.

    Args:
      views: `f[V, B, D]` L2-normalised embeddings of V ≥ 2 views (full crops first).
      topk_neg: k, hardest negatives per anchor, an int in [1, B_global − 1] (10, constructor).
      steepness: β of the Cauchy swap (1, constructor; diffsort's own default is 10; the
        authors also pass `art_lambda=0.25`, which the Cauchy swap does not use).
      stop_grad: positives and negatives as constants (True, constructor).
      num_positive_views: V_p ∈ [2, V], how many leading views serve as positives (default V;
        `n_pos_augs`, 2 in the authors' multi-crop config with 8 views).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"); samples are split.

    Returns:
      A float32 scalar, computed in float32 also for bfloat16 inputs.

    Raises:
      TypeError: non-float `views`; a non-number `steepness`.
      ValueError: `views` not `[V, B, D]` with V ≥ 2; `num_positive_views` ∉ [2, V]; `topk_neg` ∉
        [1, B_global − 1]; `steepness` not finite and > 0; the ring exchange.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> w = jnp.array([[0.6, -0.8], [-0.8, 0.6], [1.0, 0.0]])
      >>> loss = jax.jit(lambda views: groco_loss(views, topk_neg=2))
      >>> round(float(loss(jnp.stack([x, w]))), 5)
      0.46748

    References:
      Shvetsova et al., "Learning by Sorting: Self-supervised Learning with Group Ordering
      Constraints", ICCV 2023; github.com/ninatu/learning_by_sorting (`losses/groco.py::GroCo`,
      configs `2views_100ep.yaml`, `4views_100ep.yaml`, `multicrop_100ep.yaml`).
    """
    views = _check_views(views)
    num_views, batch, _ = views.shape
    num_pos = num_views if num_positive_views is None else num_positive_views
    num_pos = _int_in("num_positive_views", num_pos, 2, num_views, "leading views used as positives")
    steepness = _finite_positive("steepness", steepness)
    plan = _common.plan_for(axis_name, exchange, "groco_loss")
    global_batch = batch * plan.num_devices()
    _int_in("topk_neg", topk_neg, 1, global_batch - 1, f"negatives are the other samples of {global_batch}")

    targets = jax.lax.stop_gradient(views) if stop_grad else views
    (all_targets,), offset = _common.gather_all(plan, jnp.swapaxes(targets, 0, 1))  # [n, V, D]
    all_targets = jnp.swapaxes(all_targets, 0, 1).astype(jnp.float32)
    views32, targets32 = views.astype(jnp.float32), targets.astype(jnp.float32)
    rows = offset + jnp.arange(batch)
    not_self = rows[:, None] != jnp.arange(all_targets.shape[1])[None, :]
    negatives = jnp.einsum("abd,and->abn", views32, all_targets, precision=_HIGHEST)
    negatives = jax.lax.top_k(jnp.where(not_self, negatives, -jnp.inf), topk_neg)[0][..., ::-1]  # ascending
    positives = jnp.einsum("abd,vbd->abv", views32, targets32[:num_pos], precision=_HIGHEST)  # [V, b, V_p]
    others = np.array([[v for v in range(num_pos) if v != a] for a in range(num_pos)])  # full crops
    groups = [(negatives[:num_pos], jnp.take_along_axis(positives[:num_pos], others[:, None, :], axis=-1))]
    if num_views > num_pos:  # small crops: every full crop is a positive
        groups.append((negatives[num_pos:], positives[num_pos:]))
    total = 0.0
    for hardest, pos in groups:
        _, perm = diffsort_odd_even(
            jnp.concatenate([hardest, jnp.sort(pos, axis=-1)], -1), steepness=steepness
        )
        total += jnp.sum(jnp.mean(_sorting_bce(perm, topk_neg), axis=-1))
    return plan.mean(total / num_views)
