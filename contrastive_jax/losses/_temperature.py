"""SogCLR and iSogCLR: global contrastive loss with per-sample (individualised) temperatures.

Per dataset sample k the loss keeps moving-average estimators `u` of its negatives' mean
exponential, a running maximum `b` that keeps those exponentials in range, and (iSogCLR) a
temperature `τ` learned by its own momentum update. The state is an explicit pytree indexed
by the global sample ids of the batch; the caller carries it from step to step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from contrastive_jax import _checks, _vma, parallel
from contrastive_jax.tiled import similarity

Array = jax.Array
_U_FLOOR = 1e-20  # the authors' floor on u, keeping log u and the weights finite


@struct.dataclass
class ISogCLRState:
    """Per-sample state of (i)SogCLR, one entry per dataset sample (all `f32[N]` but `seen`).

    Attributes:
      u_image, u_text: moving averages of `mean_{j≠i} exp(h_ij/τ_i − b_i)` (image / text anchors).
      b_image, b_text: running maxima of `h_ij/τ_i`, the log-domain shift of `u`.
      tau_image, tau_text: per-sample temperatures τ.
      m_image, m_text: momenta of the temperature gradients.
      seen: `bool[N]`, whether the sample has been in a batch (its first visit sets `u = g`).
      num_samples, tau_min, tau_max: static configuration.
    """

    u_image: Array
    u_text: Array
    b_image: Array
    b_text: Array
    tau_image: Array
    tau_text: Array
    m_image: Array
    m_text: Array
    seen: Array
    num_samples: int = struct.field(pytree_node=False)
    tau_min: float = struct.field(pytree_node=False)
    tau_max: float = struct.field(pytree_node=False)


_PER_SIDE = ("u", "b", "tau", "m")


def isogclr_init(
    num_samples: int, *, tau_init: float = 0.01, tau_min: float = 0.005, tau_max: float = 0.05
) -> ISogCLRState:
    """Fresh (i)SogCLR state for a dataset of `num_samples` image-text pairs.

    Defaults are the authors' bimodal (image-text) settings; for unimodal SimCLR-style data
    they use `tau_init=0.1, tau_min=0.05, tau_max=0.7`.

    Args:
      num_samples: N, the number of distinct sample ids (`indices` lie in `[0, N)`).
      tau_init: initial temperature of every sample (and the fixed one for SogCLR).
      tau_min, tau_max: bounds the learned temperatures are clipped to.

    Returns:
      An `ISogCLRState` with `u = b = m = 0`, `τ = tau_init`, nothing seen.
    """
    num_samples = _checks.positive_int("num_samples", num_samples)
    if not 0 < tau_min <= tau_init <= tau_max:
        raise ValueError(f"need 0 < tau_min <= tau_init <= tau_max, got {tau_min}, {tau_init}, {tau_max}")
    zeros = jnp.zeros((num_samples,), jnp.float32)
    tau = jnp.full((num_samples,), tau_init, jnp.float32)
    return ISogCLRState(
        u_image=zeros,
        u_text=zeros,
        b_image=zeros,
        b_text=zeros,
        tau_image=tau,
        tau_text=tau,
        m_image=zeros,
        m_text=zeros,
        seen=jnp.zeros((num_samples,), bool),
        num_samples=num_samples,
        tau_min=float(tau_min),
        tau_max=float(tau_max),
    )


# ----------------------------------------------------------------------------------------------
# State lookup and update, for a state replicated on every device or sharded by sample id.


def _shard_layout(state: ISogCLRState, plan) -> tuple[int, Array]:
    """(entries held here, id of the first one) — checks the state is whole or evenly sharded."""
    held = state.tau_image.shape[0]
    if held == state.num_samples:
        return held, jnp.zeros((), jnp.int32)
    shards = parallel.axis_size(plan.mean_axes)
    if held * shards != state.num_samples:
        raise ValueError(
            f"isogclr state holds {held} of {state.num_samples} samples on this device; it must be either "
            f"replicated (in_specs P()) or sharded evenly over the loss's axes {plan.mean_axes} "
            f"({shards} shards of {state.num_samples // max(shards, 1)})"
        )
    return held, (jax.lax.axis_index(plan.mean_axes) * held).astype(jnp.int32)


def _lookup(state: ISogCLRState, indices: Array, plan) -> dict[str, Array]:
    """The state entries of this device's batch rows, wherever they are stored."""
    held, first = _shard_layout(state, plan)
    fields = {f"{k}_{side}": getattr(state, f"{k}_{side}") for k in _PER_SIDE for side in ("image", "text")}
    fields["seen"] = state.seen.astype(jnp.float32)
    if held == state.num_samples:
        return {k: v[indices] for k, v in fields.items()} | {"seen": state.seen[indices]}
    # Sharded: every device answers for the ids it holds, a psum assembles the answers.
    all_ids, offset = parallel.gather_negatives(indices, parallel.gather_over(plan.mean_axes))
    local = all_ids - first
    mine = (local >= 0) & (local < held)
    answers = {k: jnp.where(mine, v[jnp.clip(local, 0, held - 1)], 0.0) for k, v in fields.items()}
    answers = jax.lax.psum(answers, plan.mean_axes)
    rows = {k: jax.lax.dynamic_slice_in_dim(v, offset, indices.shape[0]) for k, v in answers.items()}
    return rows | {"seen": rows["seen"] > 0.5}


