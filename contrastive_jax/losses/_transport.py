"""CACR: contrastive attraction and contrastive repulsion (Zheng et al.), transport-weighted distances."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax import _checks
from contrastive_jax.losses import _common
from contrastive_jax.losses._simclr import _positive

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST  # full float32 products on every backend (no TF32)


def _check_views(views) -> Array:
    views = _checks.float_array("views", views, rank=3, rank_hint="[V, B, D]")
    if views.shape[0] < 2:
        raise ValueError(f"views must hold at least 2 views ([V, B, D], V >= 2), got shape {views.shape}")
    if views.shape[1] < 1:
        raise ValueError(f"views must hold at least one sample, got shape {views.shape}")
    return views


def _attraction(views, alpha, tau_pos, weigh):
    """`f32[]`: (1/V) Σ_q mean_i Σ_{v≠q} π_iv α‖z_i^q − z_i^v‖², π = softmax_v(τ⁺‖·‖²)."""
    num_views = views.shape[0]
    diff = views[:, None] - views[None, :]  # [q, v, b, D]: each sample against its own views only
    sq = jnp.moveaxis(jnp.sum(diff * diff, axis=-1), -1, 0)  # [b, q, v]
    others = ~jnp.eye(num_views, dtype=bool)
    weights = weigh(jax.nn.softmax(jnp.where(others, tau_pos * sq, -jnp.inf), axis=-1))
    per_query = jnp.sum(jnp.where(others, weights * alpha * sq, 0.0), axis=-1)  # [b, q]
    return jnp.mean(per_query)


def _repulsion(views, beta, tau_neg, tau_plus, weigh, plan):
    """`f32[]`: mean over view pairs a < b of mean_i Σ_{j≠i} π_ij (−β‖z_i^a − z_j^b‖²), local anchors."""
    num_views, batch, _ = views.shape
    (later,), offset = _common.gather_all(plan, jnp.swapaxes(views[1:], 0, 1))  # negatives: [n, V−1, D]
    later = jnp.swapaxes(later, 0, 1)
    rows = offset + jnp.arange(batch)
    not_self = rows[:, None] != jnp.arange(later.shape[1])[None, :]
    first, second = np.triu_indices(num_views, 1)  # the V(V−1)/2 pairs, anchor in the lower view
    anchors, negatives = views[first], later[second - 1]
    cross = jnp.einsum("pbd,pnd->pbn", anchors, negatives, precision=_HIGHEST)
    sq = jnp.sum(anchors**2, -1)[:, :, None] + jnp.sum(negatives**2, -1)[:, None, :] - 2 * cross
    weights = weigh(jax.nn.softmax(jnp.where(not_self, -tau_neg * sq, -jnp.inf), axis=-1))
    r = jnp.sum(jnp.where(not_self, weights * (-beta * sq), 0.0), axis=-1)  # [pairs, b]
    if tau_plus is not None:
        positive = jnp.sum((anchors - views[second]) ** 2, axis=-1)
        r = (r - tau_plus * positive) / (1 - tau_plus)
    return jnp.mean(r)


def cacr_terms(
    views: Array,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.0,
    debiased_tau_plus: float | None = None,
    detach_weights: bool = False,
    axis_name=None,
    exchange: str = "all_gather",
) -> tuple[Array, Array]:
    """CACR's two terms, `(L_CA, L_CR)`; their sum is `cacr_loss` (see it for the math).

    Args:
      views, alpha, beta, tau_pos, tau_neg, debiased_tau_plus, detach_weights, axis_name,
        exchange: as in `cacr_loss` (`views: f[V, B, D]`).

    Returns:
      `(attraction, repulsion)`, two float32 scalars, each the global value under `axis_name`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> [round(float(t), 4) for t in jax.jit(cacr_terms)(jnp.stack([x, y]))]
      [0.4, -0.9612]

    Raises:
      As `cacr_loss`.
    """
    views = _check_views(views)
    _positive("alpha", alpha)
    _positive("beta", beta)
    _checks.nonnegative("tau_pos", tau_pos)
    _checks.nonnegative("tau_neg", tau_neg)
    if debiased_tau_plus is not None:
        _checks.in_unit_interval("debiased_tau_plus", debiased_tau_plus, closed_high=False)
    plan = _common.plan_for(axis_name, exchange, "cacr_loss")
    _common.require_negatives("cacr_loss", views.shape[1], plan)
    weigh = jax.lax.stop_gradient if detach_weights else (lambda w: w)
    views32 = views.astype(jnp.float32)
    attraction = _attraction(views32, alpha, tau_pos, weigh)
    repulsion = _repulsion(views32, beta, tau_neg, debiased_tau_plus, weigh, plan)
    return plan.mean(attraction), plan.mean(repulsion)


def cacr_loss(
    views: Array,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.0,
    debiased_tau_plus: float | None = None,
    detach_weights: bool = False,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """CACR: pull a sample's far views in hardest, push its nearest negatives away hardest.

    With V views `z^(1..V)` of the same B samples and squared distances `d(u, v) = ‖u − v‖²`:

        attraction (each view q as query, the sample's other views v ≠ q as positives):
          π_iv = softmax_v(τ⁺ d(z_i^q, z_i^v)),   L_CA = (1/V) Σ_q mean_i Σ_v π_iv α d(z_i^q, z_i^v)
        repulsion (each view pair a < b, anchors in view a, negatives j ≠ i of view b):
          π_ij = softmax_{j≠i}(−τ⁻ d(z_i^a, z_j^b)),   r_i = Σ_j π_ij (−β d(z_i^a, z_j^b))
          debiased (τ_d = `debiased_tau_plus`): r_i ← (r_i − τ_d d(z_i^a, z_i^b)) / (1 − τ_d)
          L_CR = mean over the V(V−1)/2 pairs of mean_i r_i
        L = L_CA + L_CR

    The conditional weights π make far positives and near negatives count more; τ⁻ = 0 gives uniform
    weights over the negatives and τ⁻ → ∞ the nearest negative only. This is the authors' CIFAR /
    STL-10 objective (`our_loss1 + our_loss2`), where the weights carry gradient; their MoCo-v3
    variant (a π-weighted InfoNCE with momentum keys, weights under `no_grad`) is a different
    objective, of which only the detached weights are offered here (`detach_weights=True`).
    The squared distances are not normalised: the authors' encoder ends in an L2 normalisation,
    so pass unit rows to follow them.

    Across devices the anchors are this device's rows and the negatives of view b the whole
    global batch (softmax over the global j ≠ i); the attraction is per sample; both terms are
    global means with exact gradients (the authors' code is single-process `DataParallel`).

    Args:
      views: `f[V, B, D]` embeddings of V ≥ 2 views of B samples (the authors: V = 5, one query
        and `Ny` = 4 positives, B = `Ns` = 128).
      alpha: α > 0, scale of the attraction cost (1.0, `--alpha`).
      beta: β > 0, scale of the repulsion cost (1.0, `--beta`).
      tau_pos: τ⁺ ≥ 0, sharpness of the positive weights (1.0, `--tau_pos`).
      tau_neg: τ⁻ ≥ 0, sharpness of the negative weights (1.0, `--tau_neg`).
      debiased_tau_plus: τ_d ∈ [0, 1) for the debiased repulsion, or None for none (the code's
        default, `--with_debiased` off; it uses `--tau_plus 0.1` when on).
      detach_weights: treat π as constants (False, as in the small-scale code).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"); samples are split.

    Returns:
      A float32 scalar; it can be negative (L_CR ≤ 0).

    Raises:
      TypeError: non-float `views`.
      ValueError: `views` not `[V, B, D]` with V ≥ 2; a global batch of one sample (no
        negatives); `alpha` or `beta` ≤ 0; `tau_pos` or `tau_neg` < 0; `debiased_tau_plus` ∉
        [0, 1); the ring exchange.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> round(float(jax.jit(cacr_loss)(jnp.stack([x, y]))), 5)
      -0.56119

    References:
      Zheng et al., "Contrastive Attraction and Contrastive Repulsion for Representation
      Learning", TMLR 2023 (arXiv:2105.03746); github.com/JegZheng/CACR-SSL
      (`small_scale_experiments/losses/__init__.py`: `our_loss1`, `our_loss2`,
      `forward_negative_loss`; defaults in `small_scale_experiments/cifar10/main_ours.py`).
    """
    attraction, repulsion = cacr_terms(
        views,
        alpha=alpha,
        beta=beta,
        tau_pos=tau_pos,
        tau_neg=tau_neg,
        debiased_tau_plus=debiased_tau_plus,
        detach_weights=detach_weights,
        axis_name=axis_name,
        exchange=exchange,
    )
    return attraction + repulsion
