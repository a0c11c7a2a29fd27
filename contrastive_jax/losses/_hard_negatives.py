"""Hard negatives: explicit extra negatives, counterfactual counting captions, MoCHi mixing."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, _normalize
from contrastive_jax.losses._simclr import _positive
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
