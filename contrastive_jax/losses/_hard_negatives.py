"""Hard negatives: explicit extra negatives, counterfactual counting captions, MoCHi mixing, HCL's
reweighted (and debiased) negatives, hard top-K InfoNCE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax import _checks, _normalize
from contrastive_jax.losses import _common
from contrastive_jax.losses._simclr import _positive, _two_view_logits
from contrastive_jax.tiled import similarity

Array = jax.Array


def infonce_with_negatives(
    query: Array, positive: Array, negatives: Array, *, temperature: float = 0.07, in_batch: bool = True
) -> Array:
    """InfoNCE of each query against its positive, the other positives and extra negatives.

    `ℓ_i = −log( e^{q_i·p_i/τ} / (Σ_j e^{q_i·p_j/τ} + Σ_k e^{q_i·n_ik/τ}) )`, mean over i. With
    `in_batch=False` the first sum keeps only `j = i` (MoCo-style: negatives come only from
    `negatives`). `negatives` is `[K, D]` shared by all queries (a queue) or `[B, K, D]` per query
    (e.g. MoCHi's synthetic negatives, or hard negatives mined for each anchor).

    Args:
      query: `f[B, D]`; positive: `f[B, D]`; negatives: `f[K, D]` or `f[B, K, D]`; all L2-normalised.
      temperature: τ (0.07, CLIP/MoCo's value).
      in_batch: also use the other queries' positives as negatives.

    References:
      Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018 (InfoNCE);
      He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020.
    """
    query, positive = _checks.embedding_pair(query, positive, names=("query", "positive"))
    negatives = _checks.float_array("negatives", negatives)
    _positive("temperature", temperature)
    batch, dim = query.shape
    if negatives.ndim == 2 and negatives.shape[1] == dim:
        extra = similarity(query, negatives)
    elif negatives.ndim == 3 and negatives.shape[0] == batch and negatives.shape[2] == dim:
        extra = jnp.einsum("bd,bkd->bk", query, negatives, preferred_element_type=jnp.float32)
    else:
        raise ValueError(f"negatives must be [K, {dim}] or [{batch}, K, {dim}], got {negatives.shape}")
    pair_logits = similarity(query, positive) / temperature
    if not in_batch:
        pair_logits = jnp.where(jnp.eye(batch, dtype=bool), pair_logits, -jnp.inf)
    logits = jnp.concatenate([pair_logits, extra / temperature], axis=1)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(pair_logits))


def counting_loss(
    image_emb: Array, text_emb: Array, counterfactual_emb: Array, *, logit_scale: float | Array = 1.0
) -> Array:
    """ "Teaching CLIP to Count to Ten": prefer the true count's caption over a wrong-count one.

    `L_count = −log( e^{s·e_i·e_t} / (e^{s·e_i·e_t} + e^{s·e_i·e_cf}) ) = softplus(s·(e_i·e_cf − e_i·e_t))`,
    mean over the images that have a countable caption (pass only those rows). The paper adds it
    to the CLIP loss with weight λ: `clip_loss(...) + λ·counting_loss(...)`, λ = 1; its Eq. 2
    uses the raw cosine similarities (`logit_scale = 1`).

    Args:
      image_emb: `f[B, D]`; text_emb: `f[B, D]` the true captions; counterfactual_emb: `f[B, D]`
        the same captions with the count replaced; all L2-normalised.
      logit_scale: multiplies the similarities (1 as in the paper).

    Returns:
      A float32 scalar; `log 2` when the counterfactual equals the true caption.

    References:
      Paiss et al., "Teaching CLIP to Count to Ten", ICCV 2023, Eq. 2.
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    _, counterfactual_emb = _checks.embedding_pair(
        image_emb, counterfactual_emb, names=("image_emb", "counterfactual_emb")
    )
    scale = _checks.scalar("logit_scale", logit_scale)
    image32 = image_emb.astype(jnp.float32)
    true_sim = jnp.sum(image32 * text_emb.astype(jnp.float32), axis=-1)
    cf_sim = jnp.sum(image32 * counterfactual_emb.astype(jnp.float32), axis=-1)
    return jnp.mean(jax.nn.softplus(scale * (cf_sim - true_sim)))


def mochi_negatives(
    key: Array,
    query: Array,
    negatives: Array,
    *,
    num_hardest: int = 1024,
    num_mixed: int = 1024,
    num_query_mixed: int = 128,
    stop_gradient: bool = True,
) -> Array:
    """MoCHi: synthetic hard negatives for each query, from its hardest negatives.

    For query q, rank the negatives by similarity to q and keep the `N = num_hardest` hardest.
    Synthesise `s = num_mixed` points `normalize(α n_i + (1−α) n_j)` with `n_i, n_j` drawn from
    those N and `α ~ U(0, 1)`, and `s' = num_query_mixed` points `normalize(β q + (1−β) n_j)`
    with `β ~ U(0, 0.5)` (so q contributes less than half). Feed the result to a loss that takes
    per-query negatives, e.g. `infonce_with_negatives(q, k, concat(queue, synthetic))`.
    The synthetic points are constants for the gradient by default, as in the paper.

    Args:
      key: PRNG key.
      query: `f[B, D]` L2-normalised queries.
      negatives: `f[K, D]` L2-normalised negatives (e.g. a MoCo queue).
      num_hardest, num_mixed, num_query_mixed: N, s and s' (the paper's ImageNet-1k setting
        MoCHi (1024, 1024, 128)); N is capped at K.
      stop_gradient: treat the synthetic negatives as constants.

    Returns:
      `f[B, s + s', D]` unit-norm synthetic negatives per query. With s = s' = 0 nothing is added
      and the loss is plain InfoNCE.

    References:
      Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020, §4.
    """
    query = _checks.float_array("query", query, rank=2, rank_hint="[B, D]")
    negatives = _checks.float_array("negatives", negatives, rank=2, rank_hint="[K, D]")
    if negatives.shape[1] != query.shape[1]:
        raise ValueError(f"negatives must have D={query.shape[1]}, got shape {negatives.shape}")
    for name, value in (("num_mixed", num_mixed), ("num_query_mixed", num_query_mixed)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    hardest_n = min(_checks.positive_int("num_hardest", num_hardest), negatives.shape[0])
    _, hardest_idx = jax.lax.top_k(similarity(query, negatives), hardest_n)  # [B, N]
    hardest = negatives[hardest_idx]  # [B, N, D]
    k_i, k_j, k_a, k_qj, k_b = jax.random.split(key, 5)
    batch = query.shape[0]
    pick = lambda k, count: jnp.take_along_axis(
        hardest, jax.random.randint(k, (batch, count), 0, hardest_n)[..., None], axis=1
    )
    alpha = jax.random.uniform(k_a, (batch, num_mixed, 1))
    mixed = alpha * pick(k_i, num_mixed) + (1 - alpha) * pick(k_j, num_mixed)
    beta = jax.random.uniform(k_b, (batch, num_query_mixed, 1), maxval=0.5)
    query_mixed = beta * query[:, None, :] + (1 - beta) * pick(k_qj, num_query_mixed)
    synthetic = _normalize.l2_normalize(jnp.concatenate([mixed, query_mixed], axis=1).astype(query.dtype))
    return jax.lax.stop_gradient(synthetic) if stop_gradient else synthetic


def hcl_loss(
    z_a: Array,
    z_b: Array,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """HCL: NT-Xent with importance-reweighted, debiased negatives ("hard negative sampling").

    SimCLR's set-up: the 2N rows of `Z = [z_a; z_b]` are anchors, anchor r's positive is its other
    view p(r) and its M = 2N − 2 negatives are all k ∉ {r, p(r)}. With `ℓ⁺_r = s(Z_r, Z_p(r))/τ`:

        w_rk = softmax_k(β·s_rk/τ),   R_r = M·Σ_k w_rk·e^{s_rk/τ}
        G_r  = max( (R_r − τ⁺·M·e^{ℓ⁺_r}) / (1 − τ⁺),  M·e^{−1/τ} )
        L    = mean_r [ −ℓ⁺_r + log(e^{ℓ⁺_r} + G_r) ]

    R_r reweights the negatives towards the hard ones (β = 0: uniform, R_r = Σ_k e^{s_rk/τ}); G_r
    removes the expected share τ⁺ of false negatives (same-class samples) from them. The clamp is
    the smallest value of M·e^{s/τ} for unit vectors (s ≥ −1): it is always applied, as in the
    authors' code, and keeps G_r > 0 (without it the log can see a negative number). The gradient
    flows through the weights w, as in the authors' code.

    As in the authors' code, β tilts the *tempered* logits (`neg ** β` with `neg = e^{s/τ}`); their
    published β values (0.5, 1.0) are for this parametrisation. β = 0 is the debiased contrastive
    loss (`debiased_contrastive_loss`); β = 0 and τ⁺ = 0 is `nt_xent_loss(temperature=τ)`. The
    value is computed in the log domain (`log R_r = log M + lse_k((1+β)s_rk/τ) − lse_k(β s_rk/τ)`,
    the subtraction under a common shift), so tiny temperatures stay finite.

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views, row i of each a positive pair.
      temperature: τ (0.5, the authors' default in `image/main.py`).
      tau_plus: τ⁺ in [0, 1), the class prior of a false negative (0.1, the authors' default).
      beta: β ≥ 0, the hardness (1.0, the authors' default and `image/launch.sh`; their STL-10 model
        table also lists β = 0.5).
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"): both views are gathered,
        M counts the global negatives and the loss is the mean over the global anchors.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: `temperature <= 0`, `tau_plus` outside [0, 1), `beta < 0`, a batch of one sample
        (across devices), `exchange="ring"`, or z_a, z_b of different or non-`[N, D]` shapes.
      TypeError: non-float embeddings.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> round(float(jax.jit(hcl_loss)(x, y)), 4)
      1.4849

    References:
      Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021;
      github.com/joshr17/HCL (image/main.py, `criterion`, estimator "hard").
    """
    return _hcl("hcl_loss", z_a, z_b, temperature, tau_plus, beta, axis_name, exchange)


def debiased_contrastive_loss(
    z_a: Array,
    z_b: Array,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """Debiased contrastive loss: NT-Xent with the expected false negatives taken out.

    `G_r = max( (Σ_k e^{s_rk/τ} − τ⁺·M·e^{ℓ⁺_r}) / (1 − τ⁺), M·e^{−1/τ} )`,
    `L = mean_r [ −ℓ⁺_r + log(e^{ℓ⁺_r} + G_r) ]` over the 2N anchors of SimCLR's set-up, M = 2N − 2
    negatives each: `hcl_loss` with β = 0 (see there). τ⁺ = 0 is `nt_xent_loss(temperature=τ)`.
    (Not `dcl_loss`, which is Yeh et al.'s decoupled loss.)

    Args:
      z_a, z_b: `f[N, D]` L2-normalised embeddings of two views, row i of each a positive pair.
      temperature: τ (0.5, the authors' default in `main.py`).
      tau_plus: τ⁺ in [0, 1), the class prior of a false negative (0.1, the authors' default).
      axis_name, exchange: as in `hcl_loss`.

    Returns:
      A float32 scalar.

    Raises:
      ValueError, TypeError: as `hcl_loss`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> round(float(jax.jit(debiased_contrastive_loss)(x, y)), 4)
      1.1946

    References:
      Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020; github.com/chingyaoc/DCL
      (main.py, `train`, `debiased=True`).
    """
    return _hcl("debiased_contrastive_loss", z_a, z_b, temperature, tau_plus, 0.0, axis_name, exchange)


def _hcl(name, z_a, z_b, temperature, tau_plus, beta, axis_name, exchange):
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    _positive("temperature", temperature)
    _checks.in_unit_interval("tau_plus", tau_plus, closed_high=False)
    _checks.nonnegative("beta", beta)
    plan = _common.plan_for(axis_name, exchange, name)
    _common.require_negatives(name, z_a.shape[0], plan)
    logits, self_id, positive_id = _two_view_logits(z_a, z_b, temperature, plan)
    cols = jnp.arange(logits.shape[1])[None, :]
    negatives = (cols != self_id[:, None]) & (cols != positive_id[:, None])
    positive = jnp.take_along_axis(logits, positive_id[:, None], axis=1)[:, 0]
    log_m = jnp.log(float(logits.shape[1] - 2))
    log_reweighted = (
        log_m
        + _common.masked_logsumexp((1 + beta) * logits, negatives)
        - _common.masked_logsumexp(beta * logits, negatives)
    )
    log_floor = log_m - 1.0 / temperature
    # log G_r = max(log of (R − τ⁺M·e^{ℓ⁺})/(1 − τ⁺), log floor), the difference taken under the shift c.
    shift = log_reweighted
    if tau_plus:
        shift = jnp.maximum(shift, jnp.log(tau_plus) + log_m + positive)
    shift = jax.lax.stop_gradient(shift)
    false_negatives = tau_plus * jnp.exp(log_m + positive - shift) if tau_plus else 0.0
    debiased = (jnp.exp(log_reweighted - shift) - false_negatives) / (1 - tau_plus)
    # A clamped anchor (debiased ≤ 0) takes the floor, and no gradient through a log of 0.
    is_positive = debiased > 0
    log_debiased = jnp.where(is_positive, shift + jnp.log(jnp.where(is_positive, debiased, 1.0)), -jnp.inf)
    log_g = jnp.maximum(log_debiased, log_floor)
    return plan.mean(jnp.mean(jnp.logaddexp(positive, log_g) - positive))


def hard_topk_infonce_loss(
    z_a: Array,
    z_b: Array,
    *,
    temperature: float,
    num_hard: int,
    symmetric: bool = False,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """Hard top-K InfoNCE: each anchor's positive against only its K most similar negatives.

    `L = mean_i [ −s_ii/τ + log( e^{s_ii/τ} + Σ_{k ∈ TopK_i} e^{s_ik/τ} ) ]`, with `s_ik = ⟨z_a_i, z_b_k⟩`
    and `TopK_i` the K = `num_hard` largest `s_ik`, k ≠ i, over the global batch. K = N − 1 is
    one-direction InfoNCE; the loss grows with K. The selection is piecewise constant: the
    gradient flows through the kept similarities only. `symmetric=True` averages this with the
    same loss for z_b's rows as anchors against z_a.

    A reconstruction: Wang & Liu describe the hard-negative variant in words (keep only the
    hardest negatives of each anchor) and no official code exists; the paper's τ and K for it
    are not verified, so both are required arguments.

    Args:
      z_a: `f[N, D]` L2-normalised anchors; z_b: `f[N, D]` L2-normalised candidates, z_b[i] the
        positive of z_a[i].
      temperature: τ > 0.
      num_hard: K, an int in [1, N − 1] (N the global batch).
      symmetric: also use z_b as anchors against z_a, and average the two directions.
      axis_name, exchange: as in `clip_loss` ("all_gather" or "grouped"): the candidates (both
        views when symmetric) are gathered and `lax.top_k` runs over the global negatives.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: `temperature <= 0`, `num_hard` not an int in [1, N − 1], `exchange="ring"`, or
        z_a, z_b of different or non-`[N, D]` shapes.
      TypeError: non-float embeddings.

    Examples:
      >>> import functools, jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> loss_fn = jax.jit(functools.partial(hard_topk_infonce_loss, temperature=0.5, num_hard=1))
      >>> round(float(loss_fn(x, y)), 4)
      0.6543

    References:
      Wang & Liu, "Understanding the Behaviour of Contrastive Loss", CVPR 2021 (hard contrastive
      loss with the K most similar negatives).
    """
    z_a, z_b = _checks.embedding_pair(z_a, z_b, names=("z_a", "z_b"))
    _positive("temperature", temperature)
    plan = _common.plan_for(axis_name, exchange, "hard_topk_infonce_loss")
    global_batch = z_a.shape[0] * plan.num_devices()
    is_int = isinstance(num_hard, (int, np.integer)) and not isinstance(num_hard, bool)
    if not (is_int and 1 <= num_hard <= global_batch - 1):
        raise ValueError(
            f"num_hard must be an int in [1, N - 1] = [1, {global_batch - 1}] for a global batch of "
            f"{global_batch}, got {num_hard!r}"
        )
    num_hard = int(num_hard)
    loss = _topk_infonce(z_a, z_b, temperature, num_hard, plan)
    if symmetric:
        loss = 0.5 * (loss + _topk_infonce(z_b, z_a, temperature, num_hard, plan))
    return plan.mean(loss)


def _topk_infonce(anchors, candidates, temperature, num_hard, plan):
    """Local mean of the top-K InfoNCE terms of `anchors` against the gathered `candidates`."""
    (all_candidates,), offset = _common.gather_all(plan, candidates)
    logits = similarity(anchors, all_candidates) / temperature
    positive_col = offset + jnp.arange(anchors.shape[0])
    is_positive = jnp.arange(logits.shape[1])[None, :] == positive_col[:, None]
    positive = jnp.take_along_axis(logits, positive_col[:, None], axis=1)[:, 0]
    hardest, _ = jax.lax.top_k(jnp.where(is_positive, -jnp.inf, logits), num_hard)
    kept = jnp.concatenate([positive[:, None], hardest], axis=1)
    return jnp.mean(jax.nn.logsumexp(kept, axis=1) - positive)
