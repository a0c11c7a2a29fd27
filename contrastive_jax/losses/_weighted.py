"""CWCL: continuously weighted contrastive loss (Srinivasa et al., 2023)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.losses._simclr import _positive
from contrastive_jax.tiled import similarity

Array = jax.Array


def cwcl_loss(
    trained_emb: Array, frozen_emb: Array, *, temperature: float = 0.07, weights: Array | None = None
) -> Array:
    """Continuously weighted contrastive loss: soft positives from the frozen modality's similarities.

    `L = −(1/N) Σ_i (1/Σ_j w_ij) Σ_j w_ij · log softmax_j(⟨p_i, q_j⟩/τ)` with
    `w_ij = ⟨q_i, q_j⟩/2 + 1/2` (cosine similarity mapped to [0, 1]) from the frozen (pretrained)
    modality's embeddings q; p is the modality being trained. The weights are constants for the
    gradient. With `w = I` it is one direction of InfoNCE.

    Args:
      trained_emb: `f[N, D]` p, L2-normalised (the modality being aligned, e.g. text).
      frozen_emb: `f[N, D]` q, L2-normalised embeddings from the frozen pretrained model.
      temperature: τ (0.07, CLIP's initial value).
      weights: optional `[N, N]` weights replacing the default `⟨q_i, q_j⟩/2 + 1/2`.

    References:
      Srinivasa et al., "CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive Loss",
      NeurIPS 2023, Eq. 3.
    """
    trained_emb, frozen_emb = _checks.embedding_pair(
        trained_emb, frozen_emb, names=("trained_emb", "frozen_emb")
    )
    _positive("temperature", temperature)
    n = trained_emb.shape[0]
    if weights is None:
        weights = 0.5 * similarity(frozen_emb, frozen_emb) + 0.5
    else:
        weights = _checks.float_array("weights", weights, rank=2, rank_hint="[N, N]")
        if weights.shape != (n, n):
            raise ValueError(f"weights must be [{n}, {n}], got {weights.shape}")
    weights = jax.lax.stop_gradient(weights.astype(jnp.float32))
    log_prob = jax.nn.log_softmax(similarity(trained_emb, frozen_emb) / temperature, axis=1)
    per_row = jnp.sum(weights * log_prob, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    return -jnp.mean(per_row)