def _last_occurrence(ids: Array) -> Array:
    """`bool[n]`: True where no later position holds the same id (stable sort, O(n log n))."""
    order = jnp.argsort(ids, stable=True)
    sorted_ids = ids[order]
    last_sorted = jnp.append(sorted_ids[1:] != sorted_ids[:-1], True)
    return jnp.zeros_like(last_sorted).at[order].set(last_sorted)


def _store(state: ISogCLRState, indices: Array, rows: dict[str, Array], plan) -> ISogCLRState:
    """Writes this batch's new entries; a repeated id keeps its last occurrence's values."""
    held, first = _shard_layout(state, plan)
    if plan.mean_axes:
        # A replicated state must stay identical (and typed invariant) on every device.
        to = "invarying" if held == state.num_samples else "varying"
        gather = lambda v: jax.lax.all_gather(v, plan.mean_axes, axis=0, tiled=True, to=to)
        indices, rows = gather(indices), {k: gather(v) for k, v in rows.items()}
    local = indices - first
    keep = _last_occurrence(indices) & (local >= 0) & (local < held)
    target = jnp.where(keep, local, held)  # `held` is out of range: dropped (negatives would wrap)
    updates = {k: getattr(state, k).at[target].set(v, mode="drop") for k, v in rows.items()}
    return state.replace(**updates)


def _concrete_values(x) -> np.ndarray | None:
    """`x` as a NumPy array when its values are known at trace time, else None (traced)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_indices(indices, num_samples: int, batch: int) -> tuple[Array, bool]:
    """`(indices as int32, whether they were checked now)`; traced ones are checked at run time."""
    indices = _checks.int_array("indices", indices, rank=1, rank_hint="[B]")
    if indices.shape[0] != batch:
        raise ValueError(f"indices has {indices.shape[0]} entries for a batch of {batch}")
    values = _concrete_values(indices)
    if values is not None and values.size and (values.min() < 0 or values.max() >= num_samples):
        raise ValueError(
            f"indices must lie in [0, {num_samples}), got values in [{values.min()}, {values.max()}]"
        )
    return indices.astype(jnp.int32), values is not None


def _raise_if_out_of_range(indices, num_samples):
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= num_samples):
        raise ValueError(f"isogclr_loss: indices must lie in [0, {num_samples}), got {indices.tolist()}")


# ----------------------------------------------------------------------------------------------
# The loss: two passes over the candidate blocks of each anchor side.


def _visit_blocks(step, carry, candidates, plan):
    """Folds `step(carry, block, first_col)` over the negative set's candidate blocks (no gradient)."""
    candidates = jax.lax.stop_gradient(candidates)
    if plan.exchange == "ring":
        rows = candidates.shape[0]
        return parallel.ring_fold(
            lambda c, blk, owner: step(c, blk, owner * rows), carry, candidates, plan.gather_axes
        )
    all_candidates, _ = parallel.gather_negatives(candidates, plan)
    return step(carry, all_candidates, 0)


def _sum_over_blocks(term, operands, candidates, plan):
    """`Σ_blocks term(operands, block, first_col, first_row)` over the negative set, differentiable.

    The ring sums with `parallel.ring_sum` (custom VJP: one visiting block's memory per device,
    whatever the number of devices).
    """
    rows = candidates.shape[0]
    if plan.exchange == "ring":
        axes = plan.gather_axes
        visit = lambda ops, blk, owner: term(ops, blk, owner * rows, jax.lax.axis_index(axes) * rows)
        return parallel.ring_sum(visit, operands, candidates, axes)
    all_candidates, _ = parallel.gather_negatives(candidates, plan)
    return term(operands, all_candidates, 0, plan.device_index() * rows)


def _scaled_gaps(anchors, block, first_col, positive_sim, tau, first_row):
    """`h_ij = S_ij − S_ii` and `z_ij = h_ij / τ_i`, with the positive column's z set to −inf."""
    gaps = similarity(anchors, block) - positive_sim[:, None]
    rows = first_row + jnp.arange(anchors.shape[0])
    cols = first_col + jnp.arange(block.shape[0])
    is_positive = rows[:, None] == cols[None, :]
    z = jnp.where(is_positive, -jnp.inf, jax.lax.stop_gradient(gaps) / tau[:, None])
    return gaps, z


