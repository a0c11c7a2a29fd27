"""Robust classification losses: LDR-KL / ALDR-KL (label-distributionally robust) and comp-sum.

LDR-KL is the worst case of the margin-shifted score gaps over label distributions within a KL
ball of the uniform one (a λ-smoothed max); ALDR-KL learns each sample's λ, kept in an explicit
per-sample state like iSogCLR's. The comp-sum family (CE, GCE, MAE, sum-exponential) is one
function of the cross-entropy, also applied to CLIP's two directions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from contrastive_jax import _checks, parallel
from contrastive_jax.losses._clip import positive_logits
from contrastive_jax.losses._simclr import _positive
from contrastive_jax.losses._temperature import _check_indices, _concrete_values, _last_occurrence

Array = jax.Array
_PROB_FLOOR = 1e-5  # the authors' floor on ALDR-KL's probabilities, keeping log p finite


def _classification_inputs(logits, labels, *, min_classes: int) -> tuple[Array, Array]:
    """`(f32[B, K] logits, int[B] labels)` after the shape, dtype and (when concrete) range checks."""
    logits = _checks.float_array("logits", logits, rank=2, rank_hint="[B, K]")
    batch, num_classes = logits.shape
    if batch == 0 or num_classes < min_classes:
        raise ValueError(
            f"logits must be [B, K] with B >= 1 and K >= {min_classes}, got shape {logits.shape}"
        )
    labels = _checks.int_array("labels", labels, rank=1, rank_hint="[B]")
    if labels.shape[0] != batch:
        raise ValueError(f"labels has {labels.shape[0]} entries for {batch} rows of logits")
    values = _concrete_values(labels)
    if values is not None and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values in [{values.min()}, {values.max()}]"
        )
    return logits.astype(jnp.float32), labels


def _over_mean(scores: Array, mean: Array) -> Array:
    """`scores / mean`, a zero mean replaced by 1 (all-zero logits: the code's 0/0 becomes q = 0)."""
    return scores / jnp.where(mean > 0, mean, 1.0)


def _margin_gaps(q: Array, labels: Array, threshold: float) -> Array:
    """`d_k = θ·[k ≠ y] + q_k − q_y`, `f32[B, K]`."""
    target = jax.nn.one_hot(labels, q.shape[1], dtype=bool)
    q_y = jnp.sum(jnp.where(target, q, 0.0), axis=1, keepdims=True)
    return jnp.where(target, 0.0, threshold) + q - q_y


def _smoothed_max(gaps: Array, lam: Array) -> Array:
    """`λ·log mean_k e^{d_k/λ}` per row (`lam`: scalar or `f32[B]`), accurate for tiny and huge λ.

    Written `m + λ·log1p(mean_k expm1((d_k − m)/λ))` with `m = max_k d_k`: the expm1 terms share a
    sign, so nothing cancels when λ ≫ d (the value tends to mean_k d) or λ ≪ d (to max_k d).
    """
    lam = jnp.reshape(lam, (-1, 1)) if jnp.ndim(lam) else lam
    top = jax.lax.stop_gradient(jnp.max(gaps, axis=1, keepdims=True))
    spread = jnp.mean(jnp.expm1((gaps - top) / lam), axis=1, keepdims=True)
    return (top + lam * jnp.log1p(spread))[:, 0]


def ldr_kl_loss(
    logits: Array, labels: Array, *, threshold: float = 0.1, lam: float = 10.0, axis_name=None
) -> Array:
    """LDR-KL: the label-distributionally robust loss with a KL ball around the uniform distribution.

    With scores normalised as in the authors' code, `q_k = softplus(o_k) / mean_j softplus(o_j)`,
    and margin-shifted gaps `d_k = θ·[k ≠ y] + q_k − q_y`:
    `L_i = max_{p ∈ Δ_K} Σ_k p_k d_k − λ·KL(p ‖ 1/K) = λ·(lse_k(d_k/λ) − log K)`, mean over i.
    λ → 0 gives `max_k d_k` (a multi-class hinge), λ → ∞ gives `mean_k d_k`. A row whose softplus
    scores all underflow to 0 keeps `q = 0` instead of 0/0.

    Args:
      logits: `f[B, K]` class scores o, K ≥ 2.
      labels: `int[B]` in [0, K) (checked when concrete; traced labels are not checked).
      threshold: θ ≥ 0, the margin on the wrong classes (0.1: `--margin` of the authors'
        `experiment.py`; `LDRLoss_V1`'s constructor default is 2.0).
      lam: λ > 0 (10.0: the experiments' `parameter_set` for LDR; the constructor default is 1.0).
      axis_name: inside shard_map, the mesh axes the batch is split over: the result is the
        global batch mean (a pmean of the local means).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: logits not `[B, K]` with K ≥ 2, labels of the wrong length or out of range,
        `threshold < 0`, `lam <= 0`.
      TypeError: non-float logits, non-integer labels.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
      >>> round(float(jax.jit(ldr_kl_loss)(logits, jnp.array([0, 2]))), 4)
      -0.3929

    References:
      Zhu, Ying & Yang, "Label Distributionally Robust Losses for Multi-class Classification:
      Consistency, Robustness and Adaptivity", ICML 2023; github.com/Optimization-AI/ICML2023_LDR
      (loss.py, `LDRLoss_V1`).
    """
    logits, labels = _classification_inputs(logits, labels, min_classes=2)
    _checks.nonnegative("threshold", threshold)
    _positive("lam", lam)
    plan = parallel.plan_negatives(axis_name, "all_gather")
    scores = jax.nn.softplus(logits)
    q = _over_mean(scores, jnp.mean(scores, axis=1, keepdims=True))
    return plan.mean(jnp.mean(_smoothed_max(_margin_gaps(q, labels, threshold), lam)))


@struct.dataclass
class ALDRKLState:
    """Per-sample λ of ALDR-KL, one entry per dataset sample.

    Attributes:
      lam: `f32[num_samples]` (or this device's shard of it), each sample's current λ_i.
      num_samples, lam0: static configuration (λ₀ is the initial and the largest λ).
    """

    lam: Array
    num_samples: int = struct.field(pytree_node=False)
    lam0: float = struct.field(pytree_node=False)


def aldr_kl_init(num_samples: int, *, lam0: float = 10.0) -> ALDRKLState:
    """Fresh ALDR-KL state for a dataset of `num_samples` samples: every λ_i = λ₀.

    Args:
      num_samples: N, the number of distinct sample ids (`indices` lie in `[0, N)`).
      lam0: λ₀ > 0 (10.0, as `aldr_kl_loss`); pass the same value to `aldr_kl_loss`.

    Returns:
      An `ALDRKLState`.

    Raises:
      ValueError: `num_samples` not a positive int, `lam0 <= 0`.

    Examples:
      >>> aldr_kl_init(4, lam0=1.0).lam.tolist()
      [1.0, 1.0, 1.0, 1.0]
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    _positive("lam0", lam0)
    return ALDRKLState(jnp.full((num_samples,), lam0, jnp.float32), num_samples=num_samples, lam0=float(lam0))


def _state_layout(state: ALDRKLState, axes) -> tuple[int, Array | None]:
    """(entries held here, id of the first one, or None for a replicated state)."""
    held = state.lam.shape[0]
    if held == state.num_samples:
        return held, None
    shards = parallel.axis_size(axes)
    if held * shards != state.num_samples:
        raise ValueError(
            f"the ALDR-KL state holds {held} of {state.num_samples} samples here; it must be replicated "
            f"(in_specs P()) or sharded evenly over axis_name {axes} ({shards} shards)"
        )
    return held, (jax.lax.axis_index(axes) * held).astype(jnp.int32)


def _lookup(state: ALDRKLState, indices: Array, axes) -> Array:
    """`f32[b]`: the stored λ of this device's rows, wherever the state keeps them."""
    held, first = _state_layout(state, axes)
    if first is None:
        return state.lam[indices]
    # Sharded: every device answers for the ids it holds, a psum assembles the answers.
    all_ids = jax.lax.all_gather(indices, axes, axis=0, tiled=True)
    local = all_ids - first
    mine = (local >= 0) & (local < held)
    answers = jax.lax.psum(jnp.where(mine, state.lam[jnp.clip(local, 0, held - 1)], 0.0), axes)
    batch = indices.shape[0]
    return jax.lax.dynamic_slice_in_dim(answers, jax.lax.axis_index(axes) * batch, batch)


def _store(state: ALDRKLState, indices: Array, lam: Array, axes) -> ALDRKLState:
    """Writes the batch's new λ (all devices' rows); a repeated id keeps its last occurrence."""
    held, first = _state_layout(state, axes)
    if axes:  # a replicated state must stay identical (and typed invariant) on every device
        to = "invarying" if first is None else "varying"
        indices, lam = (jax.lax.all_gather(v, axes, axis=0, tiled=True, to=to) for v in (indices, lam))
    local = indices if first is None else indices - first
    keep = _last_occurrence(indices) & (local >= 0) & (local < held)
    target = jnp.where(keep, local, held)  # `held` is out of range: dropped
    return state.replace(lam=state.lam.at[target].set(lam, mode="drop"))


def aldr_kl_loss(
    logits: Array,
    labels: Array,
    indices: Array,
    state: ALDRKLState,
    *,
    threshold: float = 0.1,
    lam0: float = 10.0,
    alpha: float = 2.0,
    softplus: bool = False,
    axis_name=None,
) -> tuple[Array, ALDRKLState]:
    """ALDR-KL: LDR-KL with an adaptive, per-sample λ_i kept in `state`.

    For sample i with stored λ_i (the authors' `ALDRLoss_V1`): scores `q_k = o_k / mean_j |o_j|`
    (o first through softplus iff `softplus`), `p = L1-normalise(softmax(q/λ_i) + 1e-5)`,
    `κ_i = Σ_k p_k log(K p_k)` (KL of p from uniform), `λ_i ← sg(λ₀ − λ₀ κ_i / (α log K))` (stored),
    gaps `d_k = θ·[k ≠ y] + q_k − q_y`, and
    `L_i = λ_i (lse_k(d_k/λ_i) − log K) − (α log K / (2λ₀)) (λ_i − λ₀)²`, mean over i. The new λ_i is
    a constant for the gradient (the last term has none); it lies in `[λ₀(1 − 1/α), λ₀]`. A row of
    all-zero logits keeps `q = 0` instead of the code's 0/0.

    State as in `isogclr_loss`: looked up and stored by global sample id; only the batch's ids
    change. Repeated ids in one batch: every occurrence uses the λ computed from its own row; the
    stored value is that of the last occurrence (the authors' `Lambda[ids] = …` leaves it
    unspecified).

    Args:
      logits: `f[B, K]` class scores o, K ≥ 2.
      labels: `int[B]` in [0, K) (checked when concrete; traced labels are not checked).
      indices: `int[B]` global dataset ids of the rows, in `[0, num_samples)` (checked when
        concrete; traced indices are not checked).
      state: from `aldr_kl_init` (with the same `lam0`), replicated on every device
        (`in_specs=P()`) or sharded by sample id over `axis_name` (`P(axis_name)`); the returned
        state has the same layout.
      threshold: θ ≥ 0 (0.1: `--margin` of the authors' `experiment.py`; `ALDRLoss_V1`'s
        constructor default is 1.0).
      lam0: λ₀ > 0 (10.0: the experiments' `parameter_set`; the constructor default is 1.0).
      alpha: α > 1 (2.0: `--alpha` of `experiment.py` and `run_demo_ALDR.sh`; the constructor
        default 1.0 would let λ reach 0, the code's comment asks for α > 1).
      softplus: pass the logits through softplus first (False, the code's default; the authors
        set it for CIFAR-100).
      axis_name: inside shard_map, the mesh axes the batch is split over: the loss is the global
        batch mean and every device's rows update the state.

    Returns:
      `(loss, new_state)`, the loss a float32 scalar (the same on every device).

    Raises:
      ValueError: logits not `[B, K]` with K ≥ 2, labels or indices of the wrong length or out of
        range, `threshold < 0`, `lam0 <= 0`, `alpha <= 1`, `lam0` different from the state's, a
        state neither replicated nor evenly sharded.
      TypeError: non-float logits, non-integer labels or indices, a state not from `aldr_kl_init`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
      >>> step = jax.jit(aldr_kl_loss)  # traced labels / indices: not range-checked
      >>> loss, state = step(logits, jnp.array([0, 2]), jnp.array([3, 1]), aldr_kl_init(5))
      >>> round(float(loss), 4), [round(v, 4) for v in state.lam.tolist()]
      (-0.7974, [10.0, 9.9962, 10.0, 9.975, 10.0])

    References:
      Zhu, Ying & Yang, "Label Distributionally Robust Losses for Multi-class Classification:
      Consistency, Robustness and Adaptivity", ICML 2023; github.com/Optimization-AI/ICML2023_LDR
      (loss.py, `ALDRLoss_V1`; experiment.py).
    """
    logits, labels = _classification_inputs(logits, labels, min_classes=2)
    if not isinstance(state, ALDRKLState):
        raise TypeError(f"state must come from aldr_kl_init, got {type(state).__name__}")
    indices, _ = _check_indices(indices, state.num_samples, logits.shape[0])
    _checks.nonnegative("threshold", threshold)
    _positive("lam0", lam0)
    if not alpha > 1:
        raise ValueError(f"alpha must be > 1 (alpha <= 1 lets lambda reach 0), got {alpha}")
    if float(lam0) != state.lam0:
        raise ValueError(f"lam0={lam0} but the state was made with lam0={state.lam0}; pass the same value")
    axes = parallel.plan_negatives(axis_name, "all_gather").mean_axes

    scores = jax.nn.softplus(logits) if softplus else logits
    q = _over_mean(scores, jnp.mean(jnp.abs(scores), axis=1, keepdims=True))
    num_classes = q.shape[1]
    log_k = jnp.log(float(num_classes))
    p = (
        jax.nn.softmax(jax.lax.stop_gradient(q) / _lookup(state, indices, axes)[:, None], axis=1)
        + _PROB_FLOOR
    )
    p = p / jnp.sum(p, axis=1, keepdims=True)
    kl = jnp.sum(p * jnp.log(num_classes * p), axis=1)
    lam = jax.lax.stop_gradient(lam0 - lam0 * kl / (alpha * log_k))
    terms = (
        _smoothed_max(_margin_gaps(q, labels, threshold), lam)
        - alpha * log_k / (2 * lam0) * (lam - lam0) ** 2
    )
    loss = jnp.mean(terms)
    return (jax.lax.pmean(loss, axes) if axes else loss), _store(state, indices, lam, axes)


def _comp_sum_transform(cross_entropy: Array, tau: float) -> Array:
    """`Φ^τ(ℓ) = ((1+u)^{1−τ} − 1)/(1 − τ)` written in `ℓ = log(1 + u)`: `expm1((1−τ)ℓ)/(1−τ)`, ℓ at τ=1."""
    if tau == 1:
        return cross_entropy
    return jnp.expm1((1 - tau) * cross_entropy) / (1 - tau)


def _check_tau(tau) -> None:
    if not tau >= 0:
        raise ValueError(f"tau must be >= 0 (the comp-sum family index, not a temperature), got {tau}")


def comp_sum_loss(logits: Array, labels: Array, *, tau: float = 1.0, axis_name=None) -> Array:
    """Comp-sum losses: cross-entropy, GCE, MAE and the sum-exponential loss as one family in τ.

    With `ℓ_i = lse_k(o_ik) − o_{i,y_i}` (the cross-entropy) and `u_i = Σ_{k≠y} e^{o_k − o_y} = e^{ℓ_i} − 1`,
    `Φ^τ(u) = ((1 + u)^{1−τ} − 1)/(1 − τ)` (τ ≠ 1), `log(1 + u)` (τ = 1); `L = mean_i Φ^τ(u_i)`,
    evaluated as `expm1((1−τ)ℓ_i)/(1−τ)`, which needs no `u` (u overflows long before the loss
    does). τ = 0 is the sum-exponential loss `Σ_{k≠y} e^{o_k−o_y}`, τ = 1 cross-entropy, τ ∈ (1, 2)
    generalised cross-entropy with q = τ − 1 (`(1 − p_y^q)/q`), τ = 2 MAE (`1 − p_y`); the loss is
    continuous in τ. τ is the family index, not a temperature. For τ < 1 the loss grows like
    `e^{(1−τ)ℓ}`: in float32 it overflows to inf once (1 − τ)ℓ exceeds about 88.

    Args:
      logits: `f[B, K]` class scores.
      labels: `int[B]` in [0, K) (checked when concrete; traced labels are not checked).
      tau: τ ≥ 0 (1.0: cross-entropy; the paper has no single recommended value).
      axis_name: inside shard_map, the mesh axes the batch is split over: the result is the
        global batch mean (a pmean of the local means).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: logits not `[B, K]`, labels of the wrong length or out of range, `tau < 0`.
      TypeError: non-float logits, non-integer labels.

    Examples:
      >>> import functools, jax, jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
      >>> mae = jax.jit(functools.partial(comp_sum_loss, tau=2.0))
      >>> round(float(mae(logits, jnp.array([0, 2]))), 4)
      0.4236

    References:
      Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis and Applications",
      ICML 2023 (comp-sum losses, Eq. 1 and its special cases).
    """
    logits, labels = _classification_inputs(logits, labels, min_classes=1)
    _check_tau(tau)
    plan = parallel.plan_negatives(axis_name, "all_gather")
    target = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    cross_entropy = jax.nn.logsumexp(logits, axis=1) - target
    return plan.mean(jnp.mean(_comp_sum_transform(cross_entropy, tau)))


def comp_sum_clip_loss(
    image_emb: Array,
    text_emb: Array,
    logit_scale: Array,
    *,
    tau: float = 1.0,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """The comp-sum loss on CLIP's two directions: `clip_loss` with Φ^τ applied to each row's CE.

    With `L = s·x yᵀ` over the global batch, `ℓ^I_i = lse_j L_ij − L_ii` (image i over the texts)
    and `ℓ^T_i = lse_j L_ji − L_ii` (text i over the images):
    `loss = ½ [mean_i Φ^τ(ℓ^I_i) + mean_i Φ^τ(ℓ^T_i)]`, Φ^τ as in `comp_sum_loss`. τ = 1 is
    `clip_loss`; τ is the family index, not a temperature (the temperature is 1/s).

    Args:
      image_emb: `f[B, D]` L2-normalised image embeddings (local rows under shard_map).
      text_emb: `f[B, D]` L2-normalised text embeddings, row i paired with image i.
      logit_scale: float scalar s (already exp-ed and clamped, as for `clip_loss`).
      tau: τ ≥ 0 (1.0: `clip_loss`).
      axis_name, exchange: as in `clip_loss`, "all_gather" or "ring" (the row and column LSEs
        come from `parallel.softmax_lse`, exact under autodiff for both).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: `tau < 0`, embeddings of different or non-`[B, D]` shapes, a non-scalar
        logit_scale.
      TypeError: non-float embeddings or logit_scale.

    Examples:
      >>> import functools, jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> loss_fn = jax.jit(functools.partial(comp_sum_clip_loss, tau=1.5))
      >>> round(float(loss_fn(x, y, 10.0)), 4)
      0.8334

    References:
      Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis and Applications",
      ICML 2023; Radford et al., "Learning Transferable Visual Models From Natural Language
      Supervision", ICML 2021.
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    logit_scale = _checks.scalar("logit_scale", logit_scale)
    _check_tau(tau)
    plan = parallel.plan_negatives(axis_name, exchange)
    row_lse, col_lse = parallel.softmax_lse(image_emb, text_emb, logit_scale, plan)
    positives = positive_logits(image_emb, text_emb, logit_scale)
    image_to_text = _comp_sum_transform(row_lse - positives, tau)
    text_to_image = _comp_sum_transform(col_lse - positives, tau)
    return plan.mean(0.5 * (jnp.mean(image_to_text) + jnp.mean(text_to_image)))