def _weighted_sums(operands, block, first_col, first_row):
    """Pass 2 on one candidate block: `(Σ_j w_ij·h_ij, Σ_j w_ij·z_ij)`, `f32[b]` each.

    Only `Σ w·h` has a gradient (through `h`): the weights are constants, which makes it the
    compositional gradient of SogCLR / iSogCLR (the moving average `u` in place of the inner mean;
    see `isogclr_loss`).
    """
    anchors, positive_sim, tau, b_new, u_new = operands
    tau, b_new, u_new = jax.lax.stop_gradient((tau, b_new, u_new))
    gaps, z = _scaled_gaps(anchors, block, first_col, positive_sim, tau, first_row)
    w = jnp.exp(z - b_new[:, None]) / u_new[:, None]
    return jnp.sum(w * gaps, axis=1), jnp.sum(jnp.where(w > 0, w * z, 0.0), axis=1)


def _one_side(anchors, candidates, positive_sim, old, plan, hp):
    """Loss terms `f32[b]` and new state entries for one anchor modality (rules in `isogclr_loss`)."""
    num_neg = max(anchors.shape[0] * plan.num_devices() - 1, 1)
    first_row = plan.device_index() * anchors.shape[0]
    tau = old["tau"]
    fixed_anchors, fixed_positive_sim = jax.lax.stop_gradient((anchors, positive_sim))

    def stats_step(carry, block, first_col):  # pass 1: row max and Σ exp of z, online
        row_max, row_sum = carry
        _, z = _scaled_gaps(fixed_anchors, block, first_col, fixed_positive_sim, tau, first_row)
        new_max = jnp.maximum(row_max, jnp.max(z, axis=1))
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        row_sum = row_sum * jnp.exp(row_max - shift) + jnp.sum(jnp.exp(z - shift[:, None]), axis=1)
        return new_max, row_sum

    empty = (jnp.full_like(tau, -jnp.inf), jnp.zeros_like(tau))
    row_max, row_sum = _visit_blocks(stats_step, _match(empty, anchors), candidates, plan)
    row_max, row_sum = jax.lax.stop_gradient((row_max, row_sum))
    b_new = jnp.maximum(old["b"], row_max)
    g = row_sum * jnp.exp(row_max - b_new) / num_neg  # row_max = -inf only when there are no negatives
    u_new = jnp.where(
        old["seen"], (1 - hp["gamma"]) * old["u"] * jnp.exp(old["b"] - b_new) + hp["gamma"] * g, g
    )
    u_new = jnp.maximum(u_new, _U_FLOOR)

    # pass 2: Σ w·h (differentiable) and Σ w·z
    operands = _match((anchors, positive_sim, tau, b_new, u_new), anchors)
    weighted_gap, weighted_z = _sum_over_blocks(_weighted_sums, operands, candidates, plan)
    new = {"u": u_new, "b": b_new, "tau": tau, "m": old["m"]}
    if hp["learn_temperature"]:
        grad_tau = jnp.log(u_new) + b_new + hp["rho"] - jax.lax.stop_gradient(weighted_z) / num_neg
        if hp["tau_grad_clip"] is not None:
            grad_tau = jnp.clip(grad_tau, -hp["tau_grad_clip"], hp["tau_grad_clip"])
        new["m"] = (1 - hp["beta"]) * old["m"] + hp["beta"] * grad_tau
        new["tau"] = jnp.clip(tau - hp["eta"] * new["m"], hp["tau_min"], hp["tau_max"])
    return weighted_gap / num_neg, new


def _match(tree, like):
    """Casts fresh accumulators to vary like `like` (scan carries must keep one type)."""
    return tuple(_vma.match_varying(leaf, like)[0] for leaf in tree)


def isogclr_loss(
    image_emb: Array,
    text_emb: Array,
    indices: Array,
    state: ISogCLRState,
    *,
    gamma: float = 0.9,
    rho: float = 6.0,
    eta: float = 0.01,
    beta: float = 0.9,
    tau_grad_clip: float | None = 5.0,
    learn_temperature: bool = True,
    axis_name=None,
    exchange: str = "all_gather",
    check_indices: bool = True,
) -> tuple[Array, ISogCLRState]:
    """iSogCLR (individualised temperatures) and SogCLR (`learn_temperature=False`), bimodal.

    For image anchor i with temperature τ_i (the text side is the same with S transposed):
    `h_ij = S_ij − S_ii`; `b_i ← max(b_i, max_{j≠i} h_ij/τ_i)`;
    `u_i ← (1−γ)·u_i·exp(b_old − b_i) + γ·mean_{j≠i} exp(h_ij/τ_i − b_i)` (first visit: `u_i ← g_i`);
    `w_ij = sg(exp(h_ij/τ_i − b_i) / u_i)`; `loss_i = mean_{j≠i} w_ij · h_ij`. The gradient of
    `loss_i` is the compositional gradient of `τ_i·log mean_{j≠i} exp(h_ij/τ_i)` with the
    moving-average estimator in the denominator. Temperatures (iSogCLR) follow
    `G_i = log u_i + b_i + ρ − mean_{j≠i} w_ij h_ij/τ_i`, `m_i ← (1−β)m_i + β·clip(G_i, ±c)`,
    `τ_i ← clip(τ_i − η·m_i, τ_min, τ_max)`. Returns `mean_i loss_I + mean_i loss_T`.

    Differences from LibAUC 2.0.1's `GCLoss(mode="bimodal")`, which implements the same rules:
    it drops the 1/(B−1) and averages the two sides, so its gradient is (B−1)/2 times ours; it
    applies the first-visit rule to a whole batch while its epoch-0 γ is in force (ours is per
    sample); it does not clip G (pass `tau_grad_clip=None` for that).

    Repeated ids in one batch: every occurrence reads the same old state and contributes its
    own loss term; the state written for the id is that of its last occurrence.

    Args:
      image_emb, text_emb: `f[B, D]` L2-normalised embeddings (local rows under shard_map).
      indices: `int[B]` global dataset ids of the pairs, in `[0, num_samples)`.
      state: from `isogclr_init`, replicated on every device (`in_specs=P()`) or sharded by
        sample id over the loss's axes (`P(axis_name)`); the returned state has the same layout.
      gamma: moving-average weight γ of the new estimate.
      rho: ρ, the temperature regulariser (bimodal default 6.0).
      eta, beta: temperature step size η and momentum weight β.
      tau_grad_clip: clip of G_i (5.0 in the authors' code), `None` for none.
      learn_temperature: False gives SogCLR (τ fixed at its initial value).
      axis_name, exchange: as in `clip_loss` ("all_gather", "ring" or "grouped"). The ring's
        memory per device does not grow with the number of devices (its passes sum over the
        visiting blocks with `parallel.ring_sum`'s custom VJP).
      check_indices: check traced `indices` against `num_samples` at run time (a host
        callback); concrete indices are always checked at trace time.

    Returns:
      `(loss, new_state)`, the loss a float32 scalar (the same on every device).

    References:
      Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small Batch
      Does Not Harm Performance" (SogCLR), ICML 2022. Qiu et al., "Not All Semantics are Created
      Equal: Contrastive Self-supervised Learning with Automatic Temperature Individualization"
      (iSogCLR), ICML 2023; authors' code github.com/zhqiu/contrastive-learning-iSogCLR.
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    if not isinstance(state, ISogCLRState):
        raise TypeError(f"state must come from isogclr_init, got {type(state).__name__}")
    indices, checked = _check_indices(indices, state.num_samples, image_emb.shape[0])
    _checks.in_unit_interval("gamma", gamma, closed_low=False)
    _checks.in_unit_interval("beta", beta, closed_low=False)
    _checks.nonnegative("eta", eta)
    if tau_grad_clip is not None:
        _checks.nonnegative("tau_grad_clip", tau_grad_clip)
    plan = parallel.plan_negatives(axis_name, exchange)
    if check_indices and not checked:
        jax.debug.callback(_raise_if_out_of_range, indices, state.num_samples)

    hp = dict(
        gamma=gamma,
        rho=rho,
        eta=eta,
        beta=beta,
        tau_grad_clip=tau_grad_clip,
        learn_temperature=learn_temperature,
        tau_min=state.tau_min,
        tau_max=state.tau_max,
    )
    rows = _lookup(state, indices, plan)
    image_emb32, text_emb32 = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
    positive_sim = jnp.sum(image_emb32 * text_emb32, axis=-1)
    sides = {}
    for side, anchors, candidates in (("image", image_emb, text_emb), ("text", text_emb, image_emb)):
        old = {k: rows[f"{k}_{side}"] for k in _PER_SIDE} | {"seen": rows["seen"]}
        sides[side] = _one_side(anchors, candidates, positive_sim, old, plan, hp)
    loss = plan.mean(jnp.mean(sides["image"][0]) + jnp.mean(sides["text"][0]))
    updates = {
        f"{k}_{side}": jax.lax.stop_gradient(v) for side, (_, new) in sides.items() for k, v in new.items()
    }
    updates["seen"] = jnp.ones_like(rows["seen"])
    return loss, _store(state, indices, updates, plan)
